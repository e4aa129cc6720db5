"""keelcluster.py - start, kill, restart and inspect real `keel server` clusters for system tests.

Each node runs `keel server` with an explicit --initial-cluster on ports drawn
from conftest's free_port() (all distinct), in its own directory under the
test's tmp_path; its stdout and stderr go to <dir>/<name>.log. The `cluster`
fixture hands out a factory and, at teardown, kills every node it started and
fails the test if a node died that the test did not stop itself (a crash or a
sanitizer abort would otherwise pass unnoticed).

Every wait is bounded: a cluster that never elects a leader fails the test
with the nodes' log tails instead of hanging the suite.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest
import redis

from conftest import accepts, binary, free_port

LEADER_WAIT_S = 10.0
START_WAIT_S = 10.0


def distinct_ports(n):
    """n ports that were free a moment ago, all different."""
    ports = []
    while len(ports) < n:
        p = free_port()
        if p not in ports:
            ports.append(p)
    return ports


def http_get(port, path, timeout_s=2.0, host="127.0.0.1"):
    """GET http://host:port/path; returns (status, body bytes, content-type)."""
    url = f"http://{host}:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            return r.status, r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers.get("Content-Type", "")


class Node:
    """One `keel server` process (possibly stopped) with its ports and data directory."""

    def __init__(self, exe, name, base_dir, client_port, peer_port, http_port):
        self.exe = exe
        self.name = name
        self.client_port = client_port
        self.peer_port = peer_port
        self.http_port = http_port
        self.dir = os.path.join(base_dir, name)
        self.data_dir = os.path.join(self.dir, "data")
        self.wal_dir = os.path.join(self.data_dir, "wal")
        self.log_path = os.path.join(self.dir, f"{name}.log")
        self.proc = None
        self.expect_exit = False  # the test stopped it (or expects it to exit)
        self.initial_cluster = ""
        self.join = ""  # a member's client address: start with --join instead
        self.extra = []
        # where it listens for clients and HTTP, and a command prefix (e.g. `ip netns exec NS`):
        # tests/system/nemesis.py runs nodes inside network namespaces
        self.host = "127.0.0.1"
        self.prefix = []
        os.makedirs(self.dir, exist_ok=True)

    # -- process control --------------------------------------------------------------------

    def args(self):
        return [
            *self.prefix, self.exe, "server",
            "--name", self.name,
            "--data-dir", self.data_dir,
            "--listen-client", f"{self.host}:{self.client_port}",
            "--listen-http", f"{self.host}:{self.http_port}",
            *(["--join", self.join, "--listen-peer", f"{self.host}:{self.peer_port}"] if self.join
              else ["--initial-cluster", self.initial_cluster]),
            *self.extra,
        ]  # fmt: skip

    def start(self, wait=True):
        """Starts the process (appending to its log); waits until it accepts clients."""
        assert not self.alive(), f"{self.name} is already running"
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.args(), stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
        )
        log.close()
        self.expect_exit = False
        if wait:
            self.wait_listening()
        return self

    def wait_listening(self, timeout_s=START_WAIT_S):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                self.expect_exit = True  # reported here, not again at teardown
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}:\n{self.log_tail()}")
            if accepts(self.client_port, self.host):
                return
            time.sleep(0.02)
        raise TimeoutError(f"{self.name} does not listen after {timeout_s}s:\n{self.log_tail()}")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig=signal.SIGKILL, timeout_s=10.0):
        """Sends sig (SIGKILL by default) and waits for the process to end."""
        self.expect_exit = True
        if self.alive():
            self.proc.send_signal(sig)
        if self.proc is not None:
            self.proc.wait(timeout=timeout_s)

    def stop(self, timeout_s=10.0):
        """A clean stop (SIGTERM); returns the exit status."""
        self.kill(signal.SIGTERM, timeout_s)
        return self.proc.returncode

    def run_to_exit(self, timeout_s=10.0):
        """Starts the node expecting it to exit by itself; returns (status, log since start)."""
        before = self.log_size()
        self.start(wait=False)
        self.expect_exit = True
        try:
            rc = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name} kept running:\n{self.log_tail()}")
        return rc, self.log_since(before)

    # -- inspection -------------------------------------------------------------------------

    def client(self, **kw):
        kw.setdefault("socket_timeout", 10)
        return redis.Redis(host=self.host, port=self.client_port, **kw)

    def status(self):
        code, body, _ = http_get(self.http_port, "/status", host=self.host)
        assert code == 200, f"/status of {self.name}: {code} {body!r}"
        return json.loads(body)

    def try_status(self):
        try:
            return self.status()
        except (OSError, AssertionError, ValueError):
            return None

    def health(self):
        code, body, _ = http_get(self.http_port, "/health", host=self.host)
        return code, json.loads(body)

    def log_size(self):
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def log_since(self, offset):
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def log_tail(self, n=3000):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")[-n:]
        except OSError:
            return "(no log)"

    def wal_segments(self):
        return sorted(
            os.path.join(self.wal_dir, f) for f in os.listdir(self.wal_dir) if f.endswith(".log")
        )


