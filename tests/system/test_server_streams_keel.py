"""test_server_streams_keel.py - what keel's streams add to Redis's: idempotent producers.

XADD key ... KEEL.PRODUCER pid seq ...: a retried append (same producer, same sequence)
after a lost reply is answered with the first append's id and appends nothing; an older
sequence is refused; the memory is kept through restarts (it is part of the stream).
"""

import redis

from keelcluster import RespConn, http_get, make_cluster, redis_server  # noqa: F401 (fixtures)


def test_a_retried_append_is_answered_with_the_first_id(make_cluster):
    node = make_cluster(1).nodes[0]
    c = RespConn(node.client_port)
    first = c.call("XADD", "s", "KEEL.PRODUCER", "p1", "1", "*", "f", "v")
    assert first.startswith(b"$")
    assert c.call("XADD", "s", "KEEL.PRODUCER", "p1", "1", "*", "f", "v") == first
    assert c.call("XLEN", "s") == b":1\r\n"
    second = c.call("XADD", "s", "KEEL.PRODUCER", "p1", "2", "*", "f", "w")
    assert second != first and c.call("XLEN", "s") == b":2\r\n"
    assert c.call("XADD", "s", "KEEL.PRODUCER", "p1", "1", "*", "f", "v") == (
        b"-ERR keel: producer sequence 1 is behind the last one, 2\r\n")
    # producers are independent; options combine with trimming and explicit ids
    assert c.call("XADD", "s", "KEEL.PRODUCER", "p2", "1", "MAXLEN", "10", "99999999999999-1",
                  "f", "x") == b"$16\r\n99999999999999-1\r\n"
    assert c.call("XADD", "s", "KEEL.PRODUCER", "p2", "1", "MAXLEN", "10", "99999999999999-1",
                  "f", "x") == b"$16\r\n99999999999999-1\r\n"
    assert c.call("XLEN", "s") == b":3\r\n"
    assert c.call("XADD", "s", "KEEL.PRODUCER", "p3", "0", "*", "f", "v").startswith(
        b"-ERR keel: producer sequence must be")
    assert c.call("XADD", "s", "KEEL.PRODUCER", "x" * 65, "1", "*", "f", "v").startswith(
        b"-ERR keel: producer id longer")
    node.stop()
    node.start()
    c = RespConn(node.client_port)
    assert c.call("XADD", "s", "KEEL.PRODUCER", "p1", "2", "*", "f", "w") == second
    assert c.call("XLEN", "s") == b":3\r\n"


def test_redis_refuses_the_keel_option_so_it_cannot_be_mistaken(redis_server):
    c = redis_server.client()
    try:
        c.execute_command("XADD", "s", "KEEL.PRODUCER", "p1", "1", "*", "f", "v")
        raise AssertionError("redis took KEEL.PRODUCER")
    except redis.ResponseError as e:
        assert "Invalid stream ID" in str(e)


def test_a_nacked_entry_wakes_a_blocked_consumer_after_its_delay(make_cluster):
    import threading
    import time
    node = make_cluster(1).nodes[0]
    c = node.client()
    c.xgroup_create("s", "g", id="0", mkstream=True)
    c.xadd("s", {"f": "v"}, id="1-1")
    assert c.xreadgroup("g", "a", {"s": ">"}) == [[b"s", [(b"1-1", {b"f": b"v"})]]]
    got = {}

    def consumer():
        got["r"] = node.client().xreadgroup("g", "b", {"s": ">"}, block=5000)
        got["t"] = time.monotonic()

    th = threading.Thread(target=consumer)
    th.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    assert c.execute_command("KEEL.XNACK", "s", "g", "1-1", "DELAY", "400") == 1
    th.join(10)
    assert got["r"] == [[b"s", [(b"1-1", {b"f": b"v"})]]]
    assert 0.35 <= got["t"] - t0 < 1.5  # after the delay, not before
    pend = c.xpending_range("s", "g", "-", "+", 10)
    assert [(p["consumer"], p["times_delivered"]) for p in pend] == [(b"b", 2)]


def test_dead_letters_survive_a_restart(make_cluster):
    node = make_cluster(1).nodes[0]
    c = node.client()
    c.xgroup_create("jobs", "workers", id="0", mkstream=True)
    assert c.execute_command("KEEL.XDEADLETTER", "jobs", "workers", "MAXDELIVERIES", "2",
                             "STREAM", "jobs:dead") == b"OK"
    c.xadd("jobs", {"job": "1"}, id="1-1")
    for attempt in range(2):
        assert c.xreadgroup("workers", "w", {"jobs": ">"})
        assert c.execute_command("KEEL.XNACK", "jobs", "workers", "1-1", "DELAY", "0",
                                 "ERROR", f"failed {attempt}") == 1
    dead = c.xrange("jobs:dead")
    assert len(dead) == 1
    fields = dead[0][1]
    assert fields[b"job"] == b"1" and fields[b"keel-id"] == b"1-1"
    assert fields[b"keel-deliveries"] == b"2" and fields[b"keel-error"] == b"failed 1"
    assert c.xpending("jobs", "workers")["pending"] == 0
    metrics = http_get(node.http_port, "/metrics")[1]
    metrics = metrics.decode() if isinstance(metrics, bytes) else metrics
    assert "keel_stream_dead_letters 1" in metrics and "keel_stream_redeliveries 1" in metrics
    node.stop()
    node.start()
    c = node.client()
    assert c.xrange("jobs:dead") == dead
    c.xadd("jobs", {"job": "2"}, id="2-1")
    c.xreadgroup("workers", "w", {"jobs": ">"})
    c.execute_command("KEEL.XNACK", "jobs", "workers", "2-1", "DELAY", "0")
    c.xreadgroup("workers", "w", {"jobs": ">"})
    c.execute_command("KEEL.XNACK", "jobs", "workers", "2-1")
    assert c.xlen("jobs:dead") == 2  # the limit is kept through the restart


