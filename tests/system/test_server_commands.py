"""test_server_commands.py - keel server's command replies, byte for byte against redis-server.

The evidence is a table: every command sequence runs on a one-node keel
server and on a real redis-server 7.0 (started on a free port, no
persistence), and the raw RESP replies must be identical. Differences keel
owns on purpose (SELECT 1, INFO, COMMAND, KEEL.*) are tested on their own.
"""

import time

import pytest
import redis

import rowdiff
from keelcluster import RespConn, make_cluster, redis_server, resp_command  # noqa: F401 (fixtures)

I64_MAX = 9223372036854775807
I64_MIN = -9223372036854775808

# Each row: a name and the commands it sends, in order, on one connection. Keys are
# prefixed per row so rows do not interfere; both servers start empty.
SAME_AS_REDIS = [
    ("ping", [["PING"], ["PING", "hello"], ["ping"], ["PING", "a", "b"]]),
    ("echo", [["ECHO", "x"], ["ECHO", ""], ["ECHO", b"\x00\xff\r\n"], ["ECHO"], ["ECHO", "a", "b"]]),
    ("get_set", [["GET", "gs:k"], ["SET", "gs:k", "v"], ["GET", "gs:k"], ["SET", "gs:k", ""],
                 ["GET", "gs:k"], ["SET", "gs:b", b"\x00\r\n\xff"], ["GET", "gs:b"]]),
    ("set_nx", [["SET", "nx:k", "1", "NX"], ["SET", "nx:k", "2", "NX"], ["GET", "nx:k"],
                ["SET", "nx:k", "3", "nx"]]),
    ("set_xx", [["SET", "xx:k", "1", "XX"], ["GET", "xx:k"], ["SET", "xx:k", "0"],
                ["SET", "xx:k", "2", "XX"], ["GET", "xx:k"]]),
    ("set_get", [["SET", "sg:k", "1", "GET"], ["SET", "sg:k", "2", "GET"], ["GET", "sg:k"],
                 ["SET", "sg:k", "3", "NX", "GET"], ["SET", "sg:k", "4", "XX", "GET"],
                 ["SET", "sg:m", "5", "XX", "GET"], ["GET", "sg:m"], ["SET", "sg:n", "6", "NX", "GET"]]),
    ("set_syntax", [["SET", "sx:k", "v", "NX", "XX"], ["SET", "sx:k", "v", "XX", "NX"],
                    ["SET", "sx:k", "v", "BOGUS"], ["SET", "sx:k", "v", "EX", "abc"],
                    ["SET", "sx:k", "v", "EX", "0"], ["SET", "sx:k", "v", "EX"], ["SET", "sx:k"],
                    ["EXISTS", "sx:k"]]),
    ("getset", [["GETSET", "gt:k", "1"], ["GETSET", "gt:k", "2"], ["GET", "gt:k"], ["GETSET", "gt:k"]]),
    ("del_exists", [["MSET", "de:a", "1", "de:b", "2"], ["EXISTS", "de:a", "de:a", "de:b", "de:c"],
                    ["DEL", "de:a", "de:c", "de:a"], ["EXISTS", "de:a", "de:b"], ["DEL", "de:zz"],
                    ["DEL"], ["EXISTS"]]),
    ("incr_decr", [["INCR", "id:k"], ["INCR", "id:k"], ["INCRBY", "id:k", "10"], ["DECR", "id:k"],
                   ["DECRBY", "id:k", "5"], ["INCRBY", "id:k", "-100"], ["DECRBY", "id:k", "-3"],
                   ["GET", "id:k"], ["DECR", "id:new"], ["INCRBY", "id:n2", "0"]]),
    ("incr_overflow", [["SET", "io:k", str(I64_MAX)], ["INCR", "io:k"], ["INCRBY", "io:k", "1"],
                       ["GET", "io:k"], ["SET", "io:m", str(I64_MIN)], ["DECR", "io:m"],
                       ["DECRBY", "io:m", "1"], ["INCRBY", "io:m", str(I64_MIN)],
                       ["INCRBY", "io:z", str(I64_MAX)], ["INCRBY", "io:z", str(I64_MAX)],
                       ["DECRBY", "io:d", str(I64_MIN)], ["INCRBY", "io:e", str(I64_MIN)],
                       ["SET", "io:m1", str(-1)], ["DECRBY", "io:m1", str(I64_MAX)],
                       ["DECRBY", "io:m1", "1"], ["DECR", "io:m1"]]),
    ("incr_not_integer", [["SET", "ni:a", "abc"], ["INCR", "ni:a"], ["SET", "ni:b", "1.5"],
                          ["INCR", "ni:b"], ["SET", "ni:c", " 1"], ["INCR", "ni:c"],
                          ["SET", "ni:d", "+1"], ["INCR", "ni:d"], ["SET", "ni:e", "01"],
                          ["INCR", "ni:e"], ["SET", "ni:f", "9223372036854775808"], ["INCR", "ni:f"],
                          ["SET", "ni:g", ""], ["DECR", "ni:g"], ["SET", "ni:h", "-0"], ["INCR", "ni:h"],
                          ["INCRBY", "ni:x", "abc"], ["INCRBY", "ni:x", "1.0"], ["DECRBY", "ni:x", ""],
                          ["INCRBY", "ni:x", "99999999999999999999"], ["GET", "ni:a"], ["EXISTS", "ni:x"]]),
    ("append_strlen", [["APPEND", "as:k", "ab"], ["APPEND", "as:k", "cde"], ["GET", "as:k"],
                       ["STRLEN", "as:k"], ["STRLEN", "as:none"], ["APPEND", "as:k", ""],
                       ["SET", "as:n", "12"], ["APPEND", "as:n", "3"], ["INCR", "as:n"]]),
    ("mget_mset", [["MSET", "mm:a", "1", "mm:b", "2", "mm:a", "3"], ["MGET", "mm:a", "mm:b", "mm:c"],
                   ["MSET", "mm:a"], ["MSET", "mm:a", "1", "mm:b"], ["MGET"], ["MGET", "mm:none"]]),
    ("client_name", [["CLIENT", "GETNAME"], ["CLIENT", "SETNAME", "worker-1"], ["CLIENT", "GETNAME"],
                     ["CLIENT", "SETNAME", "has space"], ["CLIENT", "GETNAME"]]),
    ("select_0", [["SELECT", "0"], ["SELECT"]]),
    ("unknown_and_arity", [["NOSUCHCMD"], ["NOSUCHCMD", "a", "b"], ["GET"], ["GET", "a", "b"],
                           ["SET", "a"], ["STRLEN"], ["INCR"], ["INCRBY", "a"], ["DECRBY", "a"],
                           ["GETSET", "a"], ["APPEND", "a"], ["DBSIZE", "x"]]),
    ("case_insensitive", [["set", "ci:k", "v"], ["gEt", "ci:k"], ["Exists", "ci:k"]]),
    ("dbsize", [["MSET", "db:1", "a", "db:2", "b", "db:3", "c"], ["DEL", "db:2"], ["DBSIZE"]]),
    # MULTI: an unknown command aborts the transaction like a wrong arity does
    ("multi_unknown_aborts", [["MULTI"], ["SET", "mu:a", "1"], ["NOSUCH", "x"], ["SET", "mu:b", "2"],
                              ["EXEC"], ["EXISTS", "mu:a", "mu:b"]]),
    ("multi_arity_aborts", [["MULTI"], ["SET", "ma:a"], ["SET", "ma:b", "2"], ["EXEC"],
                            ["EXISTS", "ma:b"]]),
    # MULTI: connection commands are queued and run inside EXEC, in their places
    ("multi_queues_everything", [["MULTI"], ["PING"], ["ECHO", "x"], ["SET", "mq:a", "1"],
                                 ["SELECT", "0"], ["CLIENT", "SETNAME", "mq-client"],
                                 ["GET", "mq:a"], ["PUBLISH", "mq:ch", "m"], ["PING", "hi"],
                                 ["INCR", "mq:a"], ["EXEC"], ["CLIENT", "GETNAME"]]),
    ("multi_only_connection_commands", [["MULTI"], ["PING"], ["ECHO", "e"], ["EXEC"]]),
    ("multi_empty", [["MULTI"], ["EXEC"], ["EXEC"], ["DISCARD"]]),
    ("multi_nested_and_watch", [["MULTI"], ["MULTI"], ["WATCH", "mw:a"], ["SET", "mw:a", "1"],
                                ["EXEC"], ["GET", "mw:a"]]),
    ("multi_discard", [["MULTI"], ["PING"], ["SET", "md:a", "1"], ["DISCARD"], ["EXISTS", "md:a"]]),
    # RESP2 subscribed mode: PING answers in the push shape, the rest is refused
    ("subscribed_mode", [["SUBSCRIBE", "sm:ch"], ["PING"], ["PING", "x"], ["ECHO", "x"],
                         ["PUBLISH", "sm:ch", "m"], ["MULTI"], ["EXEC"], ["GET", "sm:k"],
                         ["SELECT", "0"], ["PSUBSCRIBE", "sm:*"], ["UNSUBSCRIBE", "sm:ch"],
                         ["PUNSUBSCRIBE", "sm:*"], ["PING"], ["ECHO", "back"]]),
    # connection and admin commands (issue 19); HELLO 3 and RESP3: test_redis_resp3.py
    ("hello", [["HELLO", "abc"], ["HELLO", "1"], ["HELLO", "4"], ["HELLO", "2", "AUTH", "a", "b"],
               ["HELLO", "2", "BOGUS"], ["HELLO", "2", "SETNAME", "has space"],
               ["CLIENT", "GETNAME"]]),
    ("reset", [["SUBSCRIBE", "rs:c"], ["RESET"], ["PING"], ["MULTI"], ["SET", "rs:a", "1"],
               ["RESET"], ["EXEC"], ["GET", "rs:a"], ["WATCH", "rs:a"], ["RESET"],
               ["CLIENT", "SETNAME", "x"], ["RESET"], ["CLIENT", "GETNAME"], ["RESET", "x"],
               ["PSUBSCRIBE", "rs:*"], ["RESET"], ["ECHO", "back"]]),
    ("client_admin", [["CLIENT", "NO-EVICT", "on"], ["CLIENT", "NO-EVICT", "off"],
                      ["CLIENT", "NO-EVICT", "x"], ["CLIENT", "NO-EVICT"], ["CLIENT", "INFO", "x"],
                      ["CLIENT", "LIST", "ID"], ["CLIENT", "LIST", "ID", "abc"],
                      ["CLIENT", "LIST", "ID", "0"], ["CLIENT", "LIST", "ID", "999999"],
                      ["CLIENT", "LIST", "TYPE", "normal", "ID", "1"],
                      ["CLIENT", "LIST", "TYPE", "bogus"], ["CLIENT", "LIST", "TYPE", "master"],
                      ["CLIENT", "KILL"], ["CLIENT", "KILL", "ID"], ["CLIENT", "KILL", "ID", "x"],
                      ["CLIENT", "KILL", "ID", "0"], ["CLIENT", "KILL", "ID", "999999"],
                      ["CLIENT", "KILL", "LADDR", "1.2.3.4:5"], ["CLIENT", "KILL", "ADDR", "1.2.3.4:5"],
                      ["CLIENT", "KILL", "SKIPME", "maybe"], ["CLIENT", "KILL", "1.2.3.4:5"],
                      ["CLIENT", "KILL", "ID", "999999", "BOGUS", "x"], ["CLIENT", "BOGUS"],
                      ["CLIENT", "SETNAME"], ["CLIENT", "GETNAME", "x"]]),
    ("config", [["CONFIG", "GET", "maxclients"], ["CONFIG", "GET", "timeout"],
                ["CONFIG", "GET", "MAXCLIENTS"], ["CONFIG", "GET", "nosuch"], ["CONFIG", "GET"],
                ["CONFIG"], ["CONFIG", "SET", "timeout"], ["CONFIG", "SET", "timeout", "abc"],
                ["CONFIG", "SET", "timeout", "-1"], ["CONFIG", "SET", "timeout", "0"],
                ["CONFIG", "SET", "maxclients", "0"], ["CONFIG", "SET", "maxclients", "abc"],
                ["CONFIG", "SET", "nosuch", "1"], ["CONFIG", "SET", "timeout", "0", "nosuch", "1"],
                ["CONFIG", "SET", "timeout", "0", "maxclients"], ["CONFIG", "RESETSTAT", "x"],
                ["CONFIG", "RESETSTAT"], ["CONFIG", "BOGUS"]]),
    ("time_flush", [["TIME", "x"], ["FLUSHDB", "ASYNC", "SYNC"], ["FLUSHALL", "x"],
                    ["MSET", "fl:a", "1", "fl:b", "2"], ["FLUSHALL"], ["DBSIZE"], ["GET", "fl:a"],
                    ["SET", "fl:a", "1"], ["FLUSHALL", "ASYNC"], ["SET", "fl:a", "1"],
                    ["FLUSHDB", "SYNC"], ["SET", "fl:a", "1"], ["FLUSHDB"], ["DBSIZE"],
                    ["FLUSHALL", "async"], ["MULTI"], ["SET", "fl:c", "1"], ["FLUSHALL"],
                    ["EXISTS", "fl:c"], ["EXEC"]]),
    ("command_getkeys", [["COMMAND", "GETKEYS", "get", "a"],
                         ["COMMAND", "GETKEYS", "mset", "a", "1", "b", "2"],
                         ["COMMAND", "GETKEYS", "del", "a", "b", "c"],
                         ["COMMAND", "GETKEYS", "ping"], ["COMMAND", "GETKEYS", "ping", "x"],
                         ["COMMAND", "GETKEYS", "nosuch", "x"], ["COMMAND", "GETKEYS", "get", "a", "b"],
                         ["COMMAND", "GETKEYS", "set", "k"], ["COMMAND", "GETKEYS", "set", "k", "v"],
                         ["COMMAND", "GETKEYS", "GET", "a"], ["COMMAND", "GETKEYS"]]),
]


