"""MQTT.js in a real browser: headless Chromium (Debian package `chromium`) driven by
playwright-core (browser/package.json) loads browser/page.html, which connects over ws:// and
wss://, subscribes, publishes, and resumes a persistent session while this test publishes
from Python (browser/run.mjs says what it checks). For wss the browser trusts the test
server's certificate through playwright's `ignoreHTTPSErrors` context option (not Chromium's
--ignore-certificate-errors flag). tests/run-all.sh installs Chromium and the package."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from clients import Paho
from mqttwire import V311, ids_owned_by
from pki import listeners_config

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "browser")
SCRIPT = os.path.join(HERE, "run.mjs")
BUNDLE = os.path.join(HERE, "..", "mqttjs", "node_modules", "mqtt", "dist", "mqtt.min.js")
NODE = shutil.which("node")
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(autouse=True)
def _need_browser():
    missing = [what for what, ok in [
        ("node", NODE), ("chromium", os.access(CHROMIUM, os.X_OK)),
        ("playwright-core (npm ci in tests/interop/browser)", os.path.isdir(os.path.join(HERE, "node_modules", "playwright-core"))),
        ("MQTT.js (npm ci in tests/interop/mqttjs)", os.path.isfile(BUNDLE)),
    ] if not ok]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: tests/run-all.sh installs them")


def publish_offline(broker, topic: str) -> None:
    sender = Paho(f"browser-sender-{topic.replace('/', '-')}", V311)
    assert sender.connect(broker.addr)[1] == 0
    for n in (1, 2):
        info = sender.client.publish(topic, f"offline {n}".encode(), qos=1)
        sender.loop_until(info.is_published, 5, f"PUBACK {n}")
    sender.disconnect()


def test_mqttjs_in_chromium_over_ws_and_wss(start_broker, pki):
    broker = start_broker("--config", listeners_config(pki, "ws", "wss"))
    (ws,), (wss,) = broker.listeners["ws"], broker.listeners["wss"]
    targets = {"ws": f"ws://127.0.0.1:{ws[1]}/mqtt", "wss": f"wss://localhost:{wss[1]}/mqtt"}
    ids = {}
    for kind in targets:
        (pub,) = ids_owned_by(0, 2, f"browser-{kind}-pub")
        sub, resume = ids_owned_by(1, 2, f"browser-{kind}-sub", 2)
        ids[kind] = {"pub": pub, "sub": sub, "resume": resume}
    env = dict(os.environ, BROWSER_IDS=json.dumps(ids), CHROMIUM=CHROMIUM)
    proc = subprocess.Popen([NODE, SCRIPT, *(f"{k}={u}" for k, u in targets.items())], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, bufsize=1)
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line.rstrip("\n"))
            if line.startswith("away "):
                kind = line.split()[1]
                publish_offline(broker, f"browser/{kind}/resume")
                proc.stdin.write(f"published {kind}\n")
                proc.stdin.flush()
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read()
    assert rc == 0, f"run.mjs failed ({rc}):\n" + "\n".join(seen) + "\n" + err
    assert seen == ["away ws", "ok ws", "away wss", "ok wss"], seen
    # Every browser connection came in over the WebSocket listeners.
    log = broker.stderr_text()
    for kind, (host, port) in (("ws", ws), ("wss", wss)):
        assert log.count(f"listener={host}:{port}") >= 4, f"{kind} listener unused:\n{log}"
