"""The session scenarios of `scenarios.txt`, written once against the `Library` interface and
run with paho-mqtt and mosquitto_pub/sub in both protocol versions (test_python_clients.py).

Publishers and subscribers get client ids owned by different cores (the broker runs on two),
so every delivery crosses cores. Each scenario starts its own broker: `BROKER_FLAGS` says with
what (the MQTT.js wrapper uses the same table).
"""

from __future__ import annotations

import os
import time

from libraries import Library, Msg, Will
from mqttwire import V5, ids_owned_by

HERE = os.path.dirname(os.path.abspath(__file__))


def scenario_names() -> list[str]:
    with open(os.path.join(HERE, "scenarios.txt")) as f:
        return [line.split()[0] for line in f if line.strip() and not line.startswith("#")]


# 3.1.1 has no Session Expiry of its own: a Clean Session 0 session lasts the server's maximum.
EXPIRY_SECS = 1
BROKER_FLAGS = {"expiry": ["--max-session-expiry", str(EXPIRY_SECS)]}


def ids(tag: str) -> tuple[str, str, str]:
    """(publisher, subscriber, spare): the publisher on core 0, the others on core 1."""
    (pub,) = ids_owned_by(0, 2, f"{tag}-pub")
    sub, spare = ids_owned_by(1, 2, f"{tag}-sub", 2)
    return pub, sub, spare


def all_ids(tag: str) -> dict[str, str]:
    """Every client id a scenario uses, by role (also handed to the MQTT.js script)."""
    pub, sub, spare = ids(tag)
    (m0,) = ids_owned_by(0, 2, f"{tag}-member0")
    (m1,) = ids_owned_by(1, 2, f"{tag}-member1")
    return {"pub": pub, "sub": sub, "spare": spare, "m0": m0, "m1": m1}


def assert_present(client, expected: bool) -> None:
    if client.session_present is not None:
        assert client.session_present is expected, f"Session Present {client.session_present}"


def assert_in_order(got: list[Msg], expected: list[Msg]) -> None:
    """Every message once, and in order within each QoS: libraries hand a QoS 2 message to the
    application at different points (paho at PUBREL, others at PUBLISH), so the order across
    QoS levels is the library's, not the broker's."""
    assert sorted(got, key=repr) == sorted(expected, key=repr), f"got {got}, expected {expected}"
    for qos in (0, 1, 2):
        assert [m for m in got if m.qos == qos] == [m for m in expected if m.qos == qos], \
            f"QoS {qos} messages out of order: {got}"


def connect(lib: Library, addr, tag: str) -> None:
    _, sub, _ = ids(tag)
    assert lib.visit(addr, sub, clean=True) in (False, None)
    assert lib.visit(addr, sub, clean=False, expiry=300) in (False, None)
    assert lib.visit(addr, sub, clean=False, expiry=300) in (True, None)
    c = lib.open(addr, sub, clean=False, expiry=300)
    assert_present(c, True)
    c.disconnect()
    assert lib.visit(addr, sub, clean=True) in (False, None)


def qos_round_trip(qos: int):
    def run(lib: Library, addr, tag: str) -> None:
        pub, sub, _ = ids(tag)
        topic = f"interop/{tag}/qos{qos}"
        s = lib.open(addr, sub, subs=[(topic, qos)])
        payloads = [f"m{i}".encode() for i in range(3)]
        lib.publish(addr, pub, topic, payloads, qos)
        assert s.expect(3) == [Msg(topic, p, qos, False) for p in payloads]
        s.disconnect()
    return run


def retained(lib: Library, addr, tag: str) -> None:
    pub, sub, spare = ids(tag)
    topic, marker = f"interop/{tag}/retained", f"interop/{tag}/marker"
    lib.publish(addr, pub, topic, [b"kept"], 1, retain=True)
    s = lib.open(addr, sub, subs=[(topic, 1)])
    assert s.expect(1) == [Msg(topic, b"kept", 1, True)]
    lib.publish(addr, pub, topic, [b""], 1, retain=True)
    # The clearing message itself goes to current subscribers, as a normal message.
    assert s.expect(1) == [Msg(topic, b"", 1, False)]
    s.disconnect()
    late = lib.open(addr, spare, subs=[(topic, 1), (marker, 1)])
    lib.publish(addr, pub, marker, [b"after"], 1)
    assert late.expect(1) == [Msg(marker, b"after", 1, False)], "a cleared retained message was sent"
    late.disconnect()


