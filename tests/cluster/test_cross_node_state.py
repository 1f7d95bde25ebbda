"""What crosses between berth nodes besides plain publishes (README "Cluster (preview)"): a will
published when its client drops uncleanly on one node reaches a subscriber on the other; a
retained message published on one node is sent to a later subscriber on the other, a retained
clear clears it on every node, and a node that was down gets the retained messages it missed
when it comes back (KV bucket `berth_retained`)."""

from __future__ import annotations

import os
import socket
import time

import paho.mqtt.client as mqtt

from test_nats_bridge import WAIT, Client, name, until_routed


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


def publish_retained(client: Client, topic: str, payload: bytes, qos: int = 1) -> None:
    """A retained PUBLISH; QoS 1: its PUBACK must be a success (the bucket holds it)."""
    info = client.client.publish(topic, payload, qos=qos, retain=True)
    if qos == 0:
        client.loop_until(lambda: info.is_published(), f"sending {topic}")
        return
    client.loop_until(lambda: info.mid in client.acks, f"PUBACK of {topic}")
    assert client.acks[info.mid] == 0, client.acks[info.mid]


def retained_on_subscribe(addr, node: str, topic_filter: str, marker: str) -> dict:
    """Subscribes a fresh client on `addr` to `topic_filter` and returns {topic: payload} of
    the retained messages it is sent, read until the retained message of `marker` (which must
    exist and sorts last among them: a SUBACK's retained messages go out by topic)."""
    c = Client(name(node), addr)
    c.subscribe(topic_filter, qos=1)
    c.loop_until(lambda: c.received(marker), f"retained {marker} on node {node}")
    assert all(m.retain for m in c.messages), [(m.topic, m.retain) for m in c.messages]
    got = {m.topic: m.payload for m in c.messages}
    c.close()
    return got


def until_retained(addr, node: str, topic: str, payload: bytes) -> None:
    """Subscribes fresh clients on `addr` until one is sent `payload` as the retained message
    of `topic`: another node's bucket watch applies it a moment after the PUBACK."""
    deadline = time.monotonic() + WAIT
    while True:
        c = Client(name(node), addr)
        c.subscribe(topic, qos=1)
        end = time.monotonic() + 0.2
        while time.monotonic() < end and not c.received(topic):
            c.client.loop(timeout=0.02)
        got = [m.payload for m in c.received(topic)]
        c.close()
        if got == [payload]:
            return
        assert time.monotonic() < deadline, f"retained {topic} = {payload!r} not on {node}: {got}"


def test_retained_messages_and_clears_cross_nodes(start_nats, start_nats_node):
    nats = start_nats()
    a = start_nats_node("na", nats)
    b = start_nats_node("nb", nats)
    live = Client(name("nb"), b.addr)
    live.subscribe("ret/#", qos=1)
    pub = Client(name("na"), a.addr)
    until_routed(pub, live, "ret/probe")
    publish_retained(pub, "ret/one", b"kept")
    publish_retained(pub, "ret/zero", b"kept at 0", qos=0)
    publish_retained(pub, "ret/zz", b"marker 1")
    until_retained(b.addr, "nb", "ret/zz", b"marker 1")
    # The bucket is ordered: with the marker every earlier retained message is on nb too.
    got = retained_on_subscribe(b.addr, "nb", "ret/#", "ret/zz")
    assert (got["ret/one"], got["ret/zero"]) == (b"kept", b"kept at 0"), got
    # A subscriber present when they were published got each once (the bucket delivers
    # nothing).
    live.loop_until(lambda: live.received("ret/zz"), "the marker, live")
    assert [m.payload for m in live.received("ret/one")] == [b"kept"]
    # nb's own retained messages reach na the same way; a clear on nb clears na's store.
    other = Client(name("nb"), b.addr)
    publish_retained(other, "ret/one", b"")
    publish_retained(other, "ret/zz", b"marker 2")
    until_retained(a.addr, "na", "ret/zz", b"marker 2")
    got = retained_on_subscribe(a.addr, "na", "ret/#", "ret/zz")
    assert "ret/one" not in got and got["ret/zero"] == b"kept at 0", got
    got = retained_on_subscribe(b.addr, "nb", "ret/#", "ret/zz")
    assert "ret/one" not in got, got
    # The last write wins on both nodes, whichever node made it.
    publish_retained(pub, "ret/zero", b"replaced by na")
    publish_retained(other, "ret/zero", b"replaced by nb")
    publish_retained(other, "ret/zz", b"marker 3")
    until_retained(a.addr, "na", "ret/zz", b"marker 3")
    assert retained_on_subscribe(a.addr, "na", "ret/#", "ret/zz")["ret/zero"] == b"replaced by nb"
    assert retained_on_subscribe(b.addr, "nb", "ret/#", "ret/zz")["ret/zero"] == b"replaced by nb"
    for c in (live, pub, other):
        c.close()


