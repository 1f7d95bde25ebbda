"""The two client libraries the Python side of the interop suite drives through one interface:
paho-mqtt (a library, driven step by step) and Eclipse Mosquitto's mosquitto_sub/mosquitto_pub
(command-line programs, driven as processes whose debug output is read).

`Library.open` connects a client and makes its subscriptions; `Library.publish` connects,
publishes and waits until every message is completely acknowledged, then disconnects. What a
library cannot show is `None` (mosquitto_sub does not print Session Present).
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))

import paho.mqtt.client as mqtt  # noqa: E402

from clients import Paho  # noqa: E402
from mqttwire import V5, V311  # noqa: E402

TIMEOUT = 10.0


@dataclass(frozen=True)
class Msg:
    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1


class Client:
    """A connected client. `session_present`: from CONNACK, or None if the library hides it."""

    session_present: bool | None

    def poll(self, timeout: float) -> list[Msg]:
        """Messages that arrived (waiting up to `timeout` for the first)."""
        raise NotImplementedError

    def expect(self, n: int, timeout: float = TIMEOUT) -> list[Msg]:
        """Exactly the next `n` messages, in arrival order."""
        got: list[Msg] = []
        deadline = time.monotonic() + timeout
        while len(got) < n:
            left = deadline - time.monotonic()
            assert left > 0, f"{self}: {len(got)} of {n} messages arrived: {got}"
            got += self.poll(min(left, 0.2))
        assert len(got) == n, f"{self}: more messages than expected: {got}"
        return got

    def disconnect(self) -> None:
        """Normal DISCONNECT."""
        raise NotImplementedError

    def kill(self) -> None:
        """The connection ends without DISCONNECT."""
        raise NotImplementedError

    def wait_taken_over(self, timeout: float = TIMEOUT) -> int | None:
        """Waits until the broker closes this connection; returns the DISCONNECT reason code
        (5.0) or None (3.1.1 has no server DISCONNECT)."""
        raise NotImplementedError


class Library:
    name: str
    version: int

    def open(self, addr, client_id: str, *, subs=(), clean: bool = True, expiry: int | None = None,
             will: Will | None = None) -> Client:
        raise NotImplementedError

    def publish(self, addr, client_id: str, topic: str, payloads: list[bytes], qos: int,
                retain: bool = False) -> None:
        raise NotImplementedError

    def visit(self, addr, client_id: str, *, subs=(), clean: bool = True, expiry: int | None = None,
              will: Will | None = None) -> bool | None:
        """Connects, subscribes, and disconnects normally at once; returns Session Present."""
        client = self.open(addr, client_id, subs=subs, clean=clean, expiry=expiry, will=will)
        client.disconnect()
        return client.session_present


# --- paho-mqtt --------------------------------------------------------------------------------

class PahoClient(Client):
    def __init__(self, paho: Paho):
        self.paho = paho
        self.inbox: list[Msg] = []
        paho.client.on_message = lambda c, u, m: self.inbox.append(
            Msg(m.topic, bytes(m.payload), m.qos, bool(m.retain)))

    def __repr__(self) -> str:
        return f"paho client {self.paho.client._client_id!r}"

    def poll(self, timeout: float) -> list[Msg]:
        deadline = time.monotonic() + timeout
        while not self.inbox and time.monotonic() < deadline:
            self.paho.client.loop(timeout=0.05)
        got, self.inbox = self.inbox, []
        return got

    def disconnect(self) -> None:
        self.paho.disconnect()

    def kill(self) -> None:
        self.paho.client.socket().close()

    def wait_taken_over(self, timeout: float = TIMEOUT) -> int | None:
        self.paho.loop_until(lambda: self.paho.disconnected is not None, timeout, "being disconnected")
        rc = self.paho.disconnected[1]
        return rc.value if self.paho.version == V5 else None


class PahoLibrary(Library):
    def __init__(self, version: int):
        self.version = version
        self.name = f"paho-{'v5' if version == V5 else 'v311'}"

    def _connect(self, addr, client_id, clean, expiry, will=None) -> tuple[Paho, bool]:
        paho = Paho(client_id, self.version, clean=clean)
        if will is not None:
            paho.client.will_set(will.topic, will.payload, will.qos, False)
        if self.version == V5:
            from paho.mqtt.properties import Properties
            from paho.mqtt.packettypes import PacketTypes
            props = Properties(PacketTypes.CONNECT)
            if expiry:
                props.SessionExpiryInterval = expiry
            host, port = addr
            paho.client.connect(host, port, keepalive=60, clean_start=clean, properties=props)
            paho.loop_until(lambda: paho.connack is not None or paho.disconnected is not None, TIMEOUT, "CONNACK")
        else:
            paho.connect(addr)
        flags, rc, _ = paho.connack
        assert not rc.is_failure, f"{client_id}: CONNACK {rc}"
        return paho, bool(flags.session_present)

    def open(self, addr, client_id, *, subs=(), clean=True, expiry=None, will=None) -> Client:
        paho, present = self._connect(addr, client_id, clean, expiry, will)
        client = PahoClient(paho)
        client.session_present = present
        if subs:
            granted = []
            paho.client.on_subscribe = lambda c, u, mid, codes, props: granted.extend(codes)
            paho.client.subscribe([(f, q) for f, q in subs])
            paho.loop_until(lambda: granted, TIMEOUT, "SUBACK")
            assert [g.value for g in granted] == [q for _, q in subs], f"SUBACK {granted} for {subs}"
        return client

    def publish(self, addr, client_id, topic, payloads, qos, retain=False) -> None:
        paho, _ = self._connect(addr, client_id, True, None)
        done: dict[int, object] = {}
        paho.client.on_publish = lambda c, u, mid, rc, props: done.setdefault(mid, rc)
        mids = [paho.client.publish(topic, p, qos, retain).mid for p in payloads]
        paho.loop_until(lambda: all(m in done for m in mids), TIMEOUT, "publish acknowledgements")
        failed = [rc for rc in done.values() if getattr(rc, "is_failure", False)]
        assert not failed, f"acknowledged with errors: {failed}"
        paho.disconnect()


# --- mosquitto_sub / mosquitto_pub ------------------------------------------------------------

MOSQUITTO_SUB = shutil.which("mosquitto_sub")
MOSQUITTO_PUB = shutil.which("mosquitto_pub")
MARK = "MSG|"


class MosquittoSub(Client):
    """A mosquitto_sub process. Its -d output says what it sent and received; messages are
    printed as MSG|topic|qos|retain|payload."""

    session_present = None

    def __init__(self, argv: list[str], client_id: str, has_subs: bool):
        self.client_id = client_id
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        self.cursor = 0  # how far poll has read `output` for messages
        threading.Thread(target=self._read, daemon=True).start()
        self._wait_line("received SUBACK" if has_subs else "received CONNACK (0)")

    def __repr__(self) -> str:
        return f"mosquitto_sub {self.client_id!r}"

    def _read(self) -> None:
        for raw in self.proc.stdout:
            self.lines.put(raw.decode(errors="replace").rstrip("\n"))
        self.lines.put(None)

    def _next(self, timeout: float) -> str | None:
        line = self.lines.get(timeout=timeout)
        if line is not None:
            self.output.append(line)
        return line

    def _wait_line(self, needle: str, timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._next(max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(f"{self}: no {needle!r} within {timeout}s: {self.output}") from None
            assert line is not None, f"{self}: exited before {needle!r}: {self.output}"
            if needle in line:
                return

    def poll(self, timeout: float) -> list[Msg]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._next(0.0 if self.cursor < len(self.output) else
                                  max(deadline - time.monotonic(), 0.0))
            except queue.Empty:
                break
            if line is None:
                break
        got = []
        for line in self.output[self.cursor:]:
            if line.startswith(MARK):
                topic, qos, retain, payload = line[len(MARK):].split("|", 3)
                got.append(Msg(topic, payload.encode(), int(qos), retain == "1"))
        self.cursor = len(self.output)
        return got

    def _stop(self, sig) -> None:
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            # mosquitto_sub disconnects from inside its signal handler, which can deadlock
            # on libmosquitto's own locks; the scenarios that need a normal DISCONNECT use
            # `visit` (-E) instead, so here ending the process is enough.
            self.proc.kill()
            self.proc.wait(timeout=TIMEOUT)
        while self._drain_one():
            pass

    def _drain_one(self) -> bool:
        try:
            return self._next(1.0) is not None
        except queue.Empty:
            return False

    def disconnect(self) -> None:
        # mosquitto_sub's signal handler sends DISCONNECT (5.0: reason 0x04, which matters
        # only to a client with a will: those use `visit`, -E).
        self._stop(signal.SIGINT)

    def kill(self) -> None:
        self._stop(signal.SIGKILL)

    def wait_taken_over(self, timeout: float = TIMEOUT) -> int | None:
        if "mqttv5" in self.proc.args:
            # 5.0: the broker's DISCONNECT is printed and mosquitto_sub exits.
            self._wait_line("Received DISCONNECT", timeout)
            line = self.output[-1]
            self.proc.wait(timeout=timeout)
            return int(line.split("(")[1].rstrip(")"))
        # 3.1.1: no DISCONNECT; mosquitto_sub reconnects on its own, so its second CONNECT is
        # the sign that the broker closed the first connection. It is stopped there, so that
        # it does not take the session back.
        self._wait_line("sending CONNECT", timeout)
        self.kill()
        return None


class MosquittoLibrary(Library):
    def __init__(self, version: int):
        self.version = version
        self.flag = "mqttv5" if version == V5 else "mqttv311"
        self.name = f"mosquitto-{'v5' if version == V5 else 'v311'}"

    def visit(self, addr, client_id, *, subs=(), clean=True, expiry=None, will=None) -> bool | None:
        # -E: disconnect (reason 0) once subscribed. A signal would not do: mosquitto_sub's
        # handler disconnects with 0x04, Disconnect with Will Message.
        client = self.open(addr, client_id, subs=subs, clean=clean, expiry=expiry, will=will,
                           extra=["-E"])
        assert client.proc.wait(timeout=TIMEOUT) == 0, client.output
        while client._drain_one():
            pass
        assert any("sending DISCONNECT" in line for line in client.output), client.output
        return None

    def open(self, addr, client_id, *, subs=(), clean=True, expiry=None, will=None, extra=()) -> Client:
        host, port = addr
        # stdbuf: mosquitto_sub's stdout is a pipe here, which stdio would buffer by the block.
        argv = ["stdbuf", "-oL", MOSQUITTO_SUB, "-h", host, "-p", str(port), "-V", self.flag, "-i", client_id, "-d",
                "-F", MARK + "%t|%q|%r|%p"]
        if not clean:
            argv.append("-c")
        if expiry is not None and self.version == V5:
            argv += ["-x", str(expiry)]
        if will is not None:
            argv += ["--will-topic", will.topic, "--will-payload", will.payload.decode(),
                     "--will-qos", str(will.qos)]
        # mosquitto_sub always subscribes; with nothing to subscribe to, a filter nothing matches.
        filters = list(subs) or [(f"interop/nothing/{client_id}", 0)]
        qos = {q for _, q in filters}
        assert len(qos) == 1, "mosquitto_sub subscribes to every filter at one QoS"
        argv += ["-q", str(qos.pop())]
        for f, _ in filters:
            argv += ["-t", f]
        argv += extra
        client = MosquittoSub(argv, client_id, True)
        assert any("received CONNACK (0)" in line for line in client.output), client.output
        return client

    def publish(self, addr, client_id, topic, payloads, qos, retain=False) -> None:
        host, port = addr
        argv = [MOSQUITTO_PUB, "-h", host, "-p", str(port), "-V", self.flag, "-i", client_id, "-d",
                "-t", topic, "-q", str(qos)]
        if retain:
            argv.append("-r")
        if payloads == [b""]:
            proc = subprocess.run(argv + ["-n"], stdin=subprocess.DEVNULL, capture_output=True, timeout=20)
        else:
            # -l: one message per line, all on one connection and in order.
            assert all(b"\n" not in p and p for p in payloads)
            proc = subprocess.run(argv + ["-l"], input=b"".join(p + b"\n" for p in payloads),
                                  capture_output=True, timeout=20)
        out = (proc.stdout + proc.stderr).decode(errors="replace")
        assert proc.returncode == 0, f"mosquitto_pub exited {proc.returncode}:\n{out}"
        assert "received CONNACK (0)" in out, out
        acks = {1: "received PUBACK", 2: "received PUBCOMP"}
        if qos:
            assert out.count(acks[qos]) == len(payloads), f"expected {len(payloads)} x {acks[qos]}:\n{out}"
            codes = [line.rsplit("RC:", 1)[-1] for line in out.splitlines() if acks[qos] in line and "RC:" in line]
            assert all(code == "0)" for code in codes), f"acknowledged with errors:\n{out}"


LIBRARIES = [PahoLibrary(V311), PahoLibrary(V5), MosquittoLibrary(V311), MosquittoLibrary(V5)]
