"""test_server_crash.py - SIGKILL under write load: no acknowledged write is lost.

Writers record what the cluster acknowledged. Each writer owns its keys and
writes them one at a time with increasing sequence numbers, so after the
crash and restart the value of every key is known: the last acknowledged
write, unless a write whose outcome was unknown (timeout, reset, lost
connection) landed instead, which linearizability allows (Jepsen's :info).
Anything else (a key missing, an older acknowledged value, a value never
written) is a lost or invented write. A second check runs `keel bench kv`
with a history through a leader crash and requires `keel-lincheck` to accept
it.
"""

import json
import os
import signal
import socket
import subprocess
import threading
import time

import pytest
import redis

from conftest import assert_bench_history_linearizable, binary, lincheck
from keelcluster import RespConn, make_cluster, resp_command  # noqa: F401 (fixture)

WRITERS = 6
KEYS_PER_WRITER = 25


class Writer(threading.Thread):
    """SETs its own keys round-robin; fails over to the next node when its node goes away."""

    def __init__(self, wid, nodes):
        super().__init__(daemon=True)
        self.wid = wid
        self.nodes = nodes
        self.at = wid % len(nodes)
        self.stop = threading.Event()
        self.acked = {}  # key -> last acknowledged seq
        self.unknown = {}  # key -> set of seqs whose outcome is unknown
        self.seq = 0
        self.oks = 0
        self.errors = 0
        self.unexpected = []

    def keys(self):
        return [f"w{self.wid}:k{i}" for i in range(KEYS_PER_WRITER)]

    def run(self):
        keys = self.keys()
        c = None
        while not self.stop.is_set():
            if c is None:
                c = self.nodes[self.at].client(socket_timeout=6, socket_connect_timeout=0.5)
            key = keys[self.seq % len(keys)]
            self.seq += 1
            try:
                r = c.set(key, f"{self.wid}:{self.seq}")
                if r is not True:
                    self.unexpected.append(f"SET {key} -> {r!r}")
                self.acked[key] = self.seq
                self.oks += 1
            except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as e:
                if isinstance(e, redis.ResponseError) and not str(e).startswith(
                    ("keel:", "TIMEOUT", "UNKNOWN", "TRYAGAIN")
                ):
                    self.unexpected.append(f"SET {key} -> {e}")
                self.unknown.setdefault(key, set()).add(self.seq)
                self.errors += 1
                if not isinstance(e, redis.ResponseError):
                    c.close()
                    c = None
                    self.at = (self.at + 1) % len(self.nodes)
                time.sleep(0.02)


def start_writers(cl):
    ws = [Writer(i, cl.nodes) for i in range(WRITERS)]
    for w in ws:
        w.start()
    return ws


def stop_writers(ws):
    for w in ws:
        w.stop.set()
    for w in ws:
        w.join(timeout=30)
        assert not w.is_alive(), "a writer hangs"


def check_acknowledged_writes(ws, node):
    """Reads every writer key on node; returns (keys checked, keys settled by an unknown write)."""
    c = node.client(socket_timeout=10)
    checked = settled_by_unknown = 0
    problems = []
    for w in ws:
        assert not w.unexpected, w.unexpected[:5]
        keys = w.keys()
        values = c.mget(keys)
        for key, v in zip(keys, values):
            acked, unknown = w.acked.get(key), w.unknown.get(key, set())
            seq = None
            if v is not None:
                owner, s = v.decode().split(":")
                assert int(owner) == w.wid, f"{key} holds another writer's value {v!r}"
                seq = int(s)
            if seq == acked:
                checked += acked is not None
                continue
            if seq in unknown:
                settled_by_unknown += 1
                continue
            problems.append(f"{key}: read {seq}, last acknowledged {acked}, unknown {sorted(unknown)[-3:]}")
    assert not problems, f"on {node.name}: lost or invented writes:\n" + "\n".join(problems[:20])
    return checked, settled_by_unknown


def run_load(seconds):
    time.sleep(seconds)


def test_acknowledged_writes_survive_a_leader_sigkill_and_restart(make_cluster):
    cl = make_cluster(3)
    leader = cl.wait_leader()
    ws = start_writers(cl)
    try:
        run_load(1.0)
        acked_before = sum(w.oks for w in ws)
        leader.kill()  # SIGKILL
        new = cl.wait_leader()
        assert new is not leader
        run_load(1.0)
        leader.start()
        run_load(1.0)
    finally:
        stop_writers(ws)
    acked = sum(w.oks for w in ws)
    assert acked_before > 50 and acked > acked_before + 50, f"too little load: {acked_before}, {acked}"
    new = cl.wait_leader()
    cl.wait_applied(cl.nodes, new.status()["commit_index"])
    totals = [check_acknowledged_writes(ws, nd) for nd in cl.nodes]
    checked, by_unknown = totals[cl.nodes.index(leader)]
    assert checked > WRITERS * KEYS_PER_WRITER // 2
    print(f"{acked} writes acknowledged, {sum(w.errors for w in ws)} unknown; on the restarted "
          f"node {checked} keys hold their last acknowledged value, {by_unknown} an unknown one")


