"""The admin HTTP API against the real binary, with sessions made by real clients (paho-mqtt,
mosquitto_sub and raw MQTT): listing and queues of offline sessions, delete (journaled: it
survives kill -9), kick, bulk delete, subscriptions added and removed, publish, run-time
settings kept across a restart, cursor paging over both cores, /metrics read by
prometheus_client's parser, and API keys."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import urllib.error
import urllib.parse
import urllib.request

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from prometheus_client.parser import text_string_to_metric_families

from berthproc import Broker, BrokerDied
from clients import RawSession, publish_all
from mqttwire import SESSION_EXPIRY_INTERVAL, V5, V311, Conn, ids_owned_by

ANON = ("--admin-listen", "127.0.0.1:0", "--admin-allow-anonymous", "true")


def api(b: Broker, method: str, path: str, body=None, auth: tuple[str, str] | None = None,
        headers: dict[str, str] | None = None):
    """(status, decoded JSON or text) of one request to `b`'s admin API."""
    host, port = b.admin
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://{host}:{port}{path}", data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    for name, value in (headers or {}).items():
        req.add_header(name, value)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, raw, kind = r.status, r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        status, raw, kind = e.code, e.read(), e.headers.get("Content-Type", "")
    return status, (json.loads(raw) if kind.startswith("application/json") else raw.decode())


def ok(b: Broker, method: str, path: str, body=None):
    status, value = api(b, method, path, body)
    assert status == 200, f"{method} {path}: {status} {value}\n{b.describe()}"
    return value


def offline_session(b: Broker, client_id: str, topic_filter: str | None = None, version: int = V311) -> None:
    """A persistent session left offline (3.1.1 Clean Session 0; v5 with a Session Expiry)."""
    s = RawSession(b.addr, client_id, version)
    s.connect(clean=False, expiry=3600 if version == V5 else None)
    if topic_filter:
        s.subscribe(topic_filter, qos=1)
    s.disconnect()


def reconnect_present(b: Broker, client_id: str) -> bool:
    with Conn(*b.addr, version=V311) as c:
        return c.connect(client_id, clean=False).session_present


def test_offline_session_with_five_queued_is_listed_and_its_queue_shown(start_broker):
    b = start_broker(*ANON)
    offline_session(b, "queue-1", "q/#")
    payloads = [b"one", b"two", b"\xff\xfe binary", b"four", b"five"]
    publish_all(b.addr, "queue-pub", [(f"q/{n}", p) for n, p in enumerate(payloads)])
    listed = ok(b, "GET", "/api/v1/clients?conn_state=disconnected")["data"]
    [entry] = [c for c in listed if c["clientid"] == "queue-1"]
    assert entry["mqueue_len"] == 5 and entry["connected"] is False and entry["persistent"] is True
    assert entry["subscriptions_cnt"] == 1
    queue = ok(b, "GET", "/api/v1/clients/queue-1/queue")
    assert [m["topic"] for m in queue["data"]] == [f"q/{n}" for n in range(5)]
    assert [base64.b64decode(m["payload_base64"]) for m in queue["data"]] == payloads
    assert [m["payload"] for m in queue["data"]] == ["one", "two", None, "four", "five"]
    assert {(m["state"], m["qos"]) for m in queue["data"]} == {("queued", 1)}
    assert queue["meta"]["cursor"] is None
    # Pages of 2 walk the same five once, in order.
    seen, cursor = [], None
    while True:
        page = ok(b, "GET", "/api/v1/clients/queue-1/queue?limit=2" + (f"&cursor={cursor}" if cursor else ""))
        seen += [m["topic"] for m in page["data"]]
        cursor = page["meta"]["cursor"]
        if cursor is None:
            break
    assert seen == [f"q/{n}" for n in range(5)]
    # Back online with a Receive Maximum of 1 and no acknowledgement: one in flight, four queued.
    s = RawSession(b.addr, "queue-1", V5)
    s.connect(clean=False, expiry=3600, receive_maximum=1)
    assert s.next_publish(ack=False).topic == "q/0"
    states = [(m["state"], m["topic"]) for m in ok(b, "GET", "/api/v1/clients/queue-1/queue")["data"]]
    assert states == [("in_flight", "q/0")] + [("queued", f"q/{n}") for n in range(1, 5)]
    s.close()
    assert api(b, "GET", "/api/v1/clients/nobody/queue")[0] == 404
    assert api(b, "GET", "/api/v1/clients/queue-1/queue?cursor=x")[0] == 400


