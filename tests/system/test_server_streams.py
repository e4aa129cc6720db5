"""test_server_streams.py - Redis Streams on keel server, reply for reply against redis-server.

Every row runs on a one-node keel server and on a real redis-server 7.0 (started beside it
by the redis_server fixture), and the raw RESP replies must be identical, errors included.
Rows use explicit ids; replies that carry wall-clock times (idle times, `*` ids, seen and
delivery times) are checked by the tests below the table with a tolerance, and XINFO
STREAM's radix-tree-keys / radix-tree-nodes (Redis's internal tree) are left out.
"""

import time


import rowdiff
from keelcluster import RespConn, make_cluster, redis_server  # noqa: F401 (fixtures)

WRONGTYPE = b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"


def add(key, *ids, f="f", v="v"):
    return [["XADD", key, i, f, v] for i in ids]


SAME_AS_REDIS = [
    ("xadd_explicit_ids", add("a:s", "1-1", "1-2", "2", "5-0") + [
        ["XADD", "a:s", "5-0", "f", "v"], ["XADD", "a:s", "4-9", "f", "v"],
        ["XADD", "a:s", "0-0", "f", "v"], ["XADD", "a:new", "0-0", "f", "v"],
        ["XADD", "a:s", "6-*", "f", "v"], ["XADD", "a:s", "6-*", "f", "v"],
        ["XADD", "a:s", "5-*", "f", "v"], ["XADD", "a:z", "0-*", "f", "v"],
        ["XADD", "a:s", "abc", "f", "v"], ["XADD", "a:s", "1-x", "f", "v"],
        ["XADD", "a:s", "-", "f", "v"], ["XADD", "a:s", "+", "f", "v"],
        ["XADD", "a:s", "-1", "f", "v"], ["XADD", "a:s", "7-1", "f"],
        ["XADD", "a:s", "7-1"], ["XADD", "a:s"], ["XADD", "a:s", "7-1", "f", "v", "g"],
        ["XADD", "a:s", "18446744073709551615-18446744073709551615", "f", "v"],
        ["XADD", "a:s", "*", "f", "v"], ["XADD", "a:s", "18446744073709551616-1", "f", "v"],
        ["XLEN", "a:s"], ["XRANGE", "a:s", "-", "+"], ["XLEN", "a:none"], ["EXISTS", "a:new"]]),
    ("xadd_fields", [["XADD", "f:s", "1", "a", "1", "b", "2"], ["XADD", "f:s", "2", "a", "3", "b", "4"],
                     ["XADD", "f:s", "3", "b", "1", "a", "2"], ["XADD", "f:s", "4", "", ""],
                     ["XADD", "f:s", "5", "a", b"\x00\r\n\xff", "b", "x" * 300],
                     ["XRANGE", "f:s", "-", "+"], ["XREVRANGE", "f:s", "+", "-"]]),
    ("xadd_nomkstream", [["XADD", "n:s", "NOMKSTREAM", "1", "f", "v"], ["EXISTS", "n:s"],
                         ["XADD", "n:s", "1", "f", "v"], ["XADD", "n:s", "NOMKSTREAM", "2", "f", "v"],
                         ["XADD", "n:s", "nomkstream", "3", "f", "v"], ["XLEN", "n:s"]]),
    ("xadd_maxlen", add("m:s", *[f"{i}" for i in range(1, 11)]) + [
        ["XADD", "m:s", "MAXLEN", "5", "11", "f", "v"], ["XLEN", "m:s"],
        ["XRANGE", "m:s", "-", "+"], ["XADD", "m:s", "MAXLEN", "=", "3", "12", "f", "v"],
        ["XRANGE", "m:s", "-", "+"], ["XADD", "m:s", "MAXLEN", "~", "1", "13", "f", "v"],
        ["XLEN", "m:s"], ["XADD", "m:s", "MAXLEN", "-1", "14", "f", "v"],
        ["XADD", "m:s", "MAXLEN", "x", "14", "f", "v"],
        ["XADD", "m:s", "MAXLEN", "1", "LIMIT", "5", "14", "f", "v"],
        ["XADD", "m:s", "MAXLEN", "~", "1", "LIMIT", "-1", "14", "f", "v"],
        ["XADD", "m:s", "MAXLEN", "~", "1", "LIMIT", "x", "14", "f", "v"],
        ["XADD", "m:s", "LIMIT", "5", "14", "f", "v"],
        ["XADD", "m:s", "MAXLEN", "1", "MINID", "1", "14", "f", "v"],
        ["XADD", "m:s", "MAXLEN", "0", "15", "f", "v"], ["XLEN", "m:s"],
        ["XADD", "m:s", "MAXLEN", "0", "*"], ["EXISTS", "m:s"]]),
    ("xadd_minid", add("mi:s", *[f"{i}" for i in range(1, 8)]) + [
        ["XADD", "mi:s", "MINID", "4", "8", "f", "v"], ["XRANGE", "mi:s", "-", "+"],
        ["XADD", "mi:s", "MINID", "=", "6-0", "9", "f", "v"], ["XRANGE", "mi:s", "-", "+"],
        ["XADD", "mi:s", "MINID", "bad", "10", "f", "v"],
        ["XADD", "mi:s", "MINID", "~", "100", "10", "f", "v"], ["XLEN", "mi:s"]]),
    ("xtrim", add("t:s", *[f"{i}" for i in range(1, 251)]) + [
        ["XTRIM", "t:s", "MAXLEN", "~", "120"], ["XLEN", "t:s"],
        ["XTRIM", "t:s", "MAXLEN", "~", "10", "LIMIT", "50"], ["XLEN", "t:s"],
        ["XTRIM", "t:s", "MAXLEN", "~", "10", "LIMIT", "100"], ["XLEN", "t:s"],
        ["XTRIM", "t:s", "MAXLEN", "=", "40"], ["XLEN", "t:s"], ["XRANGE", "t:s", "-", "+", "COUNT", "2"],
        ["XTRIM", "t:s", "MINID", "230"], ["XRANGE", "t:s", "-", "+", "COUNT", "1"],
        ["XTRIM", "t:s", "MINID", "~", "245"], ["XLEN", "t:s"],
        ["XTRIM", "t:s", "MAXLEN", "5", "LIMIT", "1"], ["XTRIM", "t:s"], ["XTRIM", "t:s", "FOO", "1"],
        ["XTRIM", "t:s", "MAXLEN", "1", "BAR"], ["XTRIM", "t:none", "MAXLEN", "1"],
        ["XTRIM", "t:s", "MAXLEN", "0"], ["XLEN", "t:s"], ["EXISTS", "t:s"],
        ["XADD", "t:s", "10", "f", "v"]]),
    ("xrange", add("r:s", "1-1", "1-2", "2-0", "2-5", "3-0", "4-0") + [
        ["XRANGE", "r:s", "-", "+"], ["XRANGE", "r:s", "1", "2"], ["XRANGE", "r:s", "1-2", "2-0"],
        ["XRANGE", "r:s", "(1-1", "(2-5"], ["XRANGE", "r:s", "(1-2", "+", "COUNT", "2"],
        ["XRANGE", "r:s", "-", "+", "COUNT", "0"], ["XRANGE", "r:s", "-", "+", "COUNT", "-3"],
        ["XRANGE", "r:s", "-", "+", "count", "1", "COUNT", "3"],
        ["XRANGE", "r:s", "-", "+", "COUNT"], ["XRANGE", "r:s", "-", "+", "LIMIT", "1"],
        ["XRANGE", "r:s", "-", "+", "COUNT", "x"], ["XRANGE", "r:s", "x", "+"],
        ["XRANGE", "r:s", "(-", "+"], ["XRANGE", "r:s", "(0-0", "+"], ["XRANGE", "r:s", "-", "(0-0"],
        ["XRANGE", "r:s", "(18446744073709551615-18446744073709551615", "+"],
        ["XRANGE", "r:s", "5", "1"], ["XRANGE", "r:none", "-", "+"], ["XRANGE", "r:s", "-"],
        ["XREVRANGE", "r:s", "+", "-"], ["XREVRANGE", "r:s", "+", "-", "COUNT", "2"],
        ["XREVRANGE", "r:s", "(4", "(1-1"], ["XREVRANGE", "r:s", "2", "2"],
        ["XREVRANGE", "r:s", "-", "+"], ["XREVRANGE", "r:none", "+", "-"],
        ["XREVRANGE", "r:s", "+", "-", "COUNT", "0"], ["XREVRANGE", "r:s", "+", "(0-0"]]),
    ("xdel", add("d:s", "1", "2", "3", "4", "5") + [
        ["XDEL", "d:s", "2", "4", "4", "9"], ["XLEN", "d:s"], ["XRANGE", "d:s", "-", "+"],
        ["XREVRANGE", "d:s", "+", "-"], ["XDEL", "d:s", "1", "bad"], ["XLEN", "d:s"],
        ["XDEL", "d:none", "1"], ["XDEL", "d:s", "1", "3", "5"], ["XLEN", "d:s"],
        ["EXISTS", "d:s"], ["XADD", "d:s", "5", "f", "v"], ["XADD", "d:s", "6", "f", "v"],
        ["XRANGE", "d:s", "-", "+"], ["XDEL", "d:s"]]),
    ("many_blocks", add("b:s", *[f"{i}" for i in range(1, 321)]) + [
        ["XDEL", "b:s", *[f"{i}" for i in range(100, 210)]], ["XLEN", "b:s"],
        ["XRANGE", "b:s", "95", "215"], ["XREVRANGE", "b:s", "215", "95"],
        ["XRANGE", "b:s", "(99", "+", "COUNT", "3"], ["XREVRANGE", "b:s", "(210", "-", "COUNT", "3"],
        ["XTRIM", "b:s", "MAXLEN", "~", "150"], ["XLEN", "b:s"]]),
    ("xread", add("x:a", "1", "2", "3") + add("x:b", "5") + [
        ["XREAD", "STREAMS", "x:a", "0"], ["XREAD", "STREAMS", "x:a", "x:b", "1", "0"],
        ["XREAD", "COUNT", "1", "STREAMS", "x:a", "x:b", "0", "0"],
        ["XREAD", "COUNT", "0", "STREAMS", "x:a", "0"], ["XREAD", "STREAMS", "x:a", "3"],
        ["XREAD", "STREAMS", "x:a", "$"], ["XREAD", "STREAMS", "x:none", "0"],
        ["XREAD", "STREAMS", "x:none", "x:a", "0", "2"], ["XREAD", "STREAMS", "x:a", "x:b", "0"],
        ["XREAD", "STREAMS", "x:a", ">"], ["XREAD", "STREAMS", "x:a", "bad"],
        ["XREAD", "COUNT", "x", "STREAMS", "x:a", "0"], ["XREAD", "FOO", "STREAMS", "x:a", "0"],
        ["XREAD", "COUNT", "1", "x:a", "0"], ["XREAD", "GROUP", "g", "c", "STREAMS", "x:a", "0"],
        ["XREAD", "NOACK", "STREAMS", "x:a", "0"], ["XREAD", "BLOCK", "x", "STREAMS", "x:a", "0"],
        ["XREAD", "BLOCK", "-1", "STREAMS", "x:a", "0"], ["XREAD", "BLOCK", "10", "STREAMS", "x:a", "0"],
        ["XREAD", "STREAMS", "x:a", "(1"], ["XREAD", "STREAMS", "x:a", "-"],
        ["XREAD", "STREAMS"], ["XREAD", "COUNT", "2", "STREAMS", "x:a", "1-0"]]),
    ("wrongtype", [["SET", "w:str", "v"], ["XADD", "w:s", "1", "f", "v"],
                   ["XADD", "w:str", "1", "f", "v"], ["XLEN", "w:str"], ["XRANGE", "w:str", "-", "+"],
                   ["XREVRANGE", "w:str", "+", "-"], ["XDEL", "w:str", "1"],
                   ["XTRIM", "w:str", "MAXLEN", "1"], ["XREAD", "STREAMS", "w:str", "0"],
                   ["XREAD", "STREAMS", "w:s", "w:str", "0", "0"],
                   ["XGROUP", "CREATE", "w:str", "g", "0"], ["XINFO", "STREAM", "w:str"],
                   ["XACK", "w:str", "g", "1"], ["XPENDING", "w:str", "g"],
                   ["XCLAIM", "w:str", "g", "c", "0", "1"], ["XAUTOCLAIM", "w:str", "g", "c", "0", "0"],
                   ["XREADGROUP", "GROUP", "g", "c", "STREAMS", "w:str", ">"],
                   ["GET", "w:s"], ["STRLEN", "w:s"], ["APPEND", "w:s", "x"], ["INCR", "w:s"],
                   ["INCRBY", "w:s", "2"], ["DECR", "w:s"], ["GETSET", "w:s", "x"],
                   ["SET", "w:s", "x", "GET"], ["MGET", "w:s", "w:str"], ["TYPE", "w:s"],
                   ["TYPE", "w:str"], ["TYPE", "w:none"], ["EXISTS", "w:s", "w:str"],
                   ["SET", "w:s", "now a string"], ["TYPE", "w:s"], ["GET", "w:s"],
                   ["XADD", "w:t", "1", "f", "v"], ["MSET", "w:t", "1"], ["TYPE", "w:t"],
                   ["XADD", "w:u", "1", "f", "v"], ["DEL", "w:u", "w:str"], ["TYPE", "w:u"],
                   ["XADD", "w:u", "1", "f", "v"], ["XLEN", "w:u"]]),
    ("expire_on_streams", [["XADD", "e:s", "1", "f", "v"], ["TTL", "e:s"], ["EXPIRE", "e:s", "100"],
                           ["TTL", "e:s"], ["PERSIST", "e:s"], ["TTL", "e:s"],
                           ["PEXPIRE", "e:s", "1"], ["XADD", "e:t", "1", "f", "v"]]),
    ("xgroup", add("g:s", "1", "2", "3") + [
        ["XGROUP", "CREATE", "g:s", "g1", "0"], ["XGROUP", "CREATE", "g:s", "g1", "0"],
        ["XGROUP", "CREATE", "g:s", "g2", "$"], ["XGROUP", "CREATE", "g:s", "g3", "2", "ENTRIESREAD", "2"],
        ["XGROUP", "CREATE", "g:s", "g4", "1", "ENTRIESREAD", "-2"],
        ["XGROUP", "CREATE", "g:s", "g4", "1", "ENTRIESREAD", "x"],
        ["XGROUP", "CREATE", "g:s", "g4", "1", "FOO"], ["XGROUP", "CREATE", "g:s", "g4", "bad"],
        ["XGROUP", "CREATE", "g:s", "g4", "-"], ["XGROUP", "CREATE", "g:none", "g", "0"],
        ["XGROUP", "CREATE", "g:mk", "g", "$", "MKSTREAM"], ["XLEN", "g:mk"], ["TYPE", "g:mk"],
        ["XGROUP", "CREATE", "g:mk", "h", "0", "MKSTREAM"],
        ["XGROUP", "CREATE", "g:s"], ["XGROUP", "FOO", "g:s", "g"], ["XGROUP"],
        ["XGROUP", "DESTROY", "g:s"], ["XGROUP", "SETID", "g:s", "g1", "2"],
        ["XGROUP", "SETID", "g:s", "nog", "2"], ["XGROUP", "SETID", "g:s", "g1", "$", "ENTRIESREAD", "3"],
        ["XGROUP", "SETID", "g:s", "g1", "-"], ["XGROUP", "SETID", "g:s", "g1", "bad"],
        ["XGROUP", "SETID", "g:s", "g1", "0", "MKSTREAM"],
        ["XINFO", "GROUPS", "g:s"],
        ["XGROUP", "CREATECONSUMER", "g:s", "g1", "alice"],
        ["XGROUP", "CREATECONSUMER", "g:s", "g1", "alice"],
        ["XGROUP", "CREATECONSUMER", "g:s", "nog", "alice"],
        ["XGROUP", "CREATECONSUMER", "g:none", "g1", "alice"],
        ["XGROUP", "DELCONSUMER", "g:s", "g1", "bob"], ["XGROUP", "DELCONSUMER", "g:s", "g1", "alice"],
        ["XGROUP", "DESTROY", "g:s", "g2"], ["XGROUP", "DESTROY", "g:s", "g2"],
        ["XGROUP", "DESTROY", "g:none", "g2"], ["XINFO", "GROUPS", "g:s"]]),
    ("xreadgroup", add("rg:s", "1", "2", "3", "4") + [
        ["XGROUP", "CREATE", "rg:s", "g", "0"],
        ["XREADGROUP", "GROUP", "g", "alice", "COUNT", "2", "STREAMS", "rg:s", ">"],
        ["XREADGROUP", "GROUP", "g", "bob", "STREAMS", "rg:s", ">"],
        ["XREADGROUP", "GROUP", "g", "bob", "STREAMS", "rg:s", ">"],
        ["XREADGROUP", "GROUP", "g", "alice", "STREAMS", "rg:s", "0"],
        ["XREADGROUP", "GROUP", "g", "alice", "COUNT", "1", "STREAMS", "rg:s", "0"],
        ["XREADGROUP", "GROUP", "g", "alice", "STREAMS", "rg:s", "2"],
        ["XREADGROUP", "GROUP", "g", "carol", "STREAMS", "rg:s", "0"],
        ["XREADGROUP", "GROUP", "g", "alice", "STREAMS", "rg:s", "$"],
        ["XREADGROUP", "GROUP", "nog", "alice", "STREAMS", "rg:s", ">"],
        ["XREADGROUP", "GROUP", "g", "alice", "STREAMS", "rg:none", ">"],
        ["XREADGROUP", "GROUP", "g", "alice", "STREAMS", "rg:s", "bad"],
        ["XREADGROUP", "STREAMS", "rg:s", ">"], ["XREADGROUP", "GROUP", "g", "a", "STREAMS", "rg:s"],
        ["XREADGROUP", "GROUP", "g", "a", "STREAMS", "rg:s", "rg:s", ">"],
        ["XADD", "rg:s", "5", "f", "v"], ["XDEL", "rg:s", "1"],
        ["XREADGROUP", "GROUP", "g", "alice", "STREAMS", "rg:s", "0"],
        ["XREADGROUP", "GROUP", "g", "dave", "NOACK", "STREAMS", "rg:s", ">"],
        ["XPENDING", "rg:s", "g"], ["XINFO", "GROUPS", "rg:s"],
        ["XACK", "rg:s", "g", "1", "2", "9"], ["XACK", "rg:s", "g", "1"], ["XACK", "rg:s", "g", "bad"],
        ["XACK", "rg:s", "nog", "3"], ["XACK", "rg:none", "g", "3"], ["XPENDING", "rg:s", "g"],
        ["XGROUP", "SETID", "rg:s", "g", "0"],
        ["XREADGROUP", "GROUP", "g", "erin", "COUNT", "2", "STREAMS", "rg:s", ">"],
        ["XPENDING", "rg:s", "g"], ["XGROUP", "DELCONSUMER", "rg:s", "g", "erin"],
        ["XPENDING", "rg:s", "g"], ["XINFO", "GROUPS", "rg:s"]]),
    ("xreadgroup_many_streams", add("m2:a", "1", "2") + add("m2:b", "1") + [
        ["XGROUP", "CREATE", "m2:a", "g", "0"], ["XGROUP", "CREATE", "m2:b", "g", "$"],
        ["XREADGROUP", "GROUP", "g", "c", "STREAMS", "m2:a", "m2:b", ">", ">"],
        ["XREADGROUP", "GROUP", "g", "c", "STREAMS", "m2:a", "m2:b", "0", ">"],
        ["XREADGROUP", "GROUP", "g", "c", "STREAMS", "m2:a", "m2:b", ">", "0"],
        ["XREADGROUP", "GROUP", "g", "c", "STREAMS", "m2:a", "m2:b", ">", ">"]]),
    ("xpending_extended_shape", add("p:s", "1", "2", "3") + [
        ["XGROUP", "CREATE", "p:s", "g", "0"],
        ["XPENDING", "p:s", "g", "-", "+", "10"], ["XPENDING", "p:s", "g"],
        ["XPENDING", "p:s", "g", "-", "+"], ["XPENDING", "p:s", "g", "-", "+", "x"],
        ["XPENDING", "p:s", "g", "IDLE", "x", "-", "+", "1"], ["XPENDING", "p:s", "g", "IDLE", "1", "-"],
        ["XPENDING", "p:s", "g", "bad", "+", "1"], ["XPENDING", "p:s", "g", "-", "(0-0", "1"],
        ["XPENDING", "p:s", "nog"], ["XPENDING", "p:none", "g"],
        ["XPENDING", "p:s", "g", "-", "+", "10", "nobody"],
        ["XPENDING", "p:s", "g", "-", "+", "1", "a", "b", "c", "d"]]),
    ("xclaim_errors", add("c:s", "1") + [
        ["XGROUP", "CREATE", "c:s", "g", "0"],
        ["XCLAIM", "c:s", "nog", "c", "0", "1"], ["XCLAIM", "c:none", "g", "c", "0", "1"],
        ["XCLAIM", "c:s", "g", "c", "x", "1"], ["XCLAIM", "c:s", "g", "c", "0", "1", "IDLE", "x"],
        ["XCLAIM", "c:s", "g", "c", "0", "1", "TIME", "x"],
        ["XCLAIM", "c:s", "g", "c", "0", "1", "RETRYCOUNT", "x"],
        ["XCLAIM", "c:s", "g", "c", "0", "1", "LASTID", "x"],
        ["XCLAIM", "c:s", "g", "c", "0", "1", "BOGUS"], ["XCLAIM", "c:s", "g", "c", "0", "9"],
        ["XCLAIM", "c:s", "g", "c", "0", "1", "JUSTID"],
        ["XCLAIM", "c:s", "g", "c", "0", "1", "FORCE", "JUSTID"], ["XPENDING", "c:s", "g"],
        ["XCLAIM", "c:s", "g", "d", "0", "1", "RETRYCOUNT", "7", "JUSTID"],
        ["XCLAIM", "c:s", "g", "e", "0", "1", "FORCE"],
        ["XCLAIM", "c:s", "g", "e", "100000", "1"],
        ["XCLAIM", "c:s", "g", "e", "0", "1", "LASTID", "5"], ["XINFO", "GROUPS", "c:s"],
        ["XDEL", "c:s", "1"], ["XCLAIM", "c:s", "g", "e", "0", "1"], ["XPENDING", "c:s", "g"]]),
    ("xautoclaim", add("ac:s", "1", "2", "3", "4", "5") + [
        ["XGROUP", "CREATE", "ac:s", "g", "0"],
        ["XREADGROUP", "GROUP", "g", "a", "STREAMS", "ac:s", ">"],
        ["XAUTOCLAIM", "ac:s", "g", "b", "0", "0", "COUNT", "2"],
        ["XAUTOCLAIM", "ac:s", "g", "b", "0", "(2", "COUNT", "2", "JUSTID"],
        ["XDEL", "ac:s", "5"], ["XAUTOCLAIM", "ac:s", "g", "c", "0", "0"],
        ["XAUTOCLAIM", "ac:s", "g", "c", "3600000", "0"],
        ["XAUTOCLAIM", "ac:s", "g", "c", "0", "0", "COUNT", "0"],
        ["XAUTOCLAIM", "ac:s", "g", "c", "0", "0", "COUNT", "x"],
        ["XAUTOCLAIM", "ac:s", "g", "c", "x", "0"], ["XAUTOCLAIM", "ac:s", "g", "c", "0", "bad"],
        ["XAUTOCLAIM", "ac:s", "g", "c", "0", "0", "FOO"], ["XAUTOCLAIM", "ac:s", "nog", "c", "0", "0"],
        ["XAUTOCLAIM", "ac:none", "g", "c", "0", "0"], ["XPENDING", "ac:s", "g"]]),
    ("xinfo", add("i:s", "1-1", "1-2", "2") + [
        ["XINFO", "GROUPS", "i:s"], ["XGROUP", "CREATE", "i:s", "g", "0"],
        ["XREADGROUP", "GROUP", "g", "c", "COUNT", "1", "STREAMS", "i:s", ">"],
        ["XINFO", "GROUPS", "i:s"], ["XDEL", "i:s", "1-2"], ["XINFO", "GROUPS", "i:s"],
        ["XINFO", "STREAM", "i:none"], ["XINFO", "GROUPS", "i:none"], ["XINFO", "CONSUMERS", "i:s", "nog"],
        ["XINFO", "FOO", "i:s"], ["XINFO", "STREAM"], ["XINFO"], ["XINFO", "STREAM", "i:s", "BAR"],
        ["XINFO", "STREAM", "i:s", "FULL", "COUNT"], ["XINFO", "STREAM", "i:s", "FULL", "NUM", "1"],
        ["XINFO", "STREAM", "i:s", "FULL", "COUNT", "x"], ["XINFO", "GROUPS", "i:s", "x"],
        ["XINFO", "CONSUMERS", "i:s"]]),
    ("multi_exec", [["XADD", "me:s", "1", "f", "v"], ["MULTI"], ["XADD", "me:s", "2", "f", "v"],
                    ["XLEN", "me:s"], ["XRANGE", "me:s", "-", "+"], ["XADD", "me:s", "1", "f", "v"],
                    ["GET", "me:s"], ["EXEC"], ["XLEN", "me:s"]]),
]