@pytest.mark.parametrize("snapshots", ["default", "every_200_entries"])
def test_acknowledged_writes_survive_sigkill_of_every_node_at_once(make_cluster, snapshots):
    # every_200_entries: snapshots are written (and WAL segments released) all through the
    # load, so the kill also lands in the middle of snapshot writes
    extra = []
    if snapshots == "every_200_entries":
        extra = ["--snapshot-entries", "200", "--snapshot-log-bytes-min", "0"]
    cl = make_cluster(3, *extra)
    cl.wait_leader()
    ws = start_writers(cl)
    try:
        run_load(1.5)
        for nd in cl.nodes:  # as close to simultaneous as signals get
            nd.proc.kill()
        for nd in cl.nodes:
            nd.kill()  # reaps, marks the exit as expected
        acked_at_crash = sum(w.oks for w in ws)
        time.sleep(0.3)
        for nd in cl.nodes:
            nd.start(wait=False)
        for nd in cl.nodes:
            nd.wait_listening()
        cl.wait_leader()
        run_load(0.5)
    finally:
        stop_writers(ws)
    assert acked_at_crash > 100, f"too little load before the crash: {acked_at_crash}"
    leader = cl.wait_leader()
    cl.wait_applied(cl.nodes, leader.status()["commit_index"])
    for nd in cl.nodes:
        checked, _ = check_acknowledged_writes(ws, nd)
        assert checked > WRITERS * KEYS_PER_WRITER // 2
        assert "storage recovered" in nd.log_tail(100000)


@pytest.mark.parametrize("snapshots", ["default", "every_300_entries"])
def test_a_history_through_a_leader_crash_is_linearizable(make_cluster, tmp_path, snapshots):
    extra = []
    if snapshots == "every_300_entries":
        extra = ["--snapshot-entries", "300", "--snapshot-log-bytes-min", "0"]
    cl = make_cluster(3, *extra)
    leader = cl.wait_leader()
    history = str(tmp_path / "history.jsonl")
    args = [binary("keel"), "bench", "kv", "--duration", "4", "--connections", "6",
            "--pipeline", "2", "--keys", "30", "--history", history, "--final-reads", "--quiet",
            "--seed", "7"]  # fmt: skip
    for nd in cl.nodes:
        args += ["--addr", f"127.0.0.1:{nd.client_port}"]
    with open(tmp_path / "bench.out", "wb") as out:
        bench = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        try:
            time.sleep(1.3)
            leader.kill()
            time.sleep(1.3)
            leader.start()
            rc = bench.wait(timeout=60)
        finally:
            if bench.poll() is None:
                bench.kill()
    report = open(tmp_path / "bench.out").read()
    assert rc == 0, report
    with open(history) as f:
        events = [json.loads(line) for line in f]
    oks = [e for e in events if e["type"] == "ok"]
    assert sum(e["f"] == "write" for e in oks) > 200, report
    assert sum(e["f"] == "read" for e in oks) > 200, report
    code, out = lincheck(history)
    assert code == 0, f"keel-lincheck exit {code}:\n{out}\n{report}"
    # The same pipeline must be able to fail: a final read that returns a value nobody
    # wrote (after the writes it follows) is rejected.
    last_read = max(i for i, e in enumerate(events) if e["type"] == "ok" and e["f"] == "read")
    events[last_read]["value"] = "never-written"
    bad = str(tmp_path / "tampered.jsonl")
    with open(bad, "w") as f:
        f.writelines(json.dumps(e) + "\n" for e in events)
    code, out = lincheck(bad)
    assert code == 1, f"keel-lincheck accepted a tampered history (exit {code}): {out}"
    assert os.path.getsize(history) > 0


# With lease reads the leader answers from its lease: it must judge the lease by the real
# time when it wakes, not by the time it went to sleep (node.c, lease_clock).
READ_MODES = pytest.mark.parametrize("reads", ["readindex", "lease"])


def read_flags(reads):
    return ["--lease-reads", "1" if reads == "lease" else "0"]


