"""test_regions.py - regions on one machine: keel-netdelay (network namespaces joined by a TUN
router that holds each packet between regions for a delay) and `keel up --regions`, which
places node i and instance i of every service in region i % R (docs/shop.md, "Regions").

Needs root, /dev/net/tun and `ip netns`; skipped where they are missing."""

import ipaddress
import json
import os
import random
import re
import signal
import socket
import subprocess
import time
import urllib.request

import pytest
import redis

from conftest import binary, wait_until


def unavailable_reason():
    if os.geteuid() != 0:
        return "needs root"
    if not os.path.exists("/dev/net/tun"):
        return "no /dev/net/tun"
    probe = f"keel-probe-{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True)
    if r.returncode != 0:
        return f"ip netns add fails: {r.stderr.decode().strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


REASON = unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=str(REASON))


def free_subnet():
    """Three octets A.B.C whose /24 no route here overlaps."""
    used = []
    for line in subprocess.run(["ip", "route"], capture_output=True).stdout.decode().splitlines():
        try:
            used.append(ipaddress.ip_network(line.split()[0]))
        except ValueError:
            pass
    rnd = random.Random()
    for _ in range(100):
        c = rnd.randrange(1, 250)
        net = ipaddress.ip_network(f"10.214.{c}.0/24")
        if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
            return f"10.214.{c}"
    pytest.skip("no free 10.214.X.0/24")


