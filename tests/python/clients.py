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
    def __init__(self, client_id: str, version: int = V5, *, clean: bool = True):
        self.version = version
        kw = {"clean_session": clean} if version == V311 else {}
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=PAHO_PROTOCOL[version], reconnect_on_failure=False, **kw)
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
