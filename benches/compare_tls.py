"""The TLS scenarios of benches/compare.py: the resume storm and QoS 1 pairs over TLS, and TLS
handshakes against one broker core; berth and Mosquitto only, both with the same certificate.

The certificates are made with the openssl CLI into target/compare-certs: a CA and a server
certificate for 127.0.0.1 and localhost, both ECDSA P-256 (what the tests use, and a common
choice for devices). The load generator verifies the broker's certificate against the CA
(`--tls --cafile`) and resumes no TLS session, so every connection is a full handshake.
"""

from __future__ import annotations

import os
import subprocess

SCENARIOS = ("resume-tls", "qos1-pairs-tls", "tls-handshakes")
# The brokers that run them (rumqttd 0.20's TLS listener is not set up here).
BROKERS = ("mosquitto", "berth")
# Scenarios where berth runs on one core, so its rate is a rate per core. Mosquitto has one
# thread anyway.
ONE_CORE = ("tls-handshakes",)
KIND = {"resume-tls": "resume", "qos1-pairs-tls": "throughput", "tls-handshakes": "connect"}


def scenarios(n, cafile: str) -> dict[str, list[str]]:
    tls = ["--tls", "--cafile", cafile]
    return {
        # A tenth of the plain resume scenario: every session costs two full handshakes.
        "resume-tls": ["resume", "--sessions", n(10_000), "--messages", "10", "--qos", "1",
                       "--payload", "64", "--concurrency", n(1_000), "--publishers", "8",
                       "--source-ips", "16", "--timeout", "60", *tls],
        "qos1-pairs-tls": ["throughput", "--pattern", "pairs", "--pairs", n(1000), "--qos", "1",
                           "--payload", "64", "--duration", "10", "--inflight", "64",
                           "--timeout", "60", *tls],
        # Connect, CONNACK, DISCONNECT, 100 at a time: the rate is handshakes per second.
        "tls-handshakes": ["connect", "--connections", n(20_000), "--concurrency", n(100),
                           "--hold", "0", "--source-ips", "16", "--timeout", "60", *tls],
    }


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def make_certs(certs: str) -> str:
    """ca.pem, server.pem and server.key in `certs` (made once); returns the CA's path."""
    os.makedirs(certs, exist_ok=True)
    path = lambda name: os.path.join(certs, name)  # noqa: E731
    if os.path.exists(path("server.pem")):
        return path("ca.pem")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-days", "30", "-subj", "/CN=compare-ca", "-keyout", path("ca.key"),
            "-out", path("ca.pem"))
    with open(path("server.ext"), "w") as f:
        f.write("basicConstraints=critical,CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n"
                "extendedKeyUsage=serverAuth\n")
    openssl("req", *ec, "-subj", "/CN=localhost", "-keyout", path("server.key"), "-out", path("server.csr"))
    openssl("x509", "-req", "-in", path("server.csr"), "-CA", path("ca.pem"), "-CAkey", path("ca.key"),
            "-set_serial", "0x4242", "-days", "30", "-extfile", path("server.ext"), "-out", path("server.pem"))
    # Mosquitto reads them as the user it runs as.
    for name in ("ca.pem", "server.pem", "server.key"):
        os.chmod(path(name), 0o644)
    return path("ca.pem")


def mosquitto_listener(port: int, certs: str) -> str:
    """Mosquitto's listener lines: TLS on `port` with the server certificate."""
    return (f"listener {port} 127.0.0.1\ncertfile {certs}/server.pem\nkeyfile {certs}/server.key\n")


def berth_listener(work: str, port: int, certs: str) -> list[str]:
    """berth's flags for a TLS listener on `port` (a config file in `work`); the plain listener
    goes on another free port, unused."""
    conf = os.path.join(work, "berth.toml")
    with open(conf, "w") as f:
        f.write(f'[[listener]]\naddress = "127.0.0.1:{port}"\ntransport = "tls"\n'
                f'cert = "{certs}/server.pem"\nkey = "{certs}/server.key"\n')
    return ["--config", conf]
