"""test_redis_resp3.py - RESP3 (HELLO 3), byte for byte against redis-server 7.0 (issue 19).

keel writes every reply once, in RESP2, and a connection that said HELLO 3 gets it rendered
as RESP3 by the command's reply shape (src/proto/resp3.c, src/server/resp3.c). The proof is
the differential harness of test_redis_diff.py run again on RESP3 connections: every fixed
row and a seeded random sequence must give the same bytes as a real redis-server in RESP3,
on one node and through a follower. Then what only RESP3 has: maps, sets, nulls, doubles,
verbatim strings and push messages, and pub/sub on the same connection as commands.
"""

import random
import re
import time

from keelcluster import RespConn, make_cluster, redis_server  # noqa: F401 (fixtures)
from test_redis_diff import ROWS, diff_rows, first_difference, random_run, run_rows
from test_redis_diff import seed_and_count
import test_redis_diff_hashset as hs


def parse3(buf, i=0):
    """One RESP3 reply: (value, next index); the type byte kept with every aggregate."""
    t, end = buf[i:i + 1], buf.index(b"\r\n", i)
    line = buf[i + 1:end]
    if t in (b"*", b"~", b">", b"%"):
        n = int(line)
        if n < 0:
            return None, end + 2
        out, j = [], end + 2
        for _ in range(n * (2 if t == b"%" else 1)):
            v, j = parse3(buf, j)
            out.append(v)
        return (t, out), j
    if t in (b"$", b"="):
        n = int(line)
        return (None if n < 0 else buf[end + 2:end + 2 + n]), end + 4 + max(n, 0)
    return t + line, end + 2


def normalize3(cmd, reply):
    """hs.normalize's rule (the table's order is keel's own) on RESP3 replies: the items of
    an unordered reply are sorted, its RESP3 type is kept."""
    name = str(cmd[0]).upper()
    v, _ = parse3(reply)
    if not isinstance(v, tuple):
        return reply
    t, items = v
    key = repr
    if name in hs.WHOLE or (name in ("SPOP", "SRANDMEMBER") and len(cmd) > 2):
        return repr((t, sorted(items, key=key)))
    if name in hs.PAIRS:  # a map: its pairs
        return repr((t, sorted(zip(items[0::2], items[1::2]), key=key)))
    if name == "HRANDFIELD" and len(cmd) > 2:
        return repr((t, sorted(items, key=key)))
    if name in ("HSCAN", "SSCAN") and len(items) == 2 and isinstance(items[1], tuple):
        inner_t, inner = items[1]
        inner = sorted(zip(inner[0::2], inner[1::2])) if name == "HSCAN" else sorted(inner)
        return repr((t, [items[0], (inner_t, inner)]))
    return reply


def run_hs_rows3(port):
    out = {}
    c = resp3(port)
    try:
        for name, cmds in hs.ROWS:
            assert c.call("FLUSHALL") == b"+OK\r\n"
            out[name] = [normalize3(cmd, c.call(*cmd)) for cmd in cmds]
    finally:
        c.close()
    return out


def test_hash_and_set_rows_reply_like_redis_in_resp3(make_cluster, redis_server):
    node = make_cluster(1).nodes[0]
    keel, real = run_hs_rows3(node.client_port), run_hs_rows3(redis_server.port)
    d = [f"{name}: {cmd}: keel {k[:300]!r} redis {r[:300]!r}"
         for name, cmds in hs.ROWS for cmd, k, r in zip(cmds, keel[name], real[name]) if k != r]
    assert not d, "RESP3 replies differ from redis-server:\n" + "\n".join(d)
    seed, n = seed_and_count(1500)
    runs = []
    for port in (node.client_port, redis_server.port):
        rng, c, out = random.Random(seed), resp3(port), []
        c.call("FLUSHALL")
        for _ in range(n):
            cmd = hs.random_command(rng)
            out.append((cmd, normalize3(cmd, c.call(*cmd))))
        c.close()
        runs.append(out)
    d = first_difference(*runs)
    assert d is None, f"seed {seed} (KEEL_DIFF_SEED={seed} reruns it): {d}"


def resp3(port):
    c = RespConn(port)
    hello = c.call("HELLO", "3")
    assert hello.startswith(b"%7\r\n"), hello
    assert b"$5\r\nproto\r\n:3\r\n" in hello, hello
    return c


def test_every_row_replies_like_redis_in_resp3_on_one_node(make_cluster, redis_server):
    node = make_cluster(1).nodes[0]
    d = diff_rows(run_rows(node.client_port, ROWS, resp3), run_rows(redis_server.port, ROWS, resp3))
    assert not d, "RESP3 replies differ from redis-server:\n" + "\n".join(d)


