"""Raw MQTT bytes for black-box tests: just enough of 3.1.1 and 5.0 to build packets by hand
(including broken ones) and to read what the broker answers.

Deliberately independent of berth's own codec: a bug shared by the broker and its tests would
otherwise pass unnoticed. Every read has a deadline, so a broker that hangs fails a test instead
of hanging it.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass, field

V311 = 4
V5 = 5

# Control packet types (high nibble of the first byte).
CONNECT, CONNACK, PUBLISH, PUBACK = 1, 2, 3, 4
SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 12, 13, 14

PINGREQ_BYTES = b"\xc0\x00"
DISCONNECT_V311_BYTES = b"\xe0\x00"

# 5.0 property identifiers used by the tests.
SESSION_EXPIRY_INTERVAL = 0x11
ASSIGNED_CLIENT_IDENTIFIER = 0x12
REASON_STRING = 0x1F
RECEIVE_MAXIMUM = 0x21
TOPIC_ALIAS_MAXIMUM = 0x22
RETAIN_AVAILABLE = 0x25
USER_PROPERTY = 0x26
MAXIMUM_PACKET_SIZE = 0x27

_BYTE_PROPS = {0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A}
_U16_PROPS = {0x13, 0x21, 0x22, 0x23}
_U32_PROPS = {0x02, 0x11, 0x18, 0x27}
_VBI_PROPS = {0x0B}
_STR_PROPS = {0x03, 0x08, 0x12, 0x15, 0x1A, 0x1C, 0x1F}
_BIN_PROPS = {0x09, 0x16}

DEFAULT_TIMEOUT = 5.0


# --- ownership -------------------------------------------------------------------------------

def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def owner_core(client_id: str, cores: int) -> int:
    """The core berth's contract says owns `client_id`."""
    return fnv1a64(client_id.encode()) % cores


def ids_owned_by(core: int, cores: int, prefix: str, count: int = 1) -> list[str]:
    """The first `count` ids `prefix-N` that hash to `core`."""
    out, n = [], 0
    while len(out) < count:
        cid = f"{prefix}-{n}"
        if owner_core(cid, cores) == core:
            out.append(cid)
        n += 1
    return out


# --- encoding --------------------------------------------------------------------------------

