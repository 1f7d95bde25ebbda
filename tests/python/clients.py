"""Clients for the tests: paho-mqtt driven step by step, and well-behaved bystanders.

paho runs its network loop in the test's own thread (`loop()`), never in its background thread,
and never reconnects on its own: a reconnecting client would fight a takeover test and hide a
broken connection.
"""

from __future__ import annotations

import time

import paho.mqtt.client as mqtt

from mqttwire import V5, V311, Conn, ids_owned_by

PAHO_PROTOCOL = {V311: mqtt.MQTTv311, V5: mqtt.MQTTv5}


class Paho:
    def __init__(self, client_id: str, version: int = V5, *, clean: bool = True, transport: str = "tcp"):
        """`transport` is paho's: "tcp", or "websockets" (on the path /mqtt)."""
        self.version = version
        kw = {"clean_session": clean} if version == V311 else {}
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, transport=transport,
                                  protocol=PAHO_PROTOCOL[version], reconnect_on_failure=False, **kw)
        if transport == "websockets":
            self.client.ws_set_options(path="/mqtt")
        self.clean = clean
        self.connack = None  # (ConnectFlags, ReasonCode, Properties)
        self.disconnected = None  # (DisconnectFlags, ReasonCode, Properties)
        self.log: list[str] = []
        self.client.on_connect = lambda c, u, flags, rc, props: setattr(self, "connack", (flags, rc, props))
        self.client.on_disconnect = lambda c, u, flags, rc, props: setattr(self, "disconnected", (flags, rc, props))
        self.client.on_log = lambda c, u, level, line: self.log.append(line)

    def loop_until(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"paho: {what} did not happen within {timeout}s; log: {self.log}")
            self.client.loop(timeout=0.05)

    def connect(self, addr: tuple[str, int], *, keepalive: int = 60, timeout: float = 5.0):
        """Connect and wait for CONNACK; returns (flags, reason_code, properties)."""
        host, port = addr
        if self.version == V5:
            self.client.connect(host, port, keepalive=keepalive, clean_start=self.clean)
        else:
            self.client.connect(host, port, keepalive=keepalive)
        self.loop_until(lambda: self.connack is not None or self.disconnected is not None, timeout, "CONNACK")
        assert self.connack is not None, f"paho: disconnected before CONNACK: {self.disconnected}; log: {self.log}"
        return self.connack

    def user_properties(self) -> dict[str, str]:
        props = self.connack[2]
        return dict(getattr(props, "UserProperty", []) or [])

    def disconnect(self, timeout: float = 5.0) -> None:
        self.client.disconnect()
        self.loop_until(lambda: self.disconnected is not None, timeout, "clean disconnect")
        rc = self.disconnected[1]
        assert not rc.is_failure, f"paho: disconnect reported {rc}; log: {self.log}"


class Neighbours:
    """Well-behaved clients connected before a misbehaving one: one v5 and one 3.1.1 client
    owned by each core, so whichever core owns (or accepted) the bad connection, a bystander
    shares it. After the bad one is dealt with, every bystander must still answer PINGREQ."""

    def __init__(self, addr: tuple[str, int], prefix: str, cores: int = 2):
        self.cores = cores
        self.conns: dict[tuple[int, int], Conn] = {}
        for core in range(cores):
            for version in (V5, V311):
                cid = ids_owned_by(core, cores, f"{prefix}-bystander-v{version}")[0]
                conn = Conn(*addr, version=version)
                conn.connect(cid, keep_alive=0)
                self.conns[(core, version)] = conn

    def assert_alive(self) -> None:
        for (core, version), conn in self.conns.items():
            try:
                conn.ping()
            except AssertionError as e:
                raise AssertionError(f"bystander owned by core {core} (MQTT level {version}) was hurt: {e}") from None

    def close(self) -> None:
        for conn in self.conns.values():
            conn.close()


# --- raw persistent sessions (persistence tests) ---------------------------------------------

import struct  # noqa: E402

from mqttwire import (  # noqa: E402
    PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL, RECEIVE_MAXIMUM, SESSION_EXPIRY_INTERVAL, SUBACK,
    ConnAck, Publish, ack_packet, packet_id_of, parse_publish, prop_u16, prop_u32, properties,
    publish_with, read_vbi, subscribe)


