"""A full disk, and the broker-wide bound on what it holds: berth acknowledges a QoS 1/2
message only once it is stored.

The data directory sits on a small tmpfs (conftest's `small_fs`: it needs root, as CI runs;
elsewhere the tests are skipped) with 1 MiB segments, and a filler file takes most of it so
that the broker runs out of space after a few hundred messages. Then:
- a v5 publisher gets PUBACK/PUBREC 0x97 (Quota exceeded), a 3.1.1 publisher is closed
  without an acknowledgement, QoS 0 and everything that needs no new record keep working,
  the condition is logged once (not once per record) and counted in `$SYS`;
- once the filler is deleted the broker takes messages again by itself;
- after a kill -9 every message that was acknowledged comes back, also when the subscriber
  had drained part of its queue while the disk was full (SENT/DONE records in the reserve).
"""

from __future__ import annotations

import os
import shutil
import time
import uuid

import pytest

from berthproc import Broker
from mqttwire import (PUBACK, SUBACK, V311, V5, Closed, Conn, ack_packet, ids_owned_by,
                      packet_id_of, parse_publish, publish_with, subscribe, subscribe_many)

PUBREC, PUBREL, PUBCOMP = 5, 6, 7
QUOTA_EXCEEDED = 0x97
PAYLOAD = 16 << 10
FLAGS = ("--segment-size", "1048576", "--max-queued-messages", "1000000", "--fsync", "never",
         "--sys-interval", "1")
SUBSCRIBERS = ids_owned_by(0, 2, "full-sub-", 1) + ids_owned_by(1, 2, "full-sub-", 1)


def fill(mount, leave: int) -> str:
    """A filler file that leaves `leave` bytes free on `mount`; returns its path."""
    path = os.path.join(mount, "filler")
    free = shutil.disk_usage(mount).free
    with open(path, "wb") as f:
        f.write(b"\xff" * max(0, free - leave))
    return path


def start(data: str, workdir: str, *extra: str) -> Broker:
    os.makedirs(workdir, exist_ok=True)
    return Broker.start(*FLAGS, *extra, cores=2, workdir=workdir, data_dir=data)


def subscribe_offline(addr, version: int = V311) -> None:
    for sid in SUBSCRIBERS:
        with Conn(*addr, version=version) as c:
            c.connect(sid, clean=False)
            c.send(subscribe_many([("full/#", 1)], version))
            assert c.read_packet().ptype == SUBACK
            c.send(b"\xe0\x00")


def v5_ack_code(p) -> int:
    return p.body[2] if len(p.body) > 2 else 0


def publish_some(addr, client_id: str, qos: int, acked: list[int], first: int,
                 limit: int) -> int | None:
    """Publishes up to `limit` QoS `qos` messages of PAYLOAD bytes (one at a time, v5) and
    stops at the first refused with 0x97, which it returns (None: all were acknowledged).
    Records the acknowledged sequence numbers in `acked`."""
    with Conn(*addr, version=V5) as c:
        c.connect(client_id, clean=True)
        for seq in range(first, first + limit):
            body = f"{seq}:".encode().ljust(PAYLOAD, b".")
            pid = seq % 65535 + 1
            c.send(publish_with("full/t", body, V5, qos=qos, packet_id=pid))
            p = c.read_packet(timeout=20)
            assert p.ptype == (PUBACK if qos == 1 else PUBREC) and packet_id_of(p) == pid, p
            code = v5_ack_code(p)
            if qos == 2 and code < 0x80:
                c.send(ack_packet(PUBREL, pid))
                assert c.read_packet().ptype == PUBCOMP
            if code == QUOTA_EXCEEDED:
                return seq
            assert code == 0, f"unexpected reason code {code:#x}"
            acked.append(seq)
    return None


def publish_until_refused(addr, client_id: str, qos: int, acked: list[int], limit: int = 4000) -> int:
    refused = publish_some(addr, client_id, qos, acked, 0, limit)
    assert refused is not None, f"{limit} messages of {PAYLOAD} bytes were all acknowledged on a full disk"
    return refused


def wait_until_accepted(addr, client_id: str, acked: list[int], first: int, within: float) -> None:
    """Publishes a few messages now and then until all of them are acknowledged."""
    deadline = time.monotonic() + within
    while (first := publish_some(addr, client_id, 1, acked, first + 1, 5)) is not None:
        assert time.monotonic() < deadline, f"still refusing after {within} s"
        time.sleep(0.3)


def drain(addr, client_id: str, until: int | None = None, take: int | None = None) -> list[int]:
    """Reconnects a subscriber and takes queued messages (acknowledging each) until it has
    `take` of them, or until none comes for a while; returns their sequence numbers."""
    got = []
    with Conn(*addr, version=V311) as c:
        assert c.connect(client_id, clean=False).session_present, f"{client_id}: session lost"
        while take is None or len(got) < take:
            try:
                p = c.read_packet(timeout=3)
            except AssertionError:
                break
            if p.ptype == PUBREL:
                c.send(ack_packet(PUBCOMP, packet_id_of(p)))
                continue
            m = parse_publish(p, V311)
            c.send(ack_packet(PUBACK if m.qos == 1 else PUBREC, m.packet_id))
            got.append(int(m.payload.split(b":", 1)[0]))
        c.send(b"\xe0\x00")
    return got


