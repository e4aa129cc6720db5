"""test_server_diskfull.py - the leader's disk fills up under write load.

The leader's data directory sits on a small tmpfs of its own. Writers keep it busy,
and a filler writes large values until the next WAL segment cannot be created
(ENOSPC). A WAL write or sync that fails cannot be retried safely, so the node must stop
at once, loudly, naming the error. It must not acknowledge anything it did not make
durable. The two other nodes elect a leader and go on. Once space is freed, the node
restarts from what it had written, catches up, and every node holds every acknowledged write.

Needs root (mount); skipped otherwise.
"""

import os
import subprocess
import threading
import time

import pytest
import redis

from keelcluster import make_cluster  # noqa: F401 (fixture)
from test_server_crash import WRITERS, check_acknowledged_writes, start_writers, stop_writers

FILL_VALUE_BYTES = 64 * 1024
SMALL_FS = "40m"  # two 17 MiB WAL segments fit, the third does not
BIG_FS = "400m"


def mount_tmpfs(path, size):
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    os.makedirs(path, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                       capture_output=True, timeout=30)  # fmt: skip
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")


class Filler(threading.Thread):
    """SETs large values under fresh keys through one node; records what was acknowledged."""

    def __init__(self, node):
        super().__init__(daemon=True)
        self.node = node
        self.stop = threading.Event()
        self.acked = []
        self.unknown = 0

    def run(self):
        c = self.node.client(socket_timeout=5, socket_connect_timeout=0.5)
        i = 0
        while not self.stop.is_set():
            key = f"fill:{i}"
            try:
                assert c.set(key, bytes([i % 251]) * FILL_VALUE_BYTES) is True
                self.acked.append(i)
            except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
                self.unknown += 1
                time.sleep(0.05)
            i += 1


def test_a_leader_whose_disk_fills_stops_loudly_and_no_acknowledged_write_is_lost(
    make_cluster, tmp_path
):
    small = str(tmp_path / "small")
    mount_tmpfs(small, SMALL_FS)
    cl = make_cluster(3, "--snapshot-entries", "1000000", start=False)
    victim = cl.nodes[0]
    victim.data_dir = os.path.join(small, "data")
    victim.wal_dir = os.path.join(victim.data_dir, "wal")
    try:
        cl.start()
        leader = cl.wait_leader()
        if leader is not victim:
            leader.client().execute_command("KEEL.CLUSTER", "TRANSFER", victim.name)
            assert cl.wait_leader() is victim
        ws = start_writers(cl)
        filler = Filler(victim)
        filler.start()
        try:
            deadline = time.monotonic() + 120
            while victim.alive() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not victim.alive(), "the leader's disk never filled up:\n" + victim.log_tail()
            victim.expect_exit = True  # checked here, not reported again at teardown
            log = victim.log_tail(20000)
            assert victim.proc.returncode == -6, (victim.proc.returncode, log[-3000:])  # abort()
            assert "WAL sync failed; stopping" in log, log[-3000:]
            assert "No space left on device" in log, log[-3000:]
            rest = [nd for nd in cl.nodes if nd is not victim]
            cl.wait_leader(among=rest)
            time.sleep(1.0)  # the writers fail over to the two left
            # Space comes back; the node restarts from its own WAL and catches up.
            subprocess.run(["mount", "-o", f"remount,size={BIG_FS}", small], check=True,
                           timeout=30)  # fmt: skip
            victim.start()
            time.sleep(1.0)
        finally:
            filler.stop.set()
            stop_writers(ws)
            filler.join(timeout=30)
        assert len(filler.acked) > 100, f"too little filled: {len(filler.acked)}"
        assert sum(w.oks for w in ws) > WRITERS * 20
        leader = cl.wait_leader()
        cl.wait_applied(cl.nodes, leader.status()["commit_index"])
        for nd in cl.nodes:
            check_acknowledged_writes(ws, nd)
            c = nd.client(socket_timeout=30)
            for lo in range(0, len(filler.acked), 100):
                ids = filler.acked[lo : lo + 100]
                values = c.mget([f"fill:{i}" for i in ids])
                for i, v in zip(ids, values):
                    assert v == bytes([i % 251]) * FILL_VALUE_BYTES, f"{nd.name}: fill:{i} lost"
    finally:
        victim.kill()  # it holds files on the mount
        subprocess.run(["umount", "-l", small], timeout=30)