def test_delete_makes_the_next_connack_say_session_present_0_even_after_kill_9(start_broker, tmp_path):
    data = str(tmp_path / "data")
    b = start_broker(*ANON, data_dir=data)
    for cid in ("del-gone", "del-kept"):
        offline_session(b, cid, "d/#")
    assert ok(b, "DELETE", "/api/v1/clients/del-gone") == {"clientid": "del-gone", "deleted": True}
    assert api(b, "GET", "/api/v1/clients/del-gone")[0] == 404
    assert api(b, "DELETE", "/api/v1/clients/del-gone")[0] == 404
    assert b.stop(signal.SIGKILL) == -signal.SIGKILL
    b = start_broker(*ANON, data_dir=data)
    assert ok(b, "GET", "/api/v1/clients/del-kept")["persistent"] is True
    assert api(b, "GET", "/api/v1/clients/del-gone")[0] == 404
    assert reconnect_present(b, "del-gone") is False
    assert reconnect_present(b, "del-kept") is True
    # A connected client is disconnected and its session discarded too.
    with Conn(*b.addr, version=V311) as c:
        c.connect("del-online", clean=False)
        assert ok(b, "DELETE", "/api/v1/clients/del-online")["deleted"] is True
        c.read_until_closed(timeout=10)
    assert reconnect_present(b, "del-online") is False


def test_kick_disconnects_with_0x98_and_keeps_the_queue(start_broker):
    b = start_broker(*ANON)
    events = {}
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="kick-me", protocol=mqtt.MQTTv5,
                         reconnect_on_failure=False)
    client.on_connect = lambda c, u, flags, rc, props: events.setdefault("connack", rc)
    client.on_subscribe = lambda c, u, mid, codes, props: events.setdefault("suback", codes)
    client.on_disconnect = lambda c, u, flags, rc, props: events.setdefault("disconnect", rc)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    client.connect(*b.addr, clean_start=False, properties=props)

    def loop_until(key):
        for _ in range(200):
            if key in events:
                return events[key]
            client.loop(timeout=0.05)
        raise AssertionError(f"no {key}: {events}")

    loop_until("connack")
    client.subscribe("kick/#", qos=1)
    loop_until("suback")
    assert api(b, "POST", "/api/v1/clients/kick-me/kick?will=sideways")[0] == 400
    assert ok(b, "POST", "/api/v1/clients/kick-me/kick?will=skip") == {"clientid": "kick-me", "kicked": True}
    assert loop_until("disconnect").value == 0x98
    assert api(b, "POST", "/api/v1/clients/kick-me/kick")[0] == 404
    publish_all(b.addr, "kick-pub", [("kick/a", b"1"), ("kick/b", b"2")])
    view = ok(b, "GET", "/api/v1/clients/kick-me")
    assert (view["connected"], view["mqueue_len"]) == (False, 2)
    s = RawSession(b.addr, "kick-me", V5)
    assert s.connect(clean=False, expiry=3600).session_present
    assert [s.next_publish().topic for _ in range(2)] == ["kick/a", "kick/b"]
    s.close()


def test_a_change_sent_from_another_sites_page_is_refused_and_changes_nothing(start_broker):
    # A browser holding the admin's Basic credentials sends them with a form another site
    # posts: the Origin (or Sec-Fetch-Site) header is what tells such a request apart.
    b = start_broker(*ANON)
    offline_session(b, "csrf-1", "c/#")
    host, port = b.admin
    for foreign in ({"Origin": "http://evil.example"}, {"Origin": "null"},
                    {"Origin": f"http://{host}:{port + 1}"}, {"Sec-Fetch-Site": "cross-site"}):
        status, value = api(b, "DELETE", "/api/v1/clients/csrf-1", headers=foreign)
        assert status == 403, f"{foreign}: {status} {value}"
        status, _ = api(b, "POST", "/api/v1/publish", {"topic": "c/x", "payload": "forged", "qos": 1}, headers=foreign)
        assert status == 403, foreign
    # Reading stays open to any page, and the session and its (empty) queue are untouched.
    assert ok(b, "GET", "/api/v1/clients/csrf-1")["mqueue_len"] == 0
    # The dashboard's own requests carry its origin and pass.
    same = {"Origin": f"http://{host}:{port}", "Sec-Fetch-Site": "same-origin"}
    status, value = api(b, "DELETE", "/api/v1/clients/csrf-1", headers=same)
    assert (status, value["deleted"]) == (200, True), value
    assert reconnect_present(b, "csrf-1") is False


