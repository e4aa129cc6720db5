"""test_ap.py - the AP keyspace (KEEL.AP.*, docs/ap.md) on a real 3-node keel server cluster:
quorums and the replica counts in the replies, siblings and contexts, tombstones, counters,
a dead replica, read repair, and durability across restarts.
"""

import time

import pytest
import redis

from keelcluster import make_cluster  # noqa: F401 (fixture)


def ap(c, *args):
    return c.execute_command(*args)


def get(c, key, *opts):
    replies, ctx, *values = ap(c, "KEEL.AP.GET", key, *opts)
    return replies, ctx, values


def eventually(fn, timeout_s=10.0):
    """fn() until it returns true (peer connections come up after the leader is known)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            v = fn()
            if v:
                return v
        except (redis.ResponseError, OSError):  # OSError: a restarted node's HTTP port, not up yet
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def all_connected(clients):
    """Every node reaches every other both ways (after a restart a peer reconnects with backoff;
    until then a request at ALL answers NOQUORUM, as it should)."""
    for x in clients:
        eventually(lambda x=x: get(x, "warm", "R", "ALL")[0] == 3)


def test_a_write_at_all_is_read_on_every_node(make_cluster):
    cl = make_cluster(3)
    c = [nd.client() for nd in cl.nodes]
    eventually(lambda: ap(c[0], "KEEL.AP.PUT", "warm", "x", "W", "ALL") == 3)
    assert ap(c[0], "KEEL.AP.PUT", "k", "v1", "W", "ALL") == 3
    for x in c:
        replies, ctx, values = get(x, "k", "R", "ALL")
        assert replies == 3 and values == [b"v1"] and len(ctx) > 0
    assert get(c[1], "nope", "R", "ALL")[2] == []


def test_blind_writes_are_siblings_and_a_write_with_the_context_resolves_them(make_cluster):
    cl = make_cluster(3)
    c = [nd.client() for nd in cl.nodes]
    eventually(lambda: ap(c[0], "KEEL.AP.PUT", "warm", "x", "W", "ALL") == 3)
    assert ap(c[0], "KEEL.AP.PUT", "k", "a", "W", "ALL") == 3
    assert ap(c[1], "KEEL.AP.PUT", "k", "b", "W", "ALL") == 3  # no context: a sibling
    replies, ctx, values = get(c[2], "k", "R", "ALL")
    assert sorted(values) == [b"a", b"b"]
    assert ap(c[2], "KEEL.AP.PUT", "k", "c", "CTX", ctx, "W", "ALL") == 3
    assert get(c[0], "k", "R", "ALL")[2] == [b"c"]
    # a write with an old context supersedes only what that context saw
    assert ap(c[1], "KEEL.AP.PUT", "k", "d", "CTX", ctx, "W", "ALL") == 3
    assert sorted(get(c[0], "k", "R", "ALL")[2]) == [b"c", b"d"]
    # a delete with the context leaves a tombstone: no values, the context remains
    _, ctx, _ = get(c[0], "k", "R", "ALL")
    assert ap(c[0], "KEEL.AP.DEL", "k", "CTX", ctx, "W", "ALL") == 3
    replies, ctx2, values = get(c[1], "k", "R", "ALL")
    assert values == [] and len(ctx2) >= len(ctx)


def test_counters_count_every_increment_from_every_node(make_cluster):
    cl = make_cluster(3)
    c = [nd.client() for nd in cl.nodes]
    eventually(lambda: ap(c[0], "KEEL.AP.PUT", "warm", "x", "W", "ALL") == 3)
    want = 0
    for i in range(30):
        d = (i % 7) - 2 or 1
        assert ap(c[i % 3], "KEEL.AP.INCR", "n", str(d), "W", "QUORUM") >= 2
        want += d
    for x in c:
        replies, _, values = get(x, "n", "R", "ALL")
        assert replies == 3 and values == [want]


def test_bad_input_gets_a_clear_error_and_changes_nothing(make_cluster):
    cl = make_cluster(3)
    c = cl.nodes[0].client()
    eventually(lambda: ap(c, "KEEL.AP.PUT", "k", "v", "W", "ALL") == 3)
    for args, text in [
        (("KEEL.AP.PUT", "k", "x", "CTX", "zz"), "bad context"),
        (("KEEL.AP.PUT", "k", "x", "CTX", "02"), "bad context"),
        (("KEEL.AP.PUT", "k", "x", "W", "4"), "W must be 1..3"),
        (("KEEL.AP.GET", "k", "R", "MOST"), "R must be 1..3"),
        (("KEEL.AP.INCR", "k", "1"), "WRONGTYPE"),
        (("KEEL.AP.INCR", "n", "x"), "non-zero integer"),
        (("KEEL.AP.PUT", "k", "x", "W"), "syntax"),
        (("KEEL.AP.DEL", "k"), "needs the context"),
    ]:
        with pytest.raises(redis.ResponseError, match=text):
            ap(c, *args)
    assert get(c, "k", "R", "ALL")[2] == [b"v"]


def test_a_dead_replica_fails_w_all_and_is_repaired_by_a_read_after_it_returns(make_cluster):
    cl = make_cluster(3)
    c = [nd.client() for nd in cl.nodes]
    eventually(lambda: ap(c[0], "KEEL.AP.PUT", "warm", "x", "W", "ALL") == 3)
    dead = cl.nodes[2]
    dead.kill()
    with pytest.raises(redis.ResponseError, match=r"NOQUORUM 2 of 3 replicas answered"):
        ap(c[0], "KEEL.AP.PUT", "k", "v1", "W", "ALL")  # stored on two, not acknowledged
    assert ap(c[0], "KEEL.AP.PUT", "k", "v2", "W", "QUORUM") == 2
    replies, _, values = get(c[1], "k", "R", "QUORUM")
    assert replies == 2 and sorted(values) == [b"v1", b"v2"]  # v1 was kept, as a sibling
    dead.start()
    back = dead.client()
    all_connected(c[:2] + [back])
    # the returned node has nothing; a read at ALL merges and repairs it
    eventually(lambda: get(c[0], "k", "R", "ALL")[0] == 3)
    eventually(lambda: sorted(get(back, "k", "R", "ONE")[2]) == [b"v1", b"v2"])


def test_acknowledged_writes_survive_restarting_every_node(make_cluster):
    cl = make_cluster(3)
    c = [nd.client() for nd in cl.nodes]
    eventually(lambda: ap(c[0], "KEEL.AP.PUT", "warm", "x", "W", "ALL") == 3)
    for i in range(20):
        assert ap(c[i % 3], "KEEL.AP.PUT", f"k{i}", f"v{i}", "W", "ONE") >= 1
        assert ap(c[i % 3], "KEEL.AP.INCR", "n", "1", "W", "ONE") >= 1
    for nd in cl.nodes:
        nd.kill()
    for nd in cl.nodes:
        nd.start()
    c = [nd.client() for nd in cl.nodes]
    all_connected(c)
    for i in range(20):
        assert get(c[0], f"k{i}", "R", "ALL")[2] == [f"v{i}".encode()]
    assert get(c[1], "n", "R", "ALL")[2] == [20]


def test_or_set_adds_from_every_node_and_an_unseen_add_survives_a_remove(make_cluster):
    cl = make_cluster(3)
    c = [nd.client() for nd in cl.nodes]
    eventually(lambda: ap(c[0], "KEEL.AP.PUT", "warm", "x", "W", "ALL") == 3)
    for i, m in enumerate(["a", "b", "c", "x"]):
        assert ap(c[i % 3], "KEEL.AP.SADD", "s", m, "W", "ALL") == 3
    assert get(c[2], "s", "R", "ALL")[2] == [b"a", b"b", b"c", b"x"]
    assert ap(c[1], "KEEL.AP.SREM", "s", "a", "W", "ALL") == 3
    assert get(c[0], "s", "R", "ALL")[2] == [b"b", b"c", b"x"]
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        ap(c[0], "KEEL.AP.SADD", "warm", "m")
    # node 3 is away while x is removed; it adds x again without having seen the remove:
    # the add is concurrent with the remove, and wins
    cl.nodes[2].kill()
    assert ap(c[0], "KEEL.AP.SREM", "s", "x", "W", "QUORUM") == 2
    cl.nodes[2].start()
    back = cl.nodes[2].client()
    all_connected(c[:2] + [back])
    assert ap(back, "KEEL.AP.SADD", "s", "x", "W", "ONE") >= 1
    eventually(lambda: get(c[0], "s", "R", "ALL")[2] == [b"b", b"c", b"x"])
    # a remove that saw that add removes it everywhere
    assert ap(back, "KEEL.AP.SREM", "s", "x", "W", "ALL") == 3
    assert get(c[1], "s", "R", "ALL")[2] == [b"b", b"c"]


def test_a_node_back_without_its_ap_data_writes_as_a_new_actor_and_loses_nothing(make_cluster):
    import shutil

    cl = make_cluster(3)
    c = [nd.client() for nd in cl.nodes]
    eventually(lambda: ap(c[0], "KEEL.AP.PUT", "warm", "x", "W", "ALL") == 3)
    assert ap(c[2], "KEEL.AP.PUT", "k", "before", "W", "ALL") == 3
    lost = cl.nodes[2]
    lost.kill()
    shutil.rmtree(f"{lost.data_dir}/ap")
    lost.start()
    back = lost.client()
    # its peers are connected (a read of another key: reading k would repair it first)
    all_connected(c[:2] + [back])
    # a blind write from it: had it reused its old actor id, the new dot would equal the
    # one of "before" and one of the two values would vanish on merge
    assert ap(back, "KEEL.AP.PUT", "k", "after", "W", "ALL") == 3
    assert sorted(get(c[0], "k", "R", "ALL")[2]) == [b"after", b"before"]
    eventually(lambda: sorted(get(back, "k", "R", "ONE")[2]) == [b"after", b"before"])


def metric(node, name):
    from keelcluster import http_get

    status, body, _ = http_get(node.http_port, "/metrics")
    assert status == 200
    for line in body.decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.split()[-1])
    return 0.0


def test_anti_entropy_refills_a_node_that_lost_its_data_without_any_read(make_cluster):
    import shutil

    cl = make_cluster(3)
    c = [nd.client() for nd in cl.nodes]
    eventually(lambda: ap(c[0], "KEEL.AP.PUT", "warm", "x", "W", "ALL") == 3)
    lost = cl.nodes[2]
    lost.kill()
    shutil.rmtree(f"{lost.data_dir}/ap")
    for i in range(40):  # written while it is away: two copies each
        assert ap(c[i % 2], "KEEL.AP.PUT", f"k{i}", f"v{i}", "W", "QUORUM") == 2
    assert ap(c[0], "KEEL.AP.INCR", "n", "7", "W", "QUORUM") == 2
    lost.start()
    # no request touches these keys on the returned node: only anti-entropy can bring them
    eventually(lambda: metric(lost, "keel_ap_keys_repaired_total") >= 42, timeout_s=30)
    pushed = sum(metric(nd, "keel_ap_antientropy_keys_pushed_total") for nd in cl.nodes[:2])
    assert pushed >= 42
    back = lost.client()
    for i in range(40):  # R=ONE on the node itself answers from its own copy
        assert get(back, f"k{i}", "R", "ONE")[2] == [f"v{i}".encode()]
    assert get(back, "n", "R", "ONE")[2] == [7]


def test_a_node_restarted_after_compacting_its_store_serves_every_key(make_cluster):
    import glob

    # small limits, so that a few hundred writes make every node compact its replica store;
    # no anti-entropy, so that after the restart only a node's own store can hold its keys
    cl = make_cluster(
        3,
        *("--ap-compact-log-bytes-min", "64k", "--ap-compact-ratio-pct", "150"),
        *("--ap-antientropy-ms", "0"),
    )
    c = [nd.client() for nd in cl.nodes]
    eventually(lambda: ap(c[0], "KEEL.AP.PUT", "warm", "x", "W", "ALL") == 3)
    want = {}
    for rnd in range(3):  # each round overwrites every key with its context: the log grows
        p = c[rnd].pipeline(transaction=False)
        for i in range(150):
            p.execute_command("KEEL.AP.GET", f"k{i}", "R", "ONE")
        ctxs = [r[1] for r in p.execute()]
        p = c[rnd].pipeline(transaction=False)
        for i in range(150):
            want[f"k{i}"] = f"r{rnd}-{i}-" + "v" * 200
            ctx = ["CTX", ctxs[i]] if ctxs[i] else []
            p.execute_command("KEEL.AP.PUT", f"k{i}", want[f"k{i}"], *ctx, "W", "ALL")
        assert p.execute() == [3] * 150
    for nd in cl.nodes:
        eventually(lambda nd=nd: metric(nd, "keel_ap_compactions_total") >= 1)
        assert glob.glob(f"{nd.data_dir}/ap/snap-*.snap")
    # written after the compaction: replayed from the log on top of the snapshot
    assert ap(c[1], "KEEL.AP.DEL", "k0", "CTX", get(c[1], "k0", "R", "ALL")[1], "W", "ALL") == 3
    del want["k0"]
    assert ap(c[2], "KEEL.AP.INCR", "n", "5", "W", "ALL") == 3
    for nd in cl.nodes:
        nd.kill()
    for nd in cl.nodes:
        nd.start()
    for nd in cl.nodes:  # before any read could repair one: 150 keys (k0 a tombstone), warm, n
        eventually(lambda nd=nd: metric(nd, "keel_ap_keys") == 152)
    c = [nd.client() for nd in cl.nodes]
    all_connected(c)
    for x in c:  # R=ONE: each node answers from its own copy, as its restart rebuilt it
        p = x.pipeline(transaction=False)
        for i in range(150):
            p.execute_command("KEEL.AP.GET", f"k{i}", "R", "ONE")
        got = {f"k{i}": r[2:] for i, r in enumerate(p.execute())}
        assert got == {k: ([v.encode()] if k in want else []) for k in got for v in [want.get(k)]}
        assert get(x, "n", "R", "ONE")[2] == [5]
    for nd in cl.nodes:
        assert metric(nd, "keel_ap_store_log_bytes") < 150 * 400


def test_writes_a_node_coordinates_in_one_turn_share_one_fdatasync_of_its_copy(make_cluster):
    cl = make_cluster(3)
    c = [nd.client() for nd in cl.nodes]
    eventually(lambda: ap(c[0], "KEEL.AP.PUT", "warm", "x", "W", "ALL") == 3)
    time.sleep(0.1)  # the gauge is set on the 20 ms tick
    before = [metric(nd, "keel_ap_store_fdatasyncs") for nd in cl.nodes]
    p = c[0].pipeline(transaction=False)  # 50 writes in one send: read in one loop turn or few
    for i in range(50):
        p.execute_command("KEEL.AP.PUT", f"g{i}", f"v{i}", "W", "ALL")
    assert p.execute() == [3] * 50
    time.sleep(0.1)
    after = [metric(nd, "keel_ap_store_fdatasyncs") for nd in cl.nodes]
    # one fdatasync per write of the coordinator's copy before: 50; now one per turn
    assert after[0] - before[0] <= 10, (before, after)
    for i in range(50):  # every node holds every write
        assert all(get(x, f"g{i}", "R", "ONE")[2] == [f"v{i}".encode()] for x in c)
