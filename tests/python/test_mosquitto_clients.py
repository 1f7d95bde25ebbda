"""Eclipse Mosquitto's command-line clients against berth."""

import shutil
import subprocess

import pytest

MOSQUITTO_PUB = shutil.which("mosquitto_pub")


@pytest.fixture(autouse=True)
def _need_mosquitto_clients():
    if MOSQUITTO_PUB is None:
        pytest.fail("mosquitto_pub is missing; tests/run-all.sh installs mosquitto-clients")


@pytest.mark.parametrize("version", ["mqttv311", "mqttv5"])
@pytest.mark.parametrize("client_id", ["mosq-pub-{v}", None], ids=["named", "generated-id"])
def test_mosquitto_pub_qos0_exits_0(broker, version, client_id):
    argv = [MOSQUITTO_PUB, "-h", broker.host, "-p", str(broker.port), "-V", version,
            "-t", "berth/test", "-m", "hello", "-q", "0", "-d"]
    if client_id:
        argv += ["-i", client_id.format(v=version)]
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=20)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"mosquitto_pub exited {proc.returncode}:\n{out}"
    assert "received CONNACK (0)" in out, out
    assert "sending PUBLISH" in out and "sending DISCONNECT" in out, out


MOSQUITTO_SUB = shutil.which("mosquitto_sub")


@pytest.mark.parametrize("version", ["mqttv311", "mqttv5"])
def test_mosquitto_retained_round_trip(broker, version):
    """mosquitto_pub leaves a retained message; a later mosquitto_sub receives it and exits.
    Retained, so the subscriber need not race the publisher."""
    assert MOSQUITTO_SUB, "mosquitto_sub is missing; tests/run-all.sh installs mosquitto-clients"
    topic, message = f"berth/retained/{version}", f"kept for {version}"
    common = ["-h", broker.host, "-p", str(broker.port), "-V", version]
    pub = subprocess.run([MOSQUITTO_PUB, *common, "-t", topic, "-m", message, "-q", "1", "-r"],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=20)
    assert pub.returncode == 0, f"mosquitto_pub exited {pub.returncode}:\n{pub.stdout}{pub.stderr}"
    sub = subprocess.run([MOSQUITTO_SUB, *common, "-t", topic, "-C", "1", "-W", "10", "-v"],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=20)
    assert sub.returncode == 0, f"mosquitto_sub exited {sub.returncode}:\n{sub.stdout}{sub.stderr}"
    assert sub.stdout.strip() == f"{topic} {message}", sub.stdout