def test_resp3_through_a_follower_and_a_random_sequence(make_cluster, redis_server):
    cl = make_cluster(3)
    leader = cl.wait_leader()
    follower = cl.followers(leader)[0]
    d = diff_rows(run_rows(follower.client_port, ROWS, resp3),
                  run_rows(redis_server.port, ROWS, resp3))
    assert not d, "follower: RESP3 replies differ from redis-server:\n" + "\n".join(d)
    seed, n = seed_and_count(1500)
    real = random_run(redis_server.port, seed, n, resp3)
    for nd in (leader, follower):
        d = first_difference(random_run(nd.client_port, seed, n, resp3), real)
        assert d is None, f"seed {seed} on {nd.name} (KEEL_DIFF_SEED={seed} reruns it): {d}"


# One session per server: what RESP3 adds, compared byte for byte with Redis (HELLO's own
# reply names the server and its version, so it is checked apart).
SESSION = [
    ["SET", "a", "1"], ["GET", "nope"], ["CONFIG", "GET", "maxclients"],
    ["CLIENT", "GETNAME"], ["CLIENT", "SETNAME", "x"], ["CLIENT", "GETNAME"],
    ["XADD", "s", "1-1", "f", "v"], ["XADD", "s", "2-1", "g", "w"],
    ["XREAD", "COUNT", "1", "STREAMS", "s", "0"], ["XREAD", "STREAMS", "s", "nope", "$", "0"],
    ["XREAD", "BLOCK", "50", "STREAMS", "s", "$"],
    ["XGROUP", "CREATE", "s", "g", "0"], ["XREADGROUP", "GROUP", "g", "c", "STREAMS", "s", ">"],
    ["XINFO", "GROUPS", "s"], ["XINFO", "CONSUMERS", "s", "g"],
    ["MULTI"], ["GET", "nope"], ["GET", "a"], ["INCR", "a"], ["EXEC"],
    ["MULTI"], ["CLIENT", "GETNAME"], ["GET", "a"], ["EXEC"],
    ["LCS", "a", "a", "IDX"], ["HELLO", "2"], ["GET", "nope"], ["XREAD", "STREAMS", "s", "0"],
    ["HELLO", "3"], ["RESET"], ["GET", "nope"],
]


def session(port):
    c = resp3(port)
    out = []
    try:
        c.call("FLUSHALL")
        for cmd in SESSION:
            r = c.call(*cmd)
            r = re.sub(rb"(\$4\r\nidle\r\n):\d+", rb"\1:<ms>", r)  # a clock's reading
            out.append(b"<hello>" if cmd[0] == "HELLO" else r)
    finally:
        c.close()
    return out


def test_resp3_types_like_redis(make_cluster, redis_server):
    node = make_cluster(1).nodes[0]
    keel, real = session(node.client_port), session(redis_server.port)
    d = [f"{cmd}: keel {k[:300]!r} redis {r[:300]!r}"
         for cmd, k, r in zip(SESSION, keel, real) if k != r]
    assert not d, "\n".join(d)
    assert keel[1] == b"_\r\n" and keel[2].startswith(b"%1\r\n")  # the null and a map


def pubsub_session(port, publish_port):
    """SUBSCRIBE, then ordinary commands on the same RESP3 connection, then a message
    published from another connection arrives as a push."""
    c = resp3(port)
    out = []
    try:
        c.call("FLUSHALL")
        out.append(c.call("SUBSCRIBE", "ch", "other"))  # two pushes in one reply
        out.append(c.reply())
        out.append(c.call("SET", "a", "1"))
        out.append(c.call("GET", "a"))
        out.append(c.call("PING"))
        p = RespConn(publish_port)
        deadline = time.monotonic() + 5
        while p.call("PUBLISH", "ch", "hello") != b":1\r\n":  # a peer's subscriber: count 1
            assert time.monotonic() < deadline
            time.sleep(0.05)
        p.close()
        out.append(c.reply())
        # from every channel: one push each, in the server's own order (a hash table's)
        both = [c.call("UNSUBSCRIBE"), c.reply()]
        out.append(sorted(r.split(b"\r\n")[4] for r in both))  # which channels
        out.append([r.rsplit(b":", 1)[1] for r in both])  # the counts left, in order: 1, 0
        out.append([r.split(b"\r\n")[:3] for r in both])  # both pushes: >3 unsubscribe
        out.append(c.call("GET", "a"))
    finally:
        c.close()
    return out


def test_pubsub_in_resp3_on_the_same_connection_like_redis(make_cluster, redis_server):
    node = make_cluster(1).nodes[0]
    keel = pubsub_session(node.client_port, node.client_port)
    real = pubsub_session(redis_server.port, redis_server.port)
    assert keel == real, (keel, real)
    assert keel[0].startswith(b">3\r\n") and keel[5] == b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n"


def test_resp3_push_reaches_a_subscriber_on_another_node(make_cluster):
    cl = make_cluster(3)
    leader = cl.wait_leader()
    follower = cl.followers(leader)[0]
    c = resp3(follower.client_port)
    try:
        assert c.call("SUBSCRIBE", "ch") == b">3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n"
        p = RespConn(leader.client_port)
        p.call("PUBLISH", "ch", "x")  # broadcast to the peers: counted on the leader only
        p.close()
        assert c.reply() == b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$1\r\nx\r\n"
        assert c.call("INFO", "server").startswith(b"=")  # verbatim text, on a subscriber
    finally:
        c.close()
