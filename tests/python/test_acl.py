"""Authorization: Mosquitto ACL files (`user`, `topic`, `pattern` with %u and %c, deny) checked
on SUBSCRIBE, on PUBLISH and on delivery, reloaded on SIGHUP; and sessions that belong to the
user whose connection took them last (`session_ownership`), across a restart.

Refusals, as Mosquitto's: SUBACK 0x87 (5.0) / 0x80 (3.1.1) per filter; a PUBLISH refused gets
PUBACK or PUBREC 0x87 (5.0) or its plain acknowledgement (3.1.1) and goes nowhere; a CONNECT
for another user's session gets CONNACK 0x87 / 5."""

from __future__ import annotations

import signal
import time

import pytest

from clients import Paho
from mqttwire import PUBREC, V5, V311, Conn, connect, packet_id_of, parse_connack, publish_with
from test_auth import berth_passwd

VERSIONS = pytest.mark.parametrize("version", [V311, V5], ids=["v311", "v5"])
REFUSED_SUBSCRIBE = {V311: 0x80, V5: 0x87}
REFUSED_PUBLISH = {V311: 0, V5: 0x87}
NOT_AUTHORIZED = {V311: 5, V5: 0x87}

ACL = """\
# devices publish their own telemetry and read their own commands
pattern write devices/%u/#
pattern read cmd/%c

user alice
topic read news/#
topic deny news/secret

user admin
topic readwrite #
topic read $SYS/#
"""


@pytest.fixture
def files(tmp_path):
    pw = str(tmp_path / "pw")
    berth_passwd("-c", "-b", pw, "alice", "a")
    berth_passwd("-b", pw, "bob", "b")
    berth_passwd("-b", pw, "admin", "x")
    acl = tmp_path / "acl"
    acl.write_text(ACL)
    return pw, acl


class Client(Paho):
    """A paho client that records what it receives and the codes of its acknowledgements."""

    def __init__(self, broker, client_id: str, user: str, password: str, version: int = V5, **kw):
        super().__init__(client_id, version, **kw)
        self.client.username_pw_set(user, password)
        self.messages: list[tuple[str, bytes]] = []
        self.acks: dict[int, int] = {}
        self.subacks: dict[int, list[int]] = {}
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload))
        self.client.on_publish = lambda c, u, mid, rc, props: self.acks.__setitem__(mid, rc.value)
        self.client.on_subscribe = lambda c, u, mid, codes, props: self.subacks.__setitem__(
            mid, [code.value for code in codes])
        flags, rc, _ = self.connect(broker.addr)
        assert rc.value == 0, rc

    def subscribe(self, topic_filter: str, qos: int = 1) -> int:
        _, mid = self.client.subscribe(topic_filter, qos)
        self.loop_until(lambda: mid in self.subacks, 5, f"SUBACK for {topic_filter}")
        return self.subacks[mid][0]

    def publish(self, topic: str, payload: bytes = b"m", qos: int = 1, retain: bool = False) -> int:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        self.loop_until(lambda: info.mid in self.acks, 5, f"acknowledgement of {topic}")
        return self.acks[info.mid]

    def wait_for(self, topic: str, timeout: float = 5) -> list[str]:
        """Every topic received until one on `topic`."""
        self.loop_until(lambda: any(t == topic for t, _ in self.messages), timeout, f"a message on {topic}")
        got = [t for t, _ in self.messages]
        self.messages.clear()
        return got


@VERSIONS
def test_a_device_publishes_under_its_username_and_reads_its_client_ids_commands(start_broker, files, version):
    pw, acl = files
    broker = start_broker("--password-file", pw, "--acl-file", str(acl), "--sys-interval", "1")
    admin = Client(broker, "admin", "admin", "x")
    assert admin.subscribe("devices/#") == 1
    device = Client(broker, f"dev-{version}", "bob", "b", version)
    assert device.subscribe(f"cmd/dev-{version}") == 1
    assert device.subscribe("cmd/other") == REFUSED_SUBSCRIBE[version]
    assert device.subscribe("devices/bob/#") == REFUSED_SUBSCRIBE[version], "write is not read"
    assert device.publish("devices/bob/temp") == 0
    assert device.publish("devices/alice/temp") == REFUSED_PUBLISH[version]
    assert raw_qos2_code(broker, version, "bob", b"b", "devices/alice/temp") == REFUSED_PUBLISH[version]
    assert device.publish("devices/bob/end") == 0
    assert admin.wait_for("devices/bob/end") == ["devices/bob/temp", "devices/bob/end"]
    # The refusals are counted: `$SYS/broker/acl/refused` (two filters and two PUBLISHes).
    stats = Client(broker, f"stats-{version}", "admin", "x")
    assert stats.subscribe("$SYS/broker/acl/refused") == 1
    stats.loop_until(lambda: any(int(p) >= 4 for _, p in stats.messages), 15, "$SYS acl/refused >= 4")
    assert admin.publish(f"cmd/dev-{version}", b"reboot") == 0
    assert device.wait_for(f"cmd/dev-{version}") == [f"cmd/dev-{version}"]
    # QoS 2 through the whole exchange, allowed: the device's PUBREL is completed.
    assert device.publish("devices/bob/q2", qos=2) == 0
    assert admin.wait_for("devices/bob/q2") == ["devices/bob/q2"]


