"""Persistent sessions on every transport, with real clients: the seed walk-through (3.1.1,
Clean Session 0, subscribe at QoS 1, disconnect, two QoS 1 messages published while offline,
reconnect: Session Present 1 and both, in order) with paho-mqtt over tcp, tls (`tls_set`),
ws (`transport="websockets"`) and wss (both), and across transports (a device leaves a TLS
connection and resumes over WSS; one leaves WebSocket and resumes over TLS). On each, client
ids of both cores are tried until the broker's log shows a connection handed off to core 0
and one to core 1, so both cores' hand-off paths carry the session. Also mosquitto_pub/sub
with client certificates on a `require_certificate` listener."""

from __future__ import annotations

import re
import shutil
import subprocess
import time

import pytest

from clients import Paho
from mqttwire import V5, V311, ids_owned_by
from pki import Pki, listeners_config

MOSQUITTO_PUB = shutil.which("mosquitto_pub")
MOSQUITTO_SUB = shutil.which("mosquitto_sub")
# `conn{client_id=ID core=OWNER peer=...}: ... CONNECT accepted ... accepted_on=CORE`
ACCEPTED = re.compile(r"conn\{client_id=(\S+) core=(\d+) [^}]*\}: .*CONNECT accepted .*accepted_on=(\d+)")
ATTEMPTS = 10  # ids tried per owner core: each is handed off with probability 3/4


def addr_of(broker, transport: str) -> tuple[str, int]:
    return broker.addr if transport == "tcp" else broker.listeners[transport][0]


def client(pki: Pki, transport: str, client_id: str, version: int = V311, *, clean: bool = True) -> Paho:
    """paho-mqtt on `transport`: tcp, tls, ws or wss; the TLS ones trust the test CA."""
    p = Paho(client_id, version, clean=clean, transport="websockets" if transport in ("ws", "wss") else "tcp")
    if transport in ("tls", "wss"):
        p.client.tls_set(ca_certs=pki.path("ca.pem"))
    return p


def subscribed(c: Paho, topic: str) -> None:
    acks = []
    c.client.on_subscribe = lambda cl, u, mid, codes, props: acks.append(codes)
    c.client.subscribe(topic, qos=1)
    c.loop_until(lambda: acks, 5, f"SUBACK for {topic}")
    assert [code.value for code in acks[0]] == [1], acks


def handed_off(broker, client_id: str, connections: int) -> bool:
    """Whether any of `client_id`'s connections was accepted by a core that does not own it
    (waiting until the log names all `connections` of them)."""
    deadline = time.monotonic() + 5
    while True:
        seen = [(int(owner), int(acc)) for cid, owner, acc in ACCEPTED.findall(broker.stderr_text())
                if cid == client_id]
        if len(seen) >= connections:
            return any(owner != acc for owner, acc in seen)
        assert time.monotonic() < deadline, f"{client_id}: {seen} in the log\n{broker.describe()}"
        time.sleep(0.02)


def walk_through(broker, pki: Pki, first: str, then: str, cid: str) -> None:
    topic = f"walk/{cid}"
    c = client(pki, first, cid, clean=False)
    flags, rc, _ = c.connect(addr_of(broker, first))
    assert rc == 0 and not flags.session_present, f"{cid}: a new session"
    subscribed(c, topic)
    c.disconnect()
    sender = client(pki, "tcp", f"{cid}-sender")
    assert sender.connect(broker.addr)[1] == 0
    for n in (1, 2):
        info = sender.client.publish(topic, f"offline {n}".encode(), qos=1)
        sender.loop_until(info.is_published, 5, f"PUBACK {n}")
    sender.disconnect()
    got = []
    again = client(pki, then, cid, clean=False)
    again.client.on_message = lambda cl, u, m: got.append((m.topic, m.payload, m.qos))
    flags, rc, _ = again.connect(addr_of(broker, then))
    assert rc == 0 and flags.session_present, f"{cid}: Session Present 0 on {then} after {first}"
    again.loop_until(lambda: len(got) >= 2, 10, "the two queued messages")
    assert got == [(topic, b"offline 1", 1), (topic, b"offline 2", 1)], got
    again.disconnect()


