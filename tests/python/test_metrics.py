"""`/metrics` and the `$SYS` figures of issue 17 against the real binary, each cause provoked
with real clients and the page read by prometheus_client's own text parser:

- drops by reason: a queue over `--max-queued-messages` (queue_full), PUBLISHes nobody
  subscribed to (no_subscribers), a v5 message whose Message Expiry Interval passed while
  queued (expired), a PUBLISH the ACL refused (acl), QoS 1 refused at `--max-stored-bytes`
  as on a full disk (disk_full);
- refused CONNECTs by CONNACK reason code: bad passwords (v5 0x86 and 3.1.1 return code 4,
  both 0x86), an anonymous client (0x87), a client id over `--max-clientid-len` 23 (0x85,
  reason client_id_length);
- the msync and checkpoint histograms, after enough QoS 1 traffic for a checkpoint;
- `$SYS`: publish/messages/dropped/<reason>, clients/maximum, clients/expired, and
  Mosquitto's load averages (load/.../1min, 5min, 15min).

Counters are read as they are when scraped, summed over the cores; the tests wait for a
value with a deadline (a message routed to the other core is counted there a moment later).
"""

from __future__ import annotations

import time

from prometheus_client.parser import text_string_to_metric_families

from bgclient import T, ClientSet
from clients import RawSession, publish_all
from mqttwire import MESSAGE_EXPIRY_INTERVAL, PUBACK, V5, V311, Conn, ids_owned_by, prop_u32, publish_with
from test_admin import ANON, ok
from test_auth import berth_passwd

SYS = "$SYS/broker/"


def scrape(b) -> dict:
    """The families of one scrape, by name (prometheus_client drops a counter's `_total`)."""
    return {f.name: f for f in text_string_to_metric_families(ok(b, "GET", "/metrics"))}


def total(families: dict, name: str, suffix: str = "", **labels: str) -> float:
    """The sum over the cores of the samples of `name` whose labels include `labels`."""
    family = families[name]
    sample_name = name + ("_total" if family.type == "counter" else "") + suffix
    return sum(s.value for s in family.samples
               if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items()))


def wait_for_metrics(b, want: dict[tuple, float], timeout: float = T) -> dict:
    """Scrapes until every (name, labels...) in `want` sums to its value; the last scrape."""
    deadline = time.monotonic() + timeout
    while True:
        families = scrape(b)
        seen = {key: total(families, key[0], **dict(key[1:])) for key in want}
        if seen == want:
            return families
        if time.monotonic() > deadline:
            raise AssertionError(f"wanted {want}, last scrape had {seen}")
        time.sleep(0.05)


def dropped(reason: str) -> tuple:
    return ("berth_messages_dropped", ("reason", reason))


def wait_for_sys(watcher, want: dict[str, str], latest: dict[str, str] | None = None,
                 timeout: float = T) -> dict[str, str]:
    """Reads `$SYS` messages into `latest` until it holds every topic of `want` at its value."""
    latest = {} if latest is None else latest
    deadline = time.monotonic() + timeout
    while any(latest.get(SYS + k) != v for k, v in want.items()):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"wanted {want}, last saw { {k: latest.get(SYS + k) for k in want} }")
        m = watcher.get(remaining)
        latest[m.topic] = m.payload.decode()
    return latest


def sys_until(watcher, latest: dict[str, str], done, what: str, timeout: float = T) -> None:
    """Reads `$SYS` messages into `latest` until `done()` holds."""
    deadline = time.monotonic() + timeout
    while not done():
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"never saw {what}"
        m = watcher.get(remaining)
        latest[m.topic] = m.payload.decode()


