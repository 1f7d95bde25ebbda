"""What an operator relies on: the reason code reaches a client the broker closes on, the keep
alive cap, SIGHUP, the log lines at the default level, and a client that stops reading being
dropped after `write_timeout`.

Log checks read the broker's stderr (berthproc keeps it in a file) and wait for a line with a
deadline; they never sleep in place of synchronisation.
"""

from __future__ import annotations

import re
import signal
import socket
import time

import pytest

from berthproc import Broker, berth_bin
from mqttwire import (DISCONNECT, PUBACK, SUBACK, V5, V311, Closed, Conn, connect, disconnect_reason,
                      parse_connack, publish_with, subscribe_many)

SERVER_KEEP_ALIVE = 0x13


def wait_for_line(broker: Broker, pattern: str, timeout: float = 10.0, after: int = 0) -> str:
    """The first stderr line (from byte `after` on) matching `pattern`; fails after `timeout`."""
    rx = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while True:
        text = broker.stderr_text()[after:]
        for line in text.splitlines():
            if rx.search(line):
                return line
        if time.monotonic() > deadline:
            raise AssertionError(f"no log line matching {pattern!r} within {timeout}s\n{broker.describe()}")
        time.sleep(0.05)  # polling a file: the broker gives no other signal


def lines_matching(broker: Broker, pattern: str, after: int = 0) -> list[str]:
    rx = re.compile(pattern)
    return [line for line in broker.stderr_text()[after:].splitlines() if rx.search(line)]


# --- 8: the reason code reaches a client that is still sending ----------------------------------

FLOOD = publish_with("linger/flood", b"z" * 16384, V5, qos=0)
FLOOD_BYTES = 2 << 20


def flood(conn: Conn, total: int = FLOOD_BYTES) -> None:
    """Goes on sending after the violation, as a pipelining client does, without reading."""
    conn.sock.settimeout(10)
    sent = 0
    try:
        while sent < total:
            conn.sock.sendall(FLOOD)
            sent += len(FLOOD)
    except (BrokenPipeError, ConnectionResetError):
        pass
    except socket.timeout:
        raise AssertionError(f"the broker stopped reading after {sent} bytes") from None


VIOLATIONS = {
    # A third unreleased QoS 2 PUBLISH over Receive Maximum 2 [MQTT-3.3.4-7].
    "receive-maximum": (b"".join(publish_with("linger/qos2", b"x", V5, qos=2, packet_id=n) for n in (1, 2, 3)),
                        0x93),
    # A second CONNECT [MQTT-3.1.0-2].
    "second-connect": (connect("again", V5), 0x82),
}


@pytest.mark.parametrize("attempt", range(3))
@pytest.mark.parametrize("violation", sorted(VIOLATIONS))
def test_disconnect_reason_reaches_a_client_that_keeps_sending(start_broker, violation, attempt):
    """The client subscribes to what it floods and reads nothing until it is done, so the
    broker's writes to it wait on a full socket. After the violation it sends 2 MiB more. It
    still reads everything queued and then the DISCONNECT with its reason code: the broker
    drains the input while its writer waits, shuts its sending side after the DISCONNECT and
    drains a while longer, instead of closing into a reset that throws the unread bytes away."""
    broker = start_broker("--receive-maximum", "2")
    bad, code = VIOLATIONS[violation]
    with Conn(*broker.addr) as c:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        c.connect(f"linger-{violation}-{attempt}")
        c.send(subscribe_many([("linger/flood", 0)]))
        assert c.read_packet().ptype == SUBACK
        flood(c, 1 << 20)
        c.send(bad)
        flood(c)
        packets = c.read_until_closed(timeout=20)
    codes = [disconnect_reason(p) for p in packets if p.ptype == DISCONNECT]
    assert codes == [code], f"{len(packets)} packets, DISCONNECT reason codes {codes}"
    assert packets[-1].ptype == DISCONNECT, "the DISCONNECT is the last packet"


# --- 9: max_keepalive ----------------------------------------------------------------------------

@pytest.mark.parametrize("asked", [0, 61, 65535])
def test_max_keepalive_caps_a_v5_client_with_server_keep_alive(start_broker, asked):
    """MQTT 5.0 3.2.2.3.14: a v5 client asking for more than `max_keepalive`, or for 0, gets
    Server Keep Alive = the cap in CONNACK and is held to it (closed with 0x8D after 1.5 x)."""
    broker = start_broker("--max-keepalive", "1")
    with Conn(*broker.addr) as c:
        ack = c.connect(f"cap-v5-{asked}", keep_alive=asked)
        assert ack.props.get(SERVER_KEEP_ALIVE) == 1, ack
        packets = c.read_until_closed(timeout=10)
    assert [disconnect_reason(p) for p in packets] == [0x8D], packets


