"""test_ap_handoff.py - the AP keyspace on 5 real keel server nodes (docs/ap.md): sloppy quorum
with hinted handoff, anti-entropy per shared range refilling a node that lost its data, and no
acknowledged write lost across kills, restarts and a wiped data directory.
"""

import random
import shutil
import signal
import threading
import time

import pytest
import redis

from keelcluster import http_get, make_cluster  # noqa: F401 (fixture)

HANDOFF_BOUND_S = 20.0  # generous: handoff runs every 0.5 s, a restart reconnects with backoff
REFILL_BOUND_S = 60.0


def ap(c, *args):
    return c.execute_command(*args)


def get(c, key, *opts):
    replies, ctx, *values = ap(c, "KEEL.AP.GET", key, *opts)
    return replies, ctx, values


def eventually(fn, timeout_s=15.0):
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            v = fn()
            if v:
                return v
        except (redis.ResponseError, redis.ConnectionError):
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def metric(node, name):
    status, body, _ = http_get(node.http_port, "/metrics")
    assert status == 200
    for line in body.decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.split()[-1])
    return 0.0


def where(c, key):
    homes, fallbacks = ap(c, "KEEL.AP.WHERE", key)
    return [h.decode() for h in homes], [f.decode() for f in fallbacks]


def all_connected(cl, nodes=None):
    """Every running node reaches the homes of 20 keys (whose home sets cover every pair)."""
    nodes = nodes or cl.running()
    for nd in nodes:
        c = nd.client()
        for i in range(20):
            eventually(lambda c=c, i=i: get(c, f"warm{i}", "R", "ALL")[0] == 3, timeout_s=30)


def key_with(c, pred, prefix):
    """The first key prefix0, prefix1, ... whose (homes, fallbacks) satisfy pred."""
    for i in range(10000):
        k = f"{prefix}{i}"
        h, f = where(c, k)
        if pred(h, f):
            return k, h, f
    raise AssertionError("no such key")


def test_where_names_three_homes_and_two_fallbacks_the_same_on_every_node(make_cluster):
    cl = make_cluster(5)
    cs = [nd.client() for nd in cl.nodes]
    for i in range(20):
        ws = {tuple(map(tuple, where(c, f"k{i}"))) for c in cs}
        assert len(ws) == 1
        homes, fallbacks = ws.pop()
        assert len(homes) == 3 and len(fallbacks) == 2
        assert sorted(homes + fallbacks) == ["n1", "n2", "n3", "n4", "n5"]


def test_a_quorum_write_with_a_home_down_is_handed_back_when_it_returns(make_cluster):
    cl = make_cluster(5)
    c0 = cl.nodes[0].client()
    all_connected(cl)
    # a key whose first home coordinates, and whose third home will be down
    key, homes, fbs = key_with(c0, lambda h, f: True, "hq")
    coord, down = cl.node(homes[0]), cl.node(homes[2])
    down.kill()
    c = coord.client()
    # a W=ALL write succeeds: two homes and a fallback holding a hint (at once if the
    # coordinator saw the connection close, else after AP_FALLBACK_MS)
    key2, homes2, fbs2 = key_with(c0, lambda h, f: h[0] == coord.name and down.name in h, "ha")
    assert ap(c, "KEEL.AP.PUT", key2, "w1", "W", "ALL") == 3
    # the coordinator knows the home is down by now: a QUORUM write gets its stand-in at once
    assert ap(c, "KEEL.AP.PUT", key, "v1", "W", "QUORUM") >= 2
    holders = [cl.node(f) for f in fbs + fbs2 if f != down.name]
    eventually(lambda: sum(metric(nd, "keel_ap_hints_pending") for nd in holders) >= 2)
    stored = sum(metric(nd, "keel_ap_hints_stored_total") for nd in cl.running())
    assert stored >= 2
    t0 = time.monotonic()
    down.start()
    back = down.client()
    # R=ONE on the returned home answers from its own copy only
    eventually(lambda: get(back, key, "R", "ONE")[2] == [b"v1"], timeout_s=HANDOFF_BOUND_S)
    eventually(lambda: get(back, key2, "R", "ONE")[2] == [b"w1"], timeout_s=HANDOFF_BOUND_S)
    print(f"both hinted keys on the returned home {time.monotonic() - t0:.2f} s after its restart")
    # the hints are dropped once the home acknowledged them, and were counted as delivered
    eventually(lambda: sum(metric(nd, "keel_ap_hints_pending") for nd in cl.nodes) == 0)
    assert sum(metric(nd, "keel_ap_hints_delivered_total") for nd in cl.nodes) >= 2


