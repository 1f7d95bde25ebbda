"""MQTT 5.0 features the server negotiates per connection, black box, in raw bytes (paho cannot
send alias-only PUBLISH or read properties of every packet): Topic Alias both ways, Maximum
Packet Size on what the server sends, Reason Strings under Request Problem Information,
Response Information, Server Keep Alive, and the bound on a slow subscriber's QoS 0 outbox.

Publisher and subscriber are owned by different cores (`--cores 2`) wherever a message is routed.
"""

from __future__ import annotations

import socket
import struct
import time

import pytest

from berthproc import CONNACK_DEBUG
from mqttwire import (CONNACK, DISCONNECT, USER_PROPERTY, parse_connack, PUBACK, PUBLISH, REASON_STRING, SUBACK, TOPIC_ALIAS_MAXIMUM, V5,
                      Conn, connect, disconnect_reason, ids_owned_by, mqtt_str, packet, packet_id_of,
                      parse_properties, parse_publish, prop_u16, prop_u32, properties, publish_with,
                      read_vbi, subscribe)

CORES = 2
TOPIC_ALIAS = 0x23
SERVER_KEEP_ALIVE = 0x13
REQUEST_PROBLEM_INFORMATION = 0x17
REQUEST_RESPONSE_INFORMATION = 0x19
RESPONSE_INFORMATION = 0x1A
AUTHENTICATION_METHOD = 0x15


def on(core: int, name: str) -> str:
    return ids_owned_by(core, CORES, name)[0]


def prop_byte(pid: int, v: int) -> bytes:
    return bytes([pid, v])


def connect_with(addr, client_id: str, *props: bytes, expect_code: int = 0, keep_alive: int = 0):
    c = Conn(*addr)
    ack = c.connect(client_id, props=properties(*props), expect_code=expect_code, keep_alive=keep_alive)
    return c, ack


def sub(c: Conn, topic_filter: str, qos: int, packet_id: int = 1) -> None:
    c.send(packet(0x82, struct.pack(">H", packet_id) + b"\x00" + mqtt_str(topic_filter) + bytes([qos])))
    p = c.read_packet()
    assert p.ptype == SUBACK and p.body[-1] == qos, f"SUBACK: {p!r}"


def ack_props(p) -> dict:
    """Properties of a PUBACK/PUBREC/PUBREL/PUBCOMP/DISCONNECT-shaped body after `skip` bytes."""
    skip = 3 if p.ptype != DISCONNECT else 1
    if len(p.body) <= skip:
        return {}
    n, i = read_vbi(p.body, skip)
    return parse_properties(p.body[i:i + n])


def expect_disconnect(c: Conn, reason: int) -> dict:
    packets = c.read_until_closed()
    assert packets and packets[-1].ptype == DISCONNECT, f"expected DISCONNECT {reason:#x}, got {packets!r}"
    d = packets[-1]
    assert disconnect_reason(d) == reason, f"DISCONNECT {d!r}, expected {reason:#x}"
    assert len(d.body) >= 2, f"[rumqttc] server DISCONNECT carries a Property Length: {d!r}"
    return ack_props(d)


# Topic aliases, client to server ---------------------------------------------------------------

@pytest.mark.parametrize("flags,expected", [((), 10), (("--topic-alias-maximum", "3"), 3),
                                            (("--topic-alias-maximum", "0"), 0)])
def test_topic_alias_maximum_is_told_in_connack(start_broker, flags, expected):
    b = start_broker(*flags)
    with Conn(*b.addr) as c:
        ack = c.connect("ta-max")
        assert ack.props.get(TOPIC_ALIAS_MAXIMUM, 0) == expected, ack


