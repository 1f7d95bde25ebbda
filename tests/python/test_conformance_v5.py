"""MQTT 5.0 conformance, one test per server-side rule (or a few closely tied rules), named
after the rule's number in the 5.0 specification ([MQTT-x.y.z-n] of its Appendix B).

Black box against the real broker with raw bytes (mqttwire). A 5.0 server answers a bad CONNECT
with CONNACK >= 0x80 and closes, and any other Malformed Packet or Protocol Error with DISCONNECT
and its reason code, then closes. Rules whose 3.1.1 and 5.0 behaviour is the same are tested in
test_conformance_v311.py for both versions; CONFORMANCE.md maps every rule to its tests.
"""

import struct
import time

import pytest

from mqttwire import (CONNACK, DISCONNECT, PINGRESP, PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL,
                      RECEIVE_MAXIMUM, SESSION_EXPIRY_INTERVAL, SUBACK, UNSUBACK, USER_PROPERTY, V5, Conn,
                      ack_codes, ack_packet, connect, disconnect_reason, mqtt_str, packet,
                      packet_id_of, parse_connack, parse_properties, parse_publish, prop_u16, prop_u32,
                      properties, publish_with, read_vbi, subscribe_many, unsubscribe, vbi)
from berthproc import CONNACK_DEBUG
from test_conformance_v311 import marker, pub, recv, recv_until, refused_connect, session, sub, will_connect
from test_malformed import assert_rejected_after_connect, misbehave_after_connect, misbehave_before_connect

PAYLOAD_FORMAT_INDICATOR = 0x01
CONTENT_TYPE = 0x03
RESPONSE_TOPIC = 0x08
CORRELATION_DATA = 0x09
SUBSCRIPTION_IDENTIFIER = 0x0B
AUTHENTICATION_METHOD = 0x15
REQUEST_PROBLEM_INFORMATION = 0x17
REQUEST_RESPONSE_INFORMATION = 0x19
RESPONSE_INFORMATION = 0x1A
REASON_STRING = 0x1F
TOPIC_ALIAS = 0x23

CLEAN, WILL, USER_NAME, PASSWORD = 0x02, 0x04, 0x80, 0x40


def prop_str(pid: int, s: str | bytes) -> bytes:
    return bytes([pid]) + mqtt_str(s)


def user_prop(k: str | bytes, v: str | bytes) -> bytes:
    return bytes([USER_PROPERTY]) + mqtt_str(k) + mqtt_str(v)


def rejected(cid: str, broker, raw: bytes, codes: set[int]) -> None:
    """Connect `cid`, send `raw`: exactly one DISCONNECT with a code in `codes`, then close."""
    assert_rejected_after_connect(misbehave_after_connect(broker, V5, cid, raw), V5, codes)


def expiring(expiry: int = 60, **extra) -> bytes:
    return properties(prop_u32(SESSION_EXPIRY_INTERVAL, expiry))


def disconnect_props(p) -> dict:
    assert p.ptype == DISCONNECT, p
    if len(p.body) < 2:
        return {}
    n, i = read_vbi(p.body, 1)
    return parse_properties(p.body[i:i + n])


# --- 1.5 data representation, 2.2 packet identifiers and properties -----------------------------------

def test_mqtt_1_5_4_1_surrogate_in_a_string_is_malformed(broker):
    """[MQTT-1.5.4-1]: a UTF-8 encoded surrogate (U+D800) makes the string ill-formed."""
    rejected("surrogate", broker, publish_with(b"a/\xed\xa0\x80", b"x", V5), {0x81})


def test_mqtt_1_5_5_1_overlong_remaining_length_is_malformed(broker):
    """[MQTT-1.5.5-1]: a Variable Byte Integer in more bytes than needed is malformed."""
    rejected("overlong", broker, b"\xc0\x80\x00", {0x81})


def test_mqtt_1_5_7_1_user_property_not_utf8_is_malformed(broker):
    """[MQTT-1.5.7-1]: both strings of a UTF-8 String Pair must be valid UTF-8."""
    rejected("pair-utf8", broker, publish_with("t", b"x", V5, props=user_prop(b"k", b"\xff")), {0x81})


def test_mqtt_2_2_2_1_packets_without_properties_have_length_zero(broker):
    """[MQTT-2.2.2-1]: SUBACK, UNSUBACK and a forwarded PUBLISH without properties carry a
    Property Length of 0."""
    with session(broker, "plen-sub", V5) as s, session(broker, "plen-pub", V5) as p:
        s.send(subscribe_many([("plen/t", 1)], V5, packet_id=1))
        a = s.read_packet()
        assert (a.ptype, a.body) == (SUBACK, b"\x00\x01\x00\x01"), a
        pub(p, "plen/t", b"x", qos=1)
        m = s.read_packet()
        assert m.ptype == PUBLISH and m.body[2 + 6 + 2:] == b"\x00x", m
        s.send(ack_packet(PUBACK, struct.unpack(">H", m.body[8:10])[0]))
        s.send(unsubscribe(["plen/t"], V5, packet_id=2))
        u = s.read_packet()
        assert (u.ptype, u.body) == (UNSUBACK, b"\x00\x02\x00\x00"), u


# --- 3.1 CONNECT ------------------------------------------------------------------------------------

