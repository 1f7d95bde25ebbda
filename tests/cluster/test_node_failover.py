"""A berth node killed (SIGKILL) under QoS 1/2 load, its clients connected through HAProxy
(README "Cluster (preview)"): while it is down its clients are refused (HAProxy closes the
connection while it still sends them to the dead node; once its check marks the node down it
sends them to another, which answers v5 CONNACK 0x9C with the dead node's address, 3.1.1 return
code 3), never given a session elsewhere; the other nodes' clients go on undisturbed; back on
its data directory it delivers every acknowledged message for its sessions, QoS 2 exactly once.
"""

from __future__ import annotations

import os
import time

import paho.mqtt.client as mqtt
import pytest

from berthproc import TEST_SEGMENT_SIZE, Broker, berth_bin, stop_cleanly
from conftest import SlotMap, free_port
from test_nats_bridge import Client, WAIT

USE_ANOTHER_SERVER = 0x9C
SERVER_UNAVAILABLE = 0x88
# HAProxy marks a server down after 3 failed checks 2 s apart, up after 2.
HAPROXY_NOTICES = 30.0
REDELIVERY = 45.0


@pytest.fixture
def nats_nodes(tmp_path):
    """Factory: start(name, slot_map, nats, data) -> berth node `name` at its slot map address,
    joined through `nats`, on data directory `data` (kept across restarts)."""
    started: list[Broker] = []

    def start(name: str, slot_map: SlotMap, nats, data: str) -> Broker:
        workdir = tmp_path / f"node-{name}-{len(started)}"
        workdir.mkdir()
        address = slot_map.nodes[name]
        argv = [berth_bin(), "--listen", address, "--cores", "1", "--data-dir", data,
                "--log", os.environ.get("BERTH_LOG", "info"), "--segment-size", TEST_SEGMENT_SIZE,
                "--node", name, "--advertise", address, "--slot-map", slot_map.path,
                "--connack-debug-properties", "--nats", nats.url]
        node = Broker(argv, workdir=str(workdir))
        started.append(node)
        return node

    yield start
    stop_cleanly(started)


def ids_homed_on(slot_map: SlotMap, node: str, prefix: str, count: int) -> list[str]:
    found = [cid for cid in (f"{prefix}-{i}" for i in range(100_000)) if slot_map.home(cid) == node]
    return found[:count]


def try_connect(addr, client_id: str, protocol: int):
    """One CONNECT (clean, no session kept); returns its CONNACK (reason code, properties) or
    None when the connection was refused or closed without one."""
    answer = {}
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol,
                         reconnect_on_failure=False)
    client.on_connect = lambda c, u, f, rc, p: answer.setdefault("connack", (rc, p))
    client.on_disconnect = lambda c, u, f, rc, p: answer.setdefault("closed", rc)
    try:
        client.connect(addr[0], addr[1], keepalive=30)
    except OSError:
        return None
    deadline = time.monotonic() + WAIT
    while not answer and time.monotonic() < deadline:
        client.loop(timeout=0.05)
    client.disconnect()
    client.loop(timeout=0.01)
    return answer.get("connack")


