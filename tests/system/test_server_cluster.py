"""test_server_cluster.py - a 3-node keel server cluster seen by clients: replication,
forwarding, linearizable and stale reads, pipelining, and redis-cli.
"""

import signal
import subprocess
import time

import redis

from keelcluster import RespConn, make_cluster, resp_command  # noqa: F401 (fixture)

REDIS_CLI = "/usr/bin/redis-cli"


def cli(port, *args, stdin=None):
    r = subprocess.run(
        [REDIS_CLI, "-h", "127.0.0.1", "-p", str(port), *args],
        input=stdin, capture_output=True, timeout=30,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return r.stdout.decode()


def test_a_write_on_any_node_is_read_at_once_on_every_node(make_cluster):
    cl = make_cluster(3)
    clients = [nd.client() for nd in cl.nodes]
    for i in range(30):
        writer = clients[i % 3]
        assert writer.set("k", f"v{i}") is True
        # no waiting: reads are linearizable by default, also on followers
        for reader in clients:
            assert reader.get("k") == f"v{i}".encode()
    for c in clients:
        assert c.incr("n") in range(1, 4)
    assert [c.get("n") for c in clients] == [b"3"] * 3


def test_writes_sent_to_followers_are_forwarded_to_the_leader(make_cluster):
    cl = make_cluster(3)
    leader = cl.wait_leader()
    before = leader.status()["commit_index"]
    for f in cl.followers(leader):
        c = f.client()
        assert c.info("raft")["raft_role"] == "follower"
        assert c.set(f"from:{f.name}", f.name) is True
        assert c.set(f"from:{f.name}", "again", nx=True) is None  # the leader's reply, relayed
        assert c.incrby("ctr", 5) in (5, 10)
    lc = leader.client()
    for f in cl.followers(leader):
        assert lc.get(f"from:{f.name}") == f.name.encode()
    assert lc.get("ctr") == b"10"
    assert leader.status()["commit_index"] >= before + 6
    assert leader.status()["revision"] == 4  # two SETs and two INCRBYs changed something


def test_a_pipeline_of_1000_commands_gets_its_replies_in_order(make_cluster):
    cl = make_cluster(3)
    leader = cl.wait_leader()
    for nd in (leader, cl.followers(leader)[0]):
        c = nd.client()
        # 1000 writes: INCR and APPEND replies show the order they were applied in
        p = c.pipeline(transaction=False)
        want = []
        for i in range(250):
            p.set(f"p:{nd.name}:{i}", str(i))
            want.append(True)
            p.incr(f"ctr:{nd.name}")
            want.append(i + 1)
            p.append(f"log:{nd.name}", "x")
            want.append(i + 1)
            p.set(f"p:{nd.name}:{i}", "again", nx=True)
            want.append(None)
        assert p.execute() == want
        # 1000 reads of distinct values: each reply belongs to its own command
        p = c.pipeline(transaction=False)
        for i in range(1000):
            p.get(f"p:{nd.name}:{i % 250}")
        assert p.execute() == [str(i % 250).encode() for i in range(1000)]
    for nd in cl.nodes:
        assert nd.client().dbsize() == 2 * 252


# A command refused by its check (here SET's syntax) behind writes still in flight gets its
# error in its own place in the pipeline (server.c writes it to the client's output only
# when it fails, which behind an open deferred reply queues a slot of its own).
def test_pipelined_syntax_errors_between_writes_answer_in_place(make_cluster):
    cl = make_cluster(3)
    leader = cl.wait_leader()
    for nd in (leader, cl.followers(leader)[0]):
        p = nd.client().pipeline(transaction=False)
        for i in range(200):
            p.incr(f"se:{nd.name}")
            if i % 3 == 0:
                p.execute_command("SET", f"se:{nd.name}:{i}", "v", "NX", "XX")
        got = p.execute(raise_on_error=False)
        want_incr = iter(range(1, 201))
        for i, r in enumerate(got):
            if isinstance(r, Exception):
                assert "syntax error" in str(r), r
            else:
                assert r == next(want_incr), (i, r)
        assert len(got) == 200 + 67 and sum(isinstance(r, Exception) for r in got) == 67
        # and in place: an error right after every INCR whose index i % 3 == 0
        assert all(isinstance(got[k], Exception) for k in range(1, len(got), 4)[:67])


# Redis runs a connection's commands in order: a GET pipelined between two SETs of the same
# key sees the first and not the second, although writes go through the Raft log and a read
# behind a write is answered just before the connection's next write applies (requests.c,
# ordered reads), on the leader and through a follower alike.
def test_a_pipelined_read_sees_the_writes_before_it_and_not_after(make_cluster):
    cl = make_cluster(3)
    leader = cl.wait_leader()
    for nd in (leader, cl.followers(leader)[0]):
        c = nd.client()
        wrong = 0
        for i in range(50):
            p = c.pipeline(transaction=False)
            p.set(f"rw{i}", "a")
            p.get(f"rw{i}")
            p.set(f"rw{i}", "b")
            wrong += p.execute()[1] != b"a"
        assert wrong == 0, f"{nd.name}: {wrong} of 50 pipelined GETs missed the SET before them"
        # one long pipeline of SET k i / GET k / INCR c / GET c: every read sees exactly the
        # writes sent before it (one key, so a read served a write too early or too late
        # shows a neighbour's value)
        p = c.pipeline(transaction=False)
        want = []
        for i in range(2000):
            p.set(f"seq:{nd.name}", str(i))
            p.get(f"seq:{nd.name}")
            p.incr(f"n:{nd.name}")
            p.get(f"n:{nd.name}")
            want += [True, str(i).encode(), i + 1, str(i + 1).encode()]
        assert p.execute() == want


def test_redis_cli_commands_and_pipe_mass_insert(make_cluster):
    cl = make_cluster(3)
    a, b, c = cl.nodes
    assert cli(a.client_port, "set", "greeting", "hello world").strip() == "OK"
    assert cli(b.client_port, "get", "greeting").strip() == "hello world"
    assert cli(c.client_port, "incr", "visits").strip() == "1"
    assert cli(c.client_port, "get", "nosuchkey").strip() == ""
    assert "raft_role:" in cli(b.client_port, "info", "raft")
    n = 5000
    mass = b"".join(resp_command("SET", f"mass:{i}", f"value-{i}") for i in range(n))
    out = cli(b.client_port, "--pipe", stdin=mass)
    assert f"errors: 0, replies: {n}" in out, out
    for nd in cl.nodes:
        assert nd.client().dbsize() == n + 2
    assert a.client().mget([f"mass:{i}" for i in range(0, n, 997)]) == [
        f"value-{i}".encode() for i in range(0, n, 997)
    ]


def test_stale_reads_are_served_by_a_follower_without_a_leader(make_cluster):
    cl = make_cluster(3, "--request-timeout-ms", "1000")
    leader = cl.wait_leader()
    f = cl.followers(leader)[0]
    c = RespConn(f.client_port)
    assert c.call("SET", "k", "v1") == b"+OK\r\n"
    cl.wait_applied([f], leader.status()["commit_index"])  # stale reads do not wait for it
    for other in cl.nodes:
        if other is not f:
            other.kill()
    # a linearizable read cannot be served without a quorum: an error, after the timeout
    t0 = time.monotonic()
    reply = c.call("GET", "k")
    assert reply.startswith(b"-TIMEOUT") or reply.startswith(b"-TRYAGAIN"), reply
    assert time.monotonic() - t0 < 5
    assert c.call("KEEL.READS", "stale") == b"+OK\r\n"
    t0 = time.monotonic()
    assert c.call("GET", "k") == b"$2\r\nv1\r\n"
    assert c.call("MGET", "k", "none") == b"*2\r\n$2\r\nv1\r\n$-1\r\n"
    assert c.call("DBSIZE") == b":1\r\n"
    assert time.monotonic() - t0 < 0.5, "stale reads waited"
    # writes still need the leader, also on a stale-reads connection
    w = c.call("SET", "k", "v2")
    assert w.startswith(b"-TIMEOUT") or w.startswith(b"-TRYAGAIN"), w
    assert c.call("KEEL.READS", "linearizable") == b"+OK\r\n"
    r = c.call("GET", "k")
    assert r.startswith(b"-TIMEOUT") or r.startswith(b"-TRYAGAIN"), r


def test_the_cluster_elects_a_new_leader_and_keeps_the_data(make_cluster):
    cl = make_cluster(3)
    leader = cl.wait_leader()
    c = cl.followers(leader)[0].client()
    c.mset({f"k{i}": str(i) for i in range(100)})
    leader.kill()
    new = cl.wait_leader()
    assert new is not leader
    for nd in cl.followers(leader):
        cc = nd.client(retry_on_timeout=False)
        assert cc.mget([f"k{i}" for i in range(100)]) == [str(i).encode() for i in range(100)]
        assert cc.set("after", nd.name) is True
    leader.start()
    cl.wait_applied([leader], new.status()["commit_index"])
    assert leader.client().get("after") is not None
    assert leader.client().info("raft")["raft_role"] == "follower"


def test_redis_py_errors_are_response_errors_not_disconnects(make_cluster):
    cl = make_cluster(3)
    c = cl.nodes[1].client()
    c.set("s", "text")
    try:
        c.incr("s")
        raise AssertionError("INCR on text succeeded")
    except redis.ResponseError as e:
        assert "not an integer" in str(e)
    assert c.get("s") == b"text"


# A follower that pauses past its election timeout (a stop, a slow disk, a starved CPU)
# turns pre-candidate on waking and knows no leader for a moment. Its forwarded writes are
# still the leader's to answer: they are given up only when the connection to that leader
# breaks or a different leader is known, so the leader's replies get through.
def test_a_node_waking_from_a_pause_reads_its_sockets_before_it_times_out(make_cluster):
    """After a stall (SIGSTOP here; a starved CPU or a long fork in life) the timer runs
    before the sockets are polled. The core gets one tick per timer callback, so a woken
    follower reads the leader's waiting heartbeats instead of catching up a second of
    ticks and campaigning at once (which made it forget the leader: leader_changes+1)."""
    cl = make_cluster(3)
    leader = cl.wait_leader()
    f = cl.followers(leader)[0]
    term = leader.status()["term"]
    before = int(f.client().info("raft")["leader_changes"])
    for _ in range(2):
        f.proc.send_signal(signal.SIGSTOP)
        time.sleep(2.5)  # > the longest election timeout (40 ticks of 50 ms)
        f.proc.send_signal(signal.SIGCONT)
        time.sleep(0.5)
    after = int(f.client().info("raft")["leader_changes"])
    assert leader.status()["term"] == term and leader.status()["role"] == "leader"
    assert after == before, f"the woken follower lost the leader {after - before} times"


def test_a_follower_waking_from_a_pause_relays_the_leaders_replies(make_cluster):
    cl = make_cluster(3)
    leader = cl.wait_leader()
    f = cl.followers(leader)[0]
    term = leader.status()["term"]
    spurious = []
    for rnd in range(10):
        c = RespConn(f.client_port)
        c.send(b"".join(resp_command("SET", f"p{rnd}:{i}", "v") for i in range(50)))
        time.sleep(0.001)  # forwarded, not yet answered by the leader
        f.proc.send_signal(signal.SIGSTOP)
        time.sleep(0.5)  # > the election timeout (100-200 ms)
        f.proc.send_signal(signal.SIGCONT)
        replies = [c.reply() for _ in range(50)]
        c.close()
        st = leader.status()
        if st["term"] != term or st["role"] != "leader":
            term = cl.wait_leader().status()["term"]
            continue  # a real leader change: unknown outcomes are expected
        unknown = sum(r.startswith(b"-UNKNOWN") for r in replies)
        if unknown:
            applied = leader.client().mget([f"p{rnd}:{i}" for i in range(50)]).count(b"v")
            spurious.append(f"round {rnd}: {unknown} -UNKNOWN, {applied} of 50 applied")
        time.sleep(0.2)
    assert not spurious, "; ".join(spurious)


def test_a_pipeline_of_writes_and_reads_answers_each_read_after_the_writes_before_it(make_cluster):
    """SET/GET pairs in one pipeline (a read behind a write goes through the log): every GET
    sees the SET just before it on its connection, on the leader and on a follower."""
    cl = make_cluster(3)
    leader = cl.wait_leader()
    for nd in (leader, cl.followers(leader)[0]):
        c = RespConn(nd.client_port)
        n = 2000
        cmds = []
        for i in range(n):
            cmds.append(resp_command("SET", f"mp:{i % 7}", f"{nd.name}-{i}"))
            cmds.append(resp_command("GET", f"mp:{i % 7}"))
            if i % 100 == 0:  # a read after a read, and a write after reads
                cmds.append(resp_command("GET", f"mp:{i % 7}"))
                cmds.append(resp_command("INCR", "mp:count"))
        c.send(b"".join(cmds))
        count = None
        for i in range(n):
            assert c.reply() == b"+OK\r\n"
            want = f"{nd.name}-{i}".encode()
            assert c.reply() == b"$%d\r\n%s\r\n" % (len(want), want), f"pair {i} on {nd.name}"
            if i % 100 == 0:
                assert c.reply() == b"$%d\r\n%s\r\n" % (len(want), want)
                got = int(c.reply()[1:-2])
                assert count is None or got == count + 1
                count = got
        c.close()
