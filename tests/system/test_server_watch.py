"""test_server_watch.py - KEEL.WATCH change streams through real keel server clusters: prefix
filtering on a follower, push mode, FROM beyond the retained history, a watcher that stops
reading, and a watcher that reconnects to random nodes with FROM across leader kills."""

import os
import random
import socket
import subprocess
import threading
import time

import pytest
from conftest import binary, wait_until
from keelcluster import RespConn, http_get, make_cluster, resp_command  # noqa: F401 (fixture)

SLOW = os.environ.get("KEEL_SLOW") == "1"


# -- a small RESP2 decoder for the raw connections ---------------------------------------------


class RespError(Exception):
    pass


def decode(b, pos=0):
    """Decodes one RESP2 value at b[pos:]; returns (value, next pos). Errors become RespError."""
    end = b.index(b"\r\n", pos)
    kind, head = b[pos : pos + 1], b[pos + 1 : end]
    if kind == b"+":
        return head, end + 2
    if kind == b"-":
        return RespError(head.decode()), end + 2
    if kind == b":":
        return int(head), end + 2
    n = int(head)
    if kind == b"$":
        return (None, end + 2) if n < 0 else (b[end + 2 : end + 2 + n], end + 4 + n)
    if kind == b"*":
        if n < 0:
            return None, end + 2
        items, p = [], end + 2
        for _ in range(n):
            v, p = decode(b, p)
            items.append(v)
        return items, p
    raise ValueError(f"not RESP: {b[pos:pos + 60]!r}")


class Watch(RespConn):
    """A raw connection that sent KEEL.WATCH (its reply in .first); next() decodes each push.
    rcvbuf shrinks the socket's receive buffer (set before connecting, so it sticks)."""

    def __init__(self, port, prefix, frm=None, timeout_s=5.0, rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout_s)
        self.buf = b""
        try:
            self.sock.connect(("127.0.0.1", port))
            args = ["KEEL.WATCH", prefix] + ([] if frm is None else ["FROM", frm])
            self.send(resp_command(*args))
            self.first = self.next()
        except BaseException:
            self.sock.close()
            raise

    def next(self):
        return decode(self.reply())[0]


# -- behaviours ----------------------------------------------------------------------------------


def test_a_follower_streams_every_change_under_the_prefix_one_push_per_revision(make_cluster):
    cl = make_cluster(3)
    leader = cl.wait_leader()
    f = cl.followers(leader)[0]
    c = leader.client()
    c.set("app/a", "0")  # before the watch: not streamed without FROM
    cl.wait_applied([f], leader.status()["commit_index"])
    w = Watch(f.client_port, "app/")
    assert w.first[0] == b"watching" and w.first[1] == b"app/"
    start = w.first[2]
    c.set("app/a", "1")
    c.set("other", "x")  # outside the prefix: its revision sends nothing
    c.mset({"app/b": "2", "other2": "y", "app/c": "3"})  # one revision, two changes shown
    c.incr("app/n")
    c.append("app/a", "+")
    c.delete("app/b", "other", "app/zzz")
    c.pexpire("app/c", 100000)  # a new deadline is a new version: a put
    p = c.pipeline(transaction=True)  # MULTI/EXEC: one revision per write inside
    p.set("app/t", "t1")
    p.delete("app/t")
    p.execute()
    lease = c.execute_command("KEEL.LEASE", "GRANT", 60000)
    c.execute_command("KEEL.SET", "app/l", "leased", "LEASE", lease)
    c.execute_command("KEEL.LEASE", "REVOKE", lease)
    got = [w.next() for _ in range(9)]
    revs = [g[1] for g in got]
    assert all(g[0] == b"watch" for g in got)
    assert revs == sorted(revs) and len(set(revs)) == 9 and revs[0] == start + 1
    assert [g[2] for g in got] == [
        [[b"put", b"app/a", b"1"]],
        [[b"put", b"app/b", b"2"], [b"put", b"app/c", b"3"]],
        [[b"put", b"app/n", b"1"]],
        [[b"put", b"app/a", b"1+"]],
        [[b"del", b"app/b", None]],
        [[b"put", b"app/c", b"3"]],
        [[b"put", b"app/t", b"t1"]],
        [[b"del", b"app/t", None]],
        [[b"put", b"app/l", b"leased"]],
    ]
    assert w.next() == [b"watch", revs[-1] + 1, [[b"del", b"app/l", None]]]  # the revoke
    # FROM resumes after a revision: the MSET's revision again, whole, then the rest
    w2 = Watch(leader.client_port, "app/", frm=revs[0])
    assert w2.first == [b"watching", b"app/", revs[0]]
    assert w2.next()[2] == [[b"put", b"app/b", b"2"], [b"put", b"app/c", b"3"]]
    w.close()
    w2.close()


