"""test_server_clients.py - per-client limits of keel server: --clients-max, --reply-bytes-max,
--pipeline-max. Each limit is hit on purpose and the server must go on serving everyone else.
"""

import socket
import time

from keelcluster import RespConn, make_cluster, resp_command  # noqa: F401 (fixture)


def test_the_client_over_clients_max_is_told_and_closed(make_cluster):
    node = make_cluster(1, "--clients-max", "3").nodes[0]
    conns = [RespConn(node.client_port) for _ in range(3)]
    for c in conns:
        assert c.call("PING") == b"+PONG\r\n"
    extra = RespConn(node.client_port)
    assert extra.reply() == b"-ERR max number of clients reached\r\n"
    assert extra.closed_by_peer()
    assert conns[0].call("INFO", "clients").count(b"connected_clients:3\r\n") == 1
    conns[0].close()
    deadline = time.monotonic() + 5
    while True:  # the slot frees once the server has seen the close
        c = RespConn(node.client_port)
        c.send(resp_command("PING"))
        r = c.reply()
        if r == b"+PONG\r\n" or time.monotonic() > deadline:
            break
        c.close()
        time.sleep(0.05)
    assert r == b"+PONG\r\n"
    assert conns[1].call("PING") == b"+PONG\r\n"


def test_a_client_that_does_not_read_is_dropped_at_reply_bytes_max(make_cluster):
    node = make_cluster(1, "--reply-bytes-max", "1m").nodes[0]
    good = RespConn(node.client_port)
    value = b"v" * 65536
    assert good.call("SET", "big", value) == b"+OK\r\n"
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(10)
    s.connect(("127.0.0.1", node.client_port))
    n = 400  # 26 MB of replies
    try:
        s.sendall(resp_command("GET", "big") * n)
    except (BrokenPipeError, ConnectionResetError):
        pass  # already dropped
    time.sleep(0.5)
    got, closed = 0, False
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            chunk = s.recv(1 << 20)
        except ConnectionResetError:
            closed = True
            break
        if not chunk:
            closed = True
            break
        got += len(chunk)
    s.close()
    assert closed, "the slow reader was not disconnected"
    assert got < n * len(value), f"all {got} bytes were delivered"
    assert good.call("GET", "big") == b"$65536\r\n" + value + b"\r\n"
    info = good.call("INFO", "clients")
    assert b"connected_clients:1\r\n" in info, info


def test_a_long_pipeline_runs_past_pipeline_max_in_order(make_cluster):
    node = make_cluster(1, "--pipeline-max", "4").nodes[0]
    c = RespConn(node.client_port)
    n = 2000
    c.send(b"".join(resp_command("INCR", "n") for _ in range(n)))
    replies = [c.reply() for _ in range(n)]
    assert replies == [b":%d\r\n" % (i + 1) for i in range(n)]
    assert c.call("GET", "n") == b"$4\r\n2000\r\n"


def test_a_write_released_by_an_answer_waits_for_the_next_turn_on_every_node(make_cluster):
    # A connection's commands of the other kind wait for those in flight (reads behind
    # writes); with KEEL.READS stale a read is answered at once, so the answer to a SET,
    # given while the node applies a batch, released the next SET in the middle of that
    # batch: the leader crashed on an assertion (a proposal while the core's Ready was out).
    cl = make_cluster(3)
    cl.wait_leader()
    for nd in cl.nodes:
        r = nd.client()
        r.execute_command("KEEL.READS", "stale")
        for i in range(20):
            pipe = r.pipeline(transaction=False)
            for j in range(10):
                pipe.set(f"{nd.name}-k{j}", f"v{i}")
                pipe.get(f"{nd.name}-k{j}")
            replies = pipe.execute()
            assert all(ok is True for ok in replies[0::2])
    for nd in cl.nodes:
        assert nd.alive(), nd.log_tail()
    leader = cl.wait_leader()
    r = leader.client()
    assert [r.get(f"{nd.name}-k{j}") for nd in cl.nodes for j in range(10)] == [b"v19"] * 30