def test_priority_reads_serve_the_first_streams_first(make_cluster):
    c = make_cluster(1).nodes[0].client()
    for key in ("high", "low"):
        c.xgroup_create(key, "g", id="0", mkstream=True)
    for i in range(1, 4):
        c.xadd("low", {"n": i}, id=f"{i}-1")
    c.xadd("high", {"n": 1}, id="9-1")
    got = c.execute_command("XREADGROUP", "GROUP", "g", "w", "COUNT", "2", "KEEL.PRIORITY",
                            "STREAMS", "high", "low", ">", ">")
    assert [(s, [e[0] for e in entries]) for s, entries in got] == [
        (b"high", [b"9-1"]), (b"low", [b"1-1"])]
    got = c.execute_command("XREADGROUP", "GROUP", "g", "w", "KEEL.PRIORITY", "BLOCK", "100",
                            "STREAMS", "high", "low", ">", ">")
    assert [(s, [e[0] for e in entries]) for s, entries in got] == [(b"low", [b"2-1", b"3-1"])]


def test_the_leader_trims_entries_past_their_retention_age(make_cluster):
    import time
    cl = make_cluster(3)
    leader = cl.wait_leader()
    c = leader.client()
    old = int(time.time() * 1000) - 10000
    for i in range(5):
        c.xadd("s", {"n": i}, id=f"{old + i}-0")
    c.xadd("s", {"n": "new"})
    assert c.execute_command("KEEL.XRETAIN", "s", "MAXAGE", "3000") == b"OK"
    deadline = time.monotonic() + 5
    while c.xlen("s") != 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert c.xlen("s") == 1  # no command asked for it: the leader's sweep did it
    cl.wait_applied(cl.nodes, leader.status()["commit_index"])
    for nd in cl.nodes:
        assert nd.client().xlen("s") == 1


def scrape(node):
    body = http_get(node.http_port, "/metrics")[1]
    body = body.decode() if isinstance(body, bytes) else body
    got = {}
    for line in body.splitlines():
        if line.startswith("keel_stream") and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            got[name] = int(value)
    return got, body


def test_metrics_report_each_stream_and_group_with_bounded_label_sets(make_cluster):
    cl = make_cluster(3)
    leader = cl.wait_leader()
    c = leader.client()
    for i in range(1, 6):
        c.xadd("orders", {"n": i}, id=f"{i}-1")
    c.xgroup_create("orders", "billing", id="0")
    c.xgroup_create("orders", "mail", id="0")
    c.xreadgroup("billing", "w1", {"orders": ">"}, count=3)
    c.xreadgroup("billing", "w2", {"orders": ">"}, count=1)
    c.xack("orders", "billing", "1-1")
    c.xadd('we"ird\n\\', {"f": "v"}, id="1-1")  # a name that needs escaping
    cl.wait_applied(cl.nodes, leader.status()["commit_index"])
    for nd in cl.nodes:  # every node reports its applied state
        got, body = scrape(nd)
        assert got['keel_stream_length{stream="orders"}'] == 5
        assert got['keel_stream_bytes{stream="orders"}'] > 5 * 8
        assert got['keel_stream_group_pending{stream="orders",group="billing"}'] == 3
        assert got['keel_stream_group_lag{stream="orders",group="billing"}'] == 1
        assert got['keel_stream_group_lag{stream="orders",group="mail"}'] == 5
        assert got['keel_stream_group_pending{stream="orders",group="mail"}'] == 0
        assert got['keel_stream_group_consumers{stream="orders",group="billing"}'] == 2
        assert got['keel_stream_length{stream="we\\"ird\\\\x0a\\\\x5c"}'] == 1, body
        assert got["keel_streams"] == 2 and got["keel_stream_metrics_streams"] == 2
        assert "# TYPE keel_stream_group_lag gauge" in body
    # XDEL inside the group's unread range: Redis cannot know the lag, the series goes
    c.xdel("orders", "5-1")
    got, _ = scrape(leader)
    assert 'keel_stream_group_lag{stream="orders",group="mail"}' not in got
    assert got['keel_stream_length{stream="orders"}'] == 4
    # at most 1000 streams, the first by name; the others counted
    p = c.pipeline(transaction=False)
    for i in range(1005):
        p.xadd(f"s{i:04d}", {"f": "v"})
    p.execute()
    got, body = scrape(leader)
    assert got["keel_streams"] == 1007 and got["keel_stream_metrics_streams"] == 1000
    reported = [k for k in got if k.startswith("keel_stream_length{")]
    assert len(reported) == 1000
    # by name 'o' < 's' < 'w': orders and s0000..s0998 are the first 1000
    assert 'keel_stream_length{stream="s0998"}' in got
    assert 'keel_stream_length{stream="s0999"}' not in got
    assert not any("we" in k for k in reported)