def test_watch_mode_accepts_only_ping_and_quit(make_cluster):
    cl = make_cluster(1)
    port = cl.wait_leader().client_port
    w = Watch(port, "")
    for cmd in (["GET", "k"], ["SET", "k", "v"], ["INFO"], ["SUBSCRIBE", "ch"], ["KEEL.WATCH", "x"]):
        w.send(resp_command(*cmd))
        e = w.next()
        assert isinstance(e, RespError) and "only PING / QUIT" in str(e), e
    w.send(resp_command("PING"))
    assert w.next() == b"PONG"
    w.send(resp_command("QUIT"))
    assert w.next() == b"OK"
    assert w.closed_by_peer()
    r = RespConn(port)
    assert r.call("KEEL.WATCH", "", "FROM", "x").startswith(b"-ERR value is not an integer")
    assert r.call("KEEL.WATCH", "", "SINCE", "1").startswith(b"-ERR syntax error")
    assert r.call("MULTI") == b"+OK\r\n"
    assert r.call("KEEL.WATCH", "") == b"-ERR Command not allowed inside a transaction\r\n"


def test_from_a_revision_older_than_the_history_names_the_oldest_available(make_cluster):
    cl = make_cluster(1, "--history-changes-max", "10")
    node = cl.wait_leader()
    c = node.client()
    for i in range(30):
        c.set(f"k{i % 3}", str(i))
    rev = node.status()["revision"]
    assert rev == 30
    w = Watch(node.client_port, "", frm=5)
    assert isinstance(w.first, RespError)
    assert str(w.first).startswith("COMPACTED oldest available revision 21 ")
    w.close()
    w = Watch(node.client_port, "", frm=20)  # the oldest - 1: everything it keeps
    assert w.first == [b"watching", b"", 20]
    assert [w.next()[1] for _ in range(10)] == list(range(21, 31))
    w.close()


def test_a_watcher_that_stops_reading_is_closed_and_told_where_to_resume(make_cluster):
    """The server keeps at most ~1 MiB of pushes for a watcher that does not read; once the
    history (100 changes here) moves past its position it sends -LAGGED naming the last
    revision it pushed whole, and closes. Resuming there is then refused with COMPACTED."""
    cl = make_cluster(1, "--history-changes-max", "100")
    node = cl.wait_leader()
    w = Watch(node.client_port, "", rcvbuf=4096, timeout_s=20)
    start = w.first[2]
    c = node.client()
    value = "v" * 32768
    for batch in range(12):  # 600 x 32 KiB = 19 MiB, far beyond what sockets hold
        p = c.pipeline(transaction=False)
        for i in range(50):
            p.set(f"k{i}", value)
        p.execute()
    assert wait_until(lambda: b"keel_watch_lagged_total 1" in http_get(node.http_port, "/metrics")[1])
    last, n = start, 0
    while True:
        m = w.next()
        if isinstance(m, RespError):
            break
        assert m[1] == last + 1, f"revision {m[1]} after {last}"
        last, n = m[1], n + 1
    assert str(m).startswith("LAGGED ") and str(m).endswith(f"resume with FROM {last}")
    assert 0 < n < 600  # it was pushed some, then fell behind
    assert w.closed_by_peer()
    again = Watch(node.client_port, "", frm=last)
    assert isinstance(again.first, RespError) and str(again.first).startswith("COMPACTED")


