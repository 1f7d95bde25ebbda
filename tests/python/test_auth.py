"""Authentication: Mosquitto password files (made by Debian's mosquitto_passwd, which writes
2.0's `$7$`, and by `berth passwd`, which writes argon2id), `allow_anonymous`, reloading
the file on SIGHUP, and refusing to listen publicly with no authentication.

Refusals: bad user name or password is CONNACK 4 (3.1.1) / 0x86 (5.0); no username where one
is required is 5 / 0x87 (Mosquitto's codes)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest

from berthproc import Broker, berth_bin
from clients import Paho
from mqttwire import V5, V311, Conn, parse_connack, connect

MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd")
MOSQUITTO_PUB = shutil.which("mosquitto_pub")
VERSIONS = pytest.mark.parametrize("version", [V311, V5], ids=["v311", "v5"])
BAD_CREDENTIALS = {V311: 4, V5: 0x86}
NOT_AUTHORIZED = {V311: 5, V5: 0x87}


def berth_passwd(*args: str) -> None:
    proc = subprocess.run([berth_bin(), "passwd", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=60)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture
def mosquitto_file(tmp_path) -> str:
    assert MOSQUITTO_PASSWD, "mosquitto_passwd is missing; tests/run-all.sh installs mosquitto"
    path = str(tmp_path / "mosquitto.pw")
    subprocess.run([MOSQUITTO_PASSWD, "-c", "-b", path, "alice", "alice's secret"], check=True,
                   capture_output=True, timeout=60)
    subprocess.run([MOSQUITTO_PASSWD, "-b", path, "bob", "bob:pw"], check=True,
                   capture_output=True, timeout=60)
    assert open(path).read().count("$7$") == 2
    return path


@pytest.fixture
def berth_file(tmp_path) -> str:
    path = str(tmp_path / "berth.pw")
    berth_passwd("-c", "-b", path, "carol", "carol pw")
    assert "$argon2id$" in open(path).read()
    return path


def raw_connack(broker, version: int, **kw) -> int:
    with Conn(broker.host, broker.port, version) as c:
        c.send(connect("auth-raw", version, **kw))
        return parse_connack(c.read_packet(), version).code


def paho_connack(broker, version: int, username: str | None, password: str | None):
    client = Paho(f"auth-paho-{version}", version)
    if username is not None:
        client.client.username_pw_set(username, password)
    flags, rc, _ = client.connect(broker.addr)
    try:
        client.client.disconnect()
    except Exception:
        pass
    return rc.value


@VERSIONS
def test_a_mosquitto_passwd_file_admits_its_users_with_paho(start_broker, mosquitto_file, version):
    broker = start_broker("--password-file", mosquitto_file)
    # paho 2.x reports a 3.1.1 return code as the matching 5.0 reason code (4 -> 0x86,
    # 5 -> 0x87); the raw test below checks the bytes on the wire.
    assert paho_connack(broker, version, "alice", "alice's secret") == 0
    assert paho_connack(broker, version, "bob", "bob:pw") == 0
    assert paho_connack(broker, version, "alice", "wrong") == 0x86
    assert paho_connack(broker, version, "mallory", "alice's secret") == 0x86
    assert paho_connack(broker, version, None, None) == 0x87


@pytest.mark.parametrize("version", ["mqttv311", "mqttv5"])
def test_a_berth_passwd_file_admits_its_users_with_mosquitto_pub(start_broker, berth_file, version):
    assert MOSQUITTO_PUB, "mosquitto_pub is missing; tests/run-all.sh installs mosquitto-clients"
    broker = start_broker("--password-file", berth_file)

    def pub(*creds: str) -> subprocess.CompletedProcess:
        return subprocess.run([MOSQUITTO_PUB, "-h", broker.host, "-p", str(broker.port), "-V", version,
                               "-t", "t", "-m", "m", "-q", "1", "-d", *creds],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)

    ok = pub("-u", "carol", "-P", "carol pw")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "received CONNACK (0)" in ok.stdout, ok.stdout
    bad = pub("-u", "carol", "-P", "nope")
    assert bad.returncode != 0
    code = "134" if version == "mqttv5" else "4"
    assert f"received CONNACK ({code})" in bad.stdout, bad.stdout + bad.stderr


@VERSIONS
def test_raw_clients_get_the_codes_in_both_versions(start_broker, berth_file, version):
    broker = start_broker("--password-file", berth_file)
    assert raw_connack(broker, version, username="carol", password=b"carol pw") == 0
    assert raw_connack(broker, version, username="carol", password=b"x") == BAD_CREDENTIALS[version]
    assert raw_connack(broker, version, username="carol") == BAD_CREDENTIALS[version]
    assert raw_connack(broker, version) == NOT_AUTHORIZED[version]
    assert "CONNECT refused" in broker.stderr_text()


def test_allow_anonymous_with_a_password_file(start_broker, berth_file):
    broker = start_broker("--password-file", berth_file, "--allow-anonymous", "true")
    assert raw_connack(broker, V5) == 0
    assert raw_connack(broker, V5, username="carol", password=b"x") == 0x86


def test_sighup_rereads_the_password_file_and_keeps_connections(start_broker, tmp_path):
    path = str(tmp_path / "pw")
    berth_passwd("-c", "-b", path, "dave", "first")
    broker = start_broker("--password-file", path)
    held = Conn(broker.host, broker.port, V5)
    held.send(connect("held", V5, username="dave", password=b"first"))
    assert parse_connack(held.read_packet(), V5).code == 0
    berth_passwd("-b", path, "dave", "second")
    broker.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "configuration reloaded" not in broker.stderr_text():
        assert time.monotonic() < deadline, broker.stderr_text()
        time.sleep(0.05)
    assert raw_connack(broker, V5, username="dave", password=b"second") == 0
    assert raw_connack(broker, V5, username="dave", password=b"first") == 0x86
    held.ping()  # still connected
    # A file that no longer reads keeps the rules in force.
    with open(path, "a") as f:
        f.write("broken line\n")
    broker.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "configuration not reloaded" not in broker.stderr_text():
        assert time.monotonic() < deadline, broker.stderr_text()
        time.sleep(0.05)
    assert "password_file" in broker.stderr_text()
    assert raw_connack(broker, V5, username="dave", password=b"second") == 0
    held.close()


def run_berth(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run([berth_bin(), *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout)


def test_listening_publicly_without_authentication_is_refused(tmp_path):
    proc = run_berth("--listen", "0.0.0.0:0", "--cores", "1", "--data-dir", str(tmp_path / "d"))
    assert proc.returncode == 2, proc.stderr
    assert "allow_anonymous" in proc.stderr and "password_file" in proc.stderr, proc.stderr
    assert not (tmp_path / "d").exists(), "refused before touching the data directory"


def test_a_bad_password_file_is_an_error_naming_file_and_line(tmp_path):
    path = tmp_path / "pw"
    path.write_text("alice:$7$101$notbase64!$x\n")
    proc = run_berth("--password-file", str(path), "--cores", "1", "--data-dir", str(tmp_path / "d"))
    assert proc.returncode == 2
    assert f"password_file {path} line 1" in proc.stderr, proc.stderr
    missing = run_berth("--password-file", str(tmp_path / "nope"), "--data-dir", str(tmp_path / "d"))
    assert missing.returncode == 2 and "nope" in missing.stderr, missing.stderr
