"""test_server_membership.py - members added and removed at run time, under load.

The main test grows a 3-node cluster to 5 (n4 with `keel server --join`, n5 with
KEEL.CLUSTER ADD and then --join), kills the leader in between, and removes two of
the original nodes, all while `keel bench kv` writes and reads with a history;
keel-lincheck must accept the history (its final reads check that every
acknowledged write is there), the remaining members must agree, and a joined node
restarted from its data must come back with its configuration (not join again).
The short version runs in `make test`; a longer one is marked slow.
"""

import json
import os
import subprocess
import time

import pytest
import redis

from conftest import assert_bench_history_linearizable, binary, free_port, wait_until
from keelcluster import make_cluster  # noqa: F401 (fixture)

TRANSIENT = ("TIMEOUT", "UNKNOWN", "TRYAGAIN", "keel: server shutting down")


def cluster_cmd(nodes, *args, timeout_s=30.0, unknown_ok=()):
    """Sends KEEL.CLUSTER args to the first live node that gives a definite answer,
    retrying transient outcomes. After an unknown outcome, an error containing one of
    `unknown_ok` means the earlier attempt took effect (returned as None)."""
    deadline = time.monotonic() + timeout_s
    unknown, last = False, None
    while time.monotonic() < deadline:
        for nd in [n for n in nodes if n.alive()]:
            try:
                return nd.client(socket_timeout=8).execute_command("KEEL.CLUSTER", *args)
            except redis.ResponseError as e:
                last = e
                if unknown and any(s in str(e) for s in unknown_ok):
                    return None
                if not str(e).startswith(TRANSIENT):
                    raise
                unknown = unknown or str(e).startswith(("TIMEOUT", "UNKNOWN"))
            except (redis.ConnectionError, redis.TimeoutError) as e:
                last, unknown = e, True
        time.sleep(0.2)
    raise TimeoutError(f"KEEL.CLUSTER {args}: no definite answer in {timeout_s}s ({last})")


def members(node):
    """{name: role} of the configuration in force on node."""
    got = node.client(socket_timeout=5).execute_command("KEEL.CLUSTER", "MEMBERS")
    return {m[0].decode(): m[3].decode() for m in got}


def wait_members(node, want, timeout_s=30.0):
    """Waits until node's MEMBERS is exactly want ({name: role})."""
    deadline = time.monotonic() + timeout_s
    seen = None
    while time.monotonic() < deadline:
        try:
            seen = members(node)
            if seen == want:
                return
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as e:
            seen = e
        time.sleep(0.1)
    raise TimeoutError(f"{node.name}: members {seen}, want {want}")


def start_bench(cl, tmp_path, seconds, seed):
    history = str(tmp_path / "history.jsonl")
    args = [binary("keel"), "bench", "kv", "--duration", str(seconds), "--connections", "6",
            "--pipeline", "2", "--keys", "30", "--history", history, "--final-reads", "--quiet",
            "--seed", str(seed)]  # fmt: skip
    for nd in cl.nodes:
        args += ["--addr", f"127.0.0.1:{nd.client_port}"]
    out = open(tmp_path / "bench.out", "wb")
    return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT), history


def grow_kill_shrink(cl, tmp_path, seconds, rounds):
    """The scenario; returns the nodes that remain members."""
    n1, n2, n3 = cl.nodes
    bench, history = start_bench(cl, tmp_path, seconds, seed=11)
    steps = []
    try:
        time.sleep(1.0)
        # n4 joins through a follower's client port; it is promoted once caught up
        leader = cl.wait_leader()
        via = next(nd for nd in cl.nodes if nd is not leader)
        n4 = cl.new_node("n4", join=f"127.0.0.1:{via.client_port}")
        n4.start()
        want = {"n1": "voter", "n2": "voter", "n3": "voter", "n4": "voter"}
        wait_members(leader, want)
        steps.append("n4 joined")
        # n5 is added by an operator, then started with --join (which finds it added)
        n5 = cl.new_node("n5")
        r = cluster_cmd([n3, n2], "ADD", "n5", f"127.0.0.1:{n5.peer_port}",
                        f"127.0.0.1:{n5.client_port}", unknown_ok=("exists already",))  # fmt: skip
        assert r is None or r == 5, r
        n5.join = f"127.0.0.1:{n3.client_port}"
        n5.start()
        want["n5"] = "voter"
        wait_members(n3, want)
        steps.append("n5 added")
        for _ in range(rounds):
            # the leader dies and comes back
            leader = cl.wait_leader()
            leader.kill()
            steps.append(f"killed leader {leader.name}")
            time.sleep(1.0)
            leader.start()
            cl.wait_leader()
        # two of the original members go, one at a time (one of them may lead)
        for gone in (n1, n2):
            rest = [nd for nd in cl.nodes if nd.alive() and nd is not gone]
            r = cluster_cmd(rest + [gone], "REMOVE", gone.name, unknown_ok=("no such member",))
            assert r in (None, b"OK"), r
            del want[gone.name]
            wait_members(rest[0], want)
            steps.append(f"removed {gone.name}")
            gone.kill()
        rc = bench.wait(timeout=seconds + 60)
    finally:
        if bench.poll() is None:
            bench.kill()
        print(", ".join(steps))
    report = open(tmp_path / "bench.out").read()
    assert rc == 0, report
    assert_bench_history_linearizable(history, 300, f"{report}\n{', '.join(steps)}")
    return [n3, cl.node("n4"), cl.node("n5")]