def test_a_stand_in_drops_its_copy_once_every_home_holds_the_write(make_cluster):
    """docs/ap.md, "Dropping the copies of keys a node is no longer a home of": the fallback
    that stood in for a home that was down hands the write to it when it returns, then sends
    its copy to all three homes, and drops it once each acknowledged holding it (the fallback
    coordinated nothing, so its state holds none of its own dots). Every home still answers
    the value alone."""
    cl = make_cluster(5)
    c0 = cl.nodes[0].client()
    all_connected(cl)
    key, homes, fbs = key_with(c0, lambda h, f: True, "hd")
    coord, down, fb = cl.node(homes[0]), cl.node(homes[2]), cl.node(fbs[0])
    down.kill()
    assert ap(coord.client(), "KEEL.AP.PUT", key, "v", "W", "ALL") == 3
    eventually(lambda: metric(fb, "keel_ap_hints_pending") == 1 and metric(fb, "keel_ap_keys") == 1)
    assert metric(fb, "keel_ap_keys_dropped_total") == 0  # a hint holds it
    t0 = time.monotonic()
    down.start()
    eventually(
        lambda: metric(fb, "keel_ap_keys_dropped_total") == 1 and metric(fb, "keel_ap_keys") == 0,
        timeout_s=HANDOFF_BOUND_S,
    )
    print(f"the stand-in's copy dropped {time.monotonic() - t0:.2f} s after the home restarted")
    assert metric(fb, "keel_ap_hints_pending") == 0
    for h in homes:
        assert get(cl.node(h).client(), key, "R", "ONE")[2] == [b"v"], h
    assert all(metric(nd, "keel_ap_keys_dropped_total") == 0 for nd in cl.nodes if nd is not fb)


def test_only_the_hints_hold_a_write_whose_homes_are_all_gone_and_they_bring_it_back(
    make_cluster,
):
    cl = make_cluster(5)
    c0 = cl.nodes[0].client()
    all_connected(cl)
    key, homes, fbs = key_with(c0, lambda h, f: True, "ho")
    a, b, c = (cl.node(h) for h in homes)
    b.kill()
    c.kill()
    # the first home coordinates: itself and two fallbacks with hints make W=ALL
    assert ap(a.client(), "KEEL.AP.PUT", key, "only", "W", "ALL") == 3
    a.kill()  # the only home that has it is gone: b and c can get it from the hints alone
    b.start()
    c.start()
    for nd in (b, c):
        eventually(
            lambda nd=nd: get(nd.client(), key, "R", "ONE")[2] == [b"only"],
            timeout_s=HANDOFF_BOUND_S,
        )
    # the homes have the value once they merged the handoff; a fallback counts the hint
    # delivered when the home's HANDOFF_ACK comes back, a moment later
    eventually(lambda: sum(metric(cl.node(f), "keel_ap_hints_delivered_total") for f in fbs) >= 2)
    a.start()
    eventually(lambda: get(a.client(), key, "R", "ALL")[2] == [b"only"])