def test_mqtt_3_1_2_1_wrong_protocol_name_is_closed(broker):
    """[MQTT-3.1.2-1]: a protocol name other than "MQTT" is closed (a CONNACK 0x84 is allowed)."""
    packets = misbehave_before_connect(broker, V5, connect("badname5", V5, protocol_name=b"MQTX"))
    assert packets == [] or [(p.ptype, parse_connack(p, V5).code) for p in packets] == [(CONNACK, 0x84)], packets


def test_mqtt_3_1_2_4_clean_start_discards_the_session(broker):
    """[MQTT-3.1.2-4] [MQTT-3.1.4-4]: Clean Start 1 discards the existing session."""
    s = Conn(*broker.addr, version=V5)
    s.connect("cs5", clean=False, props=expiring())
    assert sub(s, [("cs5/t", 1)]) == [1]
    s.close()
    s = Conn(*broker.addr, version=V5)
    assert not s.connect("cs5", clean=True, props=expiring()).session_present
    assert sub(s, [("cs5/end", 1)]) == [1]
    with session(broker, "cs5-pub", V5) as p:
        pub(p, "cs5/t", b"old subscription", qos=1)
        pub(p, "cs5/end", b"", qos=1)
    assert recv_until(s, "cs5/end") == []
    s.close()


def test_mqtt_3_1_2_5_and_6_clean_start_0(broker):
    """[MQTT-3.1.2-5] [MQTT-3.1.2-6] [MQTT-3.2.2-3]: Clean Start 0 creates a session when there
    is none (Session Present 0) and resumes it when there is (Session Present 1), with its
    subscriptions and the messages queued meanwhile."""
    s = Conn(*broker.addr, version=V5)
    assert not s.connect("resume5", clean=False, props=expiring()).session_present
    assert sub(s, [("resume5/t", 1)]) == [1]
    s.close()
    with session(broker, "resume5-pub", V5) as p:
        pub(p, "resume5/t", b"queued", qos=1)
    s = Conn(*broker.addr, version=V5)
    assert s.connect("resume5", clean=False, props=expiring()).session_present
    assert recv(s).payload == b"queued"
    s.close()


def test_mqtt_3_1_2_9_will_flag_without_will_fields_is_malformed(broker):
    """[MQTT-3.1.2-9]: Will Flag 1 needs Will Properties, Will Topic and Will Payload."""
    refused_connect(broker, V5, connect("will9-5", V5, flags=CLEAN | WILL))


@pytest.mark.parametrize("flags", [CLEAN | 0x08, CLEAN | 0x20], ids=["qos", "retain"])
def test_mqtt_3_1_2_11_and_13_will_bits_without_will_flag_are_malformed(broker, flags):
    """[MQTT-3.1.2-11] [MQTT-3.1.2-13]: Will QoS and Will Retain need the Will Flag."""
    refused_connect(broker, V5, connect("will11-5", V5, flags=flags))


@pytest.mark.parametrize("flags,extra", [(CLEAN, mqtt_str("user")), (CLEAN | USER_NAME, mqtt_str("u") + mqtt_str("pw"))],
                         ids=["user-name", "password"])
def test_mqtt_3_1_2_16_and_18_fields_without_their_flag_are_malformed(broker, flags, extra):
    """[MQTT-3.1.2-16] [MQTT-3.1.2-18]: no User Name / Password without its flag."""
    refused_connect(broker, V5, connect("user18-5", V5, flags=flags, payload_extra=extra))


@pytest.mark.parametrize("flags,extra", [(CLEAN | USER_NAME, b""), (CLEAN | PASSWORD, b"")], ids=["user-name", "password"])
def test_mqtt_3_1_2_17_and_19_flag_without_its_field_is_malformed(broker, flags, extra):
    """[MQTT-3.1.2-17] [MQTT-3.1.2-19]: a User Name / Password Flag needs its field."""
    refused_connect(broker, V5, connect("user19-5", V5, flags=flags, payload_extra=extra))


def test_mqtt_3_1_2_24_no_packet_above_the_clients_maximum_packet_size(broker):
    """[MQTT-3.1.2-24]: a message larger than the client's Maximum Packet Size is not sent to
    it; smaller ones before and after are."""
    limit = 200
    with Conn(*broker.addr, version=V5) as s, session(broker, "mps-pub", V5) as p:
        s.connect("mps-sub", props=properties(prop_u32(0x27, limit)))
        assert sub(s, [("mps/t", 0)]) == [0]
        for payload in (b"small", b"B" * 500, b"after"):
            pub(p, "mps/t", payload)
        got = [parse_publish(s.read_packet(), V5) for _ in range(2)]
        assert [m.payload for m in got] == [b"small", b"after"], got
        s.assert_quiet_for(0.2)


@pytest.mark.parametrize("request_value", [None, 0])
def test_mqtt_3_1_2_28_no_response_information_unless_requested(broker, request_value):
    """[MQTT-3.1.2-28]: Request Response Information 0 (or absent) gets no Response Information."""
    props = properties(b"" if request_value is None else bytes([REQUEST_RESPONSE_INFORMATION, request_value]))
    with Conn(*broker.addr, version=V5) as c:
        ack = c.connect("resp-info", props=props)
        assert RESPONSE_INFORMATION not in ack.props, ack


