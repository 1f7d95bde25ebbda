"""Limits of persistent sessions (issue 4), black box: queue length and bytes with both
overflow policies, offline QoS 0, the public-broker TOML configuration, the session quota,
Message Expiry of queued messages, and Receive Maximum on resume.

Subscribers and publishers are owned by different cores (`ids_owned_by`); raw packets where a
library would hide what is checked (acknowledgement timing, Message Expiry Interval).
"""

from __future__ import annotations

import time

import pytest

from clients import RawSession, publish_all
from mqttwire import (MESSAGE_EXPIRY_INTERVAL, PUBACK, SESSION_EXPIRY_INTERVAL, V5, V311, Conn,
                      ack_packet, ids_owned_by, packet_id_of, prop_u32, publish_with)

CORES = 2
LOST = "[MQTT-3.2.2-2] Session Present must be 1: the stored session was lost"
NEW = "a new session must have Session Present 0"
VERSIONS = pytest.mark.parametrize("version", [V311, V5], ids=["v311", "v5"])


def cid(core: int, name: str, n: int = 1) -> list[str] | str:
    ids = ids_owned_by(core, CORES, name, n)
    return ids[0] if n == 1 else ids


def offline_subscriber(addr, client_id: str, topic: str, version: int = V311) -> RawSession:
    """A persistent session subscribed at QoS 1 to `topic` and to its marker `topic + "/end"`,
    left offline."""
    s = RawSession(addr, client_id, version)
    assert not s.connect(expiry=3600).session_present, NEW
    s.subscribe(topic, 1)
    s.subscribe(topic + "/end", 1, packet_id=2)
    s.disconnect()
    return s


def publish_pipelined(addr, client_id: str, topic: str, payloads: list[bytes]) -> None:
    """QoS 1, every PUBLISH sent before the PUBACKs are read (many messages, one round trip)."""
    with Conn(*addr, version=V311) as c:
        c.connect(client_id)
        c.send(b"".join(publish_with(topic, p, V311, qos=1, packet_id=n % 65535 + 1)
                        for n, p in enumerate(payloads)))
        for n in range(len(payloads)):
            p = c.read_packet()
            assert p.ptype == PUBACK and packet_id_of(p) == n % 65535 + 1, f"PUBACK #{n}: {p!r}"
        c.send(b"\xe0\x00")


def assert_nothing_more(conn: Conn, seconds: float) -> None:
    """Nothing is buffered and nothing arrives for `seconds` (Conn.assert_quiet_for alone
    looks only at bytes that arrive after the call)."""
    assert not conn.buf, f"unexpected bytes from the broker: {conn.buf.hex(' ')}"
    conn.assert_quiet_for(seconds)


def resume_and_take(s: RawSession, marker_publisher, marker_topic: str, **connect) -> list:
    """Reconnects `s` (Session Present must be 1), then publishes a live marker: everything
    before it is what was queued."""
    assert s.connect(**connect).session_present, "session lost"
    marker_publisher()
    return s.drain_until(marker_topic)


# (9) queue length, queue bytes, overflow policy, offline QoS 0 ---------------------------------------

@pytest.mark.parametrize("overflow,kept", [("drop-oldest", [2, 3, 4]), ("refuse-newest", [0, 1, 2])])
def test_max_queued_messages_overflow(start_broker, overflow, kept):
    broker = start_broker("--max-queued-messages", "3", "--queue-overflow", overflow)
    sid, pid = cid(1, f"qlen-{overflow}-sub"), cid(0, f"qlen-{overflow}-pub")
    s = offline_subscriber(broker.addr, sid, "qlen/t")
    publish_all(broker.addr, pid, [("qlen/t", f"m{i}".encode()) for i in range(5)])
    got = resume_and_take(s, lambda: publish_all(broker.addr, pid, [("qlen/t/end", b"")]), "qlen/t/end")
    assert [m.payload for m in got] == [f"m{i}".encode() for i in kept], f"{overflow}: {got}"
    s.close()


