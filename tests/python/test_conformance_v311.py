"""MQTT 3.1.1 conformance, one test per server-side rule (or a few closely tied rules), named
after the rule's number in the 3.1.1 specification ([MQTT-x.y.z-n] of its Appendix B).

Black box against the real broker, with raw bytes (mqttwire) so that packets a client library
would refuse to send can be sent. Where the same behaviour is required by 5.0 the test runs both
protocol versions (VERSIONS); CONFORMANCE.md maps each rule of both specifications to its tests.
A 3.1.1 server closes the connection on a protocol violation without sending anything; a 5.0
server sends DISCONNECT (or CONNACK, for a bad CONNECT) with a reason code first.
"""

import time

import pytest

from mqttwire import (CONNACK, PINGRESP, PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL, SUBACK, UNSUBACK, V5, V311,
                      Conn, ack_codes, ack_packet, connect, mqtt_str, packet, packet_id_of,
                      parse_connack, parse_publish, publish_with, subscribe_many, unsubscribe)
from test_malformed import (assert_connack_then_close, assert_rejected_after_connect, misbehave_after_connect,
                            misbehave_before_connect)

VERSIONS = pytest.mark.parametrize("version", [V311, V5], ids=["v311", "v5"])
WILL = 0x04
WILL_RETAIN = 0x20
USER_NAME = 0x80
PASSWORD = 0x40
CLEAN = 0x02


def session(broker, cid: str, version: int = V311, **kw) -> Conn:
    """A connected raw client."""
    c = Conn(*broker.addr, version=version)
    c.connect(cid, **kw)
    return c


def sub(c: Conn, filters, packet_id: int = 1) -> list[int]:
    """SUBSCRIBE to [(filter, options)] (or one filter at QoS 2) and return the SUBACK codes."""
    if isinstance(filters, str):
        filters = [(filters, 2)]
    c.send(subscribe_many(filters, c.version, packet_id=packet_id))
    return ack_codes(c.read_packet(), SUBACK, packet_id, c.version)


def pub(c: Conn, topic, payload: bytes = b"", *, qos: int = 0, packet_id: int = 1, retain: bool = False,
        dup: bool = False, props: bytes = b"") -> None:
    """PUBLISH and wait for the whole acknowledgement flow (QoS 0: a PINGREQ round trip)."""
    c.send(publish_with(topic, payload, c.version, qos=qos, packet_id=packet_id if qos else None,
                        retain=retain, dup=dup, props=props))
    if qos == 0:
        c.ping()
    elif qos == 1:
        p = c.read_packet()
        assert p.ptype == PUBACK and packet_id_of(p) == packet_id, f"expected PUBACK {packet_id}, got {p!r}"
    else:
        p = c.read_packet()
        assert p.ptype == PUBREC and packet_id_of(p) == packet_id, f"expected PUBREC {packet_id}, got {p!r}"
        c.send(ack_packet(PUBREL, packet_id))
        p = c.read_packet()
        assert p.ptype == PUBCOMP and packet_id_of(p) == packet_id, f"expected PUBCOMP {packet_id}, got {p!r}"


def recv(c: Conn, *, ack: bool = True, timeout: float = 5.0):
    """The next PUBLISH; QoS 1 is acknowledged, QoS 2 completed (PUBLISHes that arrive while a
    QoS 2 flow completes are kept for the next call)."""
    pending = c.__dict__.setdefault("pending", [])
    p = pending.pop(0) if pending else parse_publish(c.read_packet(timeout), c.version)
    if ack and p.qos == 1:
        c.send(ack_packet(PUBACK, p.packet_id))
    elif ack and p.qos == 2:
        c.send(ack_packet(PUBREC, p.packet_id))
        while True:
            rel = c.read_packet()
            if rel.ptype != PUBLISH:
                break
            pending.append(parse_publish(rel, c.version))
        assert rel.ptype == PUBREL and rel.flags == 2 and packet_id_of(rel) == p.packet_id, rel
        c.send(ack_packet(PUBCOMP, p.packet_id))
    return p


def recv_until(c: Conn, marker: str) -> list:
    """Every PUBLISH before the one on `marker` (which the caller publishes last)."""
    got = []
    while True:
        p = recv(c)
        if p.topic == marker:
            return got
        got.append(p)


def marker(broker, subscriber: Conn, topic: str, version: int = V311) -> list:
    """Publish a QoS 1 marker from a fresh client and return what `subscriber` got before it.
    The subscriber must already be subscribed to `topic`."""
    with session(broker, f"marker-{time.monotonic_ns()}", version) as m:
        pub(m, topic, b"marker", qos=1)
    return recv_until(subscriber, topic)


def will_connect(cid: str, version: int, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False,
                 keep_alive: int = 0, clean: bool = True) -> bytes:
    flags = (CLEAN if clean else 0) | WILL | qos << 3 | (WILL_RETAIN if retain else 0)
    extra = (b"\x00" if version == V5 else b"") + mqtt_str(topic) + mqtt_str(payload)
    return connect(cid, version, flags=flags, keep_alive=keep_alive, payload_extra=extra)


def connect_with_will(broker, cid, version, topic, payload, **kw) -> Conn:
    c = Conn(*broker.addr, version=version)
    c.send(will_connect(cid, version, topic, payload, **kw))
    ack = parse_connack(c.read_packet(), version)
    assert ack.code == 0, ack
    return c


def refused_connect(broker, version: int, raw: bytes) -> None:
    """A CONNECT that must be refused: 3.1.1 closes without CONNACK, 5.0 sends CONNACK >= 0x80."""
    packets = misbehave_before_connect(broker, version, raw)
    assert_connack_then_close(packets, version, {0x80, 0x81, 0x82, 0x85})