def test_every_command_replies_byte_for_byte_like_redis(make_cluster, redis_server):
    node = make_cluster(1).nodes[0]
    keel = rowdiff.run_rows(node.client_port, SAME_AS_REDIS, per_row_connection=True)
    real = rowdiff.run_rows(redis_server.port, SAME_AS_REDIS, per_row_connection=True)
    diffs = rowdiff.diff_rows(SAME_AS_REDIS, keel, real)
    assert not diffs, "replies differ from redis-server:\n" + "\n".join(diffs)


def test_a_negative_multibulk_count_is_ignored_like_redis(make_cluster, redis_server):
    node = make_cluster(1).nodes[0]
    for port in (node.client_port, redis_server.port):
        c = RespConn(port)
        c.send(b"*-10\r\n*-1\r\n*0\r\n" + resp_command("PING"))
        assert c.reply() == b"+PONG\r\n", port
        c.close()


def test_info_and_command_inside_multi_are_queued_and_answered_by_exec(make_cluster):
    node = make_cluster(1).nodes[0]
    c = RespConn(node.client_port)
    assert c.call("MULTI") == b"+OK\r\n"
    assert c.call("INFO", "raft") == b"+QUEUED\r\n"
    assert c.call("COMMAND", "COUNT") == b"+QUEUED\r\n"
    assert c.call("KEEL.WATCH", "x").startswith(b"-ERR Command not allowed inside a transaction")
    assert c.call("EXEC").startswith(b"-EXECABORT")
    assert c.call("MULTI") == b"+OK\r\n"
    c.call("INFO", "raft")
    c.call("COMMAND", "COUNT")
    reply = c.call("EXEC")
    assert reply.startswith(b"*2\r\n$") and b"# Raft" in reply, reply
    assert reply.split(b"\r\n")[-2].startswith(b":"), reply