def test_inbound_topic_alias_resolves_across_cores(broker):
    s, _ = connect_with(broker.addr, on(1, "ta-in-sub"))
    p, _ = connect_with(broker.addr, on(0, "ta-in-pub"))
    with s, p:
        sub(s, "ta/in", 1)
        p.send(publish_with("ta/in", b"first", qos=1, packet_id=1, props=prop_u16(TOPIC_ALIAS, 3)))
        for n in (2, 3):
            p.send(publish_with("", f"alias-{n}".encode(), qos=1, packet_id=n, props=prop_u16(TOPIC_ALIAS, 3)))
        for n in (1, 2, 3):
            a = p.read_packet()
            assert a.ptype == PUBACK and packet_id_of(a) == n, a
        got = []
        for _ in range(3):
            m = parse_publish(s.read_packet(), V5)
            assert m.topic == "ta/in" and TOPIC_ALIAS not in m.props, m
            got.append(m.payload)
            s.send(bytes([0x40, 2]) + struct.pack(">H", m.packet_id))
        assert got == [b"first", b"alias-2", b"alias-3"]


def test_inbound_alias_can_be_remapped(broker):
    s, _ = connect_with(broker.addr, on(1, "ta-re-sub"))
    p, _ = connect_with(broker.addr, on(0, "ta-re-pub"))
    with s, p:
        sub(s, "ta/re/+", 0)
        p.send(publish_with("ta/re/a", b"1", props=prop_u16(TOPIC_ALIAS, 1)))
        p.send(publish_with("ta/re/b", b"2", props=prop_u16(TOPIC_ALIAS, 1)))
        p.send(publish_with("", b"3", props=prop_u16(TOPIC_ALIAS, 1)))
        got = [parse_publish(s.read_packet(), V5) for _ in range(3)]
        assert [(m.topic, m.payload) for m in got] == [("ta/re/a", b"1"), ("ta/re/b", b"2"), ("ta/re/b", b"3")]


@pytest.mark.parametrize("alias", [0, 11])
def test_mqtt_3_3_2_9_alias_zero_or_above_maximum_is_topic_alias_invalid(broker, alias):
    c, _ = connect_with(broker.addr, "ta-bad")
    with c:
        c.send(publish_with("ta/x", b"", props=prop_u16(TOPIC_ALIAS, alias)))
        props = expect_disconnect(c, 0x94)
        assert REASON_STRING in props, props


def test_alias_only_with_unknown_alias_is_a_protocol_error(broker):
    c, _ = connect_with(broker.addr, "ta-unknown")
    with c:
        c.send(publish_with("", b"", props=prop_u16(TOPIC_ALIAS, 2)))
        expect_disconnect(c, 0x82)


def test_aliases_do_not_outlive_the_connection(broker):
    c, _ = connect_with(broker.addr, "ta-life", prop_u32(0x11, 60))
    with c:
        c.send(publish_with("ta/life", b"", props=prop_u16(TOPIC_ALIAS, 1)))
        c.ping()
        c.send(b"\xe0\x00")
    c2 = Conn(*broker.addr)
    with c2:
        ack = c2.connect("ta-life", clean=False, props=properties(prop_u32(0x11, 60)))
        assert ack.session_present
        c2.send(publish_with("", b"", props=prop_u16(TOPIC_ALIAS, 1)))
        expect_disconnect(c2, 0x82)


# Topic aliases, server to client ---------------------------------------------------------------

def test_outbound_aliases_first_come_within_client_maximum(broker):
    sid = on(1, "ta-out-sub")
    s, _ = connect_with(broker.addr, sid, prop_u16(TOPIC_ALIAS_MAXIMUM, 2), prop_u32(0x11, 60))
    p, _ = connect_with(broker.addr, on(0, "ta-out-pub"))
    topics = ["ta/out/a", "ta/out/b", "ta/out/c", "ta/out/a", "ta/out/b", "ta/out/c", "ta/out/a"]
    with p:
        with s:
            sub(s, "ta/out/+", 0)
            for n, t in enumerate(topics):
                p.send(publish_with(t, str(n).encode()))
            got = [parse_publish(s.read_packet(), V5) for _ in topics]
            assert [(m.topic, m.props.get(TOPIC_ALIAS), m.payload) for m in got] == [
                ("ta/out/a", 1, b"0"), ("ta/out/b", 2, b"1"), ("ta/out/c", None, b"2"),
                ("", 1, b"3"), ("", 2, b"4"), ("ta/out/c", None, b"5"), ("", 1, b"6")]
            s.send(b"\xe0\x00")
        # A resumed session starts with no aliases [MQTT-3.3.2-7].
        s2 = Conn(*broker.addr)
        with s2:
            ack = s2.connect(sid, clean=False, props=properties(prop_u16(TOPIC_ALIAS_MAXIMUM, 2),
                                                                prop_u32(0x11, 60)))
            assert ack.session_present
            p.send(publish_with("ta/out/b", b"again"))
            m = parse_publish(s2.read_packet(), V5)
            assert (m.topic, m.props.get(TOPIC_ALIAS), m.payload) == ("ta/out/b", 1, b"again")


