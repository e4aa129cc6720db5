#!/usr/bin/env python3
"""bench/proxy_hedge.py - what hedged requests do to keel proxy's tail latency (docs/proxy.md,
"Hedged requests").

Ten upstream hosts in one cluster (round_robin), one of them slow: it answers after SLOW_MS, the
others at once, so about 10% of first tries land on the slow host. An open-loop load (requests
sent at a fixed rate, each on a free keep-alive connection of a pool, latency measured from the
moment the request was due, so a stalled connection cannot hide queueing) runs GETs through the
proxy for the same time with the route as it is (retry attempts_max 2, no hedge) and with
`hedge: {delay_ms: D}`, alternating, BENCH_ROUNDS rounds each; prints p50, p90, p99, p99.9 and
max per round and the proxy's hedge counters.

    /usr/bin/python3 bench/proxy_hedge.py     # KEEL_BUILD=build BENCH_SECONDS=10 BENCH_RATE=300
                                              # BENCH_ROUNDS=2 SLOW_MS=200 HEDGE_DELAY_MS=20

The upstreams run in a child process (asyncio, one thread); the proxy runs `workers: 1`.
"""
import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

HOSTS = 10
BODY = b'{"ok":true}'


async def serve(slow_ms, ports_out):
    async def handler(reader, writer, delay_s):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head:
                    return
                if delay_s > 0:
                    await asyncio.sleep(delay_s)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    servers = []
    for i in range(HOSTS):
        delay = slow_ms / 1000.0 if i == 0 else 0.0
        srv = await asyncio.start_server(lambda r, w, d=delay: handler(r, w, d), "127.0.0.1", 0,
                                         backlog=1024)
        servers.append(srv)
    ports = [s.sockets[0].getsockname()[1] for s in servers]
    print("ports " + " ".join(map(str, ports)), flush=True)
    await asyncio.Event().wait()


async def load(port, rate, seconds, conns_max=64):
    """Open loop: request i is due at start + i / rate. Returns the latencies in ms."""
    pool = asyncio.Queue()
    opened = 0
    lat = []
    errors = 0

    async def one(due):
        nonlocal opened, errors
        now = time.monotonic()
        if due > now:
            await asyncio.sleep(due - now)
        if pool.empty() and opened < conns_max:
            opened += 1
            pool.put_nowait(await asyncio.open_connection("127.0.0.1", port))
        r, w = await pool.get()
        try:
            w.write(b"GET /item HTTP/1.1\r\nHost: bench\r\n\r\n")
            head = await r.readuntil(b"\r\n\r\n")
            n = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
            await r.readexactly(n)
            if not head.startswith(b"HTTP/1.1 200"):
                errors += 1
            lat.append((time.monotonic() - due) * 1000.0)
            pool.put_nowait((r, w))
        except (ConnectionError, asyncio.IncompleteReadError, AttributeError):
            errors += 1
            opened -= 1
            w.close()

    start = time.monotonic() + 0.2
    n = int(rate * seconds)
    await asyncio.gather(*(one(start + i / rate) for i in range(n)))
    while not pool.empty():
        _, w = pool.get_nowait()
        w.close()
    return lat, errors


def pct(sorted_lat, q):
    return sorted_lat[min(len(sorted_lat) - 1, int(q * len(sorted_lat)))]


def metric(admin, name):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
        text = r.read().decode()
    m = re.search(r"^" + name + r'\{cluster="app"\} (\S+)$', text, re.M)
    return int(float(m.group(1))) if m else 0


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        asyncio.run(serve(int(sys.argv[2]), None))
        return
    build = os.environ.get("KEEL_BUILD", os.environ.get("BUILD", "build"))
    seconds = float(os.environ.get("BENCH_SECONDS", "10"))
    rate = float(os.environ.get("BENCH_RATE", "300"))
    rounds = int(os.environ.get("BENCH_ROUNDS", "2"))
    slow_ms = int(os.environ.get("SLOW_MS", "200"))
    delay_ms = int(os.environ.get("HEDGE_DELAY_MS", "20"))
    keel = os.path.join(build, "keel")
    if not os.access(keel, os.X_OK):
        sys.exit(f"bench/proxy_hedge.py: {keel} not built")
    procs = []
    tmp = tempfile.mkdtemp()
    try:
        up = subprocess.Popen([sys.executable, __file__, "--serve", str(slow_ms)],
                              stdout=subprocess.PIPE, start_new_session=True)
        procs.append(up)
        ports = up.stdout.readline().decode().split()[1:]
        hosts = ", ".join(f"127.0.0.1:{p}" for p in ports)
        print(f"{HOSTS} hosts, one answering after {slow_ms} ms; {rate:.0f} GET/s for "
              f"{seconds:.0f} s per round; hedge delay {delay_ms} ms")
        print(f"{'round':>5} {'hedge':>5} {'reqs':>6} {'err':>4} {'p50':>7} {'p90':>7} "
              f"{'p99':>7} {'p99.9':>7} {'max':>7}  hedges won cancelled budget")
        for rnd in range(rounds):
            for hedged in (False, True):
                hedge = f"    hedge: {{delay_ms: {delay_ms}}}\n" if hedged else ""
                cfg = os.path.join(tmp, f"p{rnd}{int(hedged)}.yaml")
                with open(cfg, "w") as f:
                    f.write(f"""workers: 1
listeners: [{{name: main, address: 127.0.0.1:0}}]
admin: {{address: 127.0.0.1:0}}
clusters:
  - name: app
    hosts: [{hosts}]
routes:
  - name: app
    match: {{prefix: /}}
    cluster: app
    retry: {{attempts_max: 2}}
{hedge}""")
                p = subprocess.Popen([keel, "proxy", "--config", cfg], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
                procs.append(p)
                port = admin = None
                while port is None or admin is None:
                    line = p.stdout.readline().decode()
                    if not line:
                        sys.exit("bench/proxy_hedge.py: the proxy exited")
                    m = re.search(r"listening 0 on port (\d+)", line)
                    port = int(m.group(1)) if m else port
                    m = re.search(r"admin on port (\d+)", line)
                    admin = int(m.group(1)) if m else admin
                lat, errors = asyncio.run(load(port, rate, seconds))
                lat.sort()
                c = [metric(admin, f"keel_proxy_{k}_total")
                     for k in ("hedges", "hedge_won", "hedge_cancelled", "hedge_budget_exhausted")]
                print(f"{rnd + 1:>5} {'on' if hedged else 'off':>5} {len(lat):>6} {errors:>4} "
                      + " ".join(f"{pct(lat, q):>7.1f}" for q in (0.5, 0.9, 0.99, 0.999))
                      + f" {lat[-1]:>7.1f}  {c[0]:>6} {c[1]:>3} {c[2]:>9} {c[3]:>6}", flush=True)
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=10)
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


if __name__ == "__main__":
    main()
