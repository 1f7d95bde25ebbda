"""MQTT over WebSocket (`--ws-listen`, MQTT 3.1.1 and 5.0 section 6): paho-mqtt's websocket
transport, hand-offs between cores, a persistent session that moves from WebSocket to plain
TCP, and raw frames for what the transport must refuse (RFC 6455)."""

from __future__ import annotations

import socket
import struct

import paho.mqtt.client as mqtt
import pytest

from berthproc import CONNACK_DEBUG
from clients import Paho, RawSession
from mqttwire import (PUBACK, SUBACK, V5, V311, Conn, ack_packet, ids_owned_by, packet_id_of,
                      parse_publish, publish_with, subscribe)
from wsclient import BINARY, CONT, PING, PONG, TEXT, WsConn, frame, http_response, request

WS = ("--ws-listen", "127.0.0.1:0")


@pytest.fixture
def ws_broker(start_broker):
    return start_broker(*WS, CONNACK_DEBUG)


@pytest.mark.parametrize("version", [V311, V5])
def test_paho_over_websocket_publishes_and_receives(ws_broker, version):
    sub = Paho("ws-paho-sub", version)
    sub.client = _websocket(sub)
    got = []
    sub.client.on_message = lambda c, u, m: got.append((m.topic, m.payload))
    subacks = []
    sub.client.on_subscribe = lambda c, u, mid, codes, props: subacks.append(codes)
    sub.connect(ws_broker.ws)
    sub.client.subscribe("ws/t", qos=1)
    sub.loop_until(lambda: subacks, 5, "SUBACK")
    pub = Paho("ws-paho-pub", version)
    pub.client = _websocket(pub)
    pub.connect(ws_broker.ws)
    # A payload larger than one read and one frame of the writer.
    big = bytes(range(256)) * 400
    for payload in (b"small", big):
        info = pub.client.publish("ws/t", payload, qos=1)
        pub.loop_until(info.is_published, 5, "PUBACK")
    sub.loop_until(lambda: len(got) == 2, 5, "both messages")
    assert got == [("ws/t", b"small"), ("ws/t", big)]
    sub.disconnect()
    pub.disconnect()


def _websocket(p: Paho) -> mqtt.Client:
    """`p`'s client again, with paho's websocket transport on /mqtt."""
    old = p.client
    kw = {"clean_session": p.clean} if p.version == V311 else {}
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=old._client_id.decode(),
                         protocol=old._protocol, transport="websockets", reconnect_on_failure=False, **kw)
    client.ws_set_options(path="/mqtt")
    client.on_connect, client.on_disconnect, client.on_log = old.on_connect, old.on_disconnect, old.on_log
    return client


def test_fifty_clients_are_handed_off_with_their_websocket(ws_broker):
    """Each client's first publish rides in the same frame as its CONNECT, so it reaches the
    owner core inside the WebSocket state of the hand-off."""
    handed_off = 0
    for n in range(60):
        cid = f"ws-many-{n}"
        with WsConn(*ws_broker.ws, version=V5) as c:
            c.send_raw(frame(BINARY, _connect(cid) + subscribe(f"own/{cid}", V5)[:-1] + b"\x01"))
            ack = _connack(c)
            assert ack.code == 0 and ack.user_properties["berth-shard"] == str(_owner(cid)), ack
            handed_off += ack.user_properties["berth-shard"] != ack.user_properties["berth-accepted-on"]
            p = c.read_packet()
            assert p.ptype == SUBACK, p
            c.send(publish_with(f"own/{cid}", cid.encode(), V5, qos=1, packet_id=7))
            got = {}
            while len(got) < 2:
                p = c.read_packet()
                got[p.ptype] = p
            assert packet_id_of(got[PUBACK]) == 7
            pub = parse_publish(got[3], V5)
            assert pub.payload == cid.encode()
            c.send(ack_packet(PUBACK, pub.packet_id))
            c.send(b"\xe0\x00")
    assert handed_off >= 15, f"only {handed_off} of 60 connections were handed off"


def _connect(cid: str) -> bytes:
    from mqttwire import connect
    return connect(cid, V5)


def _connack(c: WsConn):
    from mqttwire import parse_connack
    return parse_connack(c.read_packet(), c.version)


def _owner(cid: str) -> int:
    from mqttwire import owner_core
    return owner_core(cid, 2)


