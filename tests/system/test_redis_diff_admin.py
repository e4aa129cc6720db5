"""test_redis_diff_admin.py - SLOWLOG and the CLIENT subcommands, byte for byte against redis-server 7.0.

The same command sequences go to keel (one node, and a leader and a follower of a 3-node
cluster) and to Debian's redis-server 7.0, and the raw RESP replies must be identical. Only
what cannot agree between two servers is normalized: a SLOWLOG entry's id, Unix time,
duration and client port (the durations are checked on their own: a write's is its Raft
round, never 0 on keel).
"""

import re
import time

from keelcluster import RespConn, make_cluster, redis_server  # noqa: F401 (fixtures)

BIG = "x" * 200
LONG = ["RPUSH", "l"] + [str(i) for i in range(40)]

SLOWLOG_ROWS = [
    ("settings", [["CONFIG", "GET", "slowlog*"], ["CONFIG", "GET", "slowlog-max-len"],
                  ["CONFIG", "SET", "slowlog-log-slower-than", "-5"],
                  ["CONFIG", "SET", "slowlog-log-slower-than", "abc"],
                  ["CONFIG", "SET", "slowlog-max-len", "-1"],
                  ["CONFIG", "SET", "slowlog-max-len", "9223372036854775808"],
                  ["CONFIG", "SET", "slowlog-max-len", "9223372036854775807"],
                  ["CONFIG", "GET", "slowlog-max-len"], ["CONFIG", "SET", "slowlog-max-len", "128"],
                  ["CONFIG", "SET", "slowlog-log-slower-than", "-1"],
                  ["CONFIG", "GET", "slowlog-log-slower-than"]]),
    ("every command", [["CONFIG", "SET", "slowlog-log-slower-than", "0"], ["SLOWLOG", "RESET"],
                      ["SET", "a", "b"], ["GET", "a"], ["GET", "a", "b"], ["INCR", "a"], LONG,
                      ["SET", BIG, "v"], ["HELLO", "2", "AUTH", "default", "secret"],
                      ["CLIENT", "SETNAME", "me"], ["PING"], ["SLOWLOG", "GET", "-1"],
                      ["SLOWLOG", "LEN"], ["SLOWLOG", "GET", "2"], ["SLOWLOG", "GET", "0"],
                      ["SLOWLOG", "GET"], ["SLOWLOG", "LEN"]]),
    ("errors", [["SLOWLOG"], ["SLOWLOG", "GET", "x"], ["SLOWLOG", "GET", "-2"],
                ["SLOWLOG", "GET", "1", "2"], ["SLOWLOG", "LEN", "x"], ["SLOWLOG", "RESET", "x"],
                ["SLOWLOG", "HELP", "x"], ["SLOWLOG", "foo"], ["SLOWLOG", "HELP"]]),
    ("max len", [["CONFIG", "SET", "slowlog-log-slower-than", "0"], ["SLOWLOG", "RESET"],
                 ["SET", "a", "1"], ["SET", "a", "2"], ["SET", "a", "3"], ["SLOWLOG", "LEN"],
                 ["CONFIG", "SET", "slowlog-max-len", "2"], ["SLOWLOG", "LEN"], ["SET", "a", "4"],
                 ["SLOWLOG", "LEN"], ["SLOWLOG", "GET", "-1"],
                 ["CONFIG", "SET", "slowlog-max-len", "128"]]),
    ("off", [["CONFIG", "SET", "slowlog-log-slower-than", "0"], ["SLOWLOG", "RESET"],
             ["CONFIG", "SET", "slowlog-log-slower-than", "-1"], ["SET", "a", "1"], ["GET", "a"],
             ["SLOWLOG", "LEN"], ["CONFIG", "SET", "slowlog-log-slower-than", "100000000"],
             ["SET", "a", "1"], ["SLOWLOG", "LEN"], ["SLOWLOG", "GET"]]),
    ("multi", [["CONFIG", "SET", "slowlog-log-slower-than", "0"], ["SLOWLOG", "RESET"],
               ["MULTI"], ["SET", "a", "1"], ["DISCARD"], ["SLOWLOG", "GET"]]),
]

ENTRY = re.compile(rb"\*6\r\n:\d+\r\n:\d+\r\n:\d+\r\n")
ADDR = re.compile(rb"\$\d+\r\n127\.0\.0\.1:\d+\r\n")


