"""test_ap_move.py - the AP keyspace moves only the keys a membership change gave a new home
(docs/ap.md, "Moving keys when the membership changes"): a node joins a 3-node cluster, or
leaves a 4-node one, under writes; every acknowledged key reads back with its value at
R=QUORUM once the move is done, and the share of key copies that moved is about 1/nodes.
A leaving node hands the writes only it acknowledged to their homes before it is stopped
(docs/ap.md, "A leaving node").
"""

import random
import subprocess
import threading
import time

import redis

from conftest import binary
from keelcluster import http_get, make_cluster  # noqa: F401 (fixture)

MOVE_BOUND_S = 90.0  # handoff delivers 256 keys per 0.5 s per node; the box is shared
# the leaver's keys: 3 move hints each at 256 per 0.5 s take longer than the 6 s a peer keeps
# its connection to a removed node by itself (request timeout + 1 s): the leaver's handoff
# must keep it open
LEAVER_KEYS = 2000
AE_SETTLE_S = 3.0  # writes coordinated on the old ring during the change: anti-entropy's


def ap(c, *args):
    return c.execute_command(*args)


def metric(node, name):
    status, body, _ = http_get(node.http_port, "/metrics")
    assert status == 200
    for line in body.decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.split()[-1])
    return 0.0


def eventually(fn, timeout_s=30.0, what="condition"):
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if fn():
                return
        except (redis.ResponseError, redis.ConnectionError, redis.TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout_s}s")
        time.sleep(0.1)


def ap_status(node):
    """KEEL.AP.STATUS: [b"leaving", 0|1, b"drained", 0|1, b"move_pending", n, ...]."""
    return node.client(socket_timeout=5).execute_command("KEEL.AP.STATUS")


def members(node):
    got = node.client(socket_timeout=5).execute_command("KEEL.CLUSTER", "MEMBERS")
    return {m[0].decode(): m[3].decode() for m in got}


def remove(nodes, name, timeout_s=30.0):
    """KEEL.CLUSTER REMOVE name, retried through nodes until the member is gone (a leader
    change may leave an attempt's outcome unknown)."""
    deadline = time.monotonic() + timeout_s
    while name in members(nodes[0]):
        assert time.monotonic() < deadline, f"{name} not removed in {timeout_s}s"
        for nd in nodes:
            try:
                nd.client(socket_timeout=10).execute_command("KEEL.CLUSTER", "REMOVE", name)
                break
            except (redis.ResponseError, redis.ConnectionError, redis.TimeoutError):
                time.sleep(0.2)
        for _ in range(50):  # up to 5 s for this attempt to show
            if name not in members(nodes[0]):
                break
            time.sleep(0.1)


def homes_of(c, keys):
    p = c.pipeline(transaction=False)
    for k in keys:
        p.execute_command("KEEL.AP.WHERE", k)
    return {k: {h.decode() for h in r[0]} for k, r in zip(keys, p.execute())}


def connected(nodes):
    """Every node reaches the homes of 20 keys (whose home sets cover every pair)."""
    for nd in nodes:
        c = nd.client()
        for i in range(20):
            eventually(
                lambda c=c, i=i: ap(c, "KEEL.AP.GET", f"warm{i}", "R", "ALL")[0] == 3,
                what="peers connected",
            )