@pytest.mark.parametrize("first, then", [
    ("tcp", "tcp"), ("tls", "tls"), ("ws", "ws"), ("wss", "wss"), ("tls", "wss"), ("ws", "tls"),
], ids=lambda t: t)
def test_the_seed_walk_through_on_every_transport_and_both_cores(start_broker, pki, first, then):
    broker = start_broker("--config", listeners_config(pki, "tls", "ws", "wss"), cores=2)
    for core in (0, 1):
        for cid in ids_owned_by(core, 2, f"walk-{first}-{then}", ATTEMPTS):
            walk_through(broker, pki, first, then, cid)
            if handed_off(broker, cid, 2):
                break
        else:
            raise AssertionError(f"no session of core {core} was handed off in {ATTEMPTS} tries")


def test_paho_v5_over_wss_on_both_cores(start_broker, pki):
    broker = start_broker("--config", listeners_config(pki, "wss"), "--connack-debug-properties")
    moved = {0: 0, 1: 0}
    for n in range(24):
        c = client(pki, "wss", f"wss-v5-{n}", V5)
        assert c.connect(addr_of(broker, "wss"))[1] == 0
        props = c.user_properties()
        if props["berth-shard"] != props["berth-accepted-on"]:
            moved[int(props["berth-shard"])] += 1
        got = []
        c.client.on_message = lambda cl, u, m: got.append(m.payload)
        subscribed(c, f"wss/{n}")
        c.client.publish(f"wss/{n}", b"x" * 70_000, qos=1)
        c.loop_until(lambda: got, 5, "own message back")
        assert got == [b"x" * 70_000]
        c.disconnect()
    assert all(moved.values()), f"hand-offs to each core: {moved}"


def mosquitto(tool: str, addr, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([tool, "-h", addr[0], "-p", str(addr[1]), *args], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


def test_mosquitto_clients_with_client_certificates(start_broker, pki):
    assert MOSQUITTO_PUB and MOSQUITTO_SUB, "tests/run-all.sh installs mosquitto-clients"
    extra = 'ca = "ca.pem"\nrequire_certificate = true\n'
    broker = start_broker("--config", listeners_config(pki, "tls", extra=extra))
    addr = addr_of(broker, "tls")
    tls = ["--cafile", pki.path("ca.pem"), "--cert", pki.path("client.pem"), "--key", pki.path("client.key")]
    # A persistent subscriber (-c) subscribes and leaves (-E), the publisher sends two QoS 1
    # messages, and the subscriber comes back for them: no race with the subscription.
    sub = ["-t", "certs/#", "-v", "-q", "1", "-c", "-i", "cert-sub"]
    subscribed = mosquitto(MOSQUITTO_SUB, addr, *tls, *sub, "-E")
    assert subscribed.returncode == 0, subscribed.stdout + subscribed.stderr
    for n in (1, 2):
        pub = mosquitto(MOSQUITTO_PUB, addr, *tls, "-t", f"certs/{n}", "-m", f"signed {n}",
                        "-q", "1", "-i", f"cert-pub-{n}")
        assert pub.returncode == 0, pub.stdout + pub.stderr
    back = mosquitto(MOSQUITTO_SUB, addr, *tls, *sub, "-C", "2", "-W", "10")
    assert back.returncode == 0, back.stdout + back.stderr
    assert back.stdout.splitlines() == ["certs/1 signed 1", "certs/2 signed 2"], back.stdout
    # Without a certificate the same client gets no further than the handshake.
    bare = mosquitto(MOSQUITTO_PUB, addr, "--cafile", pki.path("ca.pem"), "-t", "certs/x", "-m", "m", "-d")
    assert bare.returncode != 0 and "CONNACK" not in bare.stdout, bare.stdout + bare.stderr
