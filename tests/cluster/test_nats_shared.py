"""Shared subscriptions across nodes and the UNSUBACK barrier (README "Cluster (preview)").

Three berth nodes na, nb, nc (a third of the slots each) through one nats-server. A share
group `$share/{group}/{filter}` with members on na and nb gets each message once in the whole
cluster, whichever node publishes it (na, nb, or nc, where the group has no member), at QoS 0,
1 and 2; a plain subscriber beside the members gets its own copy once; a group whose members are
all on another node than the publisher's gets everything. An UNSUBACK of a node's last
subscriber of a filter comes only once the other nodes no longer route it there: a publish on
another node right after it finds no subscriber at all (its `no_subscribers` count rises).

Every client talks to its id's home node. The SUBACK of a node's first member of a group waits
until every live node routes the group there (the barrier), so the tests publish right after
their SUBACKs. QoS 0 crosses nodes over core NATS, which may drop a message only for a slow
consumer; a few dozen messages on loopback are not lost, so the QoS 0 counts are exact too.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import paho.mqtt.client as mqtt
import pytest

from berthproc import Broker, stop_cleanly
from conftest import slot_of

WAIT = 20.0
NODES = ("na", "nb", "nc")
SLOT_MAP = ("node na 127.0.0.1:1\nnode nb 127.0.0.1:2\nnode nc 127.0.0.1:3\n"
            "0-1364 na 1\n1365-2729 nb 1\n2730-4095 nc 1\n")


def home(client_id: str) -> str:
    slot = slot_of(client_id)
    return "na" if slot < 1365 else "nb" if slot < 2730 else "nc"


def ids_on(node: str, prefix: str, count: int) -> list[str]:
    found = [cid for cid in (f"{prefix}-{i}" for i in range(100_000)) if home(cid) == node]
    return found[:count]


@pytest.fixture
def three_nodes(tmp_path, start_nats):
    nats = start_nats()
    slot_map = tmp_path / "three.map"
    slot_map.write_text(SLOT_MAP)
    started: list[Broker] = []
    nodes = {}
    for name in NODES:
        workdir = tmp_path / f"node-{name}"
        workdir.mkdir()
        node = Broker.start("--node", name, "--slot-map", str(slot_map), "--nats", nats.url,
                            "--sys-interval", "1", cores=1, workdir=str(workdir))
        started.append(node)
        nodes[name] = node
    yield nodes
    stop_cleanly(started)


class Client:
    """paho-mqtt (MQTT 5) with its network loop in a thread of its own."""

    def __init__(self, client_id: str, node: Broker):
        self.id = client_id
        self.messages: list[mqtt.MQTTMessage] = []
        self.lock = threading.Lock()
        self.acks: dict[int, int] = {}
        self.subacks: dict[int, list] = {}
        self.connected = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv5, reconnect_on_failure=False)
        self.client.max_inflight_messages_set(20)
        self.client.on_connect = lambda c, u, f, rc, p: (setattr(self, "rc", rc.value),
                                                         self.connected.set())
        self.client.on_message = self._message
        self.client.on_publish = lambda c, u, mid, rc, p: self._set(self.acks, mid, rc.value)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._set(self.subacks, mid, rcs)
        self.client.on_unsubscribe = self._unsuback
        # Called in the network thread as the UNSUBACK arrives (the quickest reaction).
        self.on_unsuback = None
        self.client.connect(node.host, node.port, keepalive=60, clean_start=True)
        self.client.loop_start()
        assert self.connected.wait(WAIT), f"no CONNACK for {client_id}"
        assert self.rc == 0, (client_id, self.rc)

    def _message(self, client, userdata, message) -> None:
        with self.lock:
            self.messages.append(message)

    def _unsuback(self, client, userdata, mid, reason_codes, properties) -> None:
        if self.on_unsuback:
            self.on_unsuback()
        self._set(self.subacks, mid, reason_codes)

    def _set(self, table: dict, key, value) -> None:
        with self.lock:
            table[key] = value

    def wait_for(self, table: dict, mid: int, what: str) -> None:
        until(lambda: mid in table, f"{what} of {self.id}")

    def subscribe(self, topic_filter: str, qos: int) -> None:
        _, mid = self.client.subscribe(topic_filter, qos=qos)
        self.wait_for(self.subacks, mid, "SUBACK")
        assert self.subacks[mid][0].value == qos, self.subacks[mid]

    def unsubscribe(self, topic_filter: str) -> None:
        _, mid = self.client.unsubscribe(topic_filter)
        self.wait_for(self.subacks, mid, "UNSUBACK")
        assert self.subacks[mid][0].value == 0, self.subacks[mid]

    def publish(self, topic: str, payload: bytes, qos: int) -> None:
        """Publishes; QoS 1/2 waits for the PUBACK (PUBCOMP) and asks for success."""
        info = self.client.publish(topic, payload, qos=qos)
        if qos:
            self.wait_for(self.acks, info.mid, f"acknowledgement of {payload!r}")
            assert self.acks[info.mid] == 0, (payload, self.acks[info.mid])
        else:
            info.wait_for_publish(WAIT)

    def payloads(self, topic: str | None = None) -> list[bytes]:
        with self.lock:
            return [m.payload for m in self.messages if topic is None or m.topic == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def until(predicate, what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout}s"
        time.sleep(0.02)


def settle() -> None:
    """Time for a duplicate on its way to arrive (none should)."""
    time.sleep(1.0)


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_a_group_over_two_nodes_gets_each_message_once(three_nodes, qos):
    topic = f"share/{qos}/t"
    group = f"$share/g/share/{qos}/+"
    members = [Client(cid, three_nodes["na"]) for cid in ids_on("na", f"ma{qos}", 2)]
    members += [Client(cid, three_nodes["nb"]) for cid in ids_on("nb", f"mb{qos}", 2)]
    plain = Client(ids_on("na", f"plain{qos}", 1)[0], three_nodes["na"])
    other = Client(ids_on("nb", f"other{qos}", 1)[0], three_nodes["nb"])  # another group
    for member in members:
        member.subscribe(group, qos)
    plain.subscribe(f"share/{qos}/#", qos)
    other.subscribe(f"$share/h/share/{qos}/t", qos)
    publishers = {name: Client(ids_on(name, f"pub{qos}", 1)[0], three_nodes[name]) for name in NODES}
    per_publisher = 30
    sent = []
    for name, publisher in publishers.items():
        for i in range(per_publisher):
            payload = f"{name}-{i}".encode()
            publisher.publish(topic, payload, qos)
            sent.append(payload)
    got = lambda: [p for m in members for p in m.payloads(topic)]  # noqa: E731
    until(lambda: len(got()) >= len(sent), f"the group's {len(sent)} messages")
    until(lambda: len(plain.payloads(topic)) >= len(sent), "the plain subscriber's copies")
    until(lambda: len(other.payloads(topic)) >= len(sent), "the other group's copies")
    settle()
    assert Counter(got()) == Counter(sent), "each message once to the group"
    assert Counter(plain.payloads(topic)) == Counter(sent), "each message once to the plain subscriber"
    assert Counter(other.payloads(topic)) == Counter(sent), "each message once to the other group"
    # nc has no member: its messages are spread over the member nodes.
    from_nc = lambda ms: [p for m in ms for p in m.payloads(topic) if p.startswith(b"nc-")]  # noqa: E731
    assert from_nc(members[:2]) and from_nc(members[2:]), "nc's messages reach both member nodes"
    for client in [*members, plain, other, *publishers.values()]:
        client.close()


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_a_group_only_on_another_node_gets_everything(three_nodes, qos):
    topic = f"far/{qos}"
    members = [Client(cid, three_nodes["nb"]) for cid in ids_on("nb", f"far{qos}", 2)]
    for member in members:
        member.subscribe(f"$share/far/{topic}", qos)
    publishers = [Client(ids_on(name, f"fp{qos}", 1)[0], three_nodes[name]) for name in ("na", "nc")]
    sent = []
    for publisher in publishers:
        for i in range(20):
            payload = f"{publisher.id}-{i}".encode()
            publisher.publish(topic, payload, qos)
            sent.append(payload)
    got = lambda: [p for m in members for p in m.payloads(topic)]  # noqa: E731
    until(lambda: len(got()) >= len(sent), f"the group's {len(sent)} messages")
    settle()
    assert Counter(got()) == Counter(sent)
    assert all(m.payloads(topic) for m in members), "both members on nb take a share"
    for client in [*members, *publishers]:
        client.close()


def sys_value(client: Client, topic: str) -> int | None:
    values = client.payloads(topic)
    return int(values[-1]) if values else None


def test_unsuback_waits_until_other_nodes_stop_routing(three_nodes):
    """An UNSUBACK of nb's last subscriber of a filter comes once na no longer routes it to
    nb: a QoS 1 message published on na right after it finds no subscriber anywhere, which na
    counts (`no_subscribers`); before the barrier na still forwarded it to nb."""
    stat = "$SYS/broker/publish/messages/dropped/no_subscribers"
    watcher = Client(ids_on("na", "watch", 1)[0], three_nodes["na"])
    watcher.subscribe(stat, 0)
    until(lambda: sys_value(watcher, stat) is not None, "na's no_subscribers figure")
    publisher = Client(ids_on("na", "upub", 1)[0], three_nodes["na"])
    subscriber = Client(ids_on("nb", "usub", 1)[0], three_nodes["nb"])
    rounds = 5
    for i in range(rounds):
        topic = f"gone/{i}"
        subscriber.subscribe(topic, 1)  # the SUBACK barrier: na routes it to nb now
        publisher.publish(topic, b"before", 1)
        until(lambda: subscriber.payloads(topic) == [b"before"], f"the message on {topic}")
    # The figure counted nothing since: settle on its value.
    base = sys_value(watcher, stat)
    time.sleep(2.5)
    assert sys_value(watcher, stat) == base, "no publish had no subscriber yet"
    for i in range(rounds):
        topic = f"gone/{i}"
        # Published the moment the UNSUBACK arrives: na must know already.
        sent = []
        subscriber.on_unsuback = lambda: sent.append(publisher.client.publish(topic, b"after", qos=1))
        subscriber.unsubscribe(topic)
        until(lambda: sent and sent[0].mid in publisher.acks, f"PUBACK of the message after on {topic}")
    until(lambda: sys_value(watcher, stat) >= base + rounds,
          f"na counting its {rounds} publishes after the UNSUBACKs as having no subscriber")
    assert all(subscriber.payloads(f"gone/{i}") == [b"before"] for i in range(rounds))
    for client in (watcher, publisher, subscriber):
        client.close()


def test_a_group_member_leaving_its_node_moves_the_group(three_nodes):
    """The last member of a group on na unsubscribes: na's group entry is withdrawn before
    the UNSUBACK, so every later message goes to the members on nb."""
    topic = "move/t"
    on_na = Client(ids_on("na", "mv", 1)[0], three_nodes["na"])
    on_nb = Client(ids_on("nb", "mv", 1)[0], three_nodes["nb"])
    for member in (on_na, on_nb):
        member.subscribe(f"$share/mv/{topic}", 1)
    publisher = Client(ids_on("nc", "mvp", 1)[0], three_nodes["nc"])
    for i in range(6):
        publisher.publish(topic, f"a{i}".encode(), 1)
    until(lambda: len(on_na.payloads()) + len(on_nb.payloads()) >= 6, "the first six")
    assert on_na.payloads() and on_nb.payloads(), "round robin over the two member nodes"
    on_na.unsubscribe(f"$share/mv/{topic}")
    before = len(on_na.payloads())
    for i in range(6):
        publisher.publish(topic, f"b{i}".encode(), 1)
    until(lambda: len([p for p in on_nb.payloads() if p.startswith(b"b")]) >= 6, "the next six on nb")
    settle()
    assert len(on_na.payloads()) == before
    assert sorted(p for p in on_nb.payloads() if p.startswith(b"b")) == [f"b{i}".encode() for i in range(6)]
    for client in (on_na, on_nb, publisher):
        client.close()
