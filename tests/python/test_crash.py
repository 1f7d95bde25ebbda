"""Crash tests (issue 4): the log is the truth after a `kill -9`.

`test_sigkill_during_publishing_loses_no_acknowledged_message`: QoS 1 and QoS 2 publishers on
both cores publish as fast as the broker acknowledges to persistent sessions on both cores
that are offline, and the broker is killed with SIGKILL at a random moment, three times over.
After the last restart every message whose PUBACK/PUBREC reached its publisher must arrive:
QoS 1 at least once, QoS 2 exactly once, each publisher's messages in order, and the
subscriptions still in place (a message published after the restarts arrives too).

`test_a_record_cut_in_half_is_cut_and_the_rest_recovers`: the newest record of a core's log
is cut in half on disk; the broker starts, reports it, and everything before it comes back.
"""

from __future__ import annotations

import glob
import os
import random
import shutil
import struct
import threading
import time

from berthproc import Broker
from mqttwire import V311, Closed, Conn, ids_owned_by, mqtt_str, packet, publish

PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK = 3, 4, 5, 6, 7, 9
SUBSCRIBERS = ids_owned_by(0, 2, "crash-sub-", 2) + ids_owned_by(1, 2, "crash-sub-", 2)
# (client id, QoS): each QoS published from a client of each core.
PUBLISHERS = [
    (ids_owned_by(0, 2, "crash-pub1-", 1)[0], 1),
    (ids_owned_by(1, 2, "crash-pub1-", 1)[0], 1),
    (ids_owned_by(0, 2, "crash-pub2-", 1)[0], 2),
    (ids_owned_by(1, 2, "crash-pub2-", 1)[0], 2),
]
FLAGS = ("--max-queued-messages", "1000000", "--fsync", "never")
PER_ROUND = 1500
WINDOW = 32


def start(data_dir: str, workdir: str) -> Broker:
    os.makedirs(workdir, exist_ok=True)
    return Broker.start(*FLAGS, cores=2, workdir=workdir, data_dir=data_dir)


def ack(ptype: int, packet_id: int, flags: int = 0) -> bytes:
    return bytes([ptype << 4 | flags, 2]) + struct.pack(">H", packet_id)


def subscribe_offline(addr) -> None:
    for sid in SUBSCRIBERS:
        with Conn(*addr, version=V311) as c:
            c.connect(sid, clean=False)
            c.send(packet(0x82, struct.pack(">H", 1) + mqtt_str("crash/#") + b"\x02"))
            p = c.read_packet()
            assert p.ptype == SUBACK and p.body[2:] == b"\x02", p
            c.send(b"\xe0\x00")


def publish_until_killed(addr, client_id: str, qos: int, first: int, acked: set[int],
                         pad: int = 0) -> None:
    """Publishes `first`.. with a window of WINDOW unacknowledged; records each sequence
    number whose PUBACK (QoS 1) or PUBREC (QoS 2) arrived. Returns when the broker dies or
    PER_ROUND messages are acknowledged."""
    pending: dict[int, int] = {}  # packet id -> sequence number
    try:
        c = Conn(*addr, version=V311)
        c.connect(client_id, clean=True)
    except (OSError, Closed, AssertionError):
        return
    seq, next_pid = first, 1
    try:
        while seq < first + PER_ROUND or pending:
            while len(pending) < WINDOW and seq < first + PER_ROUND:
                pid = next_pid
                next_pid = next_pid % 65535 + 1
                pending[pid] = seq
                payload = f"{client_id}:{seq}".encode() + b" " * pad
                c.send(publish(f"crash/{client_id}", payload, V311, first_byte=0x30 | qos << 1,
                               packet_id=pid))
                seq += 1
            p = c.read_packet(timeout=10)
            pid = struct.unpack(">H", p.body[:2])[0]
            if p.ptype in (PUBACK, PUBREC) and pid in pending:
                acked.add(pending.pop(pid))
                if p.ptype == PUBREC:
                    c.send(ack(PUBREL, pid, 0x02))
    except (OSError, Closed, AssertionError):
        pass
    finally:
        c.close()


def drain(addr, client_id: str, marker: bytes) -> list[bytes]:
    """Reconnects a subscriber and takes every message up to `marker`, acknowledging each."""
    got = []
    with Conn(*addr, version=V311) as c:
        ack_ = c.connect(client_id, clean=False)
        assert ack_.session_present, f"{client_id}: session lost"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            p = c.read_packet(timeout=10)
            if p.ptype == PUBREL:
                c.send(ack(PUBCOMP, struct.unpack(">H", p.body[:2])[0]))
                continue
            assert p.ptype == PUBLISH, p
            qos = (p.flags >> 1) & 3
            tlen = struct.unpack(">H", p.body[:2])[0]
            rest = p.body[2 + tlen:]
            if qos:
                pid = struct.unpack(">H", rest[:2])[0]
                rest = rest[2:]
                c.send(ack(PUBACK if qos == 1 else PUBREC, pid))
            if rest == marker:
                return got
            got.append(rest)
        raise AssertionError(f"{client_id}: marker not received; got {len(got)} messages")


def test_sigkill_during_publishing_loses_no_acknowledged_message(tmp_path):
    data = str(tmp_path / "data")
    os.makedirs(data)
    sigkill_rounds(data, tmp_path)


def test_sigkill_on_a_nearly_full_disk_loses_no_acknowledged_message(tmp_path, small_fs):
    """The same with the data directory on a filesystem that fills during the rounds:
    publishers are refused (3.1.1: closed unacknowledged, they reconnect), and whatever
    was acknowledged comes back."""
    fs = small_fs(64)
    data = os.path.join(fs, "data")
    os.makedirs(data)
    # The broker's first segments take 4 MiB; what it writes beyond about 3 MiB more fails.
    filler = os.path.join(fs, "filler")
    with open(filler, "wb") as f:
        f.write(b"\xff" * (shutil.disk_usage(fs).free - (7 << 20)))
    log = sigkill_rounds(data, tmp_path, payload_pad=2048, make_room=lambda: os.remove(filler))
    assert "cannot make the next segment" in log, "the disk never filled: the test tests nothing"


