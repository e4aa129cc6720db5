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