def check_remaining(cl, remaining):
    want = {nd.name: "voter" for nd in remaining}
    leader = cl.wait_leader(among=remaining)
    for nd in remaining:
        wait_members(nd, want)
    cl.wait_applied(remaining, leader.status()["commit_index"])
    revs = {nd.status()["revision"] for nd in remaining}
    assert len(revs) == 1, f"members disagree: revisions {revs}"
    # a joined node restarted from its data keeps its identity and configuration
    n4 = cl.node("n4")
    before = n4.log_size()
    n4.kill()
    n4.start()
    wait_members(n4, want)
    assert "joined earlier; not joining again" in n4.log_since(before)
    leader = cl.wait_leader(among=remaining)
    leader.client().set("after-restart", "1")
    cl.wait_applied([n4], leader.status()["commit_index"])
    assert n4.client().get("after-restart") == b"1"
    # /status lists the members with their addresses and roles
    st = n4.status()
    assert sorted(m["name"] for m in st["members"]) == ["n3", "n4", "n5"]
    m5 = next(m for m in st["members"] if m["name"] == "n5")
    assert m5["role"] == "voter" and m5["client_addr"] == f"127.0.0.1:{cl.node('n5').client_port}"


def test_grow_to_five_and_remove_two_under_load_with_a_leader_kill_stays_linearizable(
    make_cluster, tmp_path
):
    cl = make_cluster(3, "--snapshot-entries", "300", "--snapshot-log-bytes-min", "0")
    remaining = grow_kill_shrink(cl, tmp_path, seconds=14, rounds=1)
    check_remaining(cl, remaining)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("KEEL_SLOW") != "1", reason="slow: set KEEL_SLOW=1")
def test_membership_churn_with_repeated_leader_kills_stays_linearizable(make_cluster, tmp_path):
    cl = make_cluster(3, "--snapshot-entries", "300", "--snapshot-log-bytes-min", "0")
    remaining = grow_kill_shrink(cl, tmp_path, seconds=40, rounds=4)
    check_remaining(cl, remaining)


def test_membership_errors_are_clear_and_change_nothing(make_cluster):
    cl = make_cluster(1)
    n1 = cl.nodes[0]
    c = n1.client()
    with pytest.raises(redis.ResponseError, match="exists already"):
        c.execute_command("KEEL.CLUSTER", "ADD", "n1", "127.0.0.1:1", "127.0.0.1:2")
    with pytest.raises(redis.ResponseError, match="no such member 'nope'"):
        c.execute_command("KEEL.CLUSTER", "REMOVE", "nope")
    with pytest.raises(redis.ResponseError, match="last voter"):
        c.execute_command("KEEL.CLUSTER", "REMOVE", "n1")
    with pytest.raises(redis.ResponseError, match="KEEL.CLUSTER MEMBERS"):
        c.execute_command("KEEL.CLUSTER", "ADD", "x")
    # learners that never start do not count in the quorum: fill the cluster with them
    for i in range(2, 10):
        assert c.execute_command("KEEL.CLUSTER", "ADD", f"l{i}", f"127.0.0.1:{i}", "") == i
    with pytest.raises(redis.ResponseError, match="9 members already"):
        c.execute_command("KEEL.CLUSTER", "ADD", "l10", "127.0.0.1:10", "")
    assert members(n1) == {"n1": "voter", **{f"l{i}": "learner" for i in range(2, 10)}}
    assert c.set("still", "writable") is True
    assert c.execute_command("KEEL.CLUSTER", "REMOVE", "l5") == b"OK"
    assert "l5" not in members(n1)
    # ids are never reused: the next member gets 10, not 5
    assert c.execute_command("KEEL.CLUSTER", "ADD", "l10", "127.0.0.1:10", "") == 10