# --- 1.5 and 2.3: strings and packet identifiers -------------------------------------------------

@VERSIONS
def test_mqtt_1_5_3_3_bom_is_kept_in_topics(broker, version):
    """[MQTT-1.5.3-3] (5.0: [MQTT-1.5.4-3]): U+FEFF (EF BB BF) is part of the topic, never stripped."""
    with session(broker, "bom-sub", version) as s, session(broker, "bom-pub", version) as p:
        assert sub(s, [("bom/\ufeffx", 1), ("bom/end", 1)]) == [1, 1]
        pub(p, "bom/x", b"plain", qos=1)
        pub(p, "bom/\ufeffx", b"with-bom", qos=1)
        pub(p, "bom/end", b"", qos=1)
        got = recv_until(s, "bom/end")
        assert [(m.topic, m.payload) for m in got] == [("bom/\ufeffx", b"with-bom")], got


@VERSIONS
@pytest.mark.parametrize("bad", ["publish", "subscribe", "unsubscribe"])
def test_mqtt_2_3_1_1_packet_id_zero_is_rejected(broker, version, bad):
    """[MQTT-2.3.1-1] (5.0: [MQTT-2.2.1-3]): PUBLISH QoS>0, SUBSCRIBE and UNSUBSCRIBE carry a
    non-zero Packet Identifier; zero is malformed."""
    raw = {"publish": publish_with("t", b"x", version, qos=1, packet_id=0),
           "subscribe": subscribe_many([("t", 1)], version, packet_id=0),
           "unsubscribe": unsubscribe(["t"], version, packet_id=0)}[bad]
    packets = misbehave_after_connect(broker, version, f"pid0-{bad}", raw)
    assert_rejected_after_connect(packets, version, {0x81, 0x82})


def test_mqtt_4_3_2_1_server_publishes_use_unused_nonzero_ids(broker):
    """[MQTT-4.3.2-1] [MQTT-2.3.1-4]: each new QoS 1 PUBLISH from the Server has QoS 1, DUP 0
    and a non-zero Packet Identifier not in use by another unacknowledged PUBLISH."""
    with session(broker, "ids-sub") as s, session(broker, "ids-pub") as p:
        assert sub(s, [("ids/t", 1)]) == [1]
        for n in range(1, 21):
            pub(p, "ids/t", b"%d" % n, qos=1, packet_id=n)
        got = [recv(s, ack=False) for _ in range(20)]
        assert [m.payload for m in got] == [b"%d" % n for n in range(1, 21)]
        assert all(m.qos == 1 and not m.dup and m.packet_id for m in got), got
        assert len({m.packet_id for m in got}) == 20, f"packet ids reused while unacknowledged: {got}"


# --- 3.1 CONNECT ------------------------------------------------------------------------------------

def test_mqtt_3_1_2_1_wrong_protocol_name_is_closed(broker):
    """[MQTT-3.1.2-1]: a wrong protocol name is not processed as MQTT 3.1.1: closed, no CONNACK."""
    packets = misbehave_before_connect(broker, V311, connect("badname", V311, protocol_name=b"MQTX"))
    assert packets == [], packets


def test_mqtt_3_1_2_4_clean_session_0_resumes_the_session(broker):
    """[MQTT-3.1.2-4] [MQTT-3.1.4-3]: with Clean Session 0 the session (its subscription) is
    resumed on the next connection, which need not subscribe again."""
    s = session(broker, "cs0", clean=False)
    assert sub(s, [("cs0/t", 1)]) == [1]
    s.send(b"\xe0\x00")
    s.close()
    s = Conn(*broker.addr, version=V311)
    assert s.connect("cs0", clean=False).session_present
    with session(broker, "cs0-pub") as p:
        pub(p, "cs0/t", b"after", qos=1)
    assert recv(s).payload == b"after"
    s.close()


def test_mqtt_3_1_2_6_clean_session_1_discards_the_session(broker):
    """[MQTT-3.1.2-6] [MQTT-4.1.0-2]: Clean Session 1 discards the stored session, and the
    session it starts is not kept after the connection."""
    s = session(broker, "cs1", clean=False)
    assert sub(s, [("cs1/t", 1)]) == [1]
    s.send(b"\xe0\x00")
    s.close()
    s = Conn(*broker.addr, version=V311)
    assert not s.connect("cs1", clean=True).session_present
    assert sub(s, [("cs1/end", 1)]) == [1]
    with session(broker, "cs1-pub") as p:
        pub(p, "cs1/t", b"old subscription", qos=1)
        pub(p, "cs1/end", b"", qos=1)
    assert recv_until(s, "cs1/end") == [], "the discarded session's subscription still delivered"
    s.send(b"\xe0\x00")
    s.close()
    s = Conn(*broker.addr, version=V311)
    assert not s.connect("cs1", clean=False).session_present, "a Clean Session 1 session was kept"
    s.close()


def test_mqtt_3_1_2_7_retained_messages_outlive_the_session(broker):
    """[MQTT-3.1.2-7]: retained messages are not part of the session and survive its end."""
    with session(broker, "ret-owner") as p:
        pub(p, "outlive/t", b"kept", qos=1, retain=True)
        p.send(b"\xe0\x00")
    with session(broker, "ret-reader") as s:
        assert sub(s, [("outlive/t", 1)]) == [1]
        m = recv(s)
        assert (m.payload, m.retain) == (b"kept", True)