@pytest.mark.parametrize("overflow,kept", [("drop-oldest", [3, 4]), ("refuse-newest", [0, 1])])
def test_max_queued_bytes_overflow(start_broker, overflow, kept):
    """10 payload bytes of room; 4-byte payloads: two fit."""
    broker = start_broker("--max-queued-bytes", "10", "--queue-overflow", overflow)
    sid, pid = cid(1, f"qbytes-{overflow}-sub"), cid(0, f"qbytes-{overflow}-pub")
    s = offline_subscriber(broker.addr, sid, "qbytes/t")
    publish_all(broker.addr, pid, [("qbytes/t", f"m{i}__".encode()) for i in range(5)])
    got = resume_and_take(s, lambda: publish_all(broker.addr, pid, [("qbytes/t/end", b"")]), "qbytes/t/end")
    assert [m.payload for m in got] == [f"m{i}__".encode() for i in kept], f"{overflow}: {got}"
    s.close()


@pytest.mark.parametrize("queue_qos0", [None, "true", "false"], ids=["default", "true", "false"])
@VERSIONS
def test_queue_qos0(start_broker, queue_qos0, version):
    broker = start_broker(*(["--queue-qos0", queue_qos0] if queue_qos0 else []))
    sid, pid = cid(1, f"q0-{version}-sub"), cid(0, f"q0-{version}-pub")
    s = offline_subscriber(broker.addr, sid, "q0/t", version)
    with Conn(*broker.addr, version=version) as c:  # one connection: its messages keep their order
        c.connect(pid)
        c.send(publish_with("q0/t", b"zero-a", version, qos=0))
        c.send(publish_with("q0/t", b"one", version, qos=1, packet_id=1))
        c.send(publish_with("q0/t", b"zero-b", version, qos=0))
        c.send(publish_with("q0/t", b"two", version, qos=1, packet_id=2))
        assert [packet_id_of(c.read_packet()) for _ in range(2)] == [1, 2]
    got = resume_and_take(s, lambda: publish_all(broker.addr, pid, [("q0/t/end", b"")]), "q0/t/end", expiry=3600)
    if queue_qos0 == "true":
        want = [(b"zero-a", 0), (b"one", 1), (b"zero-b", 0), (b"two", 1)]
    else:
        want = [(b"one", 1), (b"two", 1)]
    assert [(m.payload, m.qos) for m in got] == want
    s.close()


# (10) the public-broker configuration file -----------------------------------------------------------

def test_public_broker_toml_in_force(start_broker, tmp_path):
    config = tmp_path / "public.toml"
    config.write_text("max_session_expiry = 300\nmax_queued_messages = 1000\nqueue_qos0 = false\n")
    broker = start_broker("--config", str(config))
    sid, pid = cid(1, "pubcfg-sub"), cid(0, "pubcfg-pub")

    s = RawSession(broker.addr, sid, V5)
    ack = s.connect(expiry=86400)
    assert ack.props.get(SESSION_EXPIRY_INTERVAL) == 300, f"CONNACK must tell the 300 s in force: {ack.props}"
    s.subscribe("pubcfg/t", 1)
    s.subscribe("pubcfg/t/end", 1, packet_id=2)
    s.disconnect()

    # One connection, so the order holds: m0..m1000 (QoS 1), a QoS 0 message, "last" (QoS 1).
    messages = [(f"m{i}".encode(), 1) for i in range(1001)] + [(b"qos0", 0), (b"last", 1)]
    with Conn(*broker.addr, version=V311) as c:
        c.connect(pid)
        c.send(b"".join(publish_with("pubcfg/t", payload, V311, qos=qos, packet_id=n + 1 if qos else None)
                        for n, (payload, qos) in enumerate(messages)))
        for n in [n for n, (_, qos) in enumerate(messages) if qos]:
            p = c.read_packet()
            assert p.ptype == PUBACK and packet_id_of(p) == n + 1, f"PUBACK #{n}: {p!r}"
    got = resume_and_take(s, lambda: publish_all(broker.addr, pid, [("pubcfg/t/end", b"")]), "pubcfg/t/end",
                          expiry=300)
    payloads = [m.payload for m in got]
    assert b"qos0" not in payloads, "queue_qos0 = false: an offline QoS 0 message was queued"
    want = [f"m{i}".encode() for i in range(2, 1001)] + [b"last"]
    assert payloads == want, \
        f"max_queued_messages = 1000, drop-oldest: got {len(payloads)}, first {payloads[:2]}, last {payloads[-2:]}"
    s.close()


