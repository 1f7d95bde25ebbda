"""One broker per data directory and per listen address, and what comes back from a damaged
log (hardening items 2, 3 and 4), black box.

- A second broker on a data directory that a running one holds exits at once, naming the
  directory and the pid holding it; the first goes on serving.
- A second broker on the address a running one listens on (another data directory) exits
  with "address in use", also when both start at the same instant; the first goes on serving.
- Logs damaged by hand while the broker is stopped (a segment truncated mid-record, a byte
  flipped in the middle of the newest segment with valid records after it, a middle segment
  deleted, layout.toml removed and a restart with fewer cores): what a real client (paho-mqtt)
  gets back, and what the broker reports.
"""

from __future__ import annotations

import glob
import os
import queue
import re
import select
import signal
import socket
import subprocess
import tempfile
import time

import paho.mqtt.client as mqtt

from berthproc import READY, TEST_SEGMENT_SIZE, Broker, berth_bin
from clients import publish_all
from mqttwire import V311, Conn, ids_owned_by

T = 10.0
SUB = ids_owned_by(0, 2, "dd-sub-")[0]  # its session and queue live in core-0's log
SUB1 = ids_owned_by(1, 2, "dd-sub-")[0]
PUB = ids_owned_by(1, 2, "dd-pub-")[0]


def argv(data_dir: str, *, listen: str = "127.0.0.1:0", cores: int = 2,
         segment_size: str = TEST_SEGMENT_SIZE) -> list[str]:
    return [berth_bin(), "--listen", listen, "--cores", str(cores), "--data-dir", data_dir,
            "--segment-size", segment_size, "--log", "info"]


def expect_refusal(args: list[str], timeout: float = 30.0) -> str:
    """Runs a broker that must exit non-zero without ever printing its ready line; returns its
    stderr (a log file, so that a chatty broker never blocks on a pipe)."""
    with open(os.devnull, "rb") as devnull, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(args, stdin=devnull, stdout=subprocess.PIPE, stderr=err)
        out = b""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                r, _, _ = select.select([proc.stdout], [], [], 1.0)
                chunk = os.read(proc.stdout.fileno(), 4096) if r else b""
                out += chunk
                if any(READY.match(line) for line in out.splitlines()):
                    raise AssertionError(f"the second broker became ready: {out!r}")
                if r and not chunk:
                    break
            proc.wait(timeout=max(deadline - time.monotonic(), 1))
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=15)
            proc.stdout.close()
        err.seek(0)
        text = err.read().decode(errors="replace")
    assert proc.returncode != 0, f"exited with {proc.returncode}\n{text[-3000:]}"
    return text


class Sub:
    """paho-mqtt 3.1.1 with a persistent session, its loop in a background thread."""

    def __init__(self, client_id: str):
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv311, clean_session=False,
                             reconnect_on_failure=False)
        self.msgs: queue.Queue = queue.Queue()
        self.acks: queue.Queue = queue.Queue()
        self.c.on_connect = lambda c, u, flags, rc, props: self.acks.put((flags, rc))
        self.c.on_subscribe = lambda c, u, mid, rcs, props: self.acks.put(rcs)
        self.c.on_message = lambda c, u, m: self.msgs.put(m)

    def connect(self, addr) -> bool:
        """Returns Session Present."""
        self.c.connect(*addr, keepalive=60)
        self.c.loop_start()
        flags, rc = self.acks.get(timeout=T)
        assert not rc.is_failure, rc
        return bool(flags.session_present)

    def subscribe(self, topic: str) -> None:
        self.c.subscribe(topic, 1)
        self.acks.get(timeout=T)

    def until(self, marker: bytes) -> list[bytes]:
        """Every payload received before `marker`."""
        got = []
        while True:
            try:
                m = self.msgs.get(timeout=T)
            except queue.Empty:
                raise AssertionError(f"no {marker!r} within {T}s; got {got}") from None
            if m.payload == marker:
                return got
            got.append(m.payload)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def payload(i: int, size: int) -> bytes:
    head = f"msg-{i:03d}-".encode()
    return head + b"x" * (size - len(head))