@VERSIONS
def test_a_retained_message_behind_a_deny_rule_is_not_delivered(start_broker, files, version):
    pw, acl = files
    broker = start_broker("--password-file", pw, "--acl-file", str(acl))
    admin = Client(broker, "admin", "admin", "x")
    for topic in ("news/secret", "news/open", "news/zz-last"):
        assert admin.publish(topic, b"r", retain=True) == 0
    alice = Client(broker, "alice-1", "alice", "a", version)
    assert alice.subscribe("news/#") == 1
    got = alice.wait_for("news/zz-last")
    assert sorted(got) == ["news/open", "news/zz-last"], got
    # Live messages too: a deny inside a granted wildcard holds at delivery.
    admin.publish("news/secret", b"live")
    admin.publish("news/after")
    assert alice.wait_for("news/after") == ["news/after"]


def wait_for_log(broker, text: str, since: int) -> None:
    deadline = time.monotonic() + 10
    while text not in broker.stderr_text()[since:]:
        assert time.monotonic() < deadline, broker.stderr_text()
        time.sleep(0.05)


def test_sighup_changes_the_rules_without_dropping_connections(start_broker, files):
    pw, acl = files
    broker = start_broker("--password-file", pw, "--acl-file", str(acl))
    admin = Client(broker, "admin", "admin", "x")
    alice = Client(broker, "alice-1", "alice", "a")
    assert alice.subscribe("news/#") == 1
    assert alice.publish("news/mine") == 0x87
    admin.publish("news/weather")
    assert alice.wait_for("news/weather") == ["news/weather"]

    acl.write_text(ACL.replace("topic deny news/secret", "topic deny news/weather\ntopic write news/mine"))
    mark = len(broker.stderr_text())
    broker.proc.send_signal(signal.SIGHUP)
    wait_for_log(broker, "configuration reloaded", mark)
    admin.publish("news/weather")
    admin.publish("news/secret")
    admin.publish("news/marker")
    assert alice.wait_for("news/marker") == ["news/secret", "news/marker"]
    assert alice.publish("news/mine") == 0, "the new rules let alice write here"

    # A file that no longer parses keeps the rules in force, and says why.
    acl.write_text("topic read a/#/b\n")
    mark = len(broker.stderr_text())
    broker.proc.send_signal(signal.SIGHUP)
    wait_for_log(broker, "configuration not reloaded", mark)
    assert "acl_file" in broker.stderr_text()[mark:]
    assert alice.publish("news/mine") == 0
    alice.client.disconnect()
    admin.client.disconnect()


def raw_qos2_code(broker, version: int, user: str, password: bytes, topic: str) -> int:
    """The PUBREC code of a QoS 2 PUBLISH (paho answers even a refusing PUBREC with PUBREL and
    reports the PUBCOMP's code instead)."""
    with Conn(broker.host, broker.port, version) as c:
        c.send(connect(f"raw-{user}", version, username=user, password=password))
        assert parse_connack(c.read_packet(), version).code == 0
        c.send(publish_with(topic, b"m", version, qos=2, packet_id=1))
        p = c.read_packet()
        assert p.ptype == PUBREC and packet_id_of(p) == 1, p
        return p.body[2] if len(p.body) > 2 else 0


def raw_connect(broker, client_id: str, version: int, user: str | None, password: bytes | None,
                clean: bool = False) -> tuple[int, bool]:
    with Conn(broker.host, broker.port, version) as c:
        c.send(connect(client_id, version, clean=clean, username=user, password=password,
                       props=None if version == V311 else b"\x05\x11\x00\x00\x0e\x10"))
        ack = parse_connack(c.read_packet(), version)
        return ack.code, ack.session_present