def will(lib: Library, addr, tag: str) -> None:
    pub, sub, spare = ids(tag)
    topic = f"interop/{tag}/will"
    watcher = lib.open(addr, sub, subs=[(topic, 1)])
    dying = lib.open(addr, pub, will=Will(topic, b"gone"))
    dying.kill()
    assert watcher.expect(1) == [Msg(topic, b"gone", 1, False)]
    lib.visit(addr, spare, will=Will(topic, b"must not appear"))
    lib.publish(addr, pub, topic, [b"marker"], 1)
    assert watcher.expect(1) == [Msg(topic, b"marker", 1, False)], "the will followed a normal DISCONNECT"
    watcher.disconnect()


def resume(lib: Library, addr, tag: str) -> None:
    pub, sub, _ = ids(tag)
    topic = f"interop/{tag}/queued"
    lib.visit(addr, sub, subs=[(topic, 2)], clean=False, expiry=300)
    sent = [(f"q{i}".encode(), 1 + i % 2) for i in range(6)]
    for payload, qos in sent:
        lib.publish(addr, pub, topic, [payload], qos)
    back = lib.open(addr, sub, clean=False, expiry=300)
    assert_present(back, True)
    assert_in_order(back.expect(len(sent)), [Msg(topic, p, q, False) for p, q in sent])
    back.disconnect()


def expiry(lib: Library, addr, tag: str) -> None:
    pub, sub, _ = ids(tag)
    topic, marker = f"interop/{tag}/expiring", f"interop/{tag}/marker"
    lib.visit(addr, sub, subs=[(topic, 1)], clean=False, expiry=EXPIRY_SECS)
    lib.publish(addr, pub, topic, [b"queued"], 1)
    time.sleep(EXPIRY_SECS + 1.5)  # the expiry must really pass: this waits for time, not for an event
    back = lib.open(addr, sub, subs=[(marker, 1)], clean=False, expiry=EXPIRY_SECS)
    assert_present(back, False)
    lib.publish(addr, pub, marker, [b"marker"], 1)
    assert back.expect(1) == [Msg(marker, b"marker", 1, False)], "a message of the expired session came"
    back.disconnect()


def takeover(lib: Library, addr, tag: str) -> None:
    pub, sub, _ = ids(tag)
    topic = f"interop/{tag}/taken"
    first = lib.open(addr, sub, subs=[(topic, 1)], clean=False, expiry=300)
    second = lib.open(addr, sub, clean=False, expiry=300)
    assert_present(second, True)
    reason = first.wait_taken_over()
    assert reason == (0x8E if lib.version == V5 else None), f"disconnect reason {reason}"
    lib.publish(addr, pub, topic, [b"to the new connection"], 1)
    assert second.expect(1) == [Msg(topic, b"to the new connection", 1, False)]
    second.disconnect()


def shared(lib: Library, addr, tag: str) -> None:
    who = all_ids(tag)
    pub, m0, m1 = who["pub"], who["m0"], who["m1"]
    topic = f"interop/{tag}/work"
    members = [lib.open(addr, m, subs=[(f"$share/g/{topic}", 1)]) for m in (m0, m1)]
    payloads = [f"job{i}".encode() for i in range(20)]
    lib.publish(addr, pub, topic, payloads, 1)
    got: list[Msg] = []
    deadline = time.monotonic() + 10
    while len(got) < len(payloads) and time.monotonic() < deadline:
        for m in members:
            got += m.poll(0.05)
    assert sorted(m.payload for m in got) == sorted(payloads), f"each job exactly once: {got}"
    assert all(m.topic == topic and m.qos == 1 for m in got), got
    for m in members:
        assert m.poll(0.2) == [], "a job was delivered twice"
        m.disconnect()


SCENARIOS = {
    "connect": connect,
    "qos0": qos_round_trip(0),
    "qos1": qos_round_trip(1),
    "qos2": qos_round_trip(2),
    "retained": retained,
    "will": will,
    "resume": resume,
    "expiry": expiry,
    "takeover": takeover,
    "shared": shared,
}
