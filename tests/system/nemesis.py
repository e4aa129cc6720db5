"""nemesis.py - kill, pause and partition real keel server nodes under a recorded client load.

A nemesis run (docs/consistency.md, "Fault model tested"):

1. A cluster of `keel server` processes whose peer links can be cut and healed:
   - mode "netns": each node in its own network namespace, joined by a veth pair to a bridge
     in the root namespace; addresses in a private 10.213.X.0/24 (X free at setup); the
     clients run in the root namespace on the bridge (address .254). Links are cut with
     nftables rules inside the namespaces (packets silently dropped, as in a real partition;
     TCP retransmits deliver them after the heal if the connection survived), and a node is
     cut off from everyone, clients included, by taking its veth down. Needs root, `ip netns`
     and `nft` (scripts/deps.sh installs iproute2 and nftables).
   - mode "relay" (fallback where namespaces are unavailable): every node on 127.0.0.1; each
     node's peer address in --initial-cluster is a relay in this process that reads the peer
     hello frame (docs/protocols.md: it names the sending and receiving node) and forwards the
     connection to the node's real --listen-peer port. A cut link stops forwarding in that
     direction (bytes wait, as in a partition that TCP outlives). Clients are never cut.
2. A client load (Load): several threads over a few keys, each one lincheck process (or, for
   the pipelined ones, one per pipeline slot): GET, SET of a never-written value,
   compare-and-set (KEEL.GETV, recorded as a read, then KEEL.CAS on the version it returned:
   a version is the revision of a key's last change and every value is unique, so "the
   version matched" is "the value matched"), WATCH/GET/MULTI/SET/EXEC, and one hash field and
   one set member per key as registers (HGET/HSET/HDEL/HSETNX, SISMEMBER/SADD/SREM). A reply is "ok";
   -TRYAGAIN (nothing proposed) and a failure to connect (nothing sent) are "fail"; a
   timeout, a lost connection or an error reply is "info" (unknown outcome), never "fail".
   Optionally `keel bench kv --history` runs beside it on keys of its own (Bench).
3. A seeded schedule of faults (Nemesis, FAULTS): SIGKILL + restart of the leader, a follower
   or every node; SIGSTOP/SIGCONT pauses longer than the election timeout; the leader isolated
   from its peers (clients still reach it), then maybe killed inside the partition; a random
   minority split from the rest, maybe with a majority node paused meanwhile; flapping links;
   a one-way cut; leadership transfers, one racing a partition; and (netns) a node cut off
   from everyone, lossy links, a follower replaced by a fresh node that joins.
4. Then everything is healed and restarted, a leader awaited, every key read once more (so a
   lost acknowledged write shows), the history checked by keel-lincheck, and the nodes' logs
   searched for sanitizer reports; a node that died by itself fails the run.

Every name (bridge, namespaces, veths) carries a random tag, so runs by different people on
one machine do not collide; teardown removes them even when the test fails.
"""

import asyncio
import fcntl
import ipaddress
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import threading
import time

import redis

from keelcluster import Cluster, Node, distinct_ports, http_get
from lincheck_history import History, run_lincheck

ELECTION_TIMEOUT_MS_MAX = 2000  # keel server default: tick 50 ms x 40 ticks
# errors of a node that cannot serve now (recorded as unknown outcomes; the client moves on)
ELSEWHERE = ("keel: this node is not a member", "keel: server shutting down")
WATCH_ABORTED = "Watched variable changed."  # redis-py's WatchError text for a nil EXEC
PIPELINE_DEPTH = 3  # requests in flight per pipelined client
OP_TIMEOUT_S = 2.0  # a client gives up on a request after this (then: "info")
CONNECT_TIMEOUT_S = 1.0
STATUS_TIMEOUT_S = 0.5
RECOVER_WAIT_S = 60.0  # generous: ASan builds and a loaded 2-core machine
SUBNET_THIRD_OCTETS = range(1, 255)  # 10.213.X.0/24
NET_LOCK = "/tmp/keel-nemesis-net.lock"
NET_STATE_DIR = "/tmp/keel-nemesis"  # <tag>.json per netns run: owner pid, names to remove


def sh(*args, check=True):
    """Runs a command; returns its stdout; raises with its stderr on failure (when check)."""
    r = subprocess.run(args, capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: exit {r.returncode}: {r.stderr.strip()}")
    return r.stdout


def netns_unavailable_reason():
    """None if network namespaces, veth, bridges and nft work here; else why not."""
    if os.geteuid() != 0:
        return "not root"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/deps.sh installs iproute2 and nftables)"
    probe = f"keel-probe-{os.getpid()}"
    try:
        sh("ip", "netns", "add", probe)
    except RuntimeError as e:
        return f"ip netns add fails: {e}"
    try:
        sh("ip", "netns", "exec", probe, "nft", "add", "table", "inet", "probe")
    except RuntimeError as e:
        return f"nft does not work in a namespace: {e}"
    finally:
        sh("ip", "netns", "del", probe, check=False)
    return None


# -- network: namespaces ------------------------------------------------------------------------

LOSS_PCT = 30  # "lossy": this share of packets between peers is dropped
NFT_RULES = f"""
table inet keel_nemesis {{
  set cut_in {{ type ipv4_addr; }}
  set cut_out {{ type ipv4_addr; }}
  set lossy_in {{ type ipv4_addr; }}
  chain input {{
    type filter hook input priority 0;
    ip saddr @cut_in drop;
    ip saddr @lossy_in numgen random mod 100 < {LOSS_PCT} drop;
  }}
  chain output {{ type filter hook output priority 0; ip daddr @cut_out drop; }}
}}
"""
NFT_SETS = ("cut_in", "cut_out", "lossy_in")


