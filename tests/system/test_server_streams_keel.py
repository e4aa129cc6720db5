"""test_server_streams_keel.py - what keel's streams add to Redis's: idempotent producers.

XADD key ... KEEL.PRODUCER pid seq ...: a retried append (same producer, same sequence)
after a lost reply is answered with the first append's id and appends nothing; an older
sequence is refused; the memory is kept through restarts (it is part of the stream).
"""

import redis

from keelcluster import RespConn, make_cluster, redis_server  # noqa: F401 (fixtures)


def test_a_retried_append_is_answered_with_the_first_id(make_cluster):
    node = make_cluster(1).nodes[0]
    c = RespConn(node.client_port)
    first = c.call("XADD", "s", "KEEL.PRODUCER", "p1", "1", "*", "f", "v")
    assert first.startswith(b"$")
    assert c.call("XADD", "s", "KEEL.PRODUCER", "p1", "1", "*", "f", "v") == first
    assert c.call("XLEN", "s") == b":1\r\n"
    second = c.call("XADD", "s", "KEEL.PRODUCER", "p1", "2", "*", "f", "w")
    assert second != first and c.call("XLEN", "s") == b":2\r\n"
    assert c.call("XADD", "s", "KEEL.PRODUCER", "p1", "1", "*", "f", "v") == (
        b"-ERR keel: producer sequence 1 is behind the last one, 2\r\n")
    # producers are independent; options combine with trimming and explicit ids
    assert c.call("XADD", "s", "KEEL.PRODUCER", "p2", "1", "MAXLEN", "10", "99999999999999-1",
                  "f", "x") == b"$16\r\n99999999999999-1\r\n"
    assert c.call("XADD", "s", "KEEL.PRODUCER", "p2", "1", "MAXLEN", "10", "99999999999999-1",
                  "f", "x") == b"$16\r\n99999999999999-1\r\n"
    assert c.call("XLEN", "s") == b":3\r\n"
    assert c.call("XADD", "s", "KEEL.PRODUCER", "p3", "0", "*", "f", "v").startswith(
        b"-ERR keel: producer sequence must be")
    assert c.call("XADD", "s", "KEEL.PRODUCER", "x" * 65, "1", "*", "f", "v").startswith(
        b"-ERR keel: producer id longer")
    node.stop()
    node.start()
    c = RespConn(node.client_port)
    assert c.call("XADD", "s", "KEEL.PRODUCER", "p1", "2", "*", "f", "w") == second
    assert c.call("XLEN", "s") == b":3\r\n"


def test_redis_refuses_the_keel_option_so_it_cannot_be_mistaken(redis_server):
    c = redis_server.client()
    try:
        c.execute_command("XADD", "s", "KEEL.PRODUCER", "p1", "1", "*", "f", "v")
        raise AssertionError("redis took KEEL.PRODUCER")
    except redis.ResponseError as e:
        assert "Invalid stream ID" in str(e)
