"""test_server_coord.py - coordination commands through a real 3-node keel server cluster:
expiry decided by the leader and replicated as deletions, leases, locks with fencing tokens,
KEEL.CAS, and the sweep commands kept away from clients."""

import time

import pytest
import redis
from conftest import wait_until
from keelcluster import RespConn, resp_command, make_cluster  # noqa: F401 (fixture)


def test_keys_with_a_ttl_disappear_on_every_node_and_are_deleted(make_cluster):
    cl = make_cluster(3)
    leader = cl.wait_leader()
    f = cl.followers(leader)[0]
    c = f.client()  # written through a follower: the leader stamps the deadline
    assert c.set("short", "v", px=400)
    assert c.set("long", "v", ex=60)
    assert c.set("plain", "v")
    assert 0 < c.pttl("short") <= 400
    assert c.ttl("plain") == -1 and c.ttl("nope") == -2
    for nd in cl.nodes:
        assert nd.client().get("short") == b"v"
    time.sleep(0.5)
    for nd in cl.nodes:  # hidden on every node as soon as the deadline passed
        r = nd.client()
        assert r.get("short") is None
        assert r.exists("short") == 0
        assert r.get("long") == b"v"
    # the leader's sweep deletes it for real: DBSIZE drops everywhere
    assert wait_until(lambda: all(nd.client().dbsize() == 2 for nd in cl.nodes))


def test_persist_and_expire_change_a_deadline(make_cluster):
    cl = make_cluster(3)
    c = cl.wait_leader().client()
    c.set("k", "v", px=300)
    assert c.persist("k") == 1
    assert c.ttl("k") == -1
    assert c.pexpire("k", 200) is True
    time.sleep(0.35)
    assert c.get("k") is None


def test_a_lease_takes_its_keys_with_it(make_cluster):
    cl = make_cluster(3)
    c = cl.wait_leader().client()
    lease = c.execute_command("KEEL.LEASE", "GRANT", 500)
    assert isinstance(lease, int) and lease > 0
    assert c.execute_command("KEEL.SET", "svc/a", "10.0.0.1", "LEASE", lease) == b"OK"
    assert c.execute_command("KEEL.SET", "svc/b", "10.0.0.2", "LEASE", lease) == b"OK"
    assert c.get("svc/a") == b"10.0.0.1"
    keep = c.execute_command("KEEL.LEASE", "GRANT", 60000)
    c.execute_command("KEEL.SET", "svc/c", "10.0.0.3", "LEASE", keep)
    # gone everywhere once the lease expires and the leader sweeps it
    assert wait_until(
        lambda: all(nd.client().get("svc/a") is None and nd.client().get("svc/b") is None
                    for nd in cl.nodes))
    assert c.get("svc/c") == b"10.0.0.3"
    assert c.execute_command("KEEL.LEASE", "REVOKE", keep)
    assert c.get("svc/c") is None


def test_fencing_tokens_refuse_a_stale_lock_holder(make_cluster):
    cl = make_cluster(3)
    leader = cl.wait_leader()
    a = leader.client()
    b = cl.followers(leader)[0].client()
    t1 = a.execute_command("KEEL.LOCK", "orders", 300)
    assert isinstance(t1, int)
    assert b.execute_command("KEEL.LOCK", "orders", 300) is None  # held
    assert a.execute_command("KEEL.FENCED", "orders", t1, "SET", "stock", "9") == b"OK"
    time.sleep(0.4)  # the holder "pauses" past its lease
    t2 = b.execute_command("KEEL.LOCK", "orders", 5000)
    assert isinstance(t2, int) and t2 > t1
    assert b.execute_command("KEEL.FENCED", "orders", t2, "SET", "stock", "8") == b"OK"
    with pytest.raises(redis.ResponseError) as e:  # the paused holder wakes up: refused
        a.execute_command("KEEL.FENCED", "orders", t1, "SET", "stock", "100")
    assert "FENCED" in str(e.value) or "holder" in str(e.value)
    assert a.get("stock") == b"8"
    assert b.execute_command("KEEL.UNLOCK", "orders", t2)


def test_cas_on_versions(make_cluster):
    cl = make_cluster(3)
    c = cl.wait_leader().client()
    v1 = c.execute_command("KEEL.CAS", "acct", 0, "100")
    assert isinstance(v1, int) and v1 > 0
    with pytest.raises(redis.ResponseError) as e:
        c.execute_command("KEEL.CAS", "acct", 0, "200")  # must not exist: it does
    assert "CONFLICT" in str(e.value)
    v2 = c.execute_command("KEEL.CAS", "acct", v1, "90")
    assert v2 > v1
    assert c.get("acct") == b"90"