def strip_radix(reply):
    """XINFO STREAM's radix-tree-keys/-nodes describe Redis's own tree: set them to 0."""
    for field in (b"$15\r\nradix-tree-keys\r\n", b"$16\r\nradix-tree-nodes\r\n"):
        at = reply.find(field)
        if at >= 0:
            start = at + len(field)
            end = reply.index(b"\r\n", start) + 2
            reply = reply[:start] + b":0\r\n" + reply[end:]
    return reply


def test_stream_commands_reply_byte_for_byte_like_redis(make_cluster, redis_server):
    node = make_cluster(1).nodes[0]
    def run(port):
        return rowdiff.run_rows(port, SAME_AS_REDIS, lambda cmd, r: strip_radix(r),
                                per_row_connection=True)

    diffs = rowdiff.diff_rows(SAME_AS_REDIS, run(node.client_port), run(redis_server.port))
    assert not diffs, f"{len(diffs)} replies differ from redis-server:\n" + "\n".join(diffs)


def test_wrongtype_is_redis_text_on_every_stream_and_string_command(make_cluster):
    c = RespConn(make_cluster(1).nodes[0].client_port)
    assert c.call("SET", "k", "v") == b"+OK\r\n"
    assert c.call("XADD", "k", "1", "f", "v") == WRONGTYPE
    assert c.call("XADD", "s", "1", "f", "v") == b"$3\r\n1-0\r\n"
    assert c.call("GET", "s") == WRONGTYPE
    assert c.call("TYPE", "s") == b"+stream\r\n"


