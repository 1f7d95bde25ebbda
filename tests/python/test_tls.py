"""TLS listeners (`[[listener]] transport = "tls"`): mosquitto_pub/sub with --cafile over TLS 1.2
and 1.3, paho-mqtt with tls_set on enough client ids that most are handed off to the other
core, a persistent session that moves from TLS to plain TCP, client certificates
(`require_certificate`, `use_identity_as_username`), certificates reloaded on SIGHUP, config
errors naming the listener, and non-TLS bytes on the TLS port.

Certificates are made here with the openssl CLI: a CA, a server certificate for 127.0.0.1
and localhost, and client certificates (one from another CA)."""

from __future__ import annotations

import shutil
import signal
import socket
import ssl
import subprocess
import time

import paho.mqtt.client as mqtt
import pytest

from berthproc import CONNACK_DEBUG, berth_bin
from clients import Paho
from mqttwire import V5, V311
from pki import Pki

MOSQUITTO_PUB = shutil.which("mosquitto_pub")
MOSQUITTO_SUB = shutil.which("mosquitto_sub")


def tls_config(pki: Pki, extra: str = "", name: str = "berth.toml") -> str:
    path = pki.path(name)
    with open(path, "w") as f:
        f.write('[[listener]]\naddress = "127.0.0.1:0"\ntransport = "tls"\n'
                f'cert = "server.pem"\nkey = "server.key"\n{extra}')
    return path


def tls_addr(broker) -> tuple[str, int]:
    [addr] = broker.listeners["tls"]
    return addr


