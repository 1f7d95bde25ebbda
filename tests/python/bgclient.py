"""A paho-mqtt client whose network loop runs in a background thread, with queues for what
arrives: for tests where several clients receive at once (shared subscriptions, $SYS).

Every wait has a timeout. The `clients` fixture-style `ClientSet` closes them all at teardown.
"""

from __future__ import annotations

import queue
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from mqttwire import V5, V311

T = 10.0  # generous timeout for any single expected event


class Client:
    def __init__(self, addr: tuple[str, int], cid: str, version: int = V5, *, clean: bool = True):
        self.version, self.addr, self.cid = version, addr, cid
        kw = {"clean_session": clean} if version == V311 else {}
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid,
                             protocol=mqtt.MQTTv5 if version == V5 else mqtt.MQTTv311,
                             reconnect_on_failure=False, **kw)
        self.c.max_inflight_messages_set(100)
        self.clean = clean
        self.msgs: queue.Queue = queue.Queue()
        self.acks: dict[int, list] = {}
        self.ack_ev = threading.Condition()
        self.connack = None
        self.connected = threading.Event()
        self.gone = threading.Event()
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = lambda c, u, f, rc, p: self.gone.set()
        self.c.on_message = lambda c, u, m: self.msgs.put(m)
        self.c.on_subscribe = self._on_ack
        self.c.on_unsubscribe = self._on_ack

    def _on_connect(self, c, u, flags, rc, props):
        self.connack = (flags, rc, props)
        self.connected.set()

    def _on_ack(self, c, u, mid, rcs, props):
        with self.ack_ev:
            self.acks[mid] = rcs
            self.ack_ev.notify_all()

    def connect(self) -> "Client":
        host, port = self.addr
        if self.version == V5:
            self.c.connect(host, port, keepalive=60, clean_start=self.clean)
        else:
            self.c.connect(host, port, keepalive=60)
        self.c.loop_start()
        assert self.connected.wait(T), f"{self.cid}: no CONNACK"
        assert not self.connack[1].is_failure, f"{self.cid}: CONNACK {self.connack[1]}"
        return self

    @property
    def connack_properties(self):
        return self.connack[2]

    def _wait_ack(self, mid: int, what: str) -> list[int]:
        with self.ack_ev:
            assert self.ack_ev.wait_for(lambda: mid in self.acks, T), f"{self.cid}: no ack for {what}"
            return [r.value if isinstance(r, ReasonCode) else int(r) for r in self.acks.pop(mid)]

    def sub(self, topic: str, qos: int = 1, *, no_local: bool = False) -> list[int]:
        """Subscribe, wait for SUBACK, return its reason codes as ints."""
        if self.version == V5:
            rc, mid = self.c.subscribe(topic, options=SubscribeOptions(qos=qos, noLocal=no_local))
        else:
            rc, mid = self.c.subscribe(topic, qos)
        assert rc == mqtt.MQTT_ERR_SUCCESS
        return self._wait_ack(mid, f"SUBSCRIBE {topic}")

    def unsub(self, topic: str) -> None:
        rc, mid = self.c.unsubscribe(topic)
        assert rc == mqtt.MQTT_ERR_SUCCESS
        self._wait_ack(mid, f"UNSUBSCRIBE {topic}")

    def pub(self, topic: str, payload: bytes | str, qos: int = 1, wait: bool = True):
        info = self.c.publish(topic, payload, qos=qos)
        if wait and qos > 0:
            info.wait_for_publish(T)
            assert info.is_published(), f"{self.cid}: publish to {topic} not acknowledged"
        return info

    def get(self, timeout: float = T) -> mqtt.MQTTMessage:
        try:
            return self.msgs.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.cid}: no message within {timeout}s") from None

    def get_until(self, marker_topic: str, markers: int = 1) -> list[mqtt.MQTTMessage]:
        """Every message before the `markers`-th one on `marker_topic`."""
        out, seen = [], 0
        while seen < markers:
            m = self.get()
            if m.topic == marker_topic:
                seen += 1
            else:
                out.append(m)
        return out

    def disconnect(self) -> None:
        self.c.disconnect()
        assert self.gone.wait(T), f"{self.cid}: no disconnect"
        self.c.loop_stop()

    def close(self) -> None:
        try:
            self.c.disconnect()  # wakes paho's loop thread so loop_stop() returns at once
            self.c.loop_stop()
            if self.c.socket():
                self.c.socket().close()
        except Exception:
            pass


class ClientSet:
    """Makes connected clients for one broker and closes them all at the end."""

    def __init__(self, broker):
        self.broker = broker
        self.made: list[Client] = []

    def __call__(self, cid: str, version: int = V5, **kw) -> Client:
        c = Client(self.broker.addr, cid, version, **kw)
        self.made.append(c)
        return c.connect()

    def close(self) -> None:
        for c in self.made:
            c.close()
