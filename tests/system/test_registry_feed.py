"""test_registry_feed.py - KEEL.REG FEED (the registry's push feed: state, changes, FROM, the
LAGGED bound) and the registry's limits as keel server flags (--reg-*), replicated by the
leader as KEEL.REG.LIMITS, on every node, across restarts and a leader change."""

import re
import socket
import time

import pytest
from conftest import wait_until
from keelcluster import RespConn, http_get, make_cluster, resp_command  # noqa: F401 (fixture)
from test_server_watch import RespError, decode


class Feed(RespConn):
    """A raw connection that sent KEEL.REG FEED (its reply in .first); next() decodes a push."""

    def __init__(self, port, service=None, frm=None, timeout_s=10.0, rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout_s)
        self.buf = b""
        try:
            self.sock.connect(("127.0.0.1", port))
            args = ["KEEL.REG", "FEED"] + ([service] if service else [])
            args += [] if frm is None else ["FROM", str(frm)]
            self.send(resp_command(*args))
            self.first = self.next()
        except BaseException:
            self.sock.close()
            raise

    def next(self):
        return decode(self.reply())[0]


def fields(inst):
    """An instance's flat field/value array as a dict of str -> value."""
    return {inst[i].decode(): inst[i + 1] for i in range(0, len(inst), 2)}


def change(m):
    """A regchange push as (index, op, service, id, status)."""
    assert m[0] == b"regchange", m
    f = fields(m[3])
    return m[1], m[2].decode(), f["service"].decode(), f["id"].decode(), f["status"].decode()


def reg(c, svc, iid, *extra):
    return c.execute_command("KEEL.REG", "REGISTER", svc, iid, "10.0.0.1", 80, *extra)


def metric(port, name):
    m = re.search(rf"^{name} (\S+)$", http_get(port, "/metrics")[1].decode(), re.M)
    return float(m.group(1)) if m else 0.0


def test_a_feed_pushes_the_state_then_each_change_of_its_service(make_cluster):
    cl = make_cluster(3)
    leader = cl.wait_leader()
    c = leader.client()
    reg(c, "web", "w1")
    ix = reg(c, "web", "w2", "TAGS", 1, "v2")
    reg(c, "api", "a1")
    f = cl.followers(leader)[0]
    cl.wait_applied([f], leader.status()["commit_index"])
    feed = Feed(f.client_port, "web")
    assert feed.first[0] == b"regfeed" and feed.first[1] == b"web"
    state = feed.next()
    assert state[0] == b"regstate" and state[1] == feed.first[2] >= ix
    assert sorted(fields(i)["id"] for i in state[2]) == [b"w1", b"w2"]
    reg(c, "web", "w3")
    reg(c, "api", "a2")  # another service: not pushed
    c.execute_command("KEEL.REG", "FAIL", "w1", "down")  # a status change
    c.execute_command("KEEL.REG", "HEARTBEAT", "w2")  # no index moves: not a change
    reg(c, "web", "w2", "TAGS", 1, "v3")  # an update
    c.execute_command("KEEL.REG", "DEREGISTER", "w3")
    got = [change(feed.next()) for _ in range(4)]
    assert [g[1:] for g in got] == [
        ("register", "web", "w3", "passing"),
        ("status", "web", "w1", "critical"),
        ("update", "web", "w2", "passing"),
        ("deregister", "web", "w3", "passing"),
    ]
    assert [g[0] for g in got] == sorted(g[0] for g in got) and got[0][0] > state[1]
    # push mode: only PING and QUIT
    feed.send(resp_command("GET", "x"))
    assert isinstance(feed.next(), RespError)
    feed.close()