def test_clients_cannot_call_the_leaders_sweeps(make_cluster):
    cl = make_cluster(1)
    c = cl.wait_leader().client()
    for cmd in ("KEEL.EXPIRE.SWEEP", "KEEL.LEASE.SWEEP"):
        with pytest.raises(redis.ResponseError) as e:
            c.execute_command(cmd, 99999999999999, 1000)
        assert "unknown command" in str(e.value)


def test_a_transaction_runs_all_its_commands_in_one_entry(make_cluster):
    cl = make_cluster(3)
    leader = cl.wait_leader()
    for nd in (leader, cl.followers(leader)[0]):  # also through a follower
        p = nd.client().pipeline(transaction=True)
        p.set("t:a", "1")
        p.incr("t:a")
        p.get("t:a")
        p.get("t:missing")
        assert p.execute() == [True, 2, b"2", None]


def test_exec_fails_when_a_watched_key_changed_and_runs_when_not(make_cluster):
    cl = make_cluster(3)
    leader = cl.wait_leader()
    a = RespConn(leader.client_port)  # raw RESP: one connection, replies as sent
    b = cl.followers(leader)[0].client()
    assert a.call("SET", "x", "1") == b"+OK\r\n"
    assert a.call("WATCH", "x") == b"+OK\r\n"
    b.set("x", "2")  # another client changes it after WATCH
    assert a.call("MULTI") == b"+OK\r\n"
    assert a.call("SET", "x", "3") == b"+QUEUED\r\n"
    assert a.call("EXEC") == b"*-1\r\n"  # nil: nothing ran
    assert b.get("x") == b"2"
    assert a.call("WATCH", "x") == b"+OK\r\n"  # unchanged this time
    assert a.call("MULTI") == b"+OK\r\n"
    assert a.call("INCR", "x") == b"+QUEUED\r\n"
    assert a.call("EXEC") == b"*1\r\n:3\r\n"

    # redis-py's optimistic-locking helper (WATCH, read, MULTI, EXEC, retry on conflict)
    def add_ten(pipe):
        v = int(pipe.get("x"))
        pipe.multi()
        pipe.set("x", v + 10)

    b.transaction(add_ten, "x")
    assert b.get("x") == b"13"


def test_watch_on_a_follower_sees_the_connections_own_writes(make_cluster):
    """WATCH reads versions through a read index, in the connection's order: a follower
    that has not applied the client's own write yet must not hand EXEC an old version
    (EXEC would then abort with nobody else writing). Pipelined, so WATCH arrives while
    the SET and the previous EXEC are still in flight."""
    from keelcluster import resp_command

    cl = make_cluster(3)
    f = cl.followers(cl.wait_leader())[0]
    a = RespConn(f.client_port)
    rounds = 50
    batch = b"".join(
        resp_command(*cmd)
        for i in range(rounds)
        for cmd in (("SET", "w", i), ("WATCH", "w"), ("MULTI",), ("INCR", "w"), ("EXEC",))
    )
    a.send(batch)
    for i in range(rounds):
        assert a.reply() == b"+OK\r\n"  # SET
        assert a.reply() == b"+OK\r\n"  # WATCH
        assert a.reply() == b"+OK\r\n"  # MULTI
        assert a.reply() == b"+QUEUED\r\n"
        assert a.reply() == b"*1\r\n:%d\r\n" % (i + 1), f"round {i}"  # EXEC ran
    # KEEL.READS stale keeps the old, local WATCH (no read index): still answers
    assert a.call("KEEL.READS", "stale") == b"+OK\r\n"
    assert a.call("WATCH", "w") == b"+OK\r\n"
    assert a.call("UNWATCH") == b"+OK\r\n"