class Cluster:
    """n nodes n1..nN; `extra` flags go to every node (e.g. --value-bytes-max)."""

    def __init__(self, exe, base_dir, n, extra):
        ports = distinct_ports(3 * n)
        self.nodes = [
            Node(exe, f"n{i + 1}", base_dir, ports[i], ports[n + i], ports[2 * n + i])
            for i in range(n)
        ]
        ic = ",".join(f"{nd.name}=127.0.0.1:{nd.peer_port}" for nd in self.nodes)
        for nd in self.nodes:
            nd.initial_cluster = ic
            nd.extra = list(extra)

    def start(self):
        for nd in self.nodes:
            nd.start(wait=False)
        for nd in self.nodes:
            nd.wait_listening()
        return self

    def node(self, name):
        return next(nd for nd in self.nodes if nd.name == name)

    def new_node(self, name, join=""):
        """A node that is not in --initial-cluster, with fresh ports (not started). With
        `join` (a member's client address) it starts with --join; otherwise add it with
        KEEL.CLUSTER ADD first and set .join before starting it."""
        exe, base_dir = self.nodes[0].exe, os.path.dirname(self.nodes[0].dir)
        used = {p for nd in self.nodes for p in (nd.client_port, nd.peer_port, nd.http_port)}
        ports = [p for p in distinct_ports(6) if p not in used][:3]
        nd = Node(exe, name, base_dir, *ports)
        nd.join = join
        nd.extra = list(self.nodes[0].extra)
        self.nodes.append(nd)
        return nd

    def running(self):
        return [nd for nd in self.nodes if nd.alive()]

    def wait_leader(self, timeout_s=LEADER_WAIT_S, among=None):
        """The node that reports itself leader, once every running node agrees on it."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            live = among if among is not None else self.running()
            sts = {nd.name: nd.try_status() for nd in live}
            leaders = {s["name"] for s in sts.values() if s and s["role"] == "leader"}
            seen = {s.get("leader") for s in sts.values() if s}
            if len(leaders) == 1 and seen == leaders:
                return self.node(leaders.pop())
            time.sleep(0.05)
        raise TimeoutError(f"no agreed leader after {timeout_s}s:\n{self.log_tails()}")

    def followers(self, leader):
        return [nd for nd in self.nodes if nd is not leader]

    def wait_applied(self, nodes, index, timeout_s=30.0):
        """Waits until each node has applied at least `index`."""
        deadline = time.monotonic() + timeout_s
        for nd in nodes:
            while True:
                st = nd.try_status()
                if st and st["applied_index"] >= index:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{nd.name} did not apply {index}: {st}")
                time.sleep(0.05)

    def kill_all(self):
        for nd in self.nodes:
            nd.kill()

    def log_tails(self):
        return "\n".join(f"--- {nd.name} ---\n{nd.log_tail(1500)}" for nd in self.nodes)

    def teardown(self):
        crashed = [nd for nd in self.nodes if nd.proc and not nd.expect_exit and not nd.alive()]
        for nd in self.nodes:
            if nd.alive():
                nd.proc.kill()
                nd.proc.wait(timeout=10)
        # Preallocated WAL segments take 17+ MiB per node and pytest keeps the last runs'
        # directories: drop the data, keep the logs (KEEL_KEEP_DATA=1 keeps everything).
        if os.environ.get("KEEL_KEEP_DATA") != "1":
            for nd in self.nodes:
                shutil.rmtree(nd.data_dir, ignore_errors=True)
        return crashed


@pytest.fixture
def make_cluster(tmp_path):
    """make_cluster(n=3, *extra_flags, start=True, wait=True) -> Cluster; all killed at teardown."""
    exe = binary("keel")
    made = []

    def make(n=3, *extra, start=True, wait=True, segment_bytes="17m"):
        # 17 MiB: the smallest segment that holds a largest (16 MiB) WAL record
        flags = ["--wal-segment-bytes", segment_bytes, *extra]
        cl = Cluster(exe, str(tmp_path / f"c{len(made)}"), n, flags)
        made.append(cl)
        if start:
            cl.start()
            if wait:
                cl.wait_leader()
        return cl

    yield make
    crashed = []
    for cl in made:
        crashed += cl.teardown()
    assert not crashed, "; ".join(
        f"{nd.name} exited {nd.proc.returncode} during the test:\n{nd.log_tail()}" for nd in crashed
    )


@pytest.fixture
def cluster3(make_cluster):
    """A running 3-node cluster with an agreed leader."""
    return make_cluster(3)


class RedisServer:
    """A throwaway redis-server (no persistence) to compare replies with."""

    def __init__(self, base_dir):
        exe = "/usr/bin/redis-server"
        if not os.path.exists(exe):
            pytest.skip("redis-server is not installed")
        self.port = free_port()
        os.makedirs(base_dir, exist_ok=True)
        self.log_path = os.path.join(base_dir, "redis.log")
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", base_dir],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + START_WAIT_S
        while not accepts(self.port):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)

    def client(self, **kw):
        kw.setdefault("socket_timeout", 10)
        return redis.Redis(host="127.0.0.1", port=self.port, **kw)

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def redis_server(tmp_path):
    r = RedisServer(str(tmp_path / "redis"))
    yield r
    r.close()


def resp_command(*args):
    """Encodes one RESP command (array of bulk strings)."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class RespConn:
    """A raw RESP connection that returns each reply as its exact bytes (no decoding)."""

    def __init__(self, port, timeout_s=10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
        self.sock.settimeout(timeout_s)
        self.buf = b""

    def close(self):
        self.sock.close()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed by the server; unparsed {self.buf[:200]!r}")
        self.buf += chunk

    def _line(self, pos):
        while True:
            end = self.buf.find(b"\r\n", pos)
            if end >= 0:
                return end + 2
            self._fill()

    def _reply_end(self, pos):
        end = self._line(pos)
        kind, head = self.buf[pos : pos + 1], self.buf[pos + 1 : end - 2]
        if kind in (b"+", b"-", b":", b"_", b",", b"#", b"("):  # RESP3's null, double, ...
            return end
        n = int(head)
        if kind in (b"$", b"=", b"!"):  # bulk, RESP3's verbatim string and blob error
            if n < 0:
                return end
            while len(self.buf) < end + n + 2:
                self._fill()
            return end + n + 2
        if kind in (b"*", b"~", b">", b"%", b"|"):  # array, RESP3's set, push, map, attribute
            for _ in range(max(n, 0) * (2 if kind in (b"%", b"|") else 1)):
                end = self._reply_end(end)
            return self._reply_end(end) if kind == b"|" else end
        raise ValueError(f"not a RESP reply: {self.buf[pos:pos + 100]!r}")

    def reply(self):
        """Reads one whole reply; returns its bytes."""
        end = self._reply_end(0)
        out, self.buf = self.buf[:end], self.buf[end:]
        return out

    def call(self, *args):
        self.send(resp_command(*args))
        return self.reply()

    def closed_by_peer(self, timeout_s=5.0):
        """True if the server closes the connection (EOF or reset) within timeout_s."""
        self.sock.settimeout(timeout_s)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False


def blocked_thread(port, fn, out, key):
    """Runs fn(redis client) on a thread of its own (a command that blocks, say): out[key]
    gets its result or its exception, out[key + "_t"] the monotonic time it returned."""

    def run():
        c = redis.Redis(host="127.0.0.1", port=port, socket_timeout=30)
        try:
            out[key] = fn(c)
            out[key + "_t"] = time.monotonic()
        except Exception as e:  # noqa: BLE001 - recorded for the assertion
            out[key] = e
        finally:
            c.close()

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


def raw_exchange(port, data, want, timeout_s=5.0):
    """Sends raw bytes; reads until `want` (bytes) appears, EOF, or the timeout; returns all."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
    s.settimeout(timeout_s)
    buf = b""
    try:
        s.sendall(data)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and want not in buf:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            buf += chunk
        return buf
    finally:
        s.close()
