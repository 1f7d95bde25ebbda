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
