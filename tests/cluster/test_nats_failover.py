"""Berth nodes on three nats-servers clustered with JetStream (README "Cluster (preview)"):
the node's stream and the cluster's buckets get 3 replicas there (1 on a lone server), an
existing stream is scaled to the configured count, and killing (SIGKILL) the server that leads
a node's stream under QoS 1/2 load loses nothing acknowledged: every acknowledged QoS 1
message arrives at least once, every acknowledged QoS 2 message exactly once, each publisher's
numbers in order.
"""

from __future__ import annotations

import time

from test_nats_bridge import Client, WAIT, name, until_routed

STREAMS = ["KV_berth_interest", "KV_berth_nodes", "KV_berth_retained"]
# A new stream leader is elected within seconds; publishers' waits may run to their bounds.
FAILOVER = 90.0


def wait_replicas(nats, stream: str, count: int) -> None:
    deadline = time.monotonic() + WAIT + 20
    while nats.replicas(stream) != count:
        assert time.monotonic() < deadline, f"{stream}: {nats.replicas(stream)} replicas, not {count}"
        time.sleep(0.2)  # polling: the monitoring endpoint gives no other signal


def test_a_lone_server_gets_one_replica(start_nats, start_nats_node):
    nats = start_nats()
    start_nats_node("na", nats)
    for stream in ["BERTH_IN_na", *STREAMS]:
        assert nats.stream(stream)["config"].get("num_replicas", 1) == 1, stream


def test_three_replicas_on_a_nats_cluster_and_an_existing_stream_scaled(start_nats_cluster,
                                                                         start_nats_node):
    nats = start_nats_cluster()
    a = start_nats_node("na", nats, "--nats-replicas", "1")
    for stream in ["BERTH_IN_na", *STREAMS]:
        wait_replicas(nats, stream, 1)
    a.stop()
    # Restarted without the flag: 3 (the servers are clustered), the stream scaled in place.
    start_nats_node("na", nats)
    start_nats_node("nb", nats)
    for stream in ["BERTH_IN_na", "BERTH_IN_nb", *STREAMS]:
        wait_replicas(nats, stream, 3)


def test_kill_the_stream_leader_under_load(start_nats_cluster, start_nats_node):
    """Publishers on na (one at QoS 1, one at QoS 2, each numbering its messages) for
    persistent subscribers on nb; the server leading BERTH_IN_nb is killed mid-stream, the
    publishers go on (answers may be refusals or come late), the server is restarted."""
    nats = start_nats_cluster()
    a = start_nats_node("na", nats)
    b = start_nats_node("nb", nats)
    wait_replicas(nats, "BERTH_IN_nb", 3)
    sub1, sub2 = Client(name("nb"), b.addr, expiry=600), Client(name("nb"), b.addr, expiry=600)
    sub1.subscribe("fo/q1", qos=1)
    sub2.subscribe("fo/q2", qos=2)
    pubs = {1: Client(name("na"), a.addr), 2: Client(name("na"), a.addr)}
    until_routed(pubs[1], sub1, "fo/q1")
    until_routed(pubs[2], sub2, "fo/q2")
    clients = [*pubs.values(), sub1, sub2]

    count = 600
    sent: dict[int, dict[int, int]] = {1: {}, 2: {}}  # qos -> mid -> number
    for i in range(count):
        for qos, pub in pubs.items():
            sent[qos][pub.client.publish(f"fo/q{qos}", str(i).encode(), qos=qos).mid] = i

    def answered(qos: int) -> int:
        return sum(1 for mid in sent[qos] if mid in pubs[qos].acks)

    def pump(until, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not until():
            assert time.monotonic() < deadline, f"{what} did not happen within {timeout}s"
            for c in clients:
                c.client.loop(timeout=0.005)

    pump(lambda: answered(1) + answered(2) >= count // 2, "half the answers", 60)
    leader = nats.leader("BERTH_IN_nb")
    nats.members[leader].kill()
    killed_at = answered(1) + answered(2)
    pump(lambda: answered(1) == count and answered(2) == count, "every answer", FAILOVER + 60)
    assert answered(1) + answered(2) > killed_at, "nothing was answered after the kill"
    new_leader = nats.leader("BERTH_IN_nb")
    assert new_leader != leader
    nats.members[leader].start_again()
    nats.wait_healthy()

    acked = {qos: [sent[qos][mid] for mid, rc in pubs[qos].acks.items() if mid in sent[qos] and rc == 0]
             for qos in (1, 2)}
    refused = {qos: count - len(acked[qos]) for qos in (1, 2)}
    print(f"leader {leader} killed after {killed_at} answers, {new_leader} took over; "
          f"acknowledged QoS 1 {len(acked[1])}, QoS 2 {len(acked[2])}; refused {refused}")
    assert acked[1] and acked[2]

    def numbers(c: Client, qos: int) -> list[int]:
        return [int(m.payload) for m in c.messages if m.topic == f"fo/q{qos}" and m.payload != b"probe"]

    subs = {1: sub1, 2: sub2}
    pump(lambda: all(set(acked[q]) <= set(numbers(subs[q], q)) for q in (1, 2)),
         "every acknowledged message delivered", FAILOVER)
    # A last message of each publisher comes after anything the stream may deliver again.
    for qos, pub in pubs.items():
        assert pub.publish(f"fo/q{qos}", b"999999", qos) == 0
    pump(lambda: all(999999 in numbers(subs[q], q) for q in (1, 2)), "the last messages", FAILOVER)
    q2 = numbers(sub2, 2)
    assert len(q2) == len(set(q2)), f"QoS 2 duplicates: {sorted(n for n in set(q2) if q2.count(n) > 1)[:20]}"
    assert q2 == sorted(q2), "QoS 2 out of order"
    first_seen = list(dict.fromkeys(numbers(sub1, 1)))
    assert first_seen == sorted(first_seen), "QoS 1 out of order"
    for c in clients:
        c.close()