def test_a_queued_syntax_error_is_answered_inside_exec_as_redis_does(make_cluster):
    """Redis 7.0 refuses only an unknown command or a wrong argument count when queueing;
    INCRBY's bad integer is its own error inside EXEC's reply, and the rest runs."""
    cl = make_cluster(1)
    c = RespConn(cl.wait_leader().client_port)
    assert c.call("MULTI") == b"+OK\r\n"
    assert c.call("SET", "y", "1") == b"+QUEUED\r\n"
    assert c.call("INCRBY", "y", "not-a-number") == b"+QUEUED\r\n"
    assert c.call("EXEC") == (b"*2\r\n+OK\r\n"
                              b"-ERR value is not an integer or out of range\r\n")
    assert c.call("GET", "y") == b"$1\r\n1\r\n"
    assert c.call("EXEC") == b"-ERR EXEC without MULTI\r\n"
    assert c.call("MULTI") == b"+OK\r\n"
    assert c.call("MULTI") == b"-ERR MULTI calls can not be nested\r\n"
    assert c.call("DISCARD") == b"+OK\r\n"
    assert c.call("WATCH", "y") == b"+OK\r\n"
    assert c.call("MULTI") == b"+OK\r\n"
    assert c.call("WATCH", "y") == b"-ERR WATCH inside MULTI is not allowed\r\n"
    assert c.call("EXEC") == b"*0\r\n"


def test_a_queued_command_with_the_wrong_argument_count_aborts_the_transaction(make_cluster):
    cl = make_cluster(1)
    c = RespConn(cl.wait_leader().client_port)
    assert c.call("MULTI") == b"+OK\r\n"
    assert c.call("SET", "z", "1") == b"+QUEUED\r\n"
    assert c.call("SET", "z") == b"-ERR wrong number of arguments for 'set' command\r\n"
    assert c.call("EXEC").startswith(b"-EXECABORT")
    assert c.call("GET", "z") == b"$-1\r\n"


