#!/usr/bin/python3
"""large_value_cpu.py - the CPU time (user + sys, from /proc) each node of an N-node keel server
cluster spends per SET of a 63 MiB value: the work itself, less sensitive than wall time to the
load of a shared machine (bench/RESULTS.md, "Large values on 3 nodes").

Usage: /usr/bin/python3 bench/large_value_cpu.py BUILD_DIR NODES (3 SETs, 2 s apart; starts its
own cluster with --value-bytes-max 63m --wal-segment-bytes 66m in /tmp; every wait is bounded).
"""
import os, shutil, sys, tempfile, time, redis
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "system"))
from keelcluster import Cluster
n = int(sys.argv[2]); d = tempfile.mkdtemp(prefix="keel-bigval-cpu-")
cl = Cluster(os.path.abspath(sys.argv[1]) + "/keel", d, n, ["--value-bytes-max", "63m", "--wal-segment-bytes", "66m"])
cl.start()
try:
    L = cl.wait_leader(timeout_s=60)
    tck = os.sysconf("SC_CLK_TCK")
    def cpu(nd):
        f = open(f"/proc/{nd.proc.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / tck
    c = redis.Redis(port=L.client_port, socket_timeout=60)
    time.sleep(1)
    c0 = {nd.name: cpu(nd) for nd in cl.nodes}
    res = []
    for k in range(3):
        v = bytes([65 + k]) * (63 * 2**20 - 1024)
        try: c.set(f"big{k}", v); res.append("OK")
        except Exception as e: res.append(str(e)[:20])
        del v; time.sleep(2)
    c1 = {nd.name: cpu(nd) for nd in cl.nodes}
    print(sys.argv[1], n, "nodes:", res, "CPU s per SET:", {k + ("(L)" if k == L.name else ""): round((c1[k] - c0[k]) / 3, 2) for k in c0}, "terms", [nd.status()["term"] for nd in cl.nodes])
finally:
    cl.teardown()
    shutil.rmtree(d, ignore_errors=True)
