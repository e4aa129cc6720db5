"""test_server_streams_cluster.py - streams on 3 nodes: acknowledged entries and group state
survive a leader kill and a whole-cluster restart (snapshots + WAL replay); BLOCK on a follower.
"""

import threading
import time

import redis

from keelcluster import make_cluster  # noqa: F401 (fixture)


class Producer(threading.Thread):
    """XADDs with explicit increasing ids to whichever node answers; records what was acked."""

    def __init__(self, cl, key):
        super().__init__(daemon=True)
        self.cl, self.key = cl, key
        self.acked, self.unknown, self.stop = [], [], False

    def run(self):
        seq, nodes = 0, list(self.cl.nodes)
        i = 0
        while not self.stop:
            nd = nodes[i % len(nodes)]
            if not nd.alive():
                i += 1
                continue
            try:
                c = nd.client(socket_timeout=2)
                while not self.stop:
                    seq += 1
                    sid = f"{seq}-1"
                    try:
                        c.xadd(self.key, {"n": str(seq)}, id=sid)
                        self.acked.append(sid)
                    except redis.ResponseError as e:
                        if "equal or smaller" in str(e):
                            continue  # an earlier unknown one got in: ids only go up
                        self.unknown.append(sid)
                        raise
            except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
                self.unknown.append(f"{seq}-1")
                i += 1
                time.sleep(0.05)


def group_state(c, key):
    pend = c.xpending_range(key, "g", "-", "+", 10000)
    groups = c.xinfo_groups(key)
    return ([(p["message_id"], p["consumer"], p["times_delivered"]) for p in pend],
            [(g["name"], g["last-delivered-id"], g["pending"], g["consumers"]) for g in groups])


def check_stream(c, p):
    ids = {e[0].decode() for e in c.xrange("s")}
    lost = [i for i in p.acked if i not in ids]
    assert not lost, f"{len(lost)} acknowledged XADDs lost: {lost[:10]}"
    return len(ids)


def test_acknowledged_xadds_and_groups_survive_a_leader_kill(make_cluster):
    cl = make_cluster(3)
    leader = cl.wait_leader()
    c = leader.client()
    c.xgroup_create("s", "g", id="0", mkstream=True)
    p = Producer(cl, "s")
    p.start()
    time.sleep(1.0)
    c.xreadgroup("g", "alice", {"s": ">"}, count=20)
    c.xreadgroup("g", "bob", {"s": ">"}, count=10)
    c.xack("s", "g", *[f"{i}-1" for i in range(1, 6)])
    c.xclaim("s", "g", "carol", 0, ["7-1"], retrycount=5)
    before = group_state(c, "s")
    assert len(before[0]) == 25
    leader.kill()
    new = cl.wait_leader()
    assert new is not leader
    time.sleep(1.0)
    leader.start()
    time.sleep(0.5)
    p.stop = True
    p.join(10)
    assert len(p.acked) > 100, f"too little load: {len(p.acked)}"
    new = cl.wait_leader()
    cl.wait_applied(cl.nodes, new.status()["commit_index"])
    for nd in cl.nodes:
        c = nd.client()
        check_stream(c, p)
        assert group_state(c, "s") == before, nd.name
        assert c.xrange("s") == new.client().xrange("s")
    c = new.client()
    got = c.xreadgroup("g", "alice", {"s": ">"}, count=1)
    assert got[0][1][0][0] == b"31-1"  # the group goes on exactly where it was


def test_streams_and_groups_survive_a_whole_cluster_restart_with_snapshots(make_cluster):
    cl = make_cluster(3, "--snapshot-entries", "200", "--snapshot-log-bytes-min", "0")
    c = cl.wait_leader().client()
    c.xgroup_create("s", "g", id="0", mkstream=True)
    for i in range(1, 1201):
        c.xadd("s", {"n": str(i), "pad": "x" * (i % 50)}, id=f"{i}-1")
        if i % 100 == 0:
            c.xreadgroup("g", f"c{i % 300}", {"s": ">"}, count=30)
    c.xdel("s", "3-1", "500-1")
    c.xtrim("s", minid="10-1")
    c.xack("s", "g", "20-1", "21-1")
    want = (c.xrange("s"), group_state(c, "s"), c.xinfo_stream("s")["entries-added"])
    for nd in cl.nodes:
        nd.kill()
    for nd in cl.nodes:
        nd.start(wait=False)
    for nd in cl.nodes:
        nd.wait_listening()
    leader = cl.wait_leader()
    cl.wait_applied(cl.nodes, leader.status()["commit_index"])
    for nd in cl.nodes:
        c = nd.client()
        got = (c.xrange("s"), group_state(c, "s"), c.xinfo_stream("s")["entries-added"])
        assert got == want, nd.name
    logs = "".join(nd.log_tail(200000) for nd in cl.nodes)
    assert "snapshot" in logs