def test_from_resumes_exactly_and_from_too_old_gives_the_state_first(make_cluster):
    cl = make_cluster(1)
    node = cl.wait_leader()
    c = node.client()
    first = reg(c, "s", "i1")
    reg(c, "s", "i2")
    c.execute_command("KEEL.REG", "DEREGISTER", "i1")
    # FROM inside the history: every change after it, once, no state
    feed = Feed(node.client_port, frm=first)
    assert feed.first == [b"regfeed", b"", first]
    assert change(feed.next())[1:4] == ("register", "s", "i2")
    assert change(feed.next())[1:4] == ("deregister", "s", "i1")
    feed.close()
    # push the history (8,192 changes) past index `first`: 4,200 register/deregister pairs
    for batch in range(6):
        p = c.pipeline(transaction=False)
        for i in range(700):
            p.execute_command("KEEL.REG", "REGISTER", "churn", f"c{batch}-{i}", "10.0.0.2", 1)
            p.execute_command("KEEL.REG", "DEREGISTER", f"c{batch}-{i}")
        p.execute()
    now = c.execute_command("KEEL.REG", "INDEX")
    old = Feed(node.client_port, frm=first)
    assert old.first[0] == b"regfeed" and old.first[2] == now  # the state's index, not FROM
    state = old.next()
    assert state[0] == b"regstate" and state[1] == now
    assert [fields(i)["id"] for i in state[2]] == [b"i2"]
    reg(c, "s", "i3")
    assert change(old.next())[1:4] == ("register", "s", "i3")
    old.close()


def test_a_feed_that_stops_reading_ends_with_lagged_and_resumes_from_where_it_stopped(
    make_cluster,
):
    """The server holds at most 1 MiB of unsent pushes for a feed: past it, with more
    changes waiting, the feed gets -LAGGED naming the last index it was sent whole, and is
    closed. FROM that index then goes on from there."""
    cl = make_cluster(1)
    node = cl.wait_leader()
    c = node.client()
    feed = Feed(node.client_port, "big", rcvbuf=4096, timeout_s=20)
    assert feed.next() == [b"regstate", feed.first[2], []]
    meta = ["k", "m" * 4000]
    for rnd in range(16):  # 16 x 200 updates of ~4 KiB instances: 13 MiB of pushes
        p = c.pipeline(transaction=False)
        for i in range(200):
            meta[1] = f"{rnd:02d}" + "m" * 3998
            p.execute_command("KEEL.REG", "REGISTER", "big", f"b{i}", "10.0.0.3", 1, "META", 1, *meta)
        p.execute()
    assert wait_until(lambda: metric(node.http_port, "keel_registry_feed_lagged_total") == 1, 20)
    last, n = feed.first[2], 0
    while True:
        m = feed.next()
        if isinstance(m, RespError):
            break
        assert m[1] >= last
        last, n = m[1], n + 1
    assert str(m).startswith("LAGGED registry feed"), m
    assert str(m).endswith(f"resume with FROM {last}"), (m, last)
    assert 0 < n < 3200
    assert feed.closed_by_peer()
    again = Feed(node.client_port, "big", frm=last)
    m = again.next()
    # inside the 16 MiB history: the next change after `last`; else the state first
    assert (m[0] == b"regchange" and m[1] > last) or m[0] == b"regstate", m[:2]
    again.close()


LIMIT_FLAGS = [
    "--reg-services-max", "2",
    "--reg-instances-per-service-max", "2",
    "--reg-tags-max", "1",
    "--reg-meta-bytes-max", "64",
    "--reg-threshold-max", "5",
]  # fmt: skip


def limits(nd):
    a = nd.client().execute_command("KEEL.REG", "LIMITS")
    return {a[i].decode(): a[i + 1] for i in range(0, len(a), 2)}


def want(d):
    return (
        d["services_max"] == 2
        and d["instances_per_service_max"] == 2
        and d["tags_max"] == 1
        and d["meta_bytes_max"] == 64
        and d["threshold_max"] == 5
        and d["instances_max"] == 65536  # not given: the default
    )


