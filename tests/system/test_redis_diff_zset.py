"""test_redis_diff_zset.py - sorted sets past 128 members against redis-server 7.0.

test_redis_diff.py compares every sorted-set command on small sets (Redis's listpack
encoding); here a seeded random sequence of score, rank and lex commands runs over sets Redis
holds as skiplists, where its lookups take other paths (ranks by span, lex ranges by skiplist
descent), byte for byte on one node and through a follower. Lex commands go to a set whose
scores are all equal, the case Redis specifies (with unequal scores a lex range depends on
each server's skiplist shape). KEEL_DIFF_SEED=n reruns a failing seed.
"""

import redis_diff_zset as zd
from keelcluster import make_cluster, redis_server  # noqa: F401 (fixtures)
from test_redis_diff import first_difference, seed_and_count


def test_big_sorted_sets_reply_like_redis_on_one_node(make_cluster, redis_server):
    seed, n = seed_and_count(3000)
    node = make_cluster(1).nodes[0]
    d = first_difference(zd.big_run(node.client_port, seed, n), zd.big_run(redis_server.port, seed, n))
    assert d is None, f"seed {seed} (KEEL_DIFF_SEED={seed} reruns it): {d}"


def test_big_sorted_sets_reply_like_redis_through_a_follower(make_cluster, redis_server):
    seed, n = seed_and_count(800)
    cl = make_cluster(3)
    leader = cl.wait_leader()
    real = zd.big_run(redis_server.port, seed, n)
    d = first_difference(zd.big_run(cl.followers(leader)[0].client_port, seed, n), real)
    assert d is None, f"seed {seed} (KEEL_DIFF_SEED={seed} reruns it): {d}"
