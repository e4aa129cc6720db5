"""test_server_peers.py - the peer protocol against a fake peer written here.

One real node, n1, is started with a two-member --initial-cluster whose other member, n2,
is this test: a listener on n2's peer port that reads n1's HELLO and writes back frames
of its choosing (proto/frame.h: u32 length | u8 version | u8 type | payload | u32 CRC32C).
The only frame a member ever writes back on a peer connection is REMOVED (type 8, u64 id).
A bad frame there must drop only that connection (n1 reconnects); a REMOVED frame must be
understood even when it arrives in pieces. Garbage sent to n1's own peer port closes that
connection and leaves the node serving.
"""

import socket
import struct
import time

import pytest
import redis

from conftest import binary, crc32c, wait_until
from keelcluster import Node, distinct_ports

PEER_REMOVED = 8
FRAME_VERSION = 1
HELLO_BYTES = 34  # u32 length, version, type, 3 x u64, CRC


def frame(ftype, payload):
    head = struct.pack("<IBB", 1 + 1 + len(payload) + 4, FRAME_VERSION, ftype) + payload
    return head + struct.pack("<I", crc32c(head))


def test_crc32c_matches_the_standard_check_value():
    assert crc32c(b"123456789") == 0xE3069283


@pytest.fixture
def lone_node(tmp_path):
    """n1 running, and a listening socket standing in for n2's peer port."""
    ports = distinct_ports(4)
    fake = socket.socket()
    fake.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    fake.bind(("127.0.0.1", ports[3]))
    fake.listen(4)
    fake.settimeout(10)
    n1 = Node(binary("keel"), "n1", str(tmp_path), ports[0], ports[1], ports[2])
    n1.initial_cluster = f"n1=127.0.0.1:{ports[1]},n2=127.0.0.1:{ports[3]}"
    n1.start()
    yield n1, fake
    n1.kill()
    fake.close()


def accept_hello(fake):
    conn, _ = fake.accept()
    conn.settimeout(10)
    got = b""
    while len(got) < HELLO_BYTES:
        chunk = conn.recv(HELLO_BYTES - len(got))
        assert chunk, "n1 closed before its HELLO"
        got += chunk
    length, version, ftype = struct.unpack_from("<IBB", got)
    assert (length, version, ftype) == (HELLO_BYTES - 4, FRAME_VERSION, 1), got
    cluster_id, frm, to = struct.unpack_from("<QQQ", got, 6)
    assert (frm, to) == (1, 2)
    return conn


def test_a_bad_frame_back_drops_the_connection_and_a_split_removed_frame_evicts(lone_node):
    n1, fake = lone_node
    before = n1.log_size()
    c1 = accept_hello(fake)
    c1.sendall(frame(2, b"\0" * 8))  # a RAFT frame: never valid in this direction
    c2 = accept_hello(fake)  # n1 dropped c1 and connected again
    assert "the peer sent back a bad frame" in n1.log_since(before)
    c1.close()
    bad_crc = bytearray(frame(PEER_REMOVED, struct.pack("<Q", 1)))
    bad_crc[-1] ^= 0xFF
    c2.sendall(bytes(bad_crc))
    c3 = accept_hello(fake)
    c2.close()
    assert "removed from the cluster" not in n1.log_since(before)
    other = frame(PEER_REMOVED, struct.pack("<Q", 7))  # REMOVED for another id: refused
    c3.sendall(other)
    c4 = accept_hello(fake)
    c3.close()
    assert "removed from the cluster" not in n1.log_since(before)

    removed = frame(PEER_REMOVED, struct.pack("<Q", 1))
    c4.sendall(removed[:5])
    time.sleep(0.3)
    c4.sendall(removed[5:])
    assert wait_until(lambda: "removed from the cluster" in n1.log_since(before), timeout_s=5)
    with pytest.raises(redis.ResponseError, match="not a member of the cluster"):
        n1.client(socket_timeout=5).set("k", "v")
    c4.close()


def test_garbage_on_the_peer_port_closes_that_connection_only(lone_node):
    n1, fake = lone_node
    for junk in [b"\xff" * 64, frame(1, b"\0" * 3), frame(2, b"\0" * 8)]:
        s = socket.create_connection(("127.0.0.1", n1.peer_port), timeout=5)
        s.sendall(junk)
        assert s.recv(64) == b"", f"{junk!r}: connection left open"  # closed, nothing sent
        s.close()
    assert n1.alive()
    assert n1.client(socket_timeout=5).ping()