def sys_value(addr, topic: str) -> int:
    with Conn(*addr, version=V311) as c:
        c.connect("full-sys-" + uuid.uuid4().hex[:6], clean=True)
        c.send(subscribe(topic, V311))
        assert c.read_packet().ptype == SUBACK
        p = parse_publish(c.read_packet(timeout=5), V311)
        return int(p.payload)


def assert_nothing_acknowledged_lost(data: str, workdir: str, acked: list[int],
                                     taken: dict[str, set[int]] | None = None) -> None:
    """Restarts on `data` and drains every subscriber: each acknowledged message arrives,
    now or (`taken`) before the restart."""
    broker = start(data, workdir)
    try:
        for sid in SUBSCRIBERS:
            got = (taken or {}).get(sid, set()) | set(drain(broker.addr, sid))
            missing = sorted(set(acked) - got)
            assert not missing, f"{sid} lost {len(missing)} acknowledged messages: {missing[:10]}"
    finally:
        broker.assert_clean_exit()


def test_a_full_disk_refuses_what_it_cannot_store_and_loses_nothing_acknowledged(small_fs, tmp_path):
    fs = small_fs(32)
    data = os.path.join(fs, "data")
    os.makedirs(data)
    broker = start(data, str(tmp_path / "b0"))
    subscribe_offline(broker.addr)
    filler = fill(fs, 6 << 20)
    acked: list[int] = []
    try:
        refused = publish_until_refused(broker.addr, "full-pub", 1, acked)
        assert acked, "nothing was acknowledged before the disk filled"

        # A 3.1.1 publisher has no negative acknowledgement: it is closed, unacknowledged.
        with Conn(*broker.addr, version=V311) as c:
            c.connect("full-pub-311", clean=True)
            c.send(publish_with("full/t", b"x" * PAYLOAD, V311, qos=1, packet_id=7))
            with pytest.raises(Closed):
                p = c.read_packet(timeout=10)
                raise AssertionError(f"a 3.1.1 publisher got {p!r} on a full disk")

        # What needs no new record goes on: a clean session subscribes and gets QoS 0.
        with Conn(*broker.addr, version=V5) as sub, Conn(*broker.addr, version=V5) as pub:
            sub.connect("full-live", clean=True)
            sub.send(subscribe("live/#", V5))
            assert sub.read_packet().ptype == SUBACK
            pub.connect("full-live-pub", clean=True)
            pub.send(publish_with("live/x", b"still here", V5))
            assert parse_publish(sub.read_packet(), V5).payload == b"still here"
            sub.ping()

        # Logged once per episode (per core at most), not once per record; counted in $SYS.
        log = broker.stderr_text()
        assert 1 <= log.count("cannot make the next segment") <= 2, broker.describe()
        assert log.count("cannot write a record") <= 2, broker.describe()
        deadline = time.monotonic() + 10
        while sys_value(broker.addr, "$SYS/broker/publish/messages/refused") < 2:
            assert time.monotonic() < deadline, "$SYS does not count the refused publishes"
            time.sleep(0.5)

        # Space is back: the broker takes messages again by itself.
        os.remove(filler)
        wait_until_accepted(broker.addr, "full-pub", acked, refused, within=15)
        assert "space is back" in broker.stderr_text(), broker.describe()
    finally:
        broker.kill()
        broker.stop(sig=None)

    assert_nothing_acknowledged_lost(data, str(tmp_path / "b1"), acked)


def test_draining_on_a_full_disk_then_kill_9_loses_nothing(small_fs, tmp_path):
    """SENT and DONE records written while the disk is full: at worst a redelivery."""
    fs = small_fs(32)
    data = os.path.join(fs, "data")
    os.makedirs(data)
    broker = start(data, str(tmp_path / "b0"))
    subscribe_offline(broker.addr)
    fill(fs, 6 << 20)
    acked: list[int] = []
    taken: dict[str, set[int]] = {}
    try:
        publish_until_refused(broker.addr, "full-pub2", 2, acked)
        for sid in SUBSCRIBERS:
            taken[sid] = set(drain(broker.addr, sid, take=len(acked) // 2))
            assert taken[sid], f"{sid} got nothing on a full disk"
    finally:
        broker.kill()
        broker.stop(sig=None)
    assert_nothing_acknowledged_lost(data, str(tmp_path / "b1"), acked, taken)


def test_max_stored_bytes_refuses_like_a_full_disk_until_sessions_take_their_messages(tmp_path):
    data = str(tmp_path / "data")
    os.makedirs(data)
    broker = start(data, str(tmp_path / "b0"), "--max-stored-bytes", str(40 * PAYLOAD))
    subscribe_offline(broker.addr)
    acked: list[int] = []
    try:
        refused = publish_until_refused(broker.addr, "bound-pub", 1, acked, limit=1000)
        # Each core reports what it holds every 100 ms: the bound is passed by what arrives
        # meanwhile (one message at a time here; on a loaded CI machine a report can come
        # late, and 204 were seen), but it is passed by a bounded amount, not ignored.
        assert 20 <= len(acked) <= 400, len(acked)
        for sid in SUBSCRIBERS:
            assert sorted(drain(broker.addr, sid)) == acked
        wait_until_accepted(broker.addr, "bound-pub", acked, refused, within=10)
        assert "max_stored_bytes" in broker.stderr_text(), broker.describe()
    finally:
        broker.assert_clean_exit()
