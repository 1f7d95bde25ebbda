"""Who is let in, black box: `max_clientid_len` (CONNACK v5 0x85 / 3.1.1 2), `max_connections`
and `max_connection_rate` (the socket is closed at accept, nothing answered), the ban file
(CONNACK v5 0x8A / 3.1.1 5, by client id, username or network, re-read on SIGHUP without
dropping anyone), and flapping detection (N disconnects in the window ban the client id for
`flapping_ban`). Each refusal leaves a client that was already connected as it was, and is
counted under `$SYS/broker/clients/refused/`.

Clients are raw sockets (`mqttwire`) where a real client would refuse to send what is tested,
paho and mosquitto_pub elsewhere.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest

from bgclient import T, ClientSet
from clients import Paho
from mqttwire import (DISCONNECT_V311_BYTES, V5, V311, Closed, Conn, connect, ids_owned_by, packet,
                      parse_connack, parse_publish, subscribe)

CORES = 2
SYS = "$SYS/broker/"
VERSIONS = pytest.mark.parametrize("version", [V311, V5], ids=["v311", "v5"])
BANNED = {V311: 5, V5: 0x8A}
ID_NOT_VALID = {V311: 2, V5: 0x85}
MOSQUITTO_PUB = shutil.which("mosquitto_pub")


def connack_code(broker, client_id: str, version: int, **kw) -> int:
    with Conn(broker.host, broker.port, version) as c:
        c.send(connect(client_id, version, **kw))
        return parse_connack(c.read_packet(), version).code


def closed_unanswered(broker, client_id: str = "x", version: int = V5) -> bool:
    """Whether the broker closes a new connection without answering its CONNECT."""
    c = Conn(broker.host, broker.port, version)
    try:
        c.send_tolerating_close(connect(client_id, version))
        try:
            p = c.read_packet()
        except Closed:
            return True
        assert parse_connack(p, version).code == 0, p
        return False
    finally:
        c.close()


def held(broker, client_id: str, version: int = V5) -> Conn:
    c = Conn(broker.host, broker.port, version)
    c.connect(client_id)
    return c


def wait_for_sys(broker, want: dict[str, str], timeout: float = T, *, at_least: bool = False) -> None:
    """Subscribes to `$SYS` and reads until every figure in `want` has its value (or, with
    `at_least`, a value no smaller)."""

    def short(k: str, v: str) -> bool:
        seen = latest.get(SYS + k)
        if at_least:
            return seen is None or int(seen) < int(v)
        return seen != v

    clients = ClientSet(broker)
    try:
        watcher = clients("sys-watcher", V5)
        watcher.sub(SYS + "#", 0)
        latest: dict[str, str] = {}
        deadline = time.monotonic() + timeout
        while any(short(k, v) for k, v in want.items()):
            try:
                m = watcher.get(max(deadline - time.monotonic(), 0.001))
            except AssertionError:
                seen = {k: latest.get(SYS + k) for k in want}
                raise AssertionError(f"wanted {want}, last saw {seen}") from None
            latest[m.topic] = m.payload.decode()
    finally:
        clients.close()


def reload(broker) -> None:
    """Sends SIGHUP and waits until the broker says how the reload went."""
    before = broker.stderr_text().count("SIGHUP: reloading")
    broker.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while True:
        text = broker.stderr_text()
        if text.count("SIGHUP: reloading") > before and (
                text.count("configuration reloaded") + text.count("configuration not reloaded") > before):
            return
        assert time.monotonic() < deadline, text[-4000:]
        time.sleep(0.05)


# --- max_clientid_len --------------------------------------------------------------------------

@VERSIONS
def test_a_client_id_over_max_clientid_len_is_refused_and_harms_no_one(start_broker, version):
    broker = start_broker("--max-clientid-len", "23", "--sys-interval", "1", cores=CORES)
    other = held(broker, "bystander")
    assert connack_code(broker, "c" * 23, version) == 0
    assert connack_code(broker, "c" * 24, version) == ID_NOT_VALID[version]
    other.ping()
    wait_for_sys(broker, {"clients/refused/client_id_length": "1"})


def test_the_default_max_clientid_len_is_65535(start_broker):
    broker = start_broker()
    # A client id of 65535 bytes fills the whole length field: that is the largest there is,
    # so the default refuses nothing a client can send; 100 bytes (over 23) is taken.
    assert connack_code(broker, "d" * 100, V5) == 0
    assert connack_code(broker, "d" * 65535, V311) == 0


# --- max_connections ---------------------------------------------------------------------------

def test_max_connections_closes_the_one_over_at_accept_until_one_leaves(start_broker):
    broker = start_broker("--max-connections", "2", "--sys-interval", "1", cores=CORES)
    # Owned by different cores: the count is the whole broker's, hand-offs included.
    first, second = (held(broker, ids_owned_by(core, CORES, "maxconn")[0]) for core in (0, 1))
    assert closed_unanswered(broker)
    assert closed_unanswered(broker, version=V311)
    first.ping()
    second.ping()
    second.send(b"\xe0\x00")
    second.read_until_closed()
    second.close()
    # The place is given back once the broker has closed its side. A try made before then is
    # refused and counted too, so the expected count grows with each one.
    refused = 2
    deadline = time.monotonic() + 10
    while closed_unanswered(broker, "third"):
        refused += 1
        assert time.monotonic() < deadline, "no place came free after a client left"
        time.sleep(0.1)
    first.ping()
    first.close()
    # The connection that took the place is gone too; a $SYS watcher must get in, and it reads
    # the count itself (a second connection could come before the broker frees the place).
    deadline = time.monotonic() + 10
    while True:
        watcher = Conn(broker.host, broker.port, V5)
        watcher.send_tolerating_close(connect("watcher", V5))
        try:
            assert parse_connack(watcher.read_packet(), V5).code == 0
            break
        except Closed:
            watcher.close()
            refused += 1
            assert time.monotonic() < deadline, "no place came free after two clients left"
            time.sleep(0.1)
    with watcher:
        watcher.send(subscribe(SYS + "clients/refused/max_connections", V5))
        watcher.read_packet()  # SUBACK
        deadline = time.monotonic() + T
        while True:
            m = parse_publish(watcher.read_packet(max(deadline - time.monotonic(), 0.001)), V5)
            if m.payload.decode() == str(refused):
                break


# --- max_connection_rate -----------------------------------------------------------------------

def test_connections_over_max_connection_rate_are_closed_at_once(start_broker):
    broker = start_broker("--max-connection-rate", "2", "--sys-interval", "1", cores=CORES)
    other = held(broker, "early")  # takes one core's token
    time.sleep(1.1)  # a stimulus gap: every core's bucket full again (1 a second each)
    started = time.monotonic()
    outcomes = [closed_unanswered(broker, f"burst-{i}") for i in range(12)]
    elapsed = time.monotonic() - started
    admitted = outcomes.count(False)
    # Each core admits one at once and one a second after: 2 + 2 * elapsed at most, whatever
    # way the kernel spreads the connections over the cores.
    assert 1 <= admitted <= 2 + 2 * elapsed + 1, (admitted, elapsed)
    assert outcomes.count(True) >= 12 - admitted
    other.ping()
    # A second later there is room again.
    deadline = time.monotonic() + 10
    while closed_unanswered(broker, "later"):
        assert time.monotonic() < deadline
        time.sleep(0.3)
    # The tries of "later" (and perhaps of the $SYS watcher) were refused too.
    refused = outcomes.count(True)
    deadline = time.monotonic() + 20
    while True:
        try:
            wait_for_sys(broker, {"clients/refused/connection_rate": str(refused)}, timeout=5,
                         at_least=True)
            return
        except AssertionError:
            assert time.monotonic() < deadline
            time.sleep(1)


def test_a_listener_table_has_a_connection_rate_of_its_own(start_broker, tmp_path):
    """`max_connection_rate` in a `[[listener]]` table holds that listener to it; the plain
    listener (no rate) takes every connection of the same burst."""
    config = tmp_path / "rates.toml"
    config.write_text('[[listener]]\naddress = "127.0.0.1:0"\nmax_connection_rate = 2\n')
    broker = start_broker("--config", str(config), cores=CORES)
    # berthproc reads the first plain ready line: `listen` (port 0, from the flag) comes first,
    # so broker.addr is the unlimited one; the table's is the second plain line.
    limited = LimitedAddr(broker)
    assert not any(closed_unanswered(broker, f"free-{i}") for i in range(12))
    outcomes = [closed_unanswered(limited, f"limited-{i}") for i in range(12)]
    assert outcomes.count(True) >= 6, outcomes


class LimitedAddr:
    """The second plain listener of a broker (its ready line follows the first, which is
    where berthproc stops reading), as `closed_unanswered` takes one."""

    def __init__(self, broker, timeout: float = 10):
        import select
        deadline = time.monotonic() + timeout
        fd = broker.proc.stdout.fileno()
        while b"\n" not in broker.stdout_seen:
            ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
            assert ready, f"no second ready line: {broker.stdout_seen!r}"
            broker.stdout_seen += os.read(fd, 4096)
        line = broker.stdout_seen.split(b"\n", 1)[0].decode()
        assert line.startswith("berth listening on "), line
        host, port = line.rsplit(" ", 1)[-1].rsplit(":", 1)
        self.host, self.port = host, int(port)


# --- bans ----------------------------------------------------------------------------------------

@VERSIONS
def test_banned_client_ids_and_usernames_get_banned(start_broker, tmp_path, version):
    bans = tmp_path / "bans"
    bans.write_text("# who may not come in\nclientid evil-device\nusername mallory\n")
    broker = start_broker("--ban-file", str(bans), "--sys-interval", "1", cores=CORES)
    other = held(broker, "good-device")
    assert connack_code(broker, "evil-device", version) == BANNED[version]
    assert connack_code(broker, "someone", version, username="mallory") == BANNED[version]
    assert connack_code(broker, "evil-device-2", version, username="alice") == 0
    other.ping()
    wait_for_sys(broker, {"clients/refused/banned": "2"})


@pytest.mark.parametrize("version", ["mqttv311", "mqttv5"])
def test_mosquitto_pub_is_told_it_is_banned(start_broker, tmp_path, version):
    assert MOSQUITTO_PUB, "mosquitto_pub is missing; tests/run-all.sh installs mosquitto-clients"
    bans = tmp_path / "bans"
    bans.write_text("clientid banned-pub\n")
    broker = start_broker("--ban-file", str(bans))
    run = subprocess.run([MOSQUITTO_PUB, "-h", broker.host, "-p", str(broker.port), "-V", version,
                          "-i", "banned-pub", "-t", "t", "-m", "m", "-d"],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    assert run.returncode != 0
    code = "138" if version == "mqttv5" else "5"
    assert f"received CONNACK ({code})" in run.stdout, run.stdout + run.stderr


def test_sighup_rereads_the_ban_file_and_keeps_connections(start_broker, tmp_path):
    bans = tmp_path / "bans"
    bans.write_text("clientid nobody\n")
    broker = start_broker("--ban-file", str(bans), cores=CORES)
    others = [held(broker, ids_owned_by(core, CORES, "stays")[0]) for core in range(CORES)]
    assert connack_code(broker, "newcomer", V5) == 0
    # Every client comes from 127.0.0.1: a network ban on it bans new clients, v4 and v6 rules
    # side by side; the connections already in are left alone.
    bans.write_text("network 127.0.0.0/8\nnetwork ::1/128\n")
    reload(broker)
    assert "configuration reloaded" in broker.stderr_text()
    assert connack_code(broker, "newcomer", V5) == BANNED[V5]
    assert connack_code(broker, "newcomer", V311) == BANNED[V311]
    for c in others:
        c.ping()
    # A file that no longer reads keeps the rules in force, and says why.
    bans.write_text("network 127.0.0.0/8\nnetwork not-an-address\n")
    reload(broker)
    assert "configuration not reloaded" in broker.stderr_text()
    assert "line 2" in broker.stderr_text()
    assert connack_code(broker, "newcomer", V5) == BANNED[V5]
    bans.write_text("")
    reload(broker)
    assert connack_code(broker, "newcomer", V5) == 0
    for c in others:
        c.ping()


def test_a_ban_file_that_does_not_read_stops_the_start(tmp_path):
    from berthproc import Broker, BrokerDied
    bans = tmp_path / "bans"
    bans.write_text("host 10.0.0.1\n")
    with pytest.raises(BrokerDied) as died:
        Broker.start("--ban-file", str(bans), workdir=str(tmp_path))
    assert "ban_file" in str(died.value) and "unknown rule `host`" in str(died.value)


# --- flapping --------------------------------------------------------------------------------------

def connect_and_leave(broker, client_id: str, version: int) -> None:
    """Connects, disconnects normally, and waits until the broker has closed its side (so the
    disconnect is counted before the next CONNECT)."""
    with Conn(broker.host, broker.port, version) as c:
        c.connect(client_id)
        c.send(DISCONNECT_V311_BYTES if version == V311 else packet(0xE0, b"\x00\x00"))
        c.read_until_closed()


@VERSIONS
def test_a_flapping_client_id_is_banned_until_the_ban_ends(start_broker, version):
    broker = start_broker("--flapping-max-disconnects", "3", "--flapping-window", "60",
                          "--flapping-ban", "2", "--sys-interval", "1", cores=CORES)
    other = held(broker, "steady")
    flapper = ids_owned_by(1, CORES, f"flapper-{version}")[0]
    for _ in range(3):
        connect_and_leave(broker, flapper, version)
    banned_at = time.monotonic()
    assert connack_code(broker, flapper, version) == BANNED[version]
    assert connack_code(broker, "not-flapping", version) == 0
    other.ping()
    # Allowed again once the 2 s ban is over (and not long before it ends).
    while connack_code(broker, flapper, version) == BANNED[version]:
        assert time.monotonic() - banned_at < 10, "still banned long after flapping_ban"
        time.sleep(0.2)
    assert time.monotonic() - banned_at >= 1.5
    other.ping()
    wait_for_sys(broker, {"clients/flapping/bans": "1"})


def test_flapping_detection_is_off_by_default(start_broker):
    broker = start_broker(cores=1)
    for _ in range(20):
        connect_and_leave(broker, "reconnects-a-lot", V5)
    assert connack_code(broker, "reconnects-a-lot", V5) == 0


def test_paho_sees_the_flapping_ban(start_broker):
    broker = start_broker("--flapping-max-disconnects", "2", "--flapping-ban", "30")
    for _ in range(2):
        connect_and_leave(broker, "paho-flapper", V5)
    client = Paho("paho-flapper", V5)
    _, rc, props = client.connect(broker.addr)
    assert rc.value == 0x8A, rc
    assert "flapping" in getattr(props, "ReasonString", ""), props
