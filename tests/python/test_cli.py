"""The process around the protocol: config file, signals, starting as an unprivileged user."""

import os
import re
import shutil
import signal
import subprocess
import tempfile

import pytest

from berthproc import Broker, berth_bin
from clients import RawSession
from mqttwire import SESSION_EXPIRY_INTERVAL, V5, V311, Conn, disconnect_reason


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


def refused(*argv: str) -> str:
    """Runs berth with `argv`, which it must refuse before listening; returns its stderr."""
    proc = subprocess.run([berth_bin(), "--listen", "127.0.0.1:0", *argv], stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=30)
    stderr = proc.stderr.decode(errors="replace")
    assert proc.returncode == 2, f"{argv}: exit status {proc.returncode}\nstdout {proc.stdout!r}\n{stderr}"
    assert b"listening" not in proc.stdout, proc.stdout
    return stderr


def help_blocks() -> dict[str, str]:
    """`berth --help`, one block of text per flag."""
    out = subprocess.run([berth_bin(), "--help"], capture_output=True, text=True, timeout=30, check=True).stdout
    blocks: dict[str, str] = {}
    flag = None
    for line in out.splitlines():
        m = re.match(r"^\s+(?:-\w, )?--([a-z0-9-]+)", line)
        if m:
            flag = m.group(1)
            blocks[flag] = ""
        if flag:
            blocks[flag] += line + "\n"
    return blocks


def test_help_shows_the_default_of_every_flag_that_has_one():
    blocks = help_blocks()
    assert "max-session-expiry" in blocks and "connack-debug-properties" in blocks, list(blocks)
    no_default = {"help", "version", "config", "server-keep-alive", "password-file", "acl-file",
                  "admin-keys-file", "ban-file", "admin-tls-cert", "admin-tls-key"}
    missing = [f for f, text in blocks.items() if f not in no_default and "[default: " not in text]
    assert missing == [], f"--help shows no default for: {missing}"
    squeeze = {f: " ".join(text.split()) for f, text in blocks.items()}
    assert "[default: 127.0.0.1:1883]" in squeeze["listen"], squeeze["listen"]
    assert "[default: 7200]" in squeeze["max-session-expiry"], squeeze["max-session-expiry"]
    assert "4294967295" in squeeze["max-session-expiry"], "--help must say how to ask for no limit"
    assert "[default: false]" in squeeze["connack-debug-properties"], squeeze["connack-debug-properties"]
    assert "unpinned" in squeeze["cores"], "--help must say what more cores than CPUs does"


@pytest.mark.parametrize("argv,named", [
    (["--cores", "two"], "--cores"),
    (["--cores", "0"], "--cores"),
    (["--max-packet-size", "-1"], "--max-packet-size"),
    (["--fsync", "sometimes"], "--fsync"),
    (["--queue-qos0", "maybe"], "--queue-qos0"),
    (["--connack-debug-properties", "yes"], "--connack-debug-properties"),
    (["--log", "loud"], "--log"),
    (["--max-clientid-len", "5"], "--max-clientid-len"),
    (["--max-topic-levels", "0"], "--max-topic-levels"),
    (["--max-connections", "-5"], "--max-connections"),
    (["--no-such-flag"], "--no-such-flag"),
], ids=lambda v: v if isinstance(v, str) else " ".join(v))
def test_a_bad_flag_or_flag_value_is_refused_naming_the_flag(argv, named):
    stderr = refused(*argv)
    assert named in stderr, f"stderr does not name {named}:\n{stderr}"


@pytest.mark.parametrize("line,key", [
    ('cores = "two"', "cores"),
    ("cores = 0", "cores"),
    ("max_packet_size = 10", "max_packet_size"),
    ('fsync = "sometimes"', "fsync"),
    ("connack_debug_properties = 1", "connack_debug_properties"),
    ("max_session_expiry = 4294967296", "max_session_expiry"),
])
def test_a_bad_value_in_the_file_is_refused_naming_key_and_file(tmp_path, line, key):
    config = tmp_path / "berth.toml"
    config.write_text(f"cores = 1\n{line}\n")
    stderr = refused("--config", str(config), "--data-dir", str(tmp_path))
    assert key in stderr and str(config) in stderr, f"stderr does not name {key} and {config}:\n{stderr}"


def test_max_session_expiry_0_is_refused_and_says_what_never_expires_is(tmp_path):
    """0 means no limit in some brokers and no persistent sessions in others: berth refuses it
    and names the key (and the file) or the flag, and the value for "never expires"."""
    config = tmp_path / "berth.toml"
    config.write_text("cores = 1\nmax_session_expiry = 0\n")
    stderr = refused("--config", str(config), "--data-dir", str(tmp_path))
    assert "max_session_expiry" in stderr and str(config) in stderr and "4294967295" in stderr, stderr
    stderr = refused("--max-session-expiry", "0", "--data-dir", str(tmp_path))
    assert "--max-session-expiry" in stderr and "4294967295" in stderr, stderr


def test_max_session_expiry_never_expires_keeps_sessions(start_broker):
    """4294967295, the largest value allowed: sessions of both versions outlive their connection
    (the expiry deadline, now + 136 years, is computed at each disconnect without overflow)."""
    broker = start_broker("--max-session-expiry", "4294967295")
    for version, expiry in ((V5, 0xFFFFFFFF), (V311, None)):
        s = RawSession(broker.addr, f"never-expires-{version}", version)
        ack = s.connect(expiry=expiry)
        assert SESSION_EXPIRY_INTERVAL not in ack.props, f"asked for never, got {ack!r}"
        s.disconnect()
        assert s.connect(expiry=expiry).session_present, f"v{version}: the session did not persist"
        s.close()
    assert broker.alive(), broker.describe()


def test_more_cores_than_cpus_run_with_a_warning(start_broker):
    # sched_getaffinity bounds what the broker sees as its CPUs (cgroup quotas only lower it).
    cores = len(os.sched_getaffinity(0)) + 1
    broker = start_broker(cores=cores)
    with Conn(*broker.addr) as c:
        c.connect("more-cores-than-cpus")
        c.ping()
    stderr = broker.stderr_text()
    assert "more cores than CPUs" in stderr, stderr


def test_config_file_sets_every_key(tmp_path):
    """Every flag has a config key; the file alone starts a working 1-core broker."""
    data = tmp_path / "data"
    data.mkdir()
    config = tmp_path / "berth.toml"
    config.write_text(f'listen = "127.0.0.1:0"\ncores = 1\ndata_dir = "{data}"\nlog = "info"\n'
                      f'connect_timeout = 5\nmax_packet_size = 4096\nconnack_debug_properties = true\n')
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