# (11) the session quota --------------------------------------------------------------------------------

@VERSIONS
def test_max_sessions_per_core_quota(start_broker, version):
    """--max-sessions 2 on 2 cores: one session per core. A second new session on core 0 is
    refused (v5 0x97 Quota exceeded, 3.1.1 0x03 Server unavailable) and closed; core 1 still
    takes its one; the existing session on core 0 still comes back."""
    broker = start_broker("--max-sessions", "2")
    first, second = cid(0, f"quota-{version}", 2)
    s = RawSession(broker.addr, first, version)
    assert not s.connect(expiry=3600).session_present, NEW
    s.subscribe("quota/t", 1)
    s.disconnect()

    refused = 0x97 if version == V5 else 0x03
    with Conn(*broker.addr, version=version) as c:
        ack = c.connect(second, clean=False, expect_code=refused)
        assert not ack.session_present, \
            "[MQTT-3.2.2-4] (3.1.1) / [MQTT-3.2.2-6] (5.0): a refused CONNACK has Session Present 0"
        assert c.read_until_closed() == [], "the connection must be closed after the refusal"

    other = RawSession(broker.addr, cid(1, f"quota-{version}-core1"), version)
    other.connect(expiry=3600)  # core 1's one session
    assert s.connect(expiry=3600).session_present, "the existing session must still come back"
    other.conn.send(publish_with("quota/t", b"still here", version, qos=1, packet_id=1))
    assert other.conn.read_packet().ptype == PUBACK
    assert s.next_publish().payload == b"still here", "the existing session lost its subscription"
    s.close()
    other.close()


# (12) Message Expiry of queued messages --------------------------------------------------------------

def test_mqtt_3_3_2_5_queued_message_expiry(broker):
    sid, pid = cid(1, "mexp-sub"), cid(0, "mexp-pub")
    s = offline_subscriber(broker.addr, sid, "mexp/t", V5)
    publish_all(broker.addr, pid, [("mexp/t", b"short")], version=V5,
                props=prop_u32(MESSAGE_EXPIRY_INTERVAL, 1))
    publish_all(broker.addr, pid, [("mexp/t", b"long")], version=V5,
                props=prop_u32(MESSAGE_EXPIRY_INTERVAL, 100))
    published = time.monotonic()
    time.sleep(2.2)  # longer than the short message's 1 s: the stimulus, not a synchronisation
    got = resume_and_take(s, lambda: publish_all(broker.addr, pid, [("mexp/t/end", b"")], version=V5),
                          "mexp/t/end", expiry=3600)
    waited = time.monotonic() - published
    assert [m.payload for m in got] == [b"long"], \
        f"[MQTT-3.3.2-5] the expired message must not be delivered: {[m.payload for m in got]}"
    remaining = got[0].props.get(MESSAGE_EXPIRY_INTERVAL)
    assert remaining is not None and 100 - waited - 1 <= remaining <= 98, \
        f"[MQTT-3.3.2-6] Message Expiry Interval must be 100 minus the {waited:.1f}s waited: {remaining}"
    s.close()


# (13) Receive Maximum on resume ------------------------------------------------------------------------

