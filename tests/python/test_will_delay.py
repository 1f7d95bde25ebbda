"""v5 Will Delay Interval (MQTT 5.0 3.1.3.2.2) across cores: the will waits for its delay, a
reconnect before then cancels it [MQTT-3.1.3-9], and the end of the session publishes it
early. The client with the will and the subscriber live on different cores."""

from __future__ import annotations

import socket
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from clients import Paho
from mqttwire import V5, Conn, ids_owned_by, subscribe

PUBLISH = 3


def will_client(client_id: str, delay: int, expiry: int) -> Paho:
    c = Paho(client_id, V5, clean=False)
    will_props = Properties(PacketTypes.WILLMESSAGE)
    will_props.WillDelayInterval = delay
    c.client.will_set(f"will/{client_id}", b"gone", qos=1, properties=will_props)
    return c


def connect_with(c: Paho, addr, expiry: int):
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = expiry
    host, port = addr
    c.client.connect(host, port, keepalive=60, clean_start=False, properties=props)
    c.loop_until(lambda: c.connack is not None, 5, "CONNACK")


def drop(c: Paho) -> None:
    """Ends the connection without DISCONNECT, as a lost network would."""
    c.client.socket().shutdown(socket.SHUT_RDWR)


def watcher(addr, topic: str) -> Conn:
    w = Conn(*addr, version=V5)
    w.connect(ids_owned_by(1, 2, "will-watch-", 1)[0])
    w.send(subscribe(topic, V5, first_byte=0x82, packet_id=1))
    assert w.read_packet().ptype == 9
    return w


def test_will_waits_for_its_delay(broker):
    cid = ids_owned_by(0, 2, "will-delay-", 1)[0]
    w = watcher(broker.addr, f"will/{cid}")
    c = will_client(cid, delay=2, expiry=60)
    connect_with(c, broker.addr, 60)
    dropped = time.monotonic()
    drop(c)
    p = w.read_packet(timeout=10)
    waited = time.monotonic() - dropped
    assert p.ptype == PUBLISH and p.body.endswith(b"gone"), p
    assert waited >= 1.5, f"will published after {waited:.2f}s, before its 2 s delay"


def test_mqtt_3_1_3_9_reconnect_before_the_delay_cancels_the_will(broker):
    cid = ids_owned_by(0, 2, "will-cancel-", 1)[0]
    w = watcher(broker.addr, f"will/{cid}")
    c = will_client(cid, delay=2, expiry=60)
    connect_with(c, broker.addr, 60)
    drop(c)
    again = Paho(cid, V5, clean=False)
    connect_with(again, broker.addr, 60)
    assert again.connack[0].session_present
    w.assert_quiet_for(3)  # past the delay: no will
    again.disconnect()


def test_session_end_publishes_the_will_before_its_delay(broker):
    cid = ids_owned_by(0, 2, "will-expiry-", 1)[0]
    w = watcher(broker.addr, f"will/{cid}")
    c = will_client(cid, delay=30, expiry=1)
    connect_with(c, broker.addr, 1)
    dropped = time.monotonic()
    drop(c)
    p = w.read_packet(timeout=10)
    waited = time.monotonic() - dropped
    assert p.ptype == PUBLISH and p.body.endswith(b"gone"), p
    assert waited < 10, f"will came after {waited:.1f}s, not at the 1 s session expiry"