def normalize(cmd, reply):
    if cmd[0].upper() == "HELLO":  # keel's version and connection ids are its own
        return b"HELLO" if reply.startswith(b"*14\r\n") else reply
    if cmd[:2] == ["CONFIG", "GET"] and "*" in cmd[2]:  # Redis's order is its dict's
        head, rest = reply.split(b"\r\n", 1)
        items = rest.split(b"\r\n")[:-1]
        items = [b"\r\n".join(items[i : i + 2]) for i in range(0, len(items), 2)]
        pairs = sorted(zip(items[0::2], items[1::2]))
        return b"\r\n".join([head] + [x for p in pairs for x in p]) + b"\r\n"
    if cmd[0].upper() == "SLOWLOG" and len(cmd) > 1 and cmd[1].upper() == "GET":
        reply = ENTRY.sub(b"*6\r\n:ID\r\n:TS\r\n:US\r\n", reply)
        reply = ADDR.sub(b"$ADDR\r\n", reply)
    return reply


def run_rows(port, rows):
    out = {}
    for name, cmds in rows:
        c = RespConn(port)  # a connection per row: HELLO and SETNAME stay in theirs
        try:
            assert c.call("FLUSHALL") == b"+OK\r\n"
            out[name] = [normalize(cmd, c.call(*cmd)) for cmd in cmds]
        finally:
            c.close()
    return out


def diff_rows(rows, keel, real):
    diffs = []
    for name, cmds in rows:
        for cmd, k, r in zip(cmds, keel[name], real[name]):
            if k != r:
                diffs.append(f"{name}: {cmd[:4]}: keel {k[:400]!r} redis {r[:400]!r}")
    return diffs


def test_slowlog_replies_like_redis_on_one_node(make_cluster, redis_server):
    node = make_cluster(1).nodes[0]
    diffs = diff_rows(SLOWLOG_ROWS, run_rows(node.client_port, SLOWLOG_ROWS),
                      run_rows(redis_server.port, SLOWLOG_ROWS))
    assert not diffs, "replies differ from redis-server:\n" + "\n".join(diffs)


def test_slowlog_replies_like_redis_on_a_leader_and_a_follower(make_cluster, redis_server):
    cl = make_cluster(3)
    leader = cl.wait_leader()
    real = run_rows(redis_server.port, SLOWLOG_ROWS)
    for who, nd in (("leader", leader), ("follower", cl.followers(leader)[0])):
        diffs = diff_rows(SLOWLOG_ROWS, run_rows(nd.client_port, SLOWLOG_ROWS), real)
        assert not diffs, f"{who}: replies differ from redis-server:\n" + "\n".join(diffs)


def test_slowlog_is_per_node_and_times_a_write_to_its_reply(make_cluster):
    cl = make_cluster(3)
    leader = cl.wait_leader()
    follower = cl.followers(leader)[0]
    lc, fc = leader.client(), follower.client()
    for c in (lc, fc):
        c.config_set("slowlog-log-slower-than", 0)
        c.slowlog_reset()
    fc.set("through-the-follower", "v")  # forwarded to the leader, answered by the follower
    entries = fc.slowlog_get(-1)
    sets = [e for e in entries if e["command"] == b"SET through-the-follower v"]
    assert len(sets) == 1, entries
    # the follower's reply waited for a Raft round: the entry says how long, in microseconds
    assert sets[0]["duration"] > 0 and abs(sets[0]["start_time"] - time.time()) < 60, sets
    assert not [e for e in lc.slowlog_get(-1) if b"through-the-follower" in e["command"]], (
        "the leader logs only its own connections' commands (nothing is replicated)"
    )
    # settings are per node too
    assert fc.config_get("slowlog-log-slower-than")["slowlog-log-slower-than"] == "0"
    lc.config_set("slowlog-log-slower-than", 10000)
    assert fc.config_get("slowlog-log-slower-than")["slowlog-log-slower-than"] == "0"
    # only commands at or over the threshold: a threshold no command reaches logs nothing
    fc.config_set("slowlog-log-slower-than", 10**9)
    fc.slowlog_reset()
    for i in range(20):
        fc.set(f"k{i}", "v")
    assert fc.slowlog_len() == 0


# ---- CLIENT PAUSE / UNPAUSE / REPLY / HELP ---------------------------------------------------