def test_a_node_that_was_down_gets_the_retained_messages_it_missed(start_nats, start_nats_node,
                                                                    tmp_path):
    """na stops; meanwhile nb sets one retained message and clears one that na held. na, back
    on its data directory, is ready only once it has applied the bucket: a client's first
    subscription already sees both changes."""
    nats = start_nats()
    data = str(tmp_path / "na-data")
    os.makedirs(data)
    a = start_nats_node("na", nats, data_dir=data)
    b = start_nats_node("nb", nats)
    pub = Client(name("nb"), b.addr)
    publish_retained(pub, "down/old", b"cleared while na is down")
    publish_retained(pub, "down/zz", b"marker 1")
    until_retained(a.addr, "na", "down/old", b"cleared while na is down")
    a.assert_clean_exit()
    publish_retained(pub, "down/old", b"")
    publish_retained(pub, "down/new", b"set while na is down")
    publish_retained(pub, "down/zz", b"marker 2")
    a2 = start_nats_node("na", nats, data_dir=data)
    c = Client(name("na"), a2.addr)
    c.subscribe("down/#", qos=1)
    c.loop_until(lambda: c.received("down/zz"), "the retained marker on the restarted na")
    got = {m.topic: m.payload for m in c.messages}
    assert got == {"down/new": b"set while na is down", "down/zz": b"marker 2"}, got
    c.close()
    pub.close()


def test_without_nats_a_retained_qos1_publish_is_refused_but_kept_locally(start_nats,
                                                                          start_nats_node):
    """The PUBACK of a retained QoS 1 PUBLISH says whether the cluster's bucket holds it: cut
    off from NATS, 0x97 at once; the node's own store still has it."""
    nats = start_nats()
    b = start_nats_node("nb", nats)
    pub = Client(name("nb"), b.addr)
    publish_retained(pub, "alone/zz", b"in the bucket")
    nats.stop()
    started = time.monotonic()
    info = pub.client.publish("alone/a", b"only here", qos=1, retain=True)
    pub.loop_until(lambda: info.mid in pub.acks, "PUBACK of alone/a")
    assert pub.acks[info.mid] == 0x97, pub.acks[info.mid]
    assert time.monotonic() - started < 2, "the refusal waited on NATS"
    got = retained_on_subscribe(b.addr, "nb", "alone/#", "alone/zz")
    assert got == {"alone/a": b"only here", "alone/zz": b"in the bucket"}, got
    pub.close()


def test_retained_messages_reach_every_core_of_a_node(start_nats, start_nats_node):
    """nb has two cores: a subscriber on each is sent the retained message published on na
    (the bridge tells every core's store)."""
    nats = start_nats()
    a = start_nats_node("na", nats)
    b = start_nats_node("nb", nats, cores=2)
    pub = Client(name("na"), a.addr)
    publish_retained(pub, "cores/zz", b"on every core")
    for core in (0, 1):
        deadline = time.monotonic() + WAIT
        while True:
            c = Client(name("nb", core=core, cores=2), b.addr)
            c.subscribe("cores/#", qos=1)
            end = time.monotonic() + 0.2
            while time.monotonic() < end and not c.received("cores/zz"):
                c.client.loop(timeout=0.02)
            got = [m.payload for m in c.received("cores/zz")]
            c.close()
            if got:
                assert got == [b"on every core"], got
                break
            assert time.monotonic() < deadline, f"core {core} of nb never had it"
    pub.close()