def test_mqtt_3_1_2_29_no_reason_string_when_problem_information_is_0(broker):
    """[MQTT-3.1.2-29]: with Request Problem Information 0, a refused PUBLISH (under $SYS) and a
    refused SUBSCRIBE get no Reason String or User Property."""
    with Conn(*broker.addr, version=V5) as c:
        c.connect("rpi0", props=properties(bytes([REQUEST_PROBLEM_INFORMATION, 0])))
        c.send(publish_with("$SYS/x", b"x", V5, qos=1, packet_id=1))
        a = c.read_packet()
        assert a.ptype == PUBACK and a.body[2] == 0x87, a
        assert len(a.body) == 3 or a.body[3] == 0, f"PUBACK carries properties: {a!r}"
        c.send(subscribe_many([("a/#/b", 1)], V5, packet_id=2))
        a = c.read_packet()
        assert (a.ptype, a.body) == (SUBACK, b"\x00\x02\x00\x8f"), a


def test_mqtt_3_1_3_3_missing_client_id_is_malformed(broker):
    """[MQTT-3.1.3-3]: the ClientID must be present."""
    refused_connect(broker, V5, packet(0x10, mqtt_str("MQTT") + bytes([5, CLEAN]) + b"\x00\x00\x00"))


def test_mqtt_3_1_3_4_client_id_not_utf8_is_malformed(broker):
    """[MQTT-3.1.3-4]: the ClientID is a UTF-8 Encoded String."""
    refused_connect(broker, V5, connect(b"id\xc3\x28", V5))


def test_mqtt_3_1_3_11_will_topic_not_utf8_is_malformed(broker):
    """[MQTT-3.1.3-11]: the Will Topic is a UTF-8 Encoded String."""
    refused_connect(broker, V5, will_connect("will-utf8-5", V5, b"w/\xff", b"x"))


def test_mqtt_3_1_3_12_user_name_not_utf8_is_malformed(broker):
    """[MQTT-3.1.3-12]: the User Name is a UTF-8 Encoded String."""
    refused_connect(broker, V5, connect("user-utf8-5", V5, flags=CLEAN | USER_NAME, payload_extra=mqtt_str(b"\xff")))


def test_mqtt_3_1_3_10_will_user_properties_keep_their_order(broker):
    """[MQTT-3.1.3-10]: the Will's User Properties are published with it, in their order."""
    will_props = user_prop("z", "1") + user_prop("a", "2") + user_prop("z", "0")
    extra = properties(will_props) + mqtt_str("wup/t") + mqtt_str(b"bye")
    with session(broker, "wup-sub", V5) as s:
        assert sub(s, [("wup/t", 1)]) == [1]
        w = Conn(*broker.addr, version=V5)
        w.send(connect("wup", V5, flags=CLEAN | WILL | 0x08, payload_extra=extra))
        assert parse_connack(w.read_packet(), V5).code == 0
        w.close()
        m = recv(s)
        assert (m.payload, m.props.get(USER_PROPERTY)) == (b"bye", [("z", "1"), ("a", "2"), ("z", "0")]), m


def test_mqtt_3_1_4_1_connect_property_not_allowed_in_connect(broker):
    """[MQTT-3.1.4-1] [MQTT-3.14.0-1]: a property that CONNECT may not carry (Payload Format
    Indicator) is malformed: CONNACK >= 0x80 (never a DISCONNECT), then close."""
    refused_connect(broker, V5, connect("badprop", V5, props=properties(bytes([PAYLOAD_FORMAT_INDICATOR, 1]))))


def test_mqtt_3_1_4_6_nothing_after_a_refused_connect_is_processed(broker):
    """[MQTT-3.1.4-6]: a retained PUBLISH right behind a refused CONNECT is not processed."""
    refused = connect("refused5", V5, props=properties(prop_str(AUTHENTICATION_METHOD, "SCRAM-SHA-1")))
    with Conn(*broker.addr, version=V5) as c:
        c.send(refused + publish_with("refused5/t", b"sneaky", V5, retain=True))
        packets = c.read_until_closed()
    assert [(p.ptype, parse_connack(p, V5).code) for p in packets] == [(CONNACK, 0x8C)], packets
    with session(broker, "refused5-reader", V5) as s:
        assert sub(s, [("refused5/t", 1), ("refused5/end", 1)]) == [1, 1]
        assert marker(broker, s, "refused5/end", V5) == []


def test_mqtt_3_2_0_1_and_2_one_connack_first(broker):
    """[MQTT-3.2.0-1] [MQTT-3.2.0-2]: CONNACK comes first and only once, even when packets are
    pipelined behind the CONNECT."""
    with Conn(*broker.addr, version=V5) as c:
        c.send(connect("one-connack", V5) + b"\xc0\x00" + subscribe_many([("oc/t", 1)], V5) + b"\xc0\x00")
        assert parse_connack(c.read_packet(), V5).code == 0
        assert [c.read_packet().ptype for _ in range(3)] == [PINGRESP, SUBACK, PINGRESP]
        c.assert_quiet_for(0.2)


def test_mqtt_3_2_2_20_connack_fits_the_clients_maximum_packet_size(start_broker):
    """[MQTT-3.2.2-20] [MQTT-3.1.2-24]: a client with a small Maximum Packet Size still gets its
    CONNACK: optional User Properties are left out rather than the CONNACK exceeding the limit.
    (berth's own User Properties are sent only under --connack-debug-properties: turned on here,
    or the test would have nothing to leave out.)"""
    broker = start_broker(CONNACK_DEBUG)
    limit = 40
    with Conn(*broker.addr, version=V5) as c:
        c.send(connect("tiny-max", V5, props=properties(prop_u32(0x27, limit))))
        p = c.read_packet()
        size = 1 + len(bytes([0])) + len(p.body)  # Remaining Length < 128 takes one byte
        assert size <= limit, f"CONNACK of {size} bytes exceeds the client's Maximum Packet Size {limit}"
        assert parse_connack(p, V5).code == 0
        c.ping()