def test_bulk_delete_takes_the_disconnected_sessions_the_filter_names(start_broker):
    b = start_broker(*ANON)
    for n in range(6):
        offline_session(b, f"bulk-a-{n}")
    for n in range(2):
        # mosquitto_sub -c: a 3.1.1 Clean Session 0 session, left when it exits (-E).
        subprocess.run(["mosquitto_sub", "-h", b.host, "-p", str(b.port), "-c", "-q", "1", "-i", f"keep-{n}",
                        "-t", "bulk/#", "-E"], check=True, timeout=30, capture_output=True)
    online = Conn(*b.addr, version=V311)
    online.connect("bulk-a-online", clean=False)
    assert api(b, "DELETE", "/api/v1/clients?like_clientid=bulk-a")[0] == 400
    assert ok(b, "DELETE", "/api/v1/clients?conn_state=disconnected&like_clientid=bulk-a") == {"deleted": 6}
    left = {c["clientid"]: c["connected"] for c in ok(b, "GET", "/api/v1/clients?limit=1000")["data"]}
    assert left == {"keep-0": False, "keep-1": False, "bulk-a-online": True}
    online.ping()
    online.close()
    assert reconnect_present(b, "keep-0") is True


def test_settings_are_checked_applied_on_every_core_and_survive_a_restart(start_broker, tmp_path):
    data = str(tmp_path / "data")
    b = start_broker(*ANON, data_dir=data)
    settings = ok(b, "GET", "/api/v1/settings")
    assert settings["max_queued_messages"] == 1000 and settings["queue_overflow"] == "drop-oldest"
    for bad, key in [({"max_queued_messages": 0}, "max_queued_messages"),
                     ({"queue_overflow": "sometimes"}, "queue_overflow"),
                     ({"queue_qos0": True, "max_sessions": 3}, "max_sessions")]:
        status, body = api(b, "PUT", "/api/v1/settings", bad)
        assert status == 400 and key in body["error"], (bad, status, body)
    assert ok(b, "GET", "/api/v1/settings") == settings
    change = {"max_queued_messages": 3, "queue_overflow": "refuse-newest", "max_session_expiry": 600}
    assert ok(b, "PUT", "/api/v1/settings", change) == {**settings, **change}
    # One offline session on each core: the new queue limit holds on both.
    ids = [ids_owned_by(core, 2, "set")[0] for core in range(2)]
    for cid in ids:
        offline_session(b, cid, "set/#")
    publish_all(b.addr, "set-pub", [(f"set/{n}", b"x") for n in range(5)])
    for cid in ids:
        view = ok(b, "GET", f"/api/v1/clients/{cid}")
        assert (view["mqueue_len"], view["mqueue_max"]) == (3, 3), view
        assert [m["topic"] for m in ok(b, "GET", f"/api/v1/clients/{cid}/queue")["data"]] == \
            ["set/0", "set/1", "set/2"]  # refuse-newest kept the first three
        assert view["session_expiry_interval"] == 600
    # A v5 client asking for more is told the new cap in its CONNACK.
    s = RawSession(b.addr, "set-v5", V5)
    assert s.connect(clean=True, expiry=3600).props[SESSION_EXPIRY_INTERVAL] == 600
    s.close()
    b.assert_clean_exit()
    with open(os.path.join(data, "settings.json")) as f:
        assert json.load(f) == change
    b = start_broker(*ANON, data_dir=data)
    assert ok(b, "GET", "/api/v1/settings") == {**settings, **change}
    offline_session(b, "set-after", "set/#")
    publish_all(b.addr, "set-pub", [(f"set/{n}", b"x") for n in range(5)])
    assert ok(b, "GET", "/api/v1/clients/set-after")["mqueue_len"] == 3


