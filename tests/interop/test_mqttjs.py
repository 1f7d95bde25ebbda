"""Every scenario of scenarios.txt with MQTT.js (npm package `mqtt`, pinned in
mqttjs/package.json), protocol versions 4 (3.1.1) and 5. Each runs mqttjs/scenarios.mjs in
Node against a fresh broker, over plain TCP and over WebSocket (`ws://`, `--ws-listen`); a
few also over TLS (`mqtts://`) and secure WebSocket (`wss://`), MQTT.js checking the server's
certificate against the test CA (its `ca` option). tests/run-all.sh installs Node and the
package when missing."""

import json
import os
import shutil
import subprocess

import pytest

from pki import listeners_config
from scenarios import BROKER_FLAGS, all_ids, scenario_names

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mqttjs")
SCRIPT = os.path.join(HERE, "scenarios.mjs")
NODE = shutil.which("node")


@pytest.fixture(autouse=True)
def _need_mqttjs():
    if NODE is None or not os.path.isdir(os.path.join(HERE, "node_modules", "mqtt")):
        pytest.fail("node or MQTT.js missing: tests/run-all.sh installs them (npm ci in tests/interop/mqttjs)")


def test_every_listed_scenario_is_implemented():
    out = subprocess.run([NODE, SCRIPT, "--list"], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == scenario_names()


@pytest.mark.parametrize("scenario", scenario_names())
@pytest.mark.parametrize("version", [4, 5], ids=["v311", "v5"])
def test_scenario(start_broker, version, scenario):
    b = start_broker(*BROKER_FLAGS.get(scenario, []))
    env = dict(os.environ, INTEROP_IDS=json.dumps(all_ids(f"mqttjs-v{version}-{scenario}")))
    proc = subprocess.run([NODE, SCRIPT, scenario, str(version), b.host, str(b.port)], env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"MQTT.js {scenario} v{version}:\n{proc.stdout}{proc.stderr}"
    assert f"ok: mqttjs-v{version}-{scenario}" in proc.stdout


@pytest.mark.parametrize("scenario", scenario_names())
@pytest.mark.parametrize("version", [4, 5], ids=["v311", "v5"])
def test_scenario_over_websocket(start_broker, version, scenario):
    b = start_broker(*BROKER_FLAGS.get(scenario, []), "--ws-listen", "127.0.0.1:0")
    host, port = b.ws
    env = dict(os.environ, INTEROP_IDS=json.dumps(all_ids(f"mqttjs-ws-v{version}-{scenario}")))
    proc = subprocess.run([NODE, SCRIPT, scenario, str(version), host, str(port), "ws", "/mqtt"],
                          env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, f"MQTT.js over ws {scenario} v{version}:\n{proc.stdout}{proc.stderr}"
    assert f"ok: mqttjs-v{version}-{scenario}" in proc.stdout
    # Every client of the scenario came in over the WebSocket listener.
    log = b.stderr_text()
    assert f"listener={host}:{port}" in log and f"listener={b.host}:{b.port}" not in log, log
    assert "WebSocket upgrade failed" not in log


# Those that keep or hand over a session: over TLS, whose state travels with a handed-off fd.
SECURE_SCENARIOS = ["qos2", "resume", "takeover"]


@pytest.mark.parametrize("scenario", SECURE_SCENARIOS)
@pytest.mark.parametrize("version", [4, 5], ids=["v311", "v5"])
@pytest.mark.parametrize("transport", ["tls", "wss"])
def test_scenario_over_tls_and_wss(start_broker, pki, transport, version, scenario):
    b = start_broker(*BROKER_FLAGS.get(scenario, []), "--config", listeners_config(pki, transport))
    [(host, port)] = b.listeners[transport]
    tag = f"mqttjs-{transport}-v{version}-{scenario}"
    env = dict(os.environ, INTEROP_IDS=json.dumps(all_ids(tag)), INTEROP_CA=pki.path("ca.pem"))
    args = [transport, "/mqtt"] if transport == "wss" else [transport]
    proc = subprocess.run([NODE, SCRIPT, scenario, str(version), host, str(port), *args], env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"MQTT.js over {transport} {scenario} v{version}:\n{proc.stdout}{proc.stderr}"
    assert f"ok: mqttjs-v{version}-{scenario}" in proc.stdout
    log = b.stderr_text()
    assert f"listener={host}:{port}" in log and f"listener={b.host}:{b.port}" not in log, log