def test_keel_member_cli_lists_adds_and_removes(make_cluster):
    cl = make_cluster(3)
    addr = f"127.0.0.1:{cl.nodes[1].client_port}"
    keel = binary("keel")

    def run(*args, at=addr):
        r = subprocess.run([keel, "member", *args, "--addr", at], capture_output=True,
                           timeout=30)  # fmt: skip
        return r.returncode, r.stdout.decode(), r.stderr.decode()

    rc, out, err = run("list")
    assert rc == 0, err
    assert out.split("\n")[0].split() == ["NAME", "ID", "ROLE", "PEER", "CLIENT", "LEADER"]
    assert sum(line.startswith("n") and " voter " in line for line in out.splitlines()) == 3
    rc, out, err = run("add", "spare", "127.0.0.1:1", "127.0.0.1:2")
    assert rc == 0 and "added with id 4" in out, out + err
    rc, out, err = run("add", "spare", "127.0.0.1:3", "127.0.0.1:4")
    assert rc == 1 and "exists already" in err, out + err
    leader = cl.wait_leader()
    to = next(nd for nd in cl.nodes if nd is not leader)
    rc, out, err = run("transfer", to.name, at=f"127.0.0.1:{leader.client_port}")
    assert rc == 0, out + err
    assert cl.wait_leader() is to
    rc, out, err = run("remove", "spare")
    assert rc == 0 and out.strip() == "OK", out + err
    rc, out, err = run("list")
    assert "spare" not in out
    r = subprocess.run([keel, "member", "list"], capture_output=True, timeout=10)
    assert r.returncode == 2


def test_a_node_removed_while_down_learns_it_on_restart_and_disturbs_nobody(make_cluster):
    """A follower is killed, removed while down, and restarted from its data: it comes back
    with its old configuration (it never saw the removal). The members it connects to tell
    it that a committed configuration removed it (ids are never reused, so its id below
    the directory's next id, absent from it, means removed for good). It must then refuse
    clients with the not-a-member error and never campaign; the members keep their leader
    and term."""
    # Members keep a removed peer's connection for request_timeout + 1 s and send REMOVED
    # on it when the change commits, which a node back within that time still reads. This
    # node stays down longer, so only the members' answer to its reconnection can tell it.
    cl = make_cluster(3, "--request-timeout-ms", "1000")
    leader = cl.wait_leader()
    gone = next(nd for nd in cl.followers(leader))
    rest = [nd for nd in cl.nodes if nd is not gone]
    leader.client().set("before", "1")
    gone.kill()
    assert cluster_cmd(rest, "REMOVE", gone.name) == b"OK"
    wait_members(leader, {nd.name: "voter" for nd in rest})
    term = leader.status()["term"]
    offsets = {nd.name: nd.log_size() for nd in rest}
    time.sleep(3)  # past the lingering connection (1 s + 1 s)

    gone.start()
    removed_error = "this node is not a member of the cluster"

    def refuses():
        try:
            gone.client(socket_timeout=2).set("after", "1")
        except redis.ResponseError as e:
            return removed_error in str(e)
        except (redis.ConnectionError, redis.TimeoutError):
            pass
        return False

    assert wait_until(refuses, timeout_s=10), gone.log_tail()
    assert "removed from the cluster by a committed configuration change" in gone.log_tail(20000)
    told = [nd.name for nd in rest if "told it that it was removed" in nd.log_since(offsets[nd.name])]
    assert told, "no member logged telling the removed node"
    with pytest.raises(redis.ResponseError, match=removed_error):
        gone.client().get("before")

    time.sleep(3)  # more than an election timeout (1-2 s): it must not have campaigned
    assert cl.wait_leader(among=rest) is leader
    for nd in rest:
        st = nd.status()
        assert st["term"] == term, (nd.name, st)
    assert leader.client().get("before") == b"1"
    assert gone.status()["term"] <= term  # pre-votes never raise a term

    # Everyone restarts at once: a member's HELLO check then sees the configuration of its
    # flags (nothing applied yet), which still lists the node. Once the member applies the
    # removal from its log, it judges its connections again and tells it.
    for nd in cl.nodes:
        nd.kill()
    offsets = {nd.name: nd.log_size() for nd in cl.nodes}
    for nd in cl.nodes:
        nd.start(wait=False)
    for nd in cl.nodes:
        nd.wait_listening()
    assert wait_until(refuses, timeout_s=15), gone.log_since(offsets[gone.name])[-3000:]
    assert "removed from the cluster" in gone.log_since(offsets[gone.name])
    cl.wait_leader(among=rest)
    assert rest[0].client().get("before") == b"1"