def test_keel_watch_prints_every_revision_once_across_a_node_kill(make_cluster):
    """`keel watch` starts on a follower, which is killed half way: it goes on at the next
    address with FROM the last revision it printed; the 40 SETs come out once each, in order."""
    cl = make_cluster(3)
    leader = cl.wait_leader()
    first = cl.followers(leader)[0]
    args = [binary("keel"), "watch", "--from", "0", "--count", "40", "--duration", "30"]
    for nd in [first] + [nd for nd in cl.nodes if nd is not first]:
        args += ["--addr", f"127.0.0.1:{nd.client_port}"]
    proc = subprocess.Popen(args + ["k"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        c = leader.client()
        c.set("other", "x")  # outside the prefix: revision 1 prints nothing
        for i in range(20):
            c.set(f"k{i}", str(i))
        cl.wait_applied([first], leader.status()["commit_index"])
        time.sleep(0.3)
        first.kill()
        for i in range(20, 40):
            c.set(f"k{i}", str(i))
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert out.decode().splitlines() == [f"{i + 2} put k{i} {i}" for i in range(40)], err


# -- a watcher reconnecting to random nodes across leader kills ---------------------------------


def watch_through_faults(cl, seconds, kills, seed, extra_ops=True):
    """Writers (SET, SET PX, MSET, DEL, INCR, MULTI/EXEC) run against random nodes while the
    leader is killed and restarted `kills` times; one watcher of every key ("" prefix) hops
    between random live nodes every 0.2-1.5 s, resuming each time with FROM the last revision
    it got. Every revision must arrive exactly once and in order (each revision changes at
    least one key, so the stream is 1, 2, 3, ...), and the state rebuilt from the stream must
    equal a linearizable read of every key once the writes are over."""
    rnd = random.Random(seed)
    keys = [f"w{i}" for i in range(24)]
    stop_writes = threading.Event()
    errors, stats = [], {"writes": 0, "sessions": 0, "compacted": 0, "refused": 0, "lagged": 0}
    state = {"last": 0, "model": {}, "target": None}

    def writer(i):
        r = random.Random(seed * 31 + i)
        clients = {}
        while not stop_writes.is_set():
            nd = r.choice(cl.nodes)
            if not nd.alive():
                continue
            if nd.name not in clients:
                clients[nd.name] = nd.client(socket_timeout=3)
            c = clients[nd.name]
            k = r.choice(keys)
            try:
                op = r.random()
                if op < 0.35:
                    c.set(k, f"{i}-{r.randrange(1000)}")
                elif op < 0.45 and extra_ops:
                    c.set(k, "short", px=r.randrange(50, 300))
                elif op < 0.6:
                    c.mset({k: f"m{i}", r.choice(keys): f"n{i}"})
                elif op < 0.75:
                    c.delete(k, r.choice(keys))
                elif op < 0.85:
                    c.set(k, "0")
                    c.incr(k)
                else:
                    p = c.pipeline(transaction=True)
                    p.set(k, "tx")
                    p.append(k, "+")
                    p.delete(r.choice(keys))
                    p.execute()
                stats["writes"] += 1
            except Exception:  # outcomes during a leader change: the watcher does not care
                clients.pop(nd.name, None)
                time.sleep(0.02)

    def session(nd):
        try:
            w = Watch(nd.client_port, "", frm=state["last"], timeout_s=0.5)
        except OSError:
            return
        try:
            if isinstance(w.first, RespError):
                stats["compacted" if "COMPACTED" in str(w.first) else "refused"] += 1
                return
            if w.first != [b"watching", b"", state["last"]]:
                errors.append(f"{nd.name}: bad confirmation {w.first!r}")
                return
            stats["sessions"] += 1
            until = time.monotonic() + rnd.uniform(0.2, 1.5)
            while time.monotonic() < until:
                try:
                    m = w.next()
                except socket.timeout:
                    continue
                if isinstance(m, RespError) and str(m).startswith("LAGGED "):
                    # this node's history moved past us (it installed a leader's snapshot,
                    # say): legitimate, provided it names where we stopped
                    if not str(m).endswith(f"FROM {state['last']}"):
                        errors.append(f"{nd.name}: {m} after {state['last']}")
                    stats["lagged"] += 1
                    return
                if isinstance(m, RespError) or m[0] != b"watch":
                    errors.append(f"{nd.name}: unexpected {m!r}")
                    return
                if m[1] != state["last"] + 1:
                    errors.append(f"{nd.name}: revision {m[1]} after {state['last']}")
                    return
                for op, k, v in m[2]:
                    state["model"][k] = v if op == b"put" else None
                state["last"] = m[1]
        except (OSError, ValueError):
            pass  # the node died under us, or a push was cut: resume elsewhere
        finally:
            w.close()

    def watcher():
        while not errors:
            t = state["target"]
            if t is not None and state["last"] >= t:
                return
            live = [nd for nd in cl.nodes if nd.alive()]
            if live:
                session(rnd.choice(live))

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(2)]
    threads.append(threading.Thread(target=watcher))
    for t in threads:
        t.start()
    faults = []
    try:
        for _ in range(kills):
            time.sleep(seconds / (kills + 1))
            leader = cl.wait_leader()
            leader.kill()
            faults.append(f"kill {leader.name}")
            time.sleep(rnd.uniform(0.3, 1.0))
            leader.start()
            faults.append(f"start {leader.name}")
        time.sleep(seconds / (kills + 1))
    finally:
        stop_writes.set()
        for t in threads[:2]:
            t.join(timeout=30)
    time.sleep(1.0)  # every SET PX deadline has passed and the sweeps have run
    leader = cl.wait_leader()
    c = leader.client()
    for _ in range(50):  # a linearizable read of every key at one revision
        before = leader.status()["revision"]
        values = c.mget(keys)
        if leader.status()["revision"] == before:
            break
        time.sleep(0.1)
    state["target"] = before
    threads[2].join(timeout=30)
    alive = threads[2].is_alive()
    state["target"] = -1  # stop it in any case
    threads[2].join(timeout=10)
    print(f"seed {seed}: {faults}; {stats}; watched up to {state['last']} of {before}")
    assert not errors, f"seed {seed}: {errors[:3]}"
    assert not alive and state["last"] == before, f"seed {seed}: stuck at {state['last']}"
    assert stats["sessions"] >= 3 and stats["writes"] > 100, stats
    model = [state["model"].get(k.encode()) for k in keys]
    assert model == values, f"seed {seed}: the stream's state differs from a linearizable read"


def test_a_watcher_reconnecting_to_random_nodes_sees_every_revision_once_in_order(make_cluster):
    seed = int(os.environ.get("KEEL_SEED", random.randrange(1 << 30)))
    print(f"seed {seed} (KEEL_SEED={seed} to repeat)")
    cl = make_cluster(3)
    watch_through_faults(cl, seconds=8, kills=1, seed=seed)


@pytest.mark.slow
@pytest.mark.skipif(not SLOW, reason="slow: set KEEL_SLOW=1")
def test_a_watcher_follows_a_minute_of_leader_kills_with_snapshots(make_cluster):
    seed = int(os.environ.get("KEEL_SEED", random.randrange(1 << 30)))
    print(f"seed {seed} (KEEL_SEED={seed} to repeat)")
    cl = make_cluster(3, "--snapshot-entries", "2000", "--snapshot-log-bytes-min", "0")
    watch_through_faults(cl, seconds=60, kills=6, seed=seed)
