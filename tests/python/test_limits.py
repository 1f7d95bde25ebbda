"""Per-session bounds, black box: `max_subscriptions` (each filter of a SUBSCRIBE beyond it gets
v5 0x97 Quota exceeded / 3.1.1 0x80 while the others of the packet are granted, a
re-subscription is not new, refusals are counted in `$SYS/broker/subscriptions/refused`, the
default is 10,000), a session of many subscriptions comes back whole after a restart (under a
lower limit too), and the default `max_queued_bytes` (16 MiB) stops a stalled persistent
subscriber's queue from growing, dropping the oldest and counting each drop in
`$SYS/broker/publish/messages/dropped`.

Subscribers and publishers are owned by different cores (`ids_owned_by`).
"""

from __future__ import annotations

import signal
import struct
import time

import pytest
from paho.mqtt.subscribeoptions import SubscribeOptions

from bgclient import T, ClientSet
from clients import RawSession, publish_all
from mqttwire import (PUBACK, SUBACK, V5, V311, Conn, ids_owned_by, mqtt_str, packet, packet_id_of,
                      publish_with, read_vbi)

CORES = 2
SYS = "$SYS/broker/"
VERSIONS = pytest.mark.parametrize("version", [V311, V5], ids=["v311", "v5"])
QUOTA = {V5: 0x97, V311: 0x80}


def cid(core: int, name: str) -> str:
    return ids_owned_by(core, CORES, name)[0]


def wait_for_sys(client, want: dict[str, str], timeout: float = T) -> None:
    """Reads `client`'s messages (it subscribed to $SYS) until every figure in `want` has
    its value; fails with the last values seen at the deadline."""
    latest: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while any(latest.get(SYS + k) != v for k, v in want.items()):
        remaining = deadline - time.monotonic()
        try:
            m = client.get(max(remaining, 0.001))
        except AssertionError:  # nothing more before the deadline
            seen = {k: latest.get(SYS + k) for k in want}
            raise AssertionError(f"wanted {want}, last saw {seen}") from None
        latest[m.topic] = m.payload.decode()


def sub_many(client, filters: list[tuple[str, int]]) -> list[int]:
    """One SUBSCRIBE carrying every filter (paho); the SUBACK's reason codes as ints."""
    if client.version == V5:
        rc, mid = client.c.subscribe([(f, SubscribeOptions(qos=q)) for f, q in filters])
    else:
        rc, mid = client.c.subscribe(filters)
    assert rc == 0, rc
    return client._wait_ack(mid, f"SUBSCRIBE of {len(filters)} filters")


def raw_subscribe(conn: Conn, version: int, filters: list[str], qos: int = 1, packet_id: int = 1) -> list[int]:
    """One SUBSCRIBE of many filters in raw bytes; the SUBACK's reason codes."""
    body = struct.pack(">H", packet_id) + (b"\x00" if version == V5 else b"")
    body += b"".join(mqtt_str(f) + bytes([qos]) for f in filters)
    conn.send(packet(0x82, body))
    p = conn.read_packet(timeout=30)
    assert p.ptype == SUBACK and packet_id_of(p) == packet_id, f"expected SUBACK, got {p!r}"
    i = 2
    if version == V5:
        n, i = read_vbi(p.body, 2)
        i += n
    return list(p.body[i:])


@pytest.fixture
def mk():
    made: list[ClientSet] = []

    def clients(broker) -> ClientSet:
        made.append(ClientSet(broker))
        return made[-1]

    yield clients
    for c in made:
        c.close()


# max_subscriptions ------------------------------------------------------------------------------

@VERSIONS
def test_max_subscriptions_refuses_each_new_filter_beyond_it_with_paho(start_broker, mk, version):
    """--max-subscriptions 3: of five filters in one SUBSCRIBE three are granted, two refused;
    re-subscribing a held filter is granted (it replaces [MQTT-3.8.4-3]), a new one is not;
    the granted ones deliver, the refused ones do not; $SYS counts the three refusals."""
    broker = start_broker("--max-subscriptions", "3", "--sys-interval", "1")
    clients = mk(broker)
    sub = clients(cid(0, f"maxsubs-{version}-sub"), version)
    q = QUOTA[version]
    got = sub_many(sub, [(f"maxsubs/{t}", 1) for t in "abcde"])
    assert got == [1, 1, 1, q, q], f"SUBACK beyond max_subscriptions 3: {got}"
    got = sub_many(sub, [("maxsubs/a", 0), ("maxsubs/f", 1)])
    assert got == [0, q], f"a re-subscription is not a new subscription: {got}"

    pub = clients(cid(1, f"maxsubs-{version}-pub"), version)
    for topic in ["maxsubs/d", "maxsubs/a", "maxsubs/f", "maxsubs/c"]:
        pub.pub(topic, topic)
    got = [(m.topic, m.qos) for m in sub.get_until("maxsubs/c")]
    assert got == [("maxsubs/a", 0)], f"only the granted filters deliver: {got}"

    watcher = clients(cid(1, f"maxsubs-{version}-sys"), version)
    assert watcher.sub(SYS + "subscriptions/#", 0) == [0]
    wait_for_sys(watcher, {"subscriptions/refused": "3"})


