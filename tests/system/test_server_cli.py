"""test_server_cli.py - `keel up/status/down` on real processes, `keel server` options and YAML."""

import json
import re
import os
import random
import signal
import socket
import subprocess
import time

import pytest
import redis

from conftest import accepts, binary, free_port, wait_port, wait_until


def port_free(p):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", p))
            return True
        except OSError:
            return False


def free_base_port(nodes):
    """A base P with P+i, P+100+i and P+200+i free for every node i (keel up's layout)."""
    rnd = random.Random()
    for _ in range(50):
        base = rnd.randrange(20000, 60000)
        if all(port_free(base + off + i) for off in (0, 100, 200) for i in range(nodes)):
            return base
    pytest.skip("no free port range for keel up")


def keel(*args, timeout_s=60):
    r = subprocess.run([binary("keel"), *args], capture_output=True, timeout=timeout_s)
    return r.returncode, r.stdout.decode(), r.stderr.decode()


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie of ours counts as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def up_dir(tmp_path):
    """A directory for `keel up`; every pid recorded in its cluster.json is killed at teardown."""
    d = tmp_path / "cluster"
    yield str(d)
    pids = []
    try:
        with open(d / "services.json") as f:
            pids += [p["pid"] for p in json.load(f)]
    except (OSError, ValueError, KeyError):
        pass
    try:
        with open(d / "cluster.json") as f:
            pids += [n["pid"] for n in json.load(f)["nodes"]]
    except (OSError, ValueError, KeyError):
        pass
    for pid in pids:
        if pid > 0 and pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def cluster_json(d):
    with open(os.path.join(d, "cluster.json")) as f:
        return json.load(f)


def wait_gone(pids, timeout_s=15):
    deadline = time.monotonic() + timeout_s
    while any(pid_alive(p) for p in pids):
        assert time.monotonic() < deadline, f"still running: {[p for p in pids if pid_alive(p)]}"
        time.sleep(0.05)


def test_up_status_down_and_up_again_keeps_the_data(up_dir):
    base = free_base_port(3)
    rc, out, err = keel("up", "--nodes", "3", "--dir", up_dir, "--base-port", str(base),
                        "--detach")  # fmt: skip
    assert rc == 0, out + err
    assert "cluster file:" in out
    cj = cluster_json(up_dir)
    pids = [n["pid"] for n in cj["nodes"]]
    assert len(pids) == 3 and all(pid_alive(p) for p in pids)
    rc, out, _ = keel("status", "--dir", up_dir)
    assert rc == 0, out
    table, _, members = out.partition("\n\n")
    rows = [line.split() for line in table.splitlines()[1:]]
    assert sorted(r[2] for r in rows) == ["follower", "follower", "leader"], out
    assert all(r[-1] == "ok" for r in rows), out
    assert members.startswith("members (as n") and members.count(" voter ") == 3, out
    c = redis.Redis(port=base + 1, socket_timeout=10)
    assert c.set("kept", "yes") is True
    # one node killed: status says so and `keel up` restarts just that one
    os.kill(pids[2], signal.SIGKILL)
    wait_gone([pids[2]])
    rc, out, _ = keel("status", "--dir", up_dir)
    assert rc == 1 and "unreachable" in out, out
    rc, out, err = keel("up", "--dir", up_dir, "--detach")
    assert rc == 0, out + err
    assert "2 node(s) were running; started 1" in out, out
    new_pids = [n["pid"] for n in cluster_json(up_dir)["nodes"]]
    assert new_pids[:2] == pids[:2] and new_pids[2] != pids[2]
    wait_port(base + 2)  # keel up waits for a leader, not for every node
    assert redis.Redis(port=base + 2, socket_timeout=10).get("kept") == b"yes"
    # down stops everything; up again restarts the same cluster from its data
    rc, out, _ = keel("down", "--dir", up_dir)
    assert rc == 0 and "stopped 3 node(s)" in out, out
    wait_gone(new_pids)
    rc, out, err = keel("up", "--dir", up_dir, "--detach")
    assert rc == 0 and "restarting the cluster" in out, out + err
    for i in range(3):
        wait_port(base + i)
        assert redis.Redis(port=base + i, socket_timeout=10).get("kept") == b"yes"
    rc, out, _ = keel("down", "--dir", up_dir)
    assert rc == 0
    wait_gone([n["pid"] for n in cluster_json(up_dir)["nodes"]])


