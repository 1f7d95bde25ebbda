"""QoS 2 exactly once across nodes (README "Cluster (preview)"): the node a message is for
takes each message of its stream once, even when the stream delivers it again because the
node was killed between storing it and acknowledging it.

`BERTH_TEST_HOLD_STREAM_ACKS` (a test hook, off by default) makes a node store its stream's
messages without acknowledging them, which puts every message at that point; the node is
then killed with SIGKILL and restarted without the hook; the restarted node makes its
stream's consumer anew, so JetStream delivers them all again at once, in order.
"""

from __future__ import annotations

import os
import time

from test_nats_bridge import Client, WAIT, _wait_acked, name, until_routed

# At most the consumer's ack wait (30 s) and some: a node makes its consumer anew at start,
# so its unacknowledged messages come again at once; the ack wait covers anything else.
REDELIVERY = 45.0


def test_a_qos2_message_delivered_again_after_a_kill_is_stored_once(start_nats, start_nats_node,
                                                                   tmp_path, monkeypatch):
    nats = start_nats()
    data = str(tmp_path / "na-data")
    os.makedirs(data)
    monkeypatch.setenv("BERTH_TEST_HOLD_STREAM_ACKS", "1")
    a = start_nats_node("na", nats, data_dir=data)
    monkeypatch.delenv("BERTH_TEST_HOLD_STREAM_ACKS")
    b = start_nats_node("nb", nats)
    sub_id = name("na")
    sub = Client(sub_id, a.addr, expiry=600)
    sub.subscribe("once/#", qos=2)
    pub = Client(name("nb"), b.addr)
    until_routed(pub, sub, "once/probe")
    sub.close()  # offline: the messages wait in its session, in na's log
    count = 20
    for i in range(count):
        assert pub.publish(f"once/{i}", f"m{i}".encode(), 2) == 0

    # na has stored all of them durably (nb's PUBCOMP waited only for the stream) and
    # acknowledged none: the hook logs each it leaves unacknowledged.
    deadline = time.monotonic() + WAIT
    while (held := a.stderr_text().count("left unacknowledged")) < count:
        assert time.monotonic() < deadline, f"na stored {held} of its stream's {count} messages"
        time.sleep(0.05)
    consumers = nats.stream("BERTH_IN_na")["consumer_detail"]
    assert consumers[0]["num_ack_pending"] == count, consumers
    a.proc.kill()
    a.proc.wait()
    a.stop(sig=None)

    a2 = start_nats_node("na", nats, data_dir=data)
    # The stream delivers all 20 again; na skips them and acknowledges them.
    _wait_acked(nats, "BERTH_IN_na", time.monotonic() + REDELIVERY)
    assert nats.stream("BERTH_IN_na")["state"]["messages"] == 0
    delivered = nats.stream("BERTH_IN_na")["consumer_detail"][0]["delivered"]
    assert delivered["consumer_seq"] == count, f"not all delivered again: {delivered}"
    # A later message of the same publisher comes through the same stream and core after them.
    assert pub.publish("once/last", b"last", 2) == 0
    back = Client(sub_id, a2.addr, clean=False, expiry=600)
    assert back.connack[0].session_present
    back.loop_until(lambda: back.received("once/last"), "once/last")
    got = [m.payload for m in back.messages if m.topic != "once/probe"]
    assert got == [f"m{i}".encode() for i in range(count)] + [b"last"], got
    back.close()
    pub.close()


