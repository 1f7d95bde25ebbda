"""A raw MQTT-over-WebSocket client for black-box tests: the handshake and frames written by
hand (RFC 6455), so that tests can send what no library would (unmasked or text frames, a
packet split over frames, a frame announcing 2^62 bytes) and see every frame that comes back.

`WsConn` is a `mqttwire.Conn` whose bytes travel in WebSocket frames (over TLS for wss): `send` wraps them in
one masked binary frame, and reads unwrap binary frames, so every helper of `Conn`
(`connect`, `read_packet`, `ping`, ...) works over WebSocket too.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import ssl
import struct
import time

from mqttwire import DEFAULT_TIMEOUT, Closed, Conn, V5

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True,
          length: int | None = None) -> bytes:
    """A client frame; `length` overrides the announced payload length."""
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | opcode])
    m = 0x80 if mask else 0
    if n < 126:
        head += bytes([m | n])
    elif n < 1 << 16:
        head += bytes([m | 126]) + struct.pack(">H", n)
    else:
        head += bytes([m | 127]) + struct.pack(">Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def request(path: str = "/mqtt", protocols: str | None = "mqtt", *, upgrade: bool = True) -> tuple[bytes, str]:
    """An upgrade request and the Sec-WebSocket-Accept it must be answered with."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1"]
    if upgrade:
        lines += ["Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {key}",
                  "Sec-WebSocket-Version: 13"]
    if protocols is not None:
        lines.append(f"Sec-WebSocket-Protocol: {protocols}")
    accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), accept


def http_response(sock: socket.socket, timeout: float = DEFAULT_TIMEOUT) -> tuple[int, dict, bytes]:
    """The response head (status, headers by lower-case name) and any bytes after it."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise AssertionError(f"closed before a whole HTTP response: {data!r}")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    return status, headers, rest


class WsConn(Conn):
    """One WebSocket connection speaking MQTT (see the module docs)."""

    def __init__(self, host: str, port: int, version: int = V5, *, path: str = "/mqtt",
                 protocols: str = "mqtt", tls: ssl.SSLContext | None = None):
        """With `tls`, the WebSocket runs inside TLS (wss), the server named `localhost`."""
        self.version = version
        self.sock = socket.create_connection((host, port), timeout=DEFAULT_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock, server_hostname="localhost")
        req, accept = request(path, protocols)
        self.sock.sendall(req)
        status, headers, self.raw = http_response(self.sock)
        assert status == 101, f"upgrade refused: {status} {headers}"
        assert headers.get("sec-websocket-accept") == accept, headers
        self.subprotocol = headers.get("sec-websocket-protocol")
        self.buf = b""
        self.closed = False
        self.close_code: int | None = None  # from the server's Close frame
        self.control: list[tuple[int, bytes]] = []  # Pings and Pongs the server sent

    def send(self, data: bytes) -> None:
        self.sock.sendall(frame(BINARY, data))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _frames(self) -> None:
        """Moves whole server frames from `raw` to `buf` (binary payload) or `control`."""
        while len(self.raw) >= 2:
            b0, b1 = self.raw[0], self.raw[1]
            assert b1 & 0x80 == 0, "a server frame must not be masked"
            n, i = b1 & 0x7F, 2
            if n == 126:
                if len(self.raw) < 4:
                    return
                n, i = struct.unpack(">H", self.raw[2:4])[0], 4
            elif n == 127:
                if len(self.raw) < 10:
                    return
                n, i = struct.unpack(">Q", self.raw[2:10])[0], 10
            if len(self.raw) < i + n:
                return
            opcode, payload, self.raw = b0 & 0x0F, self.raw[i:i + n], self.raw[i + n:]
            if opcode in (BINARY, CONT):
                self.buf += payload
            elif opcode == CLOSE:
                self.close_code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else None
                self.closed = True
            else:
                assert opcode in (PING, PONG), f"unexpected opcode {opcode:#x} from the server"
                self.control.append((opcode, payload))

    def _fill(self, deadline: float) -> None:
        before = (len(self.buf), len(self.control), self.closed)
        while (len(self.buf), len(self.control), self.closed) == before:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise TimeoutError from None
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.closed = True
                raise Closed
            self.raw += chunk
            self._frames()
        if self.closed and len(self.buf) == before[0]:
            raise Closed

    def wait_close(self, timeout: float = DEFAULT_TIMEOUT) -> int | None:
        """Reads until the server's Close frame (or the end of the connection): its code."""
        deadline = time.monotonic() + timeout
        while not self.closed:
            try:
                self._fill(deadline)
            except Closed:
                break
            except TimeoutError:
                raise AssertionError(f"no Close from the server within {timeout}s") from None
        return self.close_code

    def wait_control(self, timeout: float = DEFAULT_TIMEOUT) -> tuple[int, bytes]:
        deadline = time.monotonic() + timeout
        while not self.control:
            try:
                self._fill(deadline)
            except TimeoutError:
                raise AssertionError(f"no control frame from the server within {timeout}s") from None
        return self.control.pop(0)
