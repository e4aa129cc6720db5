#!/usr/bin/env python3
"""mixed_pipeline.py - a pipeline of N SET/GET pairs (what a redis-py pipeline sends) against
the same pipeline of N SETs, on one connection, timed (the median of ROUNDS alternating runs
of each); prints one line per shape.

Usage: mixed_pipeline.py PORT N [DEADLINE_S]

The client does as little as it can, so that the figure is the server's: the whole pipeline
is encoded before the clock starts, and the replies are not parsed as they come but counted
in bytes against the exact replies expected (every GET's value is known), then compared
once at the end. A run that does not finish within DEADLINE_S (default 120) stops and
reports how far it got, so that a slow server cannot make `make bench` run without bound.
"""
import socket
import sys
import threading
import time

ROUNDS = 5  # runs of each shape; the median is reported


def cmd(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def bulk(v):
    return b"$%d\r\n%s\r\n" % (len(v), v)


def run(port, commands, expect, deadline_s):
    """Sends every command on one connection while reading replies; returns (fraction, s)."""
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(1.0)
    payload = b"".join(commands)

    def send():
        try:
            s.sendall(payload)
        except OSError:
            pass

    got = bytearray()
    t0 = time.monotonic()
    threading.Thread(target=send, daemon=True).start()
    while len(got) < len(expect) and time.monotonic() - t0 < deadline_s:
        try:
            chunk = s.recv(1 << 20)
        except socket.timeout:
            continue
        if not chunk:
            break
        got += chunk
    elapsed = time.monotonic() - t0
    s.close()
    if len(got) >= len(expect) and bytes(got) != expect:
        at = next(i for i in range(len(expect)) if got[i] != expect[i])
        sys.exit(f"wrong replies at byte {at}: {bytes(got[max(0, at - 40):at + 40])!r}")
    return min(len(got), len(expect)) / len(expect), elapsed


def main():
    port, n = int(sys.argv[1]), int(sys.argv[2])
    deadline_s = float(sys.argv[3]) if len(sys.argv) > 3 else 120.0
    sets = [cmd(b"SET", b"mp:%d" % i, b"v%d" % i) for i in range(n)]
    sets_expect = b"+OK\r\n" * n
    pairs, pairs_expect = [], []
    for i in range(n):
        pairs.append(cmd(b"SET", b"mp:%d" % i, b"w%d" % i))
        pairs.append(cmd(b"GET", b"mp:%d" % i))
        pairs_expect.append(b"+OK\r\n" + bulk(b"w%d" % i))
    pairs_expect = b"".join(pairs_expect)
    # ROUNDS runs of each shape, alternating, and the median of each: one run of a fast
    # pipeline is a fraction of a second, and a busy machine's scheduling shows in it
    runs_s, runs_p = [], []
    for _ in range(ROUNDS):
        runs_s.append(run(port, sets, sets_expect, deadline_s))
        runs_p.append(run(port, pairs, pairs_expect, deadline_s))
    f_s, t_s = sorted(runs_s, key=lambda r: r[1] / max(r[0], 1e-9))[ROUNDS // 2]
    f_p, t_p = sorted(runs_p, key=lambda r: r[1] / max(r[0], 1e-9))[ROUNDS // 2]
    print(f"sets {f_s * n:.0f}/{n} in {t_s:.3f} s ({f_s * n / t_s:,.0f}/s)")
    print(f"pairs {f_p * n:.0f}/{n} in {t_p:.3f} s ({f_p * n / t_p:,.0f} pairs/s)")
    # time for n pairs (extrapolated when the deadline cut the run) over time for n sets
    est_p = t_p / max(f_p, 1e-9)
    est_s = t_s / max(f_s, 1e-9)
    print(f"ratio {est_p / est_s:.2f}x (pairs time / sets time; target <= 2x)")


if __name__ == "__main__":
    main()
