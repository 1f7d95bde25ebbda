"""Malformed and out-of-order input, sent as raw bytes.

The contract: after a valid CONNECT a 5.0 connection gets DISCONNECT with the reason code and is
closed, a 3.1.1 connection is just closed; a malformed 5.0 CONNECT gets CONNACK 0x81/0x82 and
is closed. Each test names the rule it checks (5.0 numbering unless it says 3.1.1, whose numbers
differ) and also checks that well-behaved clients connected beforehand, one of them owned by the
same core as the bad client, still get PINGRESP afterwards, and that the bad client's id can
connect again.
"""

import time

import pytest

from clients import Neighbours
from mqttwire import (MAXIMUM_PACKET_SIZE, PINGREQ_BYTES, SESSION_EXPIRY_INTERVAL, V5, V311, Conn, connect,
                      disconnect_reason, ids_owned_by, mqtt_str, parse_connack, prop_u32, properties,
                      publish, subscribe, vbi)

VERSIONS = pytest.mark.parametrize("version", [V311, V5], ids=["v311", "v5"])


@pytest.fixture(params=[0, 1], ids=["owner0", "owner1"])
def bad_id(request):
    """A client id owned by core 0 or core 1 for the misbehaving client."""
    return ids_owned_by(request.param, 2, "bad-" + request.node.originalname)[0]


@pytest.fixture
def bystanders(broker, request):
    n = Neighbours(broker.addr, request.node.originalname)
    yield n
    n.close()


def assert_unharmed(broker, bystanders: Neighbours, bad_id: str | None = None) -> None:
    assert broker.alive(), f"broker died\n{broker.describe()}"
    bystanders.assert_alive()
    if bad_id is not None:
        for version in (V311, V5):
            with Conn(*broker.addr, version=version) as c:
                c.connect(bad_id)
                c.ping()


def misbehave_after_connect(broker, version: int, cid: str, bad: bytes) -> list:
    """Connect properly, send `bad`, and return everything received until the broker closes."""
    with Conn(*broker.addr, version=version) as c:
        c.connect(cid)
        c.send_tolerating_close(bad)
        return c.read_until_closed()


def misbehave_before_connect(broker, version: int, bad: bytes) -> list:
    with Conn(*broker.addr, version=version) as c:
        c.send_tolerating_close(bad)
        return c.read_until_closed()


def assert_rejected_after_connect(packets: list, version: int, v5_codes: set[int]) -> None:
    if version == V311:
        assert packets == [], f"3.1.1 connection should be closed without a packet, got {packets!r}"
    else:
        codes = [disconnect_reason(p) for p in packets]
        assert len(codes) == 1 and codes[0] in v5_codes, \
            f"expected one DISCONNECT with reason in {[hex(c) for c in v5_codes]}, got {packets!r}"


def assert_connack_then_close(packets: list, version: int, v5_codes: set[int]) -> None:
    if version == V311:
        assert packets == [], f"3.1.1 connection should be closed without a packet, got {packets!r}"
    else:
        assert len(packets) == 1, f"expected one CONNACK then close, got {packets!r}"
        ack = parse_connack(packets[0], V5)
        assert ack.code in v5_codes, f"CONNACK code {ack.code:#x}, expected one of {[hex(c) for c in v5_codes]}"


# --- CONNECT itself --------------------------------------------------------------------------

@pytest.mark.parametrize("level", [6, 7, 255])
def test_mqtt_3_1_2_2_unsupported_protocol_level(broker, bystanders, bad_id, level):
    """[MQTT-3.1.2-2] (3.1.1): an unsupported protocol level gets CONNACK 0x01, then close."""
    packets = misbehave_before_connect(broker, V311, connect(bad_id, V311, level=level))
    assert [(p.ptype, p.flags, p.body) for p in packets] == [(2, 0, b"\x00\x01")], packets
    assert_unharmed(broker, bystanders, bad_id)


HTTP_GET = b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: berth-tests\r\n\r\n"


@pytest.mark.parametrize("first", [PINGREQ_BYTES, publish("t", b"x", V311), subscribe("t", V311),
                                   b"\xe0\x00", HTTP_GET],
                         ids=["pingreq", "publish", "subscribe", "disconnect", "http"])
def test_mqtt_3_1_0_1_first_packet_must_be_connect(broker, bystanders, first):
    """[MQTT-3.1.0-1]: the first packet must be CONNECT; anything else is closed, unanswered."""
    packets = misbehave_before_connect(broker, V311, first)
    assert packets == [], f"expected a silent close, got {packets!r}"
    assert_unharmed(broker, bystanders)