# --- 3.3 PUBLISH ------------------------------------------------------------------------------------

def test_mqtt_3_3_1_2_dup_with_qos_0_is_malformed(broker):
    """[MQTT-3.3.1-2]: DUP 1 on a QoS 0 PUBLISH is malformed."""
    rejected("dup0-5", broker, publish_with("t", b"x", V5, dup=True), {0x81})


def test_mqtt_3_3_2_1_empty_topic_without_alias_is_a_protocol_error(broker):
    """[MQTT-3.3.2-1]: a zero-length Topic Name without a Topic Alias is a Protocol Error."""
    rejected("empty5", broker, publish_with("", b"x", V5), {0x81, 0x82})


def test_mqtt_3_2_2_17_topic_alias_above_the_maximum_is_refused(broker):
    """[MQTT-3.2.2-17] [MQTT-3.2.2-18] [MQTT-3.3.2-9]: a Topic Alias above the Topic Alias
    Maximum berth sent (absent or 0 means none) is refused with DISCONNECT 0x94."""
    with Conn(*broker.addr, version=V5) as c:
        ack = c.connect("alias-max")
        maximum = ack.props.get(0x22, 0)
        c.send_tolerating_close(publish_with("alias/t", b"x", V5, props=prop_u16(TOPIC_ALIAS, maximum + 1)))
        packets = c.read_until_closed()
    assert_rejected_after_connect(packets, V5, {0x94})


def test_mqtt_3_3_2_8_topic_alias_0_is_refused(broker):
    """[MQTT-3.3.2-8]: Topic Alias 0 is not allowed."""
    rejected("alias0", broker, publish_with("alias/t", b"x", V5, props=prop_u16(TOPIC_ALIAS, 0)), {0x81, 0x82, 0x94})


def test_mqtt_3_3_2_13_response_topic_not_utf8_is_malformed(broker):
    """[MQTT-3.3.2-13]: the Response Topic is a UTF-8 Encoded String."""
    rejected("rt-utf8", broker, publish_with("t", b"x", V5, props=prop_str(RESPONSE_TOPIC, b"r/\xff")), {0x81})


def test_mqtt_3_3_2_14_response_topic_with_wildcard_is_refused(broker):
    """[MQTT-3.3.2-14]: the Response Topic has no wildcards (berth: DISCONNECT 0x90, as for a Topic Name)."""
    rejected("rt-wild", broker, publish_with("t", b"x", V5, props=prop_str(RESPONSE_TOPIC, "r/#")), {0x81, 0x82, 0x90})


def test_mqtt_3_3_2_19_content_type_not_utf8_is_malformed(broker):
    """[MQTT-3.3.2-19]: the Content Type is a UTF-8 Encoded String."""
    rejected("ct-utf8", broker, publish_with("t", b"x", V5, props=prop_str(CONTENT_TYPE, b"\xc0\xaf")), {0x81})


def test_mqtt_3_3_2_4_and_15_to_20_properties_forwarded_unaltered(broker):
    """[MQTT-3.3.2-4] [MQTT-3.3.2-15] [MQTT-3.3.2-16] [MQTT-3.3.2-17] [MQTT-3.3.2-18]
    [MQTT-3.3.2-20]: Payload Format Indicator, Response Topic, Correlation Data, Content Type and
    User Properties (order and repeated keys kept) reach every subscriber unaltered."""
    props = (bytes([PAYLOAD_FORMAT_INDICATOR, 1]) + prop_str(RESPONSE_TOPIC, "fw/reply") +
             prop_str(CORRELATION_DATA, b"\x00\xffcorr") + prop_str(CONTENT_TYPE, "application/x-\u00e9") +
             user_prop("z", "1") + user_prop("a", "2") + user_prop("z", "3") + user_prop("", ""))
    with session(broker, "fw-sub1", V5) as s1, session(broker, "fw-sub2", V5) as s2, \
            session(broker, "fw-pub", V5) as p:
        assert sub(s1, [("fw/t", 1)]) == [1]
        assert sub(s2, [("fw/+", 0)]) == [0]
        pub(p, "fw/t", b"\xe2\x82\xac", qos=1, props=props)
        for s in (s1, s2):
            m = recv(s)
            assert m.props == {PAYLOAD_FORMAT_INDICATOR: 1, RESPONSE_TOPIC: "fw/reply", CORRELATION_DATA: b"\x00\xffcorr",
                               CONTENT_TYPE: "application/x-\u00e9",
                               USER_PROPERTY: [("z", "1"), ("a", "2"), ("z", "3"), ("", "")]}, m.props


def test_mqtt_3_3_4_6_subscription_identifier_in_publish_is_a_protocol_error(broker):
    """[MQTT-3.3.4-6]: a PUBLISH from a Client carries no Subscription Identifier."""
    rejected("subid-pub", broker, publish_with("t", b"x", V5, props=bytes([SUBSCRIPTION_IDENTIFIER, 1])), {0x81, 0x82})


