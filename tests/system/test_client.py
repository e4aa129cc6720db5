"""test_client.py - src/client against real keel servers: pipelining, the seed list, deadlines,
SUBSCRIBE feeds (through build/keel-resp), and the CLI commands built on it (bench kv's
connection failures, --help)."""

import subprocess
import time

import pytest
from conftest import binary, free_port
from keelcluster import make_cluster  # noqa: F401 (fixture)


def resp(*args, timeout=30):
    return subprocess.run([binary("keel-resp"), *args], capture_output=True, text=True,
                          timeout=timeout)


def test_pipelined_commands_come_back_in_order_past_a_dead_seed(make_cluster):
    """The first seed refuses connections: the client moves to the next one (a follower,
    which forwards writes), sends every command at once and prints the replies in order."""
    cl = make_cluster(3)
    leader = cl.wait_leader()
    follower = cl.followers(leader)[0]
    dead = f"127.0.0.1:{free_port()}"
    words = ["SET", "a", "1", ",", "GET", "a", ",", "INCR", "n", ",", "INCR", "n", ",",
             "GET", "missing", ",", "NOSUCHCOMMAND"]
    r = resp("--addr", dead, "--addr", f"127.0.0.1:{follower.client_port}", *words)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[:5] == ["OK", '"1"', "(integer) 1", "(integer) 2", "(nil)"], r.stdout
    assert lines[5].startswith("(error) ERR"), r.stdout
    assert f"127.0.0.1:{follower.client_port}, 1 failed connection attempts" in r.stderr


def test_a_request_with_no_reachable_node_fails_at_its_deadline():
    dead = f"127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    r = resp("--addr", dead, "--timeout-ms", "400", "PING")
    took = time.monotonic() - t0
    assert r.returncode == 1
    assert r.stdout.splitlines() == ["(failed) KEEL_ETIMEDOUT"]
    assert 0.35 < took < 5, took


def test_a_subscribe_feed_delivers_published_messages(make_cluster):
    cl = make_cluster(1)
    node = cl.wait_leader()
    proc = subprocess.Popen([binary("keel-resp"), "--addr", f"127.0.0.1:{node.client_port}",
                             "--subscribe", "news", "--count", "3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        c = node.client()
        deadline = time.monotonic() + 10
        while c.publish("news", "first") == 0 and time.monotonic() < deadline:
            time.sleep(0.05)  # until the feed has subscribed
        c.publish("news", "second")
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert out.splitlines() == ['["subscribe", "news", (integer) 1]',
                                '["message", "news", "first"]',
                                '["message", "news", "second"]'], out


def test_bench_kv_against_a_dead_address_counts_failures_and_exits_nonzero(tmp_path):
    dead = f"127.0.0.1:{free_port()}"
    hist = tmp_path / "h.jsonl"
    r = subprocess.run([binary("keel"), "bench", "kv", "--addr", dead, "--duration", "1",
                        "--connections", "2", "--quiet", "--history", str(hist)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "no operation completed" in r.stderr
    line = [ln for ln in r.stdout.splitlines() if "failed attempts" in ln]
    assert line and int(line[0].split("failed attempts")[1].split()[0]) >= 2, r.stdout


@pytest.mark.parametrize("cmd", [["member"], ["status"], ["watch"], ["bench"], ["bench", "kv"]])
def test_help_exits_zero(cmd):
    r = subprocess.run([binary("keel"), *cmd, "--help"], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 0, r.stderr
    assert "usage" in (r.stdout + r.stderr)