def test_subscriptions_added_by_the_api_take_a_publish_made_right_after(start_broker):
    b = start_broker(*ANON)
    # The subscriber on one core, the publisher owned by the other: routing crosses cores.
    sub_id = ids_owned_by(0, 2, "apisub")[0]
    pub_id = ids_owned_by(1, 2, "apipub")[0]
    online = RawSession(b.addr, sub_id, V5)
    online.connect(clean=False, expiry=3600)
    added = ok(b, "POST", f"/api/v1/clients/{sub_id}/subscriptions", {"topic": "api/+/t", "qos": 1})
    assert added == {"clientid": sub_id, "topic": "api/+/t", "qos": 1}
    publish_all(b.addr, pub_id, [("api/x/t", b"right after")])
    got = online.next_publish()
    assert (got.topic, got.payload, got.qos) == ("api/x/t", b"right after", 1)
    # Offline: the subscription queues, and is listed with its options.
    offline_id = ids_owned_by(0, 2, "apioff")[0]
    offline_session(b, offline_id)
    ok(b, "POST", f"/api/v1/clients/{offline_id}/subscriptions", {"topic": "api/#", "qos": 2, "nl": True, "rh": 2})
    subs = ok(b, "GET", f"/api/v1/clients/{offline_id}/subscriptions")["data"]
    assert subs == [{"topic": "api/#", "qos": 2, "nl": True, "rap": False, "rh": 2, "identifier": None}]
    publish_all(b.addr, pub_id, [("api/y", b"queued")], qos=2)
    assert [(m["topic"], m["qos"]) for m in ok(b, "GET", f"/api/v1/clients/{offline_id}/queue")["data"]] == \
        [("api/y", 2)]
    # Removed (the filter percent-encoded), it takes nothing more.
    quoted = urllib.parse.quote("api/#", safe="")
    assert ok(b, "DELETE", f"/api/v1/clients/{offline_id}/subscriptions/{quoted}")["unsubscribed"] is True
    assert api(b, "DELETE", f"/api/v1/clients/{offline_id}/subscriptions/{quoted}")[0] == 404
    publish_all(b.addr, pub_id, [("api/z", b"not queued")])
    assert ok(b, "GET", f"/api/v1/clients/{offline_id}")["mqueue_len"] == 1
    assert ok(b, "GET", f"/api/v1/clients/{offline_id}/subscriptions")["data"] == []
    # Survives a reconnect as the client's own subscription would.
    s = RawSession(b.addr, offline_id, V5)
    s.connect(clean=False, expiry=3600)
    assert s.next_publish().topic == "api/y"
    s.close()
    for bad, status in [({"qos": 1}, 400), ({"topic": "a/#/b"}, 400), ({"topic": "a", "qos": 3}, 400)]:
        assert api(b, "POST", f"/api/v1/clients/{sub_id}/subscriptions", bad)[0] == status, bad
    assert api(b, "POST", "/api/v1/clients/nobody/subscriptions", {"topic": "a"})[0] == 404
    online.close()


def test_publish_reaches_subscribers_on_both_cores(start_broker):
    b = start_broker(*ANON)
    subs = []
    for core in range(2):
        s = RawSession(b.addr, ids_owned_by(core, 2, "psub")[0], V5)
        s.connect(clean=True)
        s.subscribe("pub/#", qos=1)
        subs.append(s)
    assert ok(b, "POST", "/api/v1/publish", {"topic": "pub/a", "payload": "hello", "qos": 1})["published"]
    raw = base64.b64encode(b"\x00\xffbin").decode()
    ok(b, "POST", "/api/v1/publish", {"topic": "pub/b", "payload": raw, "payload_encoding": "base64",
                                      "qos": 2, "retain": True})
    for s in subs:
        first, second = s.next_publish(), s.next_publish()
        assert (first.topic, first.payload, first.qos) == ("pub/a", b"hello", 1)
        assert (second.topic, second.payload) == ("pub/b", b"\x00\xffbin")
        s.close()
    late = RawSession(b.addr, "psub-late", V5)
    late.connect(clean=True)
    late.subscribe("pub/b", qos=1)
    got = late.next_publish()
    assert (got.topic, got.payload, got.retain) == ("pub/b", b"\x00\xffbin", True)
    late.close()
    for bad, key in [({"topic": "a/+"}, "topic"), ({"topic": "$SYS/x"}, "topic"), ({}, "topic"),
                     ({"topic": "a", "qos": 5}, "qos"), ({"topic": "a", "payload": "*", "payload_encoding": "base64"},
                                                         "payload"),
                     ({"topic": "a", "payload_encoding": "hex"}, "payload_encoding")]:
        status, body = api(b, "POST", "/api/v1/publish", bad)
        assert status == 400 and body["error"].startswith(key), (bad, status, body)