def test_max_keepalive_leaves_a_v5_client_within_it_alone(start_broker):
    broker = start_broker("--max-keepalive", "60")
    with Conn(*broker.addr) as c:
        ack = c.connect("cap-v5-within", keep_alive=30)
        assert SERVER_KEEP_ALIVE not in ack.props, ack
        c.ping()


@pytest.mark.parametrize("asked", [0, 61])
def test_max_keepalive_refuses_a_v311_client_above_it(start_broker, asked):
    """3.1.1 has no Server Keep Alive and the server must honour the client's value
    [MQTT-3.1.2-24]: a client above the cap (or with 0) is refused, CONNACK 0x02 as Mosquitto
    answers it, and the refusal is logged with the client id, peer and reason."""
    broker = start_broker("--max-keepalive", "60")
    with Conn(*broker.addr, version=V311) as c:
        c.connect(f"cap-v311-{asked}", keep_alive=asked, expect_code=0x02)
        assert c.read_until_closed() == []
    line = wait_for_line(broker, f"CONNECT refused.*client_id=cap-v311-{asked}")
    assert "peer=127.0.0.1:" in line and "reason_code=0x85" in line and "max_keepalive" in line, line
    with Conn(*broker.addr, version=V311) as c:
        c.connect("cap-v311-within", keep_alive=60)
        c.ping()


def broker_with_config(tmp_path, config) -> Broker:
    """A broker whose log level comes from `config` alone (berthproc's start passes --log,
    which wins over the file)."""
    data = tmp_path / "data"
    data.mkdir()
    return Broker([berth_bin(), "--listen", "127.0.0.1:0", "--cores", "2", "--data-dir", str(data),
                   "--segment-size", str(1 << 20), "--config", str(config)], workdir=str(tmp_path))


# --- 10: SIGHUP ------------------------------------------------------------------------------------

def test_sighup_reloads_the_log_level_and_the_broker_survives(tmp_path):
    """SIGHUP re-reads the config file: `log = "warning"` (Mosquitto's name) hides the connection
    lines, and once the file says "information" and SIGHUP came, they appear."""
    config = tmp_path / "berth.toml"
    config.write_text('log = "warning"\n')
    broker = broker_with_config(tmp_path, config)
    try:
        with Conn(*broker.addr) as c:
            c.connect("hup-before")
        assert not lines_matching(broker, "hup-before"), broker.describe()
        config.write_text('log = "information"\n')
        broker.proc.send_signal(signal.SIGHUP)
        wait_for_line(broker, "configuration reloaded.*applied=log")
        assert broker.alive(), broker.describe()
        with Conn(*broker.addr) as c:
            c.connect("hup-after")
            c.ping()
        wait_for_line(broker, "CONNECT accepted.*hup-after|hup-after.*CONNECT accepted")
        config.write_text('log = "loud"\n')
        broker.proc.send_signal(signal.SIGHUP)
        line = wait_for_line(broker, "configuration not reloaded")
        assert "`log`" in line and str(config) in line, line
        with Conn(*broker.addr) as c:
            c.connect("hup-kept")
        wait_for_line(broker, "hup-kept.*CONNECT accepted")
    finally:
        print(broker.describe())
        broker.assert_clean_exit()


# --- 11: log lines at the default level ------------------------------------------------------------

def test_default_level_logs_connections_connects_and_disconnects(broker):
    with Conn(*broker.addr) as c:
        c.connect("logged-client", keep_alive=30, clean=False, props=b"\x05\x11\x00\x00\x00\x3c")
        c.send(b"\xe0\x00")
        assert c.read_until_closed() == []
    accepted = wait_for_line(broker, "connection accepted")
    assert "peer=127.0.0.1:" in accepted and f"listener=127.0.0.1:{broker.port}" in accepted, accepted
    line = wait_for_line(broker, "logged-client.*CONNECT accepted")
    for field in ("protocol=V5", "clean_start=false", "session_present=false", "keep_alive=30"):
        assert field in line, f"{field} missing: {line}"
    line = wait_for_line(broker, "logged-client.*client disconnected")
    assert "reason=client sent DISCONNECT" in line, line


def test_a_server_disconnect_is_logged_with_its_reason_code(start_broker):
    broker = start_broker("--receive-maximum", "1")
    with Conn(*broker.addr) as c:
        c.connect("logged-violator")
        c.send(b"".join(publish_with("t", b"x", V5, qos=2, packet_id=n) for n in (1, 2)))
        c.read_until_closed()
    line = wait_for_line(broker, "logged-violator.*client disconnected")
    assert "reason_code=0x93" in line and "receive maximum" in line, line


