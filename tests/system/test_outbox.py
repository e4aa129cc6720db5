"""test_outbox.py - the transactional outbox's relay (src/tx/outbox.c) through keel-outbox,
killed again and again while a writer commits business rows with their outbox rows: between
publish and mark, between mark and the next batch, and at random moments from outside. In
the end the stream holds every outbox row exactly once, in order."""

import random
import signal
import sqlite3
import time

from conftest import binary
from keelcluster import make_cluster  # noqa: F401 (fixture)

SEED = int(time.time())


def run_relay_once(procs, exe, args, rng):
    """Starts one relay, lets it die by its own crash hooks or kills it after a random
    while; returns its stdout."""
    r = procs.start([exe, "relay", *args])
    r.may_exit = True
    r.read_line(r"relay running", timeout_s=10)
    deadline = time.monotonic() + rng.uniform(0.02, 0.5)
    while r.alive() and time.monotonic() < deadline:
        time.sleep(0.005)
    if r.alive():
        r.p.send_signal(signal.SIGKILL)
    r.p.wait(timeout=10)
    out = r.p.stdout.read().decode()
    r.kill()
    return out


def stream_entries(node, key):
    c = node.client()
    out, start = [], "-"
    while True:
        got = c.xrange(key, min=start, max="+", count=1000)
        if start != "-":
            got = got[1:]
        if not got:
            return out
        out += got
        start = got[-1][0]


def test_a_relay_killed_again_and_again_publishes_every_row_once_in_order(
        make_cluster, procs, tmp_path):
    rng = random.Random(SEED)
    node = make_cluster(1).nodes[0]
    exe = binary("keel-outbox")
    db = str(tmp_path / "orders.db")
    rows = 3000
    writer = procs.start([exe, "write", "--db", db, "--stream", "orders.events", "--count",
                          str(rows), "--rate", "600"])
    writer.may_exit = True
    seen = {"publish": 0, "mark": 0, "outside": 0, "duplicates": 0}
    runs = 0
    while writer.alive() or runs < 8:
        runs += 1
        args = ["--db", db, "--servers", f"127.0.0.1:{node.client_port}", "--producer",
                "orders-1", "--batch", str(rng.choice([1, 7, 50, 200])), "--seed", str(SEED + runs),
                "--crash-after-publish", "12", "--crash-after-mark", "8"]
        out = run_relay_once(procs, exe, args, rng)
        crashed = False
        for line in out.splitlines():
            if line.startswith("crash after publish"):
                seen["publish"] += 1
                crashed = True
            elif line.startswith("crash after mark"):
                seen["mark"] += 1
                crashed = True
            elif line.startswith("duplicates "):
                seen["duplicates"] += int(line.split()[1])
        if not crashed:
            seen["outside"] += 1
    assert writer.wait(30) == 0, writer.output()
    # a last relay, left alone, drains what is left
    last = procs.start([exe, "relay", "--db", db, "--servers", f"127.0.0.1:{node.client_port}",
                        "--producer", "orders-1", "--until-idle"])
    last.may_exit = True
    assert last.wait(60) == 0, last.output()

    entries = stream_entries(node, "orders.events")
    got = [(f[b"id"].decode(), f[b"data"].decode()) for _, f in entries]
    want = [(f"orders-1/{n}", f"order {n}") for n in range(1, rows + 1)]
    assert len(got) == rows, f"seed {SEED}: {len(got)} entries for {rows} rows, {seen}"
    assert got == want, f"seed {SEED}: not every row once in order, {seen}"
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT COUNT(*) FROM orders").fetchone()[0] == rows
        assert c.execute("SELECT COUNT(*) FROM keel_outbox WHERE sent_unix_ms IS NULL"
                         " OR error IS NOT NULL").fetchone()[0] == 0
    # the kill points were all reached, and re-sent rows were recognised, not appended
    assert seen["publish"] > 0 and seen["mark"] > 0 and seen["outside"] > 0, (SEED, seen)
    assert seen["duplicates"] > 0, (SEED, seen)
    print(f"seed {SEED}: {runs} relay runs, {seen}")