def test_mqtt_3_3_4_7_receive_maximum_exceeded_is_refused(start_broker):
    """[MQTT-3.3.4-7]: more unacknowledged QoS 2 PUBLISHes than berth's Receive Maximum get
    DISCONNECT 0x93 (Receive Maximum exceeded)."""
    broker = start_broker("--receive-maximum", "2")
    with Conn(*broker.addr, version=V5) as c:
        assert c.connect("rm-exceed").props.get(RECEIVE_MAXIMUM) == 2
        for n in (1, 2):
            c.send(publish_with("rm/t", b"x", V5, qos=2, packet_id=n))
            assert c.read_packet().ptype == PUBREC
        c.send_tolerating_close(publish_with("rm/t", b"x", V5, qos=2, packet_id=3))
        packets = c.read_until_closed()
    assert_rejected_after_connect(packets, V5, {0x93})


def test_mqtt_3_3_4_9_and_10_receive_maximum_window(broker):
    """[MQTT-3.3.4-9] [MQTT-3.3.4-10] [MQTT-4.9.0-1..3]: with the client's Receive Maximum 2,
    berth has at most 2 unacknowledged QoS 1 PUBLISHes out, still answers PINGREQ, SUBSCRIBE and
    UNSUBSCRIBE at once, and sends the next message when one is acknowledged."""
    with Conn(*broker.addr, version=V5) as s, session(broker, "rw-pub", V5) as p:
        s.connect("rw-sub", props=properties(prop_u16(RECEIVE_MAXIMUM, 2)))
        assert sub(s, [("rw/t", 1)]) == [1]
        for n in range(1, 6):
            pub(p, "rw/t", b"%d" % n, qos=1, packet_id=n)
        first = [recv(s, ack=False) for _ in range(2)]
        assert [m.payload for m in first] == [b"1", b"2"]
        s.ping()  # answered although the quota is 0, and no third PUBLISH came before it
        assert sub(s, [("rw/other", 1)], packet_id=9) == [1]
        s.send(unsubscribe(["rw/other"], V5, packet_id=10))
        assert ack_codes(s.read_packet(), UNSUBACK, 10, V5) == [0]
        s.send(ack_packet(PUBACK, first[0].packet_id))
        m = recv(s, ack=False)
        assert m.payload == b"3"
        s.assert_quiet_for(0.2)


def test_mqtt_3_4_2_1_and_3_5_2_1_ack_reason_codes(broker):
    """[MQTT-3.4.2-1] [MQTT-3.5.2-1]: PUBACK and PUBREC use codes of their tables, success or
    0x87 (Not authorized) for a topic under $SYS."""
    puback = {0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99}
    with session(broker, "ackrc", V5) as c:
        for n, (topic, qos, want) in enumerate([("rc/t", 1, {0x00, 0x10}), ("rc/t", 2, {0x00, 0x10}),
                                                ("$SYS/rc", 1, {0x87}), ("$SYS/rc", 2, {0x87})], start=1):
            c.send(publish_with(topic, b"x", V5, qos=qos, packet_id=n))
            a = c.read_packet()
            code = a.body[2] if len(a.body) > 2 else 0
            assert a.ptype == (PUBACK if qos == 1 else PUBREC) and packet_id_of(a) == n, a
            assert code in want and code in puback, a
            if qos == 2 and code < 0x80:
                c.send(ack_packet(PUBREL, n))
                assert c.read_packet().ptype == PUBCOMP


def test_mqtt_3_6_2_1_and_3_7_2_1_pubrel_pubcomp_reason_codes(broker):
    """[MQTT-3.6.2-1] [MQTT-3.7.2-1]: berth's PUBREL and PUBCOMP use codes of their tables
    (0x00, or 0x92 Packet Identifier not found for a PUBREL it does not know)."""
    with session(broker, "relrc-sub", V5) as s, session(broker, "relrc-pub", V5) as p:
        assert sub(s, [("relrc/t", 2)]) == [2]
        pub(p, "relrc/t", b"x", qos=2)
        m = parse_publish(s.read_packet(), V5)
        s.send(ack_packet(PUBREC, m.packet_id))
        rel = s.read_packet()
        assert rel.ptype == PUBREL and (len(rel.body) == 2 or rel.body[2] in (0x00, 0x92)), rel
        s.send(ack_packet(PUBCOMP, m.packet_id))
        p.send(ack_packet(PUBREL, 777))
        comp = p.read_packet()
        assert comp.ptype == PUBCOMP and packet_id_of(comp) == 777, comp
        assert len(comp.body) == 2 or comp.body[2] in (0x00, 0x92), comp


# --- 3.8 to 3.11 SUBSCRIBE / UNSUBSCRIBE -------------------------------------------------------------

def test_mqtt_3_8_3_1_filter_not_utf8_is_malformed(broker):
    """[MQTT-3.8.3-1]: Topic Filters are UTF-8 Encoded Strings."""
    rejected("sub-utf8-5", broker, subscribe_many([(b"a/\xff", 1)], V5), {0x81})


def test_mqtt_3_8_3_2_subscribe_without_filters_is_a_protocol_error(broker):
    """[MQTT-3.8.3-2] [MQTT-4.13.1-1]: a SUBSCRIBE needs at least one filter."""
    rejected("sub-empty-5", broker, subscribe_many([], V5), {0x81, 0x82})


@pytest.mark.parametrize("options", [0x41, 0x81, 0x31, 0x03], ids=["bit6", "bit7", "retain-handling-3", "qos3"])
def test_mqtt_3_8_3_5_reserved_subscription_option_bits_are_malformed(broker, options):
    """[MQTT-3.8.3-5]: reserved bits of the Subscription Options (and QoS 3, Retain Handling 3)
    are malformed."""
    rejected("subopts", broker, subscribe_many([("t", options)], V5), {0x81, 0x82})