def test_command_info_and_docs_come_from_the_table(make_cluster, redis_server):
    node = make_cluster(1).nodes[0]
    c = node.client()
    raw = RespConn(node.client_port).call("COMMAND", "INFO", "nosuch", "get")
    assert raw.startswith(b"*2\r\n*-1\r\n*10\r\n$3\r\nget\r\n"), raw  # nil for unknown names
    info = c.execute_command("COMMAND", "INFO", "get", "mset")  # redis-py: {name: {...}}
    real = redis_server.client().execute_command("COMMAND", "INFO", "get", "mset")
    for name in ("get", "mset"):
        for field in ("arity", "first_key_pos", "last_key_pos", "step_count"):
            assert info[name][field] == real[name][field], (name, field)
    assert "readonly" in info["get"]["flags"] and "write" in info["mset"]["flags"]
    raw = RespConn(node.client_port)
    docs = raw.call("COMMAND", "DOCS", "set", "nosuch")  # RESP2: a flat map, known names only
    assert docs.startswith(b"*2\r\n$3\r\nset\r\n*2\r\n$7\r\nsummary\r\n$"), docs
    count = int(raw.call("COMMAND", "COUNT")[1:-2])
    assert raw.call("COMMAND", "DOCS").startswith(b"*%d\r\n" % (2 * count))


