"""test_redis_diff.py - the strings, keyspace and list commands, byte for byte against redis-server 7.0.

Issue 19's differential evidence: the same command sequences go to keel and to a real
redis-server (Debian's 7.0, started beside it by the redis_server fixture) and the raw RESP
replies must be identical. keel runs as one node, and as a 3-node cluster through its leader
and through a follower (writes forwarded, reads by read index). Rows are fixed sequences of
every command, option and error case; then a seeded random sequence of a few thousand
commands over a handful of keys (the seed is printed on failure: KEEL_DIFF_SEED=n reruns it).

Where keel differs by design the difference is listed in docs/kv.md, "Differences from
Redis", and only that is normalized here: KEYS in table order (sorted before comparing),
RANDOMKEY's choice (checked to be a live key), TTLs against two clocks (a positive time
left or deadline compared as "positive" where the key was given a relative time).
"""


import redis_diff_zset as zset_diff
import rowdiff
from rowdiff import first_difference, seed_and_count  # noqa: F401 (the other diff tests import them from here)
from keelcluster import RespConn, make_cluster, redis_server  # noqa: F401 (fixtures)

I64_MAX = 9223372036854775807
I64_MIN = -9223372036854775808
FAR_S = 4102444800  # 2100-01-01 in Unix seconds: an absolute deadline both servers agree on
FAR_MS = FAR_S * 1000 + 123

