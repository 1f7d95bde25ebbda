#!/usr/bin/env python3
"""Side-by-side comparison: berth, Mosquitto and rumqttd under the same berth-loadgen scenarios.

    python3 benches/compare.py                  # full scale
    python3 benches/compare.py --scale 0.1      # a tenth of every count, for a quick look
    python3 benches/compare.py --brokers berth,mosquitto --scenarios resume
    python3 benches/compare.py --scenarios qos1-pairs --markdown   # BENCHMARKS.md's format
    python3 benches/compare.py --markdown-from target/compare/results.json   # no new run
    python3 benches/compare.py --scenarios resume-tls,qos1-pairs-tls,tls-handshakes  # TLS

Installs what is missing (Debian's `mosquitto`; `cargo install rumqttd` into
target/rumqttd-install), builds berth and berth-loadgen in release mode, then for every
scenario and every broker: starts the broker fresh (new data directory, free port), runs
berth-loadgen against it, samples the broker's CPU seconds (utime + stime from /proc/PID/stat)
across the run, its peak RSS (VmHWM from /proc/PID/status) and its peak RssAnon and RssFile
(sampled every 100 ms), and stops it. Prints one table with each broker's numbers and their
ratio to Mosquitto's (with --markdown: one table per scenario in BENCHMARKS.md's format, berth
first and its ratio to each other broker), and writes every loadgen JSON plus results.json
(with the date, machine and commands of the run) into --out, and per scenario an SVG of
every broker's latency percentile curve on one scale (`berth-loadgen plot`).

Fairness: every broker gets the same client load; queue and inflight limits are raised where a
default would cut the scenario short (see the config functions below). Mosquitto runs with
persistence on (its default autosave: the in-memory state is written every 30 min and at
exit); berth runs with its defaults (log in the page cache, msync every second). rumqttd 0.20
keeps no sessions on disk: it keeps Clean Session 0 sessions in memory only, and what it does
on resume is measured and shown as is. The TLS scenarios (benches/compare_tls.py) run berth
and Mosquitto with the same certificate.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import compare_tls

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
TARGET = os.path.join(REPO, "target")
RUMQTTD_ROOT = os.path.join(TARGET, "rumqttd-install")
BROKERS = ["mosquitto", "berth", "rumqttd"]
CERTS = os.path.join(TARGET, "compare-certs")


def scenarios(scale: float) -> dict[str, list[str]]:
    def n(x: int) -> str:
        return str(max(1, int(x * scale)))

    return {
        # 100k persistent sessions x 10 QoS 1 messages of 64 bytes, 10k concurrent reconnects.
        "resume": ["resume", "--sessions", n(100_000), "--messages", "10", "--qos", "1",
                   "--payload", "64", "--concurrency", n(10_000), "--publishers", "8",
                   "--source-ips", "16", "--timeout", "60"],
        # Churn: 20k sessions x 10 queued QoS 1 resumed 100 at a time (sessions/s and p99 at
        # a load where no backlog overflows), and a storm of 5,000 concurrent reconnects
        # (the TCP connect alone: SYN retries when a listen backlog overflows).
        "resume-100": ["resume", "--sessions", n(20_000), "--messages", "10", "--qos", "1",
                       "--payload", "64", "--concurrency", n(100), "--publishers", "8",
                       "--source-ips", "16", "--timeout", "60"],
        "resume-5000": ["resume", "--sessions", n(20_000), "--messages", "10", "--qos", "1",
                        "--payload", "64", "--concurrency", n(5_000), "--publishers", "8",
                        "--source-ips", "16", "--timeout", "60"],
        # Session creation: 20k persistent sessions connect, subscribe QoS 1, disconnect
        # (broker CPU per created session).
        "create-sessions": ["connect", "--connections", n(20_000), "--concurrency", n(100),
                            "--hold", "0", "--persistent", "--subscribe", "--source-ips", "16",
                            "--timeout", "60"],
        # Publishing into 20k offline queues (the publish phase of a resume run).
        "offline-publish": ["resume", "--sessions", n(20_000), "--messages", "20", "--qos", "1",
                            "--payload", "64", "--concurrency", n(10_000), "--publishers", "8",
                            "--source-ips", "16", "--timeout", "60"],
        "qos1-pairs": ["throughput", "--pattern", "pairs", "--pairs", n(1000), "--qos", "1",
                       "--payload", "64", "--duration", "10", "--inflight", "64", "--timeout", "60"],
        # QoS 0 pairs, publishers flat out (overload), and at a rate the brokers can carry.
        "qos0-pairs": ["throughput", "--pattern", "pairs", "--pairs", n(100), "--qos", "0",
                       "--payload", "64", "--duration", "10", "--timeout", "60"],
        "qos0-pairs-rate": ["throughput", "--pattern", "pairs", "--pairs", n(100), "--qos", "0",
                            "--payload", "64", "--duration", "10", "--rate", "250000",
                            "--timeout", "60"],
        "qos0-fan-out": ["throughput", "--pattern", "fan-out", "--publishers", "1",
                         "--subscribers", n(1000), "--qos", "0", "--payload", "64", "--duration", "10",
                         "--timeout", "60"],
        # Connected idle clients held open (keep alive pings), as many as one process's
        # descriptor limit allows: the broker's memory per connection.
        "idle-connections": ["connect", "--connections", n(19_000), "--concurrency", n(1_000),
                             "--hold", "15", "--keep-alive", "10", "--timeout", "60"],
        # Idle persistent sessions, each subscribed to its own topic, left offline.
        "idle-sessions": ["connect", "--connections", n(100_000), "--concurrency", n(10_000),
                          "--hold", "0", "--persistent", "--subscribe", "--source-ips", "16",
                          "--timeout", "60"],
        **compare_tls.scenarios(n, os.path.join(CERTS, "ca.pem")),
    }


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, check=True, **kw)


def ensure_tools(brokers: list[str], profile: str = "release") -> dict[str, str]:
    if not (shutil.which("mosquitto") or os.path.exists("/usr/sbin/mosquitto")):
        sh(["apt-get", "update", "-q"])
        sh(["apt-get", "install", "-y", "-q", "--no-install-recommends", "mosquitto"])
    rumqttd = os.path.join(RUMQTTD_ROOT, "bin", "rumqttd")
    # Not --locked: its lock file pins metrics 0.22.1, which today's rustc rejects (E0521).
    if "rumqttd" in brokers and not os.path.exists(rumqttd):
        sh(["cargo", "install", "rumqttd", "--version", "0.20.0", "--root", RUMQTTD_ROOT,
            "--target-dir", os.path.join(TARGET, "rumqttd-build")])
    sh(["cargo", "build", *(["--release"] if profile == "release" else []), "-p", "berth", "-p",
        "berth-loadgen"], cwd=REPO)
    return {
        "mosquitto": shutil.which("mosquitto") or "/usr/sbin/mosquitto",
        "rumqttd": rumqttd,
        # BERTH_COMPARE_BIN: another berth binary (an A/B run of two builds).
        "berth": os.environ.get("BERTH_COMPARE_BIN") or os.path.join(TARGET, profile, "berth"),
        "loadgen": os.path.join(TARGET, profile, "berth-loadgen"),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mosquitto_argv(tools, port: int, work: str, name: str) -> list[str]:
    data = os.path.join(work, "data")
    os.makedirs(data)
    try:
        shutil.chown(data, "mosquitto", "mosquitto")  # it drops privileges to this user
    except (LookupError, PermissionError):
        pass
    conf = os.path.join(work, "mosquitto.conf")
    with open(conf, "w") as f:
        if name in compare_tls.SCENARIOS:
            f.write(compare_tls.mosquitto_listener(port, CERTS))
        else:
            f.write(f"listener {port} 127.0.0.1\n")
        f.write(f"""allow_anonymous true
