"""The cluster's entry tier, black box: three berth nodes with one slot map, HAProxy 2.6 in front
(configured by `berth cluster haproxy-config`), clients from paho-mqtt.

A client id's home is the node owning `crc32(id) % 4096`. HAProxy routes each CONNECT there; a
node refuses an id it does not own (v5: CONNACK 0x9C Use another server with the owner's address
as Server Reference, MQTT 5.0 section 4.11; 3.1.1: return code 3), so every successful CONNECT
through HAProxy shows that HAProxy's slot and berth's agree.
"""

from __future__ import annotations

import signal
import time
import urllib.request

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from clients import Paho
from conftest import slot_of
from mqttwire import V5, V311, Conn, parse_publish, subscribe

USE_ANOTHER_SERVER = 0x9C
SERVER_UNAVAILABLE_V3 = 3


def connect(addr, client_id: str, version: int = V5, *, clean: bool = True, expiry: int = 0) -> Paho:
    """A paho client connected (or refused) at addr; its CONNACK in `.connack`."""
    p = Paho(client_id, version, clean=clean)
    if version == V5:
        props = Properties(PacketTypes.CONNECT)
        if expiry:
            props.SessionExpiryInterval = expiry
        p.client.connect(addr[0], addr[1], keepalive=30, clean_start=clean, properties=props)
    else:
        p.client.connect(addr[0], addr[1], keepalive=30)
    p.loop_until(lambda: p.connack is not None or p.disconnected is not None, 5.0, "CONNACK")
    assert p.connack is not None, f"no CONNACK for {client_id}: {p.disconnected}; {p.log}"
    return p


def code(p: Paho) -> int:
    rc = p.connack[1]
    return rc.value if hasattr(rc, "value") else int(rc)


def test_every_client_id_lands_on_its_home_node_through_haproxy(cluster):
    """HAProxy's `crc32,mod(4096)` and berth's slot are the same function: 300 ids of many shapes,
    v5 and 3.1.1, each accepted on the node the map names (and only there could it be)."""
    ids = [f"device-{i}" for i in range(150)] + [f"sensor/{i:08x}" for i in range(60)]
    ids += [f"ünï-{i}-ö" for i in range(30)] + ["x" * 200 + str(i) for i in range(10)]
    landed = {name: 0 for name in cluster.nodes}
    for i, cid in enumerate(ids):
        version = V311 if i % 3 == 2 else V5
        p = connect(cluster.proxy.addr, cid, version)
        assert code(p) == 0, f"{cid} (slot {slot_of(cid)}): {p.connack}"
        home = cluster.slot_map.home(cid)
        if version == V5:
            assert p.user_properties()["berth-node"] == home, (cid, slot_of(cid))
        landed[home] += 1
        p.disconnect()
    assert all(landed.values()), landed


def test_a_persistent_session_resumes_on_its_home_with_session_present(cluster):
    for version in (V5, V311):
        cid = cluster.ids_homed_on("n3", f"persist-v{version}")[0]
        first = connect(cluster.proxy.addr, cid, version, clean=False, expiry=600)
        assert code(first) == 0 and not first.connack[0].session_present
        first.client.subscribe("cluster/persist", qos=1)
        first.loop_until(lambda: any("SUBACK" in line for line in first.log), 5.0, "SUBACK")
        first.disconnect()
        again = connect(cluster.proxy.addr, cid, version, clean=False, expiry=600)
        assert code(again) == 0
        assert again.connack[0].session_present, f"{cid}: no session present on resume"
        if version == V5:
            assert again.user_properties()["berth-node"] == "n3"
        again.disconnect()


def test_the_wrong_node_refuses_with_the_home_address_and_counts_it(cluster):
    cid = cluster.ids_homed_on("n2", "elsewhere")[0]
    v5 = connect(cluster.addr_of("n1"), cid, V5)
    assert code(v5) == USE_ANOTHER_SERVER, v5.connack
    props = v5.connack[2]
    assert props.ServerReference == cluster.slot_map.nodes["n2"]
    assert "n2" in props.ReasonString and str(slot_of(cid)) in props.ReasonString
    v3 = connect(cluster.addr_of("n1"), cid, V311)
    # paho reports a 3.1.1 return code as the 5.0 reason code it maps to (3: 0x88).
    assert str(v3.connack[1]) == "Server unavailable", v3.connack
    with Conn(*cluster.addr_of("n1"), version=V311) as raw:
        ack = raw.connect(cid, expect_code=None)
        assert ack.code == SERVER_UNAVAILABLE_V3, ack

    # The three refusals counted on n1, in $SYS (read by a client n1 owns).
    watcher = cluster.ids_homed_on("n1", "sys-watcher")[0]
    with Conn(*cluster.addr_of("n1"), version=V5) as conn:
        conn.connect(watcher)
        conn.send(subscribe("$SYS/broker/clients/refused/other_node", V5))
        conn.read_packet()  # SUBACK
        deadline = time.monotonic() + 10
        seen = None
        while seen != b"3":
            assert time.monotonic() < deadline, f"refused/other_node is {seen!r}, not 3"
            seen = parse_publish(conn.read_packet(timeout=5), V5).payload
    # And in /metrics, as the other refusals.
    host, port = cluster.nodes["n1"].admin
    metrics = urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5).read().decode()
    refused = [line for line in metrics.splitlines()
               if line.startswith("berth_connections_refused_total{") and 'reason="other_node"' in line]
    assert refused and sum(float(line.split()[-1]) for line in refused) == 3, refused


