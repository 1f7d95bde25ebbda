"""A nats-server with JetStream for the cluster tests: started on ephemeral ports (client and
monitoring, read from its log) in a temporary directory, its JetStream state read through the
monitoring API, requests sent over the plain text protocol.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import socket
import subprocess
import time
import urllib.request

NATS_READY_TIMEOUT = 20.0
CLIENT_PORT = re.compile(rb"Listening for client connections on (\S+):(\d+)")
MONITOR_PORT = re.compile(rb"Starting http monitor on (\S+):(\d+)")


def nats_server_bin() -> str:
    path = os.environ.get("NATS_SERVER_BIN") or shutil.which("nats-server") or "/usr/sbin/nats-server"
    return path


class Nats:
    """A running nats-server with JetStream; `url` for clients, `monitor` for its HTTP API."""

    def __init__(self, workdir: str):
        self.workdir = workdir
        self.log_path = os.path.join(workdir, "nats.log")
        self._log = open(self.log_path, "wb")
        self._start("-1", "-1")

    def _start(self, port: str, monitor: str) -> None:
        store = os.path.join(self.workdir, "js")
        argv = [nats_server_bin(), "-a", "127.0.0.1", "-p", port, "-m", monitor, "-js", "-sd", store]
        env = dict(os.environ, GOMAXPROCS="1")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env=env)
        self.url, self.monitor = self._wait_ready()

    def restart(self) -> None:
        """Stops the server and starts it again on the same ports and store (what JetStream
        holds survives); its clients lose their connections meanwhile."""
        port, monitor = self.url.rsplit(":", 1)[1], self.monitor.rsplit(":", 1)[1]
        self._terminate()
        self._start(port, monitor)

    def _wait_ready(self) -> tuple[str, str]:
        deadline = time.monotonic() + NATS_READY_TIMEOUT
        seen = b""
        client = monitor = None
        fd = self.proc.stderr.fileno()
        while client is None or monitor is None or b"Server is ready" not in seen:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.proc.kill()
                raise AssertionError(f"nats-server not ready within {NATS_READY_TIMEOUT}s: {seen!r}")
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                raise AssertionError(f"nats-server exited: {seen!r}")
            seen += chunk
            self._log.write(chunk)
            if client is None and (m := CLIENT_PORT.search(seen)):
                client = f"nats://{m.group(1).decode()}:{int(m.group(2))}"
            if monitor is None and (m := MONITOR_PORT.search(seen)):
                monitor = f"http://{m.group(1).decode()}:{int(m.group(2))}"
        # From here on its log goes to a file, read by nobody but a failing test's reader.
        self._drain = subprocess.Popen(["cat"], stdin=self.proc.stderr, stdout=self._log)
        return client, monitor

    def jsz(self) -> dict:
        url = f"{self.monitor}/jsz?streams=true&consumers=true&config=true"
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)

    def stream(self, name: str) -> dict | None:
        """The state of stream `name` (`messages`, ...), or None while it does not exist."""
        for account in self.jsz().get("account_details", []):
            for stream in account.get("stream_detail", []):
                if stream["name"] == name:
                    return stream
        return None

    def request(self, subject: str, payload: bytes = b"", timeout: float = 5.0) -> bytes:
        """One NATS request over the plain text protocol (as `nats req` would send it)."""
        host, port = self.url.removeprefix("nats://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=timeout) as sock:
            reader = sock.makefile("rb")
            assert reader.readline().startswith(b"INFO ")
            inbox = "_INBOX.berth-test"
            sock.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\n'
                         + f"SUB {inbox} 1\r\nPUB {subject} {inbox} {len(payload)}\r\n".encode()
                         + payload + b"\r\n")
            while True:
                line = reader.readline()
                assert line, "nats-server closed the connection"
                if line.startswith(b"PING"):
                    sock.sendall(b"PONG\r\n")
                elif line.startswith(b"MSG "):
                    size = int(line.split()[-1])
                    return reader.read(size + 2)[:size]
                elif line.startswith(b"-ERR"):
                    raise AssertionError(line)

    def _terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._drain.wait(timeout=5)

    def stop(self) -> None:
        self._terminate()
        self._log.close()