def preload(cl, n, prefix):
    """n keys written at W=ALL through every node in turn (pipelined); {key: value}."""
    connected(cl.nodes)
    want = {f"{prefix}{i}": f"v{i}" for i in range(n)}
    items = list(want.items())
    cs = [nd.client(socket_timeout=30) for nd in cl.nodes]
    for j in range(0, len(items), 16):  # small pipelines: each write waits for 3 fdatasyncs
        p = cs[j // 16 % len(cs)].pipeline(transaction=False)
        for k, v in items[j : j + 16]:
            p.execute_command("KEEL.AP.PUT", k, v, "W", "ALL")
        assert all(r == 3 for r in p.execute())
    return want


class Writer:
    """Writes fresh keys at W=QUORUM through random nodes; remembers the acknowledged ones."""

    def __init__(self, nodes, prefix):
        self.nodes, self.prefix = nodes, prefix
        self.acked, self.failed, self.lat_ms = {}, 0, []
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)

    def run(self):
        rnd = random.Random(7)
        clients = [nd.client(socket_timeout=5) for nd in self.nodes]
        i = 0
        while not self.stop.is_set() and i < 100000:
            k, v = f"{self.prefix}{i}", f"w{i}"
            i += 1
            t0 = time.monotonic()
            try:
                r = ap(rnd.choice(clients), "KEEL.AP.PUT", k, v, "W", "QUORUM")
                if r >= 2:
                    self.acked[k] = v
                    self.lat_ms.append((time.monotonic() - t0) * 1000)
            except (redis.ResponseError, redis.ConnectionError, redis.TimeoutError):
                self.failed += 1

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.t.join(timeout=30)


def wait_moved(nodes, senders):
    """Every sender finished its walk for the new ring and every hint is delivered."""
    eventually(
        lambda: all(metric(nd, "keel_ap_move_rings_total") >= 1 for nd in senders)
        and all(metric(nd, "keel_ap_move_pending") == 0 for nd in nodes)
        and sum(metric(nd, "keel_ap_hints_pending") for nd in nodes) == 0,
        timeout_s=MOVE_BOUND_S,
        what="the move",
    )


def check_all(nodes, want):
    """Every key reads back at R=QUORUM, through the nodes in turn, with its value."""
    clients = [nd.client(socket_timeout=10) for nd in nodes]
    keys = sorted(want)
    bad = []
    for j, c in enumerate(clients):
        part = keys[j :: len(clients)]
        p = c.pipeline(transaction=False)
        for k in part:
            p.execute_command("KEEL.AP.GET", k, "R", "QUORUM")
        for k, r in zip(part, p.execute(raise_on_error=False)):
            if isinstance(r, Exception) or r[2:] != [want[k].encode()]:
                bad.append((k, r))
    assert not bad, f"{len(bad)} of {len(keys)} acknowledged keys wrong: {bad[:5]}"


def moved_share(before, after):
    """Share of the (key, home) pairs that are new: the copies that had to move."""
    gained = sum(len(after[k] - before[k]) for k in before)
    return gained / (3 * len(before)), gained


def test_a_fourth_node_joins_under_writes_and_gets_only_its_share(make_cluster):
    cl = make_cluster(3)
    olds = list(cl.nodes)
    want = preload(cl, 900, "p")
    before = homes_of(olds[0].client(), list(want))
    with Writer(olds, "w") as w:
        time.sleep(1.0)
        n4 = cl.new_node("n4", join=f"127.0.0.1:{olds[1].client_port}")
        n4.start()
        eventually(lambda: members(olds[0]).get("n4") == "voter", what="n4 a voter")
        time.sleep(1.0)
    wait_moved(cl.nodes, olds)
    time.sleep(AE_SETTLE_S)
    acked = dict(want, **w.acked)
    assert len(w.acked) > 20, (len(w.acked), w.failed)
    check_all(cl.nodes, acked)
    after = homes_of(n4.client(), list(want))
    share, gained = moved_share(before, after)
    assert all(after[k] - before[k] <= {"n4"} for k in want)  # only n4 gained anything
    assert 0.18 <= share <= 0.32, share  # 1/4 of the copies (3 homes per key, n4 one of 4)
    held = metric(n4, "keel_ap_keys")
    mine = sum("n4" in h for h in homes_of(n4.client(), list(acked)).values())
    # n4 holds the keys it is a home of, and of the others at most the writer's that it
    # stood in for while a home was slow (the box is shared)
    assert mine <= held <= mine + len(w.acked), (held, mine)
    sent = sum(metric(nd, "keel_ap_move_keys_total") for nd in olds)
    assert gained <= sent <= 3 * len(acked), (gained, sent)
    assert metric(n4, "keel_ap_move_keys_total") == 0  # it held no key it lost
    lat = sorted(w.lat_ms)
    print(
        f"join 3->4: {gained} of {3 * len(want)} copies moved ({share:.3f}), {sent:.0f} move "
        f"hints sent, {len(w.acked)} writes acknowledged during it ({w.failed} failed), "
        f"write p99 {lat[int(0.99 * (len(lat) - 1))]:.1f} ms max {lat[-1]:.1f} ms"
    )


