"""test_bench_streams.py - keel-streambench (tools/streambench), the end-to-end streams bench of
bench/streams.sh, against a real 3-node cluster: every acknowledged XADD reaches the group of
four consumers and is acknowledged, in a closed loop and at a fixed rate, and the group ends
with nothing pending; its report carries the figures bench/streams.sh reads."""

import json
import subprocess

from conftest import binary
from keelcluster import make_cluster  # noqa: F401 (fixture)


def run(cl, tmp_path, *extra):
    out = tmp_path / "e2e.json"
    addrs = ",".join(f"127.0.0.1:{nd.client_port}" for nd in cl.nodes)
    p = subprocess.run([binary("keel-streambench"), "--addr", addrs, "--duration", "2",
                        "--json", str(out), *extra], capture_output=True, timeout=120)  # fmt: skip
    text = p.stdout.decode() + p.stderr.decode()
    assert p.returncode == 0, text
    return json.loads(out.read_text()), text


def test_every_acknowledged_xadd_reaches_the_group_and_is_acknowledged(make_cluster, tmp_path):
    cl = make_cluster(3)
    leader = cl.wait_leader()
    for extra in ((), ("--rate", "500", "--stream", "bench:rate")):
        fig, text = run(cl, tmp_path, *extra)
        assert fig["added"] > 0 and fig["delivered"] == fig["added"], text
        assert fig["acked"] == fig["added"], text
        assert fig["e2e_p99_ms"] > 0 and fig["e2e_msgs_per_s"] > 0, text
        key = "bench:rate" if extra else "bench:e2e"
        c = leader.client()
        assert c.xlen(key) == fig["added"]
        assert c.xpending(key, "g")["pending"] == 0
    assert 400 <= fig["xadd_per_s"] <= 600, text  # the open loop kept its rate
