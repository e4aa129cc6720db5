"""rowdiff.py - the differential harness's moving parts: run the same commands on keel and on
a real redis-server, and compare the replies byte for byte.

A row is (name, [command, ...]); a command is a list of arguments. Replies pass through a
normalize(cmd, reply) function where the two may legitimately differ (an unordered reply
sorted, a random pick replaced by its check).
"""

import os
import random

from keelcluster import RespConn


def as_is(cmd, reply):
    return reply


def run_rows(port, rows, normalize=as_is, connect=RespConn, per_row_connection=False):
    """Every row's replies, normalized: {name: [reply, ...]}. By default one connection
    (connect(port): test_redis_resp3.py passes one that said HELLO 3) runs every row after a
    FLUSHALL; per_row_connection opens a fresh connection per row and flushes nothing."""
    out = {}
    c = None if per_row_connection else connect(port)
    try:
        for name, cmds in rows:
            if per_row_connection:
                c = connect(port)
            else:
                assert c.call("FLUSHALL") == b"+OK\r\n"
            try:
                out[name] = [normalize(cmd, c.call(*cmd)) for cmd in cmds]
            finally:
                if per_row_connection:
                    c.close()
                    c = None
    finally:
        if c is not None:
            c.close()
    return out


def diff_rows(rows, keel, real, cmd_shown=None):
    """One line per reply that differs; cmd_shown cuts long commands to their first words."""
    diffs = []
    for name, cmds in rows:
        for cmd, k, r in zip(cmds, keel[name], real[name]):
            if k != r:
                shown = cmd if cmd_shown is None else cmd[:cmd_shown]
                diffs.append(f"{name}: {shown}: keel {k[:300]!r} redis {r[:300]!r}")
    return diffs


def random_run(port, seed, n, random_command, normalize=as_is, connect=RespConn):
    """n commands drawn by random_command(rng) from a generator seeded with seed, after a
    FLUSHALL: [(cmd, normalized reply), ...]."""
    rng = random.Random(seed)
    c = connect(port)
    out = []
    try:
        c.call("FLUSHALL")
        for _ in range(n):
            cmd = random_command(rng)
            out.append((cmd, normalize(cmd, c.call(*cmd))))
    finally:
        c.close()
    return out


def first_difference(keel, real):
    for i, ((cmd, k), (_, r)) in enumerate(zip(keel, real)):
        if k != r:
            return f"command {i}: {cmd}: keel {k[:300]!r} redis {r[:300]!r}"
    return None


def seed_and_count(default_n):
    """The run's seed (KEEL_DIFF_SEED reruns one) and its length (KEEL_DIFF_COMMANDS)."""
    seed = int(os.environ.get("KEEL_DIFF_SEED", random.randrange(1 << 32)))
    return seed, int(os.environ.get("KEEL_DIFF_COMMANDS", default_n))


def check_random_through_a_follower(make_cluster, redis_server, run, default_n):
    """A seeded random run (run(port, seed, n)) on redis-server, then on a 3-node cluster's
    leader and one follower: the first difference fails the test, naming the seed."""
    seed, n = seed_and_count(default_n)
    cl = make_cluster(3)
    leader = cl.wait_leader()
    real = run(redis_server.port, seed, n)
    for nd in (leader, cl.followers(leader)[0]):
        d = first_difference(run(nd.client_port, seed, n), real)
        assert d is None, f"seed {seed} on {nd.name} (KEEL_DIFF_SEED={seed} reruns it): {d}"
