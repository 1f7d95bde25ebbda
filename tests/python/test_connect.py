"""Connect, ping and disconnect with paho-mqtt and with raw bytes, MQTT 3.1.1 and 5.0."""

import pytest

from berthproc import CONNACK_DEBUG
from clients import Paho
from mqttwire import (MAXIMUM_PACKET_SIZE, RECEIVE_MAXIMUM, RETAIN_AVAILABLE, TOPIC_ALIAS_MAXIMUM, V5,
                      V311, Conn, PINGREQ_BYTES, PINGRESP, owner_core)
from mqttwire import connect as connect_packet


@pytest.mark.parametrize("version", [V311, V5], ids=["v311", "v5"])
def test_paho_connect_ping_disconnect(broker, version):
    client = Paho(f"paho-basic-{version}", version)
    flags, rc, props = client.connect(broker.addr, keepalive=1)
    assert rc.value == 0, f"CONNACK reason {rc}"
    assert flags.session_present is False
    # keepalive=1: paho sends PINGREQ after a second of silence; the broker must answer.
    client.loop_until(lambda: "Received PINGRESP" in client.log, 5.0, "PINGRESP")
    assert client.disconnected is None, f"broker dropped the client: {client.disconnected}"
    client.disconnect()


def test_paho_v5_connack_names_owner_core(start_broker):
    broker = start_broker(CONNACK_DEBUG)
    cid = "paho-owner-check"
    client = Paho(cid, V5)
    client.connect(broker.addr)
    props = client.user_properties()
    assert props.get("berth-shard") == str(owner_core(cid, 2)), props
    assert props.get("berth-accepted-on") in {"0", "1"}, props
    client.disconnect()


def test_mqtt_3_2_2_1_v311_clean_session_connack(broker):
    """[MQTT-3.2.2-1] Clean Session 1 -> Session Present 0; the whole CONNACK is 20 02 00 00."""
    with Conn(*broker.addr, version=V311) as c:
        c.send(connect_packet("raw-v311", V311, clean=True))
        p = c.read_packet()
        assert (p.ptype, p.flags, p.body) == (2, 0, b"\x00\x00"), p


def test_mqtt_3_2_2_2_v5_clean_start_connack_properties(start_broker):
    """[MQTT-3.2.2-2] Clean Start 1 -> Session Present 0; berth's CONNACK properties are present."""
    broker = start_broker(CONNACK_DEBUG)
    cid = "raw-v5-props"
    with Conn(*broker.addr) as c:
        ack = c.connect(cid)
        assert ack.session_present is False
        assert ack.props.get(RECEIVE_MAXIMUM, 0) > 0, ack
        assert TOPIC_ALIAS_MAXIMUM in ack.props, ack
        assert RETAIN_AVAILABLE in ack.props, ack
        assert MAXIMUM_PACKET_SIZE not in ack.props or ack.props[MAXIMUM_PACKET_SIZE] > 0, ack
        assert ack.user_properties.get("berth-shard") == str(owner_core(cid, 2)), ack
        c.ping()


@pytest.mark.parametrize("version", [V311, V5], ids=["v311", "v5"])
def test_mqtt_3_12_4_1_pingresp(broker, version):
    """[MQTT-3.12.4-1] The Server MUST send a PINGRESP in response to a PINGREQ, one for each,
    also when several arrive in one segment."""
    with Conn(*broker.addr, version=version) as c:
        c.connect(f"raw-ping-{version}")
        c.ping()
        c.send(PINGREQ_BYTES * 5)
        for _ in range(5):
            p = c.read_packet()
            assert (p.ptype, p.body) == (PINGRESP, b""), p
        c.assert_quiet_for(0.2)


@pytest.mark.parametrize("version,disconnect", [(V311, b"\xe0\x00"), (V5, b"\xe0\x01\x00")],
                         ids=["v311", "v5"])
def test_mqtt_3_14_4_3_server_closes_after_disconnect(broker, version, disconnect):
    """[MQTT-3.14.4-3] On DISCONNECT the Server closes the connection; it sends nothing back."""
    with Conn(*broker.addr, version=version) as c:
        c.connect(f"raw-disconnect-{version}")
        c.send(disconnect)
        assert c.read_until_closed() == []
    # The client id is free again.
    with Conn(*broker.addr, version=version) as c:
        c.connect(f"raw-disconnect-{version}")
        c.ping()