def closed_by_server(conn):
    """True if the server closed the connection (a PING gets no reply, only EOF)."""
    try:
        conn.send(resp_command("PING"))
        return conn.sock.recv(100) == b""
    except (ConnectionError, OSError):
        return True


def test_connection_and_admin_commands_keel_answers_its_own_way(make_cluster, redis_server):
    """Where the answer cannot be byte for byte (ids, addresses, clocks, versions), its shape
    is Redis's: redis-py parses it, and the fields mean what Redis's mean."""
    cl = make_cluster(3)
    leader = cl.wait_leader()
    c = leader.client()
    hello = c.execute_command("HELLO", "2")
    real = redis_server.client().execute_command("HELLO", "2")
    assert hello[0::2] == real[0::2]  # the same keys, in the same order
    assert hello[5] == 2 and hello[11] == b"master" and hello[13] == []
    assert RespConn(leader.client_port).call("HELLO", "3").startswith(b"%7\r\n")  # a RESP3 map
    secs, usecs = c.time()  # redis-py: (seconds, microseconds)
    assert abs(secs + usecs / 1e6 - time.time()) < 5
    # CLIENT LIST / INFO / KILL: this connection and another, by id and by address
    c.client_setname("lister")
    other = RespConn(leader.client_port)
    assert other.call("CLIENT", "SETNAME", "victim") == b"+OK\r\n"
    mine = c.client_info()
    assert mine["name"] == "lister" and mine["cmd"] == "client" and mine["db"] == 0
    listed = {x["name"]: x for x in c.client_list()}
    assert "victim" in listed and "lister" in listed
    assert c.client_list(client_id=[str(mine["id"])])[0]["name"] == "lister"
    assert c.execute_command("CLIENT", "KILL", "ID", listed["victim"]["id"]) == 1
    assert closed_by_server(other), "a killed connection must be closed"
    assert c.execute_command("CLIENT", "KILL", "ID", str(mine["id"])) == 0  # SKIPME yes
    # CONFIG: maxclients and timeout change at run time; the fixed ones say so
    assert c.config_get("maxclients") == {"maxclients": "10000"}
    assert c.config_get("appendfsync") == {"appendfsync": "always"}
    c.config_set("timeout", 1)
    idle = RespConn(leader.client_port)
    time.sleep(2.5)
    assert closed_by_server(idle), "an idle connection must be closed after CONFIG SET timeout 1"
    c.config_set("timeout", 0)
    with pytest.raises(redis.ResponseError, match="can't set immutable config"):
        c.config_set("port", 1)
    # COMMAND LIST and GETKEYS come from the table
    raw = RespConn(leader.client_port)  # (redis-py parses any COMMAND reply as COMMAND INFO)
    count = int(raw.call("COMMAND", "COUNT")[1:-2])
    names = raw.call("COMMAND", "LIST")
    assert names.startswith(b"*%d\r\n" % count) and b"$6\r\nconfig\r\n" in names, names[:80]
    # FLUSHALL goes through the log: every node is empty after it
    c.mset({f"fa:{i}": i for i in range(100)})
    f = cl.followers(leader)[0]
    assert f.client().flushall() is True  # through a follower
    cl.wait_applied(cl.nodes, leader.status()["commit_index"])
    for nd in cl.nodes:
        assert nd.client().dbsize() == 0


