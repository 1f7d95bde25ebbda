"""Shared subscriptions (`$share/{group}/{filter}`, MQTT 5.0 section 4.8.2, and from 3.1.1
clients too) on a 2-core broker: members and publishers on both cores.

"Nothing else arrived" is proven with a marker: every member also holds a plain subscription
to a marker topic, and each publisher sends the marker after its messages. A publisher's
messages reach a member in order, so once a member has seen every publisher's marker it has
everything the group sent it.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import threading
import queue

import pytest

from bgclient import T, ClientSet
from mqttwire import V5, V311, Conn, ids_owned_by, mqtt_str, packet, read_vbi

CORES = 2
VERSIONS = pytest.mark.parametrize("version", [V311, V5], ids=["v311", "v5"])


def on_core(core: int, name: str, n: int = 1) -> list[str]:
    return ids_owned_by(core, CORES, name, n)


@pytest.fixture
def mk(broker):
    clients = ClientSet(broker)
    yield clients
    clients.close()


def publish_from_each_core(mk, prefix: str, topic: str, n: int, marker: str, version: int = V5) -> set[bytes]:
    """`n` QoS 1 messages from a publisher owned by each core, then each one's marker."""
    sent = set()
    pubs = [mk(on_core(core, f"{prefix}-pub{core}")[0], version) for core in range(CORES)]
    for core, pub in enumerate(pubs):
        for i in range(n):
            payload = f"{core}:{i}".encode()
            pub.pub(topic, payload, qos=1, wait=False)
            sent.add(payload)
    for pub in pubs:
        pub.pub(marker, b"end", qos=1)
    return sent


def received(members, marker: str) -> dict[str, list[bytes]]:
    return {m.cid: [msg.payload for msg in m.get_until(marker, markers=CORES)] for m in members}


@VERSIONS
def test_mqtt_4_8_2_each_message_reaches_exactly_one_member_across_cores(mk, version):
    members = [mk(cid, version) for core in range(CORES) for cid in on_core(core, f"grp-{version}", 2)]
    for m in members:
        assert m.sub("$share/workers/jobs/+", 1) == [1]
        assert m.sub("jobs-end", 1) == [1]
    sent = publish_from_each_core(mk, f"grp-{version}", "jobs/a", 200, "jobs-end", version)
    got = received(members, "jobs-end")
    everything = [p for payloads in got.values() for p in payloads]
    assert len(everything) == len(sent), f"{len(everything)} deliveries for {len(sent)} messages"
    assert set(everything) == sent, "every message once, none twice"
    share = len(sent) / len(members)
    for cid, payloads in got.items():
        assert len(payloads) >= share / 2, f"{cid} got {len(payloads)} of {len(sent)}: {[len(p) for p in got.values()]}"


def test_two_groups_and_plain_subscribers_each_get_every_message(mk):
    one = [mk(on_core(core, "two-g1")[0]) for core in range(CORES)]
    two = [mk(on_core(core, "two-g2")[0], V311) for core in range(CORES)]
    plain = [mk(on_core(core, "two-plain")[0]) for core in range(CORES)]
    for m in one:
        assert m.sub("$share/one/two/#", 1) == [1]
    for m in two:
        assert m.sub("$share/two/two/+", 2) == [2]
    for m in plain:
        assert m.sub("two/#", 1) == [1]
    for m in one + two + plain:
        assert m.sub("two-end", 1) == [1]
    sent = publish_from_each_core(mk, "two", "two/x", 50, "two-end")
    for group in (one, two):
        got = [p for payloads in received(group, "two-end").values() for p in payloads]
        assert sorted(got) == sorted(sent), f"group {[m.cid for m in group]}"
    for m in plain:
        assert sorted(received([m], "two-end")[m.cid]) == sorted(sent), m.cid


def test_a_member_that_leaves_gets_nothing_and_the_group_loses_nothing(mk, broker):
    stay = mk(on_core(0, "leave-stay")[0])
    unsub = mk(on_core(1, "leave-unsub")[0])
    gone_id = on_core(1, "leave-gone")[0]
    gone = mk(gone_id)
    for m in (stay, unsub, gone):
        assert m.sub("$share/g/leave/t", 1) == [1]
        assert m.sub("leave-end", 1) == [1]
    unsub.unsub("$share/g/leave/t")
    gone.disconnect()
    # The broker has dealt with `gone` leaving once a new connection for its client id has
    # its CONNACK: a takeover waits for the old connection to stop, and a clean start
    # ends whatever session was left.
    mk(gone_id).disconnect()
    sent = publish_from_each_core(mk, "leave", "leave/t", 100, "leave-end")
    got = received([stay, unsub], "leave-end")
    assert got[unsub.cid] == [], "an unsubscribed member must get nothing more"
    assert sorted(got[stay.cid]) == sorted(sent), "the member left must get everything"