@VERSIONS
def test_mqtt_3_1_0_2_second_connect(broker, bystanders, bad_id, version):
    """[MQTT-3.1.0-2]: a second CONNECT is a Protocol Error (5.0: DISCONNECT 0x82) and closes."""
    packets = misbehave_after_connect(broker, version, bad_id, connect(bad_id, version))
    assert_rejected_after_connect(packets, version, {0x82})
    assert_unharmed(broker, bystanders, bad_id)


@VERSIONS
def test_mqtt_3_1_2_3_connect_reserved_flag(broker, bystanders, bad_id, version):
    """[MQTT-3.1.2-3]: the CONNECT reserved flag must be 0; else Malformed (5.0: CONNACK 0x81)."""
    packets = misbehave_before_connect(broker, version, connect(bad_id, version, flags=0x03))
    assert_connack_then_close(packets, version, {0x81, 0x82})
    assert_unharmed(broker, bystanders, bad_id)


@VERSIONS
def test_mqtt_3_1_2_12_will_qos_3(broker, bystanders, bad_id, version):
    """[MQTT-3.1.2-12] (3.1.1: [MQTT-3.1.2-14]): Will QoS 3 is Malformed."""
    will = (b"\x00" if version == V5 else b"") + mqtt_str("will/topic") + mqtt_str(b"bye")
    bad = connect(bad_id, version, flags=0x02 | 0x04 | 0x18, payload_extra=will)
    packets = misbehave_before_connect(broker, version, bad)
    assert_connack_then_close(packets, version, {0x81, 0x82})
    assert_unharmed(broker, bystanders, bad_id)


def test_mqtt_3_1_2_11_v5_connect_property_twice(broker, bystanders, bad_id):
    """3.1.2.11: including Session Expiry Interval more than once is a Protocol Error."""
    props = properties(prop_u32(SESSION_EXPIRY_INTERVAL, 10), prop_u32(SESSION_EXPIRY_INTERVAL, 10))
    packets = misbehave_before_connect(broker, V5, connect(bad_id, V5, props=props))
    assert_connack_then_close(packets, V5, {0x81, 0x82})
    assert_unharmed(broker, bystanders, bad_id)


def test_mqtt_2_2_2_v5_connect_property_length_overruns_packet(broker, bystanders, bad_id):
    """2.2.2: a property length pointing past the end of the packet is Malformed."""
    props = vbi(60) + prop_u32(SESSION_EXPIRY_INTERVAL, 10)
    packets = misbehave_before_connect(broker, V5, connect(bad_id, V5, props=props))
    assert_connack_then_close(packets, V5, {0x81, 0x82})
    assert_unharmed(broker, bystanders, bad_id)


# --- after a valid CONNECT -------------------------------------------------------------------

@VERSIONS
def test_mqtt_2_1_3_1_reserved_fixed_header_flags(broker, bystanders, bad_id, version):
    """[MQTT-2.1.3-1] (3.1.1: [MQTT-2.2.2-2]): PINGREQ with flag bits set is Malformed."""
    packets = misbehave_after_connect(broker, version, bad_id, b"\xc1\x00")
    assert_rejected_after_connect(packets, version, {0x81})
    assert_unharmed(broker, bystanders, bad_id)


@VERSIONS
def test_mqtt_3_8_1_1_subscribe_reserved_flags(broker, bystanders, bad_id, version):
    """[MQTT-3.8.1-1]: SUBSCRIBE fixed-header flags must be 0010; 0000 is Malformed."""
    packets = misbehave_after_connect(broker, version, bad_id, subscribe("t", version, first_byte=0x80))
    assert_rejected_after_connect(packets, version, {0x81})
    assert_unharmed(broker, bystanders, bad_id)


@VERSIONS
def test_mqtt_2_1_4_remaining_length_over_four_bytes(broker, bystanders, bad_id, version):
    """2.1.4 (3.1.1: 2.2.3): a Remaining Length takes at most four bytes; a fifth is Malformed."""
    packets = misbehave_after_connect(broker, version, bad_id, b"\xc0\xff\xff\xff\xff\x01")
    assert_rejected_after_connect(packets, version, {0x81})
    assert_unharmed(broker, bystanders, bad_id)


@VERSIONS
def test_mqtt_2_1_2_reserved_packet_type_0(broker, bystanders, bad_id, version):
    """2.1.2: control packet type 0 is reserved and forbidden."""
    packets = misbehave_after_connect(broker, version, bad_id, b"\x00\x00")
    assert_rejected_after_connect(packets, version, {0x81, 0x82})
    assert_unharmed(broker, bystanders, bad_id)