@VERSIONS
def test_a_session_belongs_to_its_user_across_a_restart(start_broker, files, tmp_path, version):
    pw, _ = files
    data = str(tmp_path / "data")
    broker = start_broker("--password-file", pw, "--allow-anonymous", "true", data_dir=data)
    cid = f"meter-{version}"
    assert raw_connect(broker, cid, version, "alice", b"a") == (0, False)
    assert raw_connect(broker, cid, version, "bob", b"b") == (NOT_AUTHORIZED[version], False)
    assert raw_connect(broker, cid, version, "bob", b"b", clean=True)[0] == NOT_AUTHORIZED[version]
    assert raw_connect(broker, cid, version, None, None, clean=True)[0] == NOT_AUTHORIZED[version]
    assert "belongs to another user" in broker.stderr_text()
    assert raw_connect(broker, cid, version, "alice", b"a") == (0, True), "alice's session is intact"
    broker.stop()

    again = start_broker("--password-file", pw, "--allow-anonymous", "true", data_dir=data)
    assert raw_connect(again, cid, version, "bob", b"b") == (NOT_AUTHORIZED[version], False)
    assert raw_connect(again, cid, version, "alice", b"a") == (0, True)
    again.stop()

    anyone = start_broker("--password-file", pw, "--session-ownership", "false", data_dir=data)
    assert raw_connect(anyone, cid, version, "bob", b"b") == (0, True)


def test_paho_sees_the_takeover_refused(start_broker, files):
    pw, _ = files
    broker = start_broker("--password-file", pw)
    alice = Client(broker, "shared-id", "alice", "a", clean=False)
    thief = Paho("shared-id", V5)
    thief.client.username_pw_set("bob", "b")
    _, rc, _ = thief.connect(broker.addr)
    assert rc.value == 0x87
    alice.client.loop(timeout=0.1)
    assert alice.disconnected is None, "the owner's connection stays"
    assert alice.subscribe("devices/#") == 1, "and works"


def test_a_bad_acl_file_is_an_error_naming_the_file_and_line(tmp_path):
    from test_auth import run_berth
    path = tmp_path / "acl"
    path.write_text("user a\ntopic read a/#/b\n")
    proc = run_berth("--acl-file", str(path), "--cores", "1", "--data-dir", str(tmp_path / "d"))
    assert proc.returncode == 2
    assert f"acl_file {path} line 2" in proc.stderr, proc.stderr


def test_the_first_session_of_the_readme_with_authentication_on(start_broker, files, tmp_path):
    """README's first session (mosquitto_sub as a persistent session, messages queued while it
    is away, kill -9, both delivered in order) with a password file and an ACL: the device may
    read only its own command topic, and another user cannot take its client id."""
    import shutil
    import subprocess
    sub_bin, pub_bin = shutil.which("mosquitto_sub"), shutil.which("mosquitto_pub")
    assert sub_bin and pub_bin, "mosquitto-clients missing; tests/run-all.sh installs them"
    pw, acl = files
    berth_passwd("-b", pw, "sensor-7", "s7")
    data = str(tmp_path / "data")
    flags = ("--password-file", pw, "--acl-file", str(acl))
    broker = start_broker(*flags, data_dir=data)

    def sub(user: str, password: str, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sub_bin, "-h", broker.host, "-p", str(broker.port), "-i", "sensor-7", "-c",
                               "-q", "1", "-t", "cmd/sensor-7", "-v", "-u", user, "-P", password, *extra],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)

    first = sub("sensor-7", "s7", "-W", "1", "-d")
    assert "received SUBACK" in first.stdout and "Subscribed (mid: 1): 1" in first.stdout, first.stdout
    for message in ("reboot", "update 1.4.2"):
        pub = subprocess.run([pub_bin, "-h", broker.host, "-p", str(broker.port), "-q", "1", "-t", "cmd/sensor-7",
                              "-m", message, "-u", "admin", "-P", "x"],
                             stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
        assert pub.returncode == 0, pub.stderr
    assert broker.stop(signal.SIGKILL) == -signal.SIGKILL
    broker = start_broker(*flags, data_dir=data)
    thief = sub("bob", "b", "-C", "1", "-W", "5")
    assert thief.returncode != 0 and "not authori" in (thief.stdout + thief.stderr).lower(), thief
    back = sub("sensor-7", "s7", "-C", "2", "-W", "10")
    assert back.stdout.splitlines() == ["cmd/sensor-7 reboot", "cmd/sensor-7 update 1.4.2"], back