def test_drops_are_counted_by_reason_in_metrics_and_sys(start_broker):
    b = start_broker(*ANON, "--max-queued-messages", "2", "--sys-interval", "1")
    clients = ClientSet(b)
    try:
        watcher = clients(ids_owned_by(1, 2, "metrics-sys")[0], V311)
        assert watcher.sub(SYS + "#", 0) == [0]
        [full] = ids_owned_by(0, 2, "metrics-full")
        [expiring] = ids_owned_by(0, 2, "metrics-exp")
        [pub] = ids_owned_by(1, 2, "metrics-pub")

        # queue_full: 5 QoS 1 messages for an offline session that queues 2 (drop-oldest).
        s = RawSession(b.addr, full, V311)
        s.connect(clean=False)
        s.subscribe("full/t", qos=1)
        s.disconnect()
        publish_all(b.addr, pub, [("full/t", b"%d" % n) for n in range(5)])

        # no_subscribers: two PUBLISHes nobody subscribed to (a retained one is kept, not dropped).
        publish_all(b.addr, pub, [("nobody/a", b"x"), ("nobody/b", b"y")])
        publish_all(b.addr, pub, [("nobody/kept", b"r")], retain=True)

        # expired: a v5 message with a 1 s expiry, queued for an offline session past it.
        e = RawSession(b.addr, expiring, V5)
        e.connect(clean=True, expiry=3600)
        e.subscribe("exp/#", qos=1)
        e.disconnect()
        publish_all(b.addr, pub, [("exp/t", b"stale")], version=V5,
                    props=prop_u32(MESSAGE_EXPIRY_INTERVAL, 1))
        published = time.monotonic()
        families = wait_for_metrics(b, {("berth_queued_messages",): 3})
        time.sleep(max(0.0, published + 1.2 - time.monotonic()))  # the expiry itself, not a sync
        e.connect(clean=False, expiry=3600)
        publish_all(b.addr, pub, [("exp/end", b"")], version=V5)
        assert e.drain_until("exp/end") == [], "the expired message was sent"
        e.disconnect()

        families = wait_for_metrics(b, {dropped("queue_full"): 3, dropped("no_subscribers"): 2,
                                        dropped("expired"): 1, dropped("acl"): 0})
        assert families["berth_messages_dropped"].type == "counter"
        reasons = {s.labels["reason"] for s in families["berth_messages_dropped"].samples}
        assert reasons == {"queue_full", "outbox_full_slow_subscriber", "outbox_full_overload", "too_large",
                           "no_share_member", "expired", "no_subscribers", "acl", "disk_full"}
        assert {s.labels["core"] for s in families["berth_messages_dropped"].samples} == {"0", "1"}
        assert total(families, "berth_sessions", state="disconnected") == 2  # full and expiring
        assert families["berth_sessions"].type == "gauge"

        latest = wait_for_sys(watcher, {"publish/messages/dropped/queue_full": "3",
                                        "publish/messages/dropped/no_subscribers": "2",
                                        "publish/messages/dropped/expired": "1",
                                        "publish/messages/dropped": "3"})
        # The watcher has been connected all along; Mosquitto's maximum is taken at each update.
        sys_until(watcher, latest, lambda: int(latest.get(SYS + "clients/maximum", "0")) >= 1,
                  "clients/maximum of at least 1")
        loads = {t: v for t, v in latest.items() if t.startswith(SYS + "load/")}
        for name in ("messages/received", "messages/sent", "publish/received", "publish/sent",
                     "publish/dropped", "bytes/received", "bytes/sent", "sockets", "connections"):
            for window in ("1min", "5min", "15min"):
                assert f"{SYS}load/{name}/{window}" in loads, (name, window, sorted(loads))
        assert all(float(v) >= 0 for v in loads.values())
        # Bytes have flowed between updates: that load rises above zero.
        sys_until(watcher, latest, lambda: float(latest.get(SYS + "load/bytes/received/1min", "0")) > 0,
                  "load/bytes/received/1min above 0.00")
    finally:
        clients.close()


def test_sessions_expired_in_sys_and_metrics(start_broker):
    b = start_broker(*ANON, "--sys-interval", "1")
    clients = ClientSet(b)
    try:
        watcher = clients("metrics-expired-sys", V311)
        assert watcher.sub(SYS + "clients/expired", 0) == [0]
        s = RawSession(b.addr, "metrics-short", V5)
        s.connect(clean=True, expiry=1)
        s.disconnect()
        wait_for_sys(watcher, {"clients/expired": "1"})
        # Most `$SYS` topics have had updates and no subscriber by now: the broker's own
        # publishes are not drops.
        wait_for_metrics(b, {("berth_sessions_expired",): 1, dropped("no_subscribers"): 0})
    finally:
        clients.close()


ACL = """\
user alice
topic read news/#
"""


