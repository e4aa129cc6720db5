"""bench_coll_memory.py - memory per hash and per set key, keel (1 node) against redis-server.

Not collected by the suite (no test_ prefix); run it by name:
    KEEL_BUILD=$PWD/build-dev /usr/bin/python3 -m pytest -q -s tests/system/bench_coll_memory.py
It fills N keys through pipelined redis-py (hashes of 3 short fields; sets of 10 integers)
and prints, per key, keel's INFO used_memory_rss and keel_state_bytes growth (RSS includes
the Raft log kept in memory and allocator overhead) and redis-server's used_memory growth.
"""

import redis

from keelcluster import make_cluster, redis_server  # noqa: F401 (fixtures)

N = 50000


def fill(r, kind):
    p = r.pipeline(transaction=False)
    for i in range(N):
        if kind == "hash":
            p.hset(f"h{i}", mapping={"name": "alice", "age": str(i), "city": "paris"})
        else:
            p.sadd(f"s{i}", *[str(i * 10 + k) for k in range(10)])
        if i % 1000 == 999:
            p.execute()
    p.execute()


def test_memory_per_key(make_cluster, redis_server):
    node = make_cluster(1).nodes[0]
    for kind in ("hash", "set"):
        keel = redis.Redis(port=node.client_port)
        real = redis.Redis(port=redis_server.port)
        keel.flushall()
        real.flushall()
        k0, r0 = keel.info("memory"), int(real.info("memory")["used_memory"])
        fill(keel, kind)
        fill(real, kind)
        k1, r1 = keel.info("memory"), int(real.info("memory")["used_memory"])
        rss = (int(k1["used_memory_rss"]) - int(k0["used_memory_rss"])) / N
        state = (int(k1["keel_state_bytes"]) - int(k0["keel_state_bytes"])) / N
        print(f"\n{kind}: keel rss {rss:.0f} B/key, keel_state_bytes {state:.0f} B/key, "
              f"redis used_memory {(r1 - r0) / N:.0f} B/key")
        assert keel.dbsize() == N
