"""What one connection is held to, black box: `max_publish_rate` (PUBLISH packets a second per
client: over it a QoS 0 message is dropped, a v5 QoS 1/2 one answered 0x97 Quota exceeded
and dropped, a 3.1.1 QoS 1/2 one ends the connection) and `max_topic_levels` (a deeper topic
ends the connection, v5 with DISCONNECT 0x90; a deeper filter is refused in SUBACK, v5 0x8F,
3.1.1 0x80, beside the other filters of the packet). Each is counted in `$SYS`, and leaves
other clients as they were.

Rates are measured by what is delivered over a window, with wide margins: these are tests of
the limit's correctness, not of its timing (the load generator measures that: BENCHMARKS.md,
"limits").
"""

from __future__ import annotations

import time

import pytest

from bgclient import T, ClientSet
from mqttwire import (DISCONNECT, PUBACK, PUBREC, SUBACK, V5, V311, Closed, Conn, ack_codes, disconnect_reason,
                      ids_owned_by, publish_with, subscribe_many)
from test_admission import wait_for_sys

CORES = 2
VERSIONS = pytest.mark.parametrize("version", [V311, V5], ids=["v311", "v5"])
FILTER_INVALID = {V311: 0x80, V5: 0x8F}


def cid(core: int, name: str) -> str:
    return ids_owned_by(core, CORES, name)[0]


@pytest.fixture
def clients():
    made: list[ClientSet] = []

    def make(broker) -> ClientSet:
        made.append(ClientSet(broker))
        return made[-1]

    yield make
    for c in made:
        c.close()


def drain(sub, quiet: float = 1.0) -> int:
    """Messages `sub` receives until none comes for `quiet` seconds."""
    n = 0
    while True:
        try:
            sub.get(quiet)
        except AssertionError:
            return n
        n += 1


def ack_code(p, version: int) -> int:
    """The reason code of a PUBACK/PUBREC (0 when a v5 one leaves it out, as success may)."""
    assert p.ptype in (PUBACK, PUBREC), p
    return p.body[2] if len(p.body) > 2 else 0


# --- max_publish_rate ------------------------------------------------------------------------------

def test_v5_qos1_over_the_rate_is_told_0x97_and_not_delivered(start_broker, clients):
    broker = start_broker("--max-publish-rate", "20", "--sys-interval", "1", cores=CORES)
    made = clients(broker)
    sub = made(cid(0, "rate-sub"), V5)
    sub.sub("rate/#", 1)
    with Conn(broker.host, broker.port, V5) as pub:
        pub.connect(cid(1, "rate-pub"))
        started = time.monotonic()
        pub.send(b"".join(publish_with("rate/t", b"m", V5, qos=1, packet_id=i) for i in range(1, 201)))
        codes = [ack_code(pub.read_packet(), V5) for _ in range(200)]
        elapsed = time.monotonic() - started
        pub.ping()  # the connection stays
    granted = codes.count(0)
    assert codes.count(0x97) == 200 - granted, codes
    # The burst (one second's worth) and the rate over the time the 200 took.
    assert 20 <= granted <= 20 + 20 * elapsed + 2, (granted, elapsed)
    assert drain(sub) == granted
    wait_for_sys(broker, {"publish/messages/rate_limited": str(200 - granted)})


@VERSIONS
def test_qos0_over_the_rate_is_dropped_and_the_rate_holds_over_a_window(start_broker, clients, version):
    rate = 20
    broker = start_broker("--max-publish-rate", str(rate), cores=CORES)
    made = clients(broker)
    sub = made(cid(0, f"window-sub-{version}"), version)
    sub.sub("window/#", 0)
    other = made(cid(1, f"window-other-{version}"), version)
    with Conn(broker.host, broker.port, version) as pub:
        pub.connect(cid(1, f"window-pub-{version}"))
        # 100 a second for 3 s: five times the rate.
        started = time.monotonic()
        for i in range(300):
            pub.send(publish_with("window/t", b"m", version))
            time.sleep(max(0.0, started + (i + 1) / 100 - time.monotonic()))
        elapsed = time.monotonic() - started
        pub.ping()
    delivered = drain(sub)
    expected = rate + rate * elapsed  # the burst, then the rate
    assert 0.6 * expected <= delivered <= 1.3 * expected + 5, (delivered, expected)
    # A client publishing within the rate is not held back by the other one's excess.
    for i in range(10):
        other.pub("window/other", b"x", qos=1)
    assert drain(sub) == 10


