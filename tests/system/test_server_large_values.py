"""test_server_large_values.py - values of several MiB: accepted, replicated, caught up, durable.

A command is one Raft entry, one WAL record and one peer frame; server.c sizes them so that
every command the query buffer can hold fits (docs/server.md, "Limits"): values up to the
16 MiB default (Redis's proto-max-bulk-len is 512 MiB) and an MSET of several large values
are accepted, never refused for their total size. Checked here end to end: on a 3-node
cluster through the leader and a follower, a follower that catches them up through the log
and one that gets them in an installed snapshot, and a value acknowledged just before the
leader is killed with SIGKILL.
"""

import hashlib
import os
import time

from keelcluster import RespConn, make_cluster, resp_command  # noqa: F401 (fixtures)

MIB = 1 << 20


def blob(tag, n):
    """n bytes that differ from any other blob's (so a value swapped between keys shows)."""
    seed = hashlib.sha256(tag.encode()).digest()
    return (seed * (n // len(seed) + 1))[:n]


def digest(b):
    return hashlib.sha256(b).hexdigest() if b is not None else None


def stale_get(nd, key):
    """This node's own copy (KEEL.READS stale: no read index round through the leader)."""
    c = RespConn(nd.client_port, timeout_s=60)
    try:
        assert c.call("KEEL.READS", "stale") == b"+OK\r\n"
        r = c.call("GET", key)
    finally:
        c.close()
    if r == b"$-1\r\n":
        return None
    head, _, rest = r.partition(b"\r\n")
    assert head.startswith(b"$") and len(rest) == int(head[1:]) + 2, r[:100]
    return rest[:-2]


def assert_everywhere(cl, nodes, values):
    cl.wait_applied(nodes, max(nd.status()["commit_index"] for nd in cl.running()), timeout_s=60)
    for nd in nodes:
        for k, v in values.items():
            assert digest(stale_get(nd, k)) == digest(v), f"{nd.name}: {k}"


def test_values_of_several_mib_and_large_msets_replicate_through_leader_and_follower(make_cluster):
    cl = make_cluster(3)
    leader = cl.wait_leader()
    follower = cl.followers(leader)[0]
    values = {}
    lc = leader.client(socket_timeout=60)
    fc = follower.client(socket_timeout=60)
    values["s16"] = blob("s16", 16 * MIB)  # the default limit exactly
    values["s8"] = blob("s8", 8_000_000)
    assert lc.set("s16", values["s16"]) and lc.set("s8", values["s8"])
    # the refusals: an MSET of two 600 KB values, a 1 MB SET
    two = {"m600a": blob("a", 600_000), "m600b": blob("b", 600_000)}
    assert lc.mset(two)
    values.update(two)
    values["s1m"] = blob("s1m", 1_000_000)
    assert fc.set("s1m", values["s1m"])
    # several MiB in one MSET, sent to a follower (forwarded whole to the leader)
    three = {f"m5_{i}": blob(f"m5_{i}", 5_000_000) for i in range(3)}
    t0 = time.monotonic()
    assert fc.mset(three)
    print(f"MSET of 3 x 5 MB through a follower: {time.monotonic() - t0:.3f} s")
    values.update(three)
    assert digest(fc.get("m5_2")) == digest(three["m5_2"])  # a linearizable read on the follower
    assert_everywhere(cl, cl.nodes, values)
    # over the limit: the protocol's error, as Redis answers past its proto-max-bulk-len
    c = RespConn(follower.client_port)
    c.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n" % (16 * MIB + 1))
    assert c.reply() == b"-ERR Protocol error: invalid bulk length\r\n"
    assert c.closed_by_peer()
    c.close()
    assert lc.get("k") is None and lc.ping()


def test_a_value_limit_is_the_only_limit_a_command_meets(make_cluster):
    """With --value-bytes-max 1m: a value over it gets Redis's error and nothing changes; an
    MSET of four values at the limit (more than any one entry used to hold) is accepted."""
    cl = make_cluster(3, "--value-bytes-max", "1m")
    leader = cl.wait_leader()
    follower = cl.followers(leader)[0]
    c = RespConn(follower.client_port, timeout_s=60)
    assert c.call("SET", "k", blob("k", MIB + 1)) == b"-ERR string exceeds maximum allowed size\r\n"
    four = {f"q{i}": blob(f"q{i}", MIB) for i in range(4)}
    assert c.call("MSET", *[x for kv in four.items() for x in kv]) == b"+OK\r\n"
    assert c.call("EXISTS", "k") == b":0\r\n"
    c.close()
    assert_everywhere(cl, cl.nodes, four)


def test_a_follower_catches_up_large_values_through_the_log_and_through_a_snapshot(make_cluster):
    # through the log: the default snapshot policy takes no snapshot of so few entries
    cl = make_cluster(3)
    leader = cl.wait_leader()
    lagger = cl.followers(leader)[0]
    lagger.kill()
    lc = leader.client(socket_timeout=60)
    values = {f"log{i}": blob(f"log{i}", 6 * MIB) for i in range(4)}
    for k, v in values.items():
        assert lc.set(k, v)
    log_from = lagger.log_size()
    lagger.start()
    assert_everywhere(cl, [lagger], values)
    assert "installed the leader's snapshot" not in lagger.log_since(log_from)

    # through a snapshot: the leader compacts its log while the follower is down
    cl2 = make_cluster(3, "--snapshot-entries", "20", "--snapshot-log-bytes-min", "0")
    leader = cl2.wait_leader()
    lagger = cl2.followers(leader)[0]
    lc = leader.client(socket_timeout=60)
    lc.set("before", "x")
    cl2.wait_applied([lagger], leader.status()["commit_index"])
    lagger.kill()
    # The leader keeps 1024 entries behind its snapshot for followers a little behind
    # (raft's log_trailing_entries), and its connector to the dead lagger queues up to 64
    # AppendEntries: small batches, many more entries than those, so that the lagger's
    # next entry is gone from the leader's log once it snapshots.
    for b in range(300):
        pipe = lc.pipeline(transaction=False)
        for i in range(10):
            pipe.set(f"small{b}.{i}", i)
        assert all(pipe.execute())
    # A snapshot is due once the log since the last one is as large as the state (x1 to
    # x1.67 by member position, snapshots.c): each big value is written three times over.
    snap_from = leader.log_size()
    for r in range(3):
        values = {f"snap{i}": blob(f"snap{i}.{r}", 8_000_000) for i in range(3)}
        for k, v in values.items():
            assert lc.set(k, v)
    deadline = time.monotonic() + 30
    while "snapshot taken" not in leader.log_since(snap_from) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "snapshot taken" in leader.log_since(snap_from), "no snapshot of the large state"
    log_from = lagger.log_size()
    lagger.start()
    assert_everywhere(cl2, [lagger], values)
    assert "installed the leader's snapshot" in lagger.log_since(log_from)
    # and it restarts from its own snapshot of them
    lagger.kill()
    lagger.start()
    cl2.wait_leader()
    assert_everywhere(cl2, [lagger], values)


def test_a_large_acknowledged_value_survives_sigkill_of_the_leader(make_cluster):
    # one node: the acknowledgement means the value is on this node's disk
    one = make_cluster(1)
    nd = one.nodes[0]
    v = blob("one", 12 * MIB)
    c = RespConn(nd.client_port, timeout_s=60)
    c.send(resp_command("SET", "big", v))
    assert c.reply() == b"+OK\r\n"
    nd.kill()  # SIGKILL right after the acknowledgement
    c.close()
    nd.start()
    one.wait_leader()
    assert digest(nd.client(socket_timeout=60).get("big")) == digest(v)

    # three nodes: the new leader has it, and so does the killed one after its restart
    cl = make_cluster(3)
    leader = cl.wait_leader()
    vals = {"big": blob("three", 12 * MIB), "big2": blob("three2", 9 * MIB)}
    c = RespConn(leader.client_port, timeout_s=60)
    c.send(resp_command("SET", "big", vals["big"]) + resp_command("SET", "big2", vals["big2"]))
    assert c.reply() == b"+OK\r\n" and c.reply() == b"+OK\r\n"
    leader.kill()
    c.close()
    new = cl.wait_leader()
    assert new is not leader
    assert digest(new.client(socket_timeout=60).get("big")) == digest(vals["big"])
    leader.start()
    cl.wait_leader()
    assert_everywhere(cl, cl.nodes, vals)
    assert os.path.isdir(leader.dir)