def test_block_on_a_follower_wakes_when_the_append_is_applied_there(make_cluster):
    cl = make_cluster(3)
    leader = cl.wait_leader()
    follower = cl.followers(leader)[0]
    lc = leader.client()
    lc.xgroup_create("s", "g", id="$", mkstream=True)
    got = {}

    def read():
        got["xread"] = follower.client().xread({"s": "$"}, block=10000)
        got["xread_t"] = time.monotonic()

    def read_group():
        got["group"] = follower.client().xreadgroup("g", "f1", {"s": ">"}, count=5, block=10000)
        got["group_t"] = time.monotonic()

    ths = [threading.Thread(target=read), threading.Thread(target=read_group)]
    for th in ths:
        th.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    lc.xadd("s", {"f": "v"}, id="1-1")
    for th in ths:
        th.join(15)
    assert got["xread"] == [[b"s", [(b"1-1", {b"f": b"v"})]]]
    assert got["group"] == [[b"s", [(b"1-1", {b"f": b"v"})]]]
    assert got["xread_t"] - t0 < 0.5 and got["group_t"] - t0 < 0.5
    # the delivery went through the log: every node's PEL has it
    cl.wait_applied(cl.nodes, leader.status()["commit_index"])
    for nd in cl.nodes:
        assert nd.client().xpending("s", "g")["consumers"] == [{"name": b"f1", "pending": 1}]
    # a timeout on a follower answers nil like Redis
    t0 = time.monotonic()
    assert follower.client().xread({"s": "$"}, block=200) == []
    assert 0.18 <= time.monotonic() - t0 < 2.0


class Consumer(threading.Thread):
    """XREADGROUP BLOCK + XACK in a loop on one node at a time (another after an error);
    records what it was delivered and what it acknowledged for sure."""

    def __init__(self, cl, name, start_at):
        super().__init__(daemon=True)
        self.cl, self.name, self.i = cl, name, start_at
        self.delivered, self.acked, self.stop = [], set(), False
        self.last_delivery = time.monotonic()

    def run(self):
        while not self.stop:
            nd = self.cl.nodes[self.i % len(self.cl.nodes)]
            if not nd.alive():
                self.i += 1
                continue
            try:
                c = nd.client(socket_timeout=3)
                while not self.stop:
                    got = c.xreadgroup("g", self.name, {"s": ">"}, count=10, block=200)
                    ids = [e[0].decode() for _, entries in got for e in entries]
                    if not ids:
                        continue
                    self.last_delivery = time.monotonic()
                    self.delivered += ids
                    if c.xack("s", "g", *ids) == len(ids):
                        self.acked.update(ids)
            except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
                self.i += 1
                time.sleep(0.05)


def test_through_a_leader_kill_entries_are_delivered_once_and_acked_ones_never_again(make_cluster):
    cl = make_cluster(3)
    leader = cl.wait_leader()
    leader.client().xgroup_create("s", "g", id="0", mkstream=True)
    p = Producer(cl, "s")
    cons = [Consumer(cl, f"c{i}", i) for i in range(2)]
    for t in [p, *cons]:
        t.start()
    time.sleep(1.0)
    leader.kill()
    cl.wait_leader()
    time.sleep(1.0)
    leader.start()
    time.sleep(0.5)
    p.stop = True
    p.join(10)
    quiet = time.monotonic() + 20
    while time.monotonic() < quiet and min(time.monotonic() - c.last_delivery for c in cons) < 1.5:
        time.sleep(0.1)
    for c in cons:
        c.stop = True
        c.join(10)
    new = cl.wait_leader()
    cl.wait_applied(cl.nodes, new.status()["commit_index"])
    c = new.client()
    delivered = [i for co in cons for i in co.delivered]
    acked = set().union(*(co.acked for co in cons))
    pending = {e["message_id"].decode() for e in c.xpending_range("s", "g", "-", "+", 100000)}
    assert len(p.acked) > 100 and len(acked) > 100, (len(p.acked), len(acked))
    # no claims and no NACKs here: '>' gives each entry to one consumer, once
    assert len(delivered) == len(set(delivered)), "an entry was delivered twice"
    # every acknowledged XADD reached the group: seen by a consumer, or pending (a delivery
    # whose answer was lost when the leader died is in the PEL, for XCLAIM to recover)
    missing = [i for i in p.acked if i not in set(delivered) and i not in pending]
    assert not missing, f"{len(missing)} acknowledged entries never delivered: {missing[:10]}"
    # what a consumer acknowledged is no longer pending
    assert not (acked & pending), sorted(acked & pending)[:10]
    last = c.xinfo_groups("s")[0]["last-delivered-id"].decode()
    assert last == c.xrevrange("s", count=1)[0][0].decode()  # the group read it all