@READ_MODES
def test_a_paused_old_leader_never_serves_a_stale_read(make_cluster, reads):
    """SIGSTOP the leader, write through the new one, SIGCONT: reads queued at the old
    leader (and sent right after it wakes) see the new value or fail; never the old one."""
    cl = make_cluster(3, *read_flags(reads))
    for round_ in range(3):
        old = cl.wait_leader()
        key = f"r{round_}"
        assert old.client().set(key, "old") is True
        cl.wait_applied(cl.nodes, old.status()["commit_index"])
        queued = RespConn(old.client_port)
        assert queued.call("PING") == b"+PONG\r\n"
        old.proc.send_signal(signal.SIGSTOP)
        try:
            others = [nd for nd in cl.nodes if nd is not old]
            new = cl.wait_leader(among=others)
            assert new.client().set(key, "new") is True
            queued.send(resp_command("GET", key))  # waits in the paused leader's socket
        finally:
            old.proc.send_signal(signal.SIGCONT)
        reply = queued.reply()
        print(f"round {round_}: queued GET at the old leader -> {reply!r}")
        assert reply != b"$3\r\nold\r\n", f"round {round_}: stale read from the deposed leader"
        assert reply == b"$3\r\nnew\r\n" or reply.startswith(b"-"), reply
        fresh = RespConn(old.client_port)
        r2 = fresh.call("GET", key)
        assert r2 != b"$3\r\nold\r\n", f"round {round_}: stale read right after waking"
        queued.close()
        fresh.close()
        cl.wait_leader()


@READ_MODES
def test_a_history_through_leader_pauses_is_linearizable(make_cluster, tmp_path, reads):
    cl = make_cluster(3, *read_flags(reads))
    history = str(tmp_path / "history.jsonl")
    args = [binary("keel"), "bench", "kv", "--duration", "5", "--connections", "6",
            "--pipeline", "2", "--keys", "20", "--history", history, "--final-reads", "--quiet",
            "--seed", "11"]  # fmt: skip
    for nd in cl.nodes:
        args += ["--addr", f"127.0.0.1:{nd.client_port}"]
    with open(tmp_path / "bench.out", "wb") as out:
        bench = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        try:
            for _ in range(2):
                time.sleep(0.8)
                leader = cl.wait_leader()
                leader.proc.send_signal(signal.SIGSTOP)
                try:
                    cl.wait_leader(among=[nd for nd in cl.nodes if nd is not leader])
                    time.sleep(0.5)
                finally:
                    leader.proc.send_signal(signal.SIGCONT)
            rc = bench.wait(timeout=60)
        finally:
            if bench.poll() is None:
                bench.kill()
    report = open(tmp_path / "bench.out").read()
    assert rc == 0, report
    code, out = lincheck(history)
    assert code == 0, f"keel-lincheck exit {code}:\n{out}\n{report}"


def test_sigterm_under_load_stops_the_node_cleanly_and_loses_nothing(make_cluster):
    cl = make_cluster(3)
    leader = cl.wait_leader()
    ws = start_writers(cl)
    try:
        run_load(0.8)
        for victim in (cl.followers(leader)[0], leader):
            t0 = time.monotonic()
            assert victim.stop(timeout_s=10) == 0, victim.log_tail()
            assert time.monotonic() - t0 < 5, "clean stop took too long"
            assert "shutting down" in victim.log_tail()
            cl.wait_leader(among=[nd for nd in cl.nodes if nd.alive()])
            run_load(0.5)
            victim.start()
            run_load(0.5)
    finally:
        stop_writers(ws)
    leader = cl.wait_leader()
    cl.wait_applied(cl.nodes, leader.status()["commit_index"])
    for nd in cl.nodes:
        check_acknowledged_writes(ws, nd)


def test_a_node_with_another_cluster_configuration_is_refused_by_peers(make_cluster):
    cl = make_cluster(3)
    leader = cl.wait_leader()
    leader.client().set("k", "v")
    f = cl.followers(leader)[0]
    f.kill()
    # same name and peer address, but a member list with an extra node: another cluster id
    f.initial_cluster += ",n9=127.0.0.1:1"
    term = leader.status()["term"]
    log_from = f.log_size()
    f.start()
    time.sleep(1.0)
    st = leader.status()
    assert st["role"] == "leader" and st["term"] == term, "the stranger disturbed the leader"
    assert f.status().get("leader") is None, "the stranger found a leader"
    logs = leader.log_tail(20000) + cl.followers(leader)[1].log_tail(20000) + f.log_since(log_from)
    assert "peer refused: wrong cluster or member" in logs
    f.kill()