def test_a_node_leaves_under_writes_and_only_its_keys_move(make_cluster):
    cl = make_cluster(4)
    want = preload(cl, 900, "p")
    n1, n2, n3, n4 = cl.nodes
    stay = [n1, n2, n3]
    before = homes_of(n1.client(), list(want))
    with Writer(stay, "w") as w:
        time.sleep(1.0)
        cl.wait_leader()
        remove(stay, "n4")
        n4.kill()  # the leaver pushes nothing: the others' copies move
        time.sleep(1.0)
    wait_moved(stay, stay)
    time.sleep(AE_SETTLE_S)
    acked = dict(want, **w.acked)
    assert len(w.acked) > 20, (len(w.acked), w.failed)
    check_all(stay, acked)
    after = homes_of(n1.client(), list(want))
    share, gained = moved_share(before, after)
    assert all(after[k] == {"n1", "n2", "n3"} for k in want)
    assert 0.18 <= share <= 0.32, share  # n4's quarter of the copies
    assert all(metric(nd, "keel_ap_keys") >= len(acked) for nd in stay)
    sent = sum(metric(nd, "keel_ap_move_keys_total") for nd in stay)
    # each from the 2 homes that stay; the writer's keys written before the removal move too
    assert gained <= sent <= 2 * (gained + len(w.acked)), (gained, sent, len(w.acked))
    print(
        f"leave 4->3: {gained} of {3 * len(want)} copies moved ({share:.3f}), {sent:.0f} move "
        f"hints sent, {len(w.acked)} writes acknowledged during it ({w.failed} failed)"
    )


def test_a_restarted_node_resumes_from_the_ring_it_recorded(make_cluster):
    """The ring moved for is in the store: a restart with the same ring moves nothing."""
    cl = make_cluster(3)
    preload(cl, 50, "r")
    eventually(lambda: metric(cl.nodes[0], "keel_ap_keys") == 50)
    nd = cl.nodes[0]
    nd.kill()
    nd.start()
    eventually(lambda: metric(nd, "keel_ap_keys") == 50)
    time.sleep(1.5)  # a few anti-entropy rounds: the ring is refreshed
    assert metric(nd, "keel_ap_move_keys_total") == 0
    assert metric(nd, "keel_ap_move_pending") == 0