def test_mqtt_3_1_2_8_will_published_after_protocol_error(broker):
    """[MQTT-3.1.2-8]: a connection closed for a protocol error publishes its Will."""
    with session(broker, "will8-sub") as s:
        assert sub(s, [("will8/#", 1)]) == [1]
        w = connect_with_will(broker, "will8", V311, "will8/t", b"gone", qos=1)
        w.send_tolerating_close(publish_with("will8/+", b"x", V311))  # wildcard in a Topic Name
        assert w.read_until_closed() == []
        m = recv(s)
        assert (m.topic, m.payload, m.qos) == ("will8/t", b"gone", 1)


@VERSIONS
def test_mqtt_3_1_2_10_will_published_only_once(broker, version):
    """[MQTT-3.1.2-10]: the Will is removed once published: the session's next connection,
    without a Will, ends without publishing one."""
    kw = {"clean": False}
    with session(broker, "will10-sub", version) as s:
        assert sub(s, [("will10/#", 1)]) == [1]
        w = connect_with_will(broker, "will10", version, "will10/t", b"once", qos=1, clean=False)
        w.close()
        assert recv(s).payload == b"once"
        w = session(broker, "will10", version, **kw)
        w.close()
        assert marker(broker, s, "will10/marker", version) == [], "the Will was published twice"


def test_mqtt_3_1_2_9_will_flag_without_will_fields_is_closed(broker):
    """[MQTT-3.1.2-9]: with the Will Flag set, Will Topic and Will Message must be present."""
    refused_connect(broker, V311, connect("will9", V311, flags=CLEAN | WILL))


@pytest.mark.parametrize("flags", [CLEAN | 0x08, CLEAN | 0x10, CLEAN | WILL_RETAIN], ids=["qos1", "qos2", "retain"])
def test_mqtt_3_1_2_11_will_bits_without_will_flag_are_closed(broker, flags):
    """[MQTT-3.1.2-11] [MQTT-3.1.2-13] [MQTT-3.1.2-15]: without the Will Flag, Will QoS and
    Will Retain must be 0."""
    refused_connect(broker, V311, connect("will11", V311, flags=flags))


def test_mqtt_3_1_2_12_no_will_without_will_flag(broker):
    """[MQTT-3.1.2-12]: a connection without the Will Flag publishes nothing when it drops."""
    with session(broker, "will12-sub") as s:
        assert sub(s, [("#", 1)]) == [1]
        c = session(broker, "will12")
        c.close()
        assert marker(broker, s, "will12/marker") == []


@VERSIONS
@pytest.mark.parametrize("retain", [False, True], ids=["not-retained", "retained"])
def test_mqtt_3_1_2_16_and_17_will_retain(broker, version, retain):
    """[MQTT-3.1.2-16] [MQTT-3.1.2-17] (5.0: [MQTT-3.1.2-14] [MQTT-3.1.2-15]): the Will is
    published retained exactly when Will Retain is 1 (a later subscriber gets it only then)."""
    topic = f"will16/{version}/{retain}"
    with session(broker, f"will16-sub-{retain}", version) as s:
        assert sub(s, [(topic, 1)]) == [1]
        w = connect_with_will(broker, f"will16-{retain}", version, topic, b"bye", qos=1, retain=retain)
        w.close()
        m = recv(s)
        assert m.payload == b"bye" and not m.retain, m  # live delivery: RETAIN 0 either way
    with session(broker, f"will16-late-{retain}", version) as late:
        assert sub(late, [(topic, 1), ("will16/end", 1)]) == [1, 1]
        got = marker(broker, late, "will16/end", version)
        assert [(m.payload, m.retain) for m in got] == ([(b"bye", True)] if retain else []), got


@pytest.mark.parametrize("flags,extra", [(CLEAN, mqtt_str("user")), (CLEAN | USER_NAME, mqtt_str("user") + mqtt_str("pw"))],
                         ids=["user-name", "password"])
def test_mqtt_3_1_2_18_and_20_fields_without_their_flag_are_closed(broker, flags, extra):
    """[MQTT-3.1.2-18] [MQTT-3.1.2-20]: a User Name or Password without its flag is malformed."""
    refused_connect(broker, V311, connect("user18", V311, flags=flags, payload_extra=extra))


@pytest.mark.parametrize("flags,extra", [(CLEAN | USER_NAME, b""), (CLEAN | USER_NAME | PASSWORD, mqtt_str("user"))],
                         ids=["user-name", "password"])
def test_mqtt_3_1_2_19_and_21_flag_without_its_field_is_closed(broker, flags, extra):
    """[MQTT-3.1.2-19] [MQTT-3.1.2-21]: a User Name or Password Flag without the field is malformed."""
    refused_connect(broker, V311, connect("user19", V311, flags=flags, payload_extra=extra))


def test_mqtt_3_1_2_22_password_without_user_name_is_closed(broker):
    """[MQTT-3.1.2-22]: in 3.1.1 the Password Flag needs the User Name Flag."""
    refused_connect(broker, V311, connect("user22", V311, flags=CLEAN | PASSWORD, payload_extra=mqtt_str("pw")))


def test_mqtt_3_1_2_24_keep_alive_expiry_publishes_the_will(broker):
    """[MQTT-3.1.2-24]: after 1.5 x Keep Alive of silence the Server closes the connection as if
    the network had failed, so the Will is published."""
    with session(broker, "ka-sub") as s:
        assert sub(s, [("ka/will", 1)]) == [1]
        w = connect_with_will(broker, "ka-will", V311, "ka/will", b"silent", keep_alive=1)
        start = time.monotonic()
        assert w.read_until_closed(timeout=5) == []
        assert 1.4 <= time.monotonic() - start <= 3.5
        assert recv(s).payload == b"silent"


