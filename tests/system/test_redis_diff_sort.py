"""test_redis_diff_sort.py - SORT and SORT_RO, reply for reply against redis-server 7.0.

The harness of test_redis_diff.py (rowdiff.py): fixed sequences of every option and error
case on lists, sets and sorted sets, then a seeded random run (collections, BY weights in
strings and hash fields, GET patterns, LIMIT, DESC, ALPHA, STORE); on one node, a leader and
a follower. keel's documented differences (docs/kv.md, "Differences from Redis") are kept out
of the sequences rather than normalized: elements whose ALPHA BY values tie (Redis leaves
their order to its qsort; keel orders them by element), a set sorted BY a constant pattern
without STORE (Redis answers in its table order; keel sorts as Redis's STORE does), and an
out-of-range number (Redis 7.0 reads errno without clearing it, so one out-of-range number
fails every numeric SORT after it until errno changes: kept to the end of its row).
"""


from keelcluster import make_cluster, redis_server  # noqa: F401 (fixtures)
import rowdiff

BIG = [str((i * 7919) % 1000) + "." + str(i) for i in range(300)]  # many list nodes, unique

ROWS = [
    ("numbers", [["RPUSH", "l", "3", "1", "2", "10", "-5", "2.5", " 7", "", "0x10", "inf", "-inf"],
                 ["SORT", "l"], ["SORT", "l", "DESC"], ["SORT", "l", "ASC", "DESC", "ASC"],
                 ["SORT", "l", "ALPHA"], ["SORT", "l", "alpha", "desc"], ["SORT_RO", "l"],
                 ["SORT", "l", "LIMIT", "1", "2"], ["SORT", "l", "LIMIT", "1", "2", "DESC"],
                 ["SORT", "l", "LIMIT", "-5", "2"], ["SORT", "l", "LIMIT", "30", "2"],
                 ["SORT", "l", "LIMIT", "0", "-1"], ["SORT", "l", "LIMIT", "2", "0"],
                 ["SORT", "l", "LIMIT", "3", "-7"], ["SORT", "l", "LIMIT", "x", "1"],
                 ["SORT", "l", "LIMIT", "1", "1.5"], ["SORT", "l", "LIMIT", "1"],
                 ["SORT", "l", "LIMIT", "9223372036854775807", "9223372036854775807"],
                 ["SORT", "l", "LIMIT", "1", "9223372036854775807"],
                 ["SORT", "l", "LIMIT", "-9223372036854775808", "3"]]),
    ("nosort", [["RPUSH", "l", "c", "a", "b", "d"], ["SORT", "l", "BY", "nosort"],
                ["SORT", "l", "BY", "nosort", "DESC"], ["SORT", "l", "BY", "nosort", "LIMIT", "1", "2"],
                ["SORT", "l", "BY", "nosort", "DESC", "LIMIT", "1", "5"],
                ["SORT", "l", "BY", "nosort", "LIMIT", "9", "2"], ["ZADD", "z", "1", "c", "2", "a", "3", "b"],
                ["SORT", "z", "BY", "nosort"], ["SORT", "z", "BY", "nosort", "DESC"],
                ["SORT", "z", "BY", "nosort", "LIMIT", "1", "1"],
                ["SORT", "z", "BY", "nosort", "DESC", "LIMIT", "1", "5"],
                ["SORT", "z", "BY", "k", "DESC", "LIMIT", "-3", "2"], ["SORT", "z", "ALPHA"],
                ["SORT", "z", "ALPHA", "DESC", "LIMIT", "0", "2"], ["SORT", "z"],
                ["SADD", "s", "b", "a", "c"], ["SORT", "s", "BY", "nosort", "STORE", "d"],
                ["LRANGE", "d", "0", "-1"], ["SORT", "s", "ALPHA"], ["SORT", "s"]]),
    ("by_get", [["RPUSH", "l", "3", "1", "2", "10"], ["SET", "w_3", "30"], ["SET", "w_1", "100"],
                ["SET", "w_2", "5"], ["HSET", "h_3", "f", "c", "n", "3"], ["HSET", "h_1", "f", "a"],
                ["HSET", "h_2", "f", "b", "n", "-1"], ["HSET", "h_10", "f", "d"],
                ["SORT", "l", "BY", "w_*"], ["SORT", "l", "BY", "w_*", "DESC"],
                ["SORT", "l", "BY", "w_*", "GET", "#", "GET", "w_*", "GET", "h_*->f"],
                ["SORT", "l", "BY", "h_*->f", "ALPHA"], ["SORT", "l", "BY", "h_*->f", "ALPHA", "DESC"],
                ["SORT", "l", "BY", "h_*->n"], ["SORT", "l", "BY", "h_*->f"],
                ["SORT", "l", "GET", "nosuch_*"], ["SORT", "l", "GET", "w_*->"],
                ["SORT", "l", "GET", "nostar"], ["SORT", "l", "GET", "#", "GET", "#"],
                ["SORT", "l", "BY", "w_*", "LIMIT", "0", "2", "GET", "#"],
                ["SORT", "l", "GET", "h_*->nope"], ["SORT", "l", "GET", "w_*->f"],
                ["SORT", "l", "BY", "l"], ["SORT", "l", "GET"], ["SORT", "l", "BY"],
                ["SORT_RO", "l", "BY", "w_*", "GET", "#", "GET", "h_*->f"],
                ["SET", "x_1", "b"], ["SET", "x_2", "a"], ["SET", "x_3", "c"], ["SET", "x_10", "d"],
                ["SORT", "l", "BY", "x_*", "ALPHA"], ["SORT", "l", "BY", "x_*", "ALPHA", "LIMIT", "1", "2"],
                ["SORT", "l", "BY", "x_*"]]),
    ("store", [["RPUSH", "l", "3", "1", "2"], ["SET", "w_1", "9"], ["SORT", "l", "STORE", "d"],
               ["LRANGE", "d", "0", "-1"], ["SORT", "l", "BY", "w_*", "GET", "w_*", "GET", "#", "STORE", "d"],
               ["LRANGE", "d", "0", "-1"], ["SET", "str", "x"], ["EXPIRE", "str", "100"],
               ["SORT", "l", "STORE", "str"], ["TTL", "str"], ["TYPE", "str"],
               ["ZADD", "zz", "1", "a"], ["SORT", "l", "DESC", "STORE", "zz"], ["TYPE", "zz"],
               ["LRANGE", "zz", "0", "-1"], ["SORT", "l", "STORE", "l"], ["LRANGE", "l", "0", "-1"],
               ["SORT", "nokey", "STORE", "d"], ["EXISTS", "d"], ["SORT", "l", "LIMIT", "5", "1", "STORE", "l"],
               ["EXISTS", "l"], ["SORT_RO", "l", "STORE", "d"], ["SORT", "l", "STORE"],
               ["RPUSH", "b", *BIG], ["SORT", "b", "STORE", "bs"], ["LLEN", "bs"],
               ["LRANGE", "bs", "0", "4"], ["LRANGE", "bs", "-3", "-1"]]),
    ("errors", [["SORT", "nokey"], ["SORT", "nokey", "DESC", "LIMIT", "0", "5"], ["SET", "str", "x"],
                ["SORT", "str"], ["SORT", "str", "FOO"], ["HSET", "h", "a", "1"], ["SORT", "h"],
                ["XADD", "st", "1-1", "a", "1"], ["SORT", "st"], ["RPUSH", "l", "1", "a", "2"],
                ["SORT", "l", "FOO"], ["SORT", "l"], ["SORT", "l", "ALPHA"], ["SORT", "l", "BY", "nosort"],
                ["SORT", "l", "DESC", "LIMIT"], ["SORT"], ["SORT_RO"], ["RPUSH", "n", "nan", "1"],
                ["SORT", "n"], ["SORT", "n", "ALPHA"]]),
    ("big", [["RPUSH", "b", *BIG], ["SORT", "b"], ["SORT", "b", "DESC", "LIMIT", "100", "20"],
             ["SORT", "b", "ALPHA", "LIMIT", "250", "100"], ["SORT", "b", "BY", "nosort", "LIMIT", "150", "3"],
             ["SORT", "b", "BY", "nosort", "DESC", "LIMIT", "150", "3"],
             ["ZADD", "z", *[x for i, m in enumerate(BIG) for x in (str(i % 17), m)]],
             ["SORT", "z", "BY", "nosort", "LIMIT", "100", "5"], ["SORT", "z", "BY", "nosort", "DESC",
                                                                  "LIMIT", "100", "5"],
             ["SORT", "z", "LIMIT", "0", "5"], ["SADD", "s", *BIG[:200]], ["SORT", "s", "DESC", "LIMIT", "0", "5"],
             # last of all (Redis keeps the stale errno from here on: the module's comment)
             ["RPUSH", "f", "1e400", "2"], ["SORT", "f"]]),
]