def test_a_leaving_node_hands_the_writes_only_it_holds_to_their_homes_before_it_stops(
    make_cluster,
):
    """Anti-entropy is off (--ap-antientropy-ms 0), so nothing but the leaver's own push and
    its hints can bring its W=1 writes to the nodes that stay (without the push they are lost:
    docs/ap.md)."""
    cl = make_cluster(4, "--ap-antientropy-ms", "0")
    n1, n2, n3, n4 = cl.nodes
    stay = [n1, n2, n3]
    connected(cl.nodes)
    for nd in stay:
        nd.kill()
    # n4 alone: it stores each write as a home, or as the stand-in of one (the first fallback
    # of every key on 4 nodes), and acknowledges it at W=1; no other node has it
    keys = [f"only{i}" for i in range(LEAVER_KEYS)]
    p = n4.client(socket_timeout=30).pipeline(transaction=False)
    for k in keys:
        p.execute_command("KEEL.AP.PUT", k, "v" + k, "W", "1")
    got = p.execute(raise_on_error=False)
    want = {k: "v" + k for k, r in zip(keys, got) if r == 1}
    assert len(want) == len(keys), [r for r in got if r != 1][:3]
    assert ap_status(n4)[:4] == [b"leaving", 0, b"drained", 0]
    for nd in stay:
        nd.start()
    cl.wait_leader()
    # `keel member remove n4 --wait-ap-drain`: the removal, then n4's KEEL.AP.STATUS until
    # it says drained 1 (a leader change may fail an attempt: tried again)
    t0 = time.monotonic()
    for attempt in range(5):
        r = subprocess.run(
            [binary("keel"), "member", "remove", "n4", "--wait-ap-drain", str(int(MOVE_BOUND_S)),
             "--addr", f"127.0.0.1:{stay[attempt % 3].client_port}"],
            capture_output=True, timeout=MOVE_BOUND_S + 30,
        )  # fmt: skip
        if r.returncode == 0 or "n4" not in members(n1):
            break
        time.sleep(1.0)
    drain_s = time.monotonic() - t0
    assert r.returncode == 0 and b"n4 drained" in r.stdout, (r.stdout, r.stderr)
    assert "n4" not in members(n1)
    st = ap_status(n4)
    assert st[:4] == [b"leaving", 1, b"drained", 1], st
    # the gauges follow on the AP tick (the status above is computed when asked)
    eventually(lambda: metric(n4, "keel_ap_leaving") == 1 and metric(n4, "keel_ap_drained") == 1,
               5.0, "the leaving and drained gauges")
    assert metric(n4, "keel_ap_hints_pending") == 0 and metric(n4, "keel_ap_move_pending") == 0
    queued = metric(n4, "keel_ap_move_keys_total")
    # every key, to each of its 3 homes on n1..n3 (a hint it held as a stand-in and not yet
    # delivered is renewed, not queued again)
    assert 2 * len(want) <= queued <= 3 * len(want), queued
    n4.stop()
    check_all(stay, want)
    for nd in stay:  # each of the 3 homes holds every key: the leaver pushed to all of them
        assert metric(nd, "keel_ap_keys") == len(want), nd.name
    print(
        f"leaver: {len(want)} W=1 keys only it held, {queued:.0f} move hints, removed and "
        f"drained in {drain_s:.1f} s"
    )


def test_a_hint_for_a_removed_member_goes_to_the_keys_homes_instead(make_cluster):
    """n3 is down while writes at W=ALL reach their stand-ins (hints for n3), then removed
    for good: the stand-ins hand those keys to the homes the keys have now, and no hint stays
    pending."""
    cl = make_cluster(4)
    n1, n2, n3, n4 = cl.nodes
    stay = [n1, n2, n4]
    connected(cl.nodes)
    n3.kill()
    keys = [f"h{i}" for i in range(200)]
    p = n1.client(socket_timeout=30).pipeline(transaction=False)
    for k in keys:
        p.execute_command("KEEL.AP.PUT", k, "v" + k, "W", "ALL")
    got = p.execute(raise_on_error=False)
    want = {k: "v" + k for k, r in zip(keys, got) if r == 3}
    assert len(want) == len(keys), [r for r in got if r != 3][:3]
    time.sleep(0.2)  # the gauge is set every 20 ms tick; the last stand-ins just stored theirs
    held = sum(metric(nd, "keel_ap_hints_pending") for nd in stay)
    assert held > 0  # the keys n3 is a home of, on their stand-ins
    cl.wait_leader(among=stay)
    remove(stay, "n3")
    eventually(
        lambda: sum(metric(nd, "keel_ap_hints_pending") for nd in stay) == 0,
        timeout_s=MOVE_BOUND_S,
        what="no hint pending",
    )
    retargeted = sum(metric(nd, "keel_ap_hints_retargeted_total") for nd in stay)
    assert retargeted == held, (retargeted, held)
    check_all(stay, want)
    print(f"removed home: {held:.0f} hints for it retargeted to the keys' homes now")