def test_cursor_paging_returns_every_session_exactly_once_across_cores(start_broker):
    b = start_broker(*ANON)
    made = {f"page-{n:05d}" for n in range(2000)}
    for cid in made:
        with Conn(*b.addr, version=V311) as c:
            c.connect(cid, clean=False)
            c.send(b"\xe0\x00")
    seen, cores, cursor, pages = [], set(), None, 0
    while True:
        path = "/api/v1/clients?limit=97" + (f"&cursor={cursor}" if cursor else "")
        page = ok(b, "GET", path)
        assert len(page["data"]) <= 97
        seen += [c["clientid"] for c in page["data"]]
        cores |= {c["owner_core"] for c in page["data"]}
        pages += 1
        cursor = page["meta"]["cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 2000 and set(seen) == made
    assert cores == {0, 1} and pages >= 2000 // 97
    filtered = ok(b, "GET", "/api/v1/clients?like_clientid=page-0199&limit=10")
    assert sorted(c["clientid"] for c in filtered["data"]) == [f"page-0199{n}" for n in range(10)]
    assert filtered["meta"]["cursor"] is None
    assert api(b, "GET", "/api/v1/clients?limit=0")[0] == 400
    assert api(b, "GET", "/api/v1/clients?cursor=nonsense")[0] == 400


def test_metrics_read_by_prometheus_clients_parser(start_broker):
    b = start_broker(*ANON)
    offline_session(b, "metrics-off", "m/#")
    publish_all(b.addr, "metrics-pub", [("m/1", b"x"), ("m/2", b"y")])
    text = ok(b, "GET", "/metrics")
    families = {f.name: f for f in text_string_to_metric_families(text)}

    def value(name: str) -> float:
        return sum(s.value for s in families[name].samples if s.name in (name, name + "_total"))

    for name in ("berth_connections", "berth_sessions_offline", "berth_subscriptions", "berth_queued_messages"):
        assert families[name].type == "gauge", name
    # prometheus_client names a counter's family without `_total`.
    assert families["berth_messages_received"].type == "counter"
    assert value("berth_sessions_offline") == 1
    assert value("berth_queued_messages") == 2
    assert value("berth_messages_received") >= 2


def test_api_keys_are_required_when_a_keys_file_is_given(start_broker, tmp_path):
    keys = tmp_path / "admin-keys"
    keys.write_text("# operators\nops:s3cret\n")
    b = start_broker("--admin-listen", "127.0.0.1:0", "--admin-keys-file", str(keys))
    for auth in (None, ("ops", "wrong"), ("nobody", "s3cret")):
        status, body = api(b, "GET", "/api/v1/clients", auth=auth)
        assert status == 401 and "error" in body, (auth, status, body)
    assert api(b, "GET", "/metrics")[0] == 401
    assert api(b, "PUT", "/api/v1/settings", {"queue_qos0": True})[0] == 401
    status, body = api(b, "GET", "/api/v1/clients", auth=("ops", "s3cret"))
    assert status == 200 and body["data"] == []


def test_anonymous_admin_on_a_public_address_refuses_to_start(tmp_path):
    config = tmp_path / "berth.toml"
    config.write_text('admin_listen = "0.0.0.0:0"\nadmin_allow_anonymous = true\n')
    with pytest.raises(BrokerDied) as died:
        Broker.start("--config", str(config), workdir=str(tmp_path))
    stderr = str(died.value).split("--- broker stderr (tail) ---")[1]
    assert "config key `admin_allow_anonymous`" in stderr and "loopback" in stderr, stderr
    # The same as a flag is named as the flag.
    with pytest.raises(BrokerDied) as died:
        Broker.start("--admin-listen", "0.0.0.0:0", "--admin-allow-anonymous", "true", workdir=str(tmp_path))
    assert "flag --admin-allow-anonymous" in str(died.value).split("--- broker stderr (tail) ---")[1]


def test_subscriptions_added_by_the_api_meet_the_limits_a_clients_would(start_broker):
    b = start_broker(*ANON, "--max-topic-levels", "3")
    offline_session(b, "api-limits")
    path = "/api/v1/clients/api-limits/subscriptions"
    status, value = api(b, "POST", path, {"topic": "a/b/c/d", "qos": 1})
    assert status == 400 and "0x8F" in value["error"], (status, value)
    # A $share/<group>/ prefix is not counted, as for a client's SUBSCRIBE.
    assert ok(b, "POST", path, {"topic": "$share/g/a/b/c", "qos": 1})["qos"] == 1
    assert ok(b, "POST", path, {"topic": "a/b/c", "qos": 0})["qos"] == 0
    status, value = api(b, "POST", path, {"topic": "$share/g/x", "nl": True})
    assert status == 400 and "MQTT-3.8.3-4" in value["error"], (status, value)
    status, value = api(b, "POST", path, {"topic": "x" * 65536})
    assert status == 400 and "65535" in value["error"], (status, value)
    subs = sorted(s["topic"] for s in ok(b, "GET", path)["data"])
    assert subs == ["$share/g/a/b/c", "a/b/c"], subs
    # The refusal is counted where a client's is.
    families = {f.name: f for f in text_string_to_metric_families(api(b, "GET", "/metrics")[1])}
    deep = families["berth_subscriptions_too_deep"]
    assert sum(s.value for s in deep.samples if s.name.endswith("_total")) == 1, deep.samples