class Regions:
    """n namespaces joined by keel-netdelay, with the operator's link in this namespace."""

    def __init__(self, n, delay_ms):
        self.tag = f"{os.getpid() % 100000}{random.randrange(100)}"
        self.ns = [f"kreg{self.tag}-{k + 1}" for k in range(n)]
        self.subnet = free_subnet()
        self.made = []
        self.relay = None
        try:
            for ns in self.ns:
                subprocess.run(["ip", "netns", "add", ns], check=True)
                self.made.append(ns)
            self.relay = subprocess.Popen(
                [binary("keel-netdelay"), "--netns", ",".join(self.ns), "--subnet", self.subnet,
                 "--delay-ms", str(delay_ms), "--operator", f"kop{self.tag}"[:15]],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            line = self.relay.stdout.readline().decode()
            assert line.startswith("ready"), line
        except BaseException:
            self.close()
            raise

    def host(self, k):
        return f"{self.subnet}.{k + 1}"

    def spec(self):
        return ",".join(f"{ns}={self.host(k)}" for k, ns in enumerate(self.ns))

    def stop_relay(self):
        """SIGTERM: the relay prints its counters and exits; its devices go with it."""
        if self.relay is None:
            return ""
        self.relay.send_signal(signal.SIGTERM)
        out = self.relay.communicate(timeout=10)[0].decode()
        self.relay = None
        return out

    def close(self):
        if self.relay is not None:
            self.relay.kill()
            self.relay.wait()
            self.relay = None
        for ns in self.made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.made = []


ECHO = r"""
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(16)
print("listening", flush=True)
while True:
    c, _ = s.accept()
    c.sendall(c.recv(64))
    c.close()
"""

ROUND_TRIP = r"""
import socket, sys, time
best = None
for _ in range(5):
    t = time.perf_counter()
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
    c.sendall(b"x")
    assert c.recv(1) == b"x"
    c.close()
    ms = (time.perf_counter() - t) * 1000  # connect (one round trip) + echo (another)
    best = ms if best is None else min(best, ms)
print(f"{best:.1f}")
"""


def in_ns(ns, *argv, **kw):
    return ["ip", "netns", "exec", ns, *argv] if ns else list(argv)


def two_round_trips_ms(ns, host, port):
    r = subprocess.run(in_ns(ns, "/usr/bin/python3", "-c", ROUND_TRIP, host, str(port)),
                       capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr.decode()
    return float(r.stdout.decode())


def test_packets_between_regions_are_held_and_the_operators_link_is_not():
    regions = Regions(2, delay_ms=30)
    echo = None
    try:
        echo = subprocess.Popen(
            in_ns(regions.ns[1], "/usr/bin/python3", "-c", ECHO, regions.host(1), "9555"),
            stdout=subprocess.PIPE)
        assert echo.stdout.readline().startswith(b"listening")
        # region 1 -> region 2: 30 ms each way, two round trips (connect, echo) >= 120 ms
        across = two_round_trips_ms(regions.ns[0], regions.host(1), 9555)
        assert 118 <= across < 400, across
        # the operator's link holds nothing
        direct = two_round_trips_ms(None, regions.host(1), 9555)
        assert direct < 40, direct
        # inside a region, its own address never reaches the relay
        local = two_round_trips_ms(regions.ns[1], regions.host(1), 9555)
        assert local < 40, local
        stats = regions.stop_relay()
        links = {(m.group(1), m.group(2)): int(m.group(3)) for m in re.finditer(
            r"^(\S+)\s+->\s+(\S+)\s+(\d+)\s+(\d+)$", stats, re.M)}
        assert links.get((regions.ns[0], regions.ns[1]), 0) > 0, stats
        assert links.get(("operator", regions.ns[1]), 0) > 0, stats
        assert (regions.ns[1], regions.ns[1]) not in links, stats
        # the devices went with the relay: region 2 no longer reaches region 1
        r = subprocess.run(in_ns(regions.ns[1], "ip", "-o", "addr"), capture_output=True)
        assert regions.host(1) not in r.stdout.decode()
    finally:
        if echo is not None:
            echo.kill()
            echo.wait()
        regions.close()


def keel(*args, timeout_s=90):
    r = subprocess.run([binary("keel"), *args], capture_output=True, timeout=timeout_s)
    return r.returncode, r.stdout.decode(), r.stderr.decode()


def netns_of(pid):
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def test_keel_up_places_nodes_and_instances_in_regions_and_hands_leadership(tmp_path):
    """Node i and instance i go to region i % 3, each listening on its region's address, inside
    its namespace; keel up reaches them over the operator's link; --leader moves leadership;
    a restart after a kill puts the node back in its region."""
    regions = Regions(3, delay_ms=5)
    d = str(tmp_path / "cluster")
    man = tmp_path / "m.yaml"
    man.write_text("cluster:\n  nodes: 3\n  base_port: 7301\nservices:\n"
                   "  - name: notes\n"
                   "    run: [keel-example-notes, --listen, \"{host}:{port}\", --registry, "
                   "\"{keel}\", --id, \"notes-{i}\", --ttl, \"3000\"]\n"
                   "    instances: 3\n"
                   "    port: 8401\n")
    try:
        rc, out, err = keel("up", "--manifest", str(man), "--dir", d, "--detach",
                            "--regions", regions.spec(), "--leader", "n2")
        assert rc == 0, out + err
        assert "n2 leads" in out, out
        with open(os.path.join(d, "cluster.json")) as f:
            cl = json.load(f)
        assert [r["netns"] for r in cl["regions"]] == regions.ns
        for i, nd in enumerate(cl["nodes"]):
            assert nd["netns"] == regions.ns[i]
            assert nd["client"] == f"{regions.host(i)}:{7301 + i}"
            assert netns_of(nd["pid"]) == os.stat(f"/var/run/netns/{regions.ns[i]}").st_ino
        with open(os.path.join(d, "services.json")) as f:
            svcs = json.load(f)
        for s in svcs:
            i = s["instance"]
            assert s["host"] == regions.host(i)
            assert netns_of(s["pid"]) == os.stat(f"/var/run/netns/{regions.ns[i]}").st_ino
            body = urllib.request.urlopen(f"http://{regions.host(i)}:{8401 + i}/notes",
                                          timeout=5).read()
            assert json.loads(body) == {"count": 0}
        # the registry has each instance at its region's address
        http = cl["nodes"][0]["http"]

        def registered():
            reg = json.loads(urllib.request.urlopen(
                f"http://{http}/v1/health/service/notes?passing", timeout=5).read())
            return sorted(e["Service"]["Address"] for e in reg)
        assert wait_until(lambda: registered() == [regions.host(i) for i in range(3)],
                          timeout_s=10), registered()
        # each registered its region as its zone (KEEL_ZONE, set by keel up): callers and the
        # proxy prefer instances of their own zone
        reg = json.loads(urllib.request.urlopen(
            f"http://{http}/v1/health/service/notes?passing", timeout=5).read())
        zones = {e["Service"]["Address"]: e["Service"]["Meta"].get("zone") for e in reg}
        assert zones == {regions.host(i): regions.ns[i] for i in range(3)}, zones
        # a write through the leader (region 2) from the operator's link
        r = redis.Redis(host=regions.host(1), port=7302, socket_timeout=5)
        assert r.set("k", "v") and r.get("k") == b"v"
        rc, out, _ = keel("status", "--dir", d)
        assert rc == 0 and re.search(rf"notes\s+2\s+{re.escape(regions.host(2))}:8403\s+\d+\s+"
                                     r"running", out), out
        # a killed node comes back in its own region
        os.kill(cl["nodes"][2]["pid"], signal.SIGKILL)
        rc, out, err = keel("up", "--manifest", str(man), "--dir", d, "--detach")
        assert rc == 0, out + err
        with open(os.path.join(d, "cluster.json")) as f:
            n3 = json.load(f)["nodes"][2]
        assert netns_of(n3["pid"]) == os.stat(f"/var/run/netns/{regions.ns[2]}").st_ino
        rc, out, err = keel("down", "--dir", d)
        assert rc == 0 and "stopped 3 service process(es)" in out, out + err
    finally:
        keel("down", "--dir", d)
        regions.close()