def test_no_outbound_aliases_without_client_topic_alias_maximum(broker):
    s, _ = connect_with(broker.addr, on(1, "ta-none-sub"))
    p, _ = connect_with(broker.addr, on(0, "ta-none-pub"))
    with s, p:
        sub(s, "ta/none", 0)
        for _ in range(3):
            p.send(publish_with("ta/none", b"x"))
        for _ in range(3):
            m = parse_publish(s.read_packet(), V5)
            assert m.topic == "ta/none" and TOPIC_ALIAS not in m.props, m


# Maximum Packet Size on what the server sends ----------------------------------------------------

@pytest.mark.parametrize("qos", [1, 2])
def test_mqtt_3_1_2_25_oversized_publish_is_skipped_counted_and_does_not_block_the_window(start_broker, qos):
    b = start_broker("--sys-interval", "1")
    # Receive Maximum 1: a message the broker kept waiting for its acknowledgement would block the rest.
    s, _ = connect_with(b.addr, on(1, "mps-sub"), prop_u32(0x27, 100), prop_u16(0x21, 1))
    p, _ = connect_with(b.addr, on(0, "mps-pub"))
    with s, p:
        sub(s, "mps/t", qos)
        p.send(publish_with("mps/t", b"small-1", qos=qos, packet_id=1))
        p.send(publish_with("mps/t", b"B" * 300, qos=qos, packet_id=2))
        p.send(publish_with("mps/t", b"small-2", qos=qos, packet_id=3))
        got = []
        for _ in range(2):
            raw = s.read_packet()
            assert len(raw.body) + 2 <= 100, f"[MQTT-3.1.2-24] packet over the client's maximum: {raw!r}"
            m = parse_publish(raw, V5)
            assert m.qos == qos, m
            got.append(m.payload)
            if qos == 1:
                s.send(bytes([0x40, 2]) + struct.pack(">H", m.packet_id))
            else:
                s.send(bytes([0x50, 2]) + struct.pack(">H", m.packet_id))
                rel = s.read_packet()
                assert rel.ptype == 6 and packet_id_of(rel) == m.packet_id, rel
                s.send(bytes([0x70, 2]) + struct.pack(">H", m.packet_id))
        assert got == [b"small-1", b"small-2"]
        s.assert_quiet_for(0.3)
    deadline = time.monotonic() + 10
    while sys_value(b.addr, "$SYS/broker/publish/messages/dropped") < 1:
        assert time.monotonic() < deadline, "the skipped PUBLISH is not counted in $SYS"
        time.sleep(0.5)


# Reason strings and Request Problem Information ------------------------------------------------

@pytest.mark.parametrize("rpi", [None, 1, 0])
def test_reason_string_on_refused_publish_follows_request_problem_information(broker, rpi):
    props = () if rpi is None else (prop_byte(REQUEST_PROBLEM_INFORMATION, rpi),)
    c, _ = connect_with(broker.addr, f"rs-{rpi}", *props)
    with c:
        c.send(publish_with("$SYS/mine", b"x", qos=1, packet_id=7))
        a = c.read_packet()
        assert a.ptype == PUBACK and packet_id_of(a) == 7 and a.body[2] == 0x87, a
        if rpi == 0:
            # [MQTT-3.1.2-29] no Reason String on anything but CONNACK, PUBLISH, DISCONNECT.
            assert REASON_STRING not in ack_props(a), a
        else:
            assert ack_props(a).get(REASON_STRING), a
        # DISCONNECT may always say why.
        c.send(publish_with("ta/x", b"", props=prop_u16(TOPIC_ALIAS, 99)))
        assert expect_disconnect(c, 0x94).get(REASON_STRING)