persistence true
persistence_location {data}/
# Same limits as berth's defaults: 1000 queued messages per session, no cap on connections.
max_queued_messages 1000
max_inflight_messages 20
max_connections -1
set_tcp_nodelay true
log_dest stderr
log_type error
log_type warning
""")
    return [tools["mosquitto"], "-c", conf]


def rumqttd_argv(tools, port: int, work: str, name: str) -> list[str]:
    conf = os.path.join(work, "rumqttd.toml")
    with open(conf, "w") as f:
        # The shipped config, with the connection cap raised past the scenarios' 10k+ and
        # the 1 ms pause between accepts removed (it would cap connects at 1000/s).
        f.write(f"""id = 0
[router]
id = 0
max_connections = 110000
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "v4-1"
listen = "127.0.0.1:{port}"
next_connection_delay_ms = 0
    [v4.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 20480
    max_inflight_count = 100
    dynamic_filters = true
""")
    return [tools["rumqttd"], "--quiet", "-c", conf]


def berth_argv(tools, port: int, work: str, name: str) -> list[str]:
    data = os.path.join(work, "data")
    os.makedirs(data)
    listen = ["--listen", f"127.0.0.1:{port}"]
    if name in compare_tls.SCENARIOS:
        listen = ["--listen", f"127.0.0.1:{free_port()}", *compare_tls.berth_listener(work, port, CERTS)]
    if name in compare_tls.ONE_CORE:
        listen += ["--cores", "1"]
    return [tools["berth"], *listen, "--data-dir", data, "--log", "warn",
            "--max-queued-messages", "1000"]


ARGV = {"mosquitto": mosquitto_argv, "rumqttd": rumqttd_argv, "berth": berth_argv}


def proc_sample(pid: int) -> tuple[float, int, int, int]:
    """(CPU seconds, peak RSS KiB, current RssAnon KiB, current RssFile KiB) of a process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    hwm = anon = file = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
            elif line.startswith("RssAnon:"):
                anon = int(line.split()[1])
            elif line.startswith("RssFile:"):
                file = int(line.split()[1])
    return cpu, hwm, anon, file


class RssPeaks(threading.Thread):
    """Samples RssAnon and RssFile every 100 ms: VmHWM also counts file pages (berth maps its
    log), so the anonymous peak is the number comparable across brokers, and the file peak is
    quoted beside it."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.anon, self.file, self.done = pid, 0, 0, threading.Event()
        self.start()

    def run(self):
        while not self.done.wait(0.1):
            try:
                _, _, anon, file = proc_sample(self.pid)
            except (OSError, IndexError, ValueError):
                return
            self.anon, self.file = max(self.anon, anon), max(self.file, file)

    def stop(self) -> tuple[int, int]:
        self.done.set()
        self.join()
        return self.anon, self.file


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"broker exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listening on port {port} after {timeout}s")


def run_one(tools, broker: str, name: str, args: list[str], out: str, limit: float) -> dict:
    work = tempfile.mkdtemp(prefix=f"compare-{broker}-", dir=os.path.join(TARGET, "compare-work"))
    port = free_port()
    argv = ARGV[broker](tools, port, work, name)
    log = open(os.path.join(work, "broker.log"), "wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    try:
        wait_port(port, proc)
        time.sleep(0.5)
        cpu0 = proc_sample(proc.pid)[0]
        peaks = RssPeaks(proc.pid)
        json_path = os.path.join(out, f"{name}-{broker}.json")
        cmd = [tools["loadgen"], *args, "--port", str(port), "--broker-pid", str(proc.pid),
               "--broker-name", broker,
               "--json", json_path, "--hgrm", os.path.join(out, "hgrm", f"{name}-{broker}")]
        print(f"\n### {name} on {broker}: {' '.join(cmd)}", flush=True)
        started = time.time()
        try:
            lg = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                timeout=limit)
            rc, text = lg.returncode, lg.stdout
        except subprocess.TimeoutExpired as e:
            rc = "timed out"
            text = (e.stdout or b"").decode(errors="replace") + f"\n(stopped after {limit:.0f} s)"
        wall = time.time() - started
        print(text[-4000:], flush=True)
        alive = proc.poll() is None
        anon_peak, file_peak = peaks.stop()
        cpu1, hwm, _, _ = proc_sample(proc.pid) if alive else (cpu0, 0, 0, 0)
        result = json.load(open(json_path)) if os.path.exists(json_path) else {}
        result["_compare"] = {"broker_cpu_s": cpu1 - cpu0, "broker_peak_rss_kib": hwm,
                              "broker_peak_anon_kib": anon_peak, "broker_peak_file_kib": file_peak,
                              "loadgen_rc": rc, "wall_s": wall, "broker_alive": alive}
        return result
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        shutil.rmtree(work, ignore_errors=True)


KIND = {"resume": "resume", "offline-publish": "resume", "qos1-pairs": "throughput",
        "qos0-pairs": "throughput", "qos0-pairs-rate": "throughput",
        "qos0-fan-out": "throughput", "idle-sessions": "connect", "idle-connections": "connect",
        "resume-100": "resume", "resume-5000": "resume", "create-sessions": "connect",
        **compare_tls.KIND}


def lat(r: dict, name: str, q: str) -> float | None:
    v = r.get("latency", {}).get(name, {}).get(q)
    return None if v is None else v / 1000.0


def metrics(name: str, r: dict) -> list[tuple[str, float | None, str]]:
    """(label, value, 'lower' or 'higher' is better) rows for one scenario's result."""
    c = r.get("_compare", {})
    cpu, rss, anon = c.get("broker_cpu_s"), c.get("broker_peak_rss_kib"), c.get("broker_peak_anon_kib")
    file = c.get("broker_peak_file_kib")
    rows = []
    kind = r.get("scenario") or KIND.get(name)
    if kind == "resume":
        cyc = (r.get("cycles") or [{}])[0]
        t = r.get("totals", {})
        if name == "offline-publish":
            rows += [("publish msgs/s into offline queues", cyc.get("publish_msgs_per_s"), "higher")]
        rows += [
            ("create sessions/s", r.get("create", {}).get("sessions_per_s"), "higher"),
            ("storm wall s", cyc.get("storm_wall_s"), "lower"),
            ("resume p50 ms", lat(r, "resume", "p50_us"), "lower"),
            ("resume p99 ms", lat(r, "resume", "p99_us"), "lower"),
            ("resume max ms", lat(r, "resume", "max_us"), "lower"),
            ("storm TCP connect p99 ms", lat(r, "storm_tcp_connect", "p99_us"), "lower"),
            ("storm CONNACK p99 ms", lat(r, "storm_connack", "p99_us"), "lower"),
            ("sessions not created (connect failed)", t.get("not_created"), "lower"),
            ("sessions not reconnected (connect failed)", t.get("unreached_sessions"), "lower"),
            ("messages lost on resumed sessions", t.get("lost"), "lower"),
            ("Session Present 0", t.get("session_present_0"), "lower"),
            ("duplicates", t.get("duplicates"), "lower"),
        ]
    elif kind == "throughput":
        t = r.get("throughput", {})
        rows += [
            ("msgs/s in", t.get("msgs_in_per_s"), "higher"),
            ("msgs/s out", t.get("msgs_out_per_s"), "higher"),
            ("deliveries missing", t.get("missing"), "lower"),
            ("end-to-end p50 ms", lat(r, "end_to_end", "p50_us"), "lower"),
            ("end-to-end p99 ms", lat(r, "end_to_end", "p99_us"), "lower"),
        ]
        if cpu is not None and t.get("received"):
            rows.append(("broker CPU us per delivered msg", cpu * 1e6 / t["received"], "lower"))
    elif kind == "connect":
        t = r.get("connect", {})
        rows += [
            ("sessions/s", t.get("connections_per_s"), "higher"),
            ("sessions per broker CPU second",
             t["established"] / cpu if cpu and t.get("established") else None, "higher"),
            ("broker CPU us per session",
             cpu * 1e6 / t["established"] if cpu and t.get("established") else None, "lower"),
            ("CONNACK p99 ms", lat(r, "connack", "p99_us"), "lower"),
            ("broker RSS bytes per session", t.get("broker_bytes_per_connection"), "lower"),
            ("broker anonymous bytes per session", t.get("broker_anon_bytes_per_connection"), "lower"),
        ]
    rows += [
        ("loadgen run", {0: "ok", 1: "errors counted", None: None}.get(c.get("loadgen_rc"), "stopped"),
         "-"),
        ("broker CPU s", cpu, "lower"),
        ("broker peak RSS (VmHWM) MiB", None if rss is None else rss / 1024.0, "lower"),
        ("broker peak RssAnon MiB", None if anon is None else anon / 1024.0, "lower"),
        ("broker peak RssFile MiB", None if file is None else file / 1024.0, "lower"),
        ("loadgen CPU (cores busy)", r.get("loadgen_cpu", {}).get("cores_busy"), "lower"),
        ("errors counted", r.get("errors", {}).get("total"), "lower"),
    ]
    return rows


def fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if isinstance(v, float) and v != int(v) or isinstance(v, float) and abs(v) < 100:
        return f"{v:,.2f}" if abs(v) < 1000 else f"{v:,.0f}"
    return f"{int(v):,}"


def table(results: dict, brokers: list[str]) -> str:
    lines = []
    head = f"| scenario | metric | " + " | ".join(brokers) + " | " + " | ".join(
        f"{b}/mosquitto" for b in brokers if b != "mosquitto") + " |"
    lines.append(head)
    lines.append("|" + "---|" * (2 + len(brokers) + len([b for b in brokers if b != "mosquitto"])))
    for name, per in results.items():
        rows = {b: {label: v for label, v, _ in metrics(name, per[b])} for b in brokers if b in per}
        labels = max((list(r) for r in rows.values()), key=len)
        for label in labels:
            vals = {b: rows.get(b, {}).get(label) for b in brokers}
            cells = [fmt(vals[b]) for b in brokers]
            ratios = []
            for b in brokers:
                if b == "mosquitto":
                    continue
                m, v = vals.get("mosquitto"), vals[b]
                numeric = all(isinstance(x, (int, float)) for x in (m, v))
                ratios.append(f"{v / m:.2f}x" if numeric and m else "-")
            lines.append(f"| {name} | {label} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    return "\n".join(lines)


NAMES = {"berth": "berth", "mosquitto": "Mosquitto", "rumqttd": "rumqttd"}


def machine() -> str:
    """The machine in a few words: CPU model, cores, memory, kernel."""
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            mem_kib = int(f.readline().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kib = 0
    return (f"{model}, {os.cpu_count()} CPUs, {mem_kib / 2**20:.0f} GiB RAM, "
            f"kernel {os.uname().release}")


def markdown(results: dict, meta: dict) -> str:
    """One section per scenario in BENCHMARKS.md's format: the load, the run (command, date,
    machine, load average), and a table with berth first and berth's ratio to each other
    broker. Caveats are for a person to write under it."""
    out = []
    for name, per in results.items():
        brokers = [b for b in ("berth", "mosquitto", "rumqttd") if b in per]
        others = [b for b in brokers if b != "berth" and "berth" in per]
        load = " ".join(meta.get("scenarios", {}).get(name, []))
        out += [f"### {name}", ""]
        if load:
            out.append(f"Load: `berth-loadgen {load}`")
        before, after = meta.get("loadavg_before"), meta.get("loadavg_after")
        loads = ""
        if before and after:
            loads = f", load average {before[0]:.1f} before and {after[0]:.1f} after"
        out.append(f"Run: `{meta.get('command', 'python3 benches/compare.py')}`, "
                   f"{meta.get('date', 'date not recorded')}, {meta.get('machine', 'machine not recorded')}"
                   f"{loads}.")
        out.append("")
        head = ["figure"] + [NAMES[b] for b in brokers] + [f"berth / {NAMES[b]}" for b in others]
        out.append("| " + " | ".join(head) + " |")
        out.append("|---|" + "---:|" * (len(head) - 1))
        rows = {b: metrics(name, per[b]) for b in brokers}
        labels = max((r for r in rows.values()), key=len)
        for label, _, _ in labels:
            vals = {b: dict((lab, v) for lab, v, _ in rows[b]).get(label) for b in brokers}
            cells = [fmt(vals[b]) for b in brokers]
            for b in others:
                m, v = vals[b], vals["berth"]
                numeric = all(isinstance(x, (int, float)) for x in (m, v))
                cells.append(f"{v / m:.2f}x" if numeric and m else "-")
            out.append(f"| {label} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def overlay(tools, name: str, brokers: list[str], out: str) -> None:
    """Every broker's latency curve of one scenario in one SVG on one scale (NAME.svg)."""
    runs = [p for p in (os.path.join(out, f"{name}-{b}.json") for b in brokers) if os.path.exists(p)]
    if runs:
        subprocess.run([tools["loadgen"], "plot", *runs, "--out", os.path.join(out, f"{name}.svg")],
                       check=False)


def load_results(path: str) -> tuple[dict, dict]:
    """(results, meta) from a results.json; files from before the meta was kept have none."""
    with open(path) as f:
        doc = json.load(f)
    if isinstance(doc.get("results"), dict):
        return doc["results"], doc.get("meta", {})
    return doc, {}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0,
                    help="multiply every count of connections, sessions and pairs (default 1: full scale)")
    ap.add_argument("--duration", type=float,
                    help="seconds of publishing in the throughput scenarios (default: each scenario's 10)")
    ap.add_argument("--brokers", default=",".join(BROKERS), help="comma-separated, in column order")
    ap.add_argument("--scenarios", default="resume,offline-publish,qos1-pairs,qos0-fan-out,idle-sessions",
                    help="comma-separated; all: " + ",".join(scenarios(1.0)))
    ap.add_argument("--out", default=os.path.join(TARGET, "compare"),
                    help="directory for the loadgen JSON files, results.json and table.md")
    ap.add_argument("--run-timeout", type=float, default=900,
                    help="seconds one loadgen run may take before it is stopped and marked so")
    ap.add_argument("--markdown", action="store_true",
                    help="print one table per scenario in BENCHMARKS.md's format (also written to "
                         "scenarios.md in --out)")
    ap.add_argument("--markdown-from", metavar="RESULTS_JSON",
                    help="print the --markdown tables of a saved results.json and run nothing")
    ap.add_argument("--debug-build", action="store_true",
                    help="use debug builds of berth and berth-loadgen: a quick check of the script "
                         "itself, whose figures are not comparable")
    opts = ap.parse_args()

    if opts.markdown_from:
        results, meta = load_results(opts.markdown_from)
        print(markdown(results, meta))
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # brokers inherit it
    brokers = [b for b in opts.brokers.split(",") if b]
    all_scenarios = scenarios(opts.scale)
    names = [n for n in opts.scenarios.split(",") if n]
    unknown = [n for n in names if n not in all_scenarios]
    if unknown:
        ap.error(f"unknown scenario {', '.join(unknown)}; known: {', '.join(all_scenarios)}")
    if opts.duration is not None:
        for args in all_scenarios.values():
            if "--duration" in args:
                args[args.index("--duration") + 1] = f"{opts.duration:g}"
    tools = ensure_tools(brokers, "debug" if opts.debug_build else "release")
    if any(n in compare_tls.SCENARIOS for n in names):
        compare_tls.make_certs(CERTS)
    os.makedirs(opts.out, exist_ok=True)
    os.makedirs(os.path.join(TARGET, "compare-work"), exist_ok=True)
    meta = {
        "command": " ".join(["python3", "benches/compare.py"] + [
            a for a in sys.argv[1:] if a != "--markdown"]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine() + (", debug builds" if opts.debug_build else ""),
        "loadavg_before": os.getloadavg(),
        "scenarios": {n: all_scenarios[n] for n in names},
    }
    results: dict[str, dict[str, dict]] = {}
    for name in names:
        results[name] = {}
        for broker in brokers:
            if name in compare_tls.SCENARIOS and broker not in compare_tls.BROKERS:
                continue
            results[name][broker] = run_one(tools, broker, name, all_scenarios[name], opts.out,
                                            opts.run_timeout)
            meta["loadavg_after"] = os.getloadavg()
            with open(os.path.join(opts.out, "results.json"), "w") as f:
                json.dump({"meta": meta, "results": results}, f, indent=1)
        overlay(tools, name, brokers, opts.out)
    print()
    print(f"load average before the table: {os.getloadavg()}")
    text = table(results, brokers)
    with open(os.path.join(opts.out, "table.md"), "w") as f:
        f.write(text + "\n")
    if opts.markdown:
        text = markdown(results, meta)
        with open(os.path.join(opts.out, "scenarios.md"), "w") as f:
            f.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