def client_addrs(node):
    got = node.client(socket_timeout=5).execute_command("KEEL.CLUSTER", "MEMBERS")
    return {m[0].decode(): m[5].decode() for m in got}


def test_every_member_publishes_its_client_address_and_an_update_after_a_restart(make_cluster):
    """--initial-cluster names peer addresses only; each node fills in its own client address
    (KEEL.CLUSTER UPDATE through the log), and again when it restarts on another port."""
    cl = make_cluster(3)

    def want():
        return {nd.name: f"127.0.0.1:{nd.client_port}" for nd in cl.nodes}

    def published():
        try:
            return all(client_addrs(nd) == want() for nd in cl.nodes)
        except (redis.ConnectionError, redis.TimeoutError):
            return False

    assert wait_until(published, timeout_s=15), {nd.name: client_addrs(nd) for nd in cl.nodes}
    moved = cl.nodes[2]
    moved.kill()
    moved.client_port = free_port()
    moved.start()
    assert wait_until(published, timeout_s=15), {nd.name: client_addrs(nd) for nd in cl.nodes}
    c = cl.nodes[0].client()
    with pytest.raises(redis.ResponseError, match="no such member"):
        c.execute_command("KEEL.CLUSTER", "UPDATE", "nope", "127.0.0.1:1")
    assert c.execute_command("KEEL.CLUSTER", "UPDATE", moved.name, moved.name) == b"OK"
    assert wait_until(published, timeout_s=15)  # the node puts its own address back


def test_a_lone_node_publishes_its_own_client_address(make_cluster):
    """The leader's own entry: one node, so no follower's change writes it in passing."""
    cl = make_cluster(1)
    nd = cl.nodes[0]
    want = {nd.name: f"127.0.0.1:{nd.client_port}"}
    assert wait_until(lambda: client_addrs(nd) == want, timeout_s=10), client_addrs(nd)


def test_a_joiner_replaying_old_configurations_evicts_no_current_member(make_cluster):
    """A node that joins replays the log from its start, old configuration entries included:
    n3 removed, then n4 added, then n5 joins and applies the entry that removed n3 while it
    already knows n4. n4 is absent from that old configuration without having been removed
    (it did not exist yet): n5 must not tell it "removed" (found by the streams nemesis,
    where such a notice evicted a current voter for good)."""
    cl = make_cluster(3)
    n1, n2, n3 = cl.nodes
    leader = cl.wait_leader()
    for i in range(50):  # some log before the changes
        leader.client(socket_timeout=8).set(f"k{i}", "v")
    victim = n3 if leader is not n3 else n2
    rest = [nd for nd in cl.nodes if nd is not victim]
    assert cluster_cmd(rest, "REMOVE", victim.name, unknown_ok=("no member",)) in (None, b"OK", "OK")
    victim.kill()
    n4 = cl.new_node("n4", join=f"127.0.0.1:{rest[0].client_port}")
    n4.start()
    want = {nd.name: "voter" for nd in rest}
    want["n4"] = "voter"
    wait_members(rest[0], want)
    before = n4.log_size()
    n5 = cl.new_node("n5", join=f"127.0.0.1:{rest[1].client_port}")
    n5.start()
    want["n5"] = "voter"
    wait_members(rest[0], want)
    time.sleep(1.0)
    assert "removed from the cluster" not in n4.log_since(before), n4.log_since(before)
    assert n4.client(socket_timeout=8).set("after", "n5") is True  # n4 still serves
    for nd in rest + [n5]:
        assert "removed from the cluster" not in nd.log_since(0)
