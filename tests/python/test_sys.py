"""`$SYS/broker/...` on a 2-core broker: figures summed over both cores reach a subscriber on
either core; clients cannot publish there.

The broker publishes every `--sys-interval` seconds (1 here) and only what changed, as retained
messages; a figure may lag by an interval, so the tests wait for the expected value (with a
deadline) rather than for a number of updates.
"""

from __future__ import annotations

import re
import struct
import time

import pytest

from bgclient import T, ClientSet
from mqttwire import V5, V311, Conn, ids_owned_by, publish

CORES = 2
SYS = "$SYS/broker/"


def on_core(core: int, name: str, n: int = 1) -> list[str]:
    return ids_owned_by(core, CORES, name, n)


@pytest.fixture
def sys_broker(start_broker):
    return start_broker("--sys-interval", "1")


@pytest.fixture
def mk(sys_broker):
    clients = ClientSet(sys_broker)
    yield clients
    clients.close()


class Watcher:
    """The latest value of each `$SYS` topic one subscriber has seen."""

    def __init__(self, client):
        self.client = client
        self.latest: dict[str, str] = {}
        assert client.sub(SYS + "#", 0) == [0]

    def wait_for(self, want: dict[str, str], timeout: float = T) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while any(self.latest.get(SYS + k) != v for k, v in want.items()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = {k: self.latest.get(SYS + k) for k in want}
                raise AssertionError(f"{self.client.cid}: wanted {want}, last saw {seen}")
            m = self.client.get(remaining)
            self.latest[m.topic] = m.payload.decode()
        return self.latest


def test_sys_figures_reach_a_subscriber_on_each_core(mk):
    watchers = [Watcher(mk(on_core(core, "sys-watch")[0])) for core in range(CORES)]
    for w in watchers:
        latest = w.wait_for({"clients/connected": "2"})
        assert re.fullmatch(r"\d+ seconds", latest[SYS + "uptime"]), latest
        assert latest[SYS + "version"].startswith("berth "), latest
    # Six more clients, three owned by each core, one of them persistent.
    others = [mk(cid) for core in range(CORES) for cid in on_core(core, "sys-client", 3)]
    away = mk(on_core(1, "sys-away")[0], V311, clean=False)
    for w in watchers:
        w.wait_for({"clients/connected": "9", "clients/disconnected": "0", "clients/total": "9",
                    "subscriptions/count": "2"})
    away.disconnect()
    others[0].disconnect()
    for w in watchers:
        latest = w.wait_for({"clients/connected": "7", "clients/disconnected": "1", "clients/total": "8"})
        for figure in ("bytes/received", "bytes/sent", "messages/received", "messages/sent",
                       "publish/messages/sent", "publish/messages/received", "publish/messages/dropped",
                       "retained messages/count"):
            assert latest[SYS + figure].isdigit(), (figure, latest)
        assert int(latest[SYS + "bytes/received"]) > 0 and int(latest[SYS + "messages/sent"]) > 0


def test_uptime_counts_up(mk):
    w = Watcher(mk(on_core(0, "uptime")[0]))
    first = None
    deadline = time.monotonic() + T
    while True:
        m = w.client.get(max(deadline - time.monotonic(), 0.01))
        if m.topic != SYS + "uptime":
            continue
        seconds = int(m.payload.split()[0])
        if first is None:
            first = seconds
        elif seconds > first:
            break


@pytest.mark.parametrize("version", [V311, V5], ids=["v311", "v5"])
def test_clients_cannot_publish_under_sys(sys_broker, mk, version):
    watcher = mk(on_core(1, f"sys-forge-watch-{version}")[0])
    assert watcher.sub("$SYS/forged/#", 1) == [1]
    assert watcher.sub("forge-end", 1) == [1]
    with Conn(*sys_broker.addr, version=version) as conn:
        conn.connect(on_core(0, f"sys-forger-{version}")[0])
        conn.send(publish("$SYS/forged/q0", b"x", version))
        for first_byte, packet_id, ack_type in ((0x32, 7, 4), (0x34, 8, 5)):
            conn.send(publish("$SYS/forged/q", b"x", version, first_byte=first_byte, packet_id=packet_id))
            p = conn.read_packet()
            assert p.ptype == ack_type and p.body[:2] == struct.pack(">H", packet_id), p
            if version == V5:
                assert p.body[2] == 0x87, f"Not authorized expected: {p!r}"
            else:
                assert len(p.body) == 2, p
        conn.send(publish("forge-end", b"end", version, first_byte=0x32, packet_id=9))
        assert conn.read_packet().ptype == 4
        conn.ping()
    got = watcher.get_until("forge-end")
    assert got == [], f"a client's $SYS publish was delivered: {[(m.topic, m.payload) for m in got]}"


def test_store_figures_show_queued_messages_and_disk_use(sys_broker, mk):
    """Disk use and queue depth of the persistent-session store are visible in $SYS."""
    host, port = sys_broker.addr
    away = on_core(1, "sys-away")[0]
    with Conn(host, port, version=V311) as c:
        c.connect(away, clean=False)
        c.send(bytes([0x82, 8, 0, 1, 0, 3]) + b"q/t" + b"\x01")
        assert c.read_packet().ptype == 9
        c.send(b"\xe0\x00")
    with Conn(host, port, version=V311) as c:
        c.connect(on_core(0, "sys-pub")[0], clean=True)
        for i in range(3):
            c.send(publish("q/t", b"x", V311, first_byte=0x32, packet_id=i + 1))
            assert c.read_packet().ptype == 4
    w = Watcher(mk(on_core(0, "sys-store")[0]))
    w.wait_for({"store/queued": "3", "store/messages": "3"})
    deadline = time.monotonic() + T
    while int(w.latest.get(SYS + "store/bytes", "0")) <= 0:
        assert time.monotonic() < deadline, f"store/bytes never above 0: {w.latest}"
        m = w.client.get(deadline - time.monotonic())
        w.latest[m.topic] = m.payload.decode()
