"""berth-loadgen over TLS, WebSocket and WebSocket over TLS, at tiny scale against the real
broker with a certificate made here (openssl, as in test_tls.py): every scenario completes with
no loss on every transport, and a certificate that does not verify, a wrong WebSocket path or
TLS options without --tls are one-line errors."""

from __future__ import annotations

import subprocess

import pytest

from test_loadgen import loadgen_bin, run_loadgen
from pki import Pki  # the `pki` fixture is conftest.py's


def listeners_config(pki: Pki) -> str:
    path = pki.path("transports.toml")
    with open(path, "w") as f:
        for transport, extra in (("tls", ""), ("ws", 'path = "/mqtt"\n'), ("wss", 'path = "/mqtt"\n')):
            f.write(f'[[listener]]\naddress = "127.0.0.1:0"\ntransport = "{transport}"\n{extra}')
            if transport != "ws":
                f.write('cert = "server.pem"\nkey = "server.key"\n')
    return path


def transport_args(pki: Pki, transport: str) -> list[str]:
    tls = ["--tls", "--cafile", pki.path("ca.pem")]
    return {"tls": tls, "ws": ["--ws", "/mqtt"], "wss": [*tls, "--ws", "/mqtt"]}[transport]


@pytest.fixture
def transports_broker(start_broker, pki):  # noqa: F811
    return start_broker("--config", listeners_config(pki))


@pytest.mark.parametrize("transport", ["tls", "ws", "wss"])
def test_every_scenario_over_the_transport(transports_broker, pki, tmp_path, transport):  # noqa: F811
    [(_, port)] = transports_broker.listeners[transport]
    args = transport_args(pki, transport)
    r = run_loadgen(tmp_path, "resume", port, *args, "--sessions", "40", "--messages", "5", "--qos", "1",
                    "--concurrency", "20", "--cycles", "2")
    t = r["totals"]
    assert t["received"] == t["expected"] == 40 * 5 * 2
    assert (t["lost"], t["duplicates"], t["out_of_order"], t["session_present_0"]) == (0, 0, 0, 0)
    assert r["errors"]["total"] == 0
    pairs = run_loadgen(tmp_path, "throughput", port, *args, "--pairs", "8", "--qos", "1", "--duration", "1",
                        "--rate", "500")
    p = pairs["throughput"]
    assert p["sent"] > 0 and p["received"] == p["sent"] == p["acked"] and pairs["errors"]["total"] == 0
    assert p["out_of_order_or_duplicate"] == 0
    held = run_loadgen(tmp_path, "connect", port, *args, "--connections", "60", "--concurrency", "20",
                       "--hold", "1.5", "--keep-alive", "1")
    assert held["connect"]["established"] == 60 and held["errors"]["total"] == 0


def test_insecure_skips_verification_and_a_stranger_ca_fails_in_one_line(transports_broker, pki, tmp_path):  # noqa: F811
    [(_, port)] = transports_broker.listeners["tls"]
    r = run_loadgen(tmp_path, "connect", port, "--tls", "--insecure", "--tls-resume", "--connections", "20",
                    "--hold", "0")
    assert r["connect"]["established"] == 20 and r["errors"]["total"] == 0
    # otherca.pem did not sign the broker's certificate.
    proc = subprocess.run([loadgen_bin(), "connect", "--port", str(port), "--connections", "2", "--tls",
                           "--cafile", pki.path("otherca.pem")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert f"cannot connect to 127.0.0.1:{port} (tls): " in proc.stderr and "certificate" in proc.stderr


def test_bad_websocket_path_and_options_are_errors(transports_broker, pki):  # noqa: F811
    [(_, port)] = transports_broker.listeners["ws"]
    proc = subprocess.run([loadgen_bin(), "connect", "--port", str(port), "--connections", "2", "--ws", "/nope"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "(ws): HTTP 404" in proc.stderr, proc.stderr
    for bad in (["--cafile", pki.path("ca.pem")], ["--insecure"], ["--tls", "--insecure", "--cafile", "x"]):
        proc = subprocess.run([loadgen_bin(), "connect", "--port", str(port), *bad], capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 2 and "error:" in proc.stderr, (bad, proc.stderr)
    proc = subprocess.run([loadgen_bin(), "connect", "--port", str(port), "--tls"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1 and "--cafile" in proc.stderr and "--insecure" in proc.stderr, proc.stderr
