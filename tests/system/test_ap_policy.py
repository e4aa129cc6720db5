"""test_ap_policy.py - the AP keyspace's conflict policy per key prefix (--ap-policy,
docs/ap.md) and KEEL.AP.SMEMBERS on a real 3-node keel server cluster: siblings by default,
last-writer-wins keeps one value and loses the other, a CRDT prefix refuses plain writes,
replicas converge under each policy after a node comes back, and a node whose table differs
is refused by the others rather than diverging.
"""

import subprocess

import pytest
import redis

from keelcluster import binary, make_cluster  # noqa: F401 (fixture)
from test_ap import all_connected, ap, eventually, get, metric

POLICY = "last:=lww,hits:=pn-counter,tags:=or-set,tags:plain:=siblings"


def warm(c):
    eventually(lambda: ap(c[0], "KEEL.AP.PUT", "warm", "x", "W", "ALL") == 3)


def test_every_node_reports_the_same_table_and_the_longest_prefix(make_cluster):
    # the rules given in two flags on one node, one flag (other order) on the others: one table
    cl = make_cluster(3, start=False)
    for nd in cl.nodes[1:]:
        nd.extra += ["--ap-policy", "tags:plain:=siblings,tags:=or-set,hits:=pn-counter,last:=lww"]
    cl.nodes[0].extra += ["--ap-policy", "last:=lww,hits:=pn-counter", "--ap-policy",
                          "tags:=or-set,tags:plain:=siblings"]  # fmt: skip
    cl.start()
    cl.wait_leader()
    c = [nd.client() for nd in cl.nodes]
    digests = set()
    for x in c:
        assert ap(x, "KEEL.AP.POLICY", "last:1")[:2] == [b"lww", b"last:"]
        assert ap(x, "KEEL.AP.POLICY", "tags:plain:9")[:2] == [b"siblings", b"tags:plain:"]
        assert ap(x, "KEEL.AP.POLICY", "tags:9")[:2] == [b"or-set", b"tags:"]
        name, prefix, digest = ap(x, "KEEL.AP.POLICY", "user:1")
        assert (name, prefix) == (b"siblings", None)  # no prefix matches: the default
        digests.add(digest)
    assert len(digests) == 1


def test_siblings_by_default_lww_keeps_one_value_and_a_crdt_prefix_refuses_a_put(make_cluster):
    cl = make_cluster(3, "--ap-policy", POLICY)
    c = [nd.client() for nd in cl.nodes]
    warm(c)
    # the same two blind writes (neither writer read the other's value) under each policy
    for key in ["k", "last:k"]:
        assert ap(c[0], "KEEL.AP.PUT", key, "from-n1", "W", "ALL") == 3
        assert ap(c[1], "KEEL.AP.PUT", key, "from-n2", "W", "ALL") == 3
    # siblings (the default): both acknowledged writes are kept
    for x in c:
        assert sorted(get(x, "k", "R", "ALL")[2]) == [b"from-n1", b"from-n2"]
    # lww: one value; the first acknowledged write is gone (the documented loss)
    for x in c:
        replies, ctx, values = get(x, "last:k", "R", "ALL")
        assert (replies, ctx, values) == (3, b"", [b"from-n2"])
    # a write through the node that holds the older value still replaces it (its timestamp
    # is above the one it holds), and a context is not needed
    assert ap(c[0], "KEEL.AP.PUT", "last:k", "again", "W", "ALL") == 3
    assert get(c[2], "last:k", "R", "ALL")[2] == [b"again"]
    # a CRDT prefix refuses plain writes, before anything is written
    for args, text in [
        (("KEEL.AP.PUT", "hits:1", "5"), "prefix 'hits:' gives this key the policy pn-counter: "
         "KEEL.AP.PUT is refused"),
        (("KEEL.AP.SADD", "hits:1", "m"), "KEEL.AP.SADD is refused"),
        (("KEEL.AP.PUT", "tags:1", "x"), "policy or-set: KEEL.AP.PUT is refused"),
        (("KEEL.AP.INCR", "tags:1", "1"), "KEEL.AP.INCR is refused"),
        (("KEEL.AP.INCR", "last:n", "1"), "policy lww: KEEL.AP.INCR is refused"),
        (("KEEL.AP.DEL", "last:k", "CTX", ""), "policy lww: KEEL.AP.DEL is refused"),
        (("KEEL.AP.INCR", "tags:plain:1", "1"), "policy siblings: KEEL.AP.INCR is refused"),
        (("KEEL.AP.SMEMBERS", "hits:1"), "KEEL.AP.SMEMBERS is refused"),
    ]:
        with pytest.raises(redis.ResponseError) as e:
            ap(c[0], *args)
        assert str(e.value).startswith("WRONGTYPE --ap-policy prefix '") and text in str(e.value)
    assert get(c[1], "hits:1", "R", "ALL")[2] == []
    assert get(c[1], "tags:1", "R", "ALL")[2] == []
    # the kinds the table gives are taken
    assert ap(c[0], "KEEL.AP.INCR", "hits:1", "5", "W", "ALL") == 3
    assert ap(c[1], "KEEL.AP.INCR", "hits:1", "-2", "W", "ALL") == 3
    assert get(c[2], "hits:1", "R", "ALL")[2] == [3]
    assert ap(c[2], "KEEL.AP.SADD", "tags:1", "a", "W", "ALL") == 3
    assert ap(c[0], "KEEL.AP.PUT", "tags:plain:1", "p", "W", "ALL") == 3  # longest prefix
    assert get(c[1], "tags:plain:1", "R", "ALL")[2] == [b"p"]
    # keys no prefix matches behave as before the table: the first write picks the kind
    assert ap(c[0], "KEEL.AP.INCR", "n", "1", "W", "ALL") == 3


