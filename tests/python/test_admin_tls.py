"""The admin API over HTTPS (`admin_tls_cert`, `admin_tls_key`): the API and /metrics answer
over TLS checked against the test CA, plain HTTP on that port gets no answer, a connection
that stays silent (no request, or a handshake never finished) is closed after
`admin_idle_timeout`, SIGHUP swaps the certificate for new connections, and a key without
its partner is a config error naming it."""

from __future__ import annotations

import json
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from berthproc import berth_bin


def https_flags(pki, *extra: str) -> tuple[str, ...]:
    return ("--admin-listen", "127.0.0.1:0", "--admin-allow-anonymous", "true",
            "--admin-tls-cert", pki.path("server.pem"), "--admin-tls-key", pki.path("server.key"), *extra)


def get(url: str, context: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10, context=context) as r:
        return r.status, r.read()


def serial_of(addr, cafile: str) -> int:
    context = ssl.create_default_context(cafile=cafile)
    with socket.create_connection(addr, timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            return int(tls.getpeercert()["serialNumber"], 16)


def closed_within(addr, seconds: float, first: bytes = b"") -> float:
    """Seconds until the server closes a connection that sent only `first`."""
    started = time.monotonic()
    with socket.create_connection(addr, timeout=seconds) as s:
        if first:
            s.sendall(first)
        try:
            while s.recv(4096):
                pass
        except ConnectionResetError:
            pass
    return time.monotonic() - started


def test_the_api_and_metrics_answer_over_https_only(start_broker, pki):
    b = start_broker(*https_flags(pki))
    host, port = b.admin
    context = ssl.create_default_context(cafile=pki.path("ca.pem"))
    status, body = get(f"https://localhost:{port}/api/v1/clients", context)
    assert status == 200 and json.loads(body)["data"] == []
    status, body = get(f"https://127.0.0.1:{port}/metrics", context)
    families = {f.name for f in text_string_to_metric_families(body.decode())}
    assert status == 200 and "berth_connections" in families, families
    # The dashboard page comes over the same connection kind.
    assert b"<html" in get(f"https://localhost:{port}/", context)[1].lower()
    # A client that does not trust the CA refuses the certificate.
    with pytest.raises(urllib.error.URLError) as refused:
        get(f"https://localhost:{port}/api/v1/clients", ssl.create_default_context())
    assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value), refused.value
    # Plain HTTP on the TLS port gets no HTTP answer.
    with pytest.raises((urllib.error.URLError, ConnectionError, http_client_errors())):
        get(f"http://{host}:{port}/api/v1/clients")


def http_client_errors():
    import http.client
    return http.client.HTTPException


def test_silent_connections_and_unfinished_handshakes_are_closed_after_the_idle_timeout(start_broker, pki):
    b = start_broker(*https_flags(pki, "--admin-idle-timeout", "1"))
    addr = b.admin
    # A connection that never sends a byte, and one that stops inside its ClientHello.
    assert 0.5 < closed_within(addr, 10) < 8
    assert 0.5 < closed_within(addr, 10, first=b"\x16\x03\x01\x00\xc8\x01\x00") < 8
    # The API goes on answering others meanwhile.
    context = ssl.create_default_context(cafile=pki.path("ca.pem"))
    assert get(f"https://localhost:{addr[1]}/api/v1/clients", context)[0] == 200


def test_sighup_swaps_the_admin_certificate_for_new_connections(start_broker, pki):
    b = start_broker(*https_flags(pki))
    addr = ("127.0.0.1", b.admin[1])
    assert serial_of(addr, pki.path("ca.pem")) == 0x1001
    pki.server_certificate("0x1002")
    b.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "admin API TLS certificate reloaded" not in b.stderr_text():
        assert time.monotonic() < deadline, b.describe()
        time.sleep(0.05)
    assert serial_of(addr, pki.path("ca.pem")) == 0x1002


@pytest.mark.parametrize("given, missing", [("--admin-tls-cert", "admin_tls_key"), ("--admin-tls-key", "admin_tls_cert")])
def test_a_tls_file_without_its_partner_is_an_error_naming_the_missing_key(pki, given, missing):
    path = pki.path("server.pem" if given.endswith("cert") else "server.key")
    proc = subprocess.run([berth_bin(), "--admin-allow-anonymous", "true", given, path],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and missing in proc.stderr, proc.stderr


def test_a_key_that_does_not_fit_the_certificate_is_named(pki):
    proc = subprocess.run([berth_bin(), "--admin-allow-anonymous", "true",
                           "--admin-tls-cert", pki.path("server.pem"), "--admin-tls-key", pki.path("client.key")],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "admin-tls-key" in proc.stderr, proc.stderr


def test_the_same_in_a_config_file_names_the_key_and_the_file(pki):
    path = pki.path("admin.toml")
    with open(path, "w") as f:
        f.write('admin_allow_anonymous = true\nadmin_tls_cert = "server.pem"\n')
    proc = subprocess.run([berth_bin(), "--config", path], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2, proc.stderr
    assert "key `admin_tls_cert`" in proc.stderr and "admin.toml" in proc.stderr and "admin_tls_key" in proc.stderr, proc.stderr
