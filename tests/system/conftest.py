"""conftest.py - shared fixtures for keel's black-box system tests.

Binaries come from the build directory in $KEEL_BUILD (default <repo>/build).
Every process a test starts goes through `procs`, which kills whatever is
still running at teardown, so a failing test never leaves a server behind.
"""

import os
import re
import signal
import socket
import subprocess
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("KEEL_BUILD", os.path.join(REPO, "build"))


def binary(name):
    """Path of build/<name>; skips the test when it has not been built."""
    path = os.path.join(BUILD, name)
    if not os.path.exists(path):
        pytest.skip(f"{path} not built")
    return path


def lincheck(history, timeout_s=300):
    """keel-lincheck's exit code (0 linearizable, 1 not) and its text output for a history."""
    r = subprocess.run([binary("keel-lincheck"), history], capture_output=True, timeout=timeout_s)
    return r.returncode, r.stdout.decode() + r.stderr.decode()


def assert_bench_history_linearizable(history, oks_min, context):
    """A `keel bench kv --history` file completed more than oks_min operations and
    keel-lincheck accepts it; context (the bench report, the faults) goes into failures."""
    with open(history) as f:
        oks = sum('"type":"ok"' in line for line in f)
    assert oks > oks_min, f"too few completed operations ({oks}):\n{context}"
    code, out = lincheck(history)
    assert code == 0, f"keel-lincheck exit {code}:\n{out}\n{context}"


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accepts(port, host="127.0.0.1"):
    """Whether a listener accepts on host:port. Test ports come from the ephemeral range
    (free_port), so a connect polling a port nobody listens on yet can pick that same port as
    its own source and connect to itself (TCP simultaneous open): that is not a listener."""
    try:
        with socket.create_connection((host, port), timeout=0.2) as s:
            return s.getsockname() != s.getpeername()
    except OSError:
        return False


def wait_port(port, timeout_s=5.0):
    """Waits until something accepts on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if accepts(port):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on port {port} after {timeout_s}s")


def wait_until(pred, timeout_s=5.0, step_s=0.05):
    """Polls pred until it is true or timeout_s passes; returns its last value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step_s)
    return pred()


def crc32c(data):
    """CRC-32C (Castagnoli, reflected), bit by bit: base/crc32c.h's checksum of frames and
    log records."""
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


class Proc:
    """A started process with its combined output going to a log file."""

    def __init__(self, args, log_path, env=None):
        self.args = args
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.may_exit = False  # set by tests that stop the process themselves
        self.p = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=self.log, env=env, start_new_session=True
        )

    def read_line(self, pattern, timeout_s=5.0):
        """Reads stdout lines until one matches pattern; returns the match."""
        deadline = time.monotonic() + timeout_s
        rx = re.compile(pattern)
        while time.monotonic() < deadline:
            line = self.p.stdout.readline().decode(errors="replace")
            if not line:
                if self.p.poll() is not None:
                    raise RuntimeError(f"{self.args[0]} exited {self.p.returncode}: {self.output()}")
                continue
            m = rx.search(line)
            if m:
                return m
        raise TimeoutError(f"no line matching {pattern!r} from {self.args[0]}")

    def alive(self):
        return self.p.poll() is None

    def signal(self, sig):
        self.may_exit = True
        if self.alive():
            self.p.send_signal(sig)

    def wait(self, timeout_s):
        return self.p.wait(timeout=timeout_s)

    def output(self):
        self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def kill(self):
        if self.alive():
            self.p.send_signal(signal.SIGKILL)
            try:
                self.p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.log.close()
        if self.p.stdout:
            self.p.stdout.close()


@pytest.fixture
def procs(tmp_path):
    """Starts processes (procs.start(args)) and kills all of them at teardown."""

    class Procs:
        def __init__(self):
            self.items = []

        def start(self, args, env=None):
            log = tmp_path / f"proc{len(self.items)}.log"
            p = Proc(args, str(log), env=env)
            self.items.append(p)
            return p

    ps = Procs()
    yield ps
    crashed = [p for p in ps.items if not p.may_exit and not p.alive()]
    why = "; ".join(
        f"{p.args[0]} exited {p.p.returncode} during the test: {p.output()[-2000:]}" for p in crashed
    )
    for p in ps.items:
        p.kill()
    # A server that died during a test (crash, sanitizer abort) fails it even if no request noticed.
    assert not crashed, why


def start_testhttpd(procs, *extra):
    """Starts keel-testhttpd on a free port; returns (proc, port)."""
    exe = binary("keel-testhttpd")
    p = procs.start([exe, "--listen", "127.0.0.1:0", *extra])
    m = p.read_line(r"listening on [0-9.]+:(\d+)")
    return p, int(m.group(1))


@pytest.fixture
def up():
    """The proxy tests' upstream: a fake HTTP server named app (proxyfake.FakeUpstream)."""
    from proxyfake import FakeUpstream  # proxyfake imports this module: here, not at the top

    u = FakeUpstream("app")
    yield u
    u.close()


@pytest.fixture
def testhttpd(procs):
    """A keel-testhttpd with default limits: (proc, port)."""
    return start_testhttpd(procs)