@VERSIONS
def test_mqtt_1_5_4_1_topic_not_utf8(broker, bystanders, bad_id, version):
    """[MQTT-1.5.4-1] (3.1.1: [MQTT-1.5.3-1]): ill-formed UTF-8 in a topic is Malformed."""
    packets = misbehave_after_connect(broker, version, bad_id, publish(b"a/\xff\xfe", b"x", version))
    assert_rejected_after_connect(packets, version, {0x81})
    assert_unharmed(broker, bystanders, bad_id)


@VERSIONS
def test_mqtt_1_5_4_2_topic_contains_null(broker, bystanders, bad_id, version):
    """[MQTT-1.5.4-2] (3.1.1: [MQTT-1.5.3-2]): U+0000 in a UTF-8 string is Malformed."""
    packets = misbehave_after_connect(broker, version, bad_id, publish(b"a/\x00/b", b"x", version))
    assert_rejected_after_connect(packets, version, {0x81})
    assert_unharmed(broker, bystanders, bad_id)


@VERSIONS
@pytest.mark.parametrize("topic", ["a/+/b", "a/#", "#"])
def test_mqtt_3_3_2_2_topic_name_with_wildcard(broker, bystanders, bad_id, version, topic):
    """[MQTT-3.3.2-2]: a PUBLISH Topic Name must not contain wildcards (5.0: DISCONNECT 0x90)."""
    packets = misbehave_after_connect(broker, version, bad_id, publish(topic, b"x", version))
    assert_rejected_after_connect(packets, version, {0x90})
    assert_unharmed(broker, bystanders, bad_id)


@VERSIONS
def test_mqtt_3_3_1_4_publish_qos_3(broker, bystanders, bad_id, version):
    """[MQTT-3.3.1-4]: a PUBLISH with both QoS bits set is Malformed."""
    packets = misbehave_after_connect(broker, version, bad_id, publish("t", b"x", version, first_byte=0x36, packet_id=1))
    assert_rejected_after_connect(packets, version, {0x81})
    assert_unharmed(broker, bystanders, bad_id)


# --- limits ----------------------------------------------------------------------------------

MAX_PACKET = 1024


def publish_of_total_size(total: int, version: int) -> bytes:
    """A QoS 0 PUBLISH exactly `total` bytes long on the wire (fixed header included)."""
    overhead = 2 + len("big") + (1 if version == V5 else 0)
    payload_len = total - 1 - overhead
    while 1 + len(vbi(overhead + payload_len)) + overhead + payload_len > total:
        payload_len -= 1
    p = publish("big", b"p" * payload_len, version)
    assert len(p) == total
    return p


@VERSIONS
def test_mqtt_3_2_2_15_packet_too_large(start_broker, request, bad_id, version):
    """[MQTT-3.2.2-15] and 3.2.2.3.6: with --max-packet-size the v5 CONNACK carries Maximum
    Packet Size; a packet of exactly that size is accepted, one byte more gets DISCONNECT 0x95."""
    broker = start_broker("--max-packet-size", str(MAX_PACKET))
    bystanders = Neighbours(broker.addr, request.node.originalname)
    with Conn(*broker.addr, version=version) as c:
        ack = c.connect(bad_id)
        if version == V5:
            assert ack.props.get(MAXIMUM_PACKET_SIZE) == MAX_PACKET, ack
        c.send(publish_of_total_size(MAX_PACKET, version))
        c.ping()
        c.send_tolerating_close(publish_of_total_size(MAX_PACKET + 1, version))
        packets = c.read_until_closed()
    assert_rejected_after_connect(packets, version, {0x95})
    assert_unharmed(broker, bystanders, bad_id)
    bystanders.close()


CONNECT_TIMEOUT = 1


@pytest.mark.parametrize("sent", [b"", connect("half-connect", V5)[:7]], ids=["silent", "partial-connect"])
def test_connect_timeout_closes_connection(start_broker, request, sent):
    """3.1 (non-normative): a connection that sends no complete CONNECT within --connect-timeout
    is closed; clients that did connect are not subject to it."""
    broker = start_broker("--connect-timeout", str(CONNECT_TIMEOUT))
    bystanders = Neighbours(broker.addr, request.node.originalname)
    with Conn(*broker.addr) as c:
        start = time.monotonic()
        c.send(sent)
        packets = c.read_until_closed(timeout=CONNECT_TIMEOUT + 4)
        delay = time.monotonic() - start
    assert packets == [], packets
    assert CONNECT_TIMEOUT * 0.8 <= delay <= CONNECT_TIMEOUT + 2, f"closed after {delay:.2f}s"
    assert_unharmed(broker, bystanders)
    bystanders.close()