def refusals(c):
    """Each limit refuses with a -LIMIT (or -ERR) error naming it."""
    reg(c, "a", "a1")
    reg(c, "a", "a2")
    with pytest.raises(Exception, match="LIMIT registry: service 'a' holds "
                       "instances_per_service_max 2 instances"):  # fmt: skip
        reg(c, "a", "a3")
    reg(c, "b", "b1")
    with pytest.raises(Exception, match="LIMIT registry: the registry holds services_max 2"):
        reg(c, "c", "c1")
    with pytest.raises(Exception, match="LIMIT registry: 2 tags over tags_max 1"):
        reg(c, "b", "b2", "TAGS", 2, "x", "y")
    with pytest.raises(Exception, match="LIMIT registry: metadata over meta_bytes_max 64"):
        reg(c, "b", "b2", "META", 1, "k", "v" * 80)
    with pytest.raises(Exception, match="damping counts must be in 0..5"):
        reg(c, "b", "b2", "FAILURES_BEFORE_CRITICAL", 6)
    reg(c, "b", "b2", "TAGS", 1, "x", "META", 1, "k", "v" * 40)


def test_limit_flags_are_in_force_on_every_node_and_survive_restarts_and_a_leader_change(
    make_cluster,
):
    cl = make_cluster(3, *LIMIT_FLAGS, "--snapshot-entries", "20", "--snapshot-log-bytes-min", "0")
    leader = cl.wait_leader()
    for nd in cl.nodes:
        assert wait_until(lambda: want(limits(nd)), 10), (nd.name, limits(nd))
    refusals(leader.client())
    # the same refusal from a follower (it forwards the write; the leader's limits judge)
    f = cl.followers(leader)[0]
    with pytest.raises(Exception, match="services_max 2"):
        reg(f.client(), "d", "d1")
    for i in range(30):  # past --snapshot-entries: the limits travel in snapshots too
        f.client().execute_command("KEEL.REG", "HEARTBEAT", "a1")
    for nd in cl.nodes:  # each node snapshotted after the KEEL.REG.LIMITS entry
        assert wait_until(lambda: nd.status()["snapshot_index"] >= 20, 10), nd.status()
    # every node restarted without the flags: the replicated limits stay (log and snapshot)
    for nd in cl.nodes:
        nd.stop()
        nd.extra = [x for x in nd.extra if x not in LIMIT_FLAGS]
    for nd in cl.nodes:
        nd.start(wait=False)
    leader = cl.wait_leader()
    for nd in cl.nodes:
        assert wait_until(lambda: want(limits(nd)), 10), (nd.name, limits(nd))
    # a leader change: the new one judges by the same limits
    leader.kill()
    new = cl.wait_leader(among=cl.followers(leader))
    with pytest.raises(Exception, match="services_max 2"):
        reg(new.client(), "e", "e1")
    assert want(limits(new))


def test_a_leader_with_other_flags_puts_its_limits_in_force(make_cluster):
    cl = make_cluster(1)
    node = cl.wait_leader()
    assert limits(node)["services_max"] == 1024  # the defaults, nothing proposed
    node.stop()
    node.extra += ["--reg-services-max", "7", "--reg-ttl-ms-max", "60000"]
    node.start()
    cl.wait_leader()
    assert wait_until(lambda: limits(node)["services_max"] == 7, 10), limits(node)
    assert limits(node)["ttl_ms_max"] == 60000
    with pytest.raises(Exception, match="over 60000 ms"):
        reg(node.client(), "s", "i", "TTL", 60001)


def test_bad_limit_flags_are_refused_at_start():
    import subprocess

    from conftest import binary

    r = subprocess.run([binary("keel"), "server", "--reg-tags-max", "100000"],
                       capture_output=True, text=True, timeout=10)  # fmt: skip
    assert r.returncode != 0 and "--reg-tags-max" in r.stderr
    h = subprocess.run([binary("keel"), "server", "--help"], capture_output=True, text=True,
                       timeout=10)  # fmt: skip
    assert "--reg-instances-per-service-max" in h.stdout
