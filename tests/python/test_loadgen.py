"""berth-loadgen, run at tiny scale against the real broker: every scenario completes with no
loss and the JSON says so; and the load generator does notice loss, a missing session and a
refused connection when they happen."""

from __future__ import annotations

import json
import os
import socket
import subprocess

from berthproc import berth_bin
from clients import Paho
from mqttwire import V311


def loadgen_bin() -> str:
    return os.path.join(os.path.dirname(berth_bin()), "berth-loadgen")


def run_loadgen(tmp_path, scenario: str, port: int, *args: str, expect_rc: int = 0) -> dict:
    out = tmp_path / f"{scenario}.json"
    cmd = [loadgen_bin(), scenario, "--host", "127.0.0.1", "--port", str(port), "--threads", "2",
           "--json", str(out), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == expect_rc, f"{' '.join(cmd)}\nrc={proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return json.loads(out.read_text())


def test_resume_v311_two_cycles_all_messages_in_order(broker, tmp_path):
    r = run_loadgen(tmp_path, "resume", broker.port, "--sessions", "200", "--messages", "5", "--qos", "1",
                    "--concurrency", "50", "--cycles", "2", "--source-ips", "4",
                    "--hgrm", str(tmp_path / "hgrm"), "--plot", str(tmp_path / "resume.svg"))
    t = r["totals"]
    assert t["expected"] == 200 * 5 * 2
    assert t["received"] == t["expected"]
    assert (t["lost"], t["duplicates"], t["out_of_order"], t["session_present_0"]) == (0, 0, 0, 0)
    assert t["resumed_sessions"] == 400
    assert r["errors"]["total"] == 0
    assert r["latency"]["resume"]["count"] == 400
    assert r["latency"]["storm_connack"]["p50_us"] <= r["latency"]["resume"]["p50_us"]
    assert r["latency"]["storm_tcp_connect"]["p50_us"] <= r["latency"]["storm_connack"]["p50_us"]
    assert [c["published"] for c in r["cycles"]] == [1000, 1000]
    hgrm = (tmp_path / "hgrm" / "resume-resume.hgrm").read_text()
    assert "Percentile" in hgrm and "#[Max" in hgrm
    assert (tmp_path / "resume.svg").read_text().startswith("<svg")


def test_resume_v5_qos2(broker, tmp_path):
    r = run_loadgen(tmp_path, "resume", broker.port, "--mqtt", "5", "--sessions", "100", "--messages", "4",
                    "--qos", "2", "--concurrency", "20")
    t = r["totals"]
    assert (t["received"], t["lost"], t["duplicates"], t["session_present_0"]) == (400, 0, 0, 0)


def test_resume_counts_loss_when_sessions_do_not_persist(start_broker, tmp_path):
    # Sessions that expire (1 s) before the reconnect storm (2.5 s after the last PUBACK):
    # CONNACK Session Present 0 and nothing queued. (--max-session-expiry 0 is refused.)
    b = start_broker("--max-session-expiry", "1")
    r = run_loadgen(tmp_path, "resume", b.port, "--sessions", "10", "--messages", "3", "--timeout", "1",
                    "--settle-ms", "2500", expect_rc=1)
    t = r["totals"]
    assert t["session_present_0"] == 10
    assert t["lost"] == 30 and t["received"] == 0
    assert r["errors"]["by_kind"]["lost_messages"] == 30


def test_throughput_patterns(broker, tmp_path):
    pairs = run_loadgen(tmp_path, "throughput", broker.port, "--pattern", "pairs", "--pairs", "20",
                        "--qos", "1", "--duration", "1", "--rate", "2000")["throughput"]
    assert pairs["sent"] > 0 and pairs["received"] == pairs["sent"] == pairs["acked"]
    assert pairs["out_of_order_or_duplicate"] == 0
    fan_out = run_loadgen(tmp_path, "throughput", broker.port, "--pattern", "fan-out", "--subscribers", "20",
                          "--qos", "1", "--duration", "1", "--rate", "200")["throughput"]
    assert fan_out["received"] == fan_out["sent"] * 20 > 0
    # At a rate the members keep up with: flat out, a member's queue passes the default
    # max_queued_messages (1,000) on a busy machine and the oldest are dropped and counted
    # ($SYS publish/messages/dropped), as configured, which is not what this checks.
    shared = run_loadgen(tmp_path, "throughput", broker.port, "--pattern", "shared", "--publishers", "3",
                         "--subscribers", "4", "--qos", "2", "--duration", "1", "--rate", "2000")
    t = shared["throughput"]
    assert t["received"] == t["sent"] > 0 and shared["errors"]["total"] == 0
    assert shared["latency"]["end_to_end"]["count"] == t["received"]


def test_connect_held_and_offline_sessions(broker, tmp_path):
    held = run_loadgen(tmp_path, "connect", broker.port, "--connections", "300", "--concurrency", "50",
                       "--hold", "1.5", "--keep-alive", "1", "--broker-pid", str(broker.proc.pid))
    c = held["connect"]
    assert c["established"] == 300 and held["errors"]["total"] == 0
    assert held["broker"]["peak_rss_kib"] > 0 and "broker_bytes_per_connection" in c
    offline = run_loadgen(tmp_path, "connect", broker.port, "--connections", "200", "--hold", "0",
                          "--persistent", "--subscribe", "--mqtt", "5")
    assert offline["connect"]["established"] == 200


def test_no_broker_is_a_one_line_error_without_backtrace(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        for scenario in (["connect", "--connections", "5", "--hold", "0"], ["resume", "--sessions", "3"],
                         ["throughput", "--pairs", "2", "--duration", "1"]):
            proc = subprocess.run([loadgen_bin(), *scenario, "--port", str(port)], capture_output=True,
                                  text=True, timeout=60, env={**os.environ, "RUST_BACKTRACE": "1"})
            assert proc.returncode == 1, proc
            assert proc.stderr.splitlines() == [
                f"berth-loadgen: error: cannot connect to 127.0.0.1:{port}: Connection refused (os error 111)"
            ], proc.stderr
            assert proc.stdout == ""


def test_credentials_templates_and_refusals_counted(start_broker, tmp_path):
    pw = str(tmp_path / "berth.pw")
    proc = subprocess.run([berth_bin(), "passwd", "-c", "-b", pw, "loader", "load pw"], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert proc.returncode == 0, proc.stderr
    b = start_broker("--password-file", pw)
    refused = run_loadgen(tmp_path, "connect", b.port, "--connections", "4", "--hold", "0", expect_rc=1)
    assert refused["errors"]["by_kind"] == {"connack_refused": 4}
    # A watcher on fleet/+/up sees the topics the template made.
    watcher = Paho("lg-watcher", V311)
    watcher.client.username_pw_set("loader", "load pw")
    watcher.connect(("127.0.0.1", b.port))
    seen: set[str] = set()
    watcher.client.on_message = lambda c, u, m: seen.add(m.topic)
    subscribed: list[bool] = []
    watcher.client.on_subscribe = lambda c, u, mid, codes, props: subscribed.append(True)
    watcher.client.subscribe("fleet/+/up", qos=0)
    watcher.loop_until(lambda: bool(subscribed), 5, "SUBACK")
    watcher.client.loop_start()
    try:
        r = run_loadgen(tmp_path, "throughput", b.port, "--username", "loader", "--password", "load pw",
                        "--pairs", "4", "--qos", "1", "--duration", "1", "--rate", "400",
                        "--topic", "fleet/%i/up", "--broker-name", "berth")
    finally:
        watcher.client.loop_stop()
    t = r["throughput"]
    assert t["sent"] > 0 and t["received"] == t["sent"] == t["acked"] and r["errors"]["total"] == 0
    assert r["run"]["broker"] == "berth" and r["run"]["clients"] == "4 pairs" and r["run"]["qos"] == 1
    assert seen == {f"fleet/{i}/up" for i in range(4)}
    sub = run_loadgen(tmp_path, "resume", b.port, "--username", "loader", "--password", "load pw",
                      "--sessions", "5", "--messages", "2", "--topic", "dev/%c/in")
    assert sub["totals"]["received"] == 10 and sub["errors"]["total"] == 0


def test_publishers_and_subscribers_in_separate_processes(broker, tmp_path):
    ready = tmp_path / "subscribed"
    common = ["--port", str(broker.port), "--threads", "2", "--client-prefix", "split", "--pairs", "6",
              "--qos", "1", "--duration", "1", "--rate", "600"]
    sub = subprocess.Popen([loadgen_bin(), "throughput", *common, "--role", "sub", "--ready-file", str(ready),
                            "--json", str(tmp_path / "sub.json")], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    pub = subprocess.run([loadgen_bin(), "throughput", *common, "--role", "pub", "--ready-file", str(ready),
                          "--json", str(tmp_path / "pub.json")], capture_output=True, text=True, timeout=120)
    out, err = sub.communicate(timeout=120)
    assert pub.returncode == 0 and sub.returncode == 0, (pub.stdout, pub.stderr, out, err)
    p = json.loads((tmp_path / "pub.json").read_text())["throughput"]
    s = json.loads((tmp_path / "sub.json").read_text())
    assert p["role"] == "pub" and s["throughput"]["role"] == "sub"
    assert p["sent"] > 0 and p["acked"] == p["sent"]
    assert s["throughput"]["received"] == p["sent"]
    assert s["throughput"]["out_of_order_or_duplicate"] == 0
    # Latency across processes: the send times are on the machine's monotonic clock.
    e2e = s["latency"]["end_to_end"]
    assert e2e["count"] == p["sent"] and 0 < e2e["p50_us"] < 10_000_000
    assert out.splitlines()[1].startswith(tuple("0123456789")) and "msgs/s out" in out.splitlines()[1]


def test_plot_overlays_saved_runs(broker, tmp_path):
    files = []
    for name in ("berth", "other"):
        run_loadgen(tmp_path, "resume", broker.port, "--sessions", "20", "--messages", "2",
                    "--broker-name", name)
        path = tmp_path / f"{name}.json"
        (tmp_path / "resume.json").rename(path)
        files.append(str(path))
    svg = tmp_path / "both.svg"
    proc = subprocess.run([loadgen_bin(), "plot", *files, "--out", str(svg)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    text = svg.read_text()
    assert "berth vs other" in text and "berth (n=20)" in text and "other (n=20)" in text
    assert text.count("latency (ms)</text>") == 1