def test_a_home_and_its_own_stand_in_count_once_toward_w(make_cluster):
    """W counts homes, not answers: a home that answers after its stand-in stored its copy
    adds nothing (apsim seed 12914 lost a W=2 write acknowledged that way: the stand-in's
    copy went to the home, which then lost its disk, and no other home ever had it)."""
    cl = make_cluster(5)
    c0 = cl.nodes[0].client()
    all_connected(cl)
    key, homes, fbs = key_with(c0, lambda h, f: True, "hs")
    coord, second = cl.node(homes[0]), cl.node(homes[1])  # the first home coordinates
    paused = [second, cl.node(homes[2]), cl.node(fbs[1])]
    for nd in paused:  # connections stay open: the writes are sent and go unanswered
        nd.proc.send_signal(signal.SIGSTOP)
    out = {}

    def write():
        try:
            out["r"] = ap(coord.client(), "KEEL.AP.PUT", key, "v", "W", "ALL")
        except redis.ResponseError as e:
            out["r"] = str(e)

    try:
        t = threading.Thread(target=write)
        t.start()
        # after AP_FALLBACK_MS (300) the first fallback stands in for the second home (it
        # stores the copy: 2 homes of 3), the other fallback (paused) for the third; then the
        # second home itself answers: still 2 homes
        time.sleep(0.6)
        second.proc.send_signal(signal.SIGCONT)
        t.join(timeout=10)
    finally:
        for nd in paused:
            nd.proc.send_signal(signal.SIGCONT)
    assert "NOQUORUM 2 of 3 replicas answered" in str(out.get("r")), out
    # not acknowledged, but stored: it reaches every home
    eventually(lambda: get(c0, key, "R", "ALL")[2] == [b"v"], timeout_s=HANDOFF_BOUND_S)


def test_a_write_sent_to_a_node_that_is_not_a_home_is_coordinated_by_a_home(make_cluster):
    """A node not a home of the key hands a client's write to a home (Dynamo's coordinator is
    one of the key's top N): only homes issue dots, so no node ends up holding copies of keys
    it is not a home of for having taken their writes (docs/ap.md, "Forwarding")."""
    cl = make_cluster(5)
    c0 = cl.nodes[0].client()
    all_connected(cl)
    held0 = {nd.name: metric(nd, "keel_ap_keys") for nd in cl.nodes}
    fwd0 = sum(metric(nd, "keel_ap_writes_forwarded_total") for nd in cl.nodes)
    homes_of, n = {}, 0
    for i in range(12):
        key, homes, fbs = key_with(c0, lambda h, f: True, f"fw{i}-")
        homes_of[key] = homes
        out = cl.node(fbs[i % 2]).client()  # never a home of the key
        assert ap(out, "KEEL.AP.PUT", key, "v1", "W", "ALL") == 3
        n += 1
        # a write with the context of a read supersedes it: no sibling is left
        _, ctx, vals = get(out, key, "R", "ALL")
        assert vals == [b"v1"]
        assert ap(out, "KEEL.AP.PUT", key, "v2", "CTX", ctx, "W", "QUORUM") >= 2
        n += 1
        eventually(lambda out=out, key=key: get(out, key, "R", "ALL")[2] == [b"v2"])
    # a counter and a set through non-homes: every increment once, a removal of what the
    # coordinating home saw
    ckey, chomes, cfbs = key_with(c0, lambda h, f: True, "fwc")
    sk, shomes, sfbs = key_with(c0, lambda h, f: True, "fws")
    homes_of[ckey], homes_of[sk] = chomes, shomes
    for j in range(10):
        assert ap(cl.node(cfbs[j % 2]).client(), "KEEL.AP.INCR", ckey, "3", "W", "ALL") == 3
        n += 1
    assert ap(cl.node(sfbs[0]).client(), "KEEL.AP.SADD", sk, "a", "W", "ALL") == 3
    assert ap(cl.node(sfbs[1]).client(), "KEEL.AP.SADD", sk, "b", "W", "ALL") == 3
    assert ap(cl.node(sfbs[0]).client(), "KEEL.AP.SREM", sk, "a", "W", "ALL") == 3
    n += 3
    for nd in cl.nodes:
        assert get(nd.client(), ckey, "R", "ALL")[2] == [30]
        assert get(nd.client(), sk, "R", "ALL")[2] == [b"b"]
    # the home's own errors come back as they are
    with pytest.raises(redis.ResponseError, match=r"WRONGTYPE"):
        ap(cl.node(cfbs[0]).client(), "KEEL.AP.PUT", ckey, "x")
    with pytest.raises(redis.ResponseError, match=r"increment is not a non-zero integer"):
        ap(cl.node(cfbs[0]).client(), "KEEL.AP.INCR", ckey, "0")
    assert sum(metric(nd, "keel_ap_writes_forwarded_total") for nd in cl.nodes) - fwd0 >= n
    # every node holds exactly the keys it is a home of: none of the forwarded writes left a
    # copy on the node that took it (a copy a slow home's stand-in took meanwhile is handed to
    # the home and dropped within a few seconds; a non-home coordinator's copy would hold its
    # dots, and before 7 Dec such copies were never dropped)
    def exact():
        return all(
            metric(nd, "keel_ap_keys") - held0[nd.name]
            == sum(1 for h in homes_of.values() if nd.name in h)
            for nd in cl.nodes
        )

    eventually(exact, timeout_s=HANDOFF_BOUND_S)
    assert sum(metric(nd, "keel_ap_writes_coordinated_off_home_total") for nd in cl.nodes) == 0