def queue_offline(broker: Broker, count: int, size: int = 64, sub: str = SUB) -> list[bytes]:
    """A persistent subscriber on core 0 goes offline; `count` QoS 1 messages are queued for
    it. Returns their payloads."""
    s = Sub(sub)
    s.connect(broker.addr)
    s.subscribe("dd/#")
    s.close()
    sent = [payload(i, size) for i in range(count)]
    publish_all(broker.addr, PUB, [("dd/t", p) for p in sent], qos=1)
    return sent


def come_back(broker: Broker, sub: str = SUB) -> list[bytes]:
    """The subscriber returns; asserts its session survived; returns what it gets before a
    marker published now (queued messages come first)."""
    s = Sub(sub)
    try:
        assert s.connect(broker.addr), f"session of {sub} lost\n{broker.describe()}"
        publish_all(broker.addr, PUB, [("dd/t", b"END")], qos=1)
        return s.until(b"END")
    finally:
        s.close()


def segments(data_dir: str, core: int = 0) -> list[str]:
    return sorted(glob.glob(os.path.join(data_dir, f"core-{core}", "seg-*.log")))


def holding(data_dir: str, needle: bytes) -> tuple[str, int]:
    """The segment file of core 0 holding `needle`, and where."""
    for path in segments(data_dir):
        at = open(path, "rb").read().find(needle)
        if at >= 0:
            return path, at
    raise AssertionError(f"no segment holds {needle!r}")


def summary(broker: Broker) -> str:
    lines = [line for line in broker.stderr_text().splitlines() if "recovery:" in line]
    assert len(lines) == 1, f"one recovery summary line expected\n{broker.describe()}"
    return lines[0]


# --- item 2: one broker per data directory ----------------------------------------------------

def test_a_second_broker_on_a_held_data_dir_exits_naming_it_and_the_pid(start_broker, tmp_path):
    data = str(tmp_path / "data")
    os.makedirs(data)
    first = start_broker(data_dir=data)
    sent = queue_offline(first, 3)
    err = expect_refusal(argv(data))
    assert data in err and f"pid {first.proc.pid}" in err, err
    # The first keeps its data and keeps serving.
    assert come_back(first) == sent


# --- item 3: one broker per listen address ----------------------------------------------------

def test_a_second_broker_on_the_same_address_fails_with_address_in_use(start_broker, tmp_path):
    first = start_broker()
    other = str(tmp_path / "other-data")
    os.makedirs(other)
    err = expect_refusal(argv(other, listen=f"{first.host}:{first.port}"))
    assert "address in use" in err, err
    # Every client reaches the first broker (there is no other): its sessions are all there.
    sent = queue_offline(first, 2)
    for _ in range(5):
        assert come_back(first) == sent
        sent = []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_brokers_starting_at_once_on_one_address_one_wins(tmp_path):
    port = free_port()
    procs = []
    for n in range(2):
        data = str(tmp_path / f"data{n}")
        os.makedirs(data)
        procs.append(subprocess.Popen(argv(data, listen=f"127.0.0.1:{port}"),
                                      stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE))
    try:
        ready, failed = [], []
        deadline = time.monotonic() + 30
        pending = {p.stdout.fileno(): p for p in procs}
        seen = {fd: b"" for fd in pending}
        while pending and time.monotonic() < deadline:
            r, _, _ = select.select(list(pending), [], [], 1.0)
            for fd in r:
                chunk = os.read(fd, 4096)
                seen[fd] += chunk
                if any(READY.match(line) for line in seen[fd].splitlines()):
                    ready.append(pending.pop(fd))
                elif not chunk:
                    failed.append(pending.pop(fd))
        assert len(ready) == 1 and len(failed) == 1, f"ready {len(ready)}, failed {len(failed)}"
        loser = failed[0]
        loser.wait(timeout=15)
        err = loser.stderr.read().decode(errors="replace")
        assert loser.returncode != 0 and "address in use" in err, err
        with Conn("127.0.0.1", port, version=V311) as c:
            c.connect("dd-probe", clean=True)
            c.ping()
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=15)
    assert ready[0].returncode == 0


