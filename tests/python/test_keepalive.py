"""Keep alive: a client silent for 1.5 x its Keep Alive is closed; traffic keeps it open.

Timing is measured, never slept: the test blocks on the socket with a deadline and records when
the broker closes it.
"""

import time

import pytest

from mqttwire import V5, V311, Conn, disconnect_reason

KEEP_ALIVE = 1
EARLIEST, LATEST = 1.0, 3.0  # the rule says 1.5 s; allow for timer granularity


def _close_delay(conn: Conn, cid: str):
    conn.connect(cid, keep_alive=KEEP_ALIVE)
    start = time.monotonic()
    packets = conn.read_until_closed(timeout=LATEST + 2)
    return time.monotonic() - start, packets


def test_mqtt_3_1_2_22_v5_keep_alive_expiry(broker):
    """[MQTT-3.1.2-22] (5.0): no packet for 1.5 x Keep Alive -> DISCONNECT 0x8D (Keep Alive
    timeout), then close."""
    with Conn(*broker.addr) as c:
        delay, packets = _close_delay(c, "keepalive-v5")
    assert [disconnect_reason(p) for p in packets] == [0x8D], packets
    assert EARLIEST <= delay <= LATEST, f"closed after {delay:.2f}s with Keep Alive {KEEP_ALIVE}s"


def test_mqtt_3_1_2_24_v311_keep_alive_expiry(broker):
    """[MQTT-3.1.2-24] (3.1.1): no packet for 1.5 x Keep Alive -> the Server disconnects."""
    with Conn(*broker.addr, version=V311) as c:
        delay, packets = _close_delay(c, "keepalive-v311")
    assert packets == [], packets
    assert EARLIEST <= delay <= LATEST, f"closed after {delay:.2f}s with Keep Alive {KEEP_ALIVE}s"


@pytest.mark.parametrize("version", [V311, V5], ids=["v311", "v5"])
def test_pingreq_keeps_connection_open(broker, version):
    """PINGREQ every 0.6 s for 3.6 s (well past 1.5 x Keep Alive): the connection stays open."""
    with Conn(*broker.addr, version=version) as c:
        c.connect(f"keepalive-pinging-{version}", keep_alive=KEEP_ALIVE)
        for _ in range(6):
            c.ping()
            c.assert_quiet_for(0.6)
        c.ping()


def test_keep_alive_expiry_spares_other_clients(broker):
    """A quiet client timing out does not disturb a client with Keep Alive 0 on the same broker."""
    with Conn(*broker.addr) as steady, Conn(*broker.addr) as quiet:
        steady.connect("keepalive-steady", keep_alive=0)
        delay, _ = _close_delay(quiet, "keepalive-quiet")
        assert delay <= LATEST
        steady.ping()
