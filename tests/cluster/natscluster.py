"""Three nats-server processes clustered with JetStream for the failover tests: routes on
loopback ports taken from the kernel (a route must be known before its peer starts), each
server with its own store directory and GOMAXPROCS=1 (natsproc's `Nats`, with a cluster block).

`NatsCluster.url` lists the three client URLs (berth's `--nats` takes them comma-separated, and
the client moves to another when its server dies); `kill(name)` stops one with SIGKILL and
`restart(name)` starts it again on its ports and store; `leader(stream)` asks the live servers'
monitoring endpoints (`/jsz?streams=true`) which server leads a stream's replicas.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request

from natsproc import Nats, nats_server_bin

CLUSTER_READY_TIMEOUT = 60.0
CLUSTER_NAME = "berth-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Member(Nats):
    """One server of the cluster: `name`, its client, monitoring and route ports fixed at first start."""

    def __init__(self, workdir: str, name: str, route_port: int, routes: list[int]):
        self.name = name
        self.route_port = route_port
        self.routes = routes
        super().__init__(workdir)

    def _start(self, port: str, monitor: str) -> None:
        if port == "-1":  # first start: fixed ports, so that a restart keeps them
            port, monitor = str(_free_port()), str(_free_port())
        store = os.path.join(self.workdir, "js")
        routes = ",".join(f"nats://127.0.0.1:{p}" for p in self.routes if p != self.route_port)
        argv = [nats_server_bin(), "-n", self.name, "-a", "127.0.0.1", "-p", port, "-m", monitor,
                "-js", "-sd", store, "--cluster_name", CLUSTER_NAME,
                "--cluster", f"nats://127.0.0.1:{self.route_port}", "--routes", routes]
        env = dict(os.environ, GOMAXPROCS="1")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env=env)
        self.url, self.monitor = self._wait_ready()

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush of anything not yet on disk."""
        self.proc.kill()
        self.proc.wait()
        self._drain.wait(timeout=5)

    def start_again(self) -> None:
        port, monitor = self.url.rsplit(":", 1)[1], self.monitor.rsplit(":", 1)[1]
        self._start(port, monitor)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def healthz(self) -> bool:
        """JetStream on this server is current (meta leader known, its streams caught up)."""
        try:
            with urllib.request.urlopen(f"{self.monitor}/healthz", timeout=5) as response:
                return json.load(response).get("status") == "ok"
        except OSError:
            return False


class NatsCluster:
    def __init__(self, workdir: str, size: int = 3):
        routes = [_free_port() for _ in range(size)]
        self.members: dict[str, Member] = {}
        for i in range(size):
            name = f"s{i + 1}"
            member_dir = os.path.join(workdir, name)
            os.makedirs(member_dir)
            self.members[name] = Member(member_dir, name, routes[i], routes)
        self.wait_healthy()

    @property
    def url(self) -> str:
        return ",".join(m.url for m in self.members.values())

    def live(self) -> list[Member]:
        return [m for m in self.members.values() if m.alive()]

    def wait_healthy(self, timeout: float = CLUSTER_READY_TIMEOUT) -> None:
        """Until every live server says JetStream is current on it."""
        deadline = time.monotonic() + timeout
        while not all(m.healthz() for m in self.live()):
            assert time.monotonic() < deadline, f"the NATS cluster not healthy within {timeout}s"
            time.sleep(0.2)  # polling: the servers give no other signal

    def jsz(self) -> dict:
        """`/jsz` of a live server that answers (any: stream details are cluster-wide)."""
        last = None
        for member in self.live():
            try:
                return member.jsz()
            except OSError as error:
                last = error
        raise AssertionError(f"no live NATS server answered /jsz: {last}")

    def stream(self, name: str) -> dict | None:
        """Stream `name` as the leader of its replicas reports it (a follower's count may lag)."""
        for member in self.live():
            try:
                detail = member.stream(name)
            except OSError:
                continue
            if detail and detail.get("cluster", {}).get("leader") == member.name:
                return detail
        return None

    def leader(self, stream: str, timeout: float = 30.0) -> str:
        """The server leading `stream`'s replicas, once one is elected."""
        deadline = time.monotonic() + timeout
        while True:
            detail = self.stream(stream)
            if detail is not None:
                return detail["cluster"]["leader"]
            assert time.monotonic() < deadline, f"no leader of {stream} within {timeout}s"
            time.sleep(0.2)

    def replicas(self, stream: str) -> int:
        """The replica count `stream` is configured with."""
        detail = self.stream(stream) or {}
        return detail.get("config", {}).get("num_replicas", 0)

    def stop(self) -> None:
        for member in self.members.values():
            if member.alive():
                member.stop()
            else:
                member._log.close()
