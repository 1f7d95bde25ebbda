"""QoS 2 exactly once across nodes (README "Cluster (preview)"): the node a message is for
takes each message of its stream once, even when the stream delivers it again because the
node was killed between storing it and acknowledging it.

`BERTH_TEST_HOLD_STREAM_ACKS` (a test hook, off by default) makes a node store its stream's
messages without acknowledging them, which puts every message at that point; the node is
then killed with SIGKILL and restarted without the hook, and JetStream delivers them all
again once their acknowledgement wait (30 s) has run out.
"""

from __future__ import annotations

import os
import time

from test_nats_bridge import Client, WAIT, _wait_acked, name, until_routed

# JetStream delivers an unacknowledged message again after the consumer's ack wait (30 s).
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
    # A later message of the same publisher comes through the same stream and core after them.
    assert pub.publish("once/last", b"last", 2) == 0
    back = Client(sub_id, a2.addr, clean=False, expiry=600)
    assert back.connack[0].session_present
    back.loop_until(lambda: back.received("once/last"), "once/last")
    got = [m.payload for m in back.messages if m.topic != "once/probe"]
    assert got == [f"m{i}".encode() for i in range(count)] + [b"last"], got
    back.close()
    pub.close()
