"""Session takeover: a second CONNECT with a connected client's id closes the first connection."""

import pytest

from clients import Paho
from mqttwire import V5, V311, Conn, disconnect_reason

ROUNDS = 8  # each new connection may be accepted on either core; the owner is always the same


def test_mqtt_3_1_4_3_v5_takeover_sends_0x8e(broker):
    """[MQTT-3.1.4-3] (5.0): the existing client gets DISCONNECT 0x8E (Session taken over) and is
    closed; the new one works."""
    cid = "takeover-v5"
    old = Conn(*broker.addr)
    old.connect(cid)
    for r in range(ROUNDS):
        new = Conn(*broker.addr)
        new.connect(cid)
        packets = old.read_until_closed()
        assert len(packets) == 1 and disconnect_reason(packets[0]) == 0x8E, \
            f"round {r}: old connection got {packets!r}, expected DISCONNECT 0x8E"
        old.close()
        new.ping()
        old = new
    old.close()


def test_mqtt_3_1_4_2_v311_takeover_closes_old_connection(broker):
    """[MQTT-3.1.4-2] (3.1.1): the Server MUST disconnect the existing Client (no DISCONNECT
    packet exists for a 3.1.1 server to send)."""
    cid = "takeover-v311"
    old = Conn(*broker.addr, version=V311)
    old.connect(cid)
    for r in range(ROUNDS):
        new = Conn(*broker.addr, version=V311)
        new.connect(cid)
        assert old.read_until_closed() == [], f"round {r}: old 3.1.1 connection got packets"
        old.close()
        new.ping()
        old = new
    old.close()


@pytest.mark.parametrize("first,second", [(V311, V5), (V5, V311)], ids=["v311-then-v5", "v5-then-v311"])
def test_takeover_across_protocol_versions(broker, first, second):
    cid = f"takeover-mixed-{first}"
    old = Conn(*broker.addr, version=first)
    old.connect(cid)
    with Conn(*broker.addr, version=second) as new:
        new.connect(cid)
        packets = old.read_until_closed()
        if first == V5:
            assert [disconnect_reason(p) for p in packets] == [0x8E], packets
        else:
            assert packets == [], packets
        new.ping()
    old.close()


def test_takeover_seen_by_paho(broker):
    cid = "takeover-paho"
    first = Paho(cid, V5)
    first.connect(broker.addr)
    second = Paho(cid, V5)
    _, rc, _ = second.connect(broker.addr)
    assert rc.value == 0, rc
    first.loop_until(lambda: first.disconnected is not None, 5.0, "DISCONNECT of the taken-over session")
    assert first.disconnected[1].value == 0x8E, f"paho saw {first.disconnected[1]}"
    second.client.loop(0.05)
    assert second.disconnected is None, f"new session was dropped: {second.disconnected}"
    second.disconnect()
