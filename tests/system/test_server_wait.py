"""test_server_wait.py - WAIT numreplicas timeout, answered truthfully from Raft (issue 19).

On the leader WAIT counts the other members whose log holds the connection's last write
(Raft's match indexes); on a follower, what commit proves (the majority, less itself).
A paused follower is not counted until it catches up; a count not reached waits for the
timeout. Errors and the single-node answers are compared with redis-server 7.0.
"""

import signal
import time

from keelcluster import RespConn, make_cluster, redis_server  # noqa: F401 (fixtures)

ROWS = [["WAIT", "0", "0"], ["SET", "a", "1"], ["WAIT", "0", "0"], ["WAIT", "1", "50"],
        ["WAIT", "x", "0"], ["WAIT", "1", "-1"], ["WAIT", "1"], ["WAIT", "-3", "0"],
        ["MULTI"], ["WAIT", "5", "0"], ["EXEC"]]


def run(port):
    c = RespConn(port)
    try:
        c.call("FLUSHALL")
        return [c.call(*cmd) for cmd in ROWS]
    finally:
        c.close()


def test_wait_on_one_node_replies_like_a_redis_without_replicas(make_cluster, redis_server):
    node = make_cluster(1).nodes[0]
    assert run(node.client_port) == run(redis_server.port)


def timed(c, *cmd):
    t = time.monotonic()
    r = c.call(*cmd)
    return r, time.monotonic() - t


def test_wait_counts_the_members_that_hold_the_write(make_cluster):
    cl = make_cluster(3)
    leader = cl.wait_leader()
    f1, f2 = cl.followers(leader)
    c = RespConn(leader.client_port)
    assert c.call("SET", "k", "1") == b"+OK\r\n"
    r, took = timed(c, "WAIT", "2", "5000")
    assert r == b":2\r\n" and took < 2.0, (r, took)
    f2.proc.send_signal(signal.SIGSTOP)  # paused: it stops acknowledging
    try:
        assert c.call("SET", "k", "2") == b"+OK\r\n"  # committed by the leader and f1
        r, took = timed(c, "WAIT", "2", "300")
        assert r == b":1\r\n" and 0.25 < took < 3.0, (r, took)  # the timeout, one holder
        r, took = timed(c, "WAIT", "1", "0")
        assert r == b":1\r\n" and took < 1.0, (r, took)  # reached at once
    finally:
        f2.proc.send_signal(signal.SIGCONT)
    r, took = timed(c, "WAIT", "2", "0")  # f2 catches up: no timeout needed
    assert r == b":2\r\n" and took < 10, (r, took)
    # a follower knows what commit proves: the majority (2 of 3) less itself
    f = RespConn(f1.client_port)
    assert f.call("SET", "k", "3") == b"+OK\r\n"
    assert f.call("WAIT", "1", "0") == b":1\r\n"
    r, took = timed(f, "WAIT", "2", "200")
    assert r == b":1\r\n" and took >= 0.15, (r, took)
    c.close()
    f.close()