@VERSIONS
def test_mqtt_3_1_3_1_all_payload_fields_in_order(broker, version):
    """[MQTT-3.1.3-1]: Client Identifier, Will (5.0: Will Properties first), Will Topic, Will
    Message, User Name, Password, in that order, are all understood."""
    flags = CLEAN | WILL | 0x08 | USER_NAME | PASSWORD
    extra = (b"\x00" if version == V5 else b"") + mqtt_str("order/will") + mqtt_str(b"w") + \
        mqtt_str("user") + mqtt_str(b"secret")
    with session(broker, "order-sub", version) as s:
        assert sub(s, [("order/will", 1)]) == [1]
        c = Conn(*broker.addr, version=version)
        c.send(connect("order", version, flags=flags, payload_extra=extra))
        assert parse_connack(c.read_packet(), version).code == 0
        c.close()
        m = recv(s)
        assert (m.topic, m.payload, m.qos) == ("order/will", b"w", 1)


def test_mqtt_3_1_3_2_sessions_are_per_client_id(broker):
    """[MQTT-3.1.3-2]: session state belongs to one ClientId; another id does not see it."""
    a = session(broker, "idA", clean=False)
    assert sub(a, [("per-id/t", 1)]) == [1]
    a.close()
    b = Conn(*broker.addr, version=V311)
    assert not b.connect("idB", clean=False).session_present
    b.close()
    a = Conn(*broker.addr, version=V311)
    assert a.connect("idA", clean=False).session_present
    a.close()


def test_mqtt_3_1_3_3_missing_client_id_is_closed(broker):
    """[MQTT-3.1.3-3]: the ClientId must be present (the payload cannot be empty)."""
    raw = packet(0x10, mqtt_str("MQTT") + bytes([4, CLEAN]) + b"\x00\x00")
    refused_connect(broker, V311, raw)


def test_mqtt_3_1_3_4_client_id_not_utf8(broker):
    """[MQTT-3.1.3-4] [MQTT-1.5.3-1]: a ClientId that is not UTF-8 is malformed."""
    refused_connect(broker, V311, connect(b"bad\xff\xfeid", V311))


@VERSIONS
def test_mqtt_3_1_3_5_short_alphanumeric_client_ids_are_allowed(broker, version):
    """[MQTT-3.1.3-5]: ClientIds of 1 to 23 bytes from [0-9a-zA-Z] are accepted."""
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    for cid in ["a", "Z9", alphabet[:23], alphabet[23:46], alphabet[-23:]]:
        with Conn(*broker.addr, version=version) as c:
            assert c.connect(cid).code == 0
            c.ping()


def test_mqtt_3_1_3_10_will_topic_not_utf8_is_closed(broker):
    """[MQTT-3.1.3-10]: the Will Topic must be UTF-8."""
    refused_connect(broker, V311, will_connect("will-utf8", V311, b"w/\xff", b"x"))


def test_mqtt_3_1_3_11_user_name_not_utf8_is_closed(broker):
    """[MQTT-3.1.3-11]: the User Name must be UTF-8."""
    refused_connect(broker, V311, connect("user-utf8", V311, flags=CLEAN | USER_NAME, payload_extra=mqtt_str(b"\xc3\x28")))


def test_mqtt_3_1_4_1_malformed_connect_closed_without_connack(broker):
    """[MQTT-3.1.4-1] [MQTT-3.2.2-6]: a CONNECT whose fields overrun its length is closed with no CONNACK."""
    refused_connect(broker, V311, packet(0x10, mqtt_str("MQTT") + bytes([4, CLEAN]) + b"\x00\x00" + b"\x00\x09abc"))


def test_mqtt_3_1_4_5_nothing_after_a_refused_connect_is_processed(broker):
    """[MQTT-3.1.4-5]: a retained PUBLISH sent right after a refused CONNECT is not processed."""
    with Conn(*broker.addr, version=V311) as c:
        c.send(connect("", V311, clean=False) + publish_with("refused/t", b"sneaky", V311, retain=True))
        packets = c.read_until_closed()
    assert [(p.ptype, p.body) for p in packets] == [(CONNACK, b"\x00\x02")], packets
    with session(broker, "refused-reader") as s:
        assert sub(s, [("refused/t", 1), ("refused/end", 1)]) == [1, 1]
        assert marker(broker, s, "refused/end") == [], "data after a refused CONNECT was processed"


@VERSIONS
def test_mqtt_3_2_0_1_connack_comes_first(broker, version):
    """[MQTT-3.2.0-1]: even with packets sent right behind the CONNECT, CONNACK comes first."""
    with Conn(*broker.addr, version=version) as c:
        c.send(connect("first", version) + b"\xc0\x00" + subscribe_many([("first/t", 1)], version))
        assert parse_connack(c.read_packet(), version).code == 0
        assert c.read_packet().ptype == PINGRESP
        assert c.read_packet().ptype == SUBACK


def test_mqtt_3_2_2_3_session_present_reflects_stored_state(broker):
    """[MQTT-3.2.2-2] [MQTT-3.2.2-3]: Clean Session 0 gets Session Present 0 when no session is
    stored, 1 when one is."""
    with Conn(*broker.addr, version=V311) as c:
        assert not c.connect("sp", clean=False).session_present
        c.send(b"\xe0\x00")
    with Conn(*broker.addr, version=V311) as c:
        assert c.connect("sp", clean=False).session_present