def test_members_of_3_1_1_5_0_and_mosquitto_sub_share_one_group(mk, broker):
    sub_bin = shutil.which("mosquitto_sub")
    assert sub_bin, "mosquitto_sub is missing; tests/run-all.sh installs mosquitto-clients"
    procs, lines = [], []
    for core, version in ((0, "mqttv311"), (1, "mqttv5")):
        cid = on_core(core, f"mosq-share-{version}")[0]
        # Line-buffered: mosquitto_sub's stdout is a pipe here.
        argv = ["stdbuf", "-oL", sub_bin, "-h", broker.host, "-p", str(broker.port), "-V", version, "-i", cid,
                "-q", "1", "-t", "$share/mixed/mix/t", "-t", "mix-end", "-v", "-d"]
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        out: queue.Queue = queue.Queue()
        threading.Thread(target=lambda p=proc, q=out: [q.put(l.rstrip("\n")) for l in p.stdout],
                         daemon=True).start()
        procs.append(proc)
        lines.append(out)
    try:
        for out in lines:
            while "received SUBACK" not in out.get(timeout=T):
                pass
        paho = [mk(on_core(1, "mix-paho-v311")[0], V311), mk(on_core(0, "mix-paho-v5")[0])]
        for m in paho:
            assert m.sub("$share/mixed/mix/t", 1) == [1]
            assert m.sub("mix-end", 1) == [1]
        sent = publish_from_each_core(mk, "mix", "mix/t", 60, "mix-end")
        got = {m.cid: received([m], "mix-end")[m.cid] for m in paho}
        for n, out in enumerate(lines):
            payloads, markers = [], 0
            while markers < CORES:
                line = out.get(timeout=T)
                if line == "mix-end end":
                    markers += 1
                elif line.startswith("mix/t "):
                    payloads.append(line.split(" ", 1)[1].encode())
            got[f"mosquitto_sub-{n}"] = payloads
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=T)
    everything = [p for payloads in got.values() for p in payloads]
    assert sorted(everything) == sorted(sent), {k: len(v) for k, v in got.items()}
    assert all(got.values()), f"every member gets a share: {({k: len(v) for k, v in got.items()})}"


def _raw_suback(conn: Conn, flt: str, options: int, packet_id: int) -> list[int]:
    body = struct.pack(">H", packet_id) + (b"\x00" if conn.version == V5 else b"")
    conn.send(packet(0x82, body + mqtt_str(flt) + bytes([options])))
    p = conn.read_packet()
    assert p.ptype == 9 and p.body[:2] == struct.pack(">H", packet_id), f"expected SUBACK, got {p!r}"
    i = 2
    if conn.version == V5:
        plen, i = read_vbi(p.body, 2)
        i += plen
    return list(p.body[i:])


@VERSIONS
def test_shared_subscriptions_are_available(broker, version):
    with Conn(*broker.addr, version=version) as conn:
        ack = conn.connect(on_core(1, f"avail-{version}")[0])
        if version == V5:
            assert ack.props.get(0x2A) == 1, f"Shared Subscription Available must be 1: {ack.props}"
        assert _raw_suback(conn, "$share/g/t", 1, 1) == [1]
        bad = 0x8F if version == V5 else 0x80
        for n, flt in enumerate(("$share/g", "$share//t", "$share/g+/t", "$share/g/a#"), start=2):
            assert _raw_suback(conn, flt, 1, n) == [bad], flt
        conn.ping()


def test_mqtt_3_8_3_4_no_local_on_a_shared_subscription_is_a_protocol_error(broker):
    with Conn(*broker.addr, version=V5) as conn:
        conn.connect(on_core(0, "nolocal")[0])
        body = struct.pack(">H", 1) + b"\x00" + mqtt_str("$share/g/t") + bytes([0x01 | 0x04])
        conn.send(packet(0x82, body))
        packets = conn.read_until_closed()
        assert [(p.ptype, p.body[:1]) for p in packets] == [(14, b"\x82")], packets


def test_mqtt_3_3_1_3_no_retained_message_on_a_shared_subscribe(mk):
    pub = mk(on_core(0, "ret-pub")[0])
    pub.c.publish("shr/t", b"kept", qos=1, retain=True).wait_for_publish(T)
    member = mk(on_core(1, "ret-member")[0])
    assert member.sub("$share/g/shr/t", 1) == [1]
    assert member.sub("shr-end", 1) == [1]
    pub.pub("shr-end", b"end", qos=1)
    assert member.get_until("shr-end") == [], "a shared subscription must not get retained messages"
    assert member.sub("shr/t", 1) == [1]
    m = member.get()
    assert (m.topic, m.payload, m.retain) == ("shr/t", b"kept", True), "a plain one does"
