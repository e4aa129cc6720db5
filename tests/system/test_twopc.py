"""test_twopc.py - two-phase commit (src/tx/twopc.c) against a real 3-node keel cluster: the
coordinator process (keel-twopc run, with both SQLite banks) is SIGKILLed mid-transfer again and
again, and the keel leader is killed under it; money is conserved across the two banks and no
transaction stays in doubt or open once recovery ran."""

import re
import signal
import subprocess
import time

from conftest import binary
from keelcluster import make_cluster  # noqa: F401 (fixture)

ACCOUNTS = 8
BALANCE = 1000
TOTAL = 2 * ACCOUNTS * BALANCE


def tool(addrs, d, *args, timeout=60):
    return subprocess.run([binary("keel-twopc"), "--addr", addrs, "--dir", str(d), *args],
                          capture_output=True, timeout=timeout)


def run_args(addrs, d, prefix, count, *extra):
    return [binary("keel-twopc"), "--addr", addrs, "--dir", str(d), "run", "--prefix", prefix,
            "--count", str(count), "--seed", "7", *extra]


def open_marks(r):
    """The open transactions' ids (the hash 2pc:open)."""
    return r.hkeys("2pc:open")


def check_conserved(addrs, d):
    out = tool(addrs, d, "check", "--expect", str(TOTAL))
    text = out.stdout.decode()
    assert out.returncode == 0, text + out.stderr.decode()
    assert f"total={TOTAL} holds=0 in_doubt_a=0 in_doubt_b=0" in text, text


def log_types(r, tx):
    """The record types of a transaction's log (byte 5 of each record)."""
    return [entry[1][b"r"][5] for entry in r.xrange(f"2pc:{tx}:log")]


def test_transfers_survive_the_coordinator_being_killed_mid_transaction(make_cluster, procs,
                                                                         tmp_path):
    """150 transfers between two banks, each call to a bank slowed by 8 ms so a kill lands
    inside a transaction: the coordinator (which holds both banks too) is SIGKILLed three
    times. Each restart first resolves the banks' transactions in doubt (asking the log,
    proposing abort where nothing was decided) and finishes open ones, then repeats the same
    transfers by id: the logs decide, nothing is applied twice. At the end the money is
    conserved, no hold is left, nothing is in doubt and no transaction is open; every
    committed log reads begin, commit, end and every aborted one begin, abort, end."""
    cluster = make_cluster(3)
    addrs = ",".join(f"127.0.0.1:{nd.client_port}" for nd in cluster.nodes)
    r = cluster.nodes[0].client()
    d = tmp_path / "banks"
    d.mkdir()
    assert tool(addrs, d, "setup", "--accounts", str(ACCOUNTS), "--balance",
                str(BALANCE)).returncode == 0
    recovered = 0
    for kill in range(3):
        p = procs.start(run_args(addrs, d, "k", 150, "--slow-ms", "8"))
        for _ in range(25 + 10 * kill):
            m = p.read_line(r"^(?:end \S+|recovered in_doubt_a=(\d+) in_doubt_b=(\d+) "
                            r"open=(\d+))", timeout_s=60)
            if m.group(1) is not None:
                recovered += sum(int(x) for x in m.groups())
        time.sleep([0.02, 0.035, 0.05][kill])  # into the prepares, between them, the commits
        p.signal(signal.SIGKILL)
        p.wait(10)
    last = procs.start(run_args(addrs, d, "k", 150))
    last.may_exit = True
    rc = last.wait(180)
    out = last.p.stdout.read().decode()
    assert rc == 0, out[-3000:] + last.output()[-3000:]
    m = re.search(r"summary ended=150 committed=(\d+) aborted=(\d+) errors=0", out)
    assert m, out[-2000:]
    assert int(m.group(1)) > 100, out[-2000:]
    m = re.search(r"recovered in_doubt_a=(\d+) in_doubt_b=(\d+) open=(\d+)", out)
    recovered += sum(int(x) for x in m.groups())
    assert recovered > 0, "no kill left a transaction in doubt or open: the test missed"
    # a final recovery finds nothing, and the books balance
    rec = tool(addrs, d, "recover")
    assert rec.returncode == 0, rec.stderr.decode()
    assert "recovered in_doubt_a=0 in_doubt_b=0 open=0" in rec.stdout.decode()
    check_conserved(addrs, d)
    assert open_marks(r) == []
    ends = re.findall(r"^end (k-\d+) (committed|aborted)$", out, re.M)
    assert len(ends) == 150
    for tx, st in ends:
        assert log_types(r, tx) == ([1, 2, 4] if st == "committed" else [1, 3, 4]), (tx, st)


def test_transfers_survive_the_keel_leader_being_killed_under_them(make_cluster, procs,
                                                                    tmp_path):
    """The same transfers while the keel leader is SIGKILLed and restarted twice: a log write
    whose outcome was lost is sent again with the same entry id (a landed one is recognised),
    so every transaction still ends, the money is conserved and nothing is left in doubt."""
    cluster = make_cluster(3)
    addrs = ",".join(f"127.0.0.1:{nd.client_port}" for nd in cluster.nodes)
    d = tmp_path / "banks"
    d.mkdir()
    assert tool(addrs, d, "setup", "--accounts", str(ACCOUNTS), "--balance",
                str(BALANCE)).returncode == 0
    run = procs.start(run_args(addrs, d, "n", 150, "--slow-ms", "3"))
    run.may_exit = True
    for kill in range(2):
        for _ in range(30):
            run.read_line(r"^end n-\d+ ", timeout_s=60)
        leader = cluster.wait_leader()
        leader.kill()
        cluster.wait_leader(among=[nd for nd in cluster.nodes if nd is not leader])
        leader.start()
    rc = run.wait(180)
    out = run.p.stdout.read().decode()
    assert rc == 0, out[-3000:] + run.output()[-3000:]
    assert re.search(r"summary ended=150 committed=\d+ aborted=\d+ errors=0", out), out[-2000:]
    check_conserved(addrs, d)
    r = cluster.nodes[0].client()
    assert open_marks(r) == []
