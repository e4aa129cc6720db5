"""test_server_streams_block.py - XREAD and XREADGROUP BLOCK: on one node, on followers.

A blocked read waits on the node that took it, leader or follower, as that node applies the
log: it wakes when an append is applied there, answers nil at its timeout like Redis, and
holds nothing of Raft's while it waits (docs/streams.md, "Blocking reads").
"""

import threading
import time

from keelcluster import RespConn, make_cluster  # noqa: F401 (fixtures)


def test_xread_block_waits_for_an_append_and_times_out_with_nil(make_cluster):
    node = make_cluster(1).nodes[0]
    c = node.client()
    c.xadd("s", {"f": "old"}, id="1-0")
    t0 = time.monotonic()
    assert c.xread({"s": "$"}, block=300) == []  # redis-py: nil -> []
    assert 0.25 <= time.monotonic() - t0 < 2.0
    got = {}

    def reader():
        got["r"] = node.client().xread({"s": "$"}, block=10000)
        got["t"] = time.monotonic()

    th = threading.Thread(target=reader)
    th.start()
    time.sleep(0.3)
    t_add = time.monotonic()
    c.xadd("s", {"f": "new"}, id="2-0")
    th.join(10)
    assert got["r"] == [[b"s", [(b"2-0", {b"f": b"new"})]]]
    assert got["t"] - t_add < 0.5
    # BLOCK 0 waits until something comes
    raw = RespConn(node.client_port)
    raw.send(b"*6\r\n$5\r\nXREAD\r\n$5\r\nBLOCK\r\n$1\r\n0\r\n$7\r\nSTREAMS\r\n$2\r\nzz\r\n$1\r\n$\r\n")
    time.sleep(0.3)
    c.xadd("zz", {"a": "b"}, id="7-7")
    assert raw.reply() == b"*1\r\n*2\r\n$2\r\nzz\r\n*1\r\n*2\r\n$3\r\n7-7\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n"


def test_xreadgroup_block_delivers_to_one_waiting_consumer(make_cluster):
    node = make_cluster(1).nodes[0]
    c = node.client()
    c.xgroup_create("s", "g", id="$", mkstream=True)
    t0 = time.monotonic()
    assert c.xreadgroup("g", "a", {"s": ">"}, block=200) == []
    assert time.monotonic() - t0 >= 0.18
    got = []

    def consumer(name):
        r = node.client().xreadgroup("g", name, {"s": ">"}, count=1, block=3000)
        got.append((name, r))

    ths = [threading.Thread(target=consumer, args=(n,)) for n in ("a", "b")]
    for th in ths:
        th.start()
    time.sleep(0.3)
    c.xadd("s", {"f": "1"}, id="1-0")
    for th in ths:
        th.join(10)
    delivered = [r for _, r in got if r]
    assert delivered == [[[b"s", [(b"1-0", {b"f": b"1"})]]]]
    assert c.xpending("s", "g")["pending"] == 1




def test_a_blocked_xreadgroup_whose_client_left_is_never_served(make_cluster):
    """A consumer that closes its connection while blocked must not be handed the next
    entries (they would sit in the PEL, owned by nobody who knows). The server stopped
    reading a blocked client's socket, so it never saw it leave, and the next append served
    it: the end-to-end bench (keel-streambench) lost batches to a finished run's consumers
    of the same names. Redis frees a blocked client when it disconnects."""
    import socket

    node = make_cluster(1).nodes[0]
    c = node.client()
    for rnd in range(5):
        key = f"s{rnd}"  # the last round's entries stay undelivered in its stream
        c.xgroup_create(key, "g", id="$", mkstream=True)
        socks = []
        for i in range(20):
            sk = socket.create_connection(("127.0.0.1", node.client_port))
            name = f"gone{rnd}-{i}"
            cmd = ["XREADGROUP", "GROUP", "g", name, "BLOCK", "0", "STREAMS", key, ">"]
            sk.sendall(f"*{len(cmd)}\r\n".encode() + b"".join(
                f"${len(a)}\r\n{a}\r\n".encode() for a in cmd))
            socks.append(sk)
        time.sleep(0.2)  # every read is blocked
        for sk in socks:
            sk.close()
        time.sleep(0.1)  # the server has seen them go (an append racing a close can't know)
        p = c.pipeline(transaction=False)
        for _ in range(20):
            p.xadd(key, {"f": "v"})
        p.execute()
        time.sleep(0.1)
        assert c.xpending(key, "g")["pending"] == 0, f"round {rnd}: served departed consumers"
        assert c.xinfo_groups(key)[0]["lag"] == 20  # still there for the next reader


def test_commands_pipelined_behind_a_blocked_read_are_answered_after_a_half_close(make_cluster):
    """The other side of the rule above: a client that sends XREAD BLOCK and PING, then
    shuts its sending side (printf ... | nc), still gets both answers, then the close."""
    import socket

    node = make_cluster(1).nodes[0]
    node.client().xadd("s", {"f": "v"}, id="1-1")
    sk = socket.create_connection(("127.0.0.1", node.client_port), timeout=10)
    cmd = ["XREAD", "BLOCK", "300", "STREAMS", "s", "$"]
    sk.sendall(f"*{len(cmd)}\r\n".encode() + b"".join(
        f"${len(a)}\r\n{a}\r\n".encode() for a in cmd) + b"*1\r\n$4\r\nPING\r\n")
    sk.shutdown(socket.SHUT_WR)
    got = b""
    while True:
        chunk = sk.recv(4096)
        if not chunk:
            break
        got += chunk
    sk.close()
    assert got == b"*-1\r\n+PONG\r\n"