class NetnsNet:
    """n namespaces keel-<tag>-n1.. on a bridge kbr<tag>; node i has address 10.213.X.i."""

    mode = "netns"

    def __init__(self, n):
        self.n = n
        self.tag = "%06x" % random.SystemRandom().randrange(1 << 24)
        self.bridge = f"kbr{self.tag}"
        self.ns = [f"keel-{self.tag}-n{i + 1}" for i in range(n)]
        self.veth = [f"kv{self.tag}{i + 1}" for i in range(n)]  # root side; 15 chars max
        self.made_ns = []
        self.made_bridge = False
        self.subnet = None
        self.down = set()  # nodes whose veth is down
        self.state_path = os.path.join(NET_STATE_DIR, f"{self.tag}.json")

    def setup(self):
        # The lock makes choosing a free /24 and claiming it (the bridge address) one step
        # for every run on this machine.
        with open(NET_LOCK, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            sweep_dead_runs()
            os.makedirs(NET_STATE_DIR, exist_ok=True)
            with open(self.state_path, "w") as f:
                json.dump({"pid": os.getpid(), "tag": self.tag, "n": self.n}, f)
            self.subnet = self._free_subnet()
            sh("ip", "link", "add", self.bridge, "type", "bridge")
            self.made_bridge = True
            sh("ip", "addr", "add", f"{self.host(254)}/24", "dev", self.bridge)
            sh("ip", "link", "set", self.bridge, "up")
        for i in range(self.n):
            self._add_node(i)
        return self

    def _free_subnet(self):
        used = sh("ip", "-4", "route", "show")
        nets = []
        for line in used.splitlines():
            word = line.split()[0]
            try:
                nets.append(ipaddress.ip_network(word if word != "default" else "0.0.0.0/32"))
            except ValueError:
                pass
        octets = list(SUBNET_THIRD_OCTETS)
        random.SystemRandom().shuffle(octets)
        for x in octets:
            net = ipaddress.ip_network(f"10.213.{x}.0/24")
            if not any(net.overlaps(u) for u in nets if u.prefixlen > 0):
                return x
        raise RuntimeError("no free 10.213.X.0/24 for the nemesis bridge")

    def host(self, last_octet):
        return f"10.213.{self.subnet}.{last_octet}"

    def address(self, i):
        return self.host(i + 1)

    def _add_node(self, i):
        ns, veth, peer = self.ns[i], self.veth[i], f"kp{self.tag}{i + 1}"
        sh("ip", "netns", "add", ns)
        self.made_ns.append(ns)
        sh("ip", "link", "add", veth, "type", "veth", "peer", "name", peer)
        sh("ip", "link", "set", peer, "netns", ns)
        inside = ("ip", "netns", "exec", ns)
        sh(*inside, "ip", "link", "set", peer, "name", "eth0")
        sh(*inside, "ip", "addr", "add", f"{self.address(i)}/24", "dev", "eth0")
        sh(*inside, "ip", "link", "set", "eth0", "up")
        sh(*inside, "ip", "link", "set", "lo", "up")
        sh("ip", "link", "set", veth, "master", self.bridge)
        sh("ip", "link", "set", veth, "up")
        self._nft(i, NFT_RULES)

    def prefix(self, i):
        return ["ip", "netns", "exec", self.ns[i]]

    def cut(self, pairs):
        """Drops every packet from node a to node b, for each (a, b), at a's output and b's
        input; one nft run per namespace touched."""
        script = {}
        for a, b in pairs:
            script.setdefault(a, []).append(f"add element inet keel_nemesis cut_out "
                                            f"{{ {self.address(b)} }}")  # fmt: skip
            script.setdefault(b, []).append(f"add element inet keel_nemesis cut_in "
                                            f"{{ {self.address(a)} }}")  # fmt: skip
        for i, lines in script.items():
            self._nft(i, "\n".join(lines) + "\n")

    def _nft(self, i, script):
        r = subprocess.run([*self.prefix(i), "nft", "-f", "-"], input=script,
                           capture_output=True, text=True, timeout=30)  # fmt: skip
        if r.returncode != 0:
            raise RuntimeError(f"nft in {self.ns[i]}: {r.stderr}")

    def lossy(self):
        """Every node drops LOSS_PCT % of the packets it receives from its peers."""
        peers = ", ".join(self.address(j) for j in range(self.n))
        for i in range(self.n):
            self._nft(i, f"add element inet keel_nemesis lossy_in {{ {peers} }}\n")

    def isolate(self, i):
        """Cuts node i off from everyone, clients included: its veth goes down."""
        sh("ip", "link", "set", self.veth[i], "down")
        self.down.add(i)

    def heal(self):
        # one nft run per namespace (each command is a process; a loaded machine makes
        # them slow, and the heal should be about one instant)
        flush = "".join(f"flush set inet keel_nemesis {s}\n" for s in NFT_SETS)
        for i in range(self.n):
            self._nft(i, flush)
        for i in self.down:
            sh("ip", "link", "set", self.veth[i], "up")
        self.down = set()

    def teardown(self):
        remove_net(self.tag, self.n)
        self.made_ns, self.made_bridge = [], False


def remove_net(tag, n):
    """Removes run `tag`'s namespaces (killing what still runs in them: its own servers),
    veths and bridge; quiet about what is already gone."""
    for i in range(n):
        ns = f"keel-{tag}-n{i + 1}"
        pids = sh("ip", "netns", "pids", ns, check=False).split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        # a namespace lives on while anything holds it, and its veth with it: delete the
        # pair from the root side as well
        sh("ip", "link", "del", f"kv{tag}{i + 1}", check=False)
        sh("ip", "netns", "del", ns, check=False)
    sh("ip", "link", "del", f"kbr{tag}", check=False)
    try:
        os.unlink(os.path.join(NET_STATE_DIR, f"{tag}.json"))
    except FileNotFoundError:
        pass


def sweep_dead_runs():
    """Removes the networks of earlier runs whose owning process is gone (a test runner
    killed before its teardown). Runs of live processes, anyone's, are left alone."""
    try:
        names = os.listdir(NET_STATE_DIR)
    except FileNotFoundError:
        return
    for name in names:
        try:
            with open(os.path.join(NET_STATE_DIR, name)) as f:
                st = json.load(f)
            if _alive(st["pid"]):
                continue  # its owner lives
            print(f"nemesis: removing the network of dead run {st['tag']} (pid {st['pid']})")
            remove_net(st["tag"], st["n"])
        except (OSError, ValueError, KeyError):
            continue


def _alive(pid):
    """True if pid runs (a zombie, killed but not yet reaped, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


# -- network: loopback relay --------------------------------------------------------------------

HELLO_FRAME_BYTES = 4 + 1 + 1 + 24 + 4  # length, version, type, {cluster, from, to}, crc
PEER_HELLO_TYPE = 1
RELAY_CHUNK_BYTES = 64 * 1024


class RelayNet:
    """A relay per node on 127.0.0.1 in front of its peer port; links cut per direction.

    Node ids are 1..n in --initial-cluster order; the hello frame that opens every peer
    connection carries (cluster_id, from, to) as little-endian u64s (src/proto/peer.c).
    A connection whose first frame is not a hello is forwarded as is, never cut.
    """

    mode = "relay"

    def __init__(self, n):
        self.n = n
        ports = distinct_ports(2 * n)
        self.relay_ports, self.peer_ports = ports[:n], ports[n:]
        self.open = {}  # (from, to) 0-based -> asyncio.Event set while the link is up
        self.loop = None
        self.thread = None
        self.servers = []

    def setup(self):
        ready = threading.Event()

        def run():
            self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self.loop)
            for a in range(self.n):
                for b in range(self.n):
                    self.open[(a, b)] = asyncio.Event()
                    self.open[(a, b)].set()
            for i in range(self.n):
                srv = self.loop.run_until_complete(
                    asyncio.start_server(
                        lambda r, w, i=i: self._serve(i, r, w), "127.0.0.1", self.relay_ports[i]
                    )
                )
                self.servers.append(srv)
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert ready.wait(10), "relay did not start"
        return self

    def address(self, i):
        return "127.0.0.1"

    def prefix(self, i):
        return []

    async def _pipe(self, reader, writer, link):
        try:
            while True:
                data = await reader.read(RELAY_CHUNK_BYTES)
                if not data:
                    break
                if link is not None:
                    await self.open[link].wait()  # a cut link holds the bytes (and, by not
                    # reading on, the sender's socket buffer) until it heals
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _serve(self, i, reader, writer):
        up_w = None
        try:
            hello = await asyncio.wait_for(reader.readexactly(HELLO_FRAME_BYTES), 10)
            link = None
            length, _version, ftype = struct.unpack_from("<IBB", hello)
            if ftype == PEER_HELLO_TYPE and length == HELLO_FRAME_BYTES - 4:
                _cluster, src, dst = struct.unpack_from("<QQQ", hello, 6)
                if 1 <= src <= self.n and dst == i + 1:
                    link = (src - 1, i)
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.peer_ports[i])
            back = (link[1], link[0]) if link else None
            if link is not None:
                await self.open[link].wait()
            up_w.write(hello)
            await asyncio.gather(self._pipe(reader, up_w, link), self._pipe(up_r, writer, back))
        except (ConnectionError, OSError, asyncio.IncompleteReadError, asyncio.TimeoutError):
            pass
        finally:
            writer.close()
            if up_w is not None:
                up_w.close()

    def _call(self, fn):
        done = threading.Event()

        def wrapped():
            fn()
            done.set()

        self.loop.call_soon_threadsafe(wrapped)
        assert done.wait(10), "relay loop does not answer"

    def cut(self, pairs):
        """Stops forwarding from node a to node b, for each (a, b)."""
        self._call(lambda: [self.open[p].clear() for p in pairs])

    def isolate(self, i):
        """No client cut in this mode: every peer link of node i, both ways."""
        self.cut([p for j in range(self.n) if j != i for p in ((i, j), (j, i))])

    def heal(self):
        self._call(lambda: [e.set() for e in self.open.values()])

    def teardown(self):
        if self.loop is None:
            return

        async def shutdown():
            for s in self.servers:
                s.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            if not self.thread.is_alive():
                self.loop.close()
            self.loop = None


def make_net(mode, n):
    """A network for n nodes: "netns", "relay", or "auto" (netns if it works here)."""
    if mode == "auto":
        reason = netns_unavailable_reason()
        mode = "netns" if reason is None else "relay"
        if reason:
            print(f"nemesis: network namespaces unavailable ({reason}); using the relay")
    return NetnsNet(n) if mode == "netns" else RelayNet(n)


def make_cluster(exe, base_dir, net, extra=()):
    """A Cluster (keelcluster.py) whose nodes live on `net` (set up already)."""
    cl = Cluster(exe, base_dir, net.n, ["--wal-segment-bytes", "17m", *extra])
    members = []
    for i, nd in enumerate(cl.nodes):
        nd.host = net.address(i)
        nd.prefix = net.prefix(i)
        if isinstance(net, RelayNet):
            members.append(f"{nd.name}=127.0.0.1:{net.relay_ports[i]}")
            nd.extra += ["--listen-peer", f"127.0.0.1:{net.peer_ports[i]}"]
        else:
            members.append(f"{nd.name}={nd.host}:{nd.peer_port}")
    for nd in cl.nodes:
        nd.initial_cluster = ",".join(members)
    return cl


# -- client load --------------------------------------------------------------------------------


# Hashes and sets (issue 19): one field of a hash and one member of a set per load key, each
# a register of its own in the history (Client._collection).
FIELD, MEMBER = "f", "m"


def hash_key(key):
    return f"h:{key}"


def set_key(key):
    return f"s:{key}"


def hash_reg(key):
    return f"{hash_key(key)}.{FIELD}"


def set_reg(key):
    return f"{set_key(key)}.{MEMBER}"


def _not_sent(e):
    """True for redis-py's failure to connect: its request was never sent. (redis-py connects
    a connection only before sending on it: "Error 111 connecting to host:port", "Timeout
    connecting to server".)"""
    conn_err = (redis.ConnectionError, redis.TimeoutError)
    return isinstance(e, conn_err) and " connecting to " in str(e)


ZSET_MEMBERS = ("m0", "m1", "m2")  # Client._zset's members of each sorted set


def _zscore(c, zkey, m):
    """ZSCORE as the server's text (redis-py parses it to a float: "%.17g" gives the text
    back exactly, as the server formats it)."""
    v = c.execute_command("ZSCORE", zkey, m)
    return None if v is None else f"{float(v):.17g}"


def _decode(v):
    return None if v is None else v.decode()


class Client(threading.Thread):
    """One lincheck process: GET / SET / GETV+CAS on random keys until the deadline."""

    def __init__(self, load, idx):
        super().__init__(daemon=True)
        self.load, self.idx = load, idx
        self.rnd = random.Random(load.seed * 1000 + idx)
        self.node = self.rnd.randrange(len(load.nodes))
        self.conn = None
        self.seq = 0
        self.counts = {}
        self.unexpected = []

    def _client(self):
        if self.conn is None:
            nd = self.load.nodes[self.node]
            self.conn = redis.Redis(host=nd.host, port=nd.client_port, socket_timeout=OP_TIMEOUT_S,
                                    socket_connect_timeout=CONNECT_TIMEOUT_S,
                                    retry_on_timeout=False)  # fmt: skip
        return self.conn

    def _switch(self):
        if self.conn is not None:
            self.conn.close()
        self.conn = None
        self.node = self.rnd.randrange(len(self.load.nodes))

    def _count(self, f, outcome):
        self.counts[(f, outcome)] = self.counts.get((f, outcome), 0) + 1

    def _run_op(self, h, f, key, value, call, label=None):
        """Records one op; call() returns (outcome, read value or cas result); counted under
        (label or f, outcome)."""
        o = h.op(self.idx, f, key, value)
        f_op, f = f, label or f
        try:
            outcome, res = call()
        except redis.ResponseError as e:
            msg = str(e)
            if msg.startswith("TRYAGAIN"):
                o.fail()  # no leader known; nothing was proposed
                self._count(f, "fail")
                time.sleep(0.05)
                return None
            if msg.startswith(ELSEWHERE):
                self._switch()  # this node cannot serve: try another
            elif not msg.startswith(("TIMEOUT", "UNKNOWN")):
                self.unexpected.append(f"{f} {key}: {msg}")
            o.info()
            self._count(f, "info")
            return None
        except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
            if _not_sent(e):
                o.fail()
                self._count(f, "fail")
            else:
                o.info()  # the request may have arrived: outcome unknown
                self._count(f, "info")
            self._switch()
            time.sleep(0.02)
            return None
        except redis.RedisError as e:  # a protocol error...: reported, and the op closed
            self.unexpected.append(f"{f} {key}: {e!r}")
            o.info()
            self._switch()
            return None
        if outcome == "ok":
            if f_op == "cas":
                o.ok(result=res)
            else:
                o.ok(res)
        else:
            o.fail()
        self._count(f, outcome)
        return res if f_op != "cas" else outcome

    def run(self):
        try:
            self.work()
        except Exception as e:  # a client that dies would silently thin the load
            self.unexpected.append(f"client {self.idx} died: {e!r}")

    def work(self):
        h, keys = self.load.history, self.load.keys
        while time.monotonic() < self.load.deadline:
            key = self.rnd.choice(keys)
            r = self.rnd.random()
            if r < 0.2:
                self._collection(h, key)
                continue
            r = (r - 0.2) / 0.8
            if r < 0.3:
                self._run_op(h, "read", key, None, lambda: ("ok", _decode(self._client().get(key))))
            elif r < 0.55:
                self.seq += 1
                v = f"c{self.idx}-{self.seq}"
                self._run_op(h, "write", key, v, lambda: ("ok", self._client().set(key, v)))
            elif r < 0.8:
                self._cas(h, key)
            elif r < 0.9:
                self._txn(h, key)
            else:
                self._zset(h, key)

    def _zset(self, h, key):
        """A sorted-set member as a register (issue 19): ZADD z<key> score m writes it,
        ZREM removes it (absent; the last removal deletes the key), ZSCORE reads it. The
        checker's registers are per key and compose (Herlihy & Wing): a member of a set is
        one, named "z<key>/m". Integer scores print exactly ("%.17g" below 2^53)."""
        m = self.rnd.choice(ZSET_MEMBERS)
        zkey = "z" + key
        reg = f"{zkey}/{m}"
        r = self.rnd.random()
        c = self._client
        if r < 0.4:
            self._run_op(h, "read", reg, None,
                         lambda: ("ok", _zscore(c(), zkey, m)), label="zscore")  # fmt: skip
        elif r < 0.8:
            self.seq += 1
            score = str(self.idx * 10_000_000 + self.seq)
            self._run_op(h, "write", reg, score,
                         lambda: ("ok", c().execute_command("ZADD", zkey, score, m)),
                         label="zadd")  # fmt: skip
        else:
            self._run_op(h, "write", reg, None,
                         lambda: ("ok", c().execute_command("ZREM", zkey, m)),
                         label="zrem")  # fmt: skip

    def _collection(self, h, key):
        """Hash fields and set members as registers (lincheck models one register per key, and
        each of these commands touches one field or member): field FIELD of hash H(key) is
        register hash_reg(key), member MEMBER of set S(key) is set_reg(key) with the values
        absent / MEMBER. HSET is a write of a fresh value, HDEL a write of "absent", HSETNX a
        compare-and-set from absent; SADD and SREM are compare-and-sets (absent -> in, in ->
        absent) whose reply (1 or 0) says whether they swapped; HGET and SISMEMBER are reads."""
        c = self._client
        hk, sk, hr, sr = hash_key(key), set_key(key), hash_reg(key), set_reg(key)
        r = self.rnd.random()
        self.seq += 1
        v = f"c{self.idx}-{self.seq}"
        if r < 0.2:
            self._run_op(h, "read", hr, None, lambda: ("ok", _decode(c().hget(hk, FIELD))), "hget")
        elif r < 0.4:
            self._run_op(h, "write", hr, v, lambda: ("ok", c().hset(hk, FIELD, v)), "hset")
        elif r < 0.5:
            self._run_op(h, "write", hr, None, lambda: ("ok", c().hdel(hk, FIELD)), "hdel")
        elif r < 0.6:
            self._run_op(h, "cas", hr, [None, v], lambda: ("ok", c().hsetnx(hk, FIELD, v) == 1),
                         "hsetnx")  # fmt: skip
        elif r < 0.75:
            self._run_op(h, "read", sr, None,
                         lambda: ("ok", MEMBER if c().sismember(sk, MEMBER) else None),
                         "sismember")  # fmt: skip
        elif r < 0.9:
            self._run_op(h, "cas", sr, [None, MEMBER], lambda: ("ok", c().sadd(sk, MEMBER) == 1),
                         "sadd")  # fmt: skip
        else:
            self._run_op(h, "cas", sr, [MEMBER, None], lambda: ("ok", c().srem(sk, MEMBER) == 1),
                         "srem")  # fmt: skip

    def _txn(self, h, key):
        """WATCH key, GET key (recorded as a read), MULTI, SET key new, EXEC. A committed EXEC
        means the key did not change since the WATCH, so it still held the value the GET
        read: `cas [read, new]` that swapped. An EXEC answered nil wrote nothing: "fail".
        (Not a failed compare: WATCH also aborts on a change made between the WATCH and the
        GET, and the key may still hold the value the GET read.) redis-py turns a lost
        connection while watching into a WatchError too: that one is an unknown outcome."""
        p = self._client().pipeline(transaction=True)
        try:
            got = {}

            def watch_get():
                try:
                    p.watch(key)
                    got["v"] = _decode(p.get(key))
                except redis.WatchError as e:
                    raise redis.ConnectionError(str(e))
                return "ok", got["v"]

            self._run_op(h, "read", key, None, watch_get)
            if "v" not in got:
                return
            self.seq += 1
            new = f"c{self.idx}-{self.seq}"

            def exec_():
                p.multi()
                p.set(key, new)
                try:
                    p.execute()
                    return "ok", True
                except redis.WatchError as e:
                    if str(e) == WATCH_ABORTED:
                        return "fail", None
                    raise redis.ConnectionError(str(e))  # lost while watching: unknown

            self._run_op(h, "cas", key, [got["v"], new], exec_, label="txn")
        finally:
            try:
                p.reset()  # may send UNWATCH, and redis-py lets a timeout through
            except (redis.RedisError, OSError):
                self._switch()

    def _cas(self, h, key):
        got = {}

        def getv():
            r = self._client().execute_command("KEEL.GETV", key)
            got["v"] = r
            return "ok", None if r is None else r[0].decode()

        if not self._run_op(h, "read", key, None, getv) and "v" not in got:
            return
        r = got["v"]
        expected, version = (None, 0) if r is None else (r[0].decode(), int(r[1]))
        self.seq += 1
        new = f"c{self.idx}-{self.seq}"

        def cas():
            try:
                self._client().execute_command("KEEL.CAS", key, version, new)
                return "ok", True
            except redis.ResponseError as e:
                if str(e).startswith("CONFLICT"):
                    return "ok", False
                raise

        self._run_op(h, "cas", key, [expected, new], cas)


class PipelinedClient(Client):
    """PIPELINE_DEPTH requests in flight on one connection (one RESP pipeline), each slot its
    own lincheck process "<idx>.<slot>". Every request is recorded as invoked before the
    pipeline is sent and completed when its replies are in. A CAS uses the (value, version)
    of the key's last KEEL.GETV this client saw (older ones are still a valid compare: a
    version names exactly one written value), or "absent" (version 0)."""

    def work(self):
        h, keys = self.load.history, self.load.keys
        seen = {}
        while time.monotonic() < self.load.deadline:
            p = self._client().pipeline(transaction=False)
            batch = []
            for slot in range(PIPELINE_DEPTH):
                batch.append(self._queue(h, p, f"{self.idx}.{slot}", self.rnd.choice(keys), seen))
            try:
                replies = p.execute(raise_on_error=False)
            except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
                outcome = "fail" if _not_sent(e) else "info"
                for o, _kind in batch:
                    o.fail() if outcome == "fail" else o.info()
                    self._count(o.f, outcome)
                self._switch()
                time.sleep(0.02)
                continue
            self.moved = False
            for (o, kind), r in zip(batch, replies):
                self._complete(o, kind, r, seen)
            if self.moved:
                self._switch()

    def _queue(self, h, p, proc, key, seen):
        r = self.rnd.random()
        if r < 0.3:
            p.get(key)
            return h.op(proc, "read", key), "get"
        if r < 0.5:
            p.execute_command("KEEL.GETV", key)
            return h.op(proc, "read", key), "getv"
        self.seq += 1
        new = f"c{self.idx}-{self.seq}"
        if r < 0.8:
            p.set(key, new)
            return h.op(proc, "write", key, new), "set"
        value, version = seen.get(key, (None, 0))
        p.execute_command("KEEL.CAS", key, version, new)
        return h.op(proc, "cas", key, [value, new]), "cas"

    def _complete(self, o, kind, r, seen):
        if isinstance(r, redis.ResponseError):
            msg = str(r)
            if kind == "cas" and msg.startswith("CONFLICT"):
                o.ok(result=False)
                self._count(o.f, "ok")
                return
            if msg.startswith("TRYAGAIN"):
                o.fail()
                self._count(o.f, "fail")
                return
            if msg.startswith(ELSEWHERE):
                self.moved = True
            elif not msg.startswith(("TIMEOUT", "UNKNOWN")):
                self.unexpected.append(f"{kind} {o.key}: {msg}")
            o.info()
            self._count(o.f, "info")
            return
        if kind == "get":
            o.ok(_decode(r))
        elif kind == "getv":
            o.ok(None if r is None else r[0].decode())
            seen[o.key] = (None, 0) if r is None else (r[0].decode(), int(r[1]))
        elif kind == "cas":
            o.ok(result=True)
        else:
            o.ok()
        self._count(o.f, "ok")


class Load:
    """`clients` client threads (every second one pipelined) over `keys` keys until the
    deadline (time.monotonic())."""

    def __init__(self, nodes, keys, clients, seed, duration_s):
        self.nodes, self.seed = nodes, seed
        self.keys = [f"nk{i}" for i in range(keys)]  # `keel bench kv` (Bench) uses k0, k1...
        self.history = History()
        self.deadline = time.monotonic() + duration_s
        self.clients = [(PipelinedClient if i % 2 else Client)(self, i) for i in range(clients)]

    def start(self):
        for c in self.clients:
            c.start()
        return self

    def join(self):
        for c in self.clients:
            c.join(timeout=OP_TIMEOUT_S * 3 + CONNECT_TIMEOUT_S + 10)
            assert not c.is_alive(), f"client {c.idx} hangs"

    def counts(self):
        total = {}
        for c in self.clients:
            for k, v in c.counts.items():
                total[k] = total.get(k, 0) + v
        return total

    def unexpected(self):
        return [u for c in self.clients for u in c.unexpected]

    def final_reads(self, timeout_s=RECOVER_WAIT_S):
        """Reads every key once (process "final"), retrying each until it completes ok."""
        deadline = time.monotonic() + timeout_s
        proc = len(self.clients)
        reads = [(k, lambda c, k=k: _decode(c.get(k))) for k in self.keys]
        reads += [(hash_reg(k), lambda c, k=k: _decode(c.hget(hash_key(k), FIELD)))
                  for k in self.keys]  # fmt: skip
        reads += [(set_reg(k), lambda c, k=k: MEMBER if c.sismember(set_key(k), MEMBER) else None)
                  for k in self.keys]  # fmt: skip
        reads += [(f"z{key}/{m}", lambda c, k=key, m=m: _zscore(c, "z" + k, m))
                  for key in self.keys for m in ZSET_MEMBERS]  # fmt: skip
        for key, read in reads:
            while True:
                nd = self.nodes[random.randrange(len(self.nodes))]
                with self.history.op(proc, "read", key) as o:
                    try:
                        c = nd.client(socket_timeout=5, socket_connect_timeout=CONNECT_TIMEOUT_S)
                        o.ok(read(c))
                        c.close()
                        break
                    except (redis.RedisError, OSError) as e:
                        o.info()
                        if time.monotonic() > deadline:
                            raise TimeoutError(f"final read of {key} keeps failing: {e}")
                        time.sleep(0.2)


# -- the nemesis --------------------------------------------------------------------------------

FAULTS = [
    "kill-leader", "kill-follower", "pause-leader", "pause-follower", "isolate-leader",
    "isolate-kill", "split", "split-pause", "flap", "one-way", "cut-off", "lossy", "transfer",
    "transfer-cut", "kill-all", "replace",
]  # fmt: skip
FLAP_MS = 300  # "flap": the leader's links go down and up every this many ms
# replace: a joining node advertises its --listen-peer address, which the relay cannot stand in
NETNS_ONLY = ("cut-off", "lossy", "replace")
MEMBER_CHANGE_WAIT_S = 20.0


def schedule(seed, n, mode, count=200):
    """The seeded fault sequence: (kind, pick, hold_s, gap_s); `pick` chooses among the
    candidate nodes at run time (which node leads is only known then)."""
    rnd = random.Random(seed)
    kinds = [k for k in FAULTS if mode == "netns" or k not in NETNS_ONLY]
    out = []
    for _ in range(count):
        kind = rnd.choice(kinds)
        # pauses and cuts outlast the election timeout, so they force elections; a killed
        # node stays down for a short or a long while
        hold = rnd.uniform(1.2, 2.0) * ELECTION_TIMEOUT_MS_MAX / 1000
        if kind.startswith("kill"):
            hold = rnd.uniform(0.2, 3.0)
        out.append((kind, rnd.randrange(1 << 30), round(hold, 2), round(rnd.uniform(0.2, 1.0), 2)))
    return out


class Nemesis:
    """Runs a schedule against a cluster on a net; records what it did."""

    def __init__(self, cl, net, seed):
        self.cl, self.net, self.seed = cl, net, seed
        self.done = []  # "t=..s kind node(s)" lines
        self.t0 = time.monotonic()
        self.paused = set()
        self.crashed = []
        self.replaced = 0

    def _log(self, what):
        self.done.append(f"t={time.monotonic() - self.t0:5.1f}s {what}")

    def leader(self):
        """The running, unpaused node that says it leads with the highest term, or None.
        Nodes are asked in parallel: a slow or cut-off one costs STATUS_TIMEOUT_S once."""
        sts = {}

        def ask(nd):
            try:
                code, body, _ = http_get(nd.http_port, "/status", STATUS_TIMEOUT_S, host=nd.host)
                sts[nd.name] = json.loads(body) if code == 200 else None
            except (OSError, ValueError):
                pass

        live = [nd for nd in self.cl.nodes if nd.alive() and nd.name not in self.paused]
        ts = [threading.Thread(target=ask, args=(nd,), daemon=True) for nd in live]
        for t in ts:
            t.start()
        for t in ts:
            t.join(timeout=STATUS_TIMEOUT_S * 4)
        best = None
        for nd in live:
            st = sts.get(nd.name)
            if st and st.get("role") == "leader" and (best is None or st["term"] > best[1]):
                best = (nd, st["term"])
        return best[0] if best else None

    def _index(self, nd):
        return self.cl.nodes.index(nd)

    def _target(self, kind, pick):
        nodes = self.cl.nodes
        leader = self.leader()
        if kind.endswith("leader") or kind in ("one-way", "isolate-kill", "flap") or \
                kind.startswith("transfer"):
            return leader or nodes[pick % len(nodes)]
        if kind.endswith("follower") or kind == "replace":
            fs = [nd for nd in nodes if nd is not leader]
            return fs[pick % len(fs)]
        return nodes[pick % len(nodes)]

    def _split(self, i, pick):
        """Cuts node i and a random minority containing it from the rest; returns its names."""
        n = len(self.cl.nodes)
        rnd = random.Random(pick)
        minority = [i] + rnd.sample([j for j in range(n) if j != i], (n - 1) // 2 - 1)
        self.net.cut([p for a in minority for b in range(n) if b not in minority
                      for p in ((a, b), (b, a))])  # fmt: skip
        return "+".join(self.cl.nodes[a].name for a in minority)

    def run(self, sched, duration_s, stop=None):
        """Faults from sched until duration_s is up, or until stop() says so (checked before
        each fault: a load that ended has nothing left to fault)."""
        end = time.monotonic() + duration_s
        for kind, pick, hold, gap in sched:
            if time.monotonic() + hold > end or (stop is not None and stop()):
                break
            self._fault(kind, pick, hold)
            time.sleep(gap)

    def check_crashes(self):
        """Records nodes that died without the nemesis killing them (a crash, a sanitizer
        abort): a later restart must not hide them."""
        for nd in self.cl.nodes:
            if nd.proc is not None and not nd.expect_exit and not nd.alive():
                self.crashed.append(f"{nd.name} exited {nd.proc.returncode}:\n{nd.log_tail()}")
                nd.expect_exit = True

    def _fault(self, kind, pick, hold):
        self.check_crashes()
        nd = self._target(kind, pick)
        i = self._index(nd)
        if kind == "kill-all":
            for x in self.cl.nodes:  # as close to simultaneous as signals get
                x.proc.kill()
            for x in self.cl.nodes:
                x.kill()  # reaps, marks the exit as ours
            self._log(f"kill-all (SIGKILL), restart after {hold}s")
            time.sleep(hold)
            for x in self.cl.nodes:
                x.start(wait=False)
            for x in self.cl.nodes:
                x.wait_listening(timeout_s=RECOVER_WAIT_S)
        elif kind.startswith("kill"):
            nd.kill()
            self._log(f"{kind} {nd.name} (SIGKILL), restart after {hold}s")
            time.sleep(hold)
            nd.start(wait=False)
            nd.wait_listening(timeout_s=RECOVER_WAIT_S)
        elif kind.startswith("pause"):
            nd.proc.send_signal(signal.SIGSTOP)
            self.paused.add(nd.name)
            self._log(f"{kind} {nd.name} (SIGSTOP) for {hold}s")
            time.sleep(hold)
            nd.proc.send_signal(signal.SIGCONT)
            self.paused.discard(nd.name)
        elif kind in ("isolate-leader", "split"):
            names = self._split(i, pick)
            self._log(f"{kind}: {names} | the rest, for {hold}s")
            time.sleep(hold)
            self.net.heal()
        elif kind == "isolate-kill":
            # the old leader, cut off, is killed and restarted while the majority goes on:
            # it comes back with its unacknowledged tail, inside the partition, then heals
            names = self._split(i, pick)
            self._log(f"isolate-kill: {names} | the rest; {nd.name} SIGKILLed and restarted "
                      f"inside the partition, healed after {hold}s")  # fmt: skip
            time.sleep(hold / 2)
            nd.kill()
            nd.start(wait=False)
            nd.wait_listening(timeout_s=RECOVER_WAIT_S)
            time.sleep(hold / 2)
            self.net.heal()
        elif kind == "split-pause":
            # a minority cut off and, meanwhile, one node of the majority paused: no quorum
            # anywhere until the pause ends; the partition heals after the pause
            names = self._split(i, pick)
            rest = [nd2 for nd2 in self.cl.nodes if nd2.name not in names.split("+")]
            victim = rest[pick % len(rest)]
            victim.proc.send_signal(signal.SIGSTOP)
            self.paused.add(victim.name)
            self._log(f"split-pause: {names} | the rest, {victim.name} paused for {hold / 2:.2f}s "
                      f"inside it, healed after {hold}s")  # fmt: skip
            time.sleep(hold / 2)
            victim.proc.send_signal(signal.SIGCONT)
            self.paused.discard(victim.name)
            time.sleep(hold / 2)
            self.net.heal()
        elif kind == "flap":
            # shorter than an election timeout each: elections start, half finish
            t_end, rounds = time.monotonic() + hold, 0
            while time.monotonic() < t_end:
                self._split(i, pick)
                time.sleep(FLAP_MS / 1000)
                self.net.heal()
                time.sleep(FLAP_MS / 1000)
                rounds += 1
            self._log(f"flap: {nd.name} cut from its peers and healed {rounds} times, "
                      f"{FLAP_MS} ms each way, for {hold}s")  # fmt: skip
        elif kind.startswith("transfer"):
            # leadership transfer (thesis §3.10) to a random follower; "transfer-cut" cuts that
            # follower from everyone at once, so the hand-over races a partition
            others = [j for j in range(len(self.cl.nodes)) if j != i]
            j = others[pick % len(others)]
            to = self.cl.nodes[j]
            try:
                c = nd.client(socket_timeout=OP_TIMEOUT_S, socket_connect_timeout=CONNECT_TIMEOUT_S)
                r = c.execute_command("KEEL.CLUSTER", "TRANSFER", to.name)
                c.close()
            except (redis.RedisError, OSError) as e:
                r = e
            if kind == "transfer-cut":
                self.net.cut([p for k in others if k != j for p in ((j, k), (k, j))] +
                             [(i, j), (j, i)])  # fmt: skip
            self._log(f"{kind} {nd.name} -> {to.name}: {r!r}"
                      f"{', then ' + to.name + ' cut off' if kind == 'transfer-cut' else ''}"
                      f" for {hold}s")  # fmt: skip
            time.sleep(hold)
            self.net.heal()
        elif kind == "replace":
            self._replace(nd, hold)
        elif kind == "lossy":
            self.net.lossy()
            self._log(f"lossy: {LOSS_PCT}% of peer packets dropped for {hold}s")
            time.sleep(hold)
            self.net.heal()
        elif kind == "one-way":
            others = [j for j in range(len(self.cl.nodes)) if j != i]
            j = others[pick % len(others)]
            self.net.cut([(i, j)])
            self._log(f"one-way: {nd.name} -> {self.cl.nodes[j].name} dropped for {hold}s")
            time.sleep(hold)
            self.net.heal()
        elif kind == "cut-off":
            self.net.isolate(i)
            self._log(f"cut-off {nd.name} from peers and clients for {hold}s")
            time.sleep(hold)
            self.net.heal()

    def _member_cmd(self, *args):
        """KEEL.CLUSTER args through any live node, retrying transient outcomes; returns the
        reply or the last error."""
        deadline, last = time.monotonic() + MEMBER_CHANGE_WAIT_S, None
        while time.monotonic() < deadline:
            for nd in self.cl.nodes:
                if not nd.alive() or nd.name in self.paused:
                    continue
                try:
                    c = nd.client(socket_timeout=8, socket_connect_timeout=CONNECT_TIMEOUT_S)
                    return c.execute_command("KEEL.CLUSTER", *args)
                except (redis.RedisError, OSError) as e:
                    last = e
                    if isinstance(e, redis.ResponseError) and "no such member" in str(e):
                        return e  # an earlier try with an unknown outcome took effect
            time.sleep(0.2)
        return last

    def _replace(self, old, hold):
        """Follower `old` is removed from the configuration and stopped; a node with a new
        name and an empty data directory joins (--join) in its place (same namespace,
        address and ports), as a learner promoted once caught up (docs/membership.md)."""
        r = self._member_cmd("REMOVE", old.name)
        if r != b"OK" and not (isinstance(r, redis.ResponseError) and "no such" in str(r)):
            self._log(f"replace {old.name}: REMOVE -> {r!r}; nothing replaced")
            return
        old.kill()
        if os.environ.get("KEEL_KEEP_DATA") != "1":  # as Cluster.teardown does for members
            shutil.rmtree(old.data_dir, ignore_errors=True)
        self.replaced += 1
        base = old.name.split("r")[0]
        new = Node(old.exe, f"{base}r{self.replaced}", os.path.dirname(old.dir), old.client_port,
                   old.peer_port, old.http_port)  # fmt: skip
        new.host, new.prefix, new.extra = old.host, old.prefix, list(old.extra)
        via = next(nd for nd in self.cl.nodes if nd is not old and nd.alive())
        new.join = f"{via.host}:{via.client_port}"
        self.cl.nodes[self.cl.nodes.index(old)] = new  # the clients' list too
        new.start(wait=False)
        new.wait_listening(timeout_s=RECOVER_WAIT_S)
        self._log(f"replace {old.name} by {new.name} (REMOVE, then --join via {via.name})")
        time.sleep(hold)

    def heal_all(self):
        """Heals the network, wakes paused nodes, restarts dead ones."""
        self.check_crashes()
        self.net.heal()
        for nd in self.cl.nodes:
            if nd.alive() and nd.name in self.paused:
                nd.proc.send_signal(signal.SIGCONT)
        self.paused.clear()
        for nd in self.cl.nodes:
            if not nd.alive():
                nd.start(wait=False)
        for nd in self.cl.nodes:
            nd.wait_listening(timeout_s=RECOVER_WAIT_S)
        self._log("heal all")


class Bench:
    """`keel bench kv --history` beside the Python load: many more GETs and SETs, pipelined,
    on keys of its own (k0..), so its history is checked on its own. It has no client
    timeout: a request to a cut-off node ends with the server's -TIMEOUT, or as "info" when
    the load ends."""

    def __init__(self, exe, base_dir, nodes, seed, duration_s):
        self.history = os.path.join(base_dir, "bench-history.jsonl")
        self.out_path = os.path.join(base_dir, "bench.out")
        args = [exe, "bench", "kv", "--duration", str(duration_s), "--connections", "4",
                "--pipeline", "2", "--keys", "20", "--value-bytes", "16", "--history",
                self.history, "--final-reads", "--quiet", "--seed", str(seed)]  # fmt: skip
        for nd in nodes:
            args += ["--addr", f"{nd.host}:{nd.client_port}"]
        with open(self.out_path, "wb") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)

    def wait(self, timeout_s=120):
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def output(self):
        with open(self.out_path) as f:
            return f.read()


SANITIZER_MARKS = ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer")


def sanitizer_reports(cl):
    """Lines of the nodes' logs (all their lives: logs are appended across restarts) where a
    sanitizer reported something, with the node's name."""
    out = []
    for nd in cl.nodes:
        try:
            with open(nd.log_path, errors="replace") as f:
                out += [f"{nd.name}: {line.rstrip()}" for line in f
                        if any(m in line for m in SANITIZER_MARKS)]  # fmt: skip
        except OSError:
            pass
    return out


def run(exe, build_dir, base_dir, mode, seed, n=3, duration_s=20.0, clients=6, keys=5, calm_s=3.0,
        extra=(), bench=False):  # fmt: skip
    """One nemesis run; returns a dict with the mode, faults, counts, history path and the
    lincheck verdict (and, with bench=True, the same for a `keel bench kv` load run beside).
    Network and processes are torn down before it returns or raises."""
    net = make_net(mode, n)
    cl = bn = None
    try:
        net.setup()
        cl = make_cluster(exe, base_dir, net, extra)
        cl.start()
        cl.wait_leader(timeout_s=RECOVER_WAIT_S)
        load = Load(cl.nodes, keys, clients, seed, duration_s + calm_s).start()
        if bench:
            bn = Bench(exe, base_dir, cl.nodes, seed, duration_s + calm_s)
        nem = Nemesis(cl, net, seed)
        try:
            nem.run(schedule(seed, n, net.mode), duration_s)
        finally:
            nem.heal_all()
        load.join()
        bench_exit = bn.wait() if bn is not None else None  # before the nodes are compared
        leader = cl.wait_leader(timeout_s=RECOVER_WAIT_S)
        load.final_reads()
        cl.wait_applied(cl.nodes, leader.status()["commit_index"], timeout_s=RECOVER_WAIT_S)
        revisions = {nd.name: nd.status()["revision"] for nd in cl.nodes}
        history = os.path.join(base_dir, "history.jsonl")
        load.history.write(history)
        verdict = run_lincheck(build_dir, history)
        nem.check_crashes()
        assert not nem.crashed, "nodes crashed during the run:\n" + "\n".join(nem.crashed)
        reports = sanitizer_reports(cl)
        assert not reports, "sanitizer reports in the node logs:\n" + "\n".join(reports)
        res = {
            "mode": net.mode, "seed": seed, "faults": nem.done, "counts": load.counts(),
            "unexpected": load.unexpected(), "history": history, "lincheck": verdict,
            "revisions": revisions,
        }  # fmt: skip
        if bn is not None:
            res["bench_exit"] = bench_exit
            res["bench_output"] = bn.output()
            res["bench_history"] = bn.history
            res["bench_lincheck"] = run_lincheck(build_dir, bn.history)
        return res
    finally:
        crashed = []
        if bn is not None and bn.proc.poll() is None:
            bn.proc.kill()
            bn.proc.wait()
        if cl is not None:
            crashed = cl.teardown()
        net.teardown()
        if crashed:
            raise AssertionError("; ".join(
                f"{nd.name} exited {nd.proc.returncode} during the run:\n{nd.log_tail()}"
                for nd in crashed))  # fmt: skip


def main(argv=None):
    """Many seeds from the command line (the soak the tests sample): one line per run,
    exit 1 if any run was not linearizable, disagreed, crashed or failed."""
    import argparse

    ap = argparse.ArgumentParser(description="kill, pause and partition keel server nodes "
                                 "under load; check every history with keel-lincheck")
    ap.add_argument("--build", default=os.environ.get("KEEL_BUILD", "build"))
    ap.add_argument("--mode", default="auto", choices=["auto", "netns", "relay"])
    ap.add_argument("--seeds", default="1..10", help="A..B (inclusive) or one seed")
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of faults per run")
    ap.add_argument("--bench", action="store_true", help="keel bench kv beside the load")
    ap.add_argument("--dir", default="/tmp/keel-nemesis-runs", help="runs' files go here")
    ap.add_argument("server_flags", nargs="*", help="after --: extra keel server flags")
    a = ap.parse_args(argv)
    lo, _, hi = a.seeds.partition("..")
    build = os.path.abspath(a.build)
    bad = 0
    for seed in range(int(lo), int(hi or lo) + 1):
        t0 = time.monotonic()
        d = os.path.join(a.dir, f"{a.mode}-{a.nodes}-{seed}")
        try:
            res = run(os.path.join(build, "keel"), build, d, a.mode, seed, n=a.nodes,
                      duration_s=a.duration, bench=a.bench, extra=a.server_flags)  # fmt: skip
            lcs = [res["lincheck"]] + ([res["bench_lincheck"]] if a.bench else [])
            agree = len(set(res["revisions"].values())) == 1
            ok = (all(lc["exit"] == 0 for lc in lcs) and not res["unexpected"] and agree and
                  res.get("bench_exit") in (0, None))  # fmt: skip
            verdict = "ok" if ok else "PROBLEM"
            detail = f"{len(res['faults']) - 1} faults, {sum(res['counts'].values())} ops"
            if not ok:
                detail += f"; lincheck {[lc['exit'] for lc in lcs]}, history {res['history']}, "
                detail += f"unexpected {res['unexpected'][:3]}, revisions {res['revisions']}"
        except Exception as e:  # a crash, a timeout: the run's files stay in d
            verdict, detail, res = "PROBLEM", repr(e)[:2000], {"mode": a.mode}
            ok = False
        bad += not ok
        print(f"seed {seed} {res['mode']} {a.nodes} nodes: {verdict} ({detail}) "
              f"{time.monotonic() - t0:.0f}s", flush=True)
    print(f"{bad} of the runs had a problem" if bad else "every run linearizable")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