def test_smembers_reads_an_or_set_at_its_quorum(make_cluster):
    cl = make_cluster(3)
    c = [nd.client() for nd in cl.nodes]
    warm(c)
    for i, m in enumerate(["b", "a", "c"]):
        assert ap(c[i], "KEEL.AP.SADD", "s", m, "W", "ALL") == 3
    assert ap(c[1], "KEEL.AP.SREM", "s", "c", "W", "ALL") == 3
    for x in c:
        for level, replies in [("ONE", 1), ("QUORUM", 2), ("ALL", 3), ("2", 2)]:
            assert ap(x, "KEEL.AP.SMEMBERS", "s", "R", level) == [replies, b"", b"a", b"b"]
    assert ap(c[0], "KEEL.AP.SMEMBERS", "s")[0] == 2  # QUORUM unless told
    assert ap(c[0], "KEEL.AP.SMEMBERS", "none", "R", "ALL") == [3, b""]
    with pytest.raises(redis.ResponseError, match="WRONGTYPE the key holds siblings, not or-set"):
        ap(c[0], "KEEL.AP.SMEMBERS", "warm", "R", "ALL")
    for args, text in [
        (("KEEL.AP.SMEMBERS", "s", "R", "4"), "R must be 1..3"),
        (("KEEL.AP.SMEMBERS", "s", "R"), "syntax"),
        (("KEEL.AP.SMEMBERS", "s", "CTX", "00"), "syntax"),
        (("KEEL.AP.SMEMBERS", "s", "W", "ALL"), "syntax"),
    ]:
        with pytest.raises(redis.ResponseError, match=text):
            ap(c[0], *args)
    # with a node down: QUORUM answers, ALL does not
    cl.nodes[2].kill()
    assert ap(c[0], "KEEL.AP.SMEMBERS", "s", "R", "QUORUM") == [2, b"", b"a", b"b"]
    with pytest.raises(redis.ResponseError, match=r"NOQUORUM 2 of 3 replicas answered"):
        ap(c[0], "KEEL.AP.SMEMBERS", "s", "R", "ALL")


