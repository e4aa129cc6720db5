"""test_server_lists_block.py - the blocking pops (BLPOP, BRPOP, BLMOVE, BRPOPLPUSH, BLMPOP).

A blocked pop waits on the node that took it, leader or follower; when its key gets
elements it proposes its pop as a write and answers only the committed result (docs/kv.md,
"Blocking pops"). Checked here: timeouts as Redis (seconds as a double, 0 forever, *-1),
clients blocked on one key served in order of arrival, MULTI never blocks, a push inside
MULTI serves a blocked client as Redis does (compared with a real redis-server), a client
that leaves takes nothing, a pop blocked on a follower, and a 3-node cluster whose leader
is SIGKILLed and restarted under producers and blocked consumers: every acknowledged push
is popped exactly once, nothing twice.
"""

import random
import signal
import threading
import time

import redis

from keelcluster import RespConn, blocked_thread, http_get, make_cluster, redis_server  # noqa: F401 (fixtures)


def test_timeouts_as_redis(make_cluster):
    node = make_cluster(1).nodes[0]
    c = node.client()
    t0 = time.monotonic()
    assert c.blpop(["nope"], 0.3) is None
    assert 0.25 <= time.monotonic() - t0 < 3.0
    raw = RespConn(node.client_port)
    for cmd in (["BLMOVE", "nope", "d", "LEFT", "RIGHT", "0.2"], ["BRPOPLPUSH", "nope", "d", "0.2"],
                ["BLMPOP", "0.2", "2", "nope", "nope2", "LEFT"], ["BRPOP", "nope", "0.2"]):
        t0 = time.monotonic()
        assert raw.call(*cmd) == b"*-1\r\n", cmd  # Redis 7.0's timeout reply for every list pop
        assert 0.15 <= time.monotonic() - t0 < 3.0
    # 0 waits until an element comes; a fraction of a millisecond is 0 too (Redis)
    out = {}
    th = blocked_thread(node.client_port, lambda r: r.execute_command("BLPOP", "z", "0.0001"), out, "z")
    time.sleep(0.5)
    assert th.is_alive()
    c.rpush("z", "v")
    th.join(10)
    assert list(out["z"]) == [b"z", b"v"]
    # errors come at once
    assert raw.call("BLPOP", "z", "-1") == b"-ERR timeout is negative\r\n"
    assert raw.call("BLPOP", "z", str(2**63 // 1000 - 1)) == b"-ERR timeout is out of range\r\n"
    c.set("str", "x")
    assert raw.call("BLPOP", "nope", "str", "0").startswith(b"-WRONGTYPE")


def test_clients_blocked_on_a_key_are_served_in_order_of_arrival(make_cluster):
    node = make_cluster(1).nodes[0]
    c = node.client()
    out, ths = {}, []
    for i in range(5):
        ths.append(blocked_thread(node.client_port, lambda r: r.blpop(["q"], 20), out, f"c{i}"))
        time.sleep(0.15)  # arrival order
    c.rpush("q", "a", "b", "c", "d", "e")
    for th in ths:
        th.join(20)
    assert [out[f"c{i}"] for i in range(5)] == [(b"q", x) for x in (b"a", b"b", b"c", b"d", b"e")]
    assert c.exists("q") == 0
    # one element, three waiters: the first gets it, the others keep waiting
    ths = []
    for i in range(3):
        ths.append(blocked_thread(node.client_port, lambda r: r.brpop(["w"], 20), out, f"w{i}"))
        time.sleep(0.15)
    c.lpush("w", "1")
    ths[0].join(10)
    assert out["w0"] == (b"w", b"1")
    time.sleep(0.3)
    assert ths[1].is_alive() and ths[2].is_alive()
    c.lpush("w", "2", "3")
    ths[1].join(10)
    ths[2].join(10)
    assert {out["w1"], out["w2"]} == {(b"w", b"2"), (b"w", b"3")}
    assert out["w1_t"] <= out["w2_t"] or out["w1"] == (b"w", b"2")
    # BLMOVE and BLMPOP wait and are served too
    th1 = blocked_thread(node.client_port, lambda r: r.blmove("src", "dst", 20, "RIGHT", "LEFT"), out, "m")
    time.sleep(0.2)
    th2 = blocked_thread(node.client_port,
                         lambda r: r.blmpop(20, 2, "x1", "x2", direction="LEFT", count=2), out, "mp")
    time.sleep(0.2)
    c.rpush("src", "s1", "s2")
    c.rpush("x2", "1", "2", "3")
    th1.join(10)
    th2.join(10)
    assert out["m"] == b"s2" and c.lrange("dst", 0, -1) == [b"s2"] and c.lrange("src", 0, -1) == [b"s1"]
    assert out["mp"] == [b"x2", [b"1", b"2"]] and c.lrange("x2", 0, -1) == [b"3"]


def test_multi_does_not_block_and_a_push_in_multi_serves_as_in_redis(make_cluster, redis_server):
    node = make_cluster(1).nodes[0]
    results = {}
    for who, port in (("keel", node.client_port), ("redis", redis_server.port)):
        c = redis.Redis(host="127.0.0.1", port=port, socket_timeout=20)
        c.flushall()
        p = c.pipeline(transaction=True)
        p.blpop(["empty"], 0)
        p.blmove("empty", "d", 0, "LEFT", "LEFT")
        p.execute_command("BLMPOP", "0", "1", "empty", "LEFT")
        t0 = time.monotonic()
        got = p.execute()
        assert time.monotonic() - t0 < 2.0
        out = {}
        # served after the whole transaction: the head after both pushes
        th = blocked_thread(port, lambda r: r.blpop(["k"], 10), out, "a")
        time.sleep(0.3)
        p = c.pipeline(transaction=True)
        p.lpush("k", "x")
        p.lpush("k", "y")
        p.execute()
        th.join(10)
        # a push popped again inside the same transaction serves nobody
        th2 = blocked_thread(port, lambda r: r.blpop(["j"], 1), out, "b")
        time.sleep(0.3)
        p = c.pipeline(transaction=True)
        p.rpush("j", "1")
        p.lpop("j")
        p.execute()
        th2.join(10)
        results[who] = (got, out["a"], c.lrange("k", 0, -1), out["b"], c.exists("j"))
        c.close()
    assert results["keel"] == results["redis"], results


def test_a_client_that_leaves_takes_nothing(make_cluster):
    node = make_cluster(1).nodes[0]
    c = node.client()
    for _ in range(3):
        raw = RespConn(node.client_port)
        raw.send(b"*3\r\n$5\r\nBLPOP\r\n$1\r\nq\r\n$1\r\n0\r\n")
        time.sleep(0.1)
        raw.close()
    time.sleep(0.3)
    c.rpush("q", "a", "b")
    time.sleep(0.3)
    assert c.lrange("q", 0, -1) == [b"a", b"b"]


def test_a_client_that_leaves_while_its_follower_is_stopped_takes_nothing(make_cluster):
    """The follower learns of the elements and of the client's departure in one loop turn:
    whether it drops the pop first, or proposes it and then pushes the elements back, the
    list ends as it was, in order."""
    cl = make_cluster(3)
    leader = cl.wait_leader()
    f = cl.followers(leader)[0]
    c = leader.client()
    for round_ in range(3):
        key = f"q{round_}"
        raw = RespConn(f.client_port)
        raw.send(b"*3\r\n$5\r\nBLPOP\r\n$%d\r\n%s\r\n$1\r\n0\r\n" % (len(key), key.encode()))
        time.sleep(0.3)
        f.proc.send_signal(signal.SIGSTOP)
        try:
            c.rpush(key, "a", "b")
            raw.close()
            time.sleep(0.2)
        finally:
            f.proc.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            got = c.lrange(key, 0, -1)
            if got == [b"a", b"b"]:
                break
            time.sleep(0.05)
        assert got == [b"a", b"b"], got


def test_a_pop_blocked_on_a_follower(make_cluster):
    cl = make_cluster(3)
    leader = cl.wait_leader()
    f1, f2 = cl.followers(leader)
    out = {}
    th1 = blocked_thread(f1.client_port, lambda r: r.blpop(["q"], 20), out, "f1")
    time.sleep(0.2)
    th2 = blocked_thread(f2.client_port, lambda r: r.brpop(["q"], 20), out, "f2")
    time.sleep(0.3)
    t0 = time.monotonic()
    leader.client().rpush("q", "a", "b")
    th1.join(20)
    th2.join(20)
    assert sorted([out["f1"], out["f2"]]) == [(b"q", b"a"), (b"q", b"b")]
    assert max(out["f1_t"], out["f2_t"]) - t0 < 5.0
    assert leader.client().exists("q") == 0
    # a timeout on a follower
    t0 = time.monotonic()
    assert f1.client().blpop(["none"], 0.3) is None
    assert time.monotonic() - t0 < 3.0


def test_leader_killed_under_blocked_consumers_every_acknowledged_element_popped_once(make_cluster):
    cl = make_cluster(3)
    leader = cl.wait_leader()
    consumers_on = cl.followers(leader)
    stop = threading.Event()
    acked, unknown, popped, errors = set(), set(), [], []
    lock = threading.Lock()
    nodes = list(cl.nodes)

    def producer(pid):
        rng = random.Random(pid)
        n = 0
        c = None
        while not stop.is_set():
            nd = rng.choice(nodes)
            if not nd.alive():
                continue
            n += 1
            v = f"p{pid}-{n}"
            try:
                if c is None or c.connection_pool.connection_kwargs["port"] != nd.client_port:
                    c = redis.Redis(host="127.0.0.1", port=nd.client_port, socket_timeout=5)
                c.lpush("q", v)
                with lock:
                    acked.add(v)
            except redis.ResponseError as e:
                with lock:
                    (unknown.add(v) if not str(e).startswith("TRYAGAIN") else None)
                time.sleep(0.05)
            except (redis.ConnectionError, redis.TimeoutError):
                with lock:
                    unknown.add(v)
                c = None
                time.sleep(0.05)
            time.sleep(0.005)

    def consumer(nd, cid):
        c = redis.Redis(host="127.0.0.1", port=nd.client_port, socket_timeout=30)
        while not stop.is_set():
            try:
                r = c.brpop(["q"], 1)
            except redis.ResponseError as e:
                with lock:
                    errors.append((cid, str(e)))
                continue
            if r is not None:
                with lock:
                    popped.append(r[1].decode())
        c.close()

    ths = [threading.Thread(target=producer, args=(i,), daemon=True) for i in range(3)]
    ths += [threading.Thread(target=consumer, args=(nd, f"{nd.name}-{i}"), daemon=True)
            for nd in consumers_on for i in range(2)]
    for th in ths:
        th.start()
    time.sleep(2.0)
    leader.kill()  # SIGKILL
    time.sleep(2.0)
    leader.start()
    time.sleep(3.0)
    stop.set()
    for th in ths:
        th.join(40)
    assert not any(th.is_alive() for th in ths)
    # what is left in the list
    nl = cl.wait_leader()
    c = nl.client()
    while True:
        rest = c.rpop("q", 1000)
        if not rest:
            break
        popped += [x.decode() for x in rest]
    counts = {}
    for v in popped:
        counts[v] = counts.get(v, 0) + 1
    twice = [v for v, n in counts.items() if n > 1]
    assert not twice, f"popped more than once: {twice[:10]}"
    missing = sorted(acked - set(counts))
    assert not missing, f"acknowledged but never popped: {missing[:10]} (of {len(acked)})"
    assert set(counts) <= acked | unknown
    assert not errors, errors[:5]
    metrics = {}
    for nd in cl.nodes:
        for line in http_get(nd.http_port, "/metrics")[1].decode().splitlines():
            if line.startswith("keel_list_bpop_"):
                name, val = line.split()
                metrics[name] = metrics.get(name, 0) + float(val)
    print(f"acked {len(acked)} unknown {len(unknown)} popped {len(popped)} {metrics}")
    assert len(acked) > 50 and len(popped) > 50