CLIENT_ROWS = [
    ("pause errors", [["CLIENT", "PAUSE"], ["CLIENT", "PAUSE", "x"], ["CLIENT", "PAUSE", "-1"],
                      ["CLIENT", "PAUSE", "1.5"], ["CLIENT", "PAUSE", "10", "foo"],
                      ["CLIENT", "PAUSE", "x", "foo"], ["CLIENT", "PAUSE", "10", "write", "extra"],
                      ["CLIENT", "PAUSE", "99999999999999999999"],
                      ["CLIENT", "PAUSE", "0"], ["CLIENT", "PAUSE", "0", "write"],
                      ["CLIENT", "UNPAUSE", "x"], ["CLIENT", "UNPAUSE"], ["SET", "a", "1"]]),
    ("reply errors", [["CLIENT", "REPLY"], ["CLIENT", "REPLY", "foo"], ["CLIENT", "REPLY", "on", "x"],
                      ["CLIENT", "REPLY", "ON"], ["CLIENT", "HELP", "x"], ["CLIENT", "NO-EVICT", "on"],
                      ["CLIENT", "NO-EVICT", "maybe"]]),
]

# Pipelines whose replies are dropped in part: each is sent whole, then PING ends it, and every
# byte that came back is compared.
REPLY_PIPELINES = [
    [["CLIENT", "REPLY", "OFF"], ["SET", "k", "v"], ["GET", "k"], ["NOSUCH"], ["GET"],
     ["CLIENT", "REPLY", "ON"], ["GET", "k"]],
    [["CLIENT", "REPLY", "SKIP"], ["GET", "k"], ["GET", "k"]],
    [["CLIENT", "REPLY", "SKIP"], ["NOSUCH"], ["GET", "k"]],
    [["CLIENT", "REPLY", "SKIP"], ["GET"], ["GET", "k"]],
    [["CLIENT", "REPLY", "SKIP"], ["CLIENT", "REPLY", "SKIP"], ["GET", "k"], ["GET", "k"]],
    [["CLIENT", "REPLY", "OFF"], ["CLIENT", "REPLY", "SKIP"], ["GET", "k"], ["CLIENT", "REPLY", "ON"]],
    [["CLIENT", "REPLY", "SKIP"], ["CLIENT", "REPLY", "ON"], ["GET", "k"]],
    [["CLIENT", "REPLY", "SKIP"], ["CLIENT", "REPLY", "FOO"], ["GET", "k"]],
    [["CLIENT", "REPLY", "OFF"], ["CLIENT", "REPLY", "FOO"], ["CLIENT", "REPLY", "ON"]],
    [["CLIENT", "REPLY", "SKIP"], ["MULTI"], ["SET", "a", "1"], ["EXEC"]],
    [["CLIENT", "REPLY", "OFF"], ["MULTI"], ["INCR", "n"], ["EXEC"], ["CLIENT", "REPLY", "ON"],
     ["GET", "n"]],
    [["CLIENT", "REPLY", "SKIP"], ["SET", "w", "1"], ["SET", "w", "2"], ["GET", "w"]],
    [["CLIENT", "REPLY", "OFF"], ["SUBSCRIBE", "ch"], ["UNSUBSCRIBE", "ch"], ["CLIENT", "REPLY", "ON"]],
]


def run_pipelines(port):
    from keelcluster import resp_command

    out = []
    for cmds in REPLY_PIPELINES:
        c = RespConn(port)
        try:
            assert c.call("FLUSHALL") == b"+OK\r\n"
            c.send(b"".join(resp_command(*cmd) for cmd in cmds) + resp_command("PING", "end"))
            got = b""
            while not got.endswith(b"$3\r\nend\r\n"):
                got += c.reply()
            out.append(got)
        finally:
            c.close()
    return out


def test_client_pause_reply_and_help_reply_like_redis(make_cluster, redis_server):
    cl = make_cluster(3)
    leader = cl.wait_leader()
    real = run_rows(redis_server.port, CLIENT_ROWS)
    real_pipes = run_pipelines(redis_server.port)
    for who, nd in (("leader", leader), ("follower", cl.followers(leader)[0])):
        diffs = diff_rows(CLIENT_ROWS, run_rows(nd.client_port, CLIENT_ROWS), real)
        assert not diffs, f"{who}: replies differ from redis-server:\n" + "\n".join(diffs)
        for cmds, k, r in zip(REPLY_PIPELINES, run_pipelines(nd.client_port), real_pipes):
            assert k == r, f"{who}: {cmds}: keel {k!r} redis {r!r}"
    # HELP is keel's list of what it has, in Redis's words (UNBLOCK is not offered)
    help_lines = leader.client().execute_command("CLIENT", "HELP")
    assert help_lines[0].startswith(b"CLIENT <subcommand>") and b"UNBLOCK" not in b"".join(help_lines)
    for sub in (b"PAUSE", b"UNPAUSE", b"REPLY", b"TRACKING", b"NO-EVICT"):
        assert any(line.startswith(sub) for line in help_lines), sub