def suback_like(p) -> tuple[dict, bytes]:
    """Properties and reason codes of a SUBACK or UNSUBACK."""
    n, i = read_vbi(p.body, 2)
    return parse_properties(p.body[i:i + n]), p.body[i + n:]


@pytest.mark.parametrize("rpi", [1, 0])
def test_suback_unsuback_pubcomp_failures_say_why_unless_problem_information_is_off(broker, rpi):
    c, _ = connect_with(broker.addr, f"rs-sub-{rpi}", prop_byte(REQUEST_PROBLEM_INFORMATION, rpi))
    with c:
        c.send(packet(0x82, struct.pack(">H", 1) + b"\x00" + mqtt_str("rs/ok") + b"\x01"
                      + mqtt_str("rs/#/bad") + b"\x01"))
        p = c.read_packet()
        assert p.ptype == SUBACK, p
        props, codes = suback_like(p)
        assert codes == bytes([0x01, 0x8F]), p
        assert (REASON_STRING in props) == (rpi == 1), p
        c.send(packet(0xA2, struct.pack(">H", 2) + b"\x00" + mqtt_str("rs/never")))
        p = c.read_packet()
        assert p.ptype == 11, p
        props, codes = suback_like(p)
        assert codes == bytes([0x11]), p
        assert (REASON_STRING in props) == (rpi == 1), p
        # PUBREL for a packet id never received: PUBCOMP 0x92 Packet Identifier not found.
        c.send(bytes([0x62, 2]) + struct.pack(">H", 9))
        p = c.read_packet()
        assert p.ptype == 7 and packet_id_of(p) == 9 and p.body[2] == 0x92, p
        assert (REASON_STRING in ack_props(p)) == (rpi == 1), p


def test_refused_connack_says_why(broker):
    _, ack = connect_with(broker.addr, "rs-auth", bytes([AUTHENTICATION_METHOD]) + mqtt_str("SCRAM"),
                          expect_code=0x8C)
    assert ack.props.get(REASON_STRING), ack


def test_reason_string_and_user_properties_go_first_when_over_client_maximum(start_broker):
    broker = start_broker(CONNACK_DEBUG)  # so that the CONNACK has user properties to drop
    c = Conn(*broker.addr)
    with c:
        c.send(connect("rs-small", props=properties(prop_u32(0x27, 30))))
        raw = c.read_packet()
        assert raw.ptype == CONNACK and len(raw.body) + 2 <= 30, f"[MQTT-3.1.2-24] {raw!r}"
        assert USER_PROPERTY not in parse_connack(raw, V5).props, "user properties dropped to fit"
        c.send(publish_with("ta/x", b"", props=prop_u16(TOPIC_ALIAS, 99)))
        assert REASON_STRING not in expect_disconnect(c, 0x94)


def test_connack_names_no_core_unless_connack_debug_properties(start_broker):
    """berth-shard / berth-accepted-on are internals: a v5 CONNACK carries no berth-* User
    Property unless the broker is started with --connack-debug-properties."""
    plain, debug = start_broker(), start_broker(CONNACK_DEBUG)
    for core in range(CORES):
        cid = on(core, "no-core-names")
        with Conn(*plain.addr) as c:
            ack = c.connect(cid)
            berth = {k: v for k, v in ack.user_properties.items() if k.startswith("berth-")}
            assert berth == {}, f"{cid}: {ack!r}"
        with Conn(*debug.addr) as c:
            ack = c.connect(cid)
            assert ack.user_properties.get("berth-shard") == str(core), f"{cid}: {ack!r}"
            assert ack.user_properties.get("berth-accepted-on") in {"0", "1"}, f"{cid}: {ack!r}"


# Response Information -----------------------------------------------------------------------------