# --- item 4: damaged logs ---------------------------------------------------------------------

def test_a_segment_truncated_mid_record_keeps_the_records_before_the_cut(start_broker, tmp_path):
    data = str(tmp_path / "data")
    os.makedirs(data)
    broker = start_broker(data_dir=data)
    sent = queue_offline(broker, 10)
    broker.assert_clean_exit()
    path, at = holding(data, b"msg-007-")
    os.truncate(path, at + 4)  # in the middle of msg-007's MESSAGE record

    broker = start_broker(data_dir=data)
    assert come_back(broker) == sent[:7]
    text = broker.stderr_text()
    assert "truncated" in text, broker.describe()
    assert "dropped: nothing" not in summary(broker)


def test_a_flipped_byte_in_the_newest_segment_loses_one_record_and_is_not_rewritten(
        start_broker, tmp_path):
    data = str(tmp_path / "data")
    os.makedirs(data)
    broker = start_broker(data_dir=data)
    sent = queue_offline(broker, 10)
    broker.assert_clean_exit()
    path, at = holding(data, b"msg-004-")
    with open(path, "r+b") as f:
        f.seek(at + 20)
        byte = f.read(1)
        f.seek(at + 20)
        f.write(bytes([byte[0] ^ 0xFF]))
    damaged = open(path, "rb").read()

    broker = start_broker(data_dir=data)
    assert come_back(broker) == sent[:4] + sent[5:]
    line = summary(broker)
    assert "CRC mismatch" in line and "1 damaged range," in line, line
    broker.assert_clean_exit()
    assert open(path, "rb").read() == damaged, "the damaged segment was rewritten"


def test_a_deleted_middle_segment_is_reported_and_the_others_come_back(start_broker, tmp_path):
    data = str(tmp_path / "data")
    os.makedirs(data)
    # 64 KiB segments (the smallest), ~10 messages of 6 KB each: three segments of data,
    # below the four that make a checkpoint due.
    broker = start_broker("--segment-size", "65536", data_dir=data)
    sent = queue_offline(broker, 25, size=6000)
    broker.assert_clean_exit()
    files = segments(data)
    with_data = [p for p in files if b"msg-" in open(p, "rb").read()]
    assert len(with_data) >= 3, files
    middle = with_data[1]
    lost = set(re.findall(rb"msg-\d{3}-", open(middle, "rb").read()))
    assert lost
    os.remove(middle)

    broker = start_broker("--segment-size", "65536", data_dir=data)
    assert come_back(broker) == [p for p in sent if p[:8] not in lost]
    text = broker.stderr_text()
    assert "segments missing" in text, broker.describe()
    assert "1 missing segment " in summary(broker), summary(broker)


def test_a_lost_layout_and_fewer_cores_is_refused_and_the_right_count_recovers(
        start_broker, tmp_path):
    data = str(tmp_path / "data")
    os.makedirs(data)
    broker = start_broker(data_dir=data)
    sent0 = queue_offline(broker, 3, sub=SUB)
    sent1 = queue_offline(broker, 2, sub=SUB1)  # SUB, still subscribed, queues these too
    broker.assert_clean_exit()
    os.remove(os.path.join(data, "layout.toml"))

    err = expect_refusal(argv(data, cores=1))
    assert "--cores 2" in err and "layout.toml" in err, err
    assert not os.path.exists(os.path.join(data, "layout.toml"))
    broker = start_broker(data_dir=data)
    assert come_back(broker, SUB) == sent0 + sent1
    assert come_back(broker, SUB1) == sent1
    assert os.path.exists(os.path.join(data, "layout.toml"))