def test_mqtt_3_8_4_1_to_8_subscribe_answers(broker):
    """[MQTT-3.8.4-1..3] [MQTT-3.8.4-5..7] [MQTT-3.9.3-1] [MQTT-3.9.3-2]: one SUBACK with the
    Packet Identifier and a code per filter in order (granted QoS or a failure from Table 3-8);
    subscribing again to a filter replaces the subscription."""
    with session(broker, "suback5", V5) as s, session(broker, "suback5-pub", V5) as p:
        codes = sub(s, [("sa/2", 2), ("sa/#/bad", 1), ("sa/0", 0), ("$share/g/sa/s", 1), ("sa/1", 1)], packet_id=0x1234)
        assert codes == [2, 0x8F, 0, 1, 1], codes
        assert sub(s, [("sa/2", 1)], packet_id=0x1235) == [1]
        pub(p, "sa/2", b"x", qos=2)
        pub(p, "sa/1", b"end", qos=1)
        got = recv_until(s, "sa/1")
        assert [(m.payload, m.qos) for m in got] == [(b"x", 1)], "replaced subscription: one copy at the new QoS"


def test_mqtt_3_10_4_1_to_6_unsubscribe_answers(broker):
    """[MQTT-3.10.4-1] [MQTT-3.10.4-4..6] [MQTT-3.11.3-1] [MQTT-3.11.3-2]: one UNSUBACK with the
    Packet Identifier and a code per filter in order: 0x00 for an exact match, 0x11 (No
    subscription existed) otherwise; wildcards are not expanded."""
    with session(broker, "unsuback5", V5) as s, session(broker, "unsuback5-pub", V5) as p:
        assert sub(s, [("ua/+", 1), ("ua/x", 1), ("ua/end", 1)]) == [1, 1, 1]
        s.send(unsubscribe(["ua/#", "ua/+", "ua/x", "ua/+"], V5, packet_id=0x2222))
        assert ack_codes(s.read_packet(), UNSUBACK, 0x2222, V5) == [0x11, 0x00, 0x00, 0x11]
        pub(p, "ua/x", b"gone", qos=1)
        pub(p, "ua/end", b"", qos=1)
        assert recv_until(s, "ua/end") == []


# --- 3.14 DISCONNECT, 3.15 AUTH, 4.12 enhanced authentication ----------------------------------------

def test_mqtt_3_14_1_1_disconnect_reserved_flags_are_malformed(broker):
    """[MQTT-3.14.1-1]: DISCONNECT with reserved bits set gets DISCONNECT 0x81."""
    rejected("discflags5", broker, b"\xe2\x00", {0x81})


def test_mqtt_3_14_2_1_invalid_disconnect_reason_code_is_malformed(broker):
    """[MQTT-3.14.2-1]: a DISCONNECT Reason Code outside Table 3-10 is malformed."""
    rejected("discrc", broker, b"\xe0\x01\x05", {0x81})


def test_mqtt_3_14_2_2_server_disconnect_has_no_session_expiry(broker):
    """[MQTT-3.14.2-2] [MQTT-3.14.4-1]: the DISCONNECT berth sends on a takeover carries no
    Session Expiry Interval, and nothing follows it."""
    old = Conn(*broker.addr, version=V5)
    old.connect("sx-take", clean=False, props=expiring())
    with Conn(*broker.addr, version=V5) as new:
        new.connect("sx-take", clean=False, props=expiring())
        packets = old.read_until_closed()
    old.close()
    assert len(packets) == 1 and disconnect_reason(packets[0]) == 0x8E, packets
    assert SESSION_EXPIRY_INTERVAL not in disconnect_props(packets[0]), packets


def test_mqtt_4_12_0_1_authentication_method_is_refused(broker):
    """[MQTT-4.12.0-1] [MQTT-3.2.2-6..8]: an Authentication Method berth does not support gets
    CONNACK 0x8C (Bad authentication method) with Session Present 0, then close."""
    with Conn(*broker.addr, version=V5) as c:
        c.send(connect("auth-m", V5, clean=False, props=properties(prop_str(AUTHENTICATION_METHOD, "SCRAM-SHA-256"))))
        packets = c.read_until_closed()
    assert len(packets) == 1, packets
    ack = parse_connack(packets[0], V5)
    assert (ack.code, ack.session_present) == (0x8C, False), ack


@pytest.mark.parametrize("raw", [b"\xf0\x00", b"\xf0\x02\x19\x00", b"\xf1\x00"], ids=["auth", "reauth", "bad-flags"])
def test_mqtt_4_12_0_6_and_7_auth_without_authentication_method_is_a_protocol_error(broker, raw):
    """[MQTT-4.12.0-6] [MQTT-4.12.0-7] [MQTT-3.15.1-1]: without an Authentication Method berth's
    CONNACK has none and an AUTH from the Client is refused (DISCONNECT 0x82, or 0x81 for
    malformed flags)."""
    with Conn(*broker.addr, version=V5) as c:
        ack = c.connect("no-auth")
        assert AUTHENTICATION_METHOD not in ack.props, ack
        c.send_tolerating_close(raw)
        packets = c.read_until_closed()
    assert_rejected_after_connect(packets, V5, {0x81, 0x82})