def test_scan_type_finds_streams_and_strings_like_redis(make_cluster, redis_server):
    found = []
    for client in (make_cluster(1).nodes[0].client(), redis_server.client()):
        for i in range(30):
            client.xadd(f"s{i}", {"f": "v"}, id="1-1")
            client.set(f"k{i}", "v")
        found.append([sorted(client.scan_iter(_type=t, count=7)) for t in ("stream", "STRING", "hash")])
    assert found[0] == found[1]
    assert len(found[0][0]) == 30 and len(found[0][1]) == 30 and found[0][2] == []


def near(value, want, slack):
    return want - slack <= value <= want + slack


def test_star_ids_use_the_time_and_stay_increasing(make_cluster, redis_server):
    for client in (make_cluster(1).nodes[0].client(), redis_server.client()):
        now = int(time.time() * 1000)
        ids = [client.xadd("s", {"f": i}) for i in range(50)]
        parsed = [tuple(int(x) for x in i.split(b"-")) for i in ids]
        assert parsed == sorted(parsed) and len(set(parsed)) == 50
        assert near(parsed[0][0], now, 2000)
        ms = parsed[-1][0]
        assert client.xadd("s", {"f": 1}, id=f"{ms}-*") == f"{ms}-{parsed[-1][1] + 1}".encode()
        future = ms + 100000
        assert client.xadd("s", {"f": 1}, id=f"{future}-5") == f"{future}-5".encode()
        nxt = client.xadd("s", {"f": 1})  # the clock is behind the last id: last + 1
        assert nxt == f"{future}-6".encode()