def test_a_forwarded_write_of_an_empty_value_or_member_is_stored_as_a_home_stores_it(make_cluster):
    """An empty argument is a client's to give (a PUT of "", an SADD of ""): a non-home
    forwards it like any other, and the home answers it as it would its own client (found in
    review: the FORWARD decoder took an empty argument for a missing one and dropped the
    message, and the client got NOQUORUM after 1,300 ms for a write that was never made)."""
    cl = make_cluster(5)
    c0 = cl.nodes[0].client()
    all_connected(cl)
    pk, _, pfbs = key_with(c0, lambda h, f: True, "fe-put")
    sk, _, sfbs = key_with(c0, lambda h, f: True, "fe-set")
    ck, _, cfbs = key_with(c0, lambda h, f: True, "fe-ctr")
    fwd0 = sum(metric(nd, "keel_ap_writes_forwarded_total") for nd in cl.nodes)
    assert ap(cl.node(pfbs[0]).client(), "KEEL.AP.PUT", pk, "", "W", "ALL") == 3
    assert ap(cl.node(sfbs[0]).client(), "KEEL.AP.SADD", sk, "", "W", "ALL") == 3
    with pytest.raises(redis.ResponseError, match=r"increment is not a non-zero integer"):
        ap(cl.node(cfbs[0]).client(), "KEEL.AP.INCR", ck, "")
    assert sum(metric(nd, "keel_ap_writes_forwarded_total") for nd in cl.nodes) - fwd0 == 3
    for nd in cl.nodes:
        assert get(nd.client(), pk, "R", "ALL")[2] == [b""]
        assert get(nd.client(), sk, "R", "ALL")[2] == [b""]


def test_a_node_that_reaches_no_home_coordinates_the_write_itself(make_cluster):
    """With every home of the key down, the node a client writes to cannot forward: it
    coordinates the write itself, standing in for a home (the minority side of a partition
    stays writable), and the homes get the write back by handoff when they return."""
    cl = make_cluster(5)
    c0 = cl.nodes[0].client()
    all_connected(cl)
    key, homes, fbs = key_with(c0, lambda h, f: True, "fo")
    for h in homes:
        cl.node(h).kill()
    out = cl.node(fbs[0])
    time.sleep(1.0)  # its connections to the homes are closed: no home can be sent to
    assert ap(out.client(), "KEEL.AP.PUT", key, "solo", "W", "ONE") == 1
    assert metric(out, "keel_ap_writes_coordinated_off_home_total") >= 1
    for h in homes:
        cl.node(h).start()
    for h in homes:
        eventually(
            lambda h=h: get(cl.node(h).client(), key, "R", "ONE")[2] == [b"solo"],
            timeout_s=HANDOFF_BOUND_S,
        )