def run_rows(port, rows):
    return rowdiff.run_rows(port, rows)


def diff_rows(keel, real):
    return rowdiff.diff_rows(ROWS, keel, real, cmd_shown=10)


def random_command(rng):
    """A collection's build, or a SORT of one (options drawn so that no documented difference
    can show: no ALPHA with a BY pattern, whose elements without a value tie; no set BY a
    constant without STORE; numbers within range)."""
    kind = rng.choice(["list", "set", "zset"])
    key = kind[0] + str(rng.randrange(3))
    r = rng.random()
    if r < 0.3:
        els = [str(rng.randrange(-50, 50)) if rng.random() < 0.7 else rng.choice("abcdefgh") + str(i)
               for i in range(rng.randrange(1, 25))]
        if kind == "list":
            return ["RPUSH", key, *els]
        if kind == "set":
            return ["SADD", key, *els]
        return ["ZADD", key, *[x for e in els for x in (str(rng.randrange(5)), e)]]
    if r < 0.4:
        e = str(rng.randrange(-50, 50)) if rng.random() < 0.7 else rng.choice("abcdefgh") + str(rng.randrange(25))
        w = str(rng.randrange(10 ** 6)) + "." + e  # unique per element: no tie
        return rng.choice([["SET", "w_" + e, w], ["HSET", "h_" + e, "f", w]])
    cmd = [rng.choice(["SORT", "SORT_RO"]), key]
    by = rng.random()
    if by < 0.25:
        cmd += ["BY", rng.choice(["w_*", "h_*->f"])]
    elif by < 0.35 and kind != "set":
        cmd += ["BY", "nosort"]
    if rng.random() < 0.3:
        cmd += ["LIMIT", str(rng.randrange(-2, 20)), str(rng.randrange(-2, 20))]
    for _ in range(rng.choice([0, 0, 1, 2])):
        cmd += ["GET", rng.choice(["#", "w_*", "h_*->f", "nosuch_*"])]
    if rng.random() < 0.3:
        cmd.append("DESC")
    if rng.random() < 0.5 and "*" not in "".join(cmd[2:4]):
        cmd.append("ALPHA")  # not with a BY pattern: elements it finds nothing for would tie
    if cmd[0] == "SORT" and rng.random() < 0.2:
        cmd += ["STORE", "dst" + str(rng.randrange(2))]
    return cmd


def random_run(port, seed, n):
    return rowdiff.random_run(port, seed, n, random_command)


def test_sort_replies_like_redis_on_one_node(make_cluster, redis_server):
    node = make_cluster(1).nodes[0]
    diffs = diff_rows(run_rows(node.client_port, ROWS), run_rows(redis_server.port, ROWS))
    assert not diffs, "replies differ from redis-server:\n" + "\n".join(diffs)


def test_sort_replies_like_redis_on_a_leader_and_a_follower(make_cluster, redis_server):
    cl = make_cluster(3)
    leader = cl.wait_leader()
    real = run_rows(redis_server.port, ROWS)
    for who, nd in (("leader", leader), ("follower", cl.followers(leader)[0])):
        diffs = diff_rows(run_rows(nd.client_port, ROWS), real)
        assert not diffs, f"{who}: replies differ from redis-server:\n" + "\n".join(diffs)


def test_a_random_sort_sequence_replies_like_redis(make_cluster, redis_server):
    rowdiff.check_random_through_a_follower(make_cluster, redis_server, random_run, 2000)
