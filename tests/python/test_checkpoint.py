"""Checkpoints of the log (issue 5): stepwise, with traffic between the steps, and what a
`kill -9` leaves after them.

`test_a_slow_subscribers_messages_stay_in_place_and_survive_kill9`: an offline subscriber
holds messages that fill several (1 MiB) segments, so a checkpoint starts; publishing goes
on while it runs. Its log line says the held messages were kept where they were, not copied
(`kept=`, `messages=0`). The broker is then killed with SIGKILL; after the restart the
subscriber gets every message, in order.

`test_a_promoted_session_keeps_a_message_another_session_acknowledged_across_kill9`: a
message is delivered to a persistent session (which acknowledges it) and to a session
without expiry (which does not); that client reconnects with a Session Expiry, so its
session becomes persistent holding the message. After SIGKILL and a restart the message is
resent to it: its SNAPSHOT must find the message although the records that named it
(MESSAGE, then DONE of the other holder) released it on the way.
"""

from __future__ import annotations

import re
import time

from berthproc import Broker
from mqttwire import (PUBACK, PUBLISH, V5, Conn, ack_packet, parse_publish, prop_u32, properties,
                      publish_with, subscribe_many)

SUBACK = 9
SESSION_EXPIRY = 0x11
LOG_WAIT = 60.0


def start(tmp_path, name: str, data: str) -> Broker:
    workdir = tmp_path / name
    workdir.mkdir()
    return Broker.start("--fsync", "never", "--max-queued-messages", "1000000",
                        "--max-queued-bytes", "0", cores=1, workdir=str(workdir), data_dir=data)


def persistent(c: Conn, client_id: str, clean: bool = False):
    return c.connect(client_id, clean=clean, props=properties(prop_u32(SESSION_EXPIRY, 3600)))


def subscribe(c: Conn, topic_filter: str, qos: int = 1) -> None:
    c.send(subscribe_many([(topic_filter, qos)]))
    p = c.read_packet()
    assert p.ptype == SUBACK and p.body[-1] == qos, p


def publish_acked(c: Conn, topic: str, payload: bytes, packet_id: int) -> None:
    c.send(publish_with(topic, payload, qos=1, packet_id=packet_id))
    p = c.read_packet()
    assert p.ptype == PUBACK, p


def wait_for_log(broker: Broker, pattern: str) -> re.Match:
    deadline = time.monotonic() + LOG_WAIT
    while time.monotonic() < deadline:
        m = re.search(pattern, broker.stderr_text())
        if m:
            return m
        assert broker.alive(), broker.describe()
        time.sleep(0.05)
    raise AssertionError(f"no log line matching {pattern!r}\n{broker.describe()}")


def test_a_slow_subscribers_messages_stay_in_place_and_survive_kill9(tmp_path):
    data = str(tmp_path / "data")
    broker = start(tmp_path, "one", data)
    payload = lambda n: f"{n:05d}".encode() + b"x" * (64 << 10)  # noqa: E731
    sent = 0
    try:
        with Conn(*broker.addr) as sub:
            persistent(sub, "ckpt-slow")
            subscribe(sub, "ckpt/#")
        with Conn(*broker.addr) as pub:
            pub.connect("ckpt-pub")
            # About five segments' worth: the log is due for a checkpoint.
            for _ in range(80):
                sent += 1
                publish_acked(pub, "ckpt/big", payload(sent), sent % 60000 + 1)
            # Publishing goes on while the checkpoint runs, until its END is logged.
            deadline = time.monotonic() + LOG_WAIT
            while not re.search(r"log checkpoint", broker.stderr_text()):
                assert time.monotonic() < deadline, broker.describe()
                sent += 1
                publish_acked(pub, "ckpt/big", payload(sent), sent % 60000 + 1)
            line = wait_for_log(broker, r"log checkpoint.*")
            for _ in range(5):
                sent += 1
                publish_acked(pub, "ckpt/big", payload(sent), sent % 60000 + 1)
        fields = dict(re.findall(r"(\w+)=(\d+)", line.group(0)))
        assert int(fields.get("kept", "0")) > 0 and fields.get("messages") == "0", line.group(0)
    finally:
        broker.kill()
    broker = start(tmp_path, "two", data)
    try:
        with Conn(*broker.addr) as sub:
            ack = persistent(sub, "ckpt-slow")
            assert ack.session_present
            got = []
            while len(got) < sent:
                p = parse_publish(sub.read_packet(), V5)
                got.append(int(p.payload[:5]))
                sub.send(ack_packet(PUBACK, p.packet_id))
        assert got == list(range(1, sent + 1))
    finally:
        broker.kill()


def test_a_promoted_session_keeps_a_message_another_session_acknowledged_across_kill9(tmp_path):
    data = str(tmp_path / "data")
    broker = start(tmp_path, "one", data)
    try:
        kept = Conn(*broker.addr)
        persistent(kept, "promo-kept")
        subscribe(kept, "promo/t")
        clean = Conn(*broker.addr)
        clean.connect("promo-clean")  # Clean Start, no Session Expiry: not journaled
        subscribe(clean, "promo/t")
        with Conn(*broker.addr) as pub:
            pub.connect("promo-pub")
            publish_acked(pub, "promo/t", b"held", 1)
        p = parse_publish(kept.read_packet(), V5)
        kept.send(ack_packet(PUBACK, p.packet_id))
        kept.ping()  # the acknowledgement is applied
        assert parse_publish(clean.read_packet(), V5).payload == b"held"  # not acknowledged
        # The same client id again, with a Session Expiry: the session goes on, persistent.
        again = Conn(*broker.addr)
        ack = persistent(again, "promo-clean")
        assert ack.session_present
        p = again.read_packet()
        assert p.ptype == PUBLISH and parse_publish(p, V5).payload == b"held", p
        again.ping()
    finally:
        broker.kill()
    broker = start(tmp_path, "two", data)
    try:
        with Conn(*broker.addr) as c:
            ack = persistent(c, "promo-clean")
            assert ack.session_present
            p = parse_publish(c.read_packet(), V5)
            assert (p.payload, p.dup) == (b"held", True)
            c.send(ack_packet(PUBACK, p.packet_id))
            c.ping()
    finally:
        broker.kill()
