"""test_server_limits.py - size limits, malformed RESP and abrupt disconnects against keel server.

Each abuse is followed by a check that a well-behaved client on another
connection still gets correct answers, and the cluster fixture fails the test
if a node died meanwhile.
"""

import random
import socket
import struct
import threading
import time

import pytest
import redis

from keelcluster import (  # noqa: F401 (fixtures)
    RespConn,
    make_cluster,
    redis_server,
    resp_command,
)

# Malformed input on which keel answers exactly as redis-server 7.0 does.
PROTOCOL_ERRORS_SAME_AS_REDIS = [
    b"*1\r\n$abc\r\n",
    b"*1\r\n$-5\r\n",
    b"*1\r\n$9999999999\r\n",
    b"*1\r\n$536870913\r\n",  # over Redis's proto-max-bulk-len too
    b"*abc\r\n",
    b"*9999999999\r\n",
    b"*1\r\nfoo\r\n",
    b"*2\r\n$4\r\nECHO\r\n$-1\r\n",
    b'set a "b\r\n',
    b"*2\r\n$3\r\nGET\r\n:1\r\n",
]


def assert_serves(node, key=b"canary"):
    c = node.client()
    c.set(key, b"alive")
    assert c.get(key) == b"alive"


def test_malformed_resp_gets_the_redis_error_and_only_that_connection_closes(
    make_cluster, redis_server
):
    node = make_cluster(1).nodes[0]
    bystander = RespConn(node.client_port)
    assert bystander.call("SET", "b", "1") == b"+OK\r\n"
    for bad in PROTOCOL_ERRORS_SAME_AS_REDIS:
        replies = []
        for port in (node.client_port, redis_server.port):
            c = RespConn(port, timeout_s=5)
            c.send(resp_command("PING") + bad)
            assert c.reply() == b"+PONG\r\n"  # what came before the garbage is answered
            replies.append(c.reply())
            assert c.closed_by_peer(), f"{bad!r}: connection left open on port {port}"
            c.close()
        assert replies[0] == replies[1], f"{bad!r}: keel {replies[0]!r} redis {replies[1]!r}"
        assert replies[0].startswith(b"-ERR Protocol error")
        assert bystander.call("INCR", "b").startswith(b":")
    assert bystander.call("GET", "b") == b"$2\r\n%d\r\n" % (1 + len(PROTOCOL_ERRORS_SAME_AS_REDIS))


@pytest.mark.parametrize(
    "bad,why",
    [
        (b"*1\r\n$16777217\r\n", "a bulk length over keel's 16 MiB bulk limit"),
        (b"*1048577\r\n", "more than 1M arguments"),
        (b"*1\r\n$3\r\nfooXX", "no CRLF after the bulk data"),
    ],
)
def test_claims_over_keels_protocol_limits_close_the_connection(make_cluster, bad, why):
    node = make_cluster(1).nodes[0]
    c = RespConn(node.client_port)
    c.send(bad)
    assert c.reply().startswith(b"-ERR Protocol error"), why
    assert c.closed_by_peer(), why
    assert_serves(node)


def test_garbage_from_many_clients_leaves_the_server_serving_others(make_cluster):
    node = make_cluster(1).nodes[0]
    seed = random.randrange(1 << 30)
    print(f"seed {seed}")  # reproduce: random.Random(seed)
    rnd = random.Random(seed)
    good = node.client()
    for i in range(40):
        junk = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 3000)))
        if i % 4 == 0:
            junk = b"*3\r\n$3\r\nSET\r\n" + junk  # garbage inside a command
        s = socket.create_connection(("127.0.0.1", node.client_port), timeout=5)
        try:
            s.sendall(junk)
            s.shutdown(socket.SHUT_WR)
            s.settimeout(2)
            while s.recv(65536):
                pass
        except (ConnectionResetError, BrokenPipeError, socket.timeout):
            pass
        finally:
            s.close()
        assert good.incr("n") == i + 1, f"seed {seed}"


