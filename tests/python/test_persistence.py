"""Persistent sessions (issue 4), black box: what a client sees when it comes back, with the
broker left running, stopped with SIGTERM, or killed with SIGKILL in between (a restart
starts a new process on the same data directory, on a new ephemeral port).

Clients: mosquitto_sub/mosquitto_pub, paho-mqtt 3.1.1 and 5, and raw packets where a library
hides what is checked (DUP, packet ids, PUBREL, acknowledgement timing). Subscribers and
publishers are owned by different cores (`ids_owned_by`), so every delivery crosses cores.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from berthproc import Broker, berth_bin
from clients import RawSession, publish_all
from mqttwire import (PUBACK, PUBCOMP, PUBREC, PUBREL, SESSION_EXPIRY_INTERVAL, V5, V311, Conn,
                      ack_packet, disconnect_reason, ids_owned_by, packet, packet_id_of, prop_u32,
                      properties, publish_with)

CORES = 2
LOST = "[MQTT-3.2.2-2] Session Present must be 1: the stored session was lost"
NEW = "a new session must have Session Present 0"
T = 10.0
RESTARTS = pytest.mark.parametrize("restart", ["none", "sigterm", "sigkill"])
VERSIONS = pytest.mark.parametrize("version", [V311, V5], ids=["v311", "v5"])
MOSQUITTO_SUB, MOSQUITTO_PUB = shutil.which("mosquitto_sub"), shutil.which("mosquitto_pub")


def cid(core: int, name: str) -> str:
    return ids_owned_by(core, CORES, name)[0]


def restart_broker(broker: Broker, start_broker, how: str) -> Broker:
    """Stops `broker` (SIGTERM: must exit 0; SIGKILL: killed) and starts a new one with the
    same flags on the same data directory. `how == "none"` leaves it running."""
    if how == "none":
        return broker
    argv = broker.argv
    data_dir = argv[argv.index("--data-dir") + 1]
    cores = int(argv[argv.index("--cores") + 1])
    extra = argv[argv.index("--log") + 2:]
    if how == "sigterm":
        rc = broker.stop(signal.SIGTERM)
        assert rc == 0, f"broker exited with {rc} on SIGTERM\n{broker.describe()}"
    else:
        assert how == "sigkill", how
        broker.kill()
        broker.stop(sig=None)
    return start_broker(*extra, cores=cores, data_dir=data_dir)


def v5_disconnect(expiry: int | None = None, reason: int = 0) -> bytes:
    props = prop_u32(SESSION_EXPIRY_INTERVAL, expiry) if expiry is not None else b""
    return packet(0xE0, bytes([reason]) + properties(props))


# --- paho with its loop in a background thread ------------------------------------------------

class PahoSub:
    def __init__(self, client_id: str, version: int, *, clean: bool = False, expiry: int | None = None):
        self.version, self.clean, self.expiry = version, clean, expiry
        kw = {"clean_session": clean} if version == V311 else {}
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv5 if version == V5 else mqtt.MQTTv311,
                             reconnect_on_failure=False, **kw)
        self.msgs: queue.Queue = queue.Queue()
        self.connack = None
        self.connected, self.gone, self.subacked = threading.Event(), threading.Event(), threading.Event()
        self.c.on_connect = lambda c, u, flags, rc, props: (setattr(self, "connack", (flags, rc, props)),
                                                            self.connected.set())
        self.c.on_disconnect = lambda c, u, flags, rc, props: self.gone.set()
        self.c.on_message = lambda c, u, m: self.msgs.put(m)
        self.c.on_subscribe = lambda c, u, mid, rcs, props: self.subacked.set()

    def connect(self, addr) -> bool:
        """Connects; returns Session Present."""
        self.connected.clear()
        self.gone.clear()
        host, port = addr
        if self.version == V5:
            props = None
            if self.expiry is not None:
                props = Properties(PacketTypes.CONNECT)
                props.SessionExpiryInterval = self.expiry
            self.c.connect(host, port, keepalive=60, clean_start=self.clean, properties=props)
        else:
            self.c.connect(host, port, keepalive=60)
        self.c.loop_start()
        assert self.connected.wait(T), "paho: no CONNACK"
        assert not self.connack[1].is_failure, f"paho: CONNACK {self.connack[1]}"
        return bool(self.connack[0].session_present)

    def sub(self, topic: str, qos: int) -> None:
        self.subacked.clear()
        rc, _ = self.c.subscribe(topic, qos)
        assert rc == mqtt.MQTT_ERR_SUCCESS
        assert self.subacked.wait(T), f"paho: no SUBACK for {topic}"

    def get(self) -> mqtt.MQTTMessage:
        try:
            return self.msgs.get(timeout=T)
        except queue.Empty:
            raise AssertionError(f"paho: no message within {T}s") from None

    def disconnect(self) -> None:
        self.c.disconnect()
        assert self.gone.wait(T), "paho: no disconnect"
        self.c.loop_stop()

    def close(self) -> None:
        try:
            self.c.disconnect()
            self.c.loop_stop()
        except Exception:
            pass


@pytest.fixture
def pahos():
    made: list[PahoSub] = []
    yield made
    for p in made:
        p.close()


# (1) the "by hand" scenario -----------------------------------------------------------

def _mosquitto(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=20)


@RESTARTS
@pytest.mark.parametrize("mqtt_version", ["mqttv311", "mqttv5"])
def test_mqtt_3_1_2_5_by_hand_with_mosquitto_clients(start_broker, restart, mqtt_version):
    """mosquitto_sub -c -i ID -q 1 subscribes and exits; mosquitto_pub sends two QoS 1
    messages; the same mosquitto_sub comes back and gets both, in order, once each. berth
    decides nothing from mosquitto_sub's SUBSCRIBE on return: the messages were published
    while no connection held the subscription, so only the stored session can deliver them."""
    assert MOSQUITTO_SUB and MOSQUITTO_PUB, "mosquitto clients missing; tests/run-all.sh installs them"
    broker = start_broker()
    sid, pid = cid(1, f"mosq-hand-{mqtt_version}-sub"), cid(0, f"mosq-hand-{mqtt_version}-pub")

    def base(b):
        return ["-h", b.host, "-p", str(b.port), "-V", mqtt_version]

    r = _mosquitto(MOSQUITTO_SUB, *base(broker), "-c", "-i", sid, "-q", "1", "-t", "hand/t", "-E")
    assert r.returncode == 0, r.stdout + r.stderr
    for n in ("first", "second"):
        r = _mosquitto(MOSQUITTO_PUB, *base(broker), "-i", pid, "-q", "1", "-t", "hand/t", "-m", n)
        assert r.returncode == 0, r.stdout + r.stderr
    broker = restart_broker(broker, start_broker, restart)
    r = _mosquitto(MOSQUITTO_SUB, *base(broker), "-c", "-i", sid, "-q", "1", "-t", "hand/t",
                   "-C", "2", "-W", "5", "-d")
    assert r.returncode == 0, f"mosquitto_sub exited {r.returncode} (27: timed out):\n{r.stdout}{r.stderr}"
    lines = [line for line in r.stdout.splitlines() if not line.startswith("Client ")]
    assert lines == ["first", "second"], r.stdout + r.stderr
    received = [line for line in r.stdout.splitlines() if "received PUBLISH" in line]
    assert all("q1" in line for line in received), received


@RESTARTS
@VERSIONS
def test_mqtt_3_2_2_2_by_hand_with_paho(start_broker, pahos, restart, version):
    """paho, Clean Session 0 (v5: Clean Start 0 + Session Expiry): subscribe QoS 1,
    disconnect; two QoS 1 messages are published; on return Session Present is 1 and both
    arrive, in order."""
    broker = start_broker()
    sid, pid = cid(1, f"paho-hand-{version}-sub"), cid(0, f"paho-hand-{version}-pub")
    s = PahoSub(sid, version, clean=False, expiry=3600 if version == V5 else None)
    pahos.append(s)
    assert not s.connect(broker.addr), NEW
    s.sub("hand/p", 1)
    s.disconnect()

    p = PahoSub(pid, version, clean=True)
    pahos.append(p)
    p.connect(broker.addr)
    for n in (b"first", b"second"):
        info = p.c.publish("hand/p", n, qos=1)
        info.wait_for_publish(T)
        assert info.is_published()
    p.disconnect()

    broker = restart_broker(broker, start_broker, restart)
    assert s.connect(broker.addr), "[MQTT-3.2.2-2] Session Present must be 1 for a stored session"
    got = [s.get(), s.get()]
    assert [(m.payload, m.qos) for m in got] == [(b"first", 1), (b"second", 1)]
    s.disconnect()


# (2) subscriptions survive a restart, on both cores ----------------------------------------------

@pytest.mark.parametrize("restart", ["sigterm", "sigkill"])
def test_mqtt_3_1_2_5_subscriptions_survive_restart_on_both_cores(start_broker, restart):
    broker = start_broker()
    subs = {0: (cid(0, "subsurv-sub"), V311), 1: (cid(1, "subsurv-sub"), V5)}
    for core, (client_id, version) in subs.items():
        s = RawSession(broker.addr, client_id, version)
        assert not s.connect(expiry=3600).session_present, NEW
        s.subscribe(f"ss/{core}/+", 1)
        s.subscribe("ss/all", 1, packet_id=2)
        s.subscribe("ss/end", 1, packet_id=3)
        s.disconnect()
    broker = restart_broker(broker, start_broker, restart)

    # Offline after the restart: the recovered subscriptions route from either core.
    for pub_core in (0, 1):
        publish_all(broker.addr, cid(pub_core, "subsurv-pub"),
                    [(f"ss/{core}/x", f"off-{pub_core}-to-{core}".encode()) for core in (0, 1)]
                    + [("ss/all", f"off-{pub_core}-all".encode())])
    sessions = {}
    for core, (client_id, version) in subs.items():
        s = RawSession(broker.addr, client_id, version)
        assert s.connect(expiry=3600).session_present, f"core {core}'s session lost in the restart"
        sessions[core] = s
    # Online after the restart: live deliveries on the recovered subscriptions.
    for pub_core in (0, 1):
        publish_all(broker.addr, cid(pub_core, "subsurv-pub"),
                    [(f"ss/{core}/x", f"on-{pub_core}-to-{core}".encode()) for core in (0, 1)]
                    + [("ss/all", f"on-{pub_core}-all".encode())])
    publish_all(broker.addr, cid(0, "subsurv-pub"), [("ss/end", b"")])
    for core, s in sessions.items():
        got = [m.payload.decode() for m in s.drain_until("ss/end")]
        want = [f"{when}-{pub_core}-{what}" for when in ("off", "on") for pub_core in (0, 1)
                for what in (f"to-{core}", "all")]
        assert got == want, f"core {core}'s session got {got}"
        s.close()


# (3) redelivery with DUP and the same packet ids ------------------------------------------------

@RESTARTS
def test_mqtt_4_4_0_1_unacknowledged_resent_with_dup_and_same_ids_then_queue(start_broker, restart):
    broker = start_broker()
    sid, pid = cid(1, "dup-sub"), cid(0, "dup-pub")
    s = RawSession(broker.addr, sid, V311)
    s.connect(clean=False)
    s.subscribe("dup/t", 1)
    publish_all(broker.addr, pid, [("dup/t", f"m{i}".encode()) for i in range(3)])
    first = [s.next_publish(ack=False) for _ in range(3)]
    assert [(m.payload, m.dup, m.qos) for m in first] == [(b"m0", False, 1), (b"m1", False, 1), (b"m2", False, 1)]
    assert len({m.packet_id for m in first}) == 3, first
    s.disconnect()
    publish_all(broker.addr, pid, [("dup/t", f"m{i}".encode()) for i in range(3, 5)])
    broker = restart_broker(broker, start_broker, restart)

    s = RawSession(broker.addr, sid, V311)
    assert s.connect(clean=False).session_present, LOST
    again = [s.next_publish(ack=False) for _ in range(3)]
    assert [(m.payload, m.dup, m.packet_id) for m in again] == [(m.payload, True, m.packet_id) for m in first], \
        "[MQTT-4.4.0-1] unacknowledged PUBLISH packets resent first, in order, with DUP and their packet ids"
    queued = [s.next_publish(ack=False) for _ in range(2)]
    assert [(m.payload, m.dup, m.qos) for m in queued] == [(b"m3", False, 1), (b"m4", False, 1)]
    ids = [m.packet_id for m in again + queued]
    assert len(set(ids)) == 5, f"packet ids in use twice: {ids}"
    for m in again + queued:
        s.conn.send(ack_packet(PUBACK, m.packet_id))
    s.subscribe("dup/end", 1, packet_id=9)
    publish_all(broker.addr, pid, [("dup/end", b"")])
    assert s.drain_until("dup/end") == [], "acknowledged messages were sent again"
    s.close()


# (4) QoS 2 across reconnect and restart ---------------------------------------------------------

@RESTARTS
def test_mqtt_4_4_0_1_pubrel_resent_not_the_publish(start_broker, restart):
    broker = start_broker()
    sid, pid = cid(1, "q2out-sub"), cid(0, "q2out-pub")
    s = RawSession(broker.addr, sid, V311)
    s.connect(clean=False)
    s.subscribe("q2out/t", 2)
    s.subscribe("q2out/end", 1, packet_id=2)
    publish_all(broker.addr, pid, [("q2out/t", b"once")], qos=2)
    m = s.next_publish(ack=False)
    assert (m.payload, m.qos) == (b"once", 2)
    s.conn.send(ack_packet(PUBREC, m.packet_id))
    p = s.conn.read_packet()
    assert (p.ptype, p.flags, packet_id_of(p)) == (PUBREL, 2, m.packet_id), f"expected PUBREL, got {p!r}"
    s.disconnect()  # without PUBCOMP
    broker = restart_broker(broker, start_broker, restart)

    s = RawSession(broker.addr, sid, V311)
    assert s.connect(clean=False).session_present, LOST
    p = s.conn.read_packet()
    assert (p.ptype, p.flags, packet_id_of(p)) == (PUBREL, 2, m.packet_id), \
        f"[MQTT-4.4.0-1] the PUBREL is resent (not the PUBLISH): got {p!r}"
    s.conn.send(ack_packet(PUBCOMP, m.packet_id))
    publish_all(broker.addr, pid, [("q2out/end", b"")])
    assert s.drain_until("q2out/end") == [], "the QoS 2 message was delivered twice"
    s.close()


@pytest.mark.parametrize("restart", ["none", "sigkill"])
@VERSIONS
def test_mqtt_4_3_3_2_inbound_qos2_resent_after_reconnect_delivered_once(start_broker, restart, version):
    """A publisher (Clean Session 0) gets PUBREC for packet id 7, drops, comes back and resends
    the PUBLISH with DUP: PUBREC again, the subscriber gets it once, PUBREL 7 -> PUBCOMP 7."""
    broker = start_broker()
    sid, pid = cid(1, f"q2in-{version}-sub"), cid(0, f"q2in-{version}-pub")
    s = RawSession(broker.addr, sid, V311)
    s.connect(clean=False)
    s.subscribe("q2in/t", 2)
    s.subscribe("q2in/end", 1, packet_id=2)
    s.disconnect()

    p = RawSession(broker.addr, pid, version)
    p.connect(clean=False, expiry=3600)
    p.conn.send(publish_with("q2in/t", b"exactly-once", version, qos=2, packet_id=7))
    r = p.conn.read_packet()
    assert (r.ptype, packet_id_of(r)) == (PUBREC, 7), f"expected PUBREC 7, got {r!r}"
    assert len(r.body) < 3 or r.body[2] < 0x80, f"PUBREC failed: {r!r}"
    p.close()  # dropped, no PUBREL
    broker = restart_broker(broker, start_broker, restart)

    p = RawSession(broker.addr, pid, version)
    assert p.connect(clean=False, expiry=3600).session_present, LOST
    p.conn.send(publish_with("q2in/t", b"exactly-once", version, qos=2, packet_id=7, dup=True))
    r = p.conn.read_packet()
    assert (r.ptype, packet_id_of(r)) == (PUBREC, 7), f"expected PUBREC 7, got {r!r}"
    assert len(r.body) < 3 or r.body[2] < 0x80, f"PUBREC failed: {r!r}"
    p.conn.send(ack_packet(PUBREL, 7))
    r = p.conn.read_packet()
    assert (r.ptype, packet_id_of(r)) == (PUBCOMP, 7), f"expected PUBCOMP 7, got {r!r}"
    assert len(r.body) < 3 or r.body[2] == 0x00, f"PUBCOMP must be success, got {r!r}"
    p.disconnect()
    publish_all(broker.addr, cid(0, "q2in-marker"), [("q2in/end", b"")])

    s = RawSession(broker.addr, sid, V311)
    assert s.connect(clean=False).session_present, LOST
    got = [(m.payload, m.qos) for m in s.drain_until("q2in/end")]
    assert got == [(b"exactly-once", 2)], f"[MQTT-4.3.3-2] delivered {got}"
    s.close()


# (5) v5 Session Expiry -------------------------------------------------------------------------

def wait_session_gone(addr, client_id: str, offline_since: float, expiry: float, deadline: float) -> RawSession:
    """Reconnects (Clean Start 0) once `expiry` has passed since `offline_since`, and again with
    a growing margin while the session is still there (each of those reconnects starts its
    offline time again). Returns the connected session once Session Present is 0."""
    margin = 1.1  # the broker ends expired sessions on a 1 s tick
    while True:
        wait = offline_since + expiry + margin - time.monotonic()
        if wait > 0:
            time.sleep(wait)  # the expiry interval under test, not a synchronisation
        s = RawSession(addr, client_id, V5)
        if not s.connect(expiry=expiry).session_present:
            return s
        assert time.monotonic() < deadline, f"session {client_id} still present after its expiry of {expiry}s"
        s.disconnect()
        offline_since = time.monotonic()
        margin += 0.5


def _subscribed_v5(addr, client_id: str, expiry: int, topic: str) -> RawSession:
    s = RawSession(addr, client_id, V5)
    assert not s.connect(expiry=expiry).session_present, NEW
    s.subscribe(topic, 1)
    return s


def test_mqtt_3_1_2_23_session_kept_until_expiry_then_gone(broker):
    sid, pid = cid(1, "exp-sub"), cid(0, "exp-pub")
    s = _subscribed_v5(broker.addr, sid, 2, "exp/t")
    s.disconnect()
    publish_all(broker.addr, pid, [("exp/t", b"kept")], version=V5)
    ack = s.connect(expiry=2)
    assert ack.session_present, "[MQTT-3.2.2-3] within the expiry the session is resumed"
    assert s.next_publish().payload == b"kept"
    s.disconnect()
    offline_since = time.monotonic()

    s = wait_session_gone(broker.addr, sid, offline_since, 2, time.monotonic() + 15)
    s.subscribe("exp/end", 1)
    publish_all(broker.addr, pid, [("exp/t", b"old subscription"), ("exp/end", b"")], version=V5)
    assert s.drain_until("exp/end") == [], "the expired session's subscription still delivers"
    s.close()


def test_session_expiry_shortened_on_disconnect(broker):
    sid = cid(1, "exp-dis-short")
    s = _subscribed_v5(broker.addr, sid, 3600, "expd/t")
    s.disconnect(v5_disconnect(expiry=1))
    wait_session_gone(broker.addr, sid, time.monotonic(), 1, time.monotonic() + 15).close()


def test_session_expiry_lengthened_on_disconnect(broker):
    sid, pid = cid(1, "exp-dis-long"), cid(0, "exp-dis-pub")
    s = _subscribed_v5(broker.addr, sid, 1, "expl/t")
    s.disconnect(v5_disconnect(expiry=3600))
    time.sleep(2.5)  # more than the CONNECT's 1 s: the stimulus, not a synchronisation
    publish_all(broker.addr, pid, [("expl/t", b"kept")], version=V5)
    assert s.connect(expiry=3600).session_present, "DISCONNECT's Session Expiry 3600 must replace 1"
    assert s.next_publish().payload == b"kept"
    s.close()


def test_disconnect_session_expiry_zero_ends_session_at_once(broker):
    sid = cid(0, "exp-dis-zero")
    s = _subscribed_v5(broker.addr, sid, 3600, "expz/t")
    s.disconnect(v5_disconnect(expiry=0))
    assert not s.connect(expiry=3600).session_present, "Session Expiry 0 on DISCONNECT ends the session"
    s.close()


def test_mqtt_3_14_2_2_nonzero_expiry_on_disconnect_after_zero_is_protocol_error(broker):
    sid = cid(1, "exp-dis-err")
    s = _subscribed_v5(broker.addr, sid, 0, "expe/t")
    s.conn.send(v5_disconnect(expiry=60))
    packets = s.conn.read_until_closed()
    assert packets and disconnect_reason(packets[-1]) == 0x82, \
        f"[MQTT-3.14.2-2] DISCONNECT 0x82 Protocol Error expected, got {packets!r}"
    assert not s.connect(expiry=60).session_present, "the session with expiry 0 must not outlive it"
    s.close()


def test_session_expiry_capped_by_max_session_expiry(start_broker):
    broker = start_broker("--max-session-expiry", "5")
    s = RawSession(broker.addr, cid(1, "cap-over"), V5)
    ack = s.connect(expiry=3600)
    assert ack.props.get(SESSION_EXPIRY_INTERVAL) == 5, \
        f"asked 3600: CONNACK must tell the 5 s in force (MQTT 5.0 3.2.2.3.2): {ack.props}"
    s.close()
    s = RawSession(broker.addr, cid(0, "cap-under"), V5)
    ack = s.connect(expiry=3)
    assert ack.props.get(SESSION_EXPIRY_INTERVAL, 3) == 3, f"an expiry under the cap is kept: {ack.props}"
    s.close()


def test_session_expiry_never_0xffffffff_is_capped_and_told(start_broker):
    """0xFFFFFFFF asks for a session that never expires; under a cap the client must be told
    the interval in force, or it believes its session lives forever (MQTT 5.0 3.2.2.3.2)."""
    broker = start_broker("--max-session-expiry", "5")
    s = RawSession(broker.addr, cid(1, "cap-never"), V5)
    ack = s.connect(expiry=0xFFFFFFFF)
    assert ack.props.get(SESSION_EXPIRY_INTERVAL) == 5, \
        f"asked 0xFFFFFFFF: CONNACK must tell the 5 s in force (MQTT 5.0 3.2.2.3.2): {ack.props}"
    s.close()


def test_session_expiry_cap_is_enforced(start_broker):
    broker = start_broker("--max-session-expiry", "1")
    sid = cid(1, "cap-enf")
    s = _subscribed_v5(broker.addr, sid, 3600, "capx/t")
    s.disconnect()
    wait_session_gone(broker.addr, sid, time.monotonic(), 1, time.monotonic() + 15).close()


def test_offline_time_counts_across_restart(start_broker):
    """Expiry 4 s; 2 s offline; SIGTERM and start again. A session that comes back at once is
    there (the restart kept it); one that stays away is gone 1.5 s after its 4 s, which a
    broker that restarted the offline clock at start-up (gone 4 s after the restart) fails."""
    broker = start_broker()
    a, b = cid(0, "expr-a"), cid(1, "expr-b")
    for client_id in (a, b):
        _subscribed_v5(broker.addr, client_id, 4, "expr/t").disconnect()
    offline_since = time.monotonic()
    time.sleep(2.0)  # offline time before the restart: the stimulus
    broker = restart_broker(broker, start_broker, "sigterm")
    s = RawSession(broker.addr, a, V5)
    assert s.connect(expiry=4).session_present, "session lost in the restart"
    s.close()
    wait = offline_since + 5.5 - time.monotonic()
    if wait > 0:
        time.sleep(wait)
    s = RawSession(broker.addr, b, V5)
    assert not s.connect(expiry=4).session_present, \
        "session present 5.5 s after going offline with expiry 4: offline time before the restart was not counted"
    s.close()


# (6) retained messages ----------------------------------------------------------------------------

@pytest.mark.parametrize("restart", ["sigterm", "sigkill"])
def test_mqtt_3_3_1_5_retained_survive_restart_and_cleared_stay_cleared(start_broker, restart):
    broker = start_broker()
    pub = cid(0, "ret-pub")
    publish_all(broker.addr, pub, [("ret/keep", b"kept"), ("ret/clear", b"soon gone")], retain=True)
    publish_all(broker.addr, pub, [("ret/clear", b"")], retain=True)  # [MQTT-3.3.1-10] clears
    publish_all(broker.addr, pub, [("ret/v5", b"kept-5")], version=V5, qos=2, retain=True)
    broker = restart_broker(broker, start_broker, restart)

    s = RawSession(broker.addr, cid(1, "ret-sub"), V311)
    s.connect(clean=True)
    s.subscribe("ret-end", 1)
    s.subscribe("ret/#", 1, packet_id=2)  # last: the retained messages follow its SUBACK
    publish_all(broker.addr, pub, [("ret-end", b"")])
    got = sorted((m.topic, m.payload, m.retain) for m in s.drain_until("ret-end"))
    assert got == [("ret/keep", b"kept", True), ("ret/v5", b"kept-5", True)], got
    s.close()


# (7) clean sessions do not come back ------------------------------------------------------------

@pytest.mark.parametrize("restart", ["sigterm", "sigkill"])
def test_mqtt_3_1_2_6_clean_sessions_do_not_survive_restart(start_broker, restart):
    broker = start_broker()
    online = [(cid(0, "clean-311"), V311, dict(clean=True)),        # Clean Session 1
              (cid(1, "clean-5"), V5, dict(clean=True))]            # Clean Start 1, no expiry
    offline = [(cid(0, "clean-5-noexp"), V5, dict(clean=False)),    # Clean Start 0, expiry 0
               (cid(1, "clean-311-off"), V311, dict(clean=True))]
    control = cid(1, "clean-control")
    kept = []
    for client_id, version, kw in online + offline:
        s = RawSession(broker.addr, client_id, version)
        s.connect(**kw)
        s.subscribe("cl/t", 1)
        kept.append(s)
    for s in kept[len(online):]:
        s.disconnect()
    c = RawSession(broker.addr, control, V311)
    c.connect(clean=False)
    c.subscribe("cl/t", 1)
    c.disconnect()
    broker = restart_broker(broker, start_broker, restart)  # the first two are still connected
    for s in kept:
        s.close()

    publish_all(broker.addr, cid(0, "clean-pub"), [("cl/t", b"after")])
    c = RawSession(broker.addr, control, V311)
    assert c.connect(clean=False).session_present, "the Clean Session 0 control session was lost"
    assert c.next_publish().payload == b"after"
    c.close()
    for client_id, version, _ in online + offline:
        s = RawSession(broker.addr, client_id, version)
        ack = s.connect(clean=False, expiry=60)
        assert not ack.session_present, f"{client_id} (a session ending with its connection) came back"
        s.subscribe("cl/end", 1, packet_id=2)
        publish_all(broker.addr, cid(0, "clean-pub"), [("cl/t", b"late"), ("cl/end", b"")])
        assert s.drain_until("cl/end") == [], f"{client_id}: its old subscription still delivers"
        s.close()


# (8) the core count of a data directory ------------------------------------------------------------

def test_restart_with_other_core_count_refused(start_broker):
    broker = start_broker(cores=2)
    data_dir = broker.argv[broker.argv.index("--data-dir") + 1]
    assert broker.stop() == 0
    for cores in (1, 3):
        r = subprocess.run([berth_bin(), "--listen", "127.0.0.1:0", "--cores", str(cores),
                            "--data-dir", data_dir], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=30)
        assert r.returncode != 0, f"--cores {cores} on a 2-core data dir started:\n{r.stdout}{r.stderr}"
        assert "listening" not in r.stdout, r.stdout
        assert "2 cores" in r.stderr and str(cores) in r.stderr and "--cores 2" in r.stderr, r.stderr
    assert os.path.exists(os.path.join(data_dir, "layout.toml"))
    again = start_broker(cores=2, data_dir=data_dir)
    with Conn(*again.addr, version=V311) as c:
        c.connect("cores-check")
        c.ping()