# --- 3.3 PUBLISH ------------------------------------------------------------------------------------

def test_mqtt_3_3_1_2_dup_with_qos_0_is_closed(broker):
    """[MQTT-3.3.1-2]: DUP must be 0 on a QoS 0 PUBLISH."""
    packets = misbehave_after_connect(broker, V311, "dup0", publish_with("t", b"x", V311, dup=True))
    assert packets == []


def test_mqtt_3_3_1_3_dup_not_propagated(broker):
    """[MQTT-3.3.1-3] [MQTT-3.3.1-2] [MQTT-4.3.1-1] [MQTT-2.3.1-5]: a PUBLISH received with
    DUP 1 goes to subscribers with DUP 0 (a first delivery); QoS 0 copies have DUP 0 and no
    packet id."""
    with session(broker, "dup-sub1") as s1, session(broker, "dup-sub0") as s0, session(broker, "dup-pub") as p:
        assert sub(s1, [("dup/t", 1)]) == [1]
        assert sub(s0, [("dup/t", 0)]) == [0]
        pub(p, "dup/t", b"again", qos=1, dup=True)
        m1, m0 = recv(s1), recv(s0)
        assert (m1.qos, m1.dup, m1.payload) == (1, False, b"again"), m1
        assert (m0.qos, m0.dup, m0.packet_id, m0.payload) == (0, False, None, b"again"), m0


def test_mqtt_3_3_1_5_retained_message_keeps_its_qos(broker):
    """[MQTT-3.3.1-5] [MQTT-3.3.1-7]: the retained message is stored with its QoS, and a
    retained QoS 0 message replaces it."""
    with session(broker, "rq-pub") as p:
        pub(p, "rq/t", b"q1", qos=1, retain=True)
        with session(broker, "rq-sub1") as s:
            assert sub(s, [("rq/t", 2)]) == [2]
            m = recv(s)
            assert (m.payload, m.qos, m.retain) == (b"q1", 1, True)
        pub(p, "rq/t", b"q0", qos=0, retain=True)
        with session(broker, "rq-sub2") as s:
            assert sub(s, [("rq/t", 2)]) == [2]
            m = recv(s)
            assert (m.payload, m.qos, m.retain) == (b"q0", 0, True)


@VERSIONS
def test_mqtt_3_3_1_6_and_8_retained_sent_on_subscribe_with_retain_1(broker, version):
    """[MQTT-3.3.1-6] [MQTT-3.3.1-8] (5.0: [MQTT-3.3.1-9]): a new subscription gets the retained
    message of every matching topic, with RETAIN 1."""
    with session(broker, "rs-pub", version) as p:
        pub(p, "rs/a", b"A", qos=1, retain=True)
        pub(p, "rs/b", b"B", qos=1, retain=True)
        pub(p, "other/c", b"C", qos=1, retain=True)
    with session(broker, "rs-sub", version) as s:
        assert sub(s, [("rs/+", 1)]) == [1]
        got = sorted((m.topic, m.payload, m.retain) for m in (recv(s), recv(s)))
        assert got == [("rs/a", b"A", True), ("rs/b", b"B", True)]


@VERSIONS
def test_mqtt_3_3_1_9_live_delivery_clears_retain(broker, version):
    """[MQTT-3.3.1-9] (5.0: [MQTT-3.3.1-12], Retain As Published 0): a retained PUBLISH goes to
    established subscriptions with RETAIN 0."""
    with session(broker, "live-sub", version) as s, session(broker, "live-pub", version) as p:
        assert sub(s, [("live/t", 1)]) == [1]
        pub(p, "live/t", b"x", qos=1, retain=True)
        m = recv(s)
        assert (m.payload, m.retain) == (b"x", False)


@VERSIONS
def test_mqtt_3_3_1_10_and_11_empty_retained_message_clears(broker, version):
    """[MQTT-3.3.1-10] [MQTT-3.3.1-11] (5.0: [MQTT-3.3.1-6] [MQTT-3.3.1-7]): a zero-byte retained
    PUBLISH is delivered normally, clears the retained message and is not stored itself."""
    with session(broker, "clr-sub", version) as s, session(broker, "clr-pub", version) as p:
        pub(p, "clr/t", b"old", qos=1, retain=True)
        assert sub(s, [("clr/t", 1)]) == [1]
        assert recv(s).payload == b"old"
        pub(p, "clr/t", b"", qos=1, retain=True)
        m = recv(s)
        assert (m.payload, m.retain) == (b"", False)
    with session(broker, "clr-late", version) as late:
        assert sub(late, [("clr/t", 1), ("clr/end", 1)]) == [1, 1]
        assert marker(broker, late, "clr/end", version) == [], "an empty retained message was stored"


@VERSIONS
def test_mqtt_3_3_1_12_non_retained_publish_leaves_retained_alone(broker, version):
    """[MQTT-3.3.1-12] (5.0: [MQTT-3.3.1-8]): RETAIN 0 neither stores, replaces nor removes."""
    with session(broker, "keep-pub", version) as p:
        pub(p, "keep/t", b"kept", qos=1, retain=True)
        pub(p, "keep/t", b"live", qos=1)
        pub(p, "keep/t", b"", qos=1)
    with session(broker, "keep-sub", version) as s:
        assert sub(s, [("keep/t", 1)]) == [1]
        m = recv(s)
        assert (m.payload, m.retain) == (b"kept", True)