def test_values_and_keys_at_the_limit_pass_and_over_it_fail_without_closing(make_cluster):
    vmax, kmax = 65536, 1024
    cl = make_cluster(3, "--value-bytes-max", str(vmax), "--key-bytes-max", str(kmax))
    leader = cl.wait_leader()
    for nd in (leader, cl.followers(leader)[0]):
        c = RespConn(nd.client_port)
        key = f"v:{nd.name}"
        assert c.call("SET", key, b"a" * vmax) == b"+OK\r\n"
        assert c.call("SET", key, b"b" * (vmax + 1)) == b"-ERR string exceeds maximum allowed size\r\n"
        assert c.call("PING") == b"+PONG\r\n"  # still usable
        assert c.call("STRLEN", key) == b":%d\r\n" % vmax
        assert c.call("APPEND", key, "x") == b"-ERR string exceeds maximum allowed size\r\n"
        assert c.call("GETSET", key, b"c" * (vmax + 1)).startswith(b"-ERR string exceeds")
        assert c.call("MSET", "ok1", "1", key, b"d" * (vmax + 1)).startswith(b"-ERR string exceeds")
        assert c.call("EXISTS", "ok1") == b":0\r\n", "a failed MSET set some keys"
        assert c.call("GET", key) == b"$%d\r\n%s\r\n" % (vmax, b"a" * vmax)
        # each value within the limit, the whole far past what one entry held before: no
        # hidden per-entry limit (the entry takes any command the query buffer holds)
        many = [x for i in range(20) for x in (f"big{i}", b"e" * vmax)]
        assert c.call("MSET", *many) == b"+OK\r\n"
        assert c.call("STRLEN", "big19") == b":%d\r\n" % vmax
        big_key = b"k" * kmax
        assert c.call("SET", big_key, "1") == b"+OK\r\n"
        assert c.call("SET", big_key + b"k", "1") == b"-ERR key exceeds maximum allowed size\r\n"
        assert c.call("GET", big_key) == b"$1\r\n1\r\n"
    for nd in cl.nodes:  # the limit-sized values replicated everywhere
        r = nd.client()
        assert r.strlen(f"v:{leader.name}") == vmax
        assert r.dbsize() == 23


# A value of exactly --value-bytes-max (default 16 MiB) fits one Raft entry with its key and
# the command encoding (server.c sizes the entry limit from the value and query buffer limits).
def test_a_value_of_exactly_the_default_limit_is_accepted(make_cluster):
    cl = make_cluster(3)
    c = RespConn(cl.wait_leader().client_port, timeout_s=60)
    assert c.call("SET", "big", b"z" * (16 << 20)) == b"+OK\r\n"


def test_clients_vanishing_mid_command_do_not_disturb_others(make_cluster):
    cl = make_cluster(3)
    leader = cl.wait_leader()
    target = cl.followers(leader)[0]
    stop = threading.Event()
    errors = []
    done = [0]
    unknown = [0]
    changes_before = target.status()["leader_changes"]

    def steady():
        c = target.client()
        try:
            while not stop.is_set():
                try:
                    n = c.incr("steady")
                except redis.ResponseError as e:
                    # outcome unknown: allowed only with a leadership blip (checked below)
                    if not str(e).startswith(("UNKNOWN", "TIMEOUT", "TRYAGAIN")):
                        raise
                    unknown[0] += 1
                    continue
                # each unknown INCR may or may not have counted
                assert done[0] < n <= done[0] + 1 + unknown[0], f"INCR {n} after {done[0]}"
                done[0] = n
        except Exception as e:  # reported by the main thread
            errors.append(repr(e))

    t = threading.Thread(target=steady)
    t.start()
    full = resp_command("SET", "cut", "x" * 5000)
    try:
        for i in range(60):
            s = socket.create_connection(("127.0.0.1", target.client_port), timeout=5)
            if i % 3 == 0:  # a command cut at every kind of place, never completed
                s.sendall(full[: 1 + (i * 97) % (len(full) - 1)])
            elif i % 3 == 1:  # complete writes, gone before the replies
                s.sendall(resp_command("SET", f"gone:{i}", "v") + resp_command("GET", "steady"))
            else:  # a pipeline that is never read, then a reset
                s.sendall(resp_command("GET", "steady") * 500)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        # the steady client goes on a little after the storm (bounded)
        target_done = done[0] + 20
        deadline = time.monotonic() + 10
        while done[0] < target_done and not errors and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        t.join(timeout=30)
    assert not errors, errors
    print(f"steady client: {done[0]} INCRs, {unknown[0]} with an unknown outcome")
    assert done[0] >= 20
    if unknown[0]:
        # seen under ASan on 2 busy cores: a follower that misses heartbeats turns
        # pre-candidate, forgets the leader (same term) and fails its forwarded writes
        assert target.status()["leader_changes"] > changes_before, (
            f"{unknown[0]} outcome-unknown replies without any leader change"
        )
    c = target.client()
    assert c.exists("cut") == 0, "a command cut short was executed"
    assert done[0] <= int(c.get("steady")) <= done[0] + unknown[0]
    # the complete writes of vanished clients were either applied or not; the node still works
    assert_serves(target)
    assert_serves(leader)
    with pytest.raises(redis.ResponseError):
        c.execute_command("SET")