def full_scan(client, **kw):
    keys, cursor, calls = [], 0, 0
    while True:
        cursor, batch = client.scan(cursor=cursor, **kw)
        keys += batch
        calls += 1
        assert calls < 10000, "SCAN does not terminate"
        if cursor == 0:
            return keys, calls


def test_scan_with_match_and_count_returns_every_key(make_cluster, redis_server):
    node = make_cluster(1).nodes[0]
    k, r = node.client(), redis_server.client()
    keys = [f"user:{i}".encode() for i in range(300)] + [f"order:{i}".encode() for i in range(150)]
    for c in (k, r):
        for i in range(0, len(keys), 50):
            c.mset({key: b"x" for key in keys[i : i + 50]})
    for count in (1, 7, 100, 1000):
        seen, calls = full_scan(k, count=count)
        assert set(seen) == set(keys), f"COUNT {count}: missing {set(keys) - set(seen)}"
        if count == 1:
            assert calls > 10, "COUNT 1 returned everything at once"
    for pattern in ("user:1*", "order:?5", "*:[0-2]", "user:[^1-9]*", "nomatch*"):
        seen, _ = full_scan(k, match=pattern, count=20)
        want, _ = full_scan(r, match=pattern, count=20)
        assert set(seen) == set(want), f"MATCH {pattern}"
    # syntax errors as Redis
    for args in (["SCAN", "0", "COUNT", "0"], ["SCAN", "0", "COUNT"], ["SCAN", "x"],
                 ["SCAN", "0", "BOGUS", "1"], ["SCAN", "0", "COUNT", "a"]):  # fmt: skip
        kc, rc = RespConn(node.client_port), RespConn(redis_server.port)
        assert kc.call(*args) == rc.call(*args), args
        kc.close()
        rc.close()
    assert k.dbsize() == r.dbsize() == len(keys)


