"""Fixtures: a fresh berth broker per test (2 cores, ephemeral port, temporary data dir).

Teardown sends SIGTERM and asserts exit status 0, so a broker that crashed or hung during any
test fails that test. The broker's stderr is printed in teardown; pytest shows it only when the
test fails.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from berthproc import Broker, berth_bin, stop_cleanly
from pki import Pki


def pytest_sessionstart(session):
    path = berth_bin()
    if not os.access(path, os.X_OK):
        raise pytest.UsageError(f"berth binary not found at {path}: build it (cargo build) or set BERTH_BIN")


@pytest.fixture
def start_broker(tmp_path):
    """Factory: start_broker(*extra_flags, cores=2) -> running Broker; all are stopped cleanly."""
    started: list[Broker] = []

    def start(*extra: str, cores: int = 2, **kw) -> Broker:
        workdir = tmp_path / f"broker{len(started)}"
        workdir.mkdir()
        b = Broker.start(*extra, cores=cores, workdir=str(workdir), **kw)
        started.append(b)
        return b

    yield start
    stop_cleanly(started)


@pytest.fixture
def broker(start_broker) -> Broker:
    return start_broker()


@pytest.fixture
def pki(tmp_path) -> Pki:
    """A fresh CA, server and client certificates in the test's directory (pki.py)."""
    return Pki(str(tmp_path))


@pytest.fixture
def small_fs(tmp_path):
    """Factory: small_fs(mib) -> the path of a tmpfs of that size, unmounted at the end (for
    data directories on a nearly full disk). Needs root, as CI runs; skipped otherwise."""
    mounted = []

    def mount(mib: int = 32) -> str:
        if os.geteuid() != 0:
            pytest.skip("mounting a small filesystem needs root")
        path = tmp_path / f"fs{len(mounted)}"
        path.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mib}m", "tmpfs", str(path)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(path)
        return str(path)

    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)