def test_a_lagging_follower_never_serves_a_stale_linearizable_read(make_cluster):
    """SIGSTOP a follower, write many times through the leader, SIGCONT: the follower's first
    reads (one queued while it slept, one sent as it wakes) wait until it has caught up."""
    cl = make_cluster(3)
    leader = cl.wait_leader()
    f = cl.followers(leader)[0]
    lc = leader.client()
    lc.set("k", "0")
    cl.wait_applied([f], leader.status()["commit_index"])
    queued = RespConn(f.client_port)
    assert queued.call("PING") == b"+PONG\r\n"
    f.proc.send_signal(signal.SIGSTOP)
    try:
        for i in range(1, 301):
            p = lc.pipeline(transaction=False)
            p.set("k", str(i))
            p.set(f"fill{i}", "x" * 1000)
            p.execute()
        queued.send(resp_command("GET", "k"))
    finally:
        f.proc.send_signal(signal.SIGCONT)
    assert queued.reply() == b"$3\r\n300\r\n"
    assert RespConn(f.client_port).call("GET", "k") == b"$3\r\n300\r\n"


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("KEEL_SLOW") != "1", reason="slow: set KEEL_SLOW=1")
def test_a_history_through_random_faults_is_linearizable(make_cluster, tmp_path):
    """30 s of load while a seeded nemesis SIGKILLs and restarts random nodes and pauses
    leaders (SIGSTOP/SIGCONT), with snapshots every 500 entries; keel-lincheck must accept."""
    import random

    seed = int(os.environ.get("KEEL_SEED", random.randrange(1 << 30)))
    print(f"nemesis seed {seed} (KEEL_SEED={seed} to repeat)")
    rnd = random.Random(seed)
    cl = make_cluster(3, "--snapshot-entries", "500", "--snapshot-log-bytes-min", "0")
    history = str(tmp_path / "history.jsonl")
    args = [binary("keel"), "bench", "kv", "--duration", "30", "--connections", "8",
            "--pipeline", "2", "--keys", "40", "--history", history, "--final-reads", "--quiet",
            "--seed", str(seed)]  # fmt: skip
    for nd in cl.nodes:
        args += ["--addr", f"127.0.0.1:{nd.client_port}"]
    faults = []
    with open(tmp_path / "bench.out", "wb") as out:
        bench = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        try:
            t_end = time.monotonic() + 26
            while time.monotonic() < t_end:
                time.sleep(rnd.uniform(0.3, 1.5))
                down = [nd for nd in cl.nodes if not nd.alive()]
                if down:
                    down[0].start()
                    faults.append(f"start {down[0].name}")
                    continue
                victim = rnd.choice(cl.nodes)
                if rnd.random() < 0.5:
                    victim.kill()
                    faults.append(f"kill {victim.name}")
                else:
                    victim.proc.send_signal(signal.SIGSTOP)
                    time.sleep(rnd.uniform(0.1, 0.8))
                    victim.proc.send_signal(signal.SIGCONT)
                    faults.append(f"pause {victim.name}")
            for nd in cl.nodes:
                if not nd.alive():
                    nd.start()
            rc = bench.wait(timeout=90)
        finally:
            if bench.poll() is None:
                bench.kill()
    report = open(tmp_path / "bench.out").read()
    print(", ".join(faults))
    assert rc == 0, report
    assert_bench_history_linearizable(history, 1000, f"seed {seed}\n{report}")
    leader = cl.wait_leader()
    cl.wait_applied(cl.nodes, leader.status()["commit_index"])
    revs = {nd.status()["revision"] for nd in cl.nodes}
    assert len(revs) == 1, f"nodes disagree after the faults: revisions {revs}"


def _children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def test_a_node_killed_while_its_snapshot_child_writes_frees_its_ports_at_once(make_cluster):
    # The snapshot child is a fork: it had the parent's listening sockets. Kept open by a child
    # that outlives a SIGKILLed parent, they took connections nobody served and kept a
    # restarted node from binding (a test that restarted a node mid-snapshot saw "ready" from
    # the child's listener, then a refused status call). The child now closes them at once and
    # dies with its parent.
    cl = make_cluster(1, "--snapshot-entries", "10", "--snapshot-log-bytes-min", "0")
    nd = cl.wait_leader()
    c = nd.client(socket_timeout=60)
    value = os.urandom(6 << 20)
    child = None
    deadline = time.monotonic() + 60
    r = 0
    while child is None and time.monotonic() < deadline:
        for i in range(8):  # about 48 MiB of state, written again and again
            c.set(f"big{i}", value[r % 7 :] + bytes([r % 256]))
            kids = _children(nd.proc.pid)
            if kids:
                child = kids[0]
                break
        r += 1
    assert child is not None, "no snapshot child seen"
    nd.kill()  # SIGKILL while the child writes
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", nd.client_port), timeout=2).close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", nd.http_port), timeout=2).close()
    end = time.monotonic() + 5
    while os.path.exists(f"/proc/{child}") and time.monotonic() < end:
        try:
            with open(f"/proc/{child}/stat") as f:
                if f.read().split(")")[-1].split()[0] == "Z":
                    break  # a zombie: gone, waiting to be reaped by init
        except OSError:
            break
        time.sleep(0.01)
    assert time.monotonic() < end, "the snapshot child outlived its parent"
    nd.start()  # and the node comes back on the same ports
    cl.wait_leader()
    assert nd.client().get("big0") is not None