@VERSIONS
def test_max_subscriptions_defaults_to_ten_thousand(broker, version):
    """No flag: one SUBSCRIBE of 10,001 filters (raw bytes) is granted 10,000 times and refused
    once, at the end; the session still works."""
    with Conn(*broker.addr, version=version) as c:
        c.connect(cid(0, f"defsubs-{version}"))
        got = raw_subscribe(c, version, [f"defsubs/{i}" for i in range(10_001)])
        assert len(got) == 10_001
        assert got[:10_000] == [1] * 10_000, f"first refusal at {got.index(QUOTA[version])}"
        assert got[10_000] == QUOTA[version], f"the 10,001st filter: {got[10_000]:#x}"
        c.send(publish_with("defsubs/9999", b"x", version, qos=1, packet_id=7))
        kinds = sorted(c.read_packet().ptype for _ in range(2))
        assert kinds == [3, PUBACK], f"a granted filter delivers (PUBLISH + PUBACK): {kinds}"


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_a_session_of_many_subscriptions_comes_back_whole_after_a_restart(start_broker, mk, how):
    """20,001 subscriptions in one session, under --max-subscriptions 0 (no limit); restarted
    with --max-subscriptions 100: every one is restored ($SYS count, deliveries at both ends
    of the list), re-subscribing one is granted, a new filter is refused."""
    n = 20_000
    broker = start_broker("--max-subscriptions", "0", "--fsync", "never")
    data_dir = broker.argv[broker.argv.index("--data-dir") + 1]
    s = RawSession(broker.addr, cid(0, f"bigsess-{how}"), V311)
    assert not s.connect().session_present
    got = raw_subscribe(s.conn, V311, [f"big/{i}" for i in range(n)] + ["big/end"])
    assert got == [1] * (n + 1)
    s.disconnect()
    if how == "sigterm":
        assert broker.stop(signal.SIGTERM) == 0, broker.describe()
    else:
        broker.kill()
        broker.stop(sig=None)

    broker = start_broker("--max-subscriptions", "100", "--sys-interval", "1", data_dir=data_dir)
    watcher = mk(broker)(cid(1, f"bigsess-{how}-sys"), V311)
    assert watcher.sub(SYS + "subscriptions/count", 0) == [0]
    wait_for_sys(watcher, {"subscriptions/count": str(n + 2)}, timeout=30)  # the watcher's own too

    s.addr = broker.addr
    assert s.connect().session_present, "the session of many subscriptions was lost"
    assert raw_subscribe(s.conn, V311, ["big/0", "big/new"], qos=0, packet_id=2) == [0, 0x80], \
        "restored subscriptions are kept above the new limit, and new ones are refused"
    publish_all(broker.addr, cid(1, f"bigsess-{how}-pub"),
                [("big/0", b"first"), (f"big/{n - 1}", b"last"), ("big/new", b"refused"), ("big/end", b"")])
    got = [(m.topic, m.payload) for m in s.drain_until("big/end")]
    assert got == [("big/0", b"first"), (f"big/{n - 1}", b"last")], got
    s.close()


# the default max_queued_bytes -------------------------------------------------------------------

def test_default_max_queued_bytes_bounds_a_stalled_persistent_subscriber(start_broker, mk):
    """No queue flags: 40 QoS 1 messages of 512 KiB (20 MiB) for an offline persistent session.
    Its queue stops at 16 MiB (32 messages): the 8 oldest are dropped (drop-oldest), each
    counted in $SYS; on resume exactly the 32 newest arrive, in order."""
    size, total, kept = 512 << 10, 40, 32
    broker = start_broker("--sys-interval", "1")
    s = RawSession(broker.addr, cid(0, "qbytes-default-sub"), V311)
    assert not s.connect().session_present
    s.subscribe("qbd/t", 1)
    s.subscribe("qbd/end", 1, packet_id=2)
    s.disconnect()

    pid = cid(1, "qbytes-default-pub")
    payloads = [b"%04d" % i + b"x" * (size - 4) for i in range(total)]
    publish_all(broker.addr, pid, [("qbd/t", p) for p in payloads])
    watcher = mk(broker)(cid(1, "qbytes-default-sys"), V311)
    assert watcher.sub(SYS + "#", 0) == [0]
    wait_for_sys(watcher, {"publish/messages/dropped": str(total - kept), "store/queued": str(kept)})

    assert s.connect().session_present, "session lost"
    publish_all(broker.addr, pid, [("qbd/end", b"")])
    got = s.drain_until("qbd/end", timeout=30)
    assert [m.payload[:4] for m in got] == [b"%04d" % i for i in range(total - kept, total)], \
        f"the 32 newest must be kept: got {len(got)}, first {got[0].payload[:4] if got else None}"
    assert all(m.payload == payloads[int(m.payload[:4])] for m in got)
    s.close()