class RawSession:
    """One client id driven packet by packet, so that what a library hides (DUP, packet ids,
    acknowledgement timing) can be checked. Every read has a deadline."""

    def __init__(self, addr: tuple[str, int], client_id: str, version: int = V311):
        self.addr, self.client_id, self.version = addr, client_id, version
        self.conn: Conn | None = None

    def connect(self, *, clean: bool = False, expiry: int | None = None,
                receive_maximum: int | None = None, expect_code: int | None = 0) -> ConnAck:
        self.close()
        self.conn = Conn(*self.addr, version=self.version)
        props = None
        if self.version == V5:
            raw = b""
            if expiry is not None:
                raw += prop_u32(SESSION_EXPIRY_INTERVAL, expiry)
            if receive_maximum is not None:
                raw += prop_u16(RECEIVE_MAXIMUM, receive_maximum)
            props = properties(raw)
        return self.conn.connect(self.client_id, clean=clean, expect_code=expect_code, props=props)

    def subscribe(self, topic_filter: str, qos: int = 1, packet_id: int = 1) -> None:
        self.conn.send(subscribe(topic_filter, self.version, packet_id=packet_id)[:-1] + bytes([qos]))
        p = self.conn.read_packet()
        assert p.ptype == SUBACK and packet_id_of(p) == packet_id, f"expected SUBACK, got {p!r}"
        i = 2
        if self.version == V5:
            n, i = read_vbi(p.body, 2)
            i += n
        assert list(p.body[i:]) == [qos], f"SUBACK for {topic_filter!r}: {p!r}"

    def next_publish(self, *, ack: bool = True, timeout: float = 5.0) -> Publish:
        """The next packet, which must be a PUBLISH; acknowledged (PUBACK / PUBREC) unless told."""
        p = self.conn.read_packet(timeout)
        pub = parse_publish(p, self.version)
        if ack and pub.qos:
            self.conn.send(ack_packet(PUBACK if pub.qos == 1 else PUBREC, pub.packet_id))
        return pub

    def drain_until(self, marker_topic: str, timeout: float = 10.0) -> list[Publish]:
        """Every PUBLISH before the one on `marker_topic`, acknowledging all (PUBREL gets PUBCOMP)."""
        deadline = time.monotonic() + timeout
        got = []
        while True:
            p = self.conn.read_packet(max(deadline - time.monotonic(), 0.001))
            if p.ptype == PUBREL:
                self.conn.send(ack_packet(PUBCOMP, packet_id_of(p)))
                continue
            pub = parse_publish(p, self.version)
            if pub.qos:
                self.conn.send(ack_packet(PUBACK if pub.qos == 1 else PUBREC, pub.packet_id))
            if pub.topic == marker_topic:
                return got
            got.append(pub)

    def disconnect(self, raw: bytes = b"\xe0\x00") -> None:
        """Sends DISCONNECT and waits for the broker to close its end, which it does once it
        has taken the session offline: what the test publishes next finds the session
        offline (queued, not sent on this connection and resent with DUP)."""
        self.conn.send(raw)
        self.conn.read_until_closed(timeout=10)
        self.close()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def publish_all(addr: tuple[str, int], client_id: str, messages, *, version: int = V311, qos: int = 1,
                retain: bool = False, props: bytes = b"") -> None:
    """Connects with a clean session, publishes (topic, payload) pairs one by one, each
    completely acknowledged (QoS 1: PUBACK, QoS 2: PUBREC/PUBREL/PUBCOMP; QoS 0 messages are
    followed by a PINGREQ round trip), and disconnects."""
    with Conn(*addr, version=version) as c:
        c.connect(client_id, clean=True)
        for n, (topic, payload) in enumerate(messages, start=1):
            c.send(publish_with(topic, payload, version, qos=qos, packet_id=n if qos else None,
                                retain=retain, props=props))
            if qos == 1:
                p = c.read_packet()
                assert p.ptype == PUBACK and packet_id_of(p) == n, f"expected PUBACK {n}, got {p!r}"
                assert len(p.body) < 3 or p.body[2] < 0x80, f"PUBACK failed: {p!r}"
            elif qos == 2:
                p = c.read_packet()
                assert p.ptype == PUBREC and packet_id_of(p) == n, f"expected PUBREC {n}, got {p!r}"
                c.send(ack_packet(PUBREL, n))
                p = c.read_packet()
                assert p.ptype == PUBCOMP and packet_id_of(p) == n, f"expected PUBCOMP {n}, got {p!r}"
        if qos == 0:
            c.ping()
        c.send(b"\xe0\x00")