def test_acl_refusals_and_refused_connacks_by_reason_code(start_broker, tmp_path):
    pw = str(tmp_path / "pw")
    berth_passwd("-c", "-b", pw, "alice", "a")
    acl = tmp_path / "acl"
    acl.write_text(ACL)
    b = start_broker(*ANON, "--password-file", pw, "--acl-file", str(acl), "--max-clientid-len", "23")

    with Conn(*b.addr, version=V5) as c:
        c.connect("metrics-alice", username="alice", password=b"a")
        c.send(publish_with("news/x", b"no", V5, qos=1, packet_id=1))
        p = c.read_packet()
        assert p.ptype == PUBACK and p.body[2] == 0x87, p
    for version, code in ((V5, 0x86), (V311, 4)):
        with Conn(*b.addr, version=version) as c:
            c.connect("metrics-bad", username="alice", password=b"wrong", expect_code=code)
    with Conn(*b.addr, version=V5) as c:
        c.connect("metrics-anon", expect_code=0x87)
    with Conn(*b.addr, version=V5) as c:
        c.connect("metrics-" + "x" * 20, username="alice", password=b"a", expect_code=0x85)

    refused = "berth_connections_refused"
    families = wait_for_metrics(b, {
        dropped("acl"): 1,
        (refused, ("code", "0x86"), ("reason", "bad_user_name_or_password")): 2,
        (refused, ("code", "0x87"), ("reason", "not_authorized")): 1,
        (refused, ("code", "0x85"), ("reason", "client_id_length")): 1,
        (refused, ("code", "none"), ("reason", "max_connections")): 0,
    })
    assert total(families, refused) == 4
    assert total(families, "berth_acl_refused") == 1


def test_msync_and_checkpoint_durations_are_histograms(start_broker):
    """About five 1 MiB segments of QoS 1 messages for an offline session on one core: the
    log msyncs them (`--fsync always`) and grows enough for a checkpoint."""
    b = start_broker(*ANON, "--fsync", "always", "--max-queued-bytes", "0", cores=1)
    s = RawSession(b.addr, "metrics-holder", V311)
    s.connect(clean=False)
    s.subscribe("big/t", qos=1)
    s.disconnect()
    publish_all(b.addr, "metrics-big", [("big/t", bytes(100 << 10)) for _ in range(50)])
    deadline = time.monotonic() + 60
    while True:
        families = scrape(b)
        if total(families, "berth_checkpoint_duration_seconds", "_count") >= 1:
            break
        assert time.monotonic() < deadline, "no checkpoint counted"
        time.sleep(0.2)
    for name in ("berth_log_fsync_seconds", "berth_checkpoint_duration_seconds"):
        family = families[name]
        assert family.type == "histogram", name
        count = total(families, name, "_count")
        inf = total(families, name, "_bucket", le="+Inf")
        assert count >= 1 and inf == count, (name, count, inf)
        buckets = [s.value for s in family.samples if s.name == name + "_bucket"]
        assert buckets == sorted(buckets), f"{name} buckets are cumulative"
        assert total(families, name, "_sum") > 0


def test_a_store_at_max_stored_bytes_counts_disk_full(start_broker):
    """`--max-stored-bytes` refuses QoS 1 as a full disk does (v5 PUBACK 0x97): each refusal is
    a disk_full drop, and the refused figure says the same."""
    b = start_broker(*ANON, "--max-stored-bytes", str(20 * (16 << 10)))
    s = RawSession(b.addr, "metrics-hoard", V311)
    s.connect(clean=False)
    s.subscribe("hoard/t", qos=1)
    s.disconnect()
    with Conn(*b.addr, version=V5) as c:
        c.connect("metrics-hoarder")
        for n in range(1, 1001):
            c.send(publish_with("hoard/t", bytes(16 << 10), V5, qos=1, packet_id=n))
            p = c.read_packet()
            assert p.ptype == PUBACK, p
            if len(p.body) > 2 and p.body[2] == 0x97:
                break
        else:
            raise AssertionError("max_stored_bytes never refused a message")
    families = scrape(b)
    refused = total(families, "berth_messages_refused")
    assert refused >= 1
    assert total(families, "berth_messages_dropped", reason="disk_full") == refused
