"""Bad input on the TLS and secure WebSocket listeners, each with bystanders connected before
it (plain TCP on both cores, and one over tls and one over wss) that must still answer
PINGREQ after it: a TLS client that never finishes its handshake, or finishes it and then says
nothing, is closed at the connect timeout (`--connect-timeout 1`); plain MQTT on a TLS port
gets no MQTT answer; an HTTP GET on the wss path without the upgrade gets 400; a frame
announcing 2^63 bytes on wss gets Close 1002 (RFC 6455 5.2: the top bit must be 0)."""

from __future__ import annotations

import socket
import ssl
import time

import pytest

from clients import Neighbours
from mqttwire import V5, Conn, ids_owned_by
from pki import Pki, listeners_config
from wsclient import BINARY, WsConn, frame, http_response, request

CONNECT_TIMEOUT = 1.0


def client_context(pki: Pki) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=pki.path("ca.pem"))


def tls_conn(addr, context: ssl.SSLContext, version: int = V5) -> Conn:
    """A `mqttwire.Conn` inside TLS."""
    c = Conn(*addr, version=version)
    c.sock = context.wrap_socket(c.sock, server_hostname="localhost")
    return c


class Bystanders:
    def __init__(self, broker, pki: Pki):
        context = client_context(pki)
        self.plain = Neighbours(broker.addr, "secure-bad")
        self.tls = tls_conn(broker.listeners["tls"][0], context)
        self.tls.connect(ids_owned_by(0, 2, "secure-bad-tls")[0])
        self.wss = WsConn(*broker.listeners["wss"][0], version=V5, tls=context)
        self.wss.connect(ids_owned_by(1, 2, "secure-bad-wss")[0])

    def assert_alive(self) -> None:
        self.plain.assert_alive()
        self.tls.ping()
        self.wss.ping()

    def close(self) -> None:
        self.plain.close()
        self.tls.close()
        self.wss.close()


@pytest.fixture
def setting(start_broker, pki):
    """(broker, bystanders): tls and wss listeners, a connect timeout of one second."""
    broker = start_broker("--config", listeners_config(pki, "tls", "wss"),
                          "--connect-timeout", str(int(CONNECT_TIMEOUT)))
    bystanders = Bystanders(broker, pki)
    yield broker, bystanders
    bystanders.assert_alive()
    bystanders.close()
    assert broker.alive()


def seconds_until_closed(sock: socket.socket, limit: float = 10) -> float:
    """Reads (and drops) what the server sends until it closes; how long that took."""
    start = time.monotonic()
    sock.settimeout(limit)
    try:
        while sock.recv(4096):
            assert time.monotonic() - start < limit, "still open"
    except ConnectionResetError:
        pass
    except socket.timeout:
        raise AssertionError(f"not closed within {limit}s") from None
    return time.monotonic() - start


@pytest.mark.parametrize("transport", ["tls", "wss"])
def test_a_handshake_that_never_finishes_is_closed_at_the_connect_timeout(setting, pki, transport):
    broker, _ = setting
    raw = socket.create_connection(broker.listeners[transport][0], timeout=5)
    # A whole ClientHello, then silence: the server's flight is never answered.
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client_context(pki).wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    raw.sendall(outgoing.read())
    took = seconds_until_closed(raw)
    assert CONNECT_TIMEOUT * 0.8 <= took <= CONNECT_TIMEOUT + 4, f"closed after {took:.2f}s"
    raw.close()


@pytest.mark.parametrize("transport", ["tls", "wss"])
def test_silence_after_the_handshake_is_closed_at_the_connect_timeout(setting, pki, transport):
    """No CONNECT (tls), no upgrade request (wss), after a finished handshake."""
    broker, _ = setting
    raw = socket.create_connection(broker.listeners[transport][0], timeout=5)
    tls = client_context(pki).wrap_socket(raw, server_hostname="localhost")
    took = seconds_until_closed(tls)
    assert CONNECT_TIMEOUT * 0.8 <= took <= CONNECT_TIMEOUT + 4, f"closed after {took:.2f}s"
    tls.close()


@pytest.mark.parametrize("transport", ["tls", "wss"])
def test_plain_mqtt_on_a_tls_port_gets_no_mqtt_answer(setting, transport):
    broker, _ = setting
    plain = Conn(*broker.listeners[transport][0], version=V5)
    plain.send_tolerating_close(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")
    plain.sock.settimeout(5)
    try:
        reply = plain.sock.recv(64)
    except ConnectionResetError:
        reply = b""
    # A TLS alert record (0x15) or the end of the connection, never a CONNACK (0x20).
    assert not reply or reply[0] == 0x15, reply
    assert seconds_until_closed(plain.sock) <= 5
    plain.close()


def test_a_get_without_upgrade_on_the_wss_path_gets_400(setting, pki):
    broker, _ = setting
    raw = socket.create_connection(broker.listeners["wss"][0], timeout=5)
    with client_context(pki).wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(request("/mqtt", protocols=None, upgrade=False)[0])
        status, headers, _ = http_response(tls)
        assert status == 400, headers


@pytest.mark.parametrize("connected", [False, True], ids=["before-connect", "after-connect"])
def test_a_frame_announcing_2_to_the_63_bytes_on_wss_gets_close_1002(setting, pki, connected):
    broker, _ = setting
    with WsConn(*broker.listeners["wss"][0], version=V5, tls=client_context(pki)) as c:
        if connected:
            c.connect(ids_owned_by(0, 2, "secure-bad-huge")[0])
        c.send_raw(frame(BINARY, b"", length=1 << 63))
        assert c.wait_close() == 1002