def test_info_has_server_clients_stats_and_raft_sections(make_cluster):
    node = make_cluster(1).nodes[0]
    c = node.client()
    c.set("a", "1")
    raw = RespConn(node.client_port)
    text = raw.call("INFO").decode()
    for section in ("# Server", "# Clients", "# Stats", "# Raft"):
        assert section in text, text
    payload = text.split("\r\n", 1)[1][:-2]  # the bulk string's content
    assert payload.endswith("\r\n") and not payload.endswith("\r\n\r\n"), "blank line at the end"
    raft = c.info("raft")
    assert raft["raft_role"] == "leader"
    assert raft["leader"] == node.name
    assert raft["term"] >= 1
    assert raft["commit_index"] == raft["applied_index"] >= 2  # the no-op and the SET
    assert raft["revision"] == 1
    text = raw.call("INFO", "raft").decode()
    assert text.split("\r\n", 1)[1].startswith("# Raft\r\n") and "# Server" not in text
    server = c.info("server")
    assert server["redis_mode"] == "keel-raft" and server["tcp_port"] == node.client_port
    assert c.info("clients")["connected_clients"] >= 1
    assert raw.call("INFO", "nosuchsection") == b"$0\r\n\r\n"
    # Redis's sections and field names (issue 19): what a Redis tool reads means the same
    text = raw.call("INFO").decode()
    for section in ("# Memory", "# Persistence", "# Replication", "# CPU", "# Keyspace"):
        assert section in text, text
    assert "# Commandstats" not in text and "# Commandstats" in raw.call("INFO", "all").decode()
    info = c.info()  # redis-py merges the sections: Redis's "role" must stay Redis's
    assert info["role"] == "master" and info["mem_allocator"] == "libc"
    assert info["used_memory"] > 0 and info["used_memory_rss"] > 0 and info["aof_enabled"] == 1
    assert info["db0"]["keys"] == 1 and info["used_cpu_user"] >= 0
    assert c.info("commandstats")["cmdstat_set"]["calls"] >= 1
    c.config_resetstat()  # as Redis: the command counts start again
    assert "cmdstat_set" not in c.info("commandstats")