def test_a_session_left_on_websocket_resumes_over_tcp_with_its_queue(ws_broker):
    for cid in ids_owned_by(0, 2, "ws-resume", 1) + ids_owned_by(1, 2, "ws-resume", 1):
        with WsConn(*ws_broker.ws, version=V311) as c:
            ack = c.connect(cid, clean=False)
            assert not ack.session_present
            c.send(subscribe("resume/#", V311)[:-1] + b"\x01")
            assert c.read_packet().ptype == SUBACK
            c.send(b"\xe0\x00")
            c.read_until_closed()
        with Conn(*ws_broker.addr, version=V311) as p:
            p.connect(f"{cid}-pub")
            for n in (1, 2):
                p.send(publish_with(f"resume/{n}", f"m{n}".encode(), V311, qos=1, packet_id=n))
                assert p.read_packet().ptype == PUBACK
        s = RawSession(ws_broker.addr, cid, V311)
        ack = s.connect(clean=False)
        assert ack.session_present, f"{cid}: Session Present 0 after moving to TCP"
        got = [s.next_publish() for _ in (1, 2)]
        assert [(m.topic, m.payload) for m in got] == [("resume/1", b"m1"), ("resume/2", b"m2")]
        s.disconnect()


def test_packets_split_over_frames_and_joined_in_one(ws_broker):
    with WsConn(*ws_broker.ws, version=V5) as c:
        connect = _connect("ws-split")
        third = len(connect) // 3
        # One CONNECT in three frames of one fragmented message.
        c.send_raw(frame(BINARY, connect[:third], fin=False)
                   + frame(CONT, connect[third:2 * third], fin=False)
                   + frame(CONT, connect[2 * third:]))
        assert _connack(c).code == 0
        # Two PINGREQs in one frame: two PINGRESPs.
        c.send(b"\xc0\x00\xc0\x00")
        assert [c.read_packet().ptype for _ in (1, 2)] == [13, 13]
        # A PINGREQ split across two messages.
        c.send_raw(frame(BINARY, b"\xc0") + frame(BINARY, b"\x00"))
        assert c.read_packet().ptype == 13
        c.send_raw(frame(PING, b"are you there"))
        assert c.wait_control() == (PONG, b"are you there")
        c.ping()


def test_refused_upgrades(ws_broker):
    for req, status in [
        (request("/other")[0], 404),
        (request("/mqtt", protocols=None)[0], 400),
        (request("/mqtt", protocols="wamp")[0], 400),
        (request("/mqtt", upgrade=False)[0], 400),
        (b"GET /mqtt HTTP/1.1\r\nX-Pad: " + b"a" * 9000 + b"\r\n\r\n", 431),
    ]:
        with socket.create_connection(ws_broker.ws, timeout=5) as s:
            s.sendall(req)
            got, headers, _ = http_response(s)
            assert got == status, (req[:60], got, headers)
    ok = WsConn(*ws_broker.ws, version=V5, protocols="mqttv3.1")
    assert ok.subprotocol == "mqttv3.1"
    ok.close()


@pytest.mark.parametrize("bad, code", [
    (frame(BINARY, b"\xc0\x00", mask=False), 1002),
    (frame(TEXT, b"{}"), 1003),
    (frame(BINARY, b"", length=1 << 62), 1009),
    (frame(BINARY, b"x" * 2000), 1009),
    (frame(BINARY, b"", length=1 << 63), 1002),
    (frame(CONT, b"x"), 1002),
    (frame(PING, b"x" * 126), 1002),
])
def test_bad_frames_get_their_close_code_and_harm_no_one_else(start_broker, bad, code):
    broker = start_broker(*WS, "--max-packet-size", "1024")
    with WsConn(*broker.ws, version=V5) as good:
        good.connect("ws-bystander")
        for connected in (False, True):
            with WsConn(*broker.ws, version=V5) as c:
                if connected:
                    c.connect("ws-bad")
                c.send_raw(bad)
                assert c.wait_close() == code
        good.ping()


def test_the_close_handshake_ends_the_connection(ws_broker):
    with WsConn(*ws_broker.ws, version=V5) as c:
        c.connect("ws-closer")
        c.send_raw(frame(0x8, struct.pack(">H", 1000)))
        assert c.wait_close() == 1000
        assert c.read_until_closed() == []