def test_idle_times_delivery_counts_and_claims_match_redis(make_cluster, redis_server):
    results = []
    for client in (make_cluster(1).nodes[0].client(), redis_server.client()):
        for i in range(1, 6):
            client.xadd("s", {"f": i}, id=f"{i}-0")
        client.xgroup_create("s", "g", id="0")
        client.xreadgroup("g", "alice", {"s": ">"}, count=3)
        time.sleep(0.3)
        ext = client.xpending_range("s", "g", "-", "+", 10)
        assert [e["message_id"] for e in ext] == [b"1-0", b"2-0", b"3-0"]
        assert all(near(e["time_since_delivered"], 300, 250) for e in ext)
        idle = client.xpending_range("s", "g", "-", "+", 10, idle=200)
        assert len(idle) == 3
        assert client.xpending_range("s", "g", "-", "+", 10, idle=100000) == []
        cons = client.xinfo_consumers("s", "g")
        assert cons[0]["name"] == b"alice" and cons[0]["pending"] == 3
        assert near(cons[0]["idle"], 300, 250)
        claimed = client.xclaim("s", "g", "bob", 200, ["1-0", "2-0"])
        assert [e[0] for e in claimed] == [b"1-0", b"2-0"]
        again = client.xclaim("s", "g", "carol", 200, ["1-0"])
        assert again == []  # just claimed: not idle
        client.xclaim("s", "g", "carol", 0, ["3-0"], idle=5000, retrycount=9)
        ext = client.xpending_range("s", "g", "-", "+", 10)
        got = [(e["message_id"], e["consumer"], e["times_delivered"]) for e in ext]
        assert got == [(b"1-0", b"bob", 2), (b"2-0", b"bob", 2), (b"3-0", b"carol", 9)]
        assert near(ext[2]["time_since_delivered"], 5000, 500)
        when = int(time.time() * 1000) - 60000
        client.xclaim("s", "g", "dave", 0, ["2-0"], time=when, justid=True)
        ext = client.xpending_range("s", "g", "2-0", "2-0", 1)
        assert ext[0]["consumer"] == b"dave" and ext[0]["times_delivered"] == 2
        assert near(ext[0]["time_since_delivered"], 60000, 1000)
        auto = client.xautoclaim("s", "g", "erin", 30000, "0-0")
        assert auto[0] == b"0-0" and [e[0] for e in auto[1]] == [b"2-0"]
        full = client.xinfo_stream("s", full=True)
        g = full["groups"][0]
        results.append((full["length"], g["pel-count"], [p[0] for p in g["pending"]],
                        len(g["consumers"])))
    assert results[0] == results[1]


def test_a_stream_survives_a_restart_with_its_groups(make_cluster):
    cl = make_cluster(1)
    node = cl.nodes[0]
    c = node.client()
    for i in range(1, 301):
        c.xadd("s", {"f": str(i), "g": "x" * (i % 7)}, id=f"{i}-1")
    c.xdel("s", "10-1")
    c.xgroup_create("s", "g", id="0")
    c.xreadgroup("g", "alice", {"s": ">"}, count=5)
    c.xack("s", "g", "2-1")
    before = (c.xrange("s"), c.xpending_range("s", "g", "-", "+", 100), c.xinfo_groups("s"))
    node.stop()
    node.start()
    c = node.client()
    after = (c.xrange("s"), c.xpending_range("s", "g", "-", "+", 100), c.xinfo_groups("s"))
    for b, a in zip(before[1], after[1]):
        b.pop("time_since_delivered")
        a.pop("time_since_delivered")
    assert before == after
    assert c.xreadgroup("g", "alice", {"s": ">"}, count=1)[0][1][0][0] == b"6-1"