def test_replicas_converge_under_each_policy_after_a_node_comes_back(make_cluster):
    cl = make_cluster(3, "--ap-policy", POLICY)
    c = [nd.client() for nd in cl.nodes]
    warm(c)
    away = cl.nodes[2]
    away.kill()
    keys = ["k", "last:k", "hits:k", "tags:k"]
    for i in range(6):  # written while it is away, from both other nodes
        x = c[i % 2]
        assert ap(x, "KEEL.AP.PUT", "k", f"v{i}", "W", "QUORUM") == 2
        assert ap(x, "KEEL.AP.PUT", "last:k", f"v{i}", "W", "QUORUM") == 2
        assert ap(x, "KEEL.AP.INCR", "hits:k", str(i + 1), "W", "QUORUM") == 2
        assert ap(x, "KEEL.AP.SADD", "tags:k", f"m{i}", "W", "QUORUM") == 2
    assert ap(c[0], "KEEL.AP.SREM", "tags:k", "m0", "W", "QUORUM") == 2
    want = {k: get(c[0], k, "R", "QUORUM")[2] for k in keys}
    assert sorted(want["k"]) == [f"v{i}".encode() for i in range(6)]  # six siblings
    assert want["last:k"] == [b"v5"]  # one value: the other five are lost, as lww says
    assert want["hits:k"] == [21]
    assert want["tags:k"] == [f"m{i}".encode() for i in range(1, 6)]
    away.start()
    # no request touches these keys on the returned node: anti-entropy brings them, merged
    # by each key's own kind there
    eventually(lambda: metric(away, "keel_ap_keys_repaired_total") >= len(keys), timeout_s=30)
    back = away.client()
    for k in keys:  # R=ONE on the node itself answers from its own copy
        got = get(back, k, "R", "ONE")[2]
        assert (sorted(got) if k == "k" else got) == (sorted(want[k]) if k == "k" else want[k])
    assert ap(back, "KEEL.AP.SMEMBERS", "tags:k", "R", "ONE")[2:] == want["tags:k"]
    # every replica holds the same state: R=ALL from every node answers the same, and no
    # read repair changes anything any more
    all_connected(c[:2] + [back])
    repaired = [metric(nd, "keel_ap_keys_repaired_total") for nd in cl.nodes]
    for x in c[:2] + [back]:
        for k in keys:
            got = get(x, k, "R", "ALL")[2]
            assert (sorted(got) if k == "k" else got) == (sorted(want[k]) if k == "k" else want[k])
    assert [metric(nd, "keel_ap_keys_repaired_total") for nd in cl.nodes] == repaired
    assert sum(metric(nd, "keel_ap_policy_refused_total") for nd in cl.nodes) == 0


def test_a_node_with_another_table_is_refused_by_the_others_not_merged(make_cluster):
    cl = make_cluster(3, "--ap-policy", POLICY)
    c = [nd.client() for nd in cl.nodes]
    warm(c)
    odd = cl.nodes[2]
    odd.kill()
    odd.extra = [f for f in odd.extra if f not in ("--ap-policy", POLICY)]  # no table
    odd.start()
    back = odd.client()
    all_connected(c[:2] + [back])
    assert ap(back, "KEEL.AP.POLICY", "hits:x")[2] != ap(c[0], "KEEL.AP.POLICY", "hits:x")[2]
    # to it "hits:x" is a plain key; the other two refuse to store a sibling set there
    with pytest.raises(redis.ResponseError, match=r"NOQUORUM 1 of 2 replicas answered"):
        ap(back, "KEEL.AP.PUT", "hits:x", "v", "W", "QUORUM")
    assert metric(cl.nodes[0], "keel_ap_policy_refused_total") >= 1
    assert metric(cl.nodes[1], "keel_ap_policy_refused_total") >= 1
    assert get(c[0], "hits:x", "R", "QUORUM")[2] == []  # n1 and n2 hold nothing
    # the configured nodes still count there
    assert ap(c[0], "KEEL.AP.INCR", "hits:y", "2", "W", "QUORUM") == 2


@pytest.mark.parametrize(
    "table, says",
    [
        ("a=bogus", "rule 1: policy 'bogus' is not siblings, lww, pn-counter or or-set"),
        ("a=lww,a=or-set", "rule 2: prefix 'a' given twice"),
        ("x" * 129 + "=lww", "rule 1: prefix of 129 bytes (max 128)"),
        (",".join(f"p{i}=lww" for i in range(65)), "more than 64 prefixes"),
    ],
)
def test_a_bad_table_stops_the_server_before_it_starts(tmp_path, table, says):
    r = subprocess.run(
        [binary("keel"), "server", "--name", "n1", "--data-dir", str(tmp_path / "d"),
         "--ap-policy", table],
        capture_output=True, text=True, timeout=10,
    )  # fmt: skip
    assert r.returncode != 0
    assert f"keel server: --ap-policy: {says}" in r.stderr
    assert not (tmp_path / "d").exists()
