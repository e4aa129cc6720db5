"""test_server_wal.py - a node's WAL damaged while it is down, and a node that was down for long.

WAL layout (src/runtime/wal.h): DIR/wal/wal-<16 hex>.log, a 32-byte segment
header, then records `u32 body_bytes | u32 crc32c(body) | body` padded to 8
bytes, then the preallocated zeros. A bad record with nothing valid after it
in the last segment is a torn tail: truncated with a warning. A bad record
followed by valid ones is corruption: the node must refuse to start, naming
the file and the offset.
"""

import os
import struct
import time

import pytest

from keelcluster import make_cluster  # noqa: F401 (fixture)

HEADER_BYTES = 32
SLOW = os.environ.get("KEEL_SLOW") == "1"


def wal_records(path):
    """[(offset, body_bytes)] of the records in one segment, up to the zeroed end."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"KEELWAL1", f"{path}: not a WAL segment"
    out, p = [], HEADER_BYTES
    while p + 8 <= len(data):
        body, _crc = struct.unpack_from("<II", data, p)
        if body == 0:
            break
        out.append((p, body))
        p += (8 + body + 7) // 8 * 8
    return out


def flip(path, offset, n=1):
    with open(path, "r+b") as f:
        f.seek(offset)
        old = f.read(n)
        f.seek(offset)
        f.write(bytes(b ^ 0xFF for b in old))


def write_keys(node, n, prefix="k", value=lambda i: f"v{i}", batch=1000):
    c = node.client(socket_timeout=30)
    for start in range(0, n, batch):
        p = c.pipeline(transaction=False)
        for i in range(start, min(n, start + batch)):
            p.set(f"{prefix}{i}", value(i))
        assert all(r is True for r in p.execute())


def assert_has_keys(node, n, prefix="k", value=lambda i: f"v{i}", stale=False):
    c = node.client(socket_timeout=30)
    if stale:
        c.execute_command("KEEL.READS", "stale")
    for start in range(0, n, 1000):
        keys = [f"{prefix}{i}" for i in range(start, min(n, start + 1000))]
        got = c.mget(keys)
        want = [value(i).encode() for i in range(start, min(n, start + 1000))]
        bad = [(k, g, w) for k, g, w in zip(keys, got, want) if g != w]
        assert not bad, f"{node.name}: {len(bad)} keys wrong, e.g. {bad[:3]}"


@pytest.mark.parametrize("damage", ["flip_body", "zero_second_half", "flip_length"])
def test_a_torn_tail_is_truncated_and_the_node_rejoins(make_cluster, damage):
    cl = make_cluster(3)
    leader = cl.wait_leader()
    victim = cl.followers(leader)[0]
    write_keys(leader, 300)
    cl.wait_applied([victim], leader.status()["commit_index"])
    victim.kill()
    seg = victim.wal_segments()[-1]
    recs = wal_records(seg)
    assert len(recs) > 10
    off, body = recs[-1]
    if damage == "flip_body":
        flip(seg, off + 8 + body // 2, 4)
    elif damage == "zero_second_half":  # as if the write stopped halfway
        half = off + 8 + body // 2
        with open(seg, "r+b") as f:
            f.seek(half)
            f.write(b"\0" * (off + 8 + body - half))
    else:  # a length that runs past the segment
        flip(seg, off + 3, 1)
    write_keys(leader, 100, prefix="while-down:")
    log_from = victim.log_size()
    victim.start()
    log = victim.log_since(log_from)
    assert "truncating torn tail" in log, log
    assert os.path.basename(seg) in log and f'"offset":{off}' in log, log
    cl.wait_applied([victim], leader.status()["commit_index"], timeout_s=20)
    assert_has_keys(victim, 300, stale=True)
    assert_has_keys(victim, 100, prefix="while-down:", stale=True)
    assert victim.client().set("after", "1") is True
    # /health can read 503 for a moment under writes (see test_server_admin.py); poll it
    deadline = time.monotonic() + 5
    while victim.health()[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert victim.health()[0] == 200


@pytest.mark.parametrize("where", ["middle", "first"])
def test_corruption_before_valid_records_stops_the_node_naming_file_and_offset(
    make_cluster, where
):
    cl = make_cluster(3)
    leader = cl.wait_leader()
    victim = cl.followers(leader)[0]
    write_keys(leader, 300)
    cl.wait_applied([victim], leader.status()["commit_index"])
    victim.kill()
    seg = victim.wal_segments()[-1]
    recs = wal_records(seg)
    off, body = recs[len(recs) // 2] if where == "middle" else recs[0]
    flip(seg, off + 8 + body - 1)  # the last byte of the body: only the CRC notices
    with open(seg, "rb") as f:
        before = f.read()
    rc, log = victim.run_to_exit(timeout_s=15)
    assert rc != 0, log
    want = f"{seg}: corrupt record at offset {off}"
    assert want in log, f"expected {want!r} in:\n{log}"
    with open(seg, "rb") as f:
        assert f.read() == before, "the refused segment was modified"
    # the rest of the cluster is unaffected
    assert leader.client().set("still", "up") is True


def test_a_bad_segment_header_stops_the_node(make_cluster):
    cl = make_cluster(3)
    leader = cl.wait_leader()
    victim = cl.followers(leader)[0]
    write_keys(leader, 50)
    victim.kill()
    seg = victim.wal_segments()[0]
    flip(seg, 10)
    rc, log = victim.run_to_exit(timeout_s=15)
    assert rc != 0
    assert f"{seg}: bad segment header at offset 0" in log, log


def test_segments_are_cut_replayed_and_damage_in_an_older_one_is_never_a_torn_tail(make_cluster):
    # 17 MiB: the smallest segment that holds a largest (16 MiB) record
    cl = make_cluster(3, segment_bytes="17m")
    leader = cl.wait_leader()
    big = lambda i: f"{i:08d}".encode() * 8192  # noqa: E731  (64 KiB)
    c = leader.client(socket_timeout=60)
    for start in range(0, 400, 25):
        p = c.pipeline(transaction=False)
        for i in range(start, start + 25):
            p.set(f"big{i}", big(i))
        assert all(r is True for r in p.execute())
    cl.wait_applied(cl.nodes, leader.status()["commit_index"])
    for nd in cl.nodes:
        assert len(nd.wal_segments()) >= 2, f"{nd.name}: no segment was cut"
    cl.kill_all()
    cl.start()
    cl.wait_leader()
    for nd in cl.nodes:
        r = nd.client(socket_timeout=60)
        for start in range(0, 400, 50):
            keys = [f"big{i}" for i in range(start, start + 50)]
            assert r.mget(keys) == [big(i) for i in range(start, start + 50)], nd.name
    leader = cl.wait_leader()
    victim = cl.followers(leader)[0]
    victim.kill()
    first = victim.wal_segments()[0]
    off, body = wal_records(first)[-1]  # the last record of a segment that is not the last
    flip(first, off + 8 + body // 2, 4)
    rc, log = victim.run_to_exit(timeout_s=30)
    assert rc != 0, log
    assert f"{first}: corrupt record at offset {off}" in log, log


def test_a_follower_behind_a_compacted_log_catches_up_from_the_leaders_snapshot(make_cluster):
    """With --snapshot-entries 1000 the leader compacts its log while a follower is down; the
    follower gets the leader's snapshot and the log after it. Then every node restarts from
    its own snapshot plus WAL tail. (Behaviour only: snapshot files are the server's business.)"""
    cl = make_cluster(3, "--snapshot-entries", "1000", "--snapshot-log-bytes-min", "0")
    leader = cl.wait_leader()
    lagger = cl.followers(leader)[0]
    write_keys(leader, 500)
    cl.wait_applied([lagger], leader.status()["commit_index"])
    lagger.kill()
    # Small batches: the leader keeps at most 64 AppendEntries in flight to the dead peer
    # (queued in its connector), so most of these entries can reach it only by snapshot.
    write_keys(leader, 6000, value=lambda i: f"s{i}", batch=10)
    log_from = lagger.log_size()
    lagger.start()
    cl.wait_applied([lagger], leader.status()["commit_index"], timeout_s=30)
    assert "installed the leader's snapshot" in lagger.log_since(log_from)
    assert_has_keys(lagger, 6000, value=lambda i: f"s{i}", stale=True)
    write_keys(leader, 100, prefix="tail:")
    cl.wait_applied(cl.nodes, leader.status()["commit_index"])
    cl.kill_all()
    cl.start()
    leader = cl.wait_leader()
    cl.wait_applied(cl.nodes, leader.status()["commit_index"])
    for nd in cl.nodes:
        assert_has_keys(nd, 6000, value=lambda i: f"s{i}", stale=True)
        assert_has_keys(nd, 100, prefix="tail:", stale=True)
        assert nd.status()["keys"] == 6100


def catch_up(make_cluster, n):
    # snapshots at the default entry count, whatever the log's size (as before the 64 MiB
    # minimum): a lagger behind 100,000 writes then needs the leader's snapshot
    cl = make_cluster(3, "--snapshot-log-bytes-min", "0")
    leader = cl.wait_leader()
    lagger = cl.followers(leader)[0]
    write_keys(leader, 1000)
    cl.wait_applied([lagger], leader.status()["commit_index"])
    lagger.kill()
    t0 = time.monotonic()
    write_keys(leader, n, value=lambda i: f"new{i}")  # overwrites the first 1000 too
    c = leader.client()
    for i in range(0, n, max(1, n // 100)):
        c.append(f"k{i}", "+")
    value = lambda i: f"new{i}+" if i % max(1, n // 100) == 0 else f"new{i}"  # noqa: E731
    wrote_s = time.monotonic() - t0
    lagger.start()
    t0 = time.monotonic()
    cl.wait_applied([lagger], leader.status()["commit_index"], timeout_s=60 + n / 1000)
    caught_s = time.monotonic() - t0
    assert_has_keys(lagger, n, value=value, stale=True)  # its own state, no leader help
    assert_has_keys(lagger, n, value=value)
    st = lagger.status()
    assert st["keys"] == n and st["revision"] == leader.status()["revision"]
    print(f"{n} writes in {wrote_s:.1f}s; the restarted follower caught up in {caught_s:.1f}s")


def test_a_follower_down_for_20000_writes_catches_up(make_cluster):
    catch_up(make_cluster, 20000)


@pytest.mark.slow
@pytest.mark.skipif(not SLOW, reason="slow: set KEEL_SLOW=1")
def test_a_follower_down_for_100000_writes_catches_up(make_cluster):
    catch_up(make_cluster, 100000)
