"""What crosses between berth nodes besides plain publishes (README "Cluster (preview)"): a will
published when its client drops uncleanly on one node reaches a subscriber on the other; a
retained message published on one node is sent to a later subscriber on the other, a retained
clear clears it on every node, and a node that was down gets the retained messages it missed
when it comes back (KV bucket `berth_retained`)."""

from __future__ import annotations

import os
import socket

import paho.mqtt.client as mqtt

from test_nats_bridge import Client, name, until_routed


def connect_with_will(client_id: str, addr, topic: str, payload: bytes, qos: int,
                      retain: bool = False) -> mqtt.Client:
    """A paho client (MQTT 5) with a will, connected (CONNACK read)."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv5, reconnect_on_failure=False)
    connacks = []
    client.on_connect = lambda c, u, f, rc, p: connacks.append(rc)
    client.will_set(topic, payload, qos=qos, retain=retain)
    client.connect(addr[0], addr[1], keepalive=60)
    probe = Client.__new__(Client)  # only its loop_until, driving this client
    probe.client = client
    probe.loop_until(lambda: connacks, "CONNACK")
    assert connacks[0].value == 0, connacks
    return client


def drop_uncleanly(client: mqtt.Client) -> None:
    """Closes the client's socket with no DISCONNECT: the broker must publish its will."""
    sock = client.socket()
    sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def test_a_will_reaches_a_subscriber_on_another_node(start_nats, start_nats_node):
    nats = start_nats()
    a = start_nats_node("na", nats)
    b = start_nats_node("nb", nats)
    sub = Client(name("na"), a.addr)
    sub.subscribe("will/#", qos=1)
    probe = Client(name("nb"), b.addr)
    until_routed(probe, sub, "will/probe")
    dying = connect_with_will(name("nb"), b.addr, "will/gone", b"it died", qos=1)
    drop_uncleanly(dying)
    sub.loop_until(lambda: sub.received("will/gone"), "the will from node nb")
    (will,) = sub.received("will/gone")
    assert (will.payload, will.qos) == (b"it died", 1)
    # A clean DISCONNECT publishes no will, on either node.
    polite = connect_with_will(name("nb"), b.addr, "will/polite", b"never", qos=1)
    polite.disconnect()
    polite.loop(timeout=0.05)
    until_routed(probe, sub, "will/after")
    assert not sub.received("will/polite")
    sub.close()
    probe.close()
