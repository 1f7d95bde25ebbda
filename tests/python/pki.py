"""Certificates for the TLS and secure WebSocket tests, made with the openssl CLI: a CA, a
server certificate for 127.0.0.1 and localhost, and client certificates (one from another CA);
and config files with `[[listener]]` tables that use them (the `pki` fixture of conftest.py
makes a fresh set per test)."""

from __future__ import annotations

import os
import shutil
import subprocess

OPENSSL = shutil.which("openssl")


def openssl(*args: str) -> None:
    assert OPENSSL, "openssl is missing; tests/run-all.sh installs it"
    subprocess.run([OPENSSL, *args], check=True, capture_output=True, timeout=60)


class Pki:
    """Files in `dir`: ca.pem, server.pem/.key (serial 0x1001), client.pem/.key (CN sensor-1),
    and stranger.pem/.key (CN sensor-1, from another CA)."""

    def __init__(self, dir: str):
        self.dir = dir
        for ca in ("ca", "otherca"):
            openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", f"/CN={ca}", "-keyout", self.path(f"{ca}.key"),
                    "-out", self.path(f"{ca}.pem"))
        self.server_certificate("0x1001")
        self.leaf("client", "/O=Berth Tests/CN=sensor-1", "ca", "0x2001", client=True)
        self.leaf("stranger", "/CN=sensor-1", "otherca", "0x3001", client=True)

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def server_certificate(self, serial: str) -> None:
        self.leaf("server", "/CN=localhost", "ca", serial, client=False)

    def leaf(self, name: str, subject: str, ca: str, serial: str, *, client: bool) -> None:
        ext = self.path(f"{name}.ext")
        with open(ext, "w") as f:
            f.write("basicConstraints=critical,CA:FALSE\n")
            if client:
                f.write("extendedKeyUsage=clientAuth\n")
            else:
                f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-subj", subject, "-keyout", self.path(f"{name}.key"), "-out", self.path(f"{name}.csr"))
        openssl("x509", "-req", "-in", self.path(f"{name}.csr"), "-CA", self.path(f"{ca}.pem"),
                "-CAkey", self.path(f"{ca}.key"), "-set_serial", serial, "-days", "2",
                "-extfile", ext, "-out", self.path(f"{name}.pem"))


def listeners_config(pki: Pki, *transports: str, extra: str = "", name: str = "listeners.toml") -> str:
    """A config file with one `[[listener]]` table per transport (tls, ws, wss) on an ephemeral
    port, the TLS ones with the server certificate; berth's `--listen` adds the plain one."""
    path = pki.path(name)
    with open(path, "w") as f:
        for transport in transports:
            f.write(f'[[listener]]\naddress = "127.0.0.1:0"\ntransport = "{transport}"\n')
            if transport in ("tls", "wss"):
                f.write('cert = "server.pem"\nkey = "server.key"\n')
            f.write(extra)
    return path