# --- 4.3, 4.4 QoS flows ------------------------------------------------------------------------------

def test_mqtt_4_3_3_7_sent_qos2_message_is_not_expired(broker):
    """[MQTT-4.3.3-7] [MQTT-4.3.3-13]: once berth sent a QoS 2 PUBLISH, its Message Expiry does
    not stop the flow: a PUBREC after the expiry still gets PUBREL."""
    with session(broker, "x2-sub", V5) as s, session(broker, "x2-pub", V5) as p:
        assert sub(s, [("x2/t", 2)]) == [2]
        pub(p, "x2/t", b"x", qos=2, props=prop_u32(0x02, 1))
        m = parse_publish(s.read_packet(), V5)
        time.sleep(2.2)  # the stimulus: let the 1 s Message Expiry Interval pass
        s.send(ack_packet(PUBREC, m.packet_id))
        rel = s.read_packet()
        assert (rel.ptype, packet_id_of(rel)) == (PUBREL, m.packet_id), rel
        s.send(ack_packet(PUBCOMP, m.packet_id))
        s.ping()


def test_mqtt_4_3_3_9_failed_pubrec_frees_the_packet_id(broker):
    """[MQTT-4.3.3-9]: after berth answers PUBREC >= 0x80 (a QoS 2 PUBLISH under $SYS), the same
    Packet Identifier starts a new publication."""
    with session(broker, "frec-sub", V5) as s, session(broker, "frec-pub", V5) as p:
        assert sub(s, [("frec/t", 1)]) == [1]
        p.send(publish_with("$SYS/frec", b"x", V5, qos=2, packet_id=4))
        a = p.read_packet()
        assert (a.ptype, packet_id_of(a), a.body[2]) == (PUBREC, 4, 0x87), a
        pub(p, "frec/t", b"new", qos=2, packet_id=4)
        assert recv(s).payload == b"new"


def test_mqtt_4_4_0_2_failed_puback_is_not_retransmitted(broker):
    """[MQTT-4.4.0-2] [MQTT-4.8.2-6]: a PUBACK with a failure code acknowledges the PUBLISH: it is
    not sent again when the session resumes."""
    s = Conn(*broker.addr, version=V5)
    s.connect("fpa", clean=False, props=expiring())
    assert sub(s, [("fpa/t", 1), ("fpa/end", 1)]) == [1, 1]
    with session(broker, "fpa-pub", V5) as p:
        pub(p, "fpa/t", b"refused", qos=1)
    m = parse_publish(s.read_packet(), V5)
    s.send(bytes([0x40, 3]) + struct.pack(">H", m.packet_id) + b"\x80")
    s.ping()
    s.close()
    s = Conn(*broker.addr, version=V5)
    assert s.connect("fpa", clean=False, props=expiring()).session_present
    with session(broker, "fpa-pub2", V5) as p:
        pub(p, "fpa/end", b"", qos=1)
    assert recv_until(s, "fpa/end") == [], "a PUBLISH refused with PUBACK 0x80 was sent again"
    s.close()


# --- 4.8.2 shared subscriptions ---------------------------------------------------------------------

@pytest.mark.parametrize("flt", ["$share//t", "$share/g+/t", "$share/g#/t", "$share/g", "$share/g/"])
def test_mqtt_4_8_2_1_and_2_invalid_shared_filters_are_refused(broker, flt):
    """[MQTT-4.8.2-1] [MQTT-4.8.2-2]: a ShareName of at least one character without '/', '+',
    '#', followed by '/' and a filter; anything else is refused (SUBACK 0x8F, Topic Filter
    invalid) or the connection closed as malformed."""
    with session(broker, "badshare", V5) as c:
        c.send_tolerating_close(subscribe_many([(flt, 1)], V5, packet_id=3))
        try:
            p = c.read_packet()
        except Exception:  # closed without a packet would not be 5.0 behaviour
            raise
        if p.ptype == SUBACK:
            assert ack_codes(p, SUBACK, 3, V5) == [0x8F], p
        else:
            assert disconnect_reason(p) in (0x81, 0x82, 0x8F), p


def test_mqtt_4_8_2_3_shared_delivery_respects_granted_qos(broker):
    """[MQTT-4.8.2-3]: a member of a share group gets messages at most at its granted QoS."""
    with session(broker, "shq-sub", V5) as s, session(broker, "shq-pub", V5) as p:
        assert sub(s, [("$share/q/shq/t", 1)]) == [1]
        pub(p, "shq/t", b"x", qos=2)
        m = recv(s)
        assert (m.payload, m.qos) == (b"x", 1)


def test_mqtt_4_8_2_4_shared_delivery_completes_on_reconnect(broker):
    """[MQTT-4.8.2-4]: a QoS 1 message sent to a share group member that disconnects before
    acknowledging it is delivered to that member when it reconnects."""
    s = Conn(*broker.addr, version=V5)
    s.connect("shr-sub", clean=False, props=expiring())
    assert sub(s, [("$share/r/shr/t", 1)]) == [1]
    with session(broker, "shr-pub", V5) as p:
        pub(p, "shr/t", b"owed", qos=1)
    first = parse_publish(s.read_packet(), V5)
    s.close()
    s = Conn(*broker.addr, version=V5)
    assert s.connect("shr-sub", clean=False, props=expiring()).session_present
    m = recv(s)
    assert (m.payload, m.dup, m.packet_id) == (b"owed", True, first.packet_id), m
    s.close()