def test_up_passes_flags_after_a_double_dash_to_every_server(up_dir):
    base = free_base_port(3)
    rc, out, err = keel("up", "--nodes", "3", "--dir", up_dir, "--base-port", str(base),
                        "--detach", "--", "--value-bytes-max", "100", "--lease-reads", "1")  # fmt: skip
    assert rc == 0, out + err
    for i in range(3):  # each node got the limit, so each refuses a 101-byte value itself
        c = redis.Redis(port=base + i, socket_timeout=10)
        assert c.set(f"k{i}", "x" * 100) is True
        with pytest.raises(redis.ResponseError):
            c.set(f"k{i}", "x" * 101)
        assert c.get(f"k{i}") == b"x" * 100  # a linearizable read with lease reads on
    rc, out, _ = keel("down", "--dir", up_dir)
    assert rc == 0, out
    wait_gone([n["pid"] for n in cluster_json(up_dir)["nodes"]])
    # a bad server flag stops the node, and keel up says so
    rc, out, err = keel("up", "--dir", up_dir, "--detach", "--", "--lease-reads", "2")
    assert rc != 0 and "exited early" in err, out + err


def start_server(args, log):
    with open(log, "wb") as f:
        return subprocess.Popen([binary("keel"), "server", *args], stdout=f, stderr=f,
                                stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip


def wait_listening(p, port, log, timeout_s=10):
    deadline = time.monotonic() + timeout_s
    while True:
        assert p.poll() is None, open(log).read()
        if accepts(port):
            return
        assert time.monotonic() < deadline, open(log).read()
        time.sleep(0.02)


def test_server_reads_a_yaml_config_and_flags_override_it(tmp_path):
    file_port, flag_port, http_port, peer_port = free_port(), free_port(), free_port(), free_port()
    cfg = tmp_path / "n1.yaml"
    cfg.write_text(
        "# keel server config\n"
        "name: n1\n"
        f"data-dir: {tmp_path / 'data'}\n"
        f"listen-client: 127.0.0.1:{file_port}\n"
        f"listen-http: 127.0.0.1:{http_port}\n"
        f"initial-cluster: n1=127.0.0.1:{peer_port}\n"
        "value-bytes-max: 1k\n"
        "wal-segment-bytes: 32m\n"
    )
    log = str(tmp_path / "n1.log")
    p = start_server(["--config", str(cfg), "--listen-client", f"127.0.0.1:{flag_port}"], log)
    try:
        wait_listening(p, flag_port, log)
        assert port_free(file_port), "the file's listen-client was used although a flag overrode it"
        c = redis.Redis(port=flag_port, socket_timeout=10)
        deadline = time.monotonic() + 10
        while c.info("raft")["raft_role"] != "leader":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert c.set("a", "x" * 1024) is True
        with pytest.raises(redis.ResponseError, match="exceeds maximum allowed size"):
            c.set("a", "x" * 1025)
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=10) == 0, open(log).read()
        assert os.path.isdir(tmp_path / "data" / "wal")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)


@pytest.mark.parametrize(
    "args,code,message",
    [
        (["--bogus", "1"], 2, "unknown option '--bogus'"),
        (["--value-bytes-max", "lots"], 2, "--value-bytes-max 'lots': expected a size in"),
        (["--name"], 2, "--name needs a value (NAME)"),
        (["--name", "n1", "--initial-cluster", "n2=127.0.0.1:1"], 2, "does not name this node"),
        (["--name", "n1", "--initial-cluster", "n1=127.0.0.1:1,n1=127.0.0.1:2"], 2, "named twice"),
        (["--name", "n1", "--initial-cluster", "n1"], 2, "bad member"),
        (["--config", "/nonexistent/keel.yaml"], 2, "cannot open /nonexistent/keel.yaml"),
    ],
)
def test_bad_options_exit_non_zero_with_a_message(tmp_path, args, code, message):
    r = subprocess.run([binary("keel"), "server", "--data-dir", str(tmp_path / "d"), *args],
                       capture_output=True, timeout=10)  # fmt: skip
    assert r.returncode == code, r.stderr
    assert message in r.stderr.decode(), r.stderr