def next_message(ps, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        m = ps.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if m is not None:
            return m
    return None


def test_publish_reaches_subscribers_on_every_node(make_cluster):
    cl = make_cluster(3)
    a, b, c = cl.nodes
    subs = []
    for nd in (a, b, c):
        ps = nd.client().pubsub()
        ps.subscribe("orders")
        subs.append(ps)
    pat = b.client().pubsub()
    pat.psubscribe("order*")
    time.sleep(0.2)  # subscriptions registered (replies read by redis-py lazily)
    for ps in subs + [pat]:
        assert ps.get_message(timeout=2)["type"] in ("subscribe", "psubscribe")
    n = a.client().publish("orders", "order-42 created")
    assert n == 1  # receivers on the publishing node
    for ps in subs:
        m = next_message(ps)
        assert m and m["channel"] == b"orders" and m["data"] == b"order-42 created"
    m = next_message(pat)
    assert m and m["type"] == "pmessage" and m["pattern"] == b"order*"
    assert c.client().publish("nobody-listens", "x") == 0


def test_subscribed_mode_allows_only_subscription_commands(make_cluster):
    cl = make_cluster(1)
    c = RespConn(cl.wait_leader().client_port)
    assert c.call("SUBSCRIBE", "a", "b") == (b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n")
    # the second subscribe reply arrives in the same stream
    assert c.reply() == b"*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n"
    assert c.call("GET", "k").startswith(b"-ERR Can't execute 'get'")  # Redis's lower-case name
    assert c.call("UNSUBSCRIBE", "a") == b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:1\r\n"
    assert c.call("UNSUBSCRIBE") == b"*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:0\r\n"
    assert c.call("GET", "k") == b"$-1\r\n"  # back to normal


def test_cluster_members_and_leadership_transfer(make_cluster):
    cl = make_cluster(3)
    leader = cl.wait_leader()
    f = cl.followers(leader)[0]
    c = leader.client()
    members = c.execute_command("KEEL.CLUSTER", "MEMBERS")
    assert sorted(m[0] for m in members) == sorted(nd.name.encode() for nd in cl.nodes)
    assert [m[0] for m in members if m[4] == 1] == [leader.name.encode()]
    with pytest.raises(redis.ResponseError) as e:  # only the leader hands over
        f.client().execute_command("KEEL.CLUSTER", "TRANSFER", f.name)
    assert leader.name in str(e.value)
    assert c.execute_command("KEEL.CLUSTER", "TRANSFER", f.name) == b"OK"
    assert wait_until(lambda: f.status().get("role") == "leader", timeout_s=10)
    assert f.client().set("after-transfer", "1")
    assert leader.client().get("after-transfer") == b"1"


def test_contending_lock_holders_never_write_with_a_stale_token(make_cluster):
    """Six clients on three nodes contend for one lock with a short TTL for a few seconds;
    some pause past their TTL between taking the lock and writing (a GC pause, a SIGSTOP).
    Every accepted fenced write appends its token to a journal: the journal must never go
    back (no stale token accepted), and some late writes must have been refused."""
    import random
    import threading

    cl = make_cluster(3)
    cl.wait_leader()
    stop = threading.Event()
    count_lock = threading.Lock()
    refused = [0]
    accepted = [0]
    errors = []

    def worker(seed):
        rnd = random.Random(seed)
        r = cl.nodes[seed % 3].client()
        try:
            while not stop.is_set():
                tok = r.execute_command("KEEL.LOCK", "res", 150)
                if tok is None:
                    time.sleep(0.005)
                    continue
                if rnd.random() < 0.3:
                    time.sleep(0.2)  # paused past the TTL: someone else may hold it now
                for _ in range(3):
                    try:
                        r.execute_command("KEEL.FENCED", "res", tok, "APPEND", "journal",
                                          f"{tok},")
                        with count_lock:
                            accepted[0] += 1
                    except redis.ResponseError as e:
                        assert "FENCED" in str(e), str(e)
                        with count_lock:
                            refused[0] += 1
                        break
                try:
                    r.execute_command("KEEL.UNLOCK", "res", tok)
                except redis.ResponseError:
                    pass  # expired and taken by another: nothing to unlock
        except Exception as e:  # reported by the main thread
            errors.append(repr(e))

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in ts:
        t.start()
    time.sleep(6)
    stop.set()
    for t in ts:
        t.join(timeout=30)
    assert not errors, errors[:3]
    journal = [int(x) for x in cl.nodes[0].client().get("journal").decode().split(",") if x]
    assert len(journal) == accepted[0] > 0
    assert all(a <= b for a, b in zip(journal, journal[1:])), "a stale token's write was accepted"
    assert refused[0] > 0, "no late write was refused: the test did not exercise fencing"
    for nd in cl.nodes:  # every replica agrees
        assert nd.client().get("journal") == cl.nodes[0].client().get("journal")


def test_ttl_keys_and_leased_keys_expire_across_a_leader_change(make_cluster):
    cl = make_cluster(3)
    leader = cl.wait_leader()
    c = leader.client()
    lease = c.execute_command("KEEL.LEASE", "GRANT", 1500)
    for i in range(20):
        c.set(f"ttl:{i}", "v", px=1500)
        c.execute_command("KEEL.SET", f"leased:{i}", "v", "LEASE", lease)
    c.set("forever", "v")
    t0 = time.monotonic()
    leader.kill()  # the leader that stamped the deadlines is gone
    survivors = [nd for nd in cl.nodes if nd is not leader]
    cl.wait_leader(among=survivors)
    time.sleep(max(0.0, 1.5 + 0.2 - (time.monotonic() - t0)))
    for nd in survivors:  # hidden at once past the deadline, on every live node
        r = nd.client()
        assert all(r.get(f"ttl:{i}") is None for i in range(20))
        assert all(r.get(f"leased:{i}") is None for i in range(20))
        assert r.get("forever") == b"v"
    # and deleted for real by the new leader's sweeps, within a bound
    assert wait_until(lambda: all(nd.client().dbsize() == 1 for nd in survivors), timeout_s=5)


def test_a_connection_closed_by_a_command_inside_exec_runs_nothing_more(make_cluster):
    """MULTI; SUBSCRIBE a; PUBLISH a <past the output limit>; SUBSCRIBE b; EXEC: the PUBLISH
    closes the connection, and the later SUBSCRIBE must not put the gone client back in the
    registry (a PUBLISH to b then used freed memory)."""
    # the reply limit is at least the largest argument plus 64 KiB (a value always comes back
    # whole: 16 MiB + 64 KiB by default), so six 3 MiB messages to itself pass it
    cl = make_cluster(1, "--reply-bytes-max", "1k")
    node = cl.wait_leader()
    c = RespConn(node.client_port, timeout_s=30)
    c.send(resp_command("MULTI") + resp_command("SUBSCRIBE", "a")
           + resp_command("PUBLISH", "a", b"x" * (3 << 20)) * 6 + resp_command("SUBSCRIBE", "b")
           + resp_command("PING") + resp_command("EXEC"))
    assert c.closed_by_peer()
    other = RespConn(node.client_port)
    assert other.call("PUBLISH", "b", "hello") == b":0\r\n"
    assert other.call("PING") == b"+PONG\r\n"
