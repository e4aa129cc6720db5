#!/usr/bin/env python3
"""mixed_pipeline.py - a pipeline of N SET/GET pairs (what a redis-py pipeline sends) against
the same pipeline of N SETs, on one connection, timed; prints one line per shape.

Usage: mixed_pipeline.py PORT N [DEADLINE_S]
A run that does not finish within DEADLINE_S (default 120) stops and reports the pairs it
got through, so that a slow server cannot make `make bench` run without bound.
"""
import socket
import sys
import threading
import time


def cmd(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def run(port, commands, deadline_s):
    """Sends every command on one connection while reading replies; returns (replies, s)."""
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(1.0)
    payload = b"".join(commands)
    want = len(commands)

    def send():
        try:
            s.sendall(payload)
        except OSError:
            pass

    t0 = time.monotonic()
    threading.Thread(target=send, daemon=True).start()
    got, buf = 0, b""
    while got < want and time.monotonic() - t0 < deadline_s:
        try:
            chunk = s.recv(1 << 20)
        except socket.timeout:
            continue
        if not chunk:
            break
        buf += chunk
        # every reply here is one line (+OK, $n..., :n) or a bulk: count complete replies
        pos = 0
        while True:
            end = buf.find(b"\r\n", pos)
            if end < 0:
                break
            if buf[pos : pos + 1] == b"$" and buf[pos + 1 : end] != b"-1":
                n = int(buf[pos + 1 : end])
                if len(buf) < end + 2 + n + 2:
                    break
                end = end + 2 + n
            if buf[pos : pos + 1] == b"-":
                sys.exit(f"error reply: {buf[pos:end]!r}")
            pos = end + 2
            got += 1
        buf = buf[pos:]
    elapsed = time.monotonic() - t0
    s.close()
    return got, elapsed


def main():
    port, n = int(sys.argv[1]), int(sys.argv[2])
    deadline_s = float(sys.argv[3]) if len(sys.argv) > 3 else 120.0
    sets = [cmd(b"SET", b"mp:%d" % i, b"v%d" % i) for i in range(n)]
    pairs = []
    for i in range(n):
        pairs.append(cmd(b"SET", b"mp:%d" % i, b"w%d" % i))
        pairs.append(cmd(b"GET", b"mp:%d" % i))
    got_s, t_s = run(port, sets, deadline_s)
    got_p, t_p = run(port, pairs, deadline_s)
    done_p = got_p // 2
    print(f"sets {got_s}/{n} in {t_s:.3f} s ({got_s / t_s:,.0f}/s)")
    print(f"pairs {done_p}/{n} in {t_p:.3f} s ({done_p / t_p:,.0f} pairs/s)")
    # time for n pairs (extrapolated when the deadline cut the run) over time for n sets
    est_p = t_p * n / max(done_p, 1)
    est_s = t_s * n / max(got_s, 1)
    print(f"ratio {est_p / est_s:.2f}x (pairs time / sets time; target <= 2x)")


if __name__ == "__main__":
    main()