def test_a_client_without_an_id_gets_one_whose_slot_and_core_are_where_it_was_accepted(cluster):
    nodes = set()
    for _ in range(12):
        p = connect(cluster.proxy.addr, "", V5)
        assert code(p) == 0
        assigned = p.connack[2].AssignedClientIdentifier
        users = p.user_properties()
        assert cluster.slot_map.home(assigned) == users["berth-node"], (assigned, users)
        assert users["berth-shard"] == users["berth-accepted-on"], users
        nodes.add(users["berth-node"])
        p.disconnect()
    assert len(nodes) >= 2, f"leastconn sent every empty id to {nodes}"


def test_a_slot_moved_with_set_map_and_sighup_takes_its_client_ids_to_the_new_home(cluster):
    cid = cluster.ids_homed_on("n1", "mover")[0]
    slot = slot_of(cid)
    before = connect(cluster.proxy.addr, cid, V5)
    assert before.user_properties()["berth-node"] == "n1"
    before.disconnect()

    cluster.slot_map.move(slot, "n2")
    cluster.proxy.set_map(slot, "n2")
    for node in cluster.nodes.values():
        mark = len(node.stderr_text())
        node.proc.send_signal(signal.SIGHUP)
        wait_for_line(node, r"configuration reloaded.*slot_map", after=mark)

    after = connect(cluster.proxy.addr, cid, V5)
    assert code(after) == 0, after.connack
    assert after.user_properties()["berth-node"] == "n2"
    after.disconnect()
    old = connect(cluster.addr_of("n1"), cid, V5)
    assert code(old) == USE_ANOTHER_SERVER
    assert old.connack[2].ServerReference == cluster.slot_map.nodes["n2"]


def test_a_map_that_does_not_read_keeps_the_old_one(cluster):
    node = cluster.nodes["n1"]
    with open(cluster.slot_map.path, "a") as f:
        f.write("9999 n1 1\n")
    mark = len(node.stderr_text())
    node.proc.send_signal(signal.SIGHUP)
    line = wait_for_line(node, r"configuration not reloaded", after=mark)
    assert "cluster.slot_map" in line or "slot-map" in line, line
    cid = cluster.ids_homed_on("n1", "still-here")[0]
    p = connect(cluster.addr_of("n1"), cid, V5)
    assert code(p) == 0
    p.disconnect()


def wait_for_line(node, pattern: str, after: int = 0, timeout: float = 10.0) -> str:
    import re
    rx = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while True:
        for line in node.stderr_text()[after:].splitlines():
            if rx.search(line):
                return line
        assert time.monotonic() < deadline, f"no line {pattern!r} within {timeout}s\n{node.describe()}"
        time.sleep(0.05)  # polling a file: the broker gives no other signal


def test_the_generated_haproxy_config_is_what_haproxy_2_6_takes(cluster):
    """`haproxy -c` passed in the fixture; the configuration holds one checked server per node
    and the slot rule, and the map one line per slot."""
    with open(cluster.proxy.config_path) as f:
        config = f.read()
    for name, address in cluster.slot_map.nodes.items():
        assert f"    server {name} {address} check\n" in config
    assert "crc32,mod(4096),map(" in config
    assert "tcp-request inspect-delay" in config and "mqtt_is_valid" in config
    with open(cluster.proxy.map_path) as f:
        lines = f.read().splitlines()
    assert len(lines) == 4096 and lines[0] == f"0 {cluster.slot_map.owner(0)}"
    assert mqtt  # paho is the client of these tests


def test_a_node_that_owns_no_slot_sends_every_client_elsewhere(tmp_path, start_node):
    """A node whose every slot is another's (being drained, say) refuses named and empty ids
    alike, naming the owner: it can give no client an id whose slot it owns."""
    from conftest import SlotMap, free_port
    slot_map = SlotMap(str(tmp_path / "slots.txt"), {"n1": f"127.0.0.2:{free_port('127.0.0.2')}",
                                                     "n2": "127.0.0.3:1883"})
    for s in range(4096):
        slot_map.owners[s] = ("n2", 1)
    slot_map.write()
    node = start_node("n1", "127.0.0.2", slot_map)
    for cid in ("", "anyone"):
        p = connect(node.addr, cid, V5)
        assert code(p) == USE_ANOTHER_SERVER, (cid, p.connack)
        assert p.connack[2].ServerReference == "127.0.0.3:1883"