@VERSIONS
def test_mqtt_3_3_4_1_response_follows_qos(broker, version):
    """[MQTT-3.3.4-1] [MQTT-2.3.1-6] (5.0: [MQTT-4.3.2-4]): QoS 0 gets no answer, QoS 1 a PUBACK
    and QoS 2 a PUBREC with the PUBLISH's Packet Identifier, PUBREL a PUBCOMP."""
    with session(broker, "resp", version) as c:
        c.send(publish_with("resp/t", b"0", version))
        c.ping()  # nothing came before the PINGRESP
        c.send(publish_with("resp/t", b"1", version, qos=1, packet_id=0x0101))
        p = c.read_packet()
        assert (p.ptype, packet_id_of(p)) == (PUBACK, 0x0101), p
        c.send(publish_with("resp/t", b"2", version, qos=2, packet_id=0x0202))
        p = c.read_packet()
        assert (p.ptype, packet_id_of(p)) == (PUBREC, 0x0202), p
        c.send(ack_packet(PUBREL, 0x0202))
        p = c.read_packet()
        assert (p.ptype, packet_id_of(p)) == (PUBCOMP, 0x0202), p


def test_mqtt_3_3_5_1_overlap_delivers_once_at_the_highest_qos(broker):
    """[MQTT-3.3.5-1] (5.0: [MQTT-3.3.4-2]): overlapping subscriptions of one client get the
    message at the maximum of their QoS (berth sends one copy)."""
    with session(broker, "ov-sub") as s, session(broker, "ov-pub") as p:
        assert sub(s, [("ov/+", 0), ("ov/#", 2), ("ov/end", 1)]) == [0, 2, 1]
        pub(p, "ov/t", b"x", qos=2)
        pub(p, "ov/end", b"", qos=1)
        got = recv_until(s, "ov/end")
        assert [(m.payload, m.qos) for m in got] == [(b"x", 2)], got


@VERSIONS
def test_mqtt_3_6_1_1_pubrel_reserved_flags(broker, version):
    """[MQTT-3.6.1-1]: PUBREL flags must be 0010; 0000 is malformed."""
    raw = publish_with("rel/t", b"x", version, qos=2, packet_id=9) + bytes([0x60, 2, 0, 9])
    with Conn(*broker.addr, version=version) as c:
        c.connect("rel-flags")
        c.send_tolerating_close(raw)
        packets = c.read_until_closed()
    assert packets and packets[0].ptype == PUBREC, packets
    assert_rejected_after_connect(packets[1:], version, {0x81})


# --- 3.8 to 3.11 SUBSCRIBE / UNSUBSCRIBE -------------------------------------------------------------

def test_mqtt_3_8_3_1_filter_not_utf8_is_closed(broker):
    """[MQTT-3.8.3-1]: Topic Filters are UTF-8."""
    packets = misbehave_after_connect(broker, V311, "sub-utf8", subscribe_many([(b"a/\xff", 1)], V311))
    assert packets == []


def test_mqtt_3_8_3_3_subscribe_without_filters_is_closed(broker):
    """[MQTT-3.8.3-3] [MQTT-4.8.0-1]: a SUBSCRIBE without a filter is a protocol violation."""
    packets = misbehave_after_connect(broker, V311, "sub-empty", subscribe_many([], V311))
    assert packets == []


@pytest.mark.parametrize("options", [0x03, 0x41, 0x81], ids=["qos3", "bit6", "bit7"])
def test_mqtt_3_8_3_4_requested_qos_3_or_reserved_bits_is_closed(broker, options):
    """[MQTT-3.8.3-4]: requested QoS 3 or a reserved bit of the QoS byte is malformed."""
    packets = misbehave_after_connect(broker, V311, "sub-qos", subscribe_many([("t", options)], V311))
    assert packets == []


def test_mqtt_3_8_4_2_suback_has_the_packet_id(broker):
    """[MQTT-3.8.4-1] [MQTT-3.8.4-2] [MQTT-2.3.1-7]: SUBSCRIBE is answered by a SUBACK with its
    Packet Identifier."""
    with session(broker, "suback-id") as c:
        assert sub(c, [("s/t", 1)], packet_id=0xBEEF) == [1]
        assert sub(c, [("s/u", 0)], packet_id=1) == [0]


@VERSIONS
def test_mqtt_3_8_4_3_resubscribe_replaces_and_resends_retained(broker, version):
    """[MQTT-3.8.4-3] (5.0: also [MQTT-3.8.4-4]): subscribing to the same filter again replaces
    the subscription (new QoS, one copy per message) and re-sends the retained message."""
    with session(broker, "resub-sub", version) as s, session(broker, "resub-pub", version) as p:
        pub(p, "resub/t", b"ret", qos=1, retain=True)
        assert sub(s, [("resub/t", 1)]) == [1]
        assert (recv(s).qos) == 1
        assert sub(s, [("resub/t", 0)]) == [0]
        m = recv(s)
        assert (m.payload, m.qos, m.retain) == (b"ret", 0, True), "retained message re-sent at the new QoS"
        assert sub(s, [("resub/end", 1)]) == [1]
        pub(p, "resub/t", b"live", qos=1)
        pub(p, "resub/end", b"", qos=1)
        got = recv_until(s, "resub/end")
        assert [(m.payload, m.qos) for m in got] == [(b"live", 0)], got


def test_mqtt_3_8_4_4_several_filters_one_suback_in_order(broker):
    """[MQTT-3.8.4-4] [MQTT-3.8.4-5] [MQTT-3.9.3-1] [MQTT-3.9.3-2]: one SUBACK, a return code per
    filter in their order: the granted QoS or 0x80."""
    with session(broker, "multi") as c:
        assert sub(c, [("m/2", 2), ("m/#/bad", 1), ("m/0", 0), ("m/+", 1)], packet_id=7) == [2, 0x80, 0, 1]
        c.ping()  # exactly one SUBACK came