def test_mqtt_3_3_4_9_resume_respects_receive_maximum(broker):
    """20 queued; the session comes back with Receive Maximum 5: exactly 5 PUBLISH arrive before
    any PUBACK, then one more per PUBACK, all 20 in order."""
    sid, pid = cid(1, "rmax-sub"), cid(0, "rmax-pub")
    s = offline_subscriber(broker.addr, sid, "rmax/t", V5)
    publish_pipelined(broker.addr, pid, "rmax/t", [f"m{i}".encode() for i in range(20)])
    assert s.connect(expiry=3600, receive_maximum=5).session_present, LOST
    window = [s.next_publish(ack=False) for _ in range(5)]
    assert_nothing_more(s.conn, 0.5)  # a sixth PUBLISH would break Receive Maximum 5
    got = list(window)
    while window:
        s.conn.send(ack_packet(PUBACK, window.pop(0).packet_id))
        if len(got) < 20:
            m = s.next_publish(ack=False)
            got.append(m)
            window.append(m)
        assert len(window) <= 5
    assert [m.payload for m in got] == [f"m{i}".encode() for i in range(20)]
    publish_all(broker.addr, pid, [("rmax/t/end", b"")])
    assert s.drain_until("rmax/t/end") == []
    s.close()


def test_mqtt_4_9_0_2_resent_window_respects_smaller_receive_maximum(broker):
    """10 PUBLISH unacknowledged under Receive Maximum 10; the session comes back with 5. The
    send quota starts again at 5 on the new connection [MQTT-4.9.0-1]: at most 5 PUBLISH
    (the resent ones first, DUP, same ids) before a PUBACK, the rest as PUBACKs free room."""
    sid, pid = cid(1, "rmax2-sub"), cid(0, "rmax2-pub")
    s = RawSession(broker.addr, sid, V5)
    s.connect(expiry=3600, receive_maximum=10)
    s.subscribe("rmax2/t", 1)
    publish_pipelined(broker.addr, pid, "rmax2/t", [f"m{i}".encode() for i in range(10)])
    first = [s.next_publish(ack=False) for _ in range(10)]
    s.disconnect()
    assert s.connect(expiry=3600, receive_maximum=5).session_present, LOST
    window = [s.next_publish(ack=False) for _ in range(5)]
    assert_nothing_more(s.conn, 0.5)  # a sixth PUBLISH would break Receive Maximum 5
    assert [(m.payload, m.dup, m.packet_id) for m in window] == \
        [(m.payload, True, m.packet_id) for m in first[:5]]
    got = list(window)
    while window:
        s.conn.send(ack_packet(PUBACK, window.pop(0).packet_id))
        if len(got) < 10:
            m = s.next_publish(ack=False)
            got.append(m)
            window.append(m)
    assert [(m.payload, m.packet_id) for m in got] == [(m.payload, m.packet_id) for m in first]
    s.close()


@VERSIONS
def test_max_inflight_messages_caps_the_window_of_every_client(start_broker, version):
    """--max-inflight-messages 4: a 3.1.1 client (no Receive Maximum of its own) and a v5
    client asking for 100 both get at most 4 unacknowledged PUBLISH on resume, then one more
    per PUBACK, all 12 in order. This also bounds the work done before CONNACK."""
    broker = start_broker("--max-inflight-messages", "4")
    sid, pid = cid(1, f"inflight-sub-{version}"), cid(0, f"inflight-pub-{version}")
    s = offline_subscriber(broker.addr, sid, "inflight/t", version)
    publish_pipelined(broker.addr, pid, "inflight/t", [f"m{i}".encode() for i in range(12)])
    connect = {"expiry": 3600}
    if version == V5:
        connect["receive_maximum"] = 100
    assert s.connect(**connect).session_present, LOST
    window = [s.next_publish(ack=False) for _ in range(4)]
    assert_nothing_more(s.conn, 0.5)  # a fifth PUBLISH would exceed max_inflight_messages
    got = list(window)
    while window:
        s.conn.send(ack_packet(PUBACK, window.pop(0).packet_id))
        if len(got) < 12:
            m = s.next_publish(ack=False)
            got.append(m)
            window.append(m)
        assert len(window) <= 4
    assert [m.payload for m in got] == [f"m{i}".encode() for i in range(12)]
    s.close()