def sigkill_rounds(data: str, tmp_path, payload_pad: int = 0, make_room=None) -> str:
    """Three rounds of publishing and kill -9, then (after `make_room`) every acknowledged
    message is checked. Returns the logs of the brokers of the rounds."""
    logs = []
    broker = start(data, str(tmp_path / "b0"))
    subscribe_offline(broker.addr)
    acked = {client_id: set() for client_id, _ in PUBLISHERS}
    rng = random.Random(int(os.environ.get("BERTH_CRASH_SEED", time.time_ns())))
    for round_ in range(3):
        threads = [
            threading.Thread(target=publish_until_killed,
                             args=(broker.addr, cid, qos, round_ * PER_ROUND, acked[cid], payload_pad))
            for cid, qos in PUBLISHERS
        ]
        for t in threads:
            t.start()
        time.sleep(rng.uniform(0.05, 0.8))  # the random moment of the crash, not a sync
        broker.kill()
        for t in threads:
            t.join(timeout=30)
        logs.append(broker.stderr_text())
        broker.stop(sig=None)
        broker = start(data, str(tmp_path / f"b{round_ + 1}"))
    assert sum(len(a) for a in acked.values()) > 0, "nothing was acknowledged before the kills"

    if make_room:
        make_room()
    marker = b"END"
    deadline = time.monotonic() + 15
    while True:  # Refused (closed) until the broker has room again, if it ran out.
        with Conn(*broker.addr, version=V311) as c:
            c.connect("crash-marker", clean=True)
            c.send(publish("crash/end", marker, V311, first_byte=0x32, packet_id=1))
            try:
                assert c.read_packet().ptype == PUBACK
                break
            except Closed:
                assert time.monotonic() < deadline, f"the marker is still refused\n{broker.describe()}"
                time.sleep(0.3)
    try:
        for sid in SUBSCRIBERS:
            got = drain(broker.addr, sid, marker)
            by_publisher: dict[str, list[int]] = {cid: [] for cid, _ in PUBLISHERS}
            for payload in got:
                cid, seq = payload.decode().rstrip(" ").rsplit(":", 1)
                by_publisher[cid].append(int(seq))
            for cid, qos in PUBLISHERS:
                seqs = by_publisher[cid]
                missing = acked[cid] - set(seqs)
                assert not missing, f"{sid} lost {len(missing)} acknowledged messages of {cid}: {sorted(missing)[:10]}"
                firsts = list(dict.fromkeys(seqs))
                assert firsts == sorted(firsts), f"{sid}: {cid}'s messages out of order"
                if qos == 2:
                    dups = len(seqs) - len(set(seqs))
                    assert dups == 0, f"{sid}: {dups} duplicate QoS 2 messages of {cid}"
    finally:
        logs.append(broker.stderr_text())
        broker.assert_clean_exit()
    return "".join(logs)


def test_a_record_cut_in_half_is_cut_and_the_rest_recovers(tmp_path):
    data = str(tmp_path / "data")
    os.makedirs(data)
    broker = start(data, str(tmp_path / "b0"))
    sid = ids_owned_by(0, 2, "cut-sub-", 1)[0]
    with Conn(*broker.addr, version=V311) as c:
        c.connect(sid, clean=False)
        c.send(packet(0x82, struct.pack(">H", 1) + mqtt_str("cut/#") + b"\x01"))
        assert c.read_packet().ptype == SUBACK
        c.send(b"\xe0\x00")
    with Conn(*broker.addr, version=V311) as c:
        c.connect("cut-pub", clean=True)
        for i in range(5):
            c.send(publish("cut/t", f"m{i}".encode(), V311, first_byte=0x32, packet_id=i + 1))
            assert c.read_packet().ptype == PUBACK
    broker.kill()
    broker.stop(sig=None)

    # The last record of core 0's log is the message m4 (a record per message, nothing
    # after it): overwrite its second half, as a torn write would leave it.
    segments = sorted(glob.glob(os.path.join(data, "core-0", "seg-*.log")))
    assert segments, os.listdir(os.path.join(data, "core-0"))
    # Segments are made ahead of need: the newest one with data holds m4.
    holding = [p for p in segments if b"m4" in open(p, "rb").read()]
    assert holding, "no segment of core 0 holds m4"
    with open(holding[-1], "r+b") as f:
        content = f.read()
        end = len(content.rstrip(b"\x00"))
        start_of_m4 = content.rfind(b"m4")
        cut_from = (start_of_m4 + end) // 2
        f.seek(cut_from - 8)
        f.write(b"\x00" * (end - cut_from + 8))

    broker = start(data, str(tmp_path / "b1"))
    try:
        with Conn(*broker.addr, version=V311) as c:
            assert c.connect(sid, clean=False).session_present
            got = []
            while len(got) < 4:
                p = c.read_packet()
                assert p.ptype == PUBLISH
                tlen = struct.unpack(">H", p.body[:2])[0]
                pid = struct.unpack(">H", p.body[2 + tlen:4 + tlen])[0]
                got.append(p.body[4 + tlen:])
                c.send(ack(PUBACK, pid))
            assert got == [b"m0", b"m1", b"m2", b"m3"]
            c.assert_quiet_for(0.3)
        assert "torn" in broker.stderr_text() or "cut" in broker.stderr_text(), broker.describe()
    finally:
        broker.assert_clean_exit()
