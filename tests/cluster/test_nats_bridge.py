"""Two berth nodes joined through one nats-server (README "Cluster (preview)"): a subscriber on
one node gets what is published on the other, at QoS 0 and QoS 1; a subscription removed stops
the forwarding; an offline persistent session gets a QoS 1 message published on the other node
when it comes back; a message that came from NATS is never sent to NATS again.

A SUBACK of a new filter waits until the other nodes route it (the barrier, tested on its
own below); an UNSUBACK of a node's last subscriber waits until they no longer do
(test_nats_shared.py). So where a test needs to know that another node has applied
a change, `until_routed` publishes QoS 0 probes on a filter the subscriber holds until one
arrives (the KV watch is ordered, so every interest change made before the probe's is then
applied); the tests use it after SUBACKs as well, so that they check one thing each.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid

import paho.mqtt.client as mqtt

from berthproc import berth_bin
from conftest import nats_home
from mqttwire import owner_core

WAIT = 10.0


class Client:
    """paho-mqtt (MQTT 5), its network loop run in the test's thread."""

    def __init__(self, client_id: str, addr, *, clean: bool = True, expiry: int = 0):
        self.messages: list[mqtt.MQTTMessage] = []
        self.acks: dict[int, int] = {}
        self.subacks: dict[int, list] = {}
        self.connack = None
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv5, reconnect_on_failure=False)
        self.client.on_connect = lambda c, u, f, rc, p: setattr(self, "connack", (f, rc))
        self.client.on_message = lambda c, u, m: self.messages.append(m)
        self.client.on_publish = lambda c, u, mid, rc, p: self.acks.__setitem__(mid, rc.value)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.__setitem__(mid, rcs)
        self.client.on_unsubscribe = lambda c, u, mid, rcs, p: self.subacks.__setitem__(mid, rcs)
        props = mqtt.Properties(mqtt.PacketTypes.CONNECT)
        if expiry:
            props.SessionExpiryInterval = expiry
        self.client.connect(addr[0], addr[1], keepalive=60, clean_start=clean, properties=props)
        self.loop_until(lambda: self.connack is not None, "CONNACK")
        assert self.connack[1].value == 0, self.connack

    def loop_until(self, predicate, what: str, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"{what} did not happen within {timeout}s"
            self.client.loop(timeout=0.02)

    def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        _, mid = self.client.subscribe(topic_filter, qos=qos)
        self.loop_until(lambda: mid in self.subacks, "SUBACK")
        assert self.subacks[mid][0].value == qos, self.subacks[mid]

    def unsubscribe(self, topic_filter: str) -> None:
        _, mid = self.client.unsubscribe(topic_filter)
        self.loop_until(lambda: mid in self.subacks, "UNSUBACK")

    def publish(self, topic: str, payload: bytes, qos: int) -> int | None:
        """Publishes; QoS 1: waits for PUBACK and returns its reason code."""
        info = self.client.publish(topic, payload, qos=qos)
        if qos == 0:
            self.client.loop(timeout=0.01)
            return None
        self.loop_until(lambda: info.mid in self.acks, f"PUBACK of {topic}")
        return self.acks[info.mid]

    def received(self, topic: str) -> list[mqtt.MQTTMessage]:
        return [m for m in self.messages if m.topic == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop(timeout=0.05)


def until_routed(publisher: Client, subscriber: Client, topic: str) -> None:
    """Publishes QoS 0 probes on `topic` through `publisher` until `subscriber` gets one."""
    deadline = time.monotonic() + WAIT
    while not subscriber.received(topic):
        assert time.monotonic() < deadline, f"{topic} was not routed across within {WAIT}s"
        publisher.publish(topic, b"probe", 0)
        subscriber.loop_until(lambda: True, "")
        end = time.monotonic() + 0.1
        while time.monotonic() < end and not subscriber.received(topic):
            subscriber.client.loop(timeout=0.02)
            publisher.client.loop(timeout=0.0)


def name(node: str, core: int | None = None, cores: int = 1) -> str:
    """A fresh client id whose home is `node` (conftest's NATS_SLOT_MAP): a node refuses the
    others (0x9C). With `core`: also owned by that core of the node's `cores`."""
    while True:
        client_id = "c" + uuid.uuid4().hex[:10]
        if nats_home(client_id) == node and (core is None or owner_core(client_id, cores) == core):
            return client_id


def test_qos0_and_qos1_cross_nodes(start_nats, start_nats_node):
    nats = start_nats()
    a = start_nats_node("na", nats)
    b = start_nats_node("nb", nats)
    sub = Client(name("na"), a.addr)
    sub.subscribe("t/#", qos=1)
    pub = Client(name("nb"), b.addr)
    until_routed(pub, sub, "t/probe")
    assert pub.publish("t/zero", b"q0", 0) is None
    assert pub.publish("t/one", b"q1", 1) == 0
    sub.loop_until(lambda: sub.received("t/zero") and sub.received("t/one"), "both messages")
    (zero,), (one,) = sub.received("t/zero"), sub.received("t/one")
    assert (zero.payload, zero.qos) == (b"q0", 0)
    assert (one.payload, one.qos) == (b"q1", 1)
    # The QoS 1 message went through node na's stream and was acknowledged there.
    stream = nats.stream("BERTH_IN_na")
    assert stream is not None and stream["state"]["last_seq"] >= 1, stream
    sub.close()
    pub.close()


def test_unsubscribe_stops_forwarding(start_nats, start_nats_node):
    nats = start_nats()
    a = start_nats_node("na", nats)
    b = start_nats_node("nb", nats)
    sub = Client(name("na"), a.addr)
    sub.subscribe("gone/#", qos=1)
    pub = Client(name("nb"), b.addr)
    until_routed(pub, sub, "gone/probe")
    assert pub.publish("gone/1", b"1", 1) == 0
    sub.loop_until(lambda: sub.received("gone/1"), "gone/1")
    before = nats.stream("BERTH_IN_na")["state"]["last_seq"]
    sub.unsubscribe("gone/#")
    # A later interest change of na, seen by nb, means nb has applied the removal too.
    marker = Client(name("na"), a.addr)
    marker.subscribe("marker/#", qos=0)
    until_routed(pub, marker, "marker/probe")
    assert pub.publish("gone/2", b"2", 1) == 0
    after = nats.stream("BERTH_IN_na")["state"]["last_seq"]
    assert after == before, f"nb still forwards gone/# to na: {before} -> {after} messages"
    assert not sub.received("gone/2")
    for c in (sub, pub, marker):
        c.close()


def test_offline_persistent_session_gets_qos1_from_other_node(start_nats, start_nats_node):
    nats = start_nats()
    a = start_nats_node("na", nats)
    b = start_nats_node("nb", nats)
    client_id = name("na")
    sub = Client(client_id, a.addr, clean=True, expiry=300)
    sub.subscribe("keep/#", qos=1)
    pub = Client(name("nb"), b.addr)
    until_routed(pub, sub, "keep/probe")
    sub.close()
    assert pub.publish("keep/1", b"while away", 1) == 0
    back = Client(client_id, a.addr, clean=False, expiry=300)
    assert back.connack[0].session_present
    back.loop_until(lambda: back.received("keep/1"), "the queued message")
    (message,) = back.received("keep/1")
    assert (message.payload, message.qos) == (b"while away", 1)
    # Acknowledged once stored: the work queue is empty again.
    _wait_acked(nats, "BERTH_IN_na", time.monotonic() + WAIT)
    assert nats.stream("BERTH_IN_na")["state"]["messages"] == 0
    back.close()
    pub.close()


def test_messages_from_nats_are_not_sent_back(start_nats, start_nats_node):
    nats = start_nats()
    a = start_nats_node("na", nats)
    b = start_nats_node("nb", nats)
    on_a, on_b = Client(name("na"), a.addr), Client(name("nb"), b.addr)
    on_a.subscribe("loop/#", qos=1)
    on_b.subscribe("loop/#", qos=1)
    until_routed(on_b, on_a, "loop/probe-a")
    until_routed(on_a, on_b, "loop/probe-b")
    b_before = nats.stream("BERTH_IN_nb")["state"]["last_seq"]
    assert on_b.publish("loop/1", b"once", 1) == 0
    on_a.loop_until(lambda: on_a.received("loop/1"), "loop/1 on na")
    # na stored and acknowledged it; had it sent it on, nb's stream would hold it.
    _wait_acked(nats, "BERTH_IN_na", time.monotonic() + WAIT)
    assert nats.stream("BERTH_IN_nb")["state"]["last_seq"] == b_before
    on_b.loop_until(lambda: on_b.received("loop/1"), "loop/1 on nb")
    assert len(on_b.received("loop/1")) == 1
    assert len(on_a.received("loop/1")) == 1
    on_a.close()
    on_b.close()


def _wait_acked(nats, stream: str, deadline: float) -> None:
    """Until the stream's consumer has nothing delivered and unacknowledged."""
    while True:
        detail = nats.stream(stream)
        consumers = detail.get("consumer_detail") or []
        if consumers and consumers[0]["num_ack_pending"] == 0 and consumers[0]["num_pending"] == 0:
            return
        assert time.monotonic() < deadline, f"{stream}: still unacknowledged: {consumers}"
        time.sleep(0.05)


def test_nats_without_node_is_an_error():
    run = subprocess.run([berth_bin(), "--nats", "nats://127.0.0.1:4222"], capture_output=True, timeout=10)
    assert run.returncode != 0
    assert b"--nats" in run.stderr and b"node" in run.stderr, run.stderr


def test_puback_waits_for_the_target_stream(start_nats, start_nats_node):
    """When the subscriber's node stream refuses the message (here: larger than the stream
    now allows), the publisher's PUBACK says so (0x97): it waited for JetStream's answer."""
    nats = start_nats()
    a = start_nats_node("na", nats)
    b = start_nats_node("nb", nats)
    sub = Client(name("na"), a.addr)
    sub.subscribe("s/#", qos=1)
    pub = Client(name("nb"), b.addr)
    until_routed(pub, sub, "s/probe")
    assert pub.publish("s/1", b"stored", 1) == 0
    sub.loop_until(lambda: sub.received("s/1"), "s/1")
    info = json.loads(nats.request("$JS.API.STREAM.INFO.BERTH_IN_na"))
    config = dict(info["config"], max_msg_size=16)
    answer = json.loads(nats.request("$JS.API.STREAM.UPDATE.BERTH_IN_na", json.dumps(config).encode()))
    assert answer.get("config", {}).get("max_msg_size") == 16, answer
    assert pub.publish("s/2", b"too large for the stream now", 1) == 0x97
    # QoS 0 needs no stream: it still goes across.
    pub.publish("s/3", b"q0", 0)
    sub.loop_until(lambda: sub.received("s/3"), "s/3")
    assert not sub.received("s/2")
    sub.close()
    pub.close()


def test_messages_wait_in_the_stream_while_their_node_is_down(start_nats, start_nats_node, tmp_path):
    """Node na stops; its interest stays in the bucket, so what nb publishes for na's
    persistent session is acknowledged into na's stream, and delivered once na is back."""
    nats = start_nats()
    data = str(tmp_path / "na-data")
    os.makedirs(data)
    a = start_nats_node("na", nats, data_dir=data)
    b = start_nats_node("nb", nats)
    client_id = name("na")
    sub = Client(client_id, a.addr, expiry=600)
    sub.subscribe("park/#", qos=1)
    pub = Client(name("nb"), b.addr)
    until_routed(pub, sub, "park/probe")
    sub.close()
    a.assert_clean_exit()
    for i in range(3):
        assert pub.publish(f"park/{i}", f"m{i}".encode(), 1) == 0
    assert nats.stream("BERTH_IN_na")["state"]["messages"] == 3, "parked, unacknowledged"
    a2 = start_nats_node("na", nats, data_dir=data)
    back = Client(client_id, a2.addr, clean=False, expiry=600)
    assert back.connack[0].session_present
    back.loop_until(lambda: all(back.received(f"park/{i}") for i in range(3)), "the parked messages")
    assert [m.payload for m in back.messages if m.topic.startswith("park/") and m.topic != "park/probe"] \
        == [b"m0", b"m1", b"m2"]
    # Acknowledged once stored: the work queue is empty again.
    _wait_acked(nats, "BERTH_IN_na", time.monotonic() + WAIT)
    assert nats.stream("BERTH_IN_na")["state"]["messages"] == 0
    back.close()
    pub.close()


def test_a_node_wants_a_filter_while_any_of_its_cores_does(start_nats, start_nats_node):
    """Two subscribers of one filter on two cores of node na: the node's interest stays while
    either holds it and goes with the last; QoS 2 crosses too."""
    nats = start_nats()
    a = start_nats_node("na", nats, cores=2)
    b = start_nats_node("nb", nats)
    id0, id1 = name("na", core=0, cores=2), name("na", core=1, cores=2)
    s0, s1 = Client(id0, a.addr), Client(id1, a.addr)
    s0.subscribe("two/#", qos=2)
    s1.subscribe("two/#", qos=2)
    pub = Client(name("nb"), b.addr)
    until_routed(pub, s0, "two/probe")
    until_routed(pub, s1, "two/probe")
    assert pub.publish("two/q2", b"exactly", 2) == 0
    for s in (s0, s1):
        s.loop_until(lambda s=s: s.received("two/q2"), "two/q2")
        assert [(m.payload, m.qos) for m in s.received("two/q2")] == [(b"exactly", 2)]
    marker = Client(name("na"), a.addr)

    def settled(probe: str) -> None:
        # A later interest change of na, seen by nb: the one before it is applied there.
        marker.subscribe(f"{probe}/#", qos=0)
        until_routed(pub, marker, f"{probe}/probe")

    s0.unsubscribe("two/#")
    settled("m1")
    before = nats.stream("BERTH_IN_na")["state"]["last_seq"]
    assert pub.publish("two/still", b"core 1 wants it", 1) == 0
    s1.loop_until(lambda: s1.received("two/still"), "two/still")
    assert nats.stream("BERTH_IN_na")["state"]["last_seq"] == before + 1
    s1.unsubscribe("two/#")
    settled("m2")
    assert pub.publish("two/nobody", b"-", 1) == 0
    assert nats.stream("BERTH_IN_na")["state"]["last_seq"] == before + 1
    for c in (s0, s1, pub, marker):
        c.close()


def test_nodes_reconnect_after_nats_restarts(start_nats, start_nats_node):
    """nats-server stops and starts again (its JetStream store kept): the nodes reconnect on
    their own, log it, and messages cross again."""
    nats = start_nats()
    a = start_nats_node("na", nats)
    b = start_nats_node("nb", nats)
    sub = Client(name("na"), a.addr)
    sub.subscribe("re/#", qos=1)
    pub = Client(name("nb"), b.addr)
    until_routed(pub, sub, "re/probe")
    nats.restart()
    for node in (a, b):
        deadline = time.monotonic() + 30
        while "disconnected from NATS" not in node.stderr_text() \
                or node.stderr_text().count("cluster: connected to NATS") < 2:
            assert time.monotonic() < deadline, f"no reconnection logged\n{node.describe()}"
            time.sleep(0.05)
    until_routed(pub, sub, "re/probe-again")
    assert pub.publish("re/1", b"after the restart", 1) == 0
    sub.loop_until(lambda: sub.received("re/1"), "re/1")
    sub.close()
    pub.close()


def test_one_publishers_qos1_messages_cross_in_order(start_nats, start_nats_node):
    """500 QoS 1 messages of one publisher (paho: 20 in flight), through na's stream: every one
    acknowledged and delivered once, in order."""
    nats = start_nats()
    a = start_nats_node("na", nats)
    b = start_nats_node("nb", nats)
    sub = Client(name("na"), a.addr)
    sub.subscribe("seq/#", qos=1)
    pub = Client(name("nb"), b.addr)
    until_routed(pub, sub, "seq/probe")
    count = 500
    started = time.monotonic()
    infos = [pub.client.publish("seq/n", str(i).encode(), qos=1) for i in range(count)]
    pub.loop_until(lambda: all(info.mid in pub.acks for info in infos), "every PUBACK", timeout=60)
    assert {pub.acks[info.mid] for info in infos} == {0}
    sub.loop_until(lambda: len(sub.received("seq/n")) >= count, "every message", timeout=60)
    elapsed = time.monotonic() - started
    assert [int(m.payload) for m in sub.received("seq/n")] == list(range(count))
    print(f"{count} QoS 1 messages across nodes in {elapsed:.2f}s ({count / elapsed:.0f}/s)")
    sub.close()
    pub.close()


def test_a_publish_right_after_suback_reaches_the_subscriber(start_nats, start_nats_node):
    """The SUBACK of a new filter waits until every live node routes it here (the barrier),
    so a publish on another node right after it is delivered: no probing needed."""
    nats = start_nats()
    a = start_nats_node("na", nats)
    b = start_nats_node("nb", nats)
    pub = Client(name("nb"), b.addr)
    sub = Client(name("na"), a.addr)
    count = 20
    for i in range(count):
        sub.subscribe(f"fresh/{i}", qos=1)
        assert pub.publish(f"fresh/{i}", b"x", 1) == 0
    sub.loop_until(lambda: all(sub.received(f"fresh/{i}") for i in range(count)), "every message")
    sub.close()
    pub.close()


def test_without_nats_a_node_serves_its_own_clients(start_nats, start_nats_node):
    """nats-server goes away: a node's local traffic goes on at once (no core waits on NATS);
    a QoS 1 message that must reach another node's stream is refused (PUBACK 0x97) once
    JetStream's answer does not come, and still delivered here."""
    nats = start_nats()
    a = start_nats_node("na", nats)
    b = start_nats_node("nb", nats)
    far = Client(name("na"), a.addr)
    far.subscribe("both/#", qos=1)
    near = Client(name("nb"), b.addr)
    near.subscribe("both/#", qos=1)
    near.subscribe("local/#", qos=1)
    pub = Client(name("nb"), b.addr)
    until_routed(pub, far, "both/probe")
    nats.stop()
    started = time.monotonic()
    assert pub.publish("local/1", b"stays here", 1) == 0
    assert time.monotonic() - started < 2, "a local-only QoS 1 message waited on NATS"
    near.loop_until(lambda: near.received("local/1"), "local/1")
    assert pub.publish("both/1", b"cannot reach na", 1) == 0x97
    near.loop_until(lambda: near.received("both/1"), "both/1 on nb")
    for c in (far, near, pub):
        c.close()


def test_a_node_starts_and_serves_while_nats_is_unreachable(start_nats, start_nats_node):
    """No nats-server at the node's URL: the node is ready after its bounded wait, says so,
    and serves its own clients (a new filter's SUBACK waits at most a few seconds)."""
    nats = start_nats()
    nats.stop()  # its URL now leads nowhere
    lone = start_nats_node("na", nats)
    assert "NATS not ready" in lone.stderr_text()
    sub = Client(name("na"), lone.addr)
    started = time.monotonic()
    sub.subscribe("here/#", qos=1)
    assert time.monotonic() - started < 5
    pub = Client(name("na"), lone.addr)
    assert pub.publish("here/1", b"local", 1) == 0
    sub.loop_until(lambda: sub.received("here/1"), "here/1")
    sub.close()
    pub.close()