def test_v311_qos1_over_the_rate_ends_the_connection(start_broker, clients):
    broker = start_broker("--max-publish-rate", "5", cores=CORES)
    made = clients(broker)
    bystander = made(cid(0, "v311-rate-bystander"), V311)
    with Conn(broker.host, broker.port, V311) as pub:
        pub.connect("v311-rate-pub")
        pub.send(b"".join(publish_with("t", b"m", V311, qos=1, packet_id=i) for i in range(1, 21)))
        packets = pub.read_until_closed()
    assert all(p.ptype == PUBACK for p in packets), packets
    assert 5 <= len(packets) < 20, packets
    bystander.pub("still/here", b"x", qos=1)


# --- max_topic_levels ------------------------------------------------------------------------------

@VERSIONS
def test_a_topic_deeper_than_max_topic_levels_ends_the_connection(start_broker, clients, version):
    broker = start_broker("--max-topic-levels", "3", "--sys-interval", "1", cores=CORES)
    made = clients(broker)
    sub = made(cid(0, f"deep-sub-{version}"), version)
    sub.sub("a/#", 0)
    with Conn(broker.host, broker.port, version) as pub:
        pub.connect(cid(1, f"deep-pub-{version}"))
        pub.send(publish_with("a/b/c", b"fits", version))
        pub.send(publish_with("a/b/c/d", b"too deep", version))
        packets = pub.read_until_closed()
    if version == V5:
        assert [p.ptype for p in packets] == [DISCONNECT], packets
        assert disconnect_reason(packets[0]) == 0x90
    else:
        assert packets == []
    assert sub.get().payload == b"fits"
    assert drain(sub, 0.5) == 0
    sub.pub("a/b", b"others go on", qos=1)
    wait_for_sys(broker, {"publish/messages/too_deep": "1"})


@VERSIONS
def test_a_filter_deeper_than_max_topic_levels_is_refused_beside_the_others(start_broker, version):
    broker = start_broker("--max-topic-levels", "3", "--sys-interval", "1", cores=CORES)
    with Conn(broker.host, broker.port, version) as c:
        c.connect("deep-filters")
        c.send(subscribe_many([("a/b/c/#", 1), ("a/b/c", 1), ("$share/g/x/y/z", 0),
                               ("$share/g/x/y/z/w", 0)], version, packet_id=9))
        codes = ack_codes(c.read_packet(), SUBACK, 9, version)
        assert codes == [FILTER_INVALID[version], 1, 0, FILTER_INVALID[version]]
        c.ping()
    wait_for_sys(broker, {"subscriptions/too_deep": "2"})


def test_the_default_max_topic_levels_is_128(start_broker):
    broker = start_broker(cores=1)
    with Conn(broker.host, broker.port, V5) as c:
        c.connect("levels")
        c.send(publish_with("/".join(["l"] * 128), b"", V5, qos=1, packet_id=1))
        assert ack_code(c.read_packet(), V5) == 0
        c.send(publish_with("/".join(["l"] * 129), b"", V5, qos=1, packet_id=2))
        packets = c.read_until_closed()
    assert [disconnect_reason(p) for p in packets] == [0x90], packets


def test_a_client_that_breaks_a_limit_does_not_disturb_a_subscriber(start_broker, clients):
    broker = start_broker("--max-topic-levels", "2", "--max-publish-rate", "50", cores=CORES)
    made = clients(broker)
    sub = made(cid(0, "calm-sub"), V5)
    sub.sub("calm/#", 1)
    for i in range(5):
        with Conn(broker.host, broker.port, V5) as bad:
            bad.connect(f"bad-{i}")
            bad.send(publish_with("calm/a/b", b"x", V5))
            try:
                bad.read_until_closed()
            except Closed:
                pass
        sub.pub("calm/ok", str(i).encode(), qos=1)
        assert sub.get(T).payload == str(i).encode()
