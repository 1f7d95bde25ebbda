"""Start and stop the real berth binary for black-box tests.

The broker listens on an ephemeral port and announces it with one stdout line,
`berth listening on 127.0.0.1:PORT`; we read stdout up to that line and never guess a port.
stderr (the logs) goes to a file so that a chatty broker cannot block on a full pipe, and is
shown when a test fails.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import tempfile
import time

READY = re.compile(rb"^berth listening on (\S+):(\d+)\s*$")
# The other listeners' lines (`... on HOST:PORT (tls)`), which come before the plain one's.
OTHER_LISTENER = re.compile(rb"^berth listening on (\S+):(\d+) \((\w+)\)\s*$")
# The admin API's line (when it runs), before the listeners'.
ADMIN = re.compile(rb"^berth admin API on (\S+):(\d+)\s*$")
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


def berth_bin() -> str:
    path = os.environ.get("BERTH_BIN", "target/debug/berth")
    if not os.path.isabs(path):
        repo = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
        path = os.path.join(repo, path)
    return path


TEST_SEGMENT_SIZE = str(1 << 20)

# Makes every v5 CONNACK name the owning and the accepting core (User Properties `berth-shard`,
# `berth-accepted-on`), which berth leaves out by default: for tests of core ownership.
CONNACK_DEBUG = "--connack-debug-properties"


def with_ws_listener(extra: tuple, workdir: str) -> tuple:
    """A test's `--ws-listen ADDR [--ws-path PATH]` (a shorthand of these tests, not a berth
    flag) becomes a config file with that `[[listener]]` table."""
    extra = list(extra)
    if "--ws-listen" not in extra:
        return tuple(extra)
    i = extra.index("--ws-listen")
    address = extra[i + 1]
    del extra[i:i + 2]
    path = "/mqtt"
    if "--ws-path" in extra:
        j = extra.index("--ws-path")
        path = extra[j + 1]
        del extra[j:j + 2]
    config = os.path.join(workdir, "ws-listener.toml")
    with open(config, "w") as f:
        f.write(f'listen = "127.0.0.1:0"\n[[listener]]\naddress = "{address}"\ntransport = "ws"\npath = "{path}"\n')
    return ("--config", config, *extra)


class BrokerDied(AssertionError):
    pass


class Broker:
    """A running broker process. `argv` is the full command line (wrappers included)."""

    def __init__(self, argv: list[str], *, workdir: str, ready_timeout: float = READY_TIMEOUT):
        self.argv = argv
        self.workdir = workdir
        self.stderr_path = os.path.join(workdir, "berth.stderr")
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self._stderr)
        self.stdout_seen = b""
        # Transport name -> [(host, port)] of the listeners besides the plain one.
        self.listeners: dict[str, list[tuple[str, int]]] = {}
        self.admin: tuple[str, int] | None = None
        self.host, self.port = self._wait_ready(ready_timeout)

    @classmethod
    def start(cls, *extra: str, cores: int = 2, workdir: str | None = None, data_dir: str | None = None,
              log: str | None = None, wrapper: list[str] | None = None, binary: str | None = None) -> "Broker":
        workdir = workdir or tempfile.mkdtemp(prefix="berth-test-")
        if data_dir is None:
            data_dir = os.path.join(workdir, "data")
            os.makedirs(data_dir, exist_ok=True)
        # Segments are allocated whole (fallocate), two per core at any time: the default
        # 64 MiB would put hundreds of MiB on disk per test. Tests use small ones.
        if "--segment-size" not in extra:
            extra = ("--segment-size", TEST_SEGMENT_SIZE, *extra)
        extra = with_ws_listener(extra, workdir)
        argv = list(wrapper or []) + [binary or berth_bin(), "--listen", "127.0.0.1:0",
                                      "--cores", str(cores), "--data-dir", data_dir,
                                      "--log", log or os.environ.get("BERTH_LOG", "info"), *extra]
        return cls(argv, workdir=workdir)

    def _wait_ready(self, timeout: float) -> tuple[str, int]:
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while True:
            nl = self.stdout_seen.find(b"\n")
            while nl >= 0:
                line, self.stdout_seen = self.stdout_seen[:nl], self.stdout_seen[nl + 1:]
                m = READY.match(line)
                if m:
                    return m.group(1).decode(), int(m.group(2))
                admin = ADMIN.match(line)
                if admin:
                    self.admin = (admin.group(1).decode(), int(admin.group(2)))
                other = OTHER_LISTENER.match(line)
                if other:
                    self.listeners.setdefault(other.group(3).decode(), []).append(
                        (other.group(1).decode(), int(other.group(2))))
                nl = self.stdout_seen.find(b"\n")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                raise BrokerDied(f"no ready line within {timeout}s\n{self.describe()}")
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    rc = self.proc.wait(timeout=STOP_TIMEOUT)
                    raise BrokerDied(f"broker exited with {rc} before its ready line\n{self.describe()}")
                self.stdout_seen += chunk

    @property
    def ws(self) -> tuple[str, int] | None:
        """The first WebSocket listener's address, if one is on."""
        return (self.listeners.get("ws") or [None])[0]

    @property
    def addr(self) -> tuple[str, int]:
        return self.host, self.port

    def stderr_text(self) -> str:
        if not self._stderr.closed:
            self._stderr.flush()
        with open(self.stderr_path, "rb") as f:
            return f.read().decode(errors="replace")

    def describe(self) -> str:
        tail = self.stderr_text()[-8000:]
        return (f"command: {' '.join(self.argv)}\nstdout: {self.stdout_seen!r}\n"
                f"--- broker stderr (tail) ---\n{tail}\n--- end of stderr ---")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int | None = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Signal the broker (unless `sig` is None: it was signalled already) and return its
        exit status (negative: killed by a signal)."""
        if self.proc.poll() is None:
            if sig is not None:
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise BrokerDied(f"broker still running {timeout}s after signal {sig}\n{self.describe()}")
        self.proc.stdout.close()
        self._stderr.close()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def assert_clean_exit(self) -> None:
        """SIGTERM must end the broker with status 0 (the contract's clean shutdown)."""
        was_alive = self.alive()
        rc = self.stop()
        assert was_alive, f"broker died during the test with status {rc}\n{self.describe()}"
        assert rc == 0, f"broker exited with {rc} on SIGTERM\n{self.describe()}"


def stop_cleanly(started: list[Broker]) -> None:
    """Stops every broker a test left running (one the test stopped itself has had its exit
    checked there); each must exit cleanly. For fixtures' teardown."""
    failures = []
    for b in started:
        if not b.proc.stdout.closed:
            try:
                b.assert_clean_exit()
            except AssertionError as e:
                failures.append(str(e))
        print(b.describe())
    assert not failures, "\n\n".join(failures)
