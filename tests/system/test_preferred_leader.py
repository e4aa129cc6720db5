"""test_preferred_leader.py - `keel server --preferred-leader NAME`: the leader hands leadership to
the preferred member once it has been a connected, caught-up voter for a few seconds, so
leadership comes back to it by itself after it was killed or paused, and no acknowledged write
is lost on the way; a preference naming no member changes nothing."""
import signal
import threading
import time

import redis

from keelcluster import http_get, make_cluster  # noqa: F401 (fixture)

STABLE_S = 3.0  # KEEL_NODE_PREFER_STABLE_MS


def wait_leads(cl, name, timeout_s):
    """Seconds until `name` leads (every running node agreeing), or a failure."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if cl.wait_leader(timeout_s=20).name == name:
            return time.monotonic() - t0
        time.sleep(0.1)
    raise AssertionError(f"{name} did not lead within {timeout_s}s:\n{cl.log_tails()}")


def transfers(nd):
    code, body, _ = http_get(nd.http_port, "/metrics")
    assert code == 200
    for line in body.decode().splitlines():
        if line.startswith("keel_raft_preferred_leader_transfers_total"):
            return float(line.split()[-1])
    return 0.0


def total_transfers(cl, skip=None):
    return sum(transfers(nd) for nd in cl.nodes if nd.alive() and nd is not skip)


class Writer:
    """Writes k0, k1, ... to any node that takes them; remembers what was acknowledged."""

    def __init__(self, cl):
        self.cl, self.acked, self.stop = cl, [], threading.Event()
        self.t = threading.Thread(target=self.run)
        self.t.start()

    def run(self):
        i = 0
        while not self.stop.is_set():
            for nd in self.cl.running():
                try:
                    if nd.client(socket_timeout=2).set(f"k{i}", str(i)):
                        self.acked.append(i)
                        break
                except (redis.exceptions.RedisError, OSError):
                    continue
            i += 1
            time.sleep(0.005)

    def finish(self):
        self.stop.set()
        self.t.join()
        return self.acked


def test_leadership_comes_back_to_the_preferred_member(make_cluster):
    cl = make_cluster(3, "--preferred-leader", "n1")
    n1 = cl.node("n1")
    wait_leads(cl, "n1", 20)  # whoever won the first election hands over
    w = Writer(cl)
    try:
        # killed: another member leads meanwhile; restarted: the lead comes back by itself
        n1.kill()
        other = cl.wait_leader(timeout_s=20)
        assert other.name != "n1"
        time.sleep(1)
        before = total_transfers(cl)
        n1.start()
        took = wait_leads(cl, "n1", 30)
        assert took >= STABLE_S - 0.5, took  # not before it was fit to lead for a while
        assert total_transfers(cl) >= before + 1  # by a transfer (on whichever node led)
        # paused (SIGSTOP) past the election timeout: the same once it runs again
        n1.proc.send_signal(signal.SIGSTOP)
        try:
            stand_in = cl.wait_leader(timeout_s=20, among=[nd for nd in cl.nodes if nd is not n1])
            assert stand_in.name != "n1"
        finally:
            n1.proc.send_signal(signal.SIGCONT)
        wait_leads(cl, "n1", 30)
    finally:
        acked = w.finish()
    assert len(acked) > 100
    c = cl.wait_leader().client()
    got = c.mget([f"k{i}" for i in acked])
    lost = [i for i, v in zip(acked, got) if v != str(i).encode()]
    assert not lost, f"acknowledged writes lost: {lost[:10]}"


def test_a_preference_naming_no_member_changes_nothing(make_cluster):
    cl = make_cluster(3, "--preferred-leader", "n9")
    leader = cl.wait_leader(timeout_s=20)
    time.sleep(STABLE_S + 2)
    assert all(transfers(nd) == 0 for nd in cl.nodes)
    assert "names no member" in leader.log_tail()  # said, not silently ignored


def test_a_hung_preferred_member_is_not_fit(make_cluster):
    """A stopped process keeps its TCP connection and its match index: without a recent answer
    it is not fit, so the leader does not hand leadership to it (found by review: one transfer
    every 10 s toward a SIGSTOPped n1, each parking writes for an election timeout)."""
    cl = make_cluster(3, "--preferred-leader", "n1")
    n1 = cl.node("n1")
    wait_leads(cl, "n1", 20)
    n1.kill()
    cl.wait_leader(timeout_s=20)
    n1.start()
    time.sleep(1.0)  # connected and caught up, not yet fit for 3 s
    n1.proc.send_signal(signal.SIGSTOP)
    try:
        before = total_transfers(cl, skip=n1)  # n1 answers nothing while stopped
        time.sleep(STABLE_S + 5)
        started = total_transfers(cl, skip=n1) - before
    finally:
        n1.proc.send_signal(signal.SIGCONT)
    assert started == 0, started
    wait_leads(cl, "n1", 30)  # running again: fit, and handed the lead
