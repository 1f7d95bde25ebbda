"""v5 Will Delay Interval (MQTT 5.0 3.1.3.2.2) across cores: the will waits for its delay, a
reconnect before then cancels it [MQTT-3.1.3-9], and the end of the session publishes it
early. The client with the will and the subscriber live on different cores."""

from __future__ import annotations

import socket
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from clients import Paho
from mqttwire import V5, Conn, ids_owned_by, subscribe

PUBLISH = 3


def will_client(client_id: str, delay: int, expiry: int) -> Paho:
    c = Paho(client_id, V5, clean=False)
    will_props = Properties(PacketTypes.WILLMESSAGE)
    will_props.WillDelayInterval = delay
    c.client.will_set(f"will/{client_id}", b"gone", qos=1, properties=will_props)
    return c


def connect_with(c: Paho, addr, expiry: int):
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = expiry
    host, port = addr
    c.client.connect(host, port, keepalive=60, clean_start=False, properties=props)
    c.loop_until(lambda: c.connack is not None, 5, "CONNACK")


def drop(c: Paho) -> None:
    """Ends the connection without DISCONNECT, as a lost network would."""
    c.client.socket().shutdown(socket.SHUT_RDWR)


def watcher(addr, topic: str) -> Conn:
    w = Conn(*addr, version=V5)
    w.connect(ids_owned_by(1, 2, "will-watch-", 1)[0])
    w.send(subscribe(topic, V5, first_byte=0x82, packet_id=1))
    assert w.read_packet().ptype == 9
    return w


def test_will_waits_for_its_delay(broker):
    cid = ids_owned_by(0, 2, "will-delay-", 1)[0]
    w = watcher(broker.addr, f"will/{cid}")
    c = will_client(cid, delay=2, expiry=60)
    connect_with(c, broker.addr, 60)
    dropped = time.monotonic()
    drop(c)
    p = w.read_packet(timeout=10)
    waited = time.monotonic() - dropped
    assert p.ptype == PUBLISH and p.body.endswith(b"gone"), p
    assert waited >= 1.5, f"will published after {waited:.2f}s, before its 2 s delay"


def test_mqtt_3_1_3_9_reconnect_before_the_delay_cancels_the_will(broker):
    cid = ids_owned_by(0, 2, "will-cancel-", 1)[0]
    w = watcher(broker.addr, f"will/{cid}")
    c = will_client(cid, delay=2, expiry=60)
    connect_with(c, broker.addr, 60)
    drop(c)
    again = Paho(cid, V5, clean=False)
    connect_with(again, broker.addr, 60)
    assert again.connack[0].session_present
    w.assert_quiet_for(3)  # past the delay: no will
    again.disconnect()


def test_session_end_publishes_the_will_before_its_delay(broker):
    cid = ids_owned_by(0, 2, "will-expiry-", 1)[0]
    w = watcher(broker.addr, f"will/{cid}")
    c = will_client(cid, delay=30, expiry=1)
    connect_with(c, broker.addr, 1)
    dropped = time.monotonic()
    drop(c)
    p = w.read_packet(timeout=10)
    waited = time.monotonic() - dropped
    assert p.ptype == PUBLISH and p.body.endswith(b"gone"), p
    assert waited < 10, f"will came after {waited:.1f}s, not at the 1 s session expiry"


# Wills are session state (MQTT 5.0 4.1): a persistent session's will survives a restart -----

def restarted(start_broker, data_dir: str, old, how: str):
    """Stops `old` (SIGKILL or SIGTERM) and starts a broker on the same data directory."""
    if how == "sigkill":
        old.kill()
        old.stop(sig=None)
    else:
        assert old.stop() == 0
    return start_broker(data_dir=data_dir)


def test_will_of_a_session_connected_at_a_kill_9_is_published_after_the_restart(start_broker, tmp_path):
    """The broker dies while the client is connected: its connection ended without
    DISCONNECT, so its will is due its delay after the restart, once."""
    data = str(tmp_path / "data")
    b = start_broker(data_dir=data)
    cid = ids_owned_by(0, 2, "will-crash-", 1)[0]
    c = will_client(cid, delay=2, expiry=60)
    connect_with(c, b.addr, 60)
    b = restarted(start_broker, data, b, "sigkill")
    restarted_at = time.monotonic()
    w = watcher(b.addr, f"will/{cid}")
    p = w.read_packet(timeout=10)
    waited = time.monotonic() - restarted_at
    assert p.ptype == PUBLISH and p.body.endswith(b"gone"), p
    assert waited >= 1.5, f"will published {waited:.2f}s after the restart, before its 2 s delay"
    w.assert_quiet_for(2)  # once
    c.client.loop_stop()


def test_pending_will_keeps_its_due_time_across_a_restart(start_broker, tmp_path):
    """The client's connection dropped (will delay 3 s), then the broker restarted: the will
    still goes out about 3 s after the drop, not 3 s after the restart."""
    data = str(tmp_path / "data")
    b = start_broker(data_dir=data)
    cid = ids_owned_by(1, 2, "will-pending-", 1)[0]
    c = will_client(cid, delay=3, expiry=60)
    connect_with(c, b.addr, 60)
    dropped = time.monotonic()
    drop(c)
    time.sleep(0.3)  # the broker sees the drop and schedules the will
    b = restarted(start_broker, data, b, "sigterm")
    w = watcher(b.addr, f"will/{cid}")
    p = w.read_packet(timeout=10)
    waited = time.monotonic() - dropped
    assert p.ptype == PUBLISH and p.body.endswith(b"gone"), p
    assert 2.5 <= waited < 6, f"will published {waited:.2f}s after the drop, not at its 3 s delay"


def test_mqtt_3_1_3_9_reconnect_after_a_restart_cancels_the_recovered_will(start_broker, tmp_path):
    data = str(tmp_path / "data")
    b = start_broker(data_dir=data)
    cid = ids_owned_by(0, 2, "will-back-", 1)[0]
    c = will_client(cid, delay=2, expiry=60)
    connect_with(c, b.addr, 60)
    b = restarted(start_broker, data, b, "sigkill")
    w = watcher(b.addr, f"will/{cid}")
    again = Paho(cid, V5, clean=False)
    connect_with(again, b.addr, 60)
    assert again.connack[0].session_present
    w.assert_quiet_for(3)  # past the delay: the reconnect cancelled the will
    again.disconnect()


def test_normal_disconnect_deletes_the_will_for_good(start_broker, tmp_path):
    data = str(tmp_path / "data")
    b = start_broker(data_dir=data)
    cid = ids_owned_by(1, 2, "will-deleted-", 1)[0]
    c = will_client(cid, delay=0, expiry=60)
    connect_with(c, b.addr, 60)
    c.disconnect()
    # DISCONNECT has no reply: give the broker time to read it before the kill, or the
    # connection ends with the crash and the will is rightly due after the restart.
    time.sleep(0.5)
    b = restarted(start_broker, data, b, "sigkill")
    w = watcher(b.addr, f"will/{cid}")
    w.assert_quiet_for(2)