def test_command_lists_every_command_with_redis_arity(make_cluster, redis_server):
    node = make_cluster(1).nodes[0]
    c = node.client()
    names = {n: e["arity"] for n, e in c.command().items()}
    assert RespConn(node.client_port).call("COMMAND", "COUNT") == b":%d\r\n" % len(names)
    supported = ["ping", "echo", "get", "set", "getset", "del", "exists", "incr", "incrby", "decr",
                 "decrby", "append", "strlen", "mget", "mset", "scan", "dbsize", "info",
                 "command", "select", "client", "quit", "keel.getv", "keel.reads"]  # fmt: skip
    missing = [n for n in supported if n not in names]
    assert not missing, f"COMMAND lacks {missing}"
    real = {n: e["arity"] for n, e in redis_server.client().command().items()}
    wrong = {n: (names[n], real[n]) for n in supported if n in real and names[n] != real[n]}
    assert not wrong, f"arity differs from redis (keel, redis): {wrong}"
    err = RespConn(node.client_port).call("COMMAND", "NOSUCH")
    assert err.startswith(b"-ERR")


def test_select_accepts_only_database_zero(make_cluster):
    node = make_cluster(1).nodes[0]
    c = RespConn(node.client_port)
    assert c.call("SELECT", "0") == b"+OK\r\n"
    assert c.call("SELECT", "1") == b"-ERR DB index is out of range\r\n"
    assert c.call("SELECT", "15") == b"-ERR DB index is out of range\r\n"
    assert c.call("PING") == b"+PONG\r\n"


def test_client_setname_is_per_connection(make_cluster):
    node = make_cluster(1).nodes[0]
    a, b = RespConn(node.client_port), RespConn(node.client_port)
    assert a.call("CLIENT", "SETNAME", "alpha") == b"+OK\r\n"
    assert a.call("CLIENT", "GETNAME") == b"$5\r\nalpha\r\n"
    assert b.call("CLIENT", "GETNAME") == b"$-1\r\n"
    assert a.call("CLIENT", "ID") != b.call("CLIENT", "ID")


def test_quit_replies_ok_and_closes_only_that_connection(make_cluster, redis_server):
    node = make_cluster(1).nodes[0]
    other = RespConn(node.client_port)
    for port in (node.client_port, redis_server.port):
        c = RespConn(port)
        c.send(resp_command("QUIT") + resp_command("PING"))
        assert c.reply() == b"+OK\r\n"
        assert c.closed_by_peer()
        assert c.buf == b"", f"a reply after QUIT: {c.buf!r}"
    assert other.call("PING") == b"+PONG\r\n"