def test_a_read_counts_a_stand_in_that_holds_a_down_homes_write(make_cluster):
    """Sloppy read: with a home down, its stand-in answers for it, but only for a key it holds
    a hint for that home of (a write it took in the home's place): R=ALL then reaches 3."""
    cl = make_cluster(5)
    c0 = cl.nodes[0].client()
    all_connected(cl)
    key, homes, fbs = key_with(c0, lambda h, f: True, "sr")
    other, _, _ = key_with(c0, lambda h, f: h == homes, "sq")  # same homes, never written
    coord, down = cl.node(homes[0]), cl.node(homes[2])
    down.kill()
    time.sleep(1.0)  # its peers' connections to it are closed
    assert ap(coord.client(), "KEEL.AP.PUT", key, "v", "W", "ALL") == 3  # a stand-in for it
    eventually(lambda: sum(metric(cl.node(f), "keel_ap_hints_pending") for f in fbs) == 1)
    for via in (coord, cl.node(homes[1]), cl.node(fbs[1])):
        replies, _, vals = get(via.client(), key, "R", "ALL")
        assert (replies, vals) == (3, [b"v"]), via.name
    # no stand-in holds anything for the down home on a key it never stood in for
    with pytest.raises(redis.ResponseError, match=r"NOQUORUM 2 of 3 replicas answered"):
        get(coord.client(), other, "R", "ALL")
    down.start()
    eventually(lambda: get(down.client(), key, "R", "ONE")[2] == [b"v"], timeout_s=HANDOFF_BOUND_S)


def test_anti_entropy_refills_a_node_that_lost_its_data_in_a_5_node_cluster(make_cluster):
    cl = make_cluster(5)
    cs = [nd.client() for nd in cl.nodes]
    all_connected(cl)
    keys = [f"k{i}" for i in range(120)]
    for i, k in enumerate(keys):
        assert ap(cs[i % 5], "KEEL.AP.PUT", k, f"v{i}", "W", "ALL") == 3
    assert ap(cs[1], "KEEL.AP.INCR", "n", "9", "W", "ALL") == 3
    lost = cl.nodes[3]
    mine = [k for k in keys + ["n"] if lost.name in where(cs[0], k)[0]]
    assert 40 <= len(mine) <= 110  # about 3/5 of the keys
    lost.kill()
    shutil.rmtree(f"{lost.data_dir}/ap")
    lost.start()
    # no request touches these keys: only anti-entropy can bring them
    eventually(
        lambda: metric(lost, "keel_ap_keys_repaired_total") >= len(mine), timeout_s=REFILL_BOUND_S
    )
    back = lost.client()
    for k in mine:
        want = [9] if k == "n" else [f"v{keys.index(k)}".encode()]
        assert get(back, k, "R", "ONE")[2] == want, k
    # ranges it does not share are not pushed to it: it holds its own keys only
    assert metric(lost, "keel_ap_keys_repaired_total") == len(mine)


def test_no_acknowledged_write_is_lost_across_a_killed_home_and_a_wiped_node(make_cluster):
    cl = make_cluster(5)
    all_connected(cl)
    rnd = random.Random(18)
    acked = {}  # key -> set of values acknowledged at W=QUORUM (blind writes: siblings)
    keys = [f"x{i}" for i in range(40)]
    seq = 0

    def write_some(n, nodes):
        nonlocal seq
        for _ in range(n):
            nd = rnd.choice(nodes)
            k = rnd.choice(keys)
            seq += 1
            v = f"{k}-{seq}"
            try:
                r = ap(nd.client(), "KEEL.AP.PUT", k, v, "W", "QUORUM")
            except redis.ResponseError as e:
                assert "NOQUORUM" in str(e)
                continue
            assert r >= 2
            acked.setdefault(k, set()).add(v.encode())

    write_some(60, cl.nodes)
    victim = cl.nodes[1]
    victim.kill()
    live = [nd for nd in cl.nodes if nd is not victim]
    write_some(80, live)
    victim.start()
    write_some(40, cl.nodes)
    wiped = cl.nodes[4]
    wiped.kill()
    shutil.rmtree(f"{wiped.data_dir}/ap")
    write_some(60, [nd for nd in cl.nodes if nd is not wiped])
    wiped.start()
    write_some(40, cl.nodes)
    assert sum(len(v) for v in acked.values()) >= 200

    # every home of every key ends up with every acknowledged write of it, each home read alone
    def converged():
        for k, vals in acked.items():
            homes = where(cl.nodes[0].client(), k)[0]
            for h in homes:
                got = set(get(cl.node(h).client(), k, "R", "ONE")[2])
                if not vals <= got:
                    return False
        return True

    eventually(converged, timeout_s=REFILL_BOUND_S)
    eventually(lambda: sum(metric(nd, "keel_ap_hints_pending") for nd in cl.nodes) == 0)