@pytest.mark.parametrize("asked", [None, 0, 1])
def test_response_information_only_when_requested(broker, asked):
    props = () if asked is None else (prop_byte(REQUEST_RESPONSE_INFORMATION, asked),)
    c, ack = connect_with(broker.addr, "ri-client", *props)
    with c:
        if asked == 1:
            assert ack.props.get(RESPONSE_INFORMATION) == "berth/response/ri-client/", ack
        else:
            assert RESPONSE_INFORMATION not in ack.props, ack


# Server Keep Alive ----------------------------------------------------------------------------------

def test_server_keep_alive_is_told_and_enforced(start_broker):
    b = start_broker("--server-keep-alive", "1")
    c, ack = connect_with(b.addr, "ska", keep_alive=0)
    with c:
        assert ack.props.get(SERVER_KEEP_ALIVE) == 1, ack
        # Keep alive 0 asked for none; the server's 1 s applies: silence ends it (1.5 x).
        expect_disconnect(c, 0x8D)


# Slow subscriber ------------------------------------------------------------------------------------

def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def sys_value(addr, topic: str) -> int:
    with Conn(*addr) as c:
        c.connect("sys-reader")
        c.send(packet(0x82, struct.pack(">H", 1) + b"\x00" + mqtt_str(topic) + b"\x00"))
        # The figure may be published live between the subscription and its SUBACK (the
        # server may send matching PUBLISHes before the SUBACK, MQTT 5.0 3.8.4).
        p = c.read_packet()
        if p.ptype == SUBACK:
            p = c.read_packet()
        return int(parse_publish(p, V5).payload)


def sys_reaching(addr, topic: str, at_least: int, timeout: float = 10) -> int:
    """The `$SYS` figure once it reaches `at_least`, or its last value after `timeout`."""
    deadline = time.monotonic() + timeout
    value = sys_value(addr, topic)
    while value < at_least and time.monotonic() < deadline:
        time.sleep(0.5)
        value = sys_value(addr, topic)
    return value


def test_slow_qos0_subscriber_is_bounded_and_drops_are_counted(start_broker):
    b = start_broker("--max-outbox-bytes", "65536", "--sys-interval", "1")
    slow = socket.create_connection(b.addr)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow_id = on(1, "slow-sub")
    slow.sendall(connect(slow_id))
    slow.sendall(subscribe("flood/#", V5))
    healthy, _ = connect_with(b.addr, on(1, "healthy-sub"))
    p, _ = connect_with(b.addr, on(0, "flood-pub"))
    try:
        sub(healthy, "calm/t", 1)
        p.send(publish_with("flood/warmup", b"w" * 1024))
        p.ping()
        before = rss_kib(b.proc.pid)
        payload = b"f" * 1024
        chunk = publish_with("flood/t", payload) * 1000
        for _ in range(200):  # 200 MB of QoS 0 the slow subscriber never reads
            p.send(chunk)
        p.ping()
        p.send(publish_with("calm/t", b"still here", qos=1, packet_id=1))
        a = p.read_packet(timeout=30)
        assert a.ptype == PUBACK, a
        m = parse_publish(healthy.read_packet(timeout=30), V5)
        assert m.payload == b"still here", "other clients unaffected"
        healthy.send(bytes([0x40, 2]) + struct.pack(">H", m.packet_id))
        healthy.ping()
        grown_mib = (rss_kib(b.proc.pid) - before) / 1024
        # Measured on the debug build: about 45 MiB bounded (core-to-core batches in flight, allocator
        # slack), about 300 MiB with `--max-outbox-bytes 0`.
        assert grown_mib < 100, f"broker RSS grew {grown_mib:.0f} MiB while 200 MiB went to a stalled reader"
        dropped = sys_reaching(b.addr, "$SYS/broker/publish/messages/dropped", 150_000)
        assert dropped >= 150_000, f"$SYS dropped counter {dropped}"
        # One stalled reader among keeping-up peers is a slow subscriber, not overload.
        slow_drops = sys_reaching(b.addr, "$SYS/broker/publish/messages/dropped/slow_subscriber", 150_000)
        assert slow_drops >= 150_000, f"slow_subscriber drops {slow_drops}"
        assert sys_value(b.addr, "$SYS/broker/publish/messages/dropped/overload") == 0
    finally:
        slow.close()
        healthy.close()
        p.close()