def mosquitto(tool: str, addr, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([tool, "-h", addr[0], "-p", str(addr[1]), *args], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("version", ["tlsv1.2", "tlsv1.3"])
def test_mosquitto_clients_over_tls(start_broker, pki, version):
    assert MOSQUITTO_PUB and MOSQUITTO_SUB, "tests/run-all.sh installs mosquitto-clients"
    broker = start_broker("--config", tls_config(pki))
    addr = tls_addr(broker)
    tls = ["--cafile", pki.path("ca.pem"), "--tls-version", version]
    # Retained, so the subscriber started afterwards gets it without a race.
    pub = mosquitto(MOSQUITTO_PUB, addr, *tls, "-t", f"tls/{version}", "-m", f"over {version}",
                    "-r", "-q", "1", "-i", f"pub-{version}")
    assert pub.returncode == 0, pub.stdout + pub.stderr
    sub = mosquitto(MOSQUITTO_SUB, addr, *tls, "-t", f"tls/{version}", "-C", "1", "-W", "10",
                    "-i", f"sub-{version}")
    assert sub.returncode == 0 and sub.stdout.strip() == f"over {version}", sub.stdout + sub.stderr
    # The plain listener is still there, beside the TLS one.
    plain = mosquitto(MOSQUITTO_SUB, broker.addr, "-t", f"tls/{version}", "-C", "1", "-W", "10")
    assert plain.stdout.strip() == f"over {version}", plain.stdout + plain.stderr


def paho_tls(pki: Pki, client_id: str, version: int = V5, *, clean: bool = True,
             cert: str | None = None) -> Paho:
    client = Paho(client_id, version, clean=clean)
    kw = {"certfile": pki.path(f"{cert}.pem"), "keyfile": pki.path(f"{cert}.key")} if cert else {}
    client.client.tls_set(ca_certs=pki.path("ca.pem"), **kw)
    return client


def subscribed(client: Paho, topic: str) -> None:
    acks = []
    client.client.on_subscribe = lambda c, u, mid, codes, props: acks.append(mid)
    client.client.subscribe(topic, qos=1)
    client.loop_until(lambda: acks, 5, f"SUBACK for {topic}")


def test_paho_over_tls_on_both_cores_with_hand_offs(start_broker, pki):
    broker = start_broker("--config", tls_config(pki), CONNACK_DEBUG, cores=2)
    addr = tls_addr(broker)
    moved = 0
    clients = []
    for i in range(60):
        client = paho_tls(pki, f"tls-many-{i}")
        _, rc, _ = client.connect(addr)
        assert rc == 0
        props = client.user_properties()
        moved += props["berth-shard"] != props["berth-accepted-on"]
        clients.append(client)
    assert 5 <= moved <= 55, f"{moved} of 60 handed off: both cores' paths should be taken"
    # Traffic flows through moved connections: each of a few subscribes, one publishes.
    got: dict[int, bytes] = {}
    for i, c in enumerate(clients[:10]):
        subscribed(c, "tls/many")
        c.client.on_message = lambda cl, u, m, i=i: got.__setitem__(i, m.payload)
    clients[-1].client.publish("tls/many", b"to all", qos=1)
    deadline = time.monotonic() + 10
    while len(got) < 10 and time.monotonic() < deadline:
        for c in clients:
            c.client.loop(timeout=0.01)
    assert len(got) == 10 and set(got.values()) == {b"to all"}, got
    for c in clients:
        c.disconnect()


def test_a_persistent_session_moves_from_tls_to_plain_tcp(start_broker, pki):
    broker = start_broker("--config", tls_config(pki), cores=2)
    got = []
    first = paho_tls(pki, "tls-resume", V311, clean=False)
    _, rc, _ = first.connect(tls_addr(broker))
    assert rc == 0
    subscribed(first, "resume/t")
    first.disconnect()
    sender = Paho("tls-resume-sender", V311)
    sender.connect(broker.addr)
    for n in (1, 2):
        info = sender.client.publish("resume/t", f"offline {n}".encode(), qos=1)
        sender.loop_until(info.is_published, 5, f"PUBACK {n}")
    sender.disconnect()
    again = Paho("tls-resume", V311, clean=False)
    again.client.on_message = lambda c, u, m: got.append(m.payload)
    flags, rc, _ = again.connect(broker.addr)
    assert rc == 0 and flags.session_present, "the TLS session resumes over plain TCP"
    again.loop_until(lambda: len(got) == 2, 10, "the two queued messages")
    assert got == [b"offline 1", b"offline 2"]
    again.disconnect()


def test_client_certificates_are_required_and_give_the_username(start_broker, pki, tmp_path):
    # No password file user is `sensor-1`, and anonymous clients are refused: only the
    # certificate's CN, taken as the username without asking the password file, lets it in.
    passwords = str(tmp_path / "pw")
    subprocess.run([berth_bin(), "passwd", "-c", "-b", passwords, "alice", "secret"], check=True,
                   capture_output=True, timeout=60)
    extra = 'ca = "ca.pem"\nrequire_certificate = true\nuse_identity_as_username = true\n'
    broker = start_broker("--config", tls_config(pki, extra), "--password-file", passwords,
                          "--allow-anonymous", "false")
    addr = tls_addr(broker)
    base = ["--cafile", pki.path("ca.pem"), "-t", "cert/t", "-m", "m", "-d"]
    bare = mosquitto(MOSQUITTO_PUB, addr, *base, "-i", "no-cert")
    assert bare.returncode != 0 and "CONNACK" not in bare.stdout, bare.stdout + bare.stderr
    stranger = mosquitto(MOSQUITTO_PUB, addr, *base, "--cert", pki.path("stranger.pem"),
                         "--key", pki.path("stranger.key"), "-i", "stranger")
    assert stranger.returncode != 0 and "CONNACK" not in stranger.stdout, stranger.stdout
    good = mosquitto(MOSQUITTO_PUB, addr, *base, "--cert", pki.path("client.pem"),
                     "--key", pki.path("client.key"), "-i", "with-cert", "-u", "alice", "-P", "wrong")
    assert good.returncode == 0 and "received CONNACK (0)" in good.stdout, good.stdout + good.stderr
    # The plain listener still asks the password file.
    plain = mosquitto(MOSQUITTO_PUB, broker.addr, "-t", "t", "-m", "m", "-d", "-u", "alice", "-P", "wrong")
    assert "received CONNACK (5)" in plain.stdout or "received CONNACK (4)" in plain.stdout, plain.stdout


def serial_of(addr, cafile: str) -> int:
    context = ssl.create_default_context(cafile=cafile)
    with socket.create_connection(addr, timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            return int(tls.getpeercert()["serialNumber"], 16)


def test_sighup_reloads_certificates_for_new_connections(start_broker, pki):
    broker = start_broker("--config", tls_config(pki))
    addr = tls_addr(broker)
    assert serial_of(addr, pki.path("ca.pem")) == 0x1001
    old = paho_tls(pki, "tls-before-reload")
    got = []
    old.client.on_message = lambda c, u, m: got.append(m.payload)
    assert old.connect(addr)[1] == 0
    subscribed(old, "reload/t")
    pki.server_certificate("0x1002")
    broker.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "TLS certificates reloaded" not in broker.stderr_text():
        assert time.monotonic() < deadline, broker.describe()
        old.client.loop(timeout=0.05)
    assert serial_of(addr, pki.path("ca.pem")) == 0x1002
    # The connection made before the reload goes on with its own session.
    info = old.client.publish("reload/t", b"still here", qos=1)
    old.loop_until(lambda: info.is_published() and got, 10, "own message back")
    assert got == [b"still here"]
    old.disconnect()


def test_bad_listener_config_names_the_listener_the_key_and_the_file(pki):
    path = pki.path("bad.toml")
    with open(path, "w") as f:
        f.write('[[listener]]\naddress = "127.0.0.1:0"\ntransport = "tls"\n'
                'cert = "nowhere.pem"\nkey = "server.key"\n')
    proc = subprocess.run([berth_bin(), "--config", path], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2, proc.stderr
    assert "listener 1 (127.0.0.1:0): key `cert` in " in proc.stderr and "bad.toml" in proc.stderr, proc.stderr
    assert "cannot read" in proc.stderr and "nowhere.pem" in proc.stderr, proc.stderr


def test_plain_bytes_and_stalled_handshakes_on_the_tls_port_harm_no_one(start_broker, pki):
    broker = start_broker("--config", tls_config(pki), "--connect-timeout", "1")
    addr = tls_addr(broker)
    garbage = socket.create_connection(addr, timeout=5)
    garbage.sendall(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")
    stalled = socket.create_connection(addr, timeout=5)
    stalled.sendall(b"\x16\x03\x01\x00")  # the start of a ClientHello, never finished
    client = paho_tls(pki, "tls-bystander")
    assert client.connect(addr)[1] == 0
    # The garbage gets a TLS alert or a close, never an MQTT answer, and the broker ends both.
    reply = garbage.recv(64)
    assert not reply or reply[0] == 0x15, reply
    # The connect timeout (1 s) ends the handshake that never finishes.
    assert stalled.recv(64) == b""
    info = client.client.publish("bystander/t", b"x", qos=1)
    client.loop_until(info.is_published, 5, "PUBACK after the bad clients")
    client.disconnect()
    garbage.close()
    stalled.close()
    assert broker.alive()


def test_a_session_belongs_to_the_certificate_that_took_it(start_broker, pki):
    """With `use_identity_as_username` and no password file the certificate's name is a
    checked username, so another certificate cannot take over (or clean) the session."""
    pki.leaf("other", "/CN=sensor-2", "ca", "0x2002", client=True)
    extra = 'ca = "ca.pem"\nrequire_certificate = true\nuse_identity_as_username = true\n'
    broker = start_broker("--config", tls_config(pki, extra))
    addr = tls_addr(broker)

    def connect(cert: str, *extra: str) -> subprocess.CompletedProcess:
        return mosquitto(MOSQUITTO_PUB, addr, "--cafile", pki.path("ca.pem"), "--cert", pki.path(f"{cert}.pem"),
                         "--key", pki.path(f"{cert}.key"), "-i", "meter-9", "-t", "t", "-m", "m", "-d", *extra)

    owner = connect("client", "-c", "-q", "1")
    assert "received CONNACK (0)" in owner.stdout, owner.stdout + owner.stderr
    thief = connect("other")
    assert "received CONNACK (5)" in thief.stdout, thief.stdout + thief.stderr
    again = connect("client", "-c", "-q", "1")
    assert "received CONNACK (0)" in again.stdout, again.stdout + again.stderr
