"""test_kit_cache.py - the service kit's two-level cache (src/kit/cache.c) against a real
keel cluster: keel-cachecheck runs several cache instances in one process over a source of
truth that changes under them, and checks one loader per key, read-your-writes and bounded
staleness for every get (tools/cachecheck/main.c says how)."""
import re
import time

from conftest import binary
from keelcluster import make_cluster  # noqa: F401 (fixture)


def run_check(procs, cl, *extra):
    seeds = ",".join(f"127.0.0.1:{nd.client_port}" for nd in cl.nodes)
    p = procs.start([binary("keel-cachecheck"), "--seeds", seeds, *extra])
    p.may_exit = True
    return p


def finish(p, timeout_s=60):
    rc = p.wait(timeout_s)
    out = p.p.stdout.read().decode()
    return rc, out + p.output()


def test_cache_levels_single_loader_and_invalidation(make_cluster, procs):
    cl = make_cluster(3)
    p = run_check(procs, cl, "--instances", "4", "--keys", "50", "--duration-ms", "3000",
                  "--gets-per-s", "4000", "--writes-per-s", "100", "--load-ms", "3")
    rc, out = finish(p)
    assert rc == 0, out
    assert "violations 0 " in out, out
    assert re.search(r"a cold key on instance 0: 1 load\(s\), 200 answered", out), out
    assert re.search(r"again on instance 1: 0 load\(s\), 200 answered, 200 from L1", out), out
    m = re.search(r"sent (\d+), received (\d+) \(want (\d+)\), feed resets 0", out)
    assert m and int(m.group(1)) > 200 and m.group(2) == m.group(3), out
    l1 = float(re.search(r"levels: l1 ([\d.]+)%", out).group(1))
    assert l1 > 50.0, out  # most gets are answered in-process


def test_cache_survives_a_killed_node(make_cluster, procs):
    """A keel node is SIGKILLed under the load: feeds on it reset (L1 cleared and bypassed
    until resubscribed), gets fall back to the source while L2 is out of reach, and no get
    answers a value older than a change that was done."""
    cl = make_cluster(3)
    p = run_check(procs, cl, "--instances", "6", "--keys", "30", "--duration-ms", "5000",
                  "--gets-per-s", "3000", "--writes-per-s", "100", "--seed", "7")
    time.sleep(2.0)
    victim = cl.nodes[1]
    victim.kill()
    rc, out = finish(p)
    assert rc == 0, out
    assert "violations 0 " in out, out
    resets = int(re.search(r"feed resets (\d+)", out).group(1))
    assert resets >= 1, out  # 6 instances, feeds spread over 3 nodes: some were on the victim
