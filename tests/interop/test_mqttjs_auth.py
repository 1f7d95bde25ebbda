"""Authentication and ACLs with MQTT.js: a password file made by `berth passwd` admits the
right password and refuses a wrong one (3.1.1 return code 4, v5 0x86) or none (5 / 0x87);
an ACL refuses a filter the user may not read (SUBACK 0x80 / 0x87). mqttjs/auth.mjs is the
client; tests/run-all.sh installs Node and the package when missing."""

import os
import shutil
import subprocess

import pytest

from berthproc import berth_bin

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mqttjs")
SCRIPT = os.path.join(HERE, "auth.mjs")
NODE = shutil.which("node")
BAD_CREDENTIALS = {4: "4", 5: "134"}
NOT_AUTHORIZED = {4: "5", 5: "135"}
REFUSED_FILTER = {4: "128", 5: "135"}


@pytest.fixture
def secured(start_broker, tmp_path):
    if NODE is None or not os.path.isdir(os.path.join(HERE, "node_modules", "mqtt")):
        pytest.fail("node or MQTT.js missing: tests/run-all.sh installs them (npm ci in tests/interop/mqttjs)")
    pw = str(tmp_path / "pw")
    subprocess.run([berth_bin(), "passwd", "-c", "-b", pw, "dana", "dana's pw"], check=True,
                   capture_output=True, timeout=60)
    acl = tmp_path / "acl"
    acl.write_text("user dana\ntopic read sensors/#\n")
    return start_broker("--password-file", pw, "--acl-file", str(acl))


def run(broker, version: int, client_id: str, username: str, password: str, *filters: str) -> list[str]:
    proc = subprocess.run([NODE, SCRIPT, str(version), broker.host, str(broker.port), client_id,
                           username, password, *filters],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.split("\n")[: 1 + len(filters)]


@pytest.mark.parametrize("version", [4, 5], ids=["v311", "v5"])
def test_mqttjs_connects_with_the_right_password_only(secured, version):
    assert run(secured, version, "js-1", "dana", "dana's pw") == ["connack 0"]
    assert run(secured, version, "js-2", "dana", "wrong") == [f"connack {BAD_CREDENTIALS[version]}"]
    assert run(secured, version, "js-3", "-", "-") == [f"connack {NOT_AUTHORIZED[version]}"]


@pytest.mark.parametrize("version", [4, 5], ids=["v311", "v5"])
def test_mqttjs_is_refused_a_filter_the_acl_does_not_grant(secured, version):
    got = run(secured, version, "js-4", "dana", "dana's pw", "sensors/+/temp", "admin/#")
    assert got == ["connack 0", "suback sensors/+/temp 1", f"suback admin/# {REFUSED_FILTER[version]}"]