def test_mqtt_4_8_2_5_owed_shared_message_dies_with_the_session(broker):
    """[MQTT-4.8.2-5]: a message sent to a share group member that disconnected without
    acknowledging it is not sent to another member when the member's session ends."""
    a = Conn(*broker.addr, version=V5)
    a.connect("sh5-a", clean=False, props=expiring(1))
    assert sub(a, [("$share/g5/sh5/t", 1)]) == [1]
    with session(broker, "sh5-pub", V5) as p:
        pub(p, "sh5/t", b"owed to a", qos=1)
        assert parse_publish(a.read_packet(), V5).payload == b"owed to a"
        a.close()  # unacknowledged; the session expires one second later
        with session(broker, "sh5-b", V5) as b:
            assert sub(b, [("$share/g5/sh5/t", 1), ("sh5/end", 1)]) == [1, 1]
            time.sleep(2.5)  # the stimulus: let a's one-second Session Expiry Interval pass
            pub(p, "sh5/end", b"", qos=1)
            got = recv_until(b, "sh5/end")
            assert got == [], f"the message owed to an ended session went to another member: {got}"


def first_publish_of(conns: list[Conn], timeout: float = 5.0) -> tuple[Conn, object]:
    """The first PUBLISH that reaches any of `conns`, and the connection it came on."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for c in conns:
            try:
                return c, parse_publish(c.read_packet(0.05), V5)
            except AssertionError as e:
                if "no complete packet" not in str(e):
                    raise
    raise AssertionError(f"no PUBLISH within {timeout}s")


def test_mqtt_4_8_2_6_refused_shared_message_goes_to_no_other_member(broker):
    """[MQTT-4.8.2-6]: when the member a shared message went to answers PUBACK >= 0x80, berth
    discards it rather than sending it to another member of the group."""
    with session(broker, "sh6-a", V5) as a, session(broker, "sh6-b", V5) as b, session(broker, "sh6-pub", V5) as p:
        for c in (a, b):
            assert sub(c, [("$share/g6/sh6/t", 1), ("sh6/end", 1)]) == [1, 1]
        pub(p, "sh6/t", b"refused", qos=1)
        got_it, m = first_publish_of([a, b])
        assert m.payload == b"refused"
        got_it.send(bytes([0x40, 3]) + struct.pack(">H", m.packet_id) + b"\x80")
        got_it.ping()
        other = b if got_it is a else a
        pub(p, "sh6/end", b"", qos=1)
        assert recv_until(other, "sh6/end") == [], "the refused message was sent to another member"
        assert recv_until(got_it, "sh6/end") == [], "the refused message was sent again"


def wire_size(p) -> int:
    return 1 + len(vbi(len(p.body))) + len(p.body)


def test_mqtt_3_4_2_2_acks_fit_the_clients_maximum_packet_size(broker):
    """[MQTT-3.4.2-2] [MQTT-3.4.2-3] [MQTT-3.5.2-2] [MQTT-3.5.2-3] [MQTT-3.6.2-2] [MQTT-3.6.2-3]
    [MQTT-3.7.2-2] [MQTT-3.7.2-3] [MQTT-3.9.2-1] [MQTT-3.9.2-2] [MQTT-3.11.2-1] [MQTT-3.11.2-2]
    [MQTT-3.14.2-3] [MQTT-3.14.2-4]: for a client whose Maximum Packet Size is 40 bytes, every
    acknowledgement berth sends (successes and failures, which may carry a Reason String or
    User Properties) still arrives and fits: optional properties are left out, never the packet."""
    limit = 40
    props = properties(prop_u32(0x27, limit))
    seen = []

    def read(c, ptype):
        p = c.read_packet()
        assert p.ptype == ptype, f"expected packet type {ptype}, got {p!r}"
        assert wire_size(p) <= limit, f"{p!r} is {wire_size(p)} bytes, above the client's {limit}"
        seen.append(p)
        return p

    with Conn(*broker.addr, version=V5) as c, session(broker, "fit-pub", V5) as p:
        c.connect("fit", props=props)
        c.send(subscribe_many([("fit/t", 2), ("a/#/b", 1)], V5, packet_id=1))
        assert ack_codes(read(c, SUBACK), SUBACK, 1, V5) == [2, 0x8F]
        c.send(unsubscribe(["never"], V5, packet_id=2))
        assert ack_codes(read(c, UNSUBACK), UNSUBACK, 2, V5) == [0x11]
        for n, (topic, qos) in enumerate([("fit/x", 1), ("$SYS/fit", 1), ("fit/x", 2), ("$SYS/fit", 2)], start=3):
            c.send(publish_with(topic, b"x", V5, qos=qos, packet_id=n))
            read(c, PUBACK if qos == 1 else PUBREC)
        c.send(ack_packet(PUBREL, 5))
        read(c, PUBCOMP)
        c.send(ack_packet(PUBREL, 999))  # unknown: PUBCOMP 0x92 Packet Identifier not found
        read(c, PUBCOMP)
        pub(p, "fit/t", b"x", qos=2)
        m = parse_publish(c.read_packet(), V5)
        c.send(ack_packet(PUBREC, m.packet_id))
        read(c, PUBREL)
        c.send(ack_packet(PUBCOMP, m.packet_id))
        c.send_tolerating_close(b"\xc1\x00")  # malformed: DISCONNECT 0x81
        read(c, DISCONNECT)
        assert c.read_until_closed() == []