def test_keel_getv_returns_value_and_the_revision_of_its_last_change(make_cluster):
    node = make_cluster(1).nodes[0]
    c = node.client()
    assert c.execute_command("KEEL.GETV", "none") is None
    c.set("a", "1")
    v1 = c.execute_command("KEEL.GETV", "a")
    assert v1[0] == b"1"
    c.set("b", "x")
    assert c.execute_command("KEEL.GETV", "a") == v1  # another key's change leaves it
    assert c.execute_command("KEEL.GETV", "b")[1] == v1[1] + 1
    assert c.set("a", "2", nx=True) is None  # no change, no new version
    assert c.execute_command("KEEL.GETV", "a") == v1
    c.incr("b2")
    c.mset({"a": "3", "c": "4"})  # one change: one revision for both keys
    va, vc = c.execute_command("KEEL.GETV", "a"), c.execute_command("KEEL.GETV", "c")
    assert va[0] == b"3" and va[1] == vc[1] == v1[1] + 3
    assert c.info("raft")["revision"] == va[1]
    c.delete("a")
    assert c.execute_command("KEEL.GETV", "a") is None
    assert c.info("raft")["revision"] == va[1] + 1


def test_keel_reads_takes_stale_or_linearizable(make_cluster):
    node = make_cluster(1).nodes[0]
    c = RespConn(node.client_port)
    assert c.call("SET", "k", "v") == b"+OK\r\n"
    assert c.call("KEEL.READS", "stale") == b"+OK\r\n"
    assert c.call("GET", "k") == b"$1\r\nv\r\n"
    assert c.call("KEEL.READS", "LINEARIZABLE") == b"+OK\r\n"
    assert c.call("GET", "k") == b"$1\r\nv\r\n"
    assert c.call("KEEL.READS", "sometimes").startswith(b"-ERR")
    assert c.call("KEEL.READS").startswith(b"-ERR wrong number of arguments")


def test_redis_py_sees_redis_types(make_cluster):
    node = make_cluster(1).nodes[0]
    c = node.client(decode_responses=True)
    assert c.ping() is True
    assert c.set("t", "1") is True
    assert c.incr("t") == 2
    assert c.mget("t", "none") == ["2", None]
    assert c.exists("t", "none") == 1
    assert c.delete("t") == 1
    try:
        c.execute_command("INCRBY", "t", "x")
        raise AssertionError("INCRBY x did not fail")
    except redis.ResponseError as e:
        assert "not an integer" in str(e)


def test_scan_returns_every_stable_key_while_the_table_grows_and_shrinks(make_cluster):
    """Redis's SCAN guarantee through keel's incrementally rehashed table: a key present for
    the whole iteration is returned at least once, while other keys come and go."""
    import threading

    node = make_cluster(1).nodes[0]
    c = node.client()
    stable = {f"stable:{i}".encode() for i in range(300)}
    c.mset({k: b"s" for k in stable})
    stop = threading.Event()
    churned = [0]

    def churn():
        w = node.client()
        n = 0
        while not stop.is_set():
            batch = [f"tmp:{n + i}" for i in range(1500)]
            w.mset({k: "t" for k in batch})  # 300 -> 1800 keys: the table grows twice
            w.delete(*batch)  # and shrinks again
            n += 1500
            churned[0] = n

    t = threading.Thread(target=churn)
    t.start()
    try:
        for count in (3, 17):
            for _ in range(3):
                seen, _ = full_scan(c, count=count)
                missing = stable - set(seen)
                assert not missing, f"COUNT {count}: {len(missing)} stable keys never returned"
    finally:
        stop.set()
        t.join(timeout=30)
    assert churned[0] >= 3000, "the table did not churn during the scans"
