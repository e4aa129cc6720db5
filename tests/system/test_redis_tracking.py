"""test_redis_tracking.py - CLIENT TRACKING (client-side caching), against redis-server 7.0.

Scripts of commands over several connections run on keel and on a real redis-server; every
byte each connection receives (replies and invalidation pushes or messages) must match: the
default mode (a read key invalidated once, then forgotten), BCAST with and without prefixes,
OPTIN and OPTOUT with CLIENT CACHING, REDIRECT to a RESP2 subscriber of
__redis__:invalidate, the option errors, TRACKINGINFO and GETREDIR. Then what only keel has:
a tracker on one node told about a write made through another (src/server/tracking.c).
"""

import time

from keelcluster import RespConn, make_cluster, redis_server  # noqa: F401 (fixtures)

# A script: (connection, command). The command "READ" reads one more message (a push or a
# pub/sub message) without sending anything; "HELLO 3" and "CLIENT ID" replies are not
# compared (server names and ids differ), "REDIRECT {0}" takes connection 0's id.
SCRIPTS = {
    "default_mode": [
        (0, ["HELLO", "3"]), (0, ["CLIENT", "TRACKING", "on"]), (0, ["GET", "a"]),
        (0, ["MGET", "b", "c"]), (1, ["SET", "a", "1"]), (0, ["READ"]),
        (1, ["SET", "a", "2"]),  # forgotten after one invalidation: nothing more for a
        (0, ["PING"]), (1, ["MSET", "b", "1", "c", "2"]), (0, ["READ"]), (0, ["READ"]),
        (0, ["GET", "a"]), (1, ["DEL", "a"]), (0, ["READ"]), (0, ["SET", "a", "self"]),
        (0, ["GET", "a"]), (0, ["SET", "a", "own"]), (0, ["READ"]),  # its own write too
        (0, ["CLIENT", "TRACKING", "off"]), (0, ["GET", "a"]), (1, ["SET", "a", "3"]), (0, ["PING"]),
    ],
    "bcast": [
        (0, ["HELLO", "3"]), (0, ["CLIENT", "TRACKING", "on", "BCAST", "PREFIX", "user:", "PREFIX", "cart:"]),
        (1, ["SET", "user:1", "x"]), (0, ["READ"]), (1, ["SET", "other", "x"]),
        (1, ["INCR", "cart:9"]), (0, ["READ"]), (1, ["SET", "user:1", "y"]), (0, ["READ"]),
        (0, ["CLIENT", "TRACKINGINFO"]),
        (0, ["CLIENT", "TRACKING", "on", "BCAST"]), (1, ["SET", "zzz", "1"]), (0, ["READ"]),
    ],
    "optin_optout": [
        (0, ["HELLO", "3"]), (0, ["CLIENT", "TRACKING", "on", "OPTIN"]), (0, ["GET", "a"]),
        (0, ["CLIENT", "CACHING", "yes"]), (0, ["CLIENT", "TRACKINGINFO"]), (0, ["GET", "b"]),
        (1, ["SET", "a", "1"]), (1, ["SET", "b", "1"]), (0, ["READ"]),
        (0, ["CLIENT", "CACHING", "no"]), (0, ["CLIENT", "TRACKING", "on", "OPTOUT"]),
        (0, ["CLIENT", "TRACKING", "off"]),
        (0, ["CLIENT", "TRACKING", "on", "OPTOUT"]), (0, ["CLIENT", "CACHING", "no"]),
        (0, ["GET", "c"]), (0, ["GET", "d"]), (1, ["SET", "c", "1"]), (1, ["SET", "d", "1"]),
        (0, ["READ"]), (0, ["CLIENT", "CACHING", "yes"]), (0, ["PING"]),
    ],
    "redirect_resp2": [
        (1, ["SUBSCRIBE", "__redis__:invalidate"]),
        (0, ["CLIENT", "TRACKING", "on", "REDIRECT", "{1}"]), (0, ["CLIENT", "GETREDIR"]),
        (0, ["GET", "k"]), (2, ["SET", "k", "v"]), (1, ["READ"]),
        (0, ["CLIENT", "TRACKING", "on", "BCAST", "REDIRECT", "{1}"]),  # a switch: refused
        (0, ["CLIENT", "TRACKING", "off"]),
        (0, ["CLIENT", "TRACKING", "on", "BCAST", "REDIRECT", "{1}"]), (2, ["SET", "q", "v"]),
        (1, ["READ"]),
    ],
    "errors": [
        (0, ["CLIENT", "TRACKING"]), (0, ["CLIENT", "TRACKING", "maybe"]),
        (0, ["CLIENT", "TRACKING", "on", "PREFIX", "a"]),
        (0, ["CLIENT", "TRACKING", "on", "BCAST", "PREFIX", "a", "PREFIX", "ab"]),
        (0, ["CLIENT", "TRACKING", "on", "OPTIN", "OPTOUT"]),
        (0, ["CLIENT", "TRACKING", "on", "BCAST", "OPTIN"]),
        (0, ["CLIENT", "TRACKING", "on", "REDIRECT", "987654"]),
        (0, ["CLIENT", "TRACKING", "on", "REDIRECT", "x"]),
        (0, ["CLIENT", "TRACKING", "on", "BOGUS"]), (0, ["CLIENT", "CACHING", "yes"]),
        (0, ["CLIENT", "CACHING", "maybe"]), (0, ["CLIENT", "GETREDIR"]),
        (0, ["CLIENT", "TRACKINGINFO"]), (0, ["CLIENT", "TRACKING", "on", "OPTIN"]),
        (0, ["CLIENT", "CACHING", "no"]), (0, ["CLIENT", "CACHING", "maybe"]),
        (0, ["CLIENT", "TRACKINGINFO"]), (0, ["CLIENT", "TRACKING", "off", "BCAST"]),
        (0, ["CLIENT", "TRACKINGINFO"]), (0, ["CLIENT", "TRACKING", "on", "REDIRECT", "0"]),
        (0, ["CLIENT", "TRACKING", "on", "BCAST", "PREFIX", "ab", "PREFIX", "a"]),
        (0, ["CLIENT", "TRACKING", "on", "BCAST", "PREFIX", "b"]),
        (0, ["CLIENT", "TRACKING", "on", "BCAST", "PREFIX", "bc"]),
        (0, ["CLIENT", "TRACKING", "on", "BCAST", "PREFIX", "c", "PREFIX", "d"]),
        (0, ["CLIENT", "TRACKING", "on", "BCAST"]), (0, ["CLIENT", "TRACKINGINFO"]),
        (0, ["CLIENT", "TRACKING", "on", "BCAST", "PREFIX", "e"]),
        (0, ["CLIENT", "TRACKING", "on"]), (0, ["CLIENT", "TRACKING", "off"]),
        (0, ["CLIENT", "TRACKING", "on", "OPTIN"]), (0, ["CLIENT", "TRACKING", "on", "OPTOUT"]),
        (0, ["CLIENT", "TRACKING", "on"]), (0, ["CLIENT", "TRACKINGINFO"]),
    ],
}


