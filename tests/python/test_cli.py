"""The process around the protocol: config file, signals, starting as an unprivileged user."""

import os
import shutil
import signal
import subprocess
import tempfile

import pytest

from berthproc import Broker, berth_bin
from mqttwire import V5, V311, Conn, disconnect_reason


def test_config_unknown_key_is_rejected(tmp_path):
    config = tmp_path / "berth.toml"
    config.write_text('listen = "127.0.0.1:0"\ncores = 1\nlisten_backlog_typo = 7\n')
    proc = subprocess.run([berth_bin(), "--config", str(config), "--data-dir", str(tmp_path)],
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    stderr = proc.stderr.decode(errors="replace")
    assert proc.returncode != 0, f"started with an unknown config key; stdout {proc.stdout!r}"
    assert b"listening" not in proc.stdout, proc.stdout
    assert "listen_backlog_typo" in stderr, f"stderr does not name the key:\n{stderr}"
    assert str(config) in stderr, f"stderr does not name the file:\n{stderr}"


def test_config_file_sets_every_key(tmp_path):
    """Every flag has a config key; the file alone starts a working 1-core broker."""
    data = tmp_path / "data"
    data.mkdir()
    config = tmp_path / "berth.toml"
    config.write_text(f'listen = "127.0.0.1:0"\ncores = 1\ndata_dir = "{data}"\nlog = "info"\n'
                      f'connect_timeout = 5\nmax_packet_size = 4096\n')
    broker = Broker([berth_bin(), "--config", str(config)], workdir=str(tmp_path))
    try:
        with Conn(*broker.addr) as c:
            ack = c.connect("configured")
            assert ack.props.get(0x27) == 4096, f"max_packet_size not applied: {ack!r}"
            assert ack.user_properties.get("berth-shard") == "0", ack
            assert ack.user_properties.get("berth-accepted-on") == "0", ack
            c.ping()
    finally:
        print(broker.describe())
        broker.assert_clean_exit()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_shuts_down_cleanly(start_broker, sig):
    """SIGTERM/SIGINT: v5 clients get DISCONNECT 0x8B (Server shutting down), 3.1.1 clients are
    closed, and the broker exits with status 0."""
    broker = start_broker()
    v5 = [Conn(*broker.addr) for _ in range(4)]
    v311 = [Conn(*broker.addr, version=V311) for _ in range(4)]
    for n, c in enumerate(v5 + v311):
        c.connect(f"shutdown-{n}")
    broker.proc.send_signal(sig)
    try:
        for c in v5:
            packets = c.read_until_closed(timeout=10)
            assert [disconnect_reason(p) for p in packets] == [0x8B], packets
        for c in v311:
            assert c.read_until_closed(timeout=10) == []
    finally:
        rc = broker.stop(None)  # already signalled: a second signal could mean "hurry up"
    assert rc == 0, f"exit status {rc} after {sig.name}\n{broker.describe()}"
    assert "panicked" not in broker.stderr_text(), broker.describe()


MEMLOCK = 8 * 1024 * 1024
NOBODY = 65534


def test_starts_unprivileged_with_8_mib_memlock():
    """io_uring ignores memlock for root, so a root-only test run would hide a broker that cannot
    start for ordinary users. Start it as uid 65534 with memlock capped at 8 MiB."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to uid 65534 (run the suite as root, as CI does)")
    for tool in ("prlimit", "setpriv"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} (util-linux) is missing; tests/run-all.sh should have installed it")
    # A copy of the binary in a directory anyone can enter: the checkout and pytest's tmp_path
    # (under a 0700 directory) may not be.
    root = tempfile.mkdtemp(prefix="berth-unprivileged-")
    os.chmod(root, 0o755)
    binary = os.path.join(root, "berth")
    shutil.copy2(berth_bin(), binary)
    data = os.path.join(root, "data")
    os.mkdir(data)
    os.chown(data, NOBODY, NOBODY)
    wrapper = ["prlimit", f"--memlock={MEMLOCK}:{MEMLOCK}",
               "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    try:
        broker = Broker.start(binary=binary, wrapper=wrapper, workdir=root, data_dir=data)
        try:
            for version in (V311, V5):
                with Conn(*broker.addr, version=version) as c:
                    c.connect(f"unprivileged-{version}")
                    c.ping()
        finally:
            print(broker.describe())
            broker.assert_clean_exit()
    finally:
        shutil.rmtree(root, ignore_errors=True)
