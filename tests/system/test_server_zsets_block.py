"""test_server_zsets_block.py - the blocking sorted-set pops (BZPOPMIN, BZPOPMAX, BZMPOP).

They block through the same machinery as the list pops (src/server/lblock.c; docs/kv.md,
"Blocking pops"): a pop waits on the node that took it, leader or follower, and answers
only the committed result. Checked here: timeouts as Redis (*-1), clients blocked on one
key served in order of arrival by a ZADD from another connection, a pop blocked on a
follower, RESP3's shape for a served pop (compared with a real redis-server), and a client
that leaves takes nothing (its members go back with their scores).
"""

import signal
import time


from keelcluster import RespConn, blocked_thread, http_get, make_cluster, redis_server  # noqa: F401 (fixtures)


def test_timeouts_as_redis(make_cluster):
    node = make_cluster(1).nodes[0]
    c = node.client()
    t0 = time.monotonic()
    assert c.bzpopmin(["nope"], 0.3) is None
    assert 0.25 <= time.monotonic() - t0 < 3.0
    raw = RespConn(node.client_port)
    for cmd in (["BZPOPMAX", "nope", "nope2", "0.2"], ["BZMPOP", "0.2", "2", "nope", "nope2", "MIN"],
                ["BZMPOP", "0.2", "1", "nope", "MAX", "COUNT", "3"]):
        t0 = time.monotonic()
        assert raw.call(*cmd) == b"*-1\r\n", cmd  # Redis 7.0's timeout reply
        assert 0.15 <= time.monotonic() - t0 < 3.0
    # 0 waits until a member comes; a fraction of a millisecond is 0 too (Redis)
    out = {}
    th = blocked_thread(node.client_port, lambda r: r.execute_command("BZPOPMIN", "z", "0.0001"), out, "z")
    time.sleep(0.5)
    assert th.is_alive()
    c.zadd("z", {"v": 2.5})
    th.join(10)
    assert list(out["z"]) == [b"z", b"v", 2.5]  # redis-py reads the score
    # errors come at once
    assert raw.call("BZPOPMIN", "z", "-1") == b"-ERR timeout is negative\r\n"
    assert raw.call("BZPOPMIN", "z", str(2**63 // 1000 - 1)) == b"-ERR timeout is out of range\r\n"
    assert raw.call("BZMPOP", "0", "0", "z", "MIN") == b"-ERR numkeys should be greater than 0\r\n"
    c.set("str", "x")
    assert raw.call("BZPOPMIN", "nope", "str", "0").startswith(b"-WRONGTYPE")
    assert raw.call("BZMPOP", "0", "2", "nope", "str", "MIN").startswith(b"-WRONGTYPE")


def test_clients_blocked_on_a_key_are_served_in_order_of_arrival(make_cluster):
    node = make_cluster(1).nodes[0]
    c = node.client()
    out, ths = {}, []
    pops = [lambda r: r.bzpopmin(["q"], 20), lambda r: r.bzpopmax(["q"], 20),
            lambda r: r.execute_command("BZMPOP", "20", "1", "q", "MIN", "COUNT", "2")]
    for i, fn in enumerate(pops):
        ths.append(blocked_thread(node.client_port, fn, out, f"c{i}"))
        time.sleep(0.15)  # arrival order
    c.zadd("q", {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5})
    for th in ths:
        th.join(20)
    assert out["c0"] == (b"q", b"a", 1.0)
    assert out["c1"] == (b"q", b"e", 5.0)
    assert out["c2"] == [b"q", [[b"b", b"2"], [b"c", b"3"]]]
    assert c.zrange("q", 0, -1, withscores=True) == [(b"d", 4.0)]
    # one member, two waiters: the first gets it, the second keeps waiting until its timeout
    c.delete("q")
    ths = [blocked_thread(node.client_port, lambda r: r.bzpopmin(["q"], 20), out, "w0")]
    time.sleep(0.15)
    ths.append(blocked_thread(node.client_port, lambda r: r.bzpopmin(["q"], 1.5), out, "w1"))
    time.sleep(0.3)
    c.zadd("q", {"only": 7})
    for th in ths:
        th.join(20)
    assert out["w0"] == (b"q", b"only", 7.0)
    assert out["w1"] is None
    assert c.exists("q") == 0


def test_a_pop_blocked_on_a_follower(make_cluster):
    cl = make_cluster(3)
    leader = cl.wait_leader()
    f1, f2 = cl.followers(leader)
    out = {}
    th1 = blocked_thread(f1.client_port, lambda r: r.bzpopmin(["q"], 20), out, "f1")
    time.sleep(0.2)
    th2 = blocked_thread(f2.client_port,
                         lambda r: r.execute_command("BZMPOP", "20", "2", "none", "q", "MAX"), out, "f2")
    time.sleep(0.3)
    t0 = time.monotonic()
    leader.client().zadd("q", {"a": 1, "b": 2})
    th1.join(20)
    th2.join(20)
    assert out["f1"] in ((b"q", b"a", 1.0), (b"q", b"b", 2.0)), out
    assert out["f2"] in ([b"q", [[b"a", b"1"]]], [b"q", [[b"b", b"2"]]]), out
    assert out["f1"][1] != out["f2"][1][0][0], out  # each its own member
    assert max(out["f1_t"], out["f2_t"]) - t0 < 5.0
    assert leader.client().exists("q") == 0
    # a timeout on a follower
    t0 = time.monotonic()
    assert f1.client().bzpopmax(["none"], 0.3) is None
    assert time.monotonic() - t0 < 3.0
    # a key of another type written just before the pop: WRONGTYPE at once, as on the leader
    raw = RespConn(f2.client_port)
    for i in range(5):
        assert raw.call("SET", f"s{i}", "v") == b"+OK\r\n"
        assert raw.call("BZPOPMIN", f"s{i}", "0").startswith(b"-WRONGTYPE")


def served_resp3(port, other_port):
    """HELLO 3, a BZPOPMIN and a BZMPOP that block, each served by a ZADD from another
    connection: the raw replies."""
    raw = RespConn(port)
    assert raw.call("HELLO", "3").startswith(b"%")
    other = RespConn(other_port)
    got = []
    for cmd in (["BZPOPMIN", "k", "10"], ["BZMPOP", "10", "1", "k", "MAX", "COUNT", "2"]):
        raw.send(b"*%d\r\n" % len(cmd) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a.encode()) for a in cmd))
        time.sleep(0.3)
        assert other.call("ZADD", "k", "1.5", "a", "2", "b", "inf", "c") == b":3\r\n"
        got.append(raw.reply())
        assert other.call("DEL", "k") == b":1\r\n"
    raw.close()
    other.close()
    return got