def test_mqtt_3_8_4_6_delivery_at_the_lower_of_published_and_granted_qos(broker):
    """[MQTT-3.8.4-6] (5.0: [MQTT-3.8.4-8]): messages go out at min(published, granted) QoS."""
    with session(broker, "minq-sub") as s, session(broker, "minq-pub") as p:
        assert sub(s, [("minq/t", 1)]) == [1]
        for q in (2, 1, 0):
            pub(p, "minq/t", b"%d" % q, qos=q)
        got = [recv(s) for _ in range(3)]
        assert [(m.payload, m.qos) for m in got] == [(b"2", 1), (b"1", 1), (b"0", 0)], got


@VERSIONS
def test_mqtt_3_10_1_1_unsubscribe_reserved_flags(broker, version):
    """[MQTT-3.10.1-1]: UNSUBSCRIBE flags must be 0010; 0000 is malformed."""
    packets = misbehave_after_connect(broker, version, "unsub-flags", unsubscribe(["t"], version, first_byte=0xA0))
    assert_rejected_after_connect(packets, version, {0x81})


def test_mqtt_3_10_3_1_unsubscribe_filter_not_utf8_is_closed(broker):
    """[MQTT-3.10.3-1]: UNSUBSCRIBE Topic Filters are UTF-8."""
    packets = misbehave_after_connect(broker, V311, "unsub-utf8", unsubscribe([b"a/\xff"], V311))
    assert packets == []


def test_mqtt_3_10_3_2_unsubscribe_without_filters_is_closed(broker):
    """[MQTT-3.10.3-2]: an UNSUBSCRIBE without a filter is a protocol violation."""
    packets = misbehave_after_connect(broker, V311, "unsub-empty", unsubscribe([], V311))
    assert packets == []


def test_mqtt_3_10_4_1_unsubscribe_matches_filters_exactly(broker):
    """[MQTT-3.10.4-1] [MQTT-3.10.4-2] [MQTT-3.10.4-6]: filters are compared character by
    character (no wildcard matching); several filters get one UNSUBACK; deleted subscriptions
    get no new messages."""
    with session(broker, "unsub-sub") as s, session(broker, "unsub-pub") as p:
        assert sub(s, [("u/+", 1), ("u/a", 1), ("u/end", 1)]) == [1, 1, 1]
        s.send(unsubscribe(["u/#", "u/+", "U/a"], V311, packet_id=5))
        assert ack_codes(s.read_packet(), UNSUBACK, 5, V311) == []
        s.ping()  # exactly one UNSUBACK
        pub(p, "u/a", b"still", qos=1)
        pub(p, "u/b", b"gone", qos=1)
        pub(p, "u/end", b"", qos=1)
        got = recv_until(s, "u/end")
        assert [m.payload for m in got] == [b"still"], got


def test_mqtt_3_10_4_3_started_delivery_completes_after_unsubscribe(broker):
    """[MQTT-3.10.4-3]: a QoS 2 delivery started before UNSUBSCRIBE is completed after it."""
    with session(broker, "unsub2-sub") as s, session(broker, "unsub2-pub") as p:
        assert sub(s, [("u2/t", 2)]) == [2]
        pub(p, "u2/t", b"x", qos=2)
        m = recv(s, ack=False)
        s.send(unsubscribe(["u2/t"], V311, packet_id=3))
        assert ack_codes(s.read_packet(), UNSUBACK, 3, V311) == []
        s.send(ack_packet(PUBREC, m.packet_id))
        rel = s.read_packet()
        assert (rel.ptype, rel.flags, packet_id_of(rel)) == (PUBREL, 2, m.packet_id), rel
        s.send(ack_packet(PUBCOMP, m.packet_id))
        s.ping()


def test_mqtt_3_10_4_4_unsuback_has_the_packet_id(broker):
    """[MQTT-3.10.4-4] [MQTT-3.10.4-5] [MQTT-2.3.1-7]: UNSUBACK with the UNSUBSCRIBE's Packet
    Identifier, even when no subscription was deleted."""
    with session(broker, "unsuback") as c:
        c.send(unsubscribe(["never/subscribed"], V311, packet_id=0x4321))
        p = c.read_packet()
        assert ack_codes(p, UNSUBACK, 0x4321, V311) == [] and len(p.body) == 2, p


# --- 3.14 DISCONNECT, 4.3 QoS flows, 4.6 ordering, 4.7 topics ---------------------------------------

def test_mqtt_3_14_1_1_disconnect_reserved_flags(broker):
    """[MQTT-3.14.1-1] [MQTT-2.2.2-2]: a DISCONNECT with reserved bits set is not a normal
    DISCONNECT: the connection is closed and the Will is published."""
    with session(broker, "discflags-sub") as s:
        assert sub(s, [("discflags/w", 1)]) == [1]
        w = connect_with_will(broker, "discflags", V311, "discflags/w", b"will")
        w.send_tolerating_close(b"\xe1\x00")
        assert w.read_until_closed() == []
        assert recv(s).payload == b"will"