def test_kill_a_node_behind_haproxy_under_load(tmp_path, start_nats, start_haproxy, nats_nodes):
    nats = start_nats()
    hosts = {f"n{i}": f"127.0.0.{i + 1}" for i in (1, 2, 3)}
    slot_map = SlotMap(str(tmp_path / "slots.txt"),
                       {name: f"{host}:{free_port(host)}" for name, host in hosts.items()})
    datas = {name: str(tmp_path / f"{name}-data") for name in hosts}
    for d in datas.values():
        os.makedirs(d)
    nodes = {name: nats_nodes(name, slot_map, nats, datas[name]) for name in hosts}
    proxy = start_haproxy(slot_map)
    via = proxy.addr

    # n2's sessions: a QoS 1 subscriber online through the kill, a QoS 2 one offline then.
    id1, id2, probe_id = ids_homed_on(slot_map, "n2", "fo-sub", 3)
    sub1, sub2 = Client(id1, via, expiry=600), Client(id2, via, expiry=600)
    sub1.subscribe("load/q1", qos=1)
    sub2.subscribe("load/q2", qos=2)
    pub_ids = ids_homed_on(slot_map, "n1", "fo-pub", 2)
    pubs = {1: Client(pub_ids[0], via), 2: Client(pub_ids[1], via)}
    # n3's subscriber of n1's flow of QoS 1 messages: must go on undisturbed.
    calm_sub_id, = ids_homed_on(slot_map, "n3", "fo-calm", 1)
    calm_pub_id, = ids_homed_on(slot_map, "n1", "fo-calmpub", 1)
    calm_sub = Client(calm_sub_id, via)
    disconnects = []
    calm_sub.client.on_disconnect = lambda c, u, f, rc, p: disconnects.append(rc)
    calm_sub.subscribe("calm/#", qos=1)
    calm_pub = Client(calm_pub_id, via)
    for qos, sub in ((1, sub1), (2, sub2)):
        deadline = time.monotonic() + WAIT
        while not sub.received(f"load/q{qos}"):
            assert time.monotonic() < deadline, "n1's publishes do not reach n2"
            pubs[qos].publish(f"load/q{qos}", b"probe", 0)
            sub.client.loop(timeout=0.1)
    sub2.close()
    clients = [*pubs.values(), sub1, calm_sub, calm_pub]
    calm_count = 0

    def pump(until, what: str, timeout: float) -> None:
        nonlocal calm_count
        deadline = time.monotonic() + timeout
        while not until():
            assert time.monotonic() < deadline, f"{what} did not happen within {timeout}s"
            if calm_count - len(calm_pub.acks) < 10:  # a steady flow, a few in flight
                calm_pub.client.publish("calm/x", str(calm_count).encode(), qos=1)
                calm_count += 1
            for c in clients:
                c.client.loop(timeout=0.005)

    count = 600
    sent: dict[int, dict[int, int]] = {1: {}, 2: {}}
    for i in range(count):
        for qos, pub in pubs.items():
            sent[qos][pub.client.publish(f"load/q{qos}", str(i).encode(), qos=qos).mid] = i

    def answered() -> int:
        return sum(1 for q in (1, 2) for mid in sent[q] if mid in pubs[q].acks)

    pump(lambda: answered() >= count // 2, "half the answers", 60)
    nodes["n2"].kill()
    nodes["n2"].stop(sig=None)
    killed_at = answered()
    calm_at_kill = len(calm_sub.received("calm/x"))
    pump(lambda: answered() == 2 * count, "every answer", 90)
    assert answered() > killed_at

    # n2's clients are refused while it is down: never a session on another node.
    def refused(addr) -> None:
        v5 = try_connect(addr, probe_id, mqtt.MQTTv5)
        if v5 is not None:
            assert v5[0].value in (USE_ANOTHER_SERVER, SERVER_UNAVAILABLE), v5
            if v5[0].value == USE_ANOTHER_SERVER:
                assert v5[1].ServerReference == slot_map.nodes["n2"], v5
        v3 = try_connect(addr, probe_id, mqtt.MQTTv311)
        assert v3 is None or str(v3[0]) == "Server unavailable", v3
        return v5

    refused(via)
    deadline = time.monotonic() + HAPROXY_NOTICES
    while proxy.servers_up() != 2:
        assert time.monotonic() < deadline, "HAProxy did not mark n2 down"
        pump(lambda: True, "", 1)
        time.sleep(0.2)
    # Now HAProxy sends them to another node, which redirects them to n2's address.
    assert refused(via) is not None, "no CONNACK from another node once n2 was marked down"
    pump(lambda: len(calm_sub.received("calm/x")) >= calm_at_kill + 50, "n3's subscriber's flow", 60)

    acked = {q: [sent[q][mid] for mid, rc in pubs[q].acks.items() if mid in sent[q] and rc == 0]
             for q in (1, 2)}
    print(f"n2 killed after {killed_at} answers; acknowledged QoS 1 {len(acked[1])}, "
          f"QoS 2 {len(acked[2])}")
    nodes["n2"] = nats_nodes("n2", slot_map, nats, datas["n2"])
    deadline = time.monotonic() + HAPROXY_NOTICES
    while proxy.servers_up() != 3:
        assert time.monotonic() < deadline, "HAProxy did not mark n2 up again"
        time.sleep(0.2)
    back1, back2 = Client(id1, via, clean=False, expiry=600), Client(id2, via, clean=False, expiry=600)
    assert back1.connack[0].session_present and back2.connack[0].session_present
    clients += [back1, back2]

    def numbers(cs, qos: int) -> list[int]:
        return [int(m.payload) for c in cs for m in c.messages
                if m.topic == f"load/q{qos}" and m.payload != b"probe"]

    pump(lambda: set(acked[1]) <= set(numbers([sub1, back1], 1))
         and set(acked[2]) <= set(numbers([back2], 2)), "every acknowledged message", REDELIVERY + WAIT)
    for qos, pub in pubs.items():
        assert pub.publish(f"load/q{qos}", b"999999", qos) == 0
    pump(lambda: 999999 in numbers([back1], 1) and 999999 in numbers([back2], 2), "the last messages", WAIT)
    q2 = numbers([back2], 2)
    assert len(q2) == len(set(q2)), f"QoS 2 duplicates: {sorted(n for n in set(q2) if q2.count(n) > 1)[:20]}"
    assert q2 == sorted(q2), "QoS 2 out of order"
    assert disconnects == [], "n3's client was disconnected"
    got = [int(m.payload) for m in calm_sub.received("calm/x")]
    assert got == sorted(got) and got, "n3's flow out of order"
    for c in clients:
        c.close()
