#!/usr/bin/env bash
# The one command that runs every berth test on a fresh machine (Debian, Rust installed).
# Installs what the tests need when it is missing: mosquitto-clients (apt), paho-mqtt and
# pytest (pip). Runs the Rust tests (unit, codec corpus replay, rumqttc black box) and the
# Python black-box suite (paho-mqtt, mosquitto_pub/sub, raw bytes) against the real binary.
set -euo pipefail
cd "$(dirname "$0")/.."

section() { printf '\n==== %s ====\n' "$*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

section "test dependencies"
if ! command -v mosquitto_sub >/dev/null 2>&1 || ! command -v mosquitto_pub >/dev/null 2>&1; then
    echo "installing mosquitto-clients"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto-clients
fi
if ! python3 -c 'import paho.mqtt, pytest; assert int(paho.mqtt.__version__.split(".")[0]) >= 2' >/dev/null 2>&1; then
    echo "installing paho-mqtt and pytest"
    python3 -m pip install -q --disable-pip-version-check 'paho-mqtt>=2,<3' pytest
fi
mosquitto_sub --help 2>/dev/null | head -1 || true
python3 -c 'import paho.mqtt; print("paho-mqtt", paho.mqtt.__version__)'

section "build"
cargo build --workspace --all-targets

section "rust tests"
cargo test --workspace

section "python black-box tests"
BERTH_BIN="$(pwd)/target/debug/berth" python3 -m pytest -q tests/python