def vbi(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n % 128, n // 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mqtt_str(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">H", len(b)) + b


def packet(first_byte: int, body: bytes) -> bytes:
    return bytes([first_byte]) + vbi(len(body)) + body


def prop_u32(pid: int, v: int) -> bytes:
    return bytes([pid]) + struct.pack(">I", v)


def properties(*encoded: bytes) -> bytes:
    raw = b"".join(encoded)
    return vbi(len(raw)) + raw


def connect(client_id: str | bytes, version: int = V5, *, clean: bool = True, keep_alive: int = 0,
            props: bytes | None = None, flags: int | None = None, protocol_name: bytes = b"MQTT",
            level: int | None = None, payload_extra: bytes = b"", username: str | None = None,
            password: bytes | None = None) -> bytes:
    """A CONNECT packet. `flags`, `level` and `props` (already length-prefixed) override the
    well-formed defaults so tests can break exactly one thing."""
    if flags is None:
        flags = (0x02 if clean else 0x00) | (0x80 if username is not None else 0) \
            | (0x40 if password is not None else 0)
    if level is None:
        level = version
    var = mqtt_str(protocol_name) + bytes([level, flags]) + struct.pack(">H", keep_alive)
    if version == V5:
        var += props if props is not None else b"\x00"
    credentials = b""
    if username is not None:
        credentials += mqtt_str(username)
    if password is not None:
        credentials += struct.pack(">H", len(password)) + password
    return packet(0x10, var + mqtt_str(client_id) + payload_extra + credentials)


def publish(topic: str | bytes, payload: bytes = b"", version: int = V5, *, first_byte: int = 0x30,
            packet_id: int | None = None) -> bytes:
    body = mqtt_str(topic)
    if packet_id is not None:
        body += struct.pack(">H", packet_id)
    if version == V5:
        body += b"\x00"
    return packet(first_byte, body + payload)


def subscribe(topic_filter: str, version: int = V5, *, first_byte: int = 0x82, packet_id: int = 1) -> bytes:
    body = struct.pack(">H", packet_id)
    if version == V5:
        body += b"\x00"
    return packet(first_byte, body + mqtt_str(topic_filter) + b"\x00")


# --- decoding --------------------------------------------------------------------------------

class Closed(Exception):
    """The broker closed the connection (EOF or reset)."""


@dataclass
class Packet:
    ptype: int
    flags: int
    body: bytes

    def __repr__(self) -> str:
        return f"Packet(type={self.ptype}, flags={self.flags:#x}, body={self.body.hex(' ')})"


@dataclass
class ConnAck:
    session_present: bool
    code: int
    props: dict = field(default_factory=dict)

    @property
    def user_properties(self) -> dict[str, str]:
        return dict(self.props.get(USER_PROPERTY, []))


def parse_properties(buf: bytes) -> dict:
    """Decode a 5.0 property block (without its length). User properties become a list of pairs."""
    props: dict = {}
    i = 0

    def take(n: int) -> bytes:
        nonlocal i
        if i + n > len(buf):
            raise ValueError(f"property block truncated: {buf.hex(' ')}")
        chunk = buf[i:i + n]
        i += n
        return chunk

    def take_str() -> bytes:
        (n,) = struct.unpack(">H", take(2))
        return take(n)

    while i < len(buf):
        pid = take(1)[0]
        if pid in _BYTE_PROPS:
            value = take(1)[0]
        elif pid in _U16_PROPS:
            (value,) = struct.unpack(">H", take(2))
        elif pid in _U32_PROPS:
            (value,) = struct.unpack(">I", take(4))
        elif pid in _VBI_PROPS:
            value, shift = 0, 0
            while True:
                b = take(1)[0]
                value |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    break
        elif pid in _STR_PROPS:
            value = take_str().decode()
        elif pid in _BIN_PROPS:
            value = take_str()
        elif pid == USER_PROPERTY:
            pair = (take_str().decode(), take_str().decode())
            props.setdefault(USER_PROPERTY, []).append(pair)
            continue
        else:
            raise ValueError(f"unknown property id {pid:#x} in {buf.hex(' ')}")
        if pid in props:
            raise ValueError(f"property {pid:#x} appears twice in {buf.hex(' ')}")
        props[pid] = value
    return props


def read_vbi(buf: bytes, i: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def parse_connack(p: Packet, version: int) -> ConnAck:
    assert p.ptype == CONNACK, f"expected CONNACK, got {p!r}"
    assert p.flags == 0, f"CONNACK with reserved flags set: {p!r}"
    assert len(p.body) >= 2, f"short CONNACK: {p!r}"
    ack_flags, code = p.body[0], p.body[1]
    assert ack_flags & 0xFE == 0, f"CONNACK acknowledge flags reserved bits set: {p!r}"
    props = {}
    if version == V5 and len(p.body) > 2:
        n, i = read_vbi(p.body, 2)
        assert i + n == len(p.body), f"CONNACK property length disagrees with packet: {p!r}"
        props = parse_properties(p.body[i:i + n])
    elif version == V311:
        assert len(p.body) == 2, f"3.1.1 CONNACK must be 2 bytes: {p!r}"
    return ConnAck(bool(ack_flags & 1), code, props)


def disconnect_reason(p: Packet) -> int:
    assert p.ptype == DISCONNECT, f"expected DISCONNECT, got {p!r}"
    return p.body[0] if p.body else 0x00


# --- a connection ----------------------------------------------------------------------------

class Conn:
    """One TCP connection to the broker with deadline-bound reads."""

    def __init__(self, host: str, port: int, version: int = V5):
        self.version = version
        self.sock = socket.create_connection((host, port), timeout=DEFAULT_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.closed = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_tolerating_close(self, data: bytes) -> None:
        """Send bytes the broker may reject (and close on) before it has read them all."""
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _fill(self, deadline: float) -> None:
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
        self.buf += chunk

    def read_packet(self, timeout: float = DEFAULT_TIMEOUT) -> Packet:
        """The next packet. Raises Closed on EOF, AssertionError if nothing came in time."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                if len(self.buf) >= 2:
                    try:
                        length, i = read_vbi(self.buf, 1)
                    except IndexError:
                        length, i = None, 0
                    if length is not None and len(self.buf) >= i + length:
                        p = Packet(self.buf[0] >> 4, self.buf[0] & 0x0F, self.buf[i:i + length])
                        self.buf = self.buf[i + length:]
                        return p
                if self.closed:
                    raise Closed
                self._fill(deadline)
        except TimeoutError:
            raise AssertionError(f"no complete packet from the broker within {timeout}s "
                                 f"(buffered: {self.buf.hex(' ')})") from None

    def read_until_closed(self, timeout: float = DEFAULT_TIMEOUT) -> list[Packet]:
        """Every packet until the broker closes; AssertionError if it is still open at the deadline."""
        deadline = time.monotonic() + timeout
        packets = []
        while True:
            try:
                packets.append(self.read_packet(max(deadline - time.monotonic(), 0.001)))
            except Closed:
                assert not self.buf, f"connection closed mid-packet: {self.buf.hex(' ')}"
                return packets
            except AssertionError:
                raise AssertionError(f"broker did not close the connection within {timeout}s; "
                                     f"it sent {packets!r}") from None

    def assert_quiet_for(self, seconds: float) -> None:
        """Nothing arrives and the connection stays open for `seconds` (a stimulus gap, not a sync)."""
        if self.buf:
            raise AssertionError(f"unexpected bytes from the broker: {self.buf.hex(' ')}")
        deadline = time.monotonic() + seconds
        while True:
            try:
                self._fill(deadline)
            except TimeoutError:
                return
            except Closed:
                raise AssertionError("broker closed the connection unexpectedly") from None
            raise AssertionError(f"unexpected bytes from the broker: {self.buf.hex(' ')}")

    def connect(self, client_id: str, *, clean: bool = True, keep_alive: int = 0,
                expect_code: int | None = 0, **kw) -> ConnAck:
        self.send(connect(client_id, self.version, clean=clean, keep_alive=keep_alive, **kw))
        ack = parse_connack(self.read_packet(), self.version)
        if expect_code is not None:
            assert ack.code == expect_code, f"CONNACK code {ack.code:#x}, expected {expect_code:#x}: {ack!r}"
        return ack

    def ping(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.send(PINGREQ_BYTES)
        try:
            p = self.read_packet(timeout)
        except Closed:
            raise AssertionError("connection closed instead of answering PINGREQ") from None
        assert (p.ptype, p.flags, p.body) == (PINGRESP, 0, b""), f"expected PINGRESP, got {p!r}"


# --- QoS 1/2 flows and v5 PUBLISH properties (persistence tests) ------------------------------

PUBREC, PUBREL, PUBCOMP = 5, 6, 7
MESSAGE_EXPIRY_INTERVAL = 0x02


def prop_u16(pid: int, v: int) -> bytes:
    return bytes([pid]) + struct.pack(">H", v)


def ack_packet(ptype: int, packet_id: int) -> bytes:
    """PUBACK / PUBREC / PUBREL / PUBCOMP with success (PUBREL gets its required flags 0x2)."""
    return bytes([ptype << 4 | (0x02 if ptype == PUBREL else 0), 2]) + struct.pack(">H", packet_id)


def publish_with(topic: str, payload: bytes = b"", version: int = V5, *, qos: int = 0,
                 packet_id: int | None = None, dup: bool = False, retain: bool = False,
                 props: bytes = b"") -> bytes:
    """A PUBLISH with explicit flags; `props` are the raw v5 properties (without length)."""
    first = 0x30 | (0x08 if dup else 0) | qos << 1 | (0x01 if retain else 0)
    body = mqtt_str(topic)
    if qos:
        body += struct.pack(">H", packet_id)
    if version == V5:
        body += properties(props)
    return packet(first, body + payload)


@dataclass
class Publish:
    topic: str
    payload: bytes
    qos: int
    dup: bool
    retain: bool
    packet_id: int | None
    props: dict


def parse_publish(p: Packet, version: int) -> Publish:
    assert p.ptype == PUBLISH, f"expected PUBLISH, got {p!r}"
    qos = (p.flags >> 1) & 3
    (tlen,) = struct.unpack(">H", p.body[:2])
    i = 2 + tlen
    topic = p.body[2:i].decode()
    packet_id = None
    if qos:
        (packet_id,) = struct.unpack(">H", p.body[i:i + 2])
        i += 2
    props = {}
    if version == V5:
        n, i = read_vbi(p.body, i)
        props = parse_properties(p.body[i:i + n])
        i += n
    return Publish(topic, p.body[i:], qos, bool(p.flags & 0x08), bool(p.flags & 0x01), packet_id, props)


def packet_id_of(p: Packet) -> int:
    return struct.unpack(">H", p.body[:2])[0]


# --- several filters, UNSUBSCRIBE (conformance tests) -----------------------------------------

UNSUBSCRIBE, UNSUBACK, AUTH = 10, 11, 15


def subscribe_many(filters: list[tuple[str | bytes, int]], version: int = V5, *, packet_id: int = 1,
                   first_byte: int = 0x82, props: bytes = b"") -> bytes:
    """One SUBSCRIBE with (filter, options byte) pairs; `props` are raw v5 properties."""
    body = struct.pack(">H", packet_id)
    if version == V5:
        body += properties(props)
    return packet(first_byte, body + b"".join(mqtt_str(f) + bytes([o]) for f, o in filters))


def unsubscribe(filters: list[str | bytes], version: int = V5, *, packet_id: int = 1,
                first_byte: int = 0xA2) -> bytes:
    body = struct.pack(">H", packet_id) + (b"\x00" if version == V5 else b"")
    return packet(first_byte, body + b"".join(mqtt_str(f) for f in filters))


def ack_codes(p: Packet, ptype: int, packet_id: int, version: int) -> list[int]:
    """The reason codes of a SUBACK / UNSUBACK after checking its type and packet id (for a 3.1.1
    UNSUBACK, which has none, the empty list)."""
    assert p.ptype == ptype and p.flags == 0, f"expected packet type {ptype}, got {p!r}"
    assert packet_id_of(p) == packet_id, f"expected packet id {packet_id}, got {p!r}"
    i = 2
    if version == V5:
        n, i = read_vbi(p.body, 2)
        parse_properties(p.body[i:i + n])
        i += n
    return list(p.body[i:])