def test_a_bad_yaml_config_names_the_problem(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("name: n1\nnested:\n  a: 1\n")
    r = subprocess.run([binary("keel"), "server", "--config", str(cfg)], capture_output=True,
                       timeout=10)  # fmt: skip
    assert r.returncode != 0
    assert str(cfg) in r.stderr.decode()
    cfg.write_text("name: n1\nno-such-option: 3\n")
    r = subprocess.run([binary("keel"), "server", "--config", str(cfg)], capture_output=True,
                       timeout=10)  # fmt: skip
    assert r.returncode == 2 and "bad.yaml:2: unknown key 'no-such-option'" in r.stderr.decode()


def test_down_never_signals_a_recycled_pid_running_another_node(up_dir, tmp_path):
    """cluster.json pids outlive their processes; a pid reused by another cluster's keel server
    must not be stopped by `keel down` nor taken for a running node by `keel up`."""
    base = free_base_port(1)
    rc, out, err = keel("up", "--nodes", "1", "--dir", up_dir, "--base-port", str(base),
                        "--detach")  # fmt: skip
    assert rc == 0, out + err
    rc, out, _ = keel("down", "--dir", up_dir)
    assert rc == 0
    wait_gone([cluster_json(up_dir)["nodes"][0]["pid"]])
    # a stranger: another keel server with its own data directory
    port, peer, http = free_port(), free_port(), free_port()
    log = str(tmp_path / "stranger.log")
    stranger = start_server(["--name", "s1", "--data-dir", str(tmp_path / "stranger"),
                             "--listen-client", f"127.0.0.1:{port}",
                             "--listen-http", f"127.0.0.1:{http}",
                             "--initial-cluster", f"s1=127.0.0.1:{peer}",
                             "--wal-segment-bytes", "32m"], log)  # fmt: skip
    try:
        wait_listening(stranger, port, log)
        cj = cluster_json(up_dir)
        cj["nodes"][0]["pid"] = stranger.pid  # as if the pid had been recycled
        with open(os.path.join(up_dir, "cluster.json"), "w") as f:
            json.dump(cj, f)
        rc, out, _ = keel("down", "--dir", up_dir)
        assert rc == 0 and "stopped 0 node(s)" in out, out
        time.sleep(0.3)
        assert stranger.poll() is None, "keel down stopped another cluster's node"
        rc, out, err = keel("up", "--dir", up_dir, "--detach")
        assert rc == 0 and "were running" not in out, out + err
        assert cluster_json(up_dir)["nodes"][0]["pid"] != stranger.pid
        wait_port(base)
        assert redis.Redis(port=base, socket_timeout=10).ping()
        rc, out, _ = keel("down", "--dir", up_dir)
        assert rc == 0 and "stopped 1 node(s)" in out, out
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait(timeout=10)


def test_up_on_ports_another_cluster_holds_fails_and_names_the_ports(up_dir, tmp_path):
    """The other cluster answers on these ports: keel up must not take it for its own."""
    base = free_base_port(1)
    other = str(tmp_path / "other")
    try:
        rc, out, err = keel("up", "--nodes", "1", "--dir", other, "--base-port", str(base),
                            "--detach")  # fmt: skip
        assert rc == 0, out + err
        other_pid = cluster_json(other)["nodes"][0]["pid"]
        started = time.monotonic()
        rc, out, err = keel("up", "--nodes", "1", "--dir", up_dir, "--base-port", str(base),
                            "--detach")  # fmt: skip
        assert rc == 1, out + err
        assert time.monotonic() - started < 20
        assert f"127.0.0.1:{base} (node n1's --listen-client) is already in use" in err, err
        assert f"127.0.0.1:{base + 200} (node n1's --listen-http) is already in use" in err, err
        assert "PID" not in out, out  # no table of nodes that are not its own
        assert pid_alive(other_pid)
        if os.path.exists(os.path.join(up_dir, "cluster.json")):
            assert all(n["pid"] == 0 for n in cluster_json(up_dir)["nodes"])
    finally:
        keel("down", "--dir", other)


def test_up_stops_what_it_started_when_a_node_cannot_listen(up_dir):
    base = free_base_port(3)  # nodes at base and base + 1
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", base + 100))  # n1's peer port
        held.listen()
        rc, out, err = keel("up", "--nodes", "2", "--dir", up_dir, "--base-port", str(base),
                            "--detach")  # fmt: skip
        assert rc == 1, out + err
        assert f"127.0.0.1:{base + 100} (node n1's --listen-peer) is already in use" in err, err
        assert "nothing started" in err, err
        assert all(port_free(base + off + i) for off in (0, 200) for i in range(2))
        # a port the layout does not know about, given to every server after --: both
        # servers cannot listen; keel up says why and stops the one still running
        port = held.getsockname()[1]
        rc, out, err = keel("up", "--nodes", "2", "--dir", up_dir, "--base-port", str(base + 1),
                            "--detach", "--", "--listen-http", f"127.0.0.1:{port}")  # fmt: skip
        assert rc == 1, out + err
        assert "exited early" in err and f"listen on 127.0.0.1:{port}" in err, err
        assert "address already in use" in err, err
        assert all(n["pid"] == 0 for n in cluster_json(up_dir)["nodes"]), cluster_json(up_dir)
        assert wait_until(lambda: all(port_free(base + 1 + i) for i in range(2)), timeout_s=10)


def write_manifest(tmp_path, base, services):
    m = tmp_path / "shop.yaml"
    m.write_text(f"cluster:\n  nodes: 3\n  base_port: {base}\nservices:\n{services}")
    return str(m)


def test_up_with_a_manifest_starts_services_in_order_and_down_stops_them(up_dir, tmp_path):
    """keel up --manifest: the cluster, then each service's instances, each waited for until
    /health/ready answers; they register in the cluster; keel status lists them; keel down
    stops them, then the nodes."""
    base = free_base_port(3)
    port = free_port()
    while not port_free(port + 1):
        port = free_port()
    man = write_manifest(tmp_path, base, f"""
  - name: notes
    run: [keel-example-notes, --listen, "127.0.0.1:{{port}}", --registry, "{{keel}}",
          --id, "notes-{{i}}", --ttl, "3000"]
    instances: 2
    port: {port}
""")
    rc, out, err = keel("up", "--manifest", man, "--dir", up_dir, "--detach")
    assert rc == 0, out + err
    assert re.search(rf"notes\s+0\s+127.0.0.1:{port}\s+pid \d+ ready", out), out
    assert re.search(rf"notes\s+1\s+127.0.0.1:{port + 1}\s+pid \d+ ready", out), out
    import urllib.request
    body = urllib.request.urlopen(f"http://127.0.0.1:{port + 1}/notes", timeout=5).read()
    assert json.loads(body) == {"count": 0}
    with open(os.path.join(up_dir, "services.json")) as f:
        pids = [p["pid"] for p in json.load(f)]
    assert len(pids) == 2 and all(pid_alive(p) for p in pids)
    deadline = time.monotonic() + 10
    while True:  # both registered in the cluster's registry
        reg = urllib.request.urlopen(
            f"http://127.0.0.1:{base + 200}/v1/health/service/notes?passing", timeout=5).read()
        if sorted(e["Service"]["ID"] for e in json.loads(reg)) == ["notes-0", "notes-1"]:
            break
        assert time.monotonic() < deadline, reg
        time.sleep(0.1)
    rc, out, _ = keel("status", "--dir", up_dir)
    assert rc == 0 and re.search(r"notes\s+1\s+127.0.0.1:\d+\s+\d+\s+running", out), out
    node_pids = [n["pid"] for n in cluster_json(up_dir)["nodes"]]
    rc, out, err = keel("down", "--dir", up_dir)
    assert rc == 0 and "stopped 2 service process(es)" in out and "stopped 3 node(s)" in out, out
    wait_gone(pids + node_pids)


def test_a_bad_manifest_or_a_service_that_dies_starts_nothing_or_stops_everything(up_dir,
                                                                                   tmp_path):
    base = free_base_port(3)
    man = write_manifest(tmp_path, base, """
  - name: a
    run: [keel-example-notes]
    colour: blue
""")
    rc, out, err = keel("up", "--manifest", man, "--dir", up_dir, "--detach")
    assert rc == 2 and re.search(r"shop.yaml:8: unknown key 'colour'", err), err
    man = write_manifest(tmp_path, base, """
  - name: a
    run: [keel-example-notes, --listen, "127.0.0.1:{nope}"]
""")
    rc, out, err = keel("up", "--manifest", man, "--dir", up_dir, "--detach")
    assert rc == 2 and "unknown placeholder" in err, err
    assert not os.path.exists(os.path.join(up_dir, "cluster.json"))  # nothing started
    # a service that exits at once: keel up says why and stops what it started
    man = write_manifest(tmp_path, base, """
  - name: broken
    run: [keel-example-notes, --ttl, "5"]
""")
    rc, out, err = keel("up", "--manifest", man, "--dir", up_dir, "--detach")
    assert rc == 1, out + err
    assert "broken-0" in err and "exited (status 2)" in err and "expected an integer" in err, err
    assert "stopped what it started" in err
    wait_gone([n["pid"] for n in cluster_json(up_dir)["nodes"]])