ROWS = [
    ("setnx", [["SETNX", "a", "1"], ["SETNX", "a", "2"], ["GET", "a"], ["SETNX", "a"],
               ["SETNX", "a", "1", "2"], ["XADD", "s", "1-1", "f", "v"], ["SETNX", "s", "x"],
               ["TYPE", "s"], ["PEXPIREAT", "a", "1"], ["SETNX", "a", "3"], ["GET", "a"]]),
    ("setex", [["SETEX", "a", "100", "v"], ["GET", "a"], ["TTL", "a"], ["PSETEX", "b", "100000", "w"],
               ["GET", "b"], ["SETEX", "a", "0", "v"], ["SETEX", "a", "-1", "v"],
               ["SETEX", "a", "x", "v"], ["SETEX", "a", "1.5", "v"], ["SETEX", "a", "10"],
               ["PSETEX", "a", "0", "v"], ["PSETEX", "a", str(I64_MAX), "v"],
               ["SETEX", "a", str(I64_MAX // 1000 + 1), "v"], ["SETEX", "a", str(I64_MAX // 1000), "v"],
               ["PSETEX", "a"], ["XADD", "s", "1-1", "f", "v"], ["SETEX", "s", "100", "str"],
               ["TYPE", "s"], ["GET", "s"], ["GET", "a"]]),
    ("getdel", [["SET", "a", "v"], ["GETDEL", "a"], ["GETDEL", "a"], ["EXISTS", "a"], ["GETDEL"],
                ["GETDEL", "a", "b"], ["XADD", "s", "1-1", "f", "v"], ["GETDEL", "s"], ["TYPE", "s"],
                ["SET", "e", ""], ["GETDEL", "e"]]),
    ("getex", [["SET", "a", "v"], ["GETEX", "a"], ["TTL", "a"], ["GETEX", "a", "EXAT", str(FAR_S)],
               ["EXPIRETIME", "a"], ["PEXPIRETIME", "a"], ["GETEX", "a", "PXAT", str(FAR_MS)],
               ["PEXPIRETIME", "a"], ["EXPIRETIME", "a"], ["GETEX", "a", "PERSIST"], ["TTL", "a"],
               ["GETEX", "a", "persist", "PERSIST"], ["GETEX", "a", "EX", "100", "ex", "200"],
               ["TTL", "a"], ["GETEX", "a", "EX"], ["GETEX", "a", "EX", "10", "PX", "10"],
               ["GETEX", "a", "PERSIST", "EX", "10"], ["GETEX", "a", "EX", "10", "PERSIST"],
               ["GETEX", "a", "NX"], ["GETEX", "a", "KEEPTTL"], ["GETEX", "a", "GET"],
               ["GETEX", "a", "EX", "abc"], ["GETEX", "a", "EX", "0"], ["GETEX", "a", "PX", "-5"],
               ["GETEX", "a", "EXAT", "0"], ["GETEX", "a", "EX", str(I64_MAX)],
               ["GETEX", "a", "PX", str(I64_MAX)], ["GETEX", "a", "EXAT", str(I64_MAX)],
               ["GETEX", "nope", "EX", "abc"], ["GETEX", "nope", "EX", "0"], ["GETEX", "nope"],
               ["GETEX", "nope", "BOGUS"], ["GETEX"], ["XADD", "s", "1-1", "f", "v"],
               ["GETEX", "s"], ["GETEX", "s", "EX", "abc"], ["GETEX", "a", "EXAT", "1"],
               ["EXISTS", "a"], ["SET", "b", "w"], ["GETEX", "b", "PXAT", "1"], ["GET", "b"]]),
    ("getrange", [["SET", "a", "Hello, world"], ["GETRANGE", "a", "0", "4"], ["GETRANGE", "a", "-5", "-1"],
                  ["GETRANGE", "a", "0", "-1"], ["GETRANGE", "a", "5", "3"], ["GETRANGE", "a", "-1", "-5"],
                  ["GETRANGE", "a", "-100", "100"], ["GETRANGE", "a", "100", "200"],
                  ["GETRANGE", "a", "-1", "-2"], ["GETRANGE", "a", "3", "-100"],
                  ["GETRANGE", "a", "0", "0"], ["GETRANGE", "a", str(I64_MIN), str(I64_MAX)],
                  ["GETRANGE", "a", "x", "1"], ["GETRANGE", "a", "1", "1.5"], ["GETRANGE", "a", "1"],
                  ["GETRANGE", "nope", "0", "1"], ["GETRANGE", "nope", "x", "1"],
                  ["SET", "e", ""], ["GETRANGE", "e", "0", "-1"], ["XADD", "s", "1-1", "f", "v"],
                  ["GETRANGE", "s", "0", "1"], ["SUBSTR", "a", "0", "1"]]),
    ("setrange", [["SETRANGE", "a", "0", "Hello"], ["SETRANGE", "a", "6", "World"], ["GET", "a"],
                  ["SETRANGE", "a", "1", "a"], ["GET", "a"], ["SETRANGE", "a", "20", ""], ["GET", "a"],
                  ["SETRANGE", "b", "3", "x"], ["GET", "b"], ["SETRANGE", "c", "3", ""],
                  ["EXISTS", "c"], ["SETRANGE", "a", "-1", "x"], ["SETRANGE", "a", "x", "y"],
                  ["SETRANGE", "nope", "-1", ""], ["SETRANGE", "a", "1"], ["SETRANGE", "a", "0", "x", "y"],
                  ["XADD", "s", "1-1", "f", "v"], ["SETRANGE", "s", "0", "x"], ["SETRANGE", "s", "0", ""],
                  ["SET", "t", "v"], ["PEXPIREAT", "t", str(FAR_MS)], ["SETRANGE", "t", "1", "ww"],
                  ["PEXPIRETIME", "t"], ["GET", "t"], ["SET", "n", "12"], ["SETRANGE", "n", "2", "3"],
                  ["INCR", "n"], ["STRLEN", "b"]]),
    ("incrbyfloat", [["INCRBYFLOAT", "f", "1.5"], ["INCRBYFLOAT", "f", "0.1"], ["INCRBYFLOAT", "f", "-1.6"],
                     ["GET", "f"], ["INCRBYFLOAT", "f", "3.0e3"], ["INCRBYFLOAT", "f", "-1e-30"],
                     ["INCRBYFLOAT", "f", "0x10"], ["INCRBYFLOAT", "f", "1e400"],
                     ["INCRBYFLOAT", "g", "0.1"], ["INCRBYFLOAT", "g", "0.2"], ["INCRBYFLOAT", "g", "-0.3"],
                     ["INCRBYFLOAT", "g", "-0.0"], ["INCRBYFLOAT", "g", "5"], ["INCRBYFLOAT", "g", "inf"],
                     ["INCRBYFLOAT", "g", "-inf"], ["INCRBYFLOAT", "g", "nan"], ["INCRBYFLOAT", "g", " 1"],
                     ["INCRBYFLOAT", "g", "1 "], ["INCRBYFLOAT", "g", ""], ["INCRBYFLOAT", "g", "abc"],
                     ["INCRBYFLOAT", "g", "1e99999"], ["INCRBYFLOAT", "g", "1e-99999"],
                     ["INCRBYFLOAT", "g", "+3"], ["INCRBYFLOAT", "g", ".5"], ["INCRBYFLOAT", "g", "5."],
                     ["INCRBYFLOAT", "g", "1,5"], ["SET", "h", "abc"], ["INCRBYFLOAT", "h", "1"],
                     ["SET", "h", " 2"], ["INCRBYFLOAT", "h", "1"], ["SET", "h", "2e3"],
                     ["INCRBYFLOAT", "h", "1"], ["SET", "h", str(I64_MAX)], ["INCRBYFLOAT", "h", "1"],
                     ["INCRBYFLOAT", "h", "1"], ["SET", "h", "1.23456789012345678901234"],
                     ["INCRBYFLOAT", "h", "0"], ["SET", "h", "100"], ["PEXPIREAT", "h", str(FAR_MS)],
                     ["INCRBYFLOAT", "h", "0.5"], ["PEXPIRETIME", "h"], ["INCRBYFLOAT", "h"],
                     ["INCRBYFLOAT", "h", "1", "2"], ["XADD", "s", "1-1", "f", "v"],
                     ["INCRBYFLOAT", "s", "1"], ["INCRBYFLOAT", "s", "abc"],
                     ["INCRBYFLOAT", "z", "1.7976931348623157e308"], ["INCRBYFLOAT", "z", "1e4000"],
                     ["INCRBYFLOAT", "m", "-5e-324"], ["INCRBYFLOAT", "m2", "123456789.123456789"],
                     ["INCRBYFLOAT", "m3", "-0.1"], ["INCRBYFLOAT", "m3", "0.1"]]),
    ("msetnx", [["MSETNX", "a", "1", "b", "2"], ["MGET", "a", "b"], ["MSETNX", "b", "3", "c", "4"],
                ["MGET", "b", "c"], ["MSETNX", "c", "5", "c", "6"], ["GET", "c"], ["MSETNX", "a"],
                ["MSETNX", "a", "1", "b"], ["MSETNX"], ["XADD", "s", "1-1", "f", "v"],
                ["MSETNX", "s", "1", "d", "2"], ["EXISTS", "d"], ["PEXPIREAT", "a", "1"],
                ["MSETNX", "a", "9"], ["GET", "a"]]),
    ("rename", [["SET", "a", "1"], ["RENAME", "a", "b"], ["GET", "a"], ["GET", "b"],
                ["RENAME", "a", "b"], ["RENAME", "b", "b"], ["RENAME", "nope", "nope"],
                ["SET", "c", "3"], ["RENAME", "b", "c"], ["GET", "c"], ["EXISTS", "b"],
                ["PEXPIREAT", "c", str(FAR_MS)], ["RENAME", "c", "d"], ["PEXPIRETIME", "d"],
                ["PEXPIRETIME", "c"], ["RENAME", "d"], ["RENAME", "d", "e", "f"],
                ["XADD", "s", "1-1", "f", "v"], ["RENAME", "s", "s2"], ["TYPE", "s2"], ["XLEN", "s2"],
                ["XRANGE", "s2", "-", "+"], ["SET", "g", "x"], ["RENAME", "g", "s2"], ["TYPE", "s2"],
                ["GET", "s2"], ["RENAME", "d", "s2"], ["GET", "s2"]]),
    ("renamenx", [["SET", "a", "1"], ["RENAMENX", "a", "b"], ["SET", "c", "3"], ["RENAMENX", "b", "c"],
                  ["GET", "b"], ["GET", "c"], ["RENAMENX", "b", "b"], ["RENAMENX", "nope", "x"],
                  ["RENAMENX", "nope", "nope"], ["PEXPIREAT", "c", "1"], ["RENAMENX", "b", "c"],
                  ["GET", "c"], ["RENAMENX", "b"], ["XADD", "s", "1-1", "f", "v"], ["RENAMENX", "c", "s"],
                  ["RENAMENX", "s", "t"], ["TYPE", "t"]]),
    ("copy", [["SET", "a", "1"], ["COPY", "a", "b"], ["GET", "b"], ["COPY", "a", "b"],
              ["SET", "a", "2"], ["COPY", "a", "b", "REPLACE"], ["GET", "b"],
              ["COPY", "a", "b", "replace", "REPLACE"], ["COPY", "a", "a"], ["COPY", "a", "a", "REPLACE"],
              ["COPY", "nope", "b"], ["COPY", "nope", "nope"], ["COPY", "a", "b", "DB", "0"],
              ["COPY", "a", "b", "DB", "0", "REPLACE"], ["COPY", "a", "b", "DB", "x"],
              ["COPY", "a", "b", "DB"], ["COPY", "a", "b", "BOGUS"], ["COPY", "a"],
              ["COPY", "a", "b", "DB", "99999999999"], ["COPY", "a", "a", "DB", "0"],
              ["PEXPIREAT", "a", str(FAR_MS)], ["COPY", "a", "c"], ["PEXPIRETIME", "c"],
              ["XADD", "s", "1-1", "f", "v"], ["XADD", "s", "2-1", "g", "w"], ["COPY", "s", "s2"],
              ["XRANGE", "s2", "-", "+"], ["XADD", "s2", "3-1", "h", "x"], ["XLEN", "s"], ["XLEN", "s2"],
              ["COPY", "s", "a", "REPLACE"], ["TYPE", "a"], ["COPY", "c", "s", "REPLACE"], ["GET", "s"]]),
    ("unlink_touch", [["MSET", "a", "1", "b", "2"], ["TOUCH", "a", "b", "c", "a"], ["UNLINK", "a", "c", "a"],
                      ["EXISTS", "a", "b"], ["UNLINK"], ["TOUCH"], ["TOUCH", "nope"],
                      ["XADD", "s", "1-1", "f", "v"], ["TOUCH", "s"], ["UNLINK", "s", "b"], ["DBSIZE"]]),
    ("keys", [["MSET", "hello", "1", "hallo", "2", "hxllo", "3", "heeello", "4", "world", "5",
               "h*llo", "6", "a[b", "7", "", "8"],
              ["KEYS", "*"], ["KEYS", "h?llo"], ["KEYS", "h*llo"], ["KEYS", "h[ae]llo"],
              ["KEYS", "h[^e]llo"], ["KEYS", "h[a-b]llo"], ["KEYS", "h\\*llo"], ["KEYS", "nomatch*"],
              ["KEYS", ""], ["KEYS", "a[b"], ["KEYS", "a\\[b"], ["KEYS", "[a-"], ["KEYS"],
              ["KEYS", "a", "b"], ["PEXPIREAT", "world", "1"], ["KEYS", "w*"], ["XADD", "s", "1-1", "f", "v"],
              ["KEYS", "s"]]),
    ("randomkey", [["RANDOMKEY"], ["SET", "a", "1"], ["RANDOMKEY"], ["RANDOMKEY", "x"],
                   ["PEXPIREAT", "a", "1"], ["RANDOMKEY"]]),
    ("expiretime", [["SET", "a", "1"], ["EXPIRETIME", "a"], ["PEXPIRETIME", "a"], ["EXPIRETIME", "nope"],
                    ["PEXPIRETIME", "nope"], ["PEXPIREAT", "a", str(FAR_MS)], ["EXPIRETIME", "a"],
                    ["PEXPIRETIME", "a"], ["PEXPIREAT", "a", str(FAR_S * 1000 + 499)], ["EXPIRETIME", "a"],
                    ["PEXPIREAT", "a", str(FAR_S * 1000 + 500)], ["EXPIRETIME", "a"],
                    ["EXPIREAT", "a", str(FAR_S)], ["PEXPIRETIME", "a"], ["EXPIRETIME"],
                    ["PEXPIRETIME", "a", "b"], ["XADD", "s", "1-1", "f", "v"], ["EXPIRETIME", "s"],
                    ["PERSIST", "a"], ["EXPIRETIME", "a"]]),
    ("object", [["SET", "i", "12345"], ["SET", "e", "short string"], ["SET", "r", "x" * 45],
                ["SET", "n", "-0"], ["SET", "m", str(I64_MIN)], ["SET", "l", "12345678901234567890"],
                ["OBJECT", "ENCODING", "i"], ["OBJECT", "ENCODING", "e"], ["OBJECT", "ENCODING", "r"],
                ["OBJECT", "ENCODING", "n"], ["OBJECT", "ENCODING", "m"], ["OBJECT", "ENCODING", "l"],
                ["OBJECT", "encoding", "nope"], ["OBJECT", "FREQ", "e"], ["OBJECT", "FREQ", "nope"],
                ["OBJECT", "IDLETIME", "nope"], ["OBJECT", "REFCOUNT", "nope"],
                ["OBJECT", "REFCOUNT", "e"], ["OBJECT", "REFCOUNT", "i"], ["SET", "z", "9999"],
                ["OBJECT", "REFCOUNT", "z"], ["SET", "z", "10000"], ["OBJECT", "REFCOUNT", "z"],
                ["SET", "z", "0"], ["OBJECT", "REFCOUNT", "z"], ["SET", "z", "-1"], ["OBJECT", "REFCOUNT", "z"],
                ["OBJECT"], ["OBJECT", "ENCODING"],
                ["OBJECT", "ENCODING", "a", "b"], ["OBJECT", "BOGUS"], ["OBJECT", "BOGUS", "x"],
                ["OBJECT", "HELP", "x"], ["OBJECT", "refcount"], ["XADD", "s", "1-1", "f", "v"],
                ["OBJECT", "ENCODING", "s"]]),
    ("setbit_getbit", [["SETBIT", "b", "7", "1"], ["GET", "b"], ["SETBIT", "b", "7", "1"],
                       ["SETBIT", "b", "7", "0"], ["SETBIT", "b", "0", "1"], ["GETBIT", "b", "0"],
                       ["GETBIT", "b", "7"], ["GETBIT", "b", "100"], ["GETBIT", "nope", "1"],
                       ["SETBIT", "b", "-1", "1"], ["SETBIT", "b", "x", "1"],
                       ["SETBIT", "b", "4294967296", "1"], ["SETBIT", "b", "4294967295", "2"],
                       ["SETBIT", "b", "1", "2"], ["SETBIT", "b", "1", "x"], ["SETBIT", "b", "1", "-1"],
                       ["GETBIT", "b", "x"], ["GETBIT", "b", "-1"], ["GETBIT", "b", "4294967296"],
                       ["SETBIT", "nb", "10", "0"], ["GET", "nb"], ["SETBIT", "nb", "23", "1"], ["GET", "nb"],
                       ["PEXPIREAT", "nb", str(FAR_MS)], ["SETBIT", "nb", "40", "1"], ["PEXPIRETIME", "nb"],
                       ["XADD", "s", "1-1", "f", "v"], ["SETBIT", "s", "1", "1"], ["GETBIT", "s", "1"],
                       ["SETBIT", "b"], ["GETBIT", "b"], ["SET", "n", "12"], ["SETBIT", "n", "0", "1"],
                       ["GET", "n"]]),
    ("bitcount", [["SET", "b", b"\xff\xf0\x00\x0f"], ["BITCOUNT", "b"], ["BITCOUNT", "b", "0", "0"],
                  ["BITCOUNT", "b", "1", "-1"], ["BITCOUNT", "b", "-2", "-1"], ["BITCOUNT", "b", "-1", "-2"],
                  ["BITCOUNT", "b", "-5", "-10"], ["BITCOUNT", "b", "0", "100"], ["BITCOUNT", "b", "5", "3"],
                  ["BITCOUNT", "b", "0", "-1", "BIT"], ["BITCOUNT", "b", "3", "12", "bit"],
                  ["BITCOUNT", "b", "-7", "-1", "BIT"], ["BITCOUNT", "b", "1", "1", "BYTE"],
                  ["BITCOUNT", "b", "0"], ["BITCOUNT", "b", "0", "1", "bit", "x"],
                  ["BITCOUNT", "b", "0", "1", "x"], ["BITCOUNT", "b", "a", "b"], ["BITCOUNT", "b", "0", "x"],
                  ["BITCOUNT", "nope", "a", "b"], ["BITCOUNT", "nope", "0"], ["BITCOUNT", "nope"],
                  ["BITCOUNT"], ["SET", "e", ""], ["BITCOUNT", "e"], ["BITCOUNT", "e", "0", "-1"],
                  ["XADD", "s", "1-1", "f", "v"], ["BITCOUNT", "s"], ["BITCOUNT", "s", "x", "y"],
                  ["BITCOUNT", "b", str(I64_MIN), str(I64_MAX), "BIT"]]),
    ("bitpos", [["SET", "f", b"\xff\xf0\x00"], ["BITPOS", "f", "0"], ["BITPOS", "f", "1"],
                ["BITPOS", "f", "0", "0", "-1"], ["BITPOS", "f", "1", "2"], ["BITPOS", "f", "0", "0", "0"],
                ["BITPOS", "f", "0", "1", "-1", "bit"], ["BITPOS", "f", "0", "0", "3", "bit"],
                ["BITPOS", "f", "0", "12", "30", "bit"], ["BITPOS", "f", "1", "12", "30", "BIT"],
                ["BITPOS", "f", "1", "-1"], ["BITPOS", "f", "0", "-100", "100"],
                ["SET", "g", b"\xff\xff"], ["BITPOS", "g", "0"], ["BITPOS", "g", "0", "0"],
                ["BITPOS", "g", "0", "0", "-1"], ["BITPOS", "g", "0", "0", "7", "bit"],
                ["BITPOS", "g", "0", "1"], ["BITPOS", "g", "0", "2"], ["BITPOS", "g", "1", "2"],
                ["BITPOS", "g", "0", "0", "bit"], ["BITPOS", "g", "0", "3", "bit"],
                ["BITPOS", "g", "1", "x", "bit"], ["BITPOS", "g", "1", "0", "bit", "x"],
                ["BITPOS", "g", "1", "0", "-1", "BOGUS"], ["BITPOS", "g", "1", "0", "1", "2", "3"],
                ["BITPOS", "g", "2"], ["BITPOS", "g", "x"], ["BITPOS", "nope", "1"], ["BITPOS", "nope", "0"],
                ["BITPOS", "nope", "1", "a"], ["BITPOS", "nope", "2"], ["SET", "e", ""],
                ["BITPOS", "e", "0"], ["BITPOS", "e", "1"], ["SET", "z", b"\x00\x00"],
                ["BITPOS", "z", "1"], ["BITPOS", "z", "0"], ["BITPOS", "z", "1", "0", "-1", "bit"],
                ["BITPOS", "b"], ["XADD", "s", "1-1", "f", "v"], ["BITPOS", "s", "1"]]),
    ("bitop", [["SET", "a", b"\xf0\x0f\xaa"], ["SET", "b", b"\xff\x00"], ["BITOP", "AND", "d", "a", "b"],
               ["GET", "d"], ["BITOP", "or", "d", "a", "b"], ["GET", "d"], ["BITOP", "XOR", "d", "a", "b", "a"],
               ["GET", "d"], ["BITOP", "NOT", "d", "a"], ["GET", "d"], ["BITOP", "AND", "d", "a", "nope"],
               ["GET", "d"], ["BITOP", "NOT", "d", "a", "b"], ["BITOP", "BOGUS", "d", "a"],
               ["BITOP", "AND", "d"], ["BITOP"], ["BITOP", "NOT", "d", "nope"], ["EXISTS", "d"],
               ["BITOP", "AND", "x", "nope1", "nope2"], ["EXISTS", "x"], ["XADD", "s", "1-1", "f", "v"],
               ["BITOP", "AND", "d", "s"], ["BITOP", "AND", "d", "a", "s"], ["BITOP", "OR", "s", "a"],
               ["TYPE", "s"], ["GET", "s"], ["PEXPIREAT", "a", str(FAR_MS)], ["BITOP", "OR", "a", "a", "b"],
               ["PEXPIRETIME", "a"], ["GET", "a"]]),
    ("lcs", [["MSET", "k1", "ohmytext", "k2", "mynewtext", "x", "ABCBDAB", "y", "BDCABA",
              "p", "aaaa", "q", "aa", "r", "abcdefghij", "t", "jihgfedcba"],
             ["LCS", "k1", "k2"], ["LCS", "k1", "k2", "LEN"], ["LCS", "k1", "k2", "IDX"],
             ["LCS", "k1", "k2", "IDX", "MINMATCHLEN", "4", "WITHMATCHLEN"],
             ["LCS", "k1", "k2", "idx", "withmatchlen"], ["LCS", "x", "y"], ["LCS", "y", "x"],
             ["LCS", "x", "y", "IDX", "WITHMATCHLEN"], ["LCS", "y", "x", "IDX"], ["LCS", "p", "q", "IDX"],
             ["LCS", "q", "p", "IDX", "WITHMATCHLEN"], ["LCS", "r", "t"], ["LCS", "r", "t", "IDX"],
             ["LCS", "k1", "k1", "IDX"], ["LCS", "k1", "nope"], ["LCS", "nope", "nope2", "IDX"],
             ["LCS", "k1", "k2", "IDX", "LEN"], ["LCS", "k1", "k2", "MINMATCHLEN"],
             ["LCS", "k1", "k2", "MINMATCHLEN", "x"], ["LCS", "k1", "k2", "MINMATCHLEN", "-5", "IDX"],
             ["LCS", "k1", "k2", "BOGUS"], ["LCS", "k1", "k2", "LEN", "LEN", "WITHMATCHLEN"],
             ["LCS", "k1"], ["XADD", "s", "1-1", "f", "v"], ["LCS", "s", "k1"], ["LCS", "k1", "s", "BOGUS"],
             ["LCS", "nope", "s"]]),
    ("bitfield", [["BITFIELD", "k"], ["BITFIELD", "k", "GET"], ["BITFIELD", "k", "GET", "u8"],
                  ["BITFIELD", "k", "GET", "u8", "0"], ["EXISTS", "k"], ["BITFIELD", "k", "GET", "u64", "0"],
                  ["BITFIELD", "k", "GET", "i65", "0"], ["BITFIELD", "k", "GET", "x8", "0"],
                  ["BITFIELD", "k", "GET", "i0", "0"], ["BITFIELD", "k", "GET", "I8", "0"],
                  ["BITFIELD", "k", "GET", "U8", "0"], ["BITFIELD", "k", "GET", "u08", "0"],
                  ["BITFIELD", "k", "GET", "u", "0"], ["BITFIELD", "k", "GET", "u8", "-1"],
                  ["BITFIELD", "k", "GET", "u8", "#1"], ["BITFIELD", "k", "GET", "u8", "#-1"],
                  ["BITFIELD", "k", "GET", "u8", "#"], ["BITFIELD", "k", "GET", "u8", "4294967295"],
                  ["BITFIELD", "k", "GET", "u8", "4294967296"], ["BITFIELD", "k", "GET", "u8", "#4294967295"],
                  ["BITFIELD", "k", "GET", "i8", "#536870911"], ["BITFIELD", "k", "OVERFLOW"],
                  ["BITFIELD", "k", "OVERFLOW", "bogus", "GET", "u8", "0"], ["BITFIELD", "k", "BOGUS"],
                  ["BITFIELD", "k", "SET", "u8", "0"], ["BITFIELD", "k", "SET", "u8", "0", "x"],
                  ["BITFIELD", "k", "SET", "u8", "0", "-1"], ["GET", "k"],
                  ["BITFIELD", "k", "OVERFLOW", "SAT", "SET", "u8", "0", "-1", "SET", "i8", "8", "200",
                   "INCRBY", "i8", "8", "-300"], ["GET", "k"],
                  ["BITFIELD", "k", "overflow", "fail", "INCRBY", "u2", "20", "10", "GET", "u2", "20"],
                  ["BITFIELD", "n", "OVERFLOW", "FAIL", "INCRBY", "u2", "100", "10"], ["STRLEN", "n"],
                  ["GET", "n"],
                  ["BITFIELD", "k", "SET", "i64", "0", str(I64_MIN), "INCRBY", "i64", "0", "-1",
                   "OVERFLOW", "SAT", "INCRBY", "i64", "0", "-1", "OVERFLOW", "FAIL", "INCRBY", "i64",
                   "0", "-1", "GET", "i64", "0", "GET", "u63", "1", "GET", "u63", "0"],
                  ["BITFIELD", "k", "SET", "u63", "0", str(I64_MAX), "INCRBY", "u63", "0", "1",
                   "OVERFLOW", "SAT", "INCRBY", "u63", "0", str(I64_MAX), "INCRBY", "u63", "0", str(I64_MIN),
                   "OVERFLOW", "WRAP", "INCRBY", "u63", "0", str(I64_MIN)],
                  ["BITFIELD", "k", "SET", "i5", "3", "15", "SET", "i5", "3", "16", "GET", "i5", "3",
                   "SET", "u5", "3", "33", "GET", "u5", "3", "INCRBY", "i5", "#1", "100",
                   "INCRBY", "u1", "7", "1", "INCRBY", "u1", "7", "1", "GET", "u16", "0"],
                  ["BITFIELD", "k", "OVERFLOW", "SAT", "SET", "i5", "3", "-100", "SET", "u5", "3", "-100",
                   "INCRBY", "u5", "3", "-100", "INCRBY", "i3", "#7", "5", "INCRBY", "i3", "#7", "-50"],
                  ["BITFIELD", "q", "OVERFLOW", "SAT", "SET", "i2", "0", str(I64_MIN + 1), "SET", "i2", "2",
                   str(I64_MIN + 2), "SET", "i8", "8", str(I64_MIN + 127), "SET", "i8", "16",
                   str(I64_MIN + 128), "SET", "i63", "24", str(I64_MIN), "OVERFLOW", "WRAP", "SET", "i2",
                   "0", str(I64_MIN + 1), "OVERFLOW", "FAIL", "SET", "i2", "0", str(I64_MIN + 1)],
                  ["BITFIELD_RO", "q", "GET", "i2", "0", "GET", "i2", "2", "GET", "i8", "8", "GET", "i8", "16",
                   "GET", "i63", "24"],
                  ["GET", "k"], ["BITFIELD", "k", "GET", "u8", "0", "GET"],
                  ["BITFIELD_RO", "k", "GET", "u8", "0", "SET", "u8", "0", "1"],
                  ["BITFIELD_RO", "k", "GET", "u8", "0", "GET", "i16", "#1"], ["BITFIELD_RO", "k"],
                  ["BITFIELD_RO", "k", "SET", "u8", "0", "1", "BOGUS"], ["BITFIELD_RO", "nope", "GET", "u8", "0"],
                  ["BITFIELD_RO", "k", "OVERFLOW", "FAIL", "GET", "u4", "4"],
                  ["PEXPIREAT", "k", str(FAR_MS)], ["BITFIELD", "k", "SET", "u8", "100", "1"],
                  ["PEXPIRETIME", "k"], ["STRLEN", "k"], ["BITFIELD", "k", "SET", "u8", "100", "1"],
                  ["XADD", "s", "1-1", "f", "v"], ["BITFIELD", "s", "GET", "u8", "0"],
                  ["BITFIELD", "s", "SET", "u8", "0", "1"], ["BITFIELD_RO", "s", "GET", "u8", "0"],
                  ["BITFIELD", "s", "SET", "u8", "0", "x"], ["BITFIELD"], ["BITFIELD_RO"]]),
    ("getkeys", [["COMMAND", "GETKEYS"] + c for c in (
        ["setnx", "a", "1"], ["setex", "a", "1", "v"], ["psetex", "a", "1", "v"], ["getdel", "a"],
        ["getex", "a", "EX", "1"], ["getrange", "a", "0", "1"], ["setrange", "a", "0", "x"],
        ["incrbyfloat", "a", "1"], ["msetnx", "a", "1", "b", "2"], ["rename", "a", "b"],
        ["renamenx", "a", "b"], ["copy", "a", "b", "REPLACE"], ["unlink", "a", "b"], ["touch", "a", "b"],
        ["expiretime", "a"], ["pexpiretime", "a"], ["object", "encoding", "a"], ["lcs", "a", "b"],
        ["setbit", "a", "1", "1"], ["getbit", "a", "1"], ["bitcount", "a"], ["bitpos", "a", "1"],
        ["bitop", "and", "d", "a", "b"], ["bitfield", "a", "GET", "u8", "0"],
        ["bitfield_ro", "a", "GET", "u8", "0"], ["substr", "a", "0", "1"], ["keys", "*"], ["randomkey"])]),
    ("arity", [["SETNX"], ["SETEX", "a", "1"], ["PSETEX"], ["GETDEL"], ["GETEX"], ["GETRANGE", "a", "1"],
               ["SETRANGE", "a"], ["INCRBYFLOAT", "a"], ["MSETNX", "a"], ["RENAME", "a"],
               ["RENAMENX", "a", "b", "c"], ["COPY", "a"], ["UNLINK"], ["TOUCH"], ["KEYS"],
               ["RANDOMKEY", "a"], ["EXPIRETIME"], ["PEXPIRETIME"], ["OBJECT"], ["SETBIT", "a", "1"],
               ["GETBIT", "a"], ["BITCOUNT"], ["BITPOS", "a"], ["BITOP", "AND", "d"]]),
    # ---- lists (src/core/kv_list.c) ----
    ("list_push_pop", [["LPUSH", "l", "a", "b", "c"], ["RPUSH", "l", "x", "y"], ["LRANGE", "l", "0", "-1"],
                       ["LPUSHX", "nope", "a"], ["RPUSHX", "nope", "a"], ["EXISTS", "nope"],
                       ["LPUSHX", "l", "p"], ["RPUSHX", "l", "q", "r"], ["LLEN", "l"], ["LPOP", "l"],
                       ["RPOP", "l"], ["LPOP", "l", "2"], ["RPOP", "l", "0"], ["LPOP", "l", "-1"],
                       ["LPOP", "l", "x"], ["LPOP", "l", "1", "2"], ["LPOP", "nope"], ["LPOP", "nope", "0"],
                       ["LPOP", "nope", "3"], ["RPOP", "nope", "x"], ["RPOP", "l", "100"], ["EXISTS", "l"],
                       ["LLEN", "l"], ["LPOP", "l"], ["LPUSH", "l"], ["RPUSH", "e", ""], ["LRANGE", "e", "0", "-1"],
                       ["LPOP", "e"], ["EXISTS", "e"], ["SET", "s", "v"], ["LPUSH", "s", "a"], ["RPUSHX", "s", "a"],
                       ["LPOP", "s"], ["RPOP", "s", "2"], ["LLEN", "s"], ["TYPE", "s"],
                       ["RPUSH", "t", "1"], ["TYPE", "t"], ["OBJECT", "ENCODING", "t"], ["SET", "t", "str"],
                       ["TYPE", "t"], ["LPOP", "t", str(I64_MAX)], ["LPOP", "t", str(I64_MIN)]]),
    ("list_range_index", [["RPUSH", "l"] + [str(i) for i in range(10)], ["LRANGE", "l", "0", "3"],
                          ["LRANGE", "l", "-3", "-1"], ["LRANGE", "l", "5", "2"], ["LRANGE", "l", "-100", "100"],
                          ["LRANGE", "l", "9", "9"], ["LRANGE", "l", "10", "20"], ["LRANGE", "l", "x", "1"],
                          ["LRANGE", "l", "1", "y"], ["LRANGE", "nope", "0", "-1"], ["LRANGE", "nope", "x", "1"],
                          ["LRANGE", "l", str(I64_MIN), str(I64_MAX)], ["LINDEX", "l", "0"], ["LINDEX", "l", "-1"],
                          ["LINDEX", "l", "10"], ["LINDEX", "l", "-11"], ["LINDEX", "l", "x"],
                          ["LINDEX", "nope", "x"], ["LINDEX", "nope", "0"], ["SET", "s", "v"], ["LINDEX", "s", "x"],
                          ["LRANGE", "s", "0", "1"], ["LRANGE", "s", "x", "1"], ["LLEN", "s"], ["LLEN", "nope"],
                          ["LINDEX", "l"], ["LRANGE", "l", "0"]]),
    ("list_set_insert", [["RPUSH", "l", "a", "b", "c", "b"], ["LSET", "l", "0", "A"], ["LSET", "l", "-1", "Z"],
                         ["LSET", "l", "4", "x"], ["LSET", "l", "-5", "x"], ["LSET", "l", "x", "y"],
                         ["LSET", "nope", "0", "x"], ["LSET", "nope", "x", "y"], ["LRANGE", "l", "0", "-1"],
                         ["LINSERT", "l", "BEFORE", "b", "1"], ["LINSERT", "l", "after", "b", "2"],
                         ["LINSERT", "l", "AFTER", "nope", "x"], ["LINSERT", "l", "MIDDLE", "b", "x"],
                         ["LINSERT", "nope", "BEFORE", "a", "x"], ["LINSERT", "nope", "BAD", "a", "x"],
                         ["LRANGE", "l", "0", "-1"], ["LINSERT", "l", "AFTER", "Z", "end"],
                         ["LINSERT", "l", "BEFORE", "A", "start"], ["LRANGE", "l", "0", "-1"],
                         ["SET", "s", "v"], ["LSET", "s", "0", "x"], ["LINSERT", "s", "BEFORE", "a", "x"],
                         ["LINSERT", "s", "BAD", "a", "x"], ["LSET", "l", "0", ""], ["LINDEX", "l", "0"],
                         ["LINSERT", "l", "BEFORE", "", "e"], ["LRANGE", "l", "0", "2"]]),
    ("list_rem_trim", [["RPUSH", "l", "a", "b", "a", "c", "a", "b", "a"], ["LREM", "l", "2", "a"],
                       ["LRANGE", "l", "0", "-1"], ["LREM", "l", "-1", "a"], ["LRANGE", "l", "0", "-1"],
                       ["LREM", "l", "0", "b"], ["LRANGE", "l", "0", "-1"], ["LREM", "l", "0", "zz"],
                       ["LREM", "l", "x", "a"], ["LREM", "nope", "x", "a"], ["LREM", "nope", "1", "a"],
                       ["LREM", "l", "0", "a"], ["LREM", "l", "0", "c"], ["EXISTS", "l"],
                       ["RPUSH", "t"] + [str(i) for i in range(10)], ["LTRIM", "t", "2", "-3"],
                       ["LRANGE", "t", "0", "-1"], ["LTRIM", "t", "-2", "-1"], ["LRANGE", "t", "0", "-1"],
                       ["LTRIM", "t", "x", "1"], ["LTRIM", "nope", "x", "1"], ["LTRIM", "nope", "0", "1"],
                       ["LTRIM", "t", "5", "1"], ["EXISTS", "t"], ["SET", "s", "v"], ["LREM", "s", "1", "a"],
                       ["LREM", "s", "x", "a"], ["LTRIM", "s", "0", "1"], ["RPUSH", "u", "1", "2"],
                       ["LTRIM", "u", "0", str(I64_MAX)], ["LTRIM", "u", str(I64_MIN), "0"], ["LRANGE", "u", "0", "-1"],
                       ["LREM", "u", str(I64_MIN), "1"], ["EXISTS", "u"]]),
    ("list_lpos", [["RPUSH", "l", "a", "b", "c", "1", "2", "3", "c", "c"], ["LPOS", "l", "c"],
                   ["LPOS", "l", "c", "RANK", "2"], ["LPOS", "l", "c", "RANK", "-1"], ["LPOS", "l", "c", "RANK", "-4"],
                   ["LPOS", "l", "c", "COUNT", "0"], ["LPOS", "l", "c", "COUNT", "2"],
                   ["LPOS", "l", "c", "COUNT", "2", "RANK", "-1"], ["LPOS", "l", "c", "COUNT", "0", "MAXLEN", "3"],
                   ["LPOS", "l", "c", "MAXLEN", "2"], ["LPOS", "l", "c", "RANK", "-1", "MAXLEN", "1"],
                   ["LPOS", "l", "zz"], ["LPOS", "l", "zz", "COUNT", "1"], ["LPOS", "l", "c", "RANK", "0"],
                   ["LPOS", "l", "c", "RANK", "x"], ["LPOS", "l", "c", "RANK", str(I64_MIN)],
                   ["LPOS", "l", "c", "RANK", str(-I64_MAX)], ["LPOS", "l", "c", "COUNT", "-1"],
                   ["LPOS", "l", "c", "COUNT", "x"], ["LPOS", "l", "c", "MAXLEN", "-1"], ["LPOS", "l", "c", "BAD"],
                   ["LPOS", "l", "c", "RANK"], ["LPOS", "nope", "c"], ["LPOS", "nope", "c", "COUNT", "1"],
                   ["LPOS", "nope", "c", "RANK", "0"], ["SET", "s", "v"], ["LPOS", "s", "c"],
                   ["LPOS", "s", "c", "COUNT", "x"], ["LPOS", "l"], ["LPOS", "l", "c", "COUNT", "1", "COUNT", "3"]]),
    ("list_move", [["RPUSH", "a", "1", "2", "3"], ["LMOVE", "a", "b", "LEFT", "RIGHT"], ["LMOVE", "a", "b", "right", "left"],
                   ["LRANGE", "a", "0", "-1"], ["LRANGE", "b", "0", "-1"], ["LMOVE", "a", "a", "LEFT", "RIGHT"],
                   ["LMOVE", "a", "b", "LEFT", "LEFT"], ["EXISTS", "a"], ["LMOVE", "a", "b", "LEFT", "LEFT"],
                   ["LMOVE", "a", "b", "UP", "LEFT"], ["LMOVE", "nope", "b", "LEFT", "BAD"],
                   ["RPOPLPUSH", "b", "c"], ["RPOPLPUSH", "nope", "c"], ["LRANGE", "c", "0", "-1"],
                   ["RPUSH", "r", "x"], ["RPOPLPUSH", "r", "r"], ["LMOVE", "r", "r", "LEFT", "LEFT"], ["LRANGE", "r", "0", "-1"],
                   ["SET", "s", "v"], ["LMOVE", "s", "b", "LEFT", "LEFT"], ["LMOVE", "b", "s", "LEFT", "LEFT"],
                   ["LRANGE", "b", "0", "-1"], ["RPOPLPUSH", "b", "s"], ["RPOPLPUSH", "s", "b"],
                   ["LMOVE", "nope", "s", "LEFT", "LEFT"], ["RPUSH", "e", "1"], ["PEXPIREAT", "e", str(FAR_MS)],
                   ["LMOVE", "e", "f", "LEFT", "LEFT"], ["EXISTS", "e"], ["PEXPIRETIME", "f"]]),
    ("list_lmpop", [["RPUSH", "a", "1", "2", "3"], ["RPUSH", "b", "x"], ["LMPOP", "2", "nope", "a", "LEFT"],
                    ["LMPOP", "2", "nope", "a", "RIGHT", "COUNT", "5"], ["LMPOP", "2", "a", "b", "LEFT", "COUNT", "2"],
                    ["LMPOP", "1", "nope", "LEFT"], ["LMPOP", "0", "a", "LEFT"], ["LMPOP", "-1", "a", "LEFT"],
                    ["LMPOP", "x", "a", "LEFT"], ["LMPOP", "3", "a", "LEFT"], ["LMPOP", "1", "a", "MIDDLE"],
                    ["LMPOP", "1", "a", "LEFT", "COUNT"], ["LMPOP", "1", "a", "LEFT", "COUNT", "0"],
                    ["LMPOP", "1", "a", "LEFT", "COUNT", "x"], ["LMPOP", "1", "a", "LEFT", "COUNT", "1", "COUNT", "1"],
                    ["LMPOP", "1", "a", "LEFT", "BAD"], ["LMPOP", "2", "a", "b"], ["LMPOP", "1"],
                    ["SET", "s", "v"], ["LMPOP", "2", "s", "b", "LEFT"], ["RPUSH", "c", "1"], ["LMPOP", "2", "c", "s", "LEFT"],
                    ["LMPOP", "2", "nope", "s", "LEFT"], ["LMPOP", str(I64_MAX), "a", "LEFT"]]),
    # the blocking pops as they run without blocking: inside MULTI, or on a list with elements,
    # and every argument error (answered before any wait)
    ("list_blocking", [["RPUSH", "a", "1", "2", "3"], ["BLPOP", "nope", "a", "0"], ["BRPOP", "a", "1.5"],
                       ["BLMOVE", "a", "b", "LEFT", "RIGHT", "0"], ["BRPOPLPUSH", "b", "c", "0"],
                       ["BLMPOP", "0", "2", "nope", "c", "LEFT", "COUNT", "3"],
                       ["RPUSH", "a"] + [str(i) for i in range(20)], ["BLPOP", "a", "x"], ["BLPOP", "a", "-1"], ["BLPOP", "a", "1e400"], ["BLPOP", "a", "inf"],
                       ["BLPOP", "a", "nan"], ["BLPOP", "a", " 1"], ["BLPOP", "a", "0x10"], ["BLPOP", "a", ""],
                       ["BLPOP", "a", "9223372036854775807"], ["BLPOP", "a", "-0.0001"], ["BLPOP", "a"],
                       ["BLMOVE", "a", "b", "UP", "LEFT", "0"], ["BLMOVE", "a", "b", "LEFT", "LEFT", "x"],
                       ["BLMOVE", "a", "b", "LEFT", "LEFT", "-1"], ["BRPOPLPUSH", "a", "b", "x"],
                       ["BLMPOP", "x", "1", "a", "LEFT"], ["BLMPOP", "0", "0", "a", "LEFT"],
                       ["BLMPOP", "-1", "1", "a", "LEFT"], ["BLMPOP", "0", "1", "a", "UP"],
                       ["BLMPOP", "0", "1", "a", "LEFT", "COUNT", "0"], ["BLMPOP", "0", "2", "a", "LEFT"],
                       ["SET", "s", "v"], ["BLPOP", "s", "0"], ["BLPOP", "nope", "s", "0"], ["BLMOVE", "s", "b", "LEFT", "LEFT", "0"],
                       ["RPUSH", "a", "9"], ["BLMOVE", "a", "s", "LEFT", "LEFT", "0"], ["LRANGE", "a", "0", "-1"],
                       ["BLMPOP", "0", "1", "s", "LEFT"],
                       ["MULTI"], ["BLPOP", "empty", "0"], ["BRPOP", "empty", "1"], ["BLMOVE", "empty", "x", "LEFT", "LEFT", "0"],
                       ["BRPOPLPUSH", "empty", "x", "0"], ["BLMPOP", "0", "1", "empty", "LEFT"], ["BLPOP", "a", "0"],
                       ["BLPOP", "a", "x"], ["EXEC"], ["EXISTS", "a"], ["EXISTS", "x"]]),
    ("list_watch", [["RPUSH", "wl", "1"], ["WATCH", "wl"], ["RPUSH", "wl", "2"], ["MULTI"], ["LLEN", "wl"],
                    ["EXEC"], ["WATCH", "wl"], ["LRANGE", "wl", "0", "-1"], ["MULTI"], ["LPOP", "wl"], ["EXEC"],
                    ["WATCH", "wl"], ["LREM", "wl", "0", "zz"], ["LTRIM", "wl", "0", "-1"], ["LPUSHX", "nope", "x"],
                    ["LINSERT", "wl", "BEFORE", "zz", "x"], ["MULTI"], ["LLEN", "wl"], ["EXEC"],
                    ["WATCH", "wl"], ["RPOP", "wl"], ["MULTI"], ["EXISTS", "wl"], ["EXEC"],
                    ["WATCH", "wl2"], ["RPUSH", "wl2", "a"], ["MULTI"], ["LLEN", "wl2"], ["EXEC"],
                    ["WATCH", "wl2"], ["LMOVE", "wl2", "wl3", "LEFT", "LEFT"], ["MULTI"], ["LLEN", "wl3"], ["EXEC"]]),
    ("list_multi_watch", [["RPUSH", "w", "1"], ["MULTI"], ["LPUSH", "w", "0"], ["RPOP", "w"], ["LRANGE", "w", "0", "-1"],
                          ["LPOS", "w", "0", "BAD"], ["EXEC"], ["LRANGE", "w", "0", "-1"],
                          ["RPUSH", "big"] + ["x" * 300] * 60, ["LLEN", "big"], ["LINDEX", "big", "37"],
                          ["LINSERT", "big", "BEFORE", "x" * 300, "y"], ["LREM", "big", "-5", "x" * 300],
                          ["LRANGE", "big", "0", "1"], ["LTRIM", "big", "3", "40"], ["LLEN", "big"],
                          ["COPY", "big", "big2"], ["LLEN", "big2"], ["RENAME", "big2", "big3"], ["LRANGE", "big3", "-2", "-1"],
                          ["RPUSH", "big3", "z"], ["LLEN", "big"], ["LLEN", "big3"], ["DEL", "big", "big3"], ["KEYS", "big*"]]),
    # Inside MULTI, Redis 7.0 refuses only an unknown command or a wrong number of arguments
    # (EXEC then aborts); a syntax error comes back inside EXEC's array, the others run.
    ("multi", [["MULTI"], ["SET", "a", "1"], ["SET", "b", "v", "BOGUS"], ["GETEX", "a", "NX"],
               ["INCR", "a"], ["EXEC"], ["GET", "a"], ["GET", "b"],
               ["MULTI"], ["SET", "c", "1"], ["SET", "c"], ["EXEC"], ["GET", "c"],
               ["MULTI"], ["SET", "c", "1"], ["NOSUCH", "x"], ["EXEC"], ["GET", "c"],
               ["MULTI"], ["SETEX", "d", "0", "v"], ["SETEX", "d", "100", "v"],
               ["BITFIELD_RO", "d", "SET", "u8", "0", "1"], ["EXEC"], ["GET", "d"]]),
]
ROWS += zset_diff.ROWS  # sorted sets: tests/system/redis_diff_zset.py


def normalize(cmd, reply):
    """keel's documented differences (docs/kv.md): KEYS in table order is sorted here."""
    reply = zset_diff.normalize(cmd, reply)
    if str(cmd[0]).upper() == "KEYS" and reply.startswith(b"*") and not reply.startswith(b"*-"):
        parts = reply.split(b"\r\n")
        head, items = parts[0], parts[1:-1]
        pairs = sorted(zip(items[0::2], items[1::2]))
        return b"\r\n".join([head] + [x for p in pairs for x in p]) + b"\r\n"
    return reply


def run_rows(port, rows, connect=RespConn):
    """Every row's replies, normalized; connect opens the connection (test_redis_resp3.py
    passes one that said HELLO 3)."""
    return rowdiff.run_rows(port, rows, normalize, connect)


def diff_rows(keel, real):
    return rowdiff.diff_rows(ROWS, keel, real)


# RANDOMKEY on two or more keys is keel's own choice: any live key will do.
def check_randomkey(port):
    c = RespConn(port)
    try:
        c.call("FLUSHALL")
        c.call("MSET", "r1", "1", "r2", "2", "r3", "3")
        c.call("PEXPIREAT", "r3", "1")
        seen = set()
        for _ in range(30):
            r = c.call("RANDOMKEY")
            assert r in (b"$2\r\nr1\r\n", b"$2\r\nr2\r\n"), r
            seen.add(r)
        return seen
    finally:
        c.close()


# ---- the seeded random sequence ----------------------------------------------------------

KEYS = ["k0", "k1", "k2", "k3", "k4", "s0"]
VALUES = ["", "0", "1", "-7", "12", "3.5", "abc", "hello world", "1e3", " 1", "9223372036854775807"]
FLOATS = ["1", "-1", "0.5", "-0.25", "1e3", "3.0", "0x10", "abc", "", "1e-5", "-2.5e2", "inf"]
LIST_VALUES = ["a", "b", "c", "", "x" * 200, "1"]
PATTERNS = ["*", "k*", "k?", "k[0-2]", "s*", "*0", "nomatch", "[k]1"]
# replies to these carry a deadline or a time left (see comparable)
TIME_READS = {"TTL", "PTTL", "EXPIRETIME", "PEXPIRETIME"}


def bitfield_command(rng, key):
    cmd = [rng.choice(["BITFIELD", "BITFIELD", "BITFIELD_RO"]), key]
    for _ in range(rng.randint(0, 4)):
        t = rng.choice(["i", "u"]) + str(rng.choice([1, 2, 3, 5, 8, 13, 16, 31, 32, 63, 64]))
        off = rng.choice([str(rng.randint(0, 70)), "#" + str(rng.randint(0, 5))])
        val = str(rng.choice([0, 1, -1, 7, -100, 1000, I64_MAX, I64_MIN, rng.randint(-300, 300)]))
        cmd += rng.choice([["GET", t, off], ["SET", t, off, val], ["INCRBY", t, off, val],
                           ["OVERFLOW", rng.choice(["WRAP", "SAT", "FAIL"])]])
    return cmd


def random_command(rng):
    k = lambda: rng.choice(KEYS)  # noqa: E731
    v = lambda: rng.choice(VALUES)  # noqa: E731
    at_s = lambda: str(rng.choice([1, FAR_S, FAR_S + 7]))  # noqa: E731
    lv = lambda: rng.choice(LIST_VALUES)  # noqa: E731
    at_ms = lambda: str(rng.choice([1, FAR_MS, FAR_MS + 900]))  # noqa: E731
    table = [
        lambda: ["SET", k(), v()],
        lambda: ["GET", k()],
        lambda: ["SETNX", k(), v()],
        lambda: ["SETEX", k(), rng.choice(["100", "0", "x", "5000"]), v()],
        lambda: ["PSETEX", k(), rng.choice(["100000", "-1", "0", "7x"]), v()],
        lambda: ["GETDEL", k()],
        lambda: ["GETEX", k()] + rng.choice([[], ["PERSIST"], ["EXAT", at_s()], ["PXAT", at_ms()],
                                             ["EX", "1000"], ["PX", "abc"], ["EX"], ["NX"],
                                             ["PERSIST", "EX", "1"]]),
        lambda: ["GETRANGE", k(), str(rng.randint(-15, 15)), str(rng.randint(-15, 15))],
        lambda: ["SETRANGE", k(), str(rng.randint(-1, 20)), rng.choice(["", "x", "yz", "hello"])],
        lambda: ["INCRBYFLOAT", k(), rng.choice(FLOATS)],
        lambda: ["INCR", k()],
        lambda: ["APPEND", k(), v()],
        lambda: ["MSETNX", k(), v(), k(), v()],
        lambda: ["MSET", k(), v(), k(), v()],
        lambda: ["RENAME", k(), k()],
        lambda: ["RENAMENX", k(), k()],
        lambda: ["COPY", k(), k()] + rng.choice([[], ["REPLACE"], ["DB", "0"], ["DB", "x"]]),
        lambda: ["UNLINK", k(), k()],
        lambda: ["DEL", k()],
        lambda: ["TOUCH", k(), k()],
        lambda: ["EXISTS", k()],
        lambda: ["KEYS", rng.choice(PATTERNS)],
        lambda: ["EXPIRETIME", k()],
        lambda: ["PEXPIRETIME", k()],
        lambda: ["TTL", k()],
        lambda: ["PERSIST", k()],
        lambda: ["PEXPIREAT", k(), at_ms()],
        lambda: ["EXPIREAT", k(), at_s()],
        lambda: ["STRLEN", k()],
        lambda: ["TYPE", k()],
        lambda: ["TYPE", k()],  # not DBSIZE: keel counts keys not swept yet (docs/kv.md)
        lambda: ["XADD", k(), "1-1", "f", "v"],
        lambda: ["GETSET", k(), v()],
        lambda: ["SET", k(), v(), "GET"],
        lambda: ["DECRBY", k(), rng.choice(["1", "-3", "x"])],
        lambda: ["OBJECT", rng.choice(["FREQ", "IDLETIME", "REFCOUNT"]), "nope"],
        lambda: ["GETEX", k(), "EXAT", "1"],
        lambda: ["MGET", k(), k()],
        lambda: ["SET", k(), v(), "PXAT", at_ms()],
        lambda: ["SET", k(), v(), "KEEPTTL"],
        lambda: ["SETBIT", k(), str(rng.randint(0, 40)), rng.choice(["0", "1"])],
        lambda: ["GETBIT", k(), str(rng.randint(0, 40))],
        lambda: ["BITCOUNT", k()] + rng.choice([[], [str(rng.randint(-6, 6)), str(rng.randint(-6, 6))],
                                                [str(rng.randint(-40, 40)), str(rng.randint(-40, 40)),
                                                 rng.choice(["BIT", "BYTE"])]]),
        lambda: ["BITPOS", k(), rng.choice(["0", "1"])] + rng.choice(
            [[], [str(rng.randint(-6, 6))], [str(rng.randint(-6, 6)), str(rng.randint(-6, 6))],
             [str(rng.randint(-40, 40)), str(rng.randint(-40, 40)), "BIT"]]),
        lambda: ["BITOP", rng.choice(["AND", "OR", "XOR"]), k(), k(), k()],
        lambda: ["BITOP", "NOT", k(), k()],
        lambda: bitfield_command(rng, k()),
        lambda: ["LCS", k(), k()] + rng.choice([[], ["LEN"], ["IDX"], ["IDX", "WITHMATCHLEN"],
                                                ["IDX", "MINMATCHLEN", "2"]]),
        # lists (LIST_VALUES: few distinct elements, so LREM, LPOS and LINSERT find them)
        lambda: [rng.choice(["LPUSH", "RPUSH", "LPUSHX", "RPUSHX"]), k()] + [lv() for _ in range(rng.randint(1, 4))],
        lambda: [rng.choice(["LPUSH", "RPUSH"]), k()] + [lv() for _ in range(rng.randint(1, 40))],
        lambda: [rng.choice(["LPOP", "RPOP"]), k()] + rng.choice([[], [str(rng.randint(0, 5))], ["x"]]),
        lambda: ["LLEN", k()],
        lambda: ["LRANGE", k(), str(rng.randint(-8, 8)), str(rng.randint(-8, 8))],
        lambda: ["LINDEX", k(), str(rng.randint(-8, 8))],
        lambda: ["LSET", k(), str(rng.randint(-5, 5)), lv()],
        lambda: ["LINSERT", k(), rng.choice(["BEFORE", "AFTER"]), lv(), lv()],
        lambda: ["LREM", k(), str(rng.randint(-3, 3)), lv()],
        lambda: ["LTRIM", k(), str(rng.randint(-6, 6)), str(rng.randint(-6, 6))],
        lambda: ["LPOS", k(), lv()] + rng.choice([[], ["RANK", str(rng.choice([-2, -1, 1, 2, 3]))],
                                                  ["COUNT", str(rng.randint(0, 3))],
                                                  ["RANK", "-1", "COUNT", "0", "MAXLEN", str(rng.randint(0, 6))]]),
        lambda: ["LMOVE", k(), k(), rng.choice(["LEFT", "RIGHT"]), rng.choice(["LEFT", "RIGHT"])],
        lambda: ["RPOPLPUSH", k(), k()],
        lambda: ["LMPOP", "2", k(), k(), rng.choice(["LEFT", "RIGHT"])] + rng.choice([[], ["COUNT", "3"]]),
        lambda: ["LRANGE", k(), "0", "-1"],
    ]
    table += zset_diff.random_table(rng, k)
    return rng.choice(table)()


def comparable(cmd, reply):
    """A time left, or a deadline set from a relative time (before FAR_S), depends on each
    server's clock: compared as "positive". Deadlines given as absolute times (FAR_S and
    later) are compared exactly."""
    if cmd[0] in TIME_READS and reply.startswith(b":"):
        v = int(reply[1:-2])
        far = FAR_S * 1000 if cmd[0] == "PEXPIRETIME" else FAR_S
        if v > 0 and (cmd[0] in ("TTL", "PTTL") or v < far):
            return b":<positive>\r\n"
    return normalize(cmd, reply)


def random_run(port, seed, n, connect=RespConn):
    return rowdiff.random_run(port, seed, n, random_command, comparable, connect)


# ---- the tests -----------------------------------------------------------------------------


def test_strings_and_keyspace_reply_like_redis_on_one_node(make_cluster, redis_server):
    node = make_cluster(1).nodes[0]
    diffs = diff_rows(run_rows(node.client_port, ROWS), run_rows(redis_server.port, ROWS))
    assert not diffs, "replies differ from redis-server:\n" + "\n".join(diffs)
    assert len(check_randomkey(node.client_port)) >= 1
    c = RespConn(node.client_port)
    try:
        zset_diff.check_zrandmember(c)
    finally:
        c.close()
    assert zset_diff.full_zscan(node.client_port) == zset_diff.full_zscan(redis_server.port)


def test_strings_and_keyspace_reply_like_redis_on_a_leader_and_a_follower(make_cluster, redis_server):
    cl = make_cluster(3)
    leader = cl.wait_leader()
    follower = cl.followers(leader)[0]
    real = run_rows(redis_server.port, ROWS)
    for who, nd in (("leader", leader), ("follower", follower)):
        diffs = diff_rows(run_rows(nd.client_port, ROWS), real)
        assert not diffs, f"{who}: replies differ from redis-server:\n" + "\n".join(diffs)
        check_randomkey(nd.client_port)


def test_a_random_sequence_replies_like_redis_on_one_node(make_cluster, redis_server):
    seed, n = seed_and_count(3000)
    node = make_cluster(1).nodes[0]
    keel = random_run(node.client_port, seed, n)
    real = random_run(redis_server.port, seed, n)
    d = first_difference(keel, real)
    assert d is None, f"seed {seed} (KEEL_DIFF_SEED={seed} reruns it): {d}"


def test_a_random_sequence_replies_like_redis_through_a_follower(make_cluster, redis_server):
    rowdiff.check_random_through_a_follower(make_cluster, redis_server, random_run, 1000)
