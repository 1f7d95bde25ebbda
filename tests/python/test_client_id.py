"""Empty client identifiers, MQTT 3.1.1 and 5.0."""

from collections import Counter

from berthproc import CONNACK_DEBUG
from clients import Paho
from mqttwire import ASSIGNED_CLIENT_IDENTIFIER, V5, V311, Conn, connect, owner_core


def test_mqtt_3_1_3_7_v5_empty_client_id_gets_assigned_id_on_accepting_core(start_broker):
    """[MQTT-3.1.3-6]/[MQTT-3.1.3-7] (5.0): an empty ClientID is given a unique one, returned as
    Assigned Client Identifier. berth picks it so that it hashes to the accepting core: no hand-off."""
    broker = start_broker(CONNACK_DEBUG)
    assigned, accepted_on = set(), Counter()
    for attempt in range(24):
        with Conn(*broker.addr) as c:
            ack = c.connect("")
            cid = ack.props.get(ASSIGNED_CLIENT_IDENTIFIER)
            assert cid, f"attempt {attempt}: no Assigned Client Identifier in {ack!r}"
            shard = ack.user_properties.get("berth-shard")
            acc = ack.user_properties.get("berth-accepted-on")
            assert shard == acc, f"empty id was handed off: shard {shard}, accepted on {acc}"
            assert shard == str(owner_core(cid, 2)), f"assigned id {cid!r} hashes to core {owner_core(cid, 2)}, shard {shard}"
            assert cid not in assigned, f"assigned id {cid!r} handed out twice"
            assigned.add(cid)
            accepted_on[acc] += 1
            c.ping()
    assert set(accepted_on) == {"0", "1"}, f"only these cores accepted: {dict(accepted_on)}"


def test_mqtt_3_1_3_7_v5_empty_client_id_with_paho(start_broker):
    broker = start_broker(CONNACK_DEBUG)
    client = Paho("", V5)
    _, rc, props = client.connect(broker.addr)
    assert rc.value == 0, rc
    cid = getattr(props, "AssignedClientIdentifier", None)
    assert cid, f"paho saw no Assigned Client Identifier: {props}"
    assert client.user_properties().get("berth-shard") == str(owner_core(cid, 2))
    client.disconnect()


def test_mqtt_3_1_3_6_v311_empty_client_id_clean_session_accepted(broker):
    """[MQTT-3.1.3-6] (3.1.1): a zero-byte ClientId with CleanSession 1 is accepted."""
    for _ in range(6):  # both cores accept some of these
        with Conn(*broker.addr, version=V311) as c:
            c.send(connect("", V311, clean=True))
            p = c.read_packet()
            assert (p.ptype, p.body) == (2, b"\x00\x00"), p
            c.ping()


def test_mqtt_3_1_3_8_v311_empty_client_id_persistent_session_rejected(broker):
    """[MQTT-3.1.3-8] (3.1.1): zero-byte ClientId with CleanSession 0 -> CONNACK 0x02, then close."""
    for _ in range(6):
        with Conn(*broker.addr, version=V311) as c:
            c.send(connect("", V311, clean=False))
            packets = c.read_until_closed()
            assert [(p.ptype, p.body) for p in packets] == [(2, b"\x00\x02")], packets
