"""The dashboard in a real browser: headless Chromium (Debian's `chromium`) driven by npm
`playwright-core` (dashboard.mjs), against the real broker with sessions made by real clients
(paho-mqtt, mosquitto_pub).

An offline session with 3 queued QoS 1 messages appears in the sessions table with queue length
3; the Clear button, its confirmation accepted, removes it, and the next CONNECT of that client
gets Session Present 0. Screenshots go to the test's temporary directory, or to the directory
BERTH_DASHBOARD_SHOTS names (`BERTH_DASHBOARD_SHOTS=docs` renews the README's).

Skipped where Chromium or tests/dashboard/node_modules is missing, unless
BERTH_REQUIRE_BROWSER=1 (tests/run-all.sh installs both and sets it).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from clients import Paho
from mqttwire import V311

HERE = os.path.dirname(os.path.abspath(__file__))
CHROMIUM = os.environ.get("BERTH_CHROMIUM", "/usr/bin/chromium")
RUNNER = os.path.join(HERE, "dashboard.mjs")
ANONYMOUS = ("--admin-listen", "127.0.0.1:0", "--admin-allow-anonymous", "true")


@pytest.fixture(autouse=True)
def browser_present():
    missing = [what for what, ok in [
        (CHROMIUM, os.access(CHROMIUM, os.X_OK)),
        ("node", shutil.which("node") is not None),
        ("tests/dashboard/node_modules (npm ci)", os.path.isdir(os.path.join(HERE, "node_modules", "playwright-core"))),
    ] if not ok]
    if missing:
        if os.environ.get("BERTH_REQUIRE_BROWSER") == "1":
            pytest.fail(f"the dashboard test needs {', '.join(missing)}")
        pytest.skip(f"no {', '.join(missing)}")


def base_url(broker) -> str:
    assert broker.admin, f"no admin API line\n{broker.describe()}"
    host, port = broker.admin
    return f"http://{host}:{port}"


def get(url: str, auth: str | None = None):
    """(status, headers, body) of a GET; HTTP errors are answers too."""
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return reply.status, reply.headers, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def persistent_session(broker, client_id: str, topic_filter: str) -> None:
    """A v3.1.1 clean-session-0 session subscribed at QoS 1, left offline."""
    client = Paho(client_id, V311, clean=False)
    client.connect(broker.addr)
    subscribed = []
    client.client.on_subscribe = lambda c, u, mid, codes, props: subscribed.append(codes)
    client.client.subscribe(topic_filter, qos=1)
    client.loop_until(lambda: subscribed, 5, "SUBACK")
    client.disconnect()


def publish_qos1(broker, topic: str, count: int) -> None:
    host, port = broker.addr
    lines = "".join(f"message {i}\n" for i in range(count))
    subprocess.run(["mosquitto_pub", "-h", host, "-p", str(port), "-q", "1", "-t", topic, "-l"],
                   input=lines.encode(), check=True, timeout=10)


def wait_for_queue(url: str, client_id: str, length: int, auth: str | None = None) -> None:
    deadline = time.monotonic() + 10
    while True:
        status, _, body = get(f"{url}/api/v1/clients/{client_id}", auth)
        seen = json.loads(body).get("mqueue_len") if status == 200 else status
        if seen == length:
            return
        assert time.monotonic() < deadline, f"{client_id}: queue length {seen}, not {length}"
        time.sleep(0.05)


def run_dashboard(spec: dict) -> dict:
    done = subprocess.run(["node", RUNNER, json.dumps(spec)], cwd=HERE, capture_output=True,
                          text=True, timeout=90)
    lines = done.stdout.strip().splitlines()
    seen = json.loads(lines[-1]) if lines else {}
    assert done.returncode == 0, f"dashboard run failed: {done.stderr}\nsaw: {seen}"
    return seen


def shots_dir(tmp_path) -> str:
    shots = os.environ.get("BERTH_DASHBOARD_SHOTS") or str(tmp_path / "shots")
    os.makedirs(shots, exist_ok=True)
    return os.path.abspath(shots)


def test_an_offline_session_is_listed_and_cleared_in_the_browser(start_broker, tmp_path):
    broker = start_broker(*ANONYMOUS)
    url = base_url(broker)
    status, headers, body = get(f"{url}/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert b"/dashboard/app.js" in body

    target, online = "dash-offline-1", "sensor-17"
    persistent_session(broker, target, "dash/target/#")
    fleet = [f"fleet-{i:02}" for i in range(8)]  # 12 sessions in all: two pages of 10
    for other in ("dash-other-1", "dash-other-2", *fleet):
        persistent_session(broker, other, f"dash/{other}/#")
    publish_qos1(broker, "dash/target/reading", 3)
    publish_qos1(broker, "dash/dash-other-2/reading", 1)
    wait_for_queue(url, target, 3)
    bystander = Paho(online, V311, clean=False)
    bystander.connect(broker.addr)

    seen = run_dashboard({"url": url, "mode": "full", "target": target, "queued": 3,
                          "online": online, "bulk": "dash-other", "shots": shots_dir(tmp_path)})

    assert seen["targetQueue"].startswith("3 /"), seen
    assert [d["accepted"] for d in seen["dialogs"]] == [False, True, True], seen
    assert target in seen["dialogs"][1]["message"], seen
    assert "dash-other" in seen["dialogs"][2]["message"], seen
    assert seen["bulkListed"] == 2 and "Cleared 2 " in seen["bulkStatus"], seen
    first, second = seen["pages"]
    assert len(first) == 10 and len(second) == 2 and seen["nextDisabled"], seen
    assert sorted(first + second) == sorted([target, online, "dash-other-1", "dash-other-2", *fleet]), seen
    assert sorted(seen["remaining"]) == sorted([online, *fleet]), seen
    if get(f"{url}/api/v1/settings")[0] == 200:  # where this berth has the settings route
        saved = seen["settingSaved"]
        assert json.loads(get(f"{url}/api/v1/settings")[2])[saved["name"]] == saved["value"], seen
    for gone in (target, "dash-other-1", "dash-other-2"):
        assert get(f"{url}/api/v1/clients/{gone}")[0] == 404, gone
    assert get(f"{url}/api/v1/clients/{online}")[0] == 200

    again = Paho(target, V311, clean=False)
    flags, reason, _ = again.connect(broker.addr)
    assert not reason.is_failure
    assert flags.session_present is False, "the cleared session came back"
    again.disconnect()
    bystander.disconnect()


def test_the_page_needs_a_key_and_takes_basic_credentials(start_broker, tmp_path):
    keys = tmp_path / "admin-keys"
    keys.write_text("ops:s3cret-key\n")
    broker = start_broker("--admin-listen", "127.0.0.1:0", "--admin-keys-file", str(keys))
    url = base_url(broker)
    for path in ("/", "/dashboard", "/dashboard/app.js"):
        status, headers, _ = get(f"{url}{path}")
        assert status == 401, path
        assert headers["WWW-Authenticate"].startswith("Basic"), path
    assert get(f"{url}/", "ops:wrong")[0] == 401
    assert get(f"{url}/", "ops:s3cret-key")[0] == 200

    online = "sensor-auth"
    client = Paho(online, V311, clean=False)
    client.connect(broker.addr)
    seen = run_dashboard({"url": url, "mode": "auth", "online": online,
                          "credentials": {"username": "ops", "password": "s3cret-key"}})
    assert seen["listed"] == 1, seen
    client.disconnect()