def run_script(ports, script):
    """Each connection's received messages, in order; ports[i] serves connection i."""
    n = 1 + max(i for i, _ in script)
    conns = [RespConn(ports[i % len(ports)]) for i in range(n)]
    ids = [int(c.call("CLIENT", "ID")[1:-2]) for c in conns]
    got = [[] for _ in range(n)]
    try:
        conns[0].call("FLUSHALL")
        for i, cmd in script:
            c = conns[i]
            if cmd == ["READ"]:
                got[i].append(c.reply())
                continue
            cmd = [a.format(*ids) for a in cmd]
            r = c.call(*cmd)
            for j, cid in enumerate(ids):  # connection ids differ between servers
                r = r.replace(b":%d\r\n" % cid, b":<id%d>\r\n" % j)
            got[i].append(b"<hello>" if cmd[0] == "HELLO" else r)
            time.sleep(0.01)  # a write on another node reaches its trackers as it applies
    finally:
        for c in conns:
            c.close()
    return got


def test_tracking_scripts_like_redis(make_cluster, redis_server):
    node = make_cluster(1).nodes[0]
    for name, script in SCRIPTS.items():
        keel = run_script([node.client_port], script)
        real = run_script([redis_server.port], script)
        assert keel == real, f"{name}:\nkeel  {keel}\nredis {real}"


def test_a_tracker_hears_a_write_made_through_another_node(make_cluster):
    cl = make_cluster(3)
    leader = cl.wait_leader()
    f1, f2 = cl.followers(leader)
    for name, script in (("default_mode", SCRIPTS["default_mode"]), ("bcast", SCRIPTS["bcast"])):
        # connection 0 tracks on one follower, the writer is on the other follower
        got = run_script([f1.client_port, f2.client_port], script)
        single = run_script([leader.client_port], script)
        assert got == single, f"{name}: across nodes {got}\none node {single}"
    # RESP2 with REDIRECT: the subscriber on a third node is not this node's connection
    c = RespConn(f1.client_port)
    try:
        assert c.call("CLIENT", "TRACKING", "on", "REDIRECT", "999999").startswith(b"-ERR The client")
    finally:
        c.close()


def test_many_trackers_of_one_key_are_each_told_once(make_cluster):
    node = make_cluster(1).nodes[0]
    trackers = []
    try:
        for _ in range(50):
            c = RespConn(node.client_port)
            c.call("HELLO", "3")
            assert c.call("CLIENT", "TRACKING", "on") == b"+OK\r\n"
            c.call("GET", "hot")
            trackers.append(c)
        w = RespConn(node.client_port)
        w.call("SET", "hot", "1")
        w.call("SET", "hot", "2")
        w.close()
        for c in trackers:
            assert c.reply() == b">2\r\n$10\r\ninvalidate\r\n*1\r\n$3\r\nhot\r\n"
            assert c.call("PING") == b"+PONG\r\n"  # one invalidation, not two
    finally:
        for c in trackers:
            c.close()