def answered_within(conn, timeout_s):
    """The next reply within timeout_s, or None."""
    conn.sock.settimeout(timeout_s)
    try:
        return conn.reply()
    except OSError:
        return None
    finally:
        conn.sock.settimeout(10)


def pause_behaviour(port):
    """What a pause does, as observations both servers must share."""
    from keelcluster import resp_command

    seen = []
    a, b, c, d = (RespConn(port) for _ in range(4))
    try:
        a.call("FLUSHALL")
        # WRITE: reads and read-only transactions run; writes wait, in the order they came
        seen.append(a.call("CLIENT", "PAUSE", "20000", "WRITE"))
        seen.append(b.call("GET", "x"))
        seen.append(c.call("MULTI") + c.call("GET", "x") + c.call("EXEC"))
        b.send(resp_command("SET", "x", "from-b") + resp_command("GET", "x"))
        time.sleep(0.1)
        c.send(resp_command("MULTI") + resp_command("SET", "x", "from-c"))
        seen.append(("b's SET held", answered_within(b, 0.4)))
        seen.append(("c's queued SET held", answered_within(c, 0.3)))
        seen.append(d.call("PING"))
        seen.append(d.call("CLIENT", "UNPAUSE"))
        seen.append(("b after", b.reply(), b.reply()))
        seen.append(("c after", c.reply(), c.call("EXEC")))
        seen.append(d.call("GET", "x"))
        # ALL: every command waits, UNPAUSE too, until the deadline
        t0 = time.monotonic()
        seen.append(a.call("CLIENT", "PAUSE", "700", "ALL"))
        b.send(resp_command("PING"))
        a.send(resp_command("CLIENT", "UNPAUSE"))
        seen.append(("ALL: PING held", answered_within(b, 0.3)))
        seen.append(("ALL: UNPAUSE held", answered_within(a, 0.05)))
        seen.append(("after the deadline", b.reply(), a.reply()))
        waited = time.monotonic() - t0
        assert 0.6 <= waited < 5, waited
        # a second pause keeps the later deadline and the stronger mode
        t0 = time.monotonic()
        seen.append(a.call("CLIENT", "PAUSE", "600", "WRITE") + a.call("CLIENT", "PAUSE", "50", "ALL"))
        seen.append(("ALL for the longer time", b.call("PING")))
        assert time.monotonic() - t0 >= 0.5
    finally:
        for x in (a, b, c, d):
            x.close()
    return seen


def test_client_pause_holds_writes_or_all_like_redis(make_cluster, redis_server):
    real = pause_behaviour(redis_server.port)
    node = make_cluster(1).nodes[0]
    assert pause_behaviour(node.client_port) == real


def test_client_pause_is_per_node_and_a_paused_follower_holds_its_clients_writes(make_cluster):
    cl = make_cluster(3)
    leader = cl.wait_leader()
    follower = cl.followers(leader)[0]
    fc, lc = RespConn(follower.client_port), RespConn(leader.client_port)
    w = RespConn(follower.client_port)
    try:
        assert fc.call("CLIENT", "PAUSE", "20000", "WRITE") == b"+OK\r\n"
        from keelcluster import resp_command

        w.send(resp_command("SET", "k", "through-the-paused-follower"))
        assert answered_within(w, 0.5) is None
        assert lc.call("SET", "k", "on-the-leader") == b"+OK\r\n"  # the leader is not paused
        assert fc.call("GET", "k") == b"$13\r\non-the-leader\r\n"  # reads run on the follower
        assert fc.call("CLIENT", "UNPAUSE") == b"+OK\r\n"
        assert w.reply() == b"+OK\r\n"
        assert lc.call("GET", "k") == b"$27\r\nthrough-the-paused-follower\r\n"
        # a held connection that goes away is dropped from the pause, and nothing it sent runs
        assert fc.call("CLIENT", "PAUSE", "20000", "WRITE") == b"+OK\r\n"
        gone = RespConn(follower.client_port)
        gone.send(resp_command("SET", "k", "never"))
        time.sleep(0.2)
        gone.close()
        time.sleep(0.2)
        assert fc.call("CLIENT", "UNPAUSE") == b"+OK\r\n"
        assert lc.call("GET", "k") == b"$27\r\nthrough-the-paused-follower\r\n"
    finally:
        for x in (fc, lc, w):
            x.close()
