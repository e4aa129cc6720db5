"""test_bench_memory.py - bench/memory.sh, the memory per key of each type against Redis, run
small (2,000 keys of each type): it loads every type into a fresh keel node and a fresh
redis-server, prints a row of figures for each, takes no snapshot during the load, takes one
after it (the after-snapshot column), and exits 0."""

import os
import re
import shutil
import subprocess

import pytest

from conftest import binary, free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TYPES = ["string", "hash", "list", "setstr", "setint", "zset"]


def test_the_memory_bench_prints_a_row_for_every_type():
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.skip("redis-server not installed")
    env = dict(os.environ, KEEL=binary("keel"), MEM_KEYS="2000",
               MEM_KEEL_PORT=str(free_port()), MEM_REDIS_PORT=str(free_port()))  # fmt: skip
    p = subprocess.run(["bash", os.path.join(ROOT, "bench", "memory.sh")], env=env,
                       capture_output=True, timeout=300)  # fmt: skip
    text = p.stdout.decode() + p.stderr.decode()
    assert p.returncode == 0, text
    for t in TYPES:
        m = re.search(rf"^  {t} +([0-9.]+) +([0-9.]+) +([0-9.]+)x +\S+ +\S+ +\S+ +(\S+) +(\S+) +\S+$",
                      text, re.M)  # fmt: skip
        assert m, f"no row for {t}:\n{text}"
        keel, redis_b = float(m.group(1)), float(m.group(2))
        assert keel > 0 and redis_b > 0, text
        assert m.group(4) == "0", f"a snapshot was taken during the {t} load:\n{text}"
        # then one is taken on purpose, and its figure printed
        assert re.fullmatch(r"[0-9.]+", m.group(5)), f"no snapshot after the {t} load:\n{text}"
