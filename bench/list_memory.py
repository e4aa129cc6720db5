"""bench/list_memory.py - memory of lists in keel (INFO memory's keel_state_bytes, process
RSS) and in redis-server (used_memory, RSS), loaded with pipelined RPUSHes.

usage: /usr/bin/python3 bench/list_memory.py keys|big [KEEL_BINARY]
  keys: 100,000 lists of 5 ten-byte elements; big: one list of 1,000,000 ten-byte elements.
Ports 7411-7414 on 127.0.0.1; data under /tmp/keel-list-memory.
"""
import redis, subprocess, time, os, sys, shutil
def rss(pid):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1]) * 1024
def load(r, mode):
    if mode == "keys":
        p = r.pipeline(transaction=False)
        for i in range(100000):
            p.rpush(f"list:{i:06d}", *[f"v{j:09d}" for j in range(5)])
            if i % 1000 == 999: p.execute()
        p.execute()
    else:
        p = r.pipeline(transaction=False)
        for i in range(1000):
            p.rpush("biglist", *[f"e{i:04d}{j:05d}" for j in range(1000)])
            if i % 50 == 49: p.execute()
        p.execute()
def run(name, pid, port, mode):
    r = redis.Redis(port=port, socket_timeout=120)
    r.flushall(); time.sleep(0.5)
    b = rss(pid); t0 = time.time(); load(r, mode); t = time.time() - t0
    time.sleep(0.5); a = rss(pid)
    info = r.info("memory")
    um = info.get("used_memory") if name == "redis" else info.get("keel_state_bytes")
    print(f"{name} {mode}: rss delta {(a-b)/1e6:.1f} MB  load {t:.1f}s" + (f" {'used_memory' if name == 'redis' else 'keel_state_bytes'} {um/1e6:.1f} MB"), flush=True)
mode = sys.argv[1]
shutil.rmtree("/tmp/keel-list-memory", ignore_errors=True)
os.makedirs("/tmp/keel-list-memory")
k = subprocess.Popen([(sys.argv[2] if len(sys.argv) > 2 else "build/keel"), "server", "--name", "m1", "--data-dir", "/tmp/keel-list-memory/data", "--listen-client", "127.0.0.1:7411", "--listen-http", "127.0.0.1:7412", "--initial-cluster", "m1=127.0.0.1:7413"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
rd = subprocess.Popen(["redis-server", "--port", "7414", "--save", "", "--appendonly", "yes", "--appendfsync", "always", "--dir", "/tmp/keel-list-memory"], stdout=subprocess.DEVNULL)
time.sleep(2.5)
try:
    run("keel", k.pid, 7411, mode)
    run("redis", rd.pid, 7414, mode)
finally:
    k.kill(); rd.kill()