def test_kill_a_node_under_load(start_nats, start_nats_node, tmp_path):
    """A publisher on na sends numbered QoS 1 and QoS 2 messages for persistent subscribers on
    nb; nb is killed (SIGKILL) mid-stream, the publisher goes on, nb restarts on its data
    directory: every acknowledged message arrives, in order, QoS 2 exactly once and QoS 1 at
    least once; a client of na that takes no part is not disturbed.

    The QoS 1 subscriber is online when nb dies (its unacknowledged messages come again,
    possibly twice); the QoS 2 one is offline then (a new client after a crash cannot tell a
    resent QoS 2 PUBLISH whose PUBREC the broker had not logged from a new message)."""
    nats = start_nats()
    data = str(tmp_path / "nb-data")
    os.makedirs(data)
    a = start_nats_node("na", nats)
    b = start_nats_node("nb", nats, data_dir=data)
    id1, id2 = name("nb"), name("nb")
    sub1, sub2 = Client(id1, b.addr, expiry=600), Client(id2, b.addr, expiry=600)
    sub1.subscribe("load/q1", qos=1)
    sub2.subscribe("load/q2", qos=2)
    pub = Client(name("na"), a.addr)
    until_routed(pub, sub1, "load/q1")
    until_routed(pub, sub2, "load/q2")
    sub2.close()
    bystander = Client(name("na"), a.addr)
    disconnects = []
    bystander.client.on_disconnect = lambda c, u, f, rc, p: disconnects.append(rc)
    bystander.subscribe("calm/#", qos=1)

    count = 1000
    sent: dict[int, tuple[int, int]] = {}  # mid -> (qos, number)
    for i in range(count):
        for qos in (1, 2):
            info = pub.client.publish(f"load/q{qos}", str(i).encode(), qos=qos)
            sent[info.mid] = (qos, i)

    def acked() -> dict[int, list[int]]:
        done = {1: [], 2: []}
        for mid, rc in pub.acks.items():
            if mid in sent and rc == 0:
                qos, i = sent[mid]
                done[qos].append(i)
        return done

    def pump(until, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not until():
            assert time.monotonic() < deadline, f"{what} did not happen within {timeout}s"
            pub.client.loop(timeout=0.01)
            sub1.client.loop(timeout=0.0)
            bystander.client.loop(timeout=0.0)

    pump(lambda: len(pub.acks) >= count // 2, "half the acknowledgements", 60)
    b.proc.kill()
    b.proc.wait()
    b.stop(sig=None)
    killed_at = len(pub.acks)
    pump(lambda: len([m for m in pub.acks if m in sent]) == len(sent), "every answer", 60)
    assert len(pub.acks) > killed_at, "nothing was published while nb was down"
    done = acked()
    assert len(done[1]) + len(done[2]) > killed_at, "nothing was acknowledged while nb was down"

    parked = nats.stream("BERTH_IN_nb")["state"]["messages"]
    assert parked > 0, "no message waits in nb's stream"
    print(f"acknowledged: QoS 1 {len(done[1])}, QoS 2 {len(done[2])}; {parked} waiting in nb's stream")
    b2 = start_nats_node("nb", nats, data_dir=data)
    back1 = Client(id1, b2.addr, clean=False, expiry=600)
    back2 = Client(id2, b2.addr, clean=False, expiry=600)
    assert back1.connack[0].session_present and back2.connack[0].session_present
    numbers = lambda c, t: [int(m.payload) for m in c.messages if m.topic == t and m.payload != b"probe"]
    got1 = lambda: numbers(sub1, "load/q1") + numbers(back1, "load/q1")

    def all_arrived() -> bool:
        back1.client.loop(timeout=0.01)
        back2.client.loop(timeout=0.0)
        return set(done[1]) <= set(got1()) and set(done[2]) <= set(numbers(back2, "load/q2"))

    deadline = time.monotonic() + REDELIVERY + WAIT
    while not all_arrived():
        assert time.monotonic() < deadline, (
            f"missing QoS 1: {sorted(set(done[1]) - set(got1()))[:20]}, "
            f"QoS 2: {sorted(set(done[2]) - set(numbers(back2, 'load/q2')))[:20]}")
    # Whatever the stream delivers again has been handled once it is empty; a last QoS 2
    # message of the same publisher comes through the same stream and core after it.
    _wait_acked(nats, "BERTH_IN_nb", time.monotonic() + REDELIVERY)
    assert pub.publish("load/q2", b"999999", 2) == 0
    back2.loop_until(lambda: 999999 in numbers(back2, "load/q2"), "the last QoS 2 message")
    q2 = numbers(back2, "load/q2")[:-1]
    assert len(q2) == len(set(q2)), f"QoS 2 duplicates: {[n for n in set(q2) if q2.count(n) > 1]}"
    assert q2 == sorted(q2), "QoS 2 out of order"
    first_seen = list(dict.fromkeys(got1()))
    assert first_seen == sorted(first_seen), "QoS 1 out of order"

    # na's uninvolved client was never disconnected and still works.
    assert bystander.publish("calm/x", b"still here", 1) == 0
    bystander.loop_until(lambda: bystander.received("calm/x"), "calm/x")
    assert disconnects == []
    for c in (back1, back2, pub, bystander):
        c.close()


def test_a_qos2_message_routed_again_after_a_crash_reaches_the_other_node(start_nats, start_nats_node,
                                                                          tmp_path, monkeypatch):
    """A persistent publisher's QoS 2 message journaled and routed on na, whose forward to nb
    never left (`BERTH_TEST_DROP_NODE_FORWARDS`, a test hook off by default), and na killed
    before PUBREC: at restart na routes it again after the other nodes' interest is known,
    so nb's subscriber gets it, once."""
    nats = start_nats()
    data = str(tmp_path / "na-data")
    os.makedirs(data)
    monkeypatch.setenv("BERTH_TEST_DROP_NODE_FORWARDS", "1")
    a = start_nats_node("na", nats, data_dir=data)
    monkeypatch.delenv("BERTH_TEST_DROP_NODE_FORWARDS")
    b = start_nats_node("nb", nats)
    sub = Client(name("nb"), b.addr)
    sub.subscribe("re/#", qos=2)
    pub_id = name("na")
    pub = Client(pub_id, a.addr, expiry=600)
    until_routed(pub, sub, "re/probe")
    info = pub.client.publish("re/x", b"again", qos=2)
    deadline = time.monotonic() + WAIT
    while "neither sent nor answered" not in a.stderr_text():
        assert time.monotonic() < deadline, "the forward never reached the bridge"
        pub.client.loop(timeout=0.02)
    assert info.mid not in pub.acks, "PUBREC left although the forward was not answered"
    a.proc.kill()
    a.proc.wait()
    a.stop(sig=None)

    a2 = start_nats_node("na", nats, data_dir=data)
    sub.loop_until(lambda: sub.received("re/x"), "re/x after na's restart", timeout=WAIT + 15)
    later = Client(pub_id, a2.addr, clean=False, expiry=600)
    assert later.connack[0].session_present
    assert later.publish("re/last", b"last", 2) == 0
    sub.loop_until(lambda: sub.received("re/last"), "re/last")
    assert [m.payload for m in sub.received("re/x")] == [b"again"]
    for c in (sub, later):
        c.close()