@pytest.mark.parametrize("given", ["error", "warning", "notice", "information", "debug", "none",
                                   "warn", "info", "trace", "off"])
def test_mosquitto_and_tracing_level_names_are_accepted(tmp_path, given):
    """Each name, in the config file, sets its level: info lines (a CONNECT) show from
    notice/info on; error lines (the file no longer reads, on SIGHUP) at every level but
    none/off, which show nothing until the file says "info" and SIGHUP came."""
    config = tmp_path / "berth.toml"
    config.write_text(f'log = "{given}"\n')
    broker = broker_with_config(tmp_path, config)
    try:
        with Conn(*broker.addr) as c:
            c.connect(f"level-{given}")
        shown = bool(lines_matching(broker, f"level-{given}.*CONNECT accepted"))
        assert shown == (given in ("notice", "information", "debug", "info", "trace")), broker.describe()
        if given in ("none", "off"):
            assert broker.stderr_text() == "", broker.describe()
            config.write_text('log = "info"\n')
            broker.proc.send_signal(signal.SIGHUP)
            wait_for_line(broker, "configuration reloaded")
        else:
            config.write_text('cores = "many"\n')
            broker.proc.send_signal(signal.SIGHUP)
            wait_for_line(broker, "ERROR.*configuration not reloaded")
    finally:
        print(broker.describe())
        broker.assert_clean_exit()


def test_an_unknown_log_level_is_an_error_naming_the_key(tmp_path):
    import subprocess
    proc = subprocess.run([berth_bin(), "--log", "loud", "--data-dir", str(tmp_path)],
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    stderr = proc.stderr.decode(errors="replace")
    # Given as a flag, the error names the flag; from the file, the key and the file.
    assert proc.returncode == 2 and "--log" in stderr and "loud" in stderr, (proc.returncode, stderr)
    config = tmp_path / "berth.toml"
    config.write_text('log = "verbose"\n')
    proc = subprocess.run([berth_bin(), "--config", str(config), "--data-dir", str(tmp_path)],
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    stderr = proc.stderr.decode(errors="replace")
    assert proc.returncode == 2 and "`log`" in stderr and str(config) in stderr, (proc.returncode, stderr)


# --- 12: a client that stops reading is dropped after write_timeout -------------------------------

@pytest.mark.parametrize("qos", [0, 1])
def test_a_subscriber_that_stops_reading_is_dropped_after_write_timeout(start_broker, qos):
    """A raw-socket subscriber with a small receive buffer never reads while 64 KiB messages are
    published to it. With `--write-timeout 1` its writer makes no progress for a second and the
    broker closes the connection and logs why; the client's next bytes meet a closed socket."""
    broker = start_broker("--write-timeout", "1")
    stalled = Conn(*broker.addr)
    stalled.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect("stalled-sub")
    stalled.send(subscribe_many([("stall/t", qos)]))
    assert stalled.read_packet().ptype == SUBACK
    with Conn(*broker.addr) as pub:
        pub.connect("stall-pub")
        message = b"p" * 65536
        line = None
        # Publishing goes on until the drop: the timeout is armed while a write waits, and
        # the kernel's send buffer for the stalled client grows for a while before writes
        # wait for good (with nothing more to send, an idle writer waits on nothing).
        deadline = time.monotonic() + 40
        batch = 0
        while time.monotonic() < deadline:
            batch += 1
            ids = [(16 * batch + n) % 65535 + 1 for n in range(16)]
            pub.send(b"".join(publish_with("stall/t", message, V5, qos=qos, packet_id=n if qos else None)
                              for n in ids))
            if qos:
                assert [pub.read_packet(timeout=10).ptype for _ in ids] == [PUBACK] * 16
            else:
                pub.ping()
            found = lines_matching(broker, "stalled-sub.*client disconnected")
            if found:
                line = found[0]
                break
        line = line or wait_for_line(broker, "stalled-sub.*client disconnected", timeout=20)
        assert "stopped reading" in line, line
        pub.ping()
    # The broker has closed its end: the next bytes the stalled client sends are answered
    # with a reset, which moves its socket to CLOSE (reading would first take the 4 MiB the
    # broker's kernel still holds for it through a 4 KiB window).
    stalled.send(b"\xc0\x00")
    deadline = time.monotonic() + 10
    while tcp_state(stalled.sock) != TCP_CLOSE:
        assert time.monotonic() < deadline, f"stalled socket still in TCP state {tcp_state(stalled.sock)}"
        time.sleep(0.05)
    stalled.close()


TCP_CLOSE = 7


def tcp_state(sock: socket.socket) -> int:
    """The kernel's TCP state of `sock` (the first byte of struct tcp_info)."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