@VERSIONS
def test_mqtt_4_3_2_2_same_packet_id_after_puback_is_a_new_message(broker, version):
    """[MQTT-4.3.2-2] (5.0: [MQTT-4.3.2-5]): once PUBACK is sent, a PUBLISH with the same Packet
    Identifier, DUP or not, is a new message."""
    with session(broker, "q1id-sub", version) as s, session(broker, "q1id-pub", version) as p:
        assert sub(s, [("q1id/t", 1)]) == [1]
        pub(p, "q1id/t", b"one", qos=1, packet_id=3)
        pub(p, "q1id/t", b"two", qos=1, packet_id=3, dup=True)
        assert [recv(s).payload, recv(s).payload] == [b"one", b"two"]


@VERSIONS
def test_mqtt_4_3_3_1_server_qos2_sender_flow(broker, version):
    """[MQTT-4.3.3-1] (5.0: [MQTT-4.3.3-1..4]): the Server sends QoS 2 with DUP 0 and a packet
    id, answers PUBREC with PUBREL (same id), and does not re-send the PUBLISH after it."""
    with session(broker, "q2s-sub", version) as s, session(broker, "q2s-pub", version) as p:
        assert sub(s, [("q2s/t", 2)]) == [2]
        pub(p, "q2s/t", b"x", qos=2)
        m = recv(s, ack=False)
        assert (m.qos, m.dup) == (2, False) and m.packet_id, m
        s.send(ack_packet(PUBREC, m.packet_id))
        rel = s.read_packet()
        assert (rel.ptype, rel.flags, packet_id_of(rel)) == (PUBREL, 2, m.packet_id), rel
        s.send(ack_packet(PUBCOMP, m.packet_id))
        s.ping()
        s.assert_quiet_for(0.3)


@VERSIONS
def test_mqtt_4_3_3_2_qos2_receiver(broker, version):
    """[MQTT-4.3.3-2] (5.0: [MQTT-4.3.3-8] [MQTT-4.3.3-10..12]): PUBREC with the id; the same
    PUBLISH before PUBREL is acknowledged again but delivered once; PUBREL gets PUBCOMP; after
    PUBCOMP the id starts a new message."""
    with session(broker, "q2r-sub", version) as s, session(broker, "q2r-pub", version) as p:
        assert sub(s, [("q2r/t", 2), ("q2r/end", 1)]) == [2, 1]
        for dup in (False, True):
            p.send(publish_with("q2r/t", b"once", version, qos=2, packet_id=5, dup=dup))
            r = p.read_packet()
            assert (r.ptype, packet_id_of(r)) == (PUBREC, 5), r
        p.send(ack_packet(PUBREL, 5))
        r = p.read_packet()
        assert (r.ptype, packet_id_of(r)) == (PUBCOMP, 5), r
        pub(p, "q2r/t", b"new", qos=2, packet_id=5)
        pub(p, "q2r/end", b"", qos=1)
        got = recv_until(s, "q2r/end")
        assert [m.payload for m in got] == [b"once", b"new"], got


@VERSIONS
def test_mqtt_4_6_0_6_messages_keep_the_publishers_order(broker, version):
    """[MQTT-4.6.0-5] [MQTT-4.6.0-6]: messages of one publisher reach a subscriber in the order
    they were published, at every QoS, with publishes pipelined (not waiting for acks)."""
    with session(broker, "ord-sub", version) as s, session(broker, "ord-pub", version) as p:
        assert sub(s, [("ord/#", 2)]) == [2]
        for qos in (0, 1, 2):
            raw = b"".join(publish_with(f"ord/{qos}", b"%d" % i, version, qos=qos, packet_id=i + 1 if qos else None)
                           for i in range(100))
            p.send(raw)
            for i in range(100):
                if qos:
                    r = p.read_packet()
                    if qos == 2:
                        p.send(ack_packet(PUBREL, packet_id_of(r)))
            if qos == 2:
                for i in range(100):
                    assert p.read_packet().ptype == PUBCOMP
            got = [recv(s) for _ in range(100)]
            assert [m.payload for m in got] == [b"%d" % i for i in range(100)], f"QoS {qos}: {got[:5]}..."


@VERSIONS
def test_mqtt_4_7_3_1_empty_topic_name_or_filter_is_refused(broker, version):
    """[MQTT-4.7.3-1]: a PUBLISH with an empty Topic Name (5.0: and no Topic Alias) and a
    SUBSCRIBE with an empty Topic Filter are refused and the connection closed (5.0: DISCONNECT
    0x81/0x82, or 0x8F Topic Filter invalid)."""
    packets = misbehave_after_connect(broker, version, "empty-topic", publish_with("", b"x", version))
    assert_rejected_after_connect(packets, version, {0x81, 0x82})
    with Conn(*broker.addr, version=version) as c:
        c.connect("empty-filter")
        c.send_tolerating_close(subscribe_many([("", 1)], version, packet_id=2))
        packets = c.read_until_closed()
    assert_rejected_after_connect(packets, version, {0x81, 0x82, 0x8F})


@VERSIONS
def test_mqtt_4_7_3_4_matching_is_byte_for_byte(broker, version):
    """[MQTT-4.7.3-4]: no normalisation: case, and composed vs decomposed characters, differ."""
    with session(broker, "norm-sub", version) as s, session(broker, "norm-pub", version) as p:
        assert sub(s, [("Norm/\u00dc/+", 1), ("norm/end", 1)]) == [1, 1]
        for topic in ("norm/\u00dc/x", "Norm/U\u0308/x", "NORM/\u00dc/x", "Norm/\u00fc/x", "Norm/\u00dc/x"):
            pub(p, topic, topic.encode(), qos=1)
        pub(p, "norm/end", b"", qos=1)
        got = recv_until(s, "norm/end")
        assert [m.topic for m in got] == ["Norm/\u00dc/x"], got