def test_the_old_homes_drop_the_copies_they_lost_once_every_new_home_holds_them(make_cluster):
    """docs/ap.md, "Dropping the copies of keys a node is no longer a home of": after n4 joins,
    each old node holds exactly the keys it is still a home of (those it coordinated, whose
    states hold its own dots, go too, leaving their hashes behind), and every key still reads
    back at R=ALL."""
    cl = make_cluster(3)
    olds = list(cl.nodes)
    connected(olds)
    cs = [nd.client(socket_timeout=30) for nd in olds]
    want, coord = {}, {}
    keys = [f"d{i}" for i in range(900)]
    for j in range(0, len(keys), 16):
        x = j // 16 % 3
        p = cs[x].pipeline(transaction=False)
        for k in keys[j : j + 16]:
            want[k], coord[k] = f"v{k}", olds[x].name
            p.execute_command("KEEL.AP.PUT", k, want[k], "W", "ALL")
        assert all(r == 3 for r in p.execute())
    eventually(lambda: all(metric(nd, "keel_ap_keys") == len(keys) for nd in olds))
    n4 = cl.new_node("n4", join=f"127.0.0.1:{olds[1].client_port}")
    n4.start()
    eventually(lambda: members(olds[0]).get("n4") == "voter", what="n4 a voter")
    wait_moved(cl.nodes, olds)
    homes = homes_of(n4.client(), keys)
    expect = {nd.name: sum(nd.name in homes[k] for k in keys) for nd in cl.nodes}
    own = {nd.name: sum(nd.name not in homes[k] and coord[k] == nd.name for k in keys) for nd in olds}
    lost = {nd.name: sum(nd.name not in homes[k] for k in keys) for nd in olds}
    eventually(
        lambda: all(metric(nd, "keel_ap_keys") == expect[nd.name] for nd in cl.nodes)
        and all(metric(nd, "keel_ap_drop_pending") == 0 for nd in olds),
        timeout_s=MOVE_BOUND_S,
        what="the old homes' drops",
    )
    for nd in olds:
        dropped = metric(nd, "keel_ap_keys_dropped_total")
        assert dropped == len(keys) - expect[nd.name] > 0, (nd.name, dropped, expect)
    assert metric(n4, "keel_ap_keys_dropped_total") == 0
    for nd in olds:  # each let go of copies of its own writes; no new actor until it needs one
        assert own[nd.name] > 0, nd.name
        assert metric(nd, "keel_ap_dropped_own_keys") == own[nd.name], nd.name
        assert metric(nd, "keel_ap_actor_renewals_total") == 0, nd.name
    bad = []
    for j, nd in enumerate(cl.nodes):
        part = keys[j :: len(cl.nodes)]
        p = nd.client(socket_timeout=10).pipeline(transaction=False)
        for k in part:
            p.execute_command("KEEL.AP.GET", k, "R", "ALL")
        for k, r in zip(part, p.execute(raise_on_error=False)):
            if isinstance(r, Exception) or r[0] != 3 or r[2:] != [want[k].encode()]:
                bad.append((k, r))
    assert not bad, f"{len(bad)} of {len(keys)} keys wrong at R=ALL: {bad[:5]}"
    print(
        "join 3->4, keys held before 900 each, after (lost homeship / dropped): "
        + ", ".join(
            f"{nd.name} {expect[nd.name]} ({lost[nd.name]} / "
            f"{metric(nd, 'keel_ap_keys_dropped_total'):.0f})"
            for nd in olds
        )
        + f", n4 {expect['n4']}"
    )
    # The node that dropped a key holding its own dots may coordinate that key again (here: its
    # homes are all down, so it cannot forward) with no state for it. Under its old actor it
    # would issue dot 1 again, a dot the homes have seen, and they would take the new write for
    # one they already had: lost. So it takes a new actor first, and the write is a new sibling
    # beside the old value.
    x = olds[0]
    k = next(k for k in keys if coord[k] == x.name and x.name not in homes[k])
    down = [cl.node(h) for h in homes[k]]
    for nd in down:
        nd.kill()
    time.sleep(1.0)  # x's connections to them are closed: no home can be sent to
    assert ap(x.client(), "KEEL.AP.PUT", k, "again", "W", "ONE") == 1
    assert metric(x, "keel_ap_actor_renewals_total") == 1
    for nd in down:
        nd.start()
    for nd in down:
        eventually(
            lambda nd=nd: sorted(ap(nd.client(), "KEEL.AP.GET", k, "R", "ONE")[2:])
            == sorted([want[k].encode(), b"again"]),
            timeout_s=MOVE_BOUND_S,
            what=f"both writes of {k} on {nd.name}",
        )
