"""test_server_admin.py - keel server's admin HTTP: /health, /status, /metrics (promtool-checked)."""

import json
import os
import re
import subprocess
import threading
import time

import pytest
import redis

from keelcluster import http_get, make_cluster  # noqa: F401 (fixture)

PROMTOOL = "/usr/bin/promtool"


def test_health_is_200_on_every_node_of_a_healthy_cluster(make_cluster):
    cl = make_cluster(3)
    leader = cl.wait_leader()
    for nd in cl.nodes:
        code, body, ctype = http_get(nd.http_port, "/health")
        assert code == 200, body
        assert ctype.startswith("application/json")
        j = json.loads(body)
        assert j["status"] == "ok" and j["leader"] == leader.name
        assert j["role"] == ("leader" if nd is leader else "follower")


@pytest.mark.parametrize("survivor", ["leader", "follower"])
def test_health_is_503_with_a_reason_when_the_node_has_no_leader(make_cluster, survivor):
    cl = make_cluster(3)
    leader = cl.wait_leader()
    keep = leader if survivor == "leader" else cl.followers(leader)[0]
    for nd in cl.nodes:
        if nd is not keep:
            nd.kill()
    # A leader steps down once it has not heard from a quorum (check quorum); a follower
    # forgets the leader when its election timeout passes. Both take a few hundred ms.
    deadline = time.monotonic() + 10
    while True:
        code, body = keep.health()
        if code == 503 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert code == 503, body
    assert body == {"status": "unavailable", "reason": "no leader known"}
    st = keep.status()
    assert st["role"] != "leader" and st.get("leader") is None
    # and it recovers once a quorum is back
    other = next(nd for nd in cl.nodes if nd is not keep)
    other.start()
    cl.wait_leader(among=[keep, other])
    deadline = time.monotonic() + 10
    while keep.health()[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert keep.health()[0] == 200


def test_status_reports_role_indexes_keys_and_members(make_cluster):
    cl = make_cluster(3)
    leader = cl.wait_leader()
    c = leader.client()
    c.mset({f"s{i}": "x" for i in range(10)})
    c.set("s0", "y")
    c.delete("s9")
    cl.wait_applied(cl.nodes, leader.status()["commit_index"])
    ints = ["id", "term", "commit_index", "applied_index", "last_index", "revision", "keys",
            "leader_changes", "wal_bytes", "requests_pending"]  # fmt: skip
    roles = []
    for i, nd in enumerate(cl.nodes):
        # requests_pending is a live count: an internal proposal (a lease's expiry, the
        # membership's first edit) may be in flight for a moment; it must drain
        deadline = time.monotonic() + 5
        while True:
            code, body, ctype = http_get(nd.http_port, "/status")
            assert code == 200 and ctype.startswith("application/json")
            st = json.loads(body)
            if st["requests_pending"] == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        for f in ints:
            assert isinstance(st[f], int) and st[f] >= 0, (f, st)
        assert st["name"] == nd.name and st["id"] == i + 1
        assert st["leader"] == leader.name
        assert st["term"] == leader.status()["term"]
        assert st["keys"] == 9 and st["revision"] == 3
        assert st["applied_index"] <= st["commit_index"] <= st["last_index"]
        assert st["leader_changes"] >= 1
        assert st["wal_bytes"] > 0
        assert st["requests_pending"] == 0
        assert [(m["name"], m["id"], m["peer_addr"], m["role"]) for m in st["members"]] == [
            (m.name, j + 1, f"127.0.0.1:{m.peer_port}", "voter") for j, m in enumerate(cl.nodes)
        ]
        roles.append(st["role"])
    assert sorted(roles) == ["follower", "follower", "leader"]
    assert leader.client().dbsize() == 9


def metrics_of(text):
    """{'name{labels}': value} from the Prometheus text format."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_metrics_pass_promtool_and_count_commands(make_cluster):
    if not os.path.exists(PROMTOOL):
        pytest.skip("promtool is not installed")
    cl = make_cluster(3)
    leader = cl.wait_leader()
    follower = cl.followers(leader)[0]
    c = follower.client()
    for i in range(7):
        c.set(f"m{i}", "v")
    c.get("m0")
    with pytest.raises(redis.ResponseError):
        c.execute_command("INCR", "m1")  # redis-py's incr() would send INCRBY
    with pytest.raises(redis.ResponseError, match="wrong number of arguments for 'get'"):
        c.execute_command("GET")  # refused by its arity, before it reaches the node
    cl.wait_applied(cl.nodes, 9)  # the no-op, 7 SETs and the failed INCR
    for nd in cl.nodes:
        code, body, ctype = http_get(nd.http_port, "/metrics")
        assert code == 200
        assert ctype.startswith("text/plain") and "version=0.0.4" in ctype
        r = subprocess.run([PROMTOOL, "check", "metrics"], input=body, capture_output=True,
                           timeout=30)  # fmt: skip
        assert r.returncode == 0, f"promtool on {nd.name}: {r.stdout!r} {r.stderr!r}"
        m = metrics_of(body.decode())
        assert m["keel_raft_role"] == (3 if nd is leader else 0)
        assert m["keel_raft_term"] >= 1
        assert m["keel_raft_commit_index"] >= 9
        for name in ("keel_wal_fsync_seconds_count", "keel_raft_applied_total"):
            assert m[name] > 0, name
    m = metrics_of(http_get(follower.http_port, "/metrics")[1].decode())
    assert m['keel_commands_total{cmd="set"}'] == 7
    assert m['keel_commands_total{cmd="get"}'] == 2
    assert m['keel_command_errors_total{cmd="get"}'] == 1  # the arity error
    assert m['keel_command_errors_total{cmd="incr"}'] == 1
    assert m["keel_forwarded_requests_total"] >= 8
    assert m["keel_connected_clients"] >= 1
    assert re.search(rb'keel_wal_fsync_seconds_bucket\{le="\+Inf"\} \d+', body)


def test_admin_http_refuses_unknown_paths_and_methods(make_cluster):
    node = make_cluster(1).nodes[0]
    assert http_get(node.http_port, "/nope")[0] == 404
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
                        f"http://127.0.0.1:{node.http_port}/health"],
                       capture_output=True, timeout=10)  # fmt: skip
    assert r.stdout == b"405"
    assert http_get(node.http_port, "/health")[0] == 200


# A commit index often arrives in the loop turn of a health check and is applied at the end
# of that turn; /health allows that small lag, so a healthy follower under writes stays 200.
def test_health_stays_200_on_a_follower_under_a_write_load(make_cluster):
    cl = make_cluster(3)
    leader = cl.wait_leader()
    f = cl.followers(leader)[0]
    stop = threading.Event()

    def load():
        c = leader.client()
        i = 0
        while not stop.is_set():
            p = c.pipeline(transaction=False)
            for _ in range(20):
                p.set(f"k{i % 100}", "v")
                i += 1
            p.execute()

    ts = [threading.Thread(target=load) for _ in range(2)]
    for t in ts:
        t.start()
    bad, polls = [], 0
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 2:
            code, body = f.health()
            polls += 1
            if code != 200:
                bad.append(body)
    finally:
        stop.set()
        for t in ts:
            t.join(timeout=30)
    assert not bad, f"{len(bad)} of {polls} polls were not 200, e.g. {bad[0]}"