def test_a_served_pop_in_resp3_replies_as_redis(make_cluster, redis_server):
    node = make_cluster(1).nodes[0]
    keel = served_resp3(node.client_port, node.client_port)
    real = served_resp3(redis_server.port, redis_server.port)
    assert keel == real
    assert keel[0] == b"*3\r\n$1\r\nk\r\n$1\r\na\r\n,1.5\r\n"


def test_a_client_that_leaves_while_its_follower_is_stopped_takes_nothing(make_cluster):
    """Whether the follower drops the pop first, or proposes it and then gives the members
    back (ZADD with their scores), the set ends as it was."""
    cl = make_cluster(3)
    leader = cl.wait_leader()
    f = cl.followers(leader)[0]
    c = leader.client()
    for round_, cmd in enumerate((["BZPOPMIN", "0"], ["BZMPOP", "0", "1", "MAX", "COUNT", "5"], ["BZPOPMAX", "0"])):
        key = f"q{round_}"
        args = [cmd[0], key, cmd[1]] if len(cmd) == 2 else [cmd[0], cmd[1], cmd[2], key] + cmd[3:]
        raw = RespConn(f.client_port)
        raw.send(b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a.encode()) for a in args))
        time.sleep(0.3)
        f.proc.send_signal(signal.SIGSTOP)
        try:
            c.zadd(key, {"a": 1.25, "b": -2, "c": 1e300})
            raw.close()
            time.sleep(0.2)
        finally:
            f.proc.send_signal(signal.SIGCONT)
        want = [(b"b", -2.0), (b"a", 1.25), (b"c", 1e300)]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            got = c.zrange(key, 0, -1, withscores=True)
            if got == want:
                break
            time.sleep(0.05)
        assert got == want, (cmd, got)
    given = 0.0
    for line in http_get(f.http_port, "/metrics")[1].decode().splitlines():
        if line.startswith("keel_list_bpop_given_back_total"):
            given += float(line.split()[-1])
    print(f"given back: {given} of 3")  # which way each round went is a race
