"""redis_diff_zset.py - the sorted-set rows and random commands of test_redis_diff.py.

Kept in their own module so that the types built in parallel (hashes, lists, sets) each add
a few lines to test_redis_diff.py instead of editing the same rows. Every row runs on keel
and on redis-server 7.0 and the raw replies must match byte for byte, except ZRANDMEMBER's
random choice and ZSCAN's order on a set Redis holds as a hash table (skiplist encoding),
normalized by `normalize` as docs/kv.md lists.
"""

import random

from keelcluster import RespConn

ROWS = [
    ("zadd", [["ZADD", "z", "1", "a"], ["ZADD", "z", "2", "b", "3", "c"], ["ZADD", "z", "1", "a"],
              ["ZADD", "z", "5", "a"], ["ZRANGE", "z", "0", "-1", "WITHSCORES"],
              ["ZADD", "z", "NX", "9", "a", "9", "d"], ["ZADD", "z", "XX", "8", "a", "8", "e"],
              ["ZADD", "z", "CH", "8", "a", "7", "b", "7", "f"], ["ZADD", "z", "XX", "CH", "1", "a"],
              ["ZADD", "z", "GT", "0", "a", "10", "b"], ["ZADD", "z", "GT", "CH", "0", "a", "10", "c"],
              ["ZADD", "z", "LT", "CH", "0", "a", "100", "c"], ["ZADD", "z", "LT", "XX", "CH", "-1", "a"],
              ["ZRANGE", "z", "0", "-1", "WITHSCORES"],
              ["ZADD", "z", "NX", "XX", "1", "a"], ["ZADD", "z", "NX", "GT", "1", "a"],
              ["ZADD", "z", "NX", "LT", "1", "a"], ["ZADD", "z", "GT", "LT", "1", "a"],
              ["ZADD", "z", "INCR", "1", "a", "2", "b"], ["ZADD", "z", "1"], ["ZADD", "z", "1", "a", "2"],
              ["ZADD", "z"], ["ZADD", "z", "NX"], ["ZADD", "z", "x", "a"], ["ZADD", "z", "1", "a", "x", "b"],
              ["ZADD", "z", "nan", "a"], ["ZADD", "z", "", "a"], ["ZADD", "z", " 1", "a"],
              ["ZADD", "z", "1 ", "a"], ["ZADD", "z", "1e400", "a"], ["ZADD", "z", "1e-400", "a"],
              ["ZADD", "z", "4e-320", "tiny"], ["ZADD", "z", "0x10", "hex"], ["ZADD", "z", "+5", "plus"],
              ["ZADD", "z", "inf", "i1", "-inf", "i2", "+inf", "i3", "INF", "i4", "-Infinity", "i5"],
              ["ZADD", "z", ".5", "half", "5.", "five", "1e3", "k", "-0", "negz", "1.1", "onep"],
              ["ZRANGE", "z", "0", "-1", "WITHSCORES"], ["ZCARD", "z"],
              ["ZADD", "z", "INCR", "1", "a"], ["ZADD", "z", "INCR", "NX", "1", "a"],
              ["ZADD", "z", "INCR", "NX", "1", "new"], ["ZADD", "z", "INCR", "XX", "1", "absent"],
              ["ZADD", "z", "INCR", "GT", "-5", "a"], ["ZADD", "z", "INCR", "LT", "-5", "a"],
              ["ZADD", "z", "INCR", "inf", "i2"], ["ZADD", "z", "INCR", "-inf", "i1"],
              ["ZSCORE", "z", "i1"], ["ZADD", "z", "incr", "ch", "2", "a"],
              ["ZADD", "n", "XX", "1", "a"], ["EXISTS", "n"], ["ZADD", "n", "INCR", "XX", "1", "a"],
              ["EXISTS", "n"], ["ZADD", "n", "NX", "GT", "1", "a"], ["EXISTS", "n"],
              ["SET", "s", "x"], ["ZADD", "s", "1", "a"], ["ZADD", "s", "x", "a"], ["ZADD", "s", "NX", "XX", "1", "a"],
              ["XADD", "x", "1-1", "f", "v"], ["ZADD", "x", "1", "a"], ["TYPE", "z"], ["OBJECT", "ENCODING", "z"]]),
    ("zincrby", [["ZINCRBY", "z", "1.5", "a"], ["ZINCRBY", "z", "1.5", "a"], ["ZINCRBY", "z", "-3", "a"],
                 ["ZINCRBY", "z", "x", "a"], ["ZINCRBY", "z", "inf", "a"], ["ZINCRBY", "z", "-inf", "a"],
                 ["ZINCRBY", "z", "1", "b"], ["ZINCRBY", "z", "0.1", "c"], ["ZINCRBY", "z", "0.2", "c"],
                 ["ZINCRBY", "z", "1e308", "d"], ["ZINCRBY", "z", "1e308", "d"], ["ZINCRBY", "z", "-0", "e"],
                 ["ZSCORE", "z", "e"], ["ZINCRBY", "z", "nan", "a"], ["ZINCRBY", "z", "1"],
                 ["ZINCRBY", "z", "1", "a", "b"], ["SET", "s", "1"], ["ZINCRBY", "s", "1", "a"],
                 ["ZINCRBY", "s", "x", "a"], ["ZRANGE", "z", "0", "-1", "WITHSCORES"]]),
    ("zrem_zcard_zscore", [["ZADD", "z", "1", "a", "2", "b", "3", "c"], ["ZREM", "z", "a", "x", "a"],
                           ["ZCARD", "z"], ["ZSCORE", "z", "b"], ["ZSCORE", "z", "a"], ["ZSCORE", "nope", "a"],
                           ["ZMSCORE", "z", "a", "b", "c", "d"], ["ZMSCORE", "nope", "a", "b"], ["ZMSCORE", "z"],
                           ["ZREM", "z", "b", "c"], ["EXISTS", "z"], ["ZCARD", "z"], ["ZCARD", "nope"],
                           ["ZREM", "nope", "a"], ["ZREM", "z"], ["ZCARD"], ["ZCARD", "a", "b"], ["ZSCORE", "z"],
                           ["SET", "s", "x"], ["ZREM", "s", "a"], ["ZCARD", "s"], ["ZSCORE", "s", "a"],
                           ["ZMSCORE", "s", "a"], ["ZADD", "f", "1.1", "a", "-0.5", "b", "1e20", "c", "123456789", "d"],
                           ["ZMSCORE", "f", "a", "b", "c", "d"], ["ZSCORE", "f", "c"]]),
    ("zcount_zlexcount", [["ZADD", "z", "1", "a", "2", "b", "3", "c", "4", "d", "5", "e"],
                          ["ZCOUNT", "z", "-inf", "+inf"], ["ZCOUNT", "z", "2", "4"], ["ZCOUNT", "z", "(2", "(4"],
                          ["ZCOUNT", "z", "(2", "4"], ["ZCOUNT", "z", "4", "2"], ["ZCOUNT", "z", "(3", "(3"],
                          ["ZCOUNT", "z", "3", "3"], ["ZCOUNT", "z", "x", "3"], ["ZCOUNT", "z", "1", "(x"],
                          ["ZCOUNT", "z", "", ""], ["ZCOUNT", "z", "(", "10"], ["ZCOUNT", "z", "nan", "1"],
                          ["ZCOUNT", "z", " 1", "3"], ["ZCOUNT", "z", "1", "3 "], ["ZCOUNT", "z", "0x2", "inf"],
                          ["ZCOUNT", "nope", "0", "1"], ["ZCOUNT", "nope", "x", "1"], ["ZCOUNT", "z", "1"],
                          ["ZADD", "l", "0", "a", "0", "b", "0", "c", "0", "d", "0", "e", "0", "f"],
                          ["ZLEXCOUNT", "l", "-", "+"], ["ZLEXCOUNT", "l", "[b", "[d"], ["ZLEXCOUNT", "l", "(b", "(d"],
                          ["ZLEXCOUNT", "l", "(b", "[d"], ["ZLEXCOUNT", "l", "[d", "[b"], ["ZLEXCOUNT", "l", "+", "-"],
                          ["ZLEXCOUNT", "l", "-", "-"], ["ZLEXCOUNT", "l", "[a", "(a"], ["ZLEXCOUNT", "l", "[c", "[c"],
                          ["ZLEXCOUNT", "l", "b", "[d"], ["ZLEXCOUNT", "l", "[b", "d"], ["ZLEXCOUNT", "l", "", "+"],
                          ["ZLEXCOUNT", "l", "[", "+"], ["ZLEXCOUNT", "l", "(", "+"], ["ZLEXCOUNT", "l", "[bb", "+"],
                          ["ZLEXCOUNT", "nope", "-", "+"], ["ZLEXCOUNT", "nope", "x", "+"],
                          ["ZADD", "m", "1", "a", "2", "z", "3", "b", "4", "y"], ["ZLEXCOUNT", "m", "[b", "[y"],
                          ["ZLEXCOUNT", "m", "-", "[b"], ["ZRANGEBYLEX", "m", "[b", "[y"], ["ZRANGEBYLEX", "m", "[a", "+"],
                          ["ZREVRANGEBYLEX", "m", "[z", "-"], ["SET", "s", "x"], ["ZCOUNT", "s", "0", "1"],
                          ["ZLEXCOUNT", "s", "-", "+"], ["ZCOUNT", "s", "x", "1"]]),
    ("zrank", [["ZADD", "z", "1", "a", "2", "b", "3", "c"], ["ZRANK", "z", "a"], ["ZRANK", "z", "c"],
               ["ZRANK", "z", "x"], ["ZREVRANK", "z", "a"], ["ZREVRANK", "z", "c"], ["ZREVRANK", "z", "x"],
               ["ZRANK", "nope", "a"], ["ZREVRANK", "nope", "a"], ["ZRANK", "z"], ["ZRANK", "z", "a", "b"],
               ["ZRANK", "z", "a", "WITHSCORE"], ["SET", "s", "x"], ["ZRANK", "s", "a"], ["ZREVRANK", "s", "a"]]),
    ("zrange", [["ZADD", "z", "1", "a", "2", "b", "3", "c", "4", "d", "5", "e"],
                ["ZRANGE", "z", "0", "-1"], ["ZRANGE", "z", "1", "2"], ["ZRANGE", "z", "-2", "-1"],
                ["ZRANGE", "z", "-100", "100"], ["ZRANGE", "z", "3", "1"], ["ZRANGE", "z", "5", "10"],
                ["ZRANGE", "z", "0", "-1", "WITHSCORES"], ["ZRANGE", "z", "0", "-1", "REV"],
                ["ZRANGE", "z", "0", "1", "REV", "WITHSCORES"], ["ZRANGE", "z", "0", "-1", "withscores", "rev"],
                ["ZRANGE", "z", "2", "4", "BYSCORE"], ["ZRANGE", "z", "(2", "+inf", "BYSCORE", "WITHSCORES"],
                ["ZRANGE", "z", "4", "2", "BYSCORE", "REV"], ["ZRANGE", "z", "2", "4", "BYSCORE", "REV"],
                ["ZRANGE", "z", "-inf", "+inf", "BYSCORE", "LIMIT", "1", "2"],
                ["ZRANGE", "z", "-inf", "+inf", "BYSCORE", "LIMIT", "1", "-1"],
                ["ZRANGE", "z", "-inf", "+inf", "BYSCORE", "LIMIT", "-1", "2"],
                ["ZRANGE", "z", "-inf", "+inf", "BYSCORE", "LIMIT", "10", "2"],
                ["ZRANGE", "z", "-inf", "+inf", "BYSCORE", "LIMIT", "0", "0"],
                ["ZRANGE", "z", "+inf", "-inf", "BYSCORE", "REV", "LIMIT", "1", "2", "WITHSCORES"],
                ["ZRANGE", "z", "0", "-1", "LIMIT", "1", "2"], ["ZRANGE", "z", "0", "-1", "BYSCORE", "BYLEX"],
                ["ZRANGE", "z", "0", "-1", "BYLEX"], ["ZRANGE", "z", "[a", "[c", "BYLEX"],
                ["ZRANGE", "z", "-", "+", "BYLEX", "LIMIT", "1", "3"], ["ZRANGE", "z", "+", "-", "BYLEX", "REV"],
                ["ZRANGE", "z", "[c", "-", "BYLEX", "REV", "LIMIT", "0", "1"],
                ["ZRANGE", "z", "-", "+", "BYLEX", "WITHSCORES"], ["ZRANGE", "z", "x", "1", "BYSCORE"],
                ["ZRANGE", "z", "x", "1"], ["ZRANGE", "z", "0", "1.5"], ["ZRANGE", "z", "0", "-1", "BOGUS"],
                ["ZRANGE", "z", "0", "-1", "LIMIT"], ["ZRANGE", "z", "0", "-1", "BYSCORE", "LIMIT", "1"],
                ["ZRANGE", "z", "0", "-1", "BYSCORE", "LIMIT", "x", "1"], ["ZRANGE", "z", "0"],
                ["ZRANGE", "nope", "0", "-1"], ["ZRANGE", "nope", "0", "-1", "BYSCORE"],
                ["ZRANGE", "nope", "x", "y"], ["ZRANGE", "nope", "x", "y", "BYSCORE"],
                ["ZRANGE", "nope", "x", "y", "BYLEX"], ["ZRANGE", "z", "0", str(2**63 - 1)],
                ["ZRANGE", "z", str(-2**63), "0"], ["ZRANGE", "z", "0", str(2**63)],
                ["ZRANGE", "z", "(1", "(1", "BYSCORE"], ["ZRANGE", "z", "5", "5", "BYSCORE", "REV"],
                ["SET", "s", "x"], ["ZRANGE", "s", "0", "-1"], ["ZRANGE", "s", "x", "y"],
                ["ZRANGE", "s", "0", "1", "BYSCORE", "LIMIT", "x", "1"]]),
    ("zrangebyscore", [["ZADD", "z", "1", "a", "2", "b", "3", "c", "4", "d", "5", "e"],
                       ["ZRANGEBYSCORE", "z", "-inf", "+inf"], ["ZRANGEBYSCORE", "z", "(1", "3", "WITHSCORES"],
                       ["ZRANGEBYSCORE", "z", "2", "5", "LIMIT", "1", "2"],
                       ["ZRANGEBYSCORE", "z", "2", "5", "WITHSCORES", "LIMIT", "1", "-5"],
                       ["ZRANGEBYSCORE", "z", "2", "5", "LIMIT", "1"], ["ZRANGEBYSCORE", "z", "2", "5", "BOGUS"],
                       ["ZRANGEBYSCORE", "z", "2", "5", "REV"], ["ZRANGEBYSCORE", "z", "x", "5"],
                       ["ZREVRANGEBYSCORE", "z", "+inf", "-inf"], ["ZREVRANGEBYSCORE", "z", "4", "(2", "WITHSCORES"],
                       ["ZREVRANGEBYSCORE", "z", "2", "4"], ["ZREVRANGEBYSCORE", "z", "5", "1", "LIMIT", "1", "2"],
                       ["ZREVRANGEBYSCORE", "z", "5", "x"], ["ZRANGEBYSCORE", "z"], ["ZREVRANGEBYSCORE", "z", "1"],
                       ["ZRANGEBYSCORE", "nope", "0", "1"], ["ZRANGEBYLEX", "z", "-", "+"],
                       ["ZRANGEBYLEX", "z", "[b", "(d"], ["ZRANGEBYLEX", "z", "-", "+", "LIMIT", "2", "2"],
                       ["ZRANGEBYLEX", "z", "-", "+", "WITHSCORES"], ["ZRANGEBYLEX", "z", "a", "+"],
                       ["ZREVRANGEBYLEX", "z", "+", "-"], ["ZREVRANGEBYLEX", "z", "(d", "[b"],
                       ["ZREVRANGEBYLEX", "z", "+", "-", "LIMIT", "1", "1"], ["ZREVRANGEBYLEX", "z", "-", "x"],
                       ["ZREVRANGE", "z", "0", "-1"], ["ZREVRANGE", "z", "0", "1", "WITHSCORES"],
                       ["ZREVRANGE", "z", "0", "1", "BYSCORE"], ["ZREVRANGE", "z", "x", "1"],
                       ["SET", "s", "x"], ["ZRANGEBYSCORE", "s", "0", "1"], ["ZREVRANGEBYLEX", "s", "+", "-"],
                       ["ZREVRANGE", "s", "0", "1"]]),
    ("zrangestore", [["ZADD", "z", "1", "a", "2", "b", "3", "c", "4", "d"], ["ZRANGESTORE", "d", "z", "0", "1"],
                     ["ZRANGE", "d", "0", "-1", "WITHSCORES"], ["ZRANGESTORE", "d", "z", "(1", "+inf", "BYSCORE", "LIMIT", "0", "2"],
                     ["ZRANGE", "d", "0", "-1", "WITHSCORES"], ["ZRANGESTORE", "d", "z", "[c", "-", "BYLEX", "REV"],
                     ["ZRANGE", "d", "0", "-1"], ["ZRANGESTORE", "d", "z", "5", "10"], ["EXISTS", "d"],
                     ["ZRANGESTORE", "d", "z", "0", "-1", "WITHSCORES"], ["ZRANGESTORE", "d", "nope", "0", "-1"],
                     ["SET", "d", "str"], ["ZRANGESTORE", "d", "z", "0", "0"], ["TYPE", "d"],
                     ["SET", "s", "x"], ["ZRANGESTORE", "d", "s", "0", "1"], ["ZRANGESTORE", "d", "z"],
                     ["ZRANGESTORE", "z", "z", "1", "2"], ["ZRANGE", "z", "0", "-1"],
                     ["PEXPIREAT", "z", "4102444800123"], ["ZRANGESTORE", "e", "z", "0", "0"], ["PTTL", "e"]]),
    ("zpop", [["ZADD", "z", "1", "a", "2", "b", "3", "c", "4", "d", "5", "e"], ["ZPOPMIN", "z"], ["ZPOPMAX", "z"],
              ["ZPOPMIN", "z", "2"], ["ZPOPMAX", "z", "0"], ["ZPOPMAX", "z", "-1"], ["ZPOPMIN", "z", "x"],
              ["ZPOPMIN", "z", "10"], ["EXISTS", "z"], ["ZPOPMIN", "z"], ["ZPOPMAX", "nope", "3"],
              ["ZPOPMIN", "nope", "x"], ["ZPOPMIN", "z", "1", "2"], ["ZPOPMIN"],
              ["SET", "s", "x"], ["ZPOPMIN", "s"], ["ZPOPMAX", "s", "x"]]),
    ("zmpop", [["ZADD", "z", "1", "a", "2", "b", "3", "c"], ["ZADD", "y", "10", "x"],
               ["ZMPOP", "2", "nope", "z", "MIN"], ["ZMPOP", "2", "z", "y", "MAX", "COUNT", "5"],
               ["ZMPOP", "1", "z", "min", "count", "1"], ["ZMPOP", "1", "nope", "MIN"],
               ["ZMPOP", "0", "z", "MIN"], ["ZMPOP", "-1", "z", "MIN"], ["ZMPOP", "x", "z", "MIN"],
               ["ZMPOP", "3", "z", "MIN"], ["ZMPOP", "1", "z"], ["ZMPOP", "1", "z", "BOGUS"],
               ["ZMPOP", "1", "z", "MIN", "COUNT"], ["ZMPOP", "1", "z", "MIN", "COUNT", "0"],
               ["ZMPOP", "1", "z", "MIN", "COUNT", "-1"], ["ZMPOP", "1", "z", "MIN", "COUNT", "x"],
               ["ZMPOP", "1", "z", "MIN", "COUNT", "1", "COUNT", "2"], ["ZMPOP", "1", "z", "MIN", "BOGUS"],
               ["ZMPOP", "1", "y", "MAX"], ["EXISTS", "y"], ["ZMPOP", "1"], ["SET", "s", "x"],
               ["ZMPOP", "2", "s", "z", "MIN"], ["ZMPOP", "2", "nope", "s", "MIN"]]),
    # the blocking pops as they run without waiting (a set with members, inside MULTI), every
    # argument error (answered before any wait), and short timeouts on empty keys (*-1)
    ("zset_blocking", [["ZADD", "z", "1", "a", "2", "b", "3", "c", "4", "d", "5", "e"], ["ZADD", "y", "10", "x"],
                       ["BZPOPMIN", "nope", "z", "0"], ["BZPOPMAX", "nope", "z", "1.5"], ["bzpopmin", "z", "y", "0"],
                       ["BZMPOP", "0", "2", "nope", "z", "MIN"], ["BZMPOP", "0", "2", "nope", "z", "MAX", "COUNT", "10"],
                       ["BZMPOP", "0.5", "1", "y", "min", "count", "1"], ["EXISTS", "y"], ["EXISTS", "z"],
                       ["ZADD", "z", "1", "a", "2", "b", "3", "c"],
                       ["BZPOPMIN", "z", "x"], ["BZPOPMIN", "z", "-1"], ["BZPOPMIN", "z", "1e400"], ["BZPOPMIN", "z", "inf"],
                       ["BZPOPMIN", "z", "nan"], ["BZPOPMIN", "z", " 1"], ["BZPOPMIN", "z", "0x10"], ["BZPOPMIN", "z", ""],
                       ["BZPOPMAX", "z", "9223372036854775807"], ["BZPOPMAX", "z", "-0.0001"], ["BZPOPMIN", "z"],
                       ["BZPOPMAX", "z"], ["BZPOPMIN"],
                       ["BZMPOP", "x", "1", "z", "MIN"], ["BZMPOP", "-1", "1", "z", "MIN"], ["BZMPOP", "0", "0", "z", "MIN"],
                       ["BZMPOP", "x", "0", "z", "MIN"], ["BZMPOP", "0", "-1", "z", "MIN"], ["BZMPOP", "0", "x", "z", "MIN"],
                       ["BZMPOP", "0", "3", "z", "MIN"], ["BZMPOP", "0", "2", "z", "MIN"], ["BZMPOP", "0", "1", "z", "UP"],
                       ["BZMPOP", "-1", "1", "z", "UP"], ["BZMPOP", "0", "1", "z", "MIN", "COUNT", "0"],
                       ["BZMPOP", "x", "1", "z", "MIN", "COUNT", "0"], ["BZMPOP", "0", "1", "z", "MIN", "COUNT", "-1"],
                       ["BZMPOP", "0", "1", "z", "MIN", "COUNT", "x"], ["BZMPOP", "0", "1", "z", "MIN", "COUNT"],
                       ["BZMPOP", "0", "1", "z", "MIN", "COUNT", "1", "COUNT", "2"], ["BZMPOP", "0", "1", "z", "MIN", "BOGUS"],
                       ["BZMPOP", "0", "1", "z"], ["BZMPOP", "0", "9223372036854775807", "z", "MIN"],
                       ["BZMPOP", "9223372036854775807", "1", "z", "MIN"], ["ZRANGE", "z", "0", "-1", "WITHSCORES"],
                       ["SET", "s", "v"], ["BZPOPMIN", "s", "0"], ["BZPOPMIN", "nope", "s", "0"], ["BZPOPMAX", "z", "s", "0"],
                       ["BZMPOP", "0", "2", "nope", "s", "MIN"], ["BZMPOP", "0", "2", "s", "z", "MAX"],
                       ["RPUSH", "l", "1"], ["BZPOPMIN", "l", "0"], ["ZADD", "z", "7", "q"], ["BLPOP", "z", "0"], ["BZMPOP", "0", "1", "l", "MIN"],
                       ["ZADD", "f", "inf", "a", "-inf", "b", "1.5", "c", "-0", "d", "1e-5", "e"], ["BZPOPMAX", "f", "0"],
                       ["BZPOPMIN", "f", "0"], ["BZMPOP", "0", "1", "f", "MIN", "COUNT", "2"], ["BZPOPMIN", "f", "0"],
                       ["BZPOPMIN", "empty", "0.01"], ["BZPOPMAX", "empty", "empty2", "0.02"],
                       ["BZMPOP", "0.01", "2", "empty", "empty2", "MIN", "COUNT", "3"],
                       ["ZADD", "m", "1", "a", "2", "b", "3", "c"],
                       ["MULTI"], ["BZPOPMIN", "empty", "0"], ["BZPOPMAX", "empty", "1"], ["BZMPOP", "0", "1", "empty", "MIN"],
                       ["BZPOPMIN", "m", "0"], ["BZMPOP", "0", "1", "m", "MAX", "COUNT", "5"], ["BZPOPMIN", "m", "x"],
                       ["BZPOPMIN", "m", "0"], ["EXEC"], ["EXISTS", "m"],
                       ["MULTI"], ["BZMPOP", "0", "1", "m"], ["BZPOPMIN"], ["EXEC"]]),
    ("zremrange", [["ZADD", "z", "1", "a", "2", "b", "3", "c", "4", "d", "5", "e"],
                   ["ZREMRANGEBYRANK", "z", "0", "0"], ["ZREMRANGEBYRANK", "z", "-1", "-1"],
                   ["ZREMRANGEBYRANK", "z", "5", "10"], ["ZREMRANGEBYRANK", "z", "2", "1"],
                   ["ZRANGE", "z", "0", "-1"], ["ZREMRANGEBYRANK", "z", "x", "1"],
                   ["ZREMRANGEBYSCORE", "z", "(2", "3"], ["ZREMRANGEBYSCORE", "z", "x", "3"],
                   ["ZREMRANGEBYSCORE", "z", "10", "20"], ["ZRANGE", "z", "0", "-1"],
                   ["ZADD", "l", "0", "a", "0", "b", "0", "c", "0", "d"], ["ZREMRANGEBYLEX", "l", "[b", "(d"],
                   ["ZREMRANGEBYLEX", "l", "x", "+"], ["ZRANGE", "l", "0", "-1"], ["ZREMRANGEBYLEX", "l", "-", "+"],
                   ["EXISTS", "l"], ["ZREMRANGEBYRANK", "z", "0", "-1"], ["EXISTS", "z"],
                   ["ZREMRANGEBYRANK", "nope", "0", "1"], ["ZREMRANGEBYSCORE", "nope", "x", "1"],
                   ["ZREMRANGEBYLEX", "nope", "-", "+"], ["ZREMRANGEBYRANK", "z", "0"], ["SET", "s", "x"],
                   ["ZREMRANGEBYRANK", "s", "0", "1"], ["ZREMRANGEBYSCORE", "s", "0", "1"],
                   ["ZREMRANGEBYLEX", "s", "-", "+"]]),
    ("zsetops", [["ZADD", "a", "1", "x", "2", "y", "3", "z"], ["ZADD", "b", "10", "y", "20", "z", "30", "w"],
                 ["ZUNION", "2", "a", "b"], ["ZUNION", "2", "a", "b", "WITHSCORES"],
                 ["ZUNION", "2", "a", "b", "WEIGHTS", "2", "0.5", "WITHSCORES"],
                 ["ZUNION", "2", "a", "b", "AGGREGATE", "MIN", "WITHSCORES"],
                 ["ZUNION", "2", "a", "b", "AGGREGATE", "max", "WITHSCORES"],
                 ["ZUNION", "3", "a", "b", "nope", "WITHSCORES"], ["ZINTER", "2", "a", "b", "WITHSCORES"],
                 ["ZINTER", "2", "a", "b", "WEIGHTS", "1", "-1", "AGGREGATE", "SUM", "WITHSCORES"],
                 ["ZINTER", "2", "a", "nope"], ["ZDIFF", "2", "a", "b", "WITHSCORES"], ["ZDIFF", "1", "a"],
                 ["ZDIFF", "2", "nope", "a"], ["ZDIFF", "2", "a", "b", "WEIGHTS", "1", "1"],
                 ["ZDIFF", "2", "a", "b", "AGGREGATE", "MIN"], ["ZUNION", "0", "a"], ["ZUNION", "-1", "a"],
                 ["ZUNION", "x", "a"], ["ZUNION", "3", "a", "b"], ["ZUNION", "2", "a", "b", "WEIGHTS", "1"],
                 ["ZUNION", "2", "a", "b", "WEIGHTS", "1", "x"], ["ZUNION", "2", "a", "b", "WEIGHTS", "1", "nan"],
                 ["ZUNION", "2", "a", "b", "AGGREGATE"], ["ZUNION", "2", "a", "b", "AGGREGATE", "AVG"],
                 ["ZUNION", "2", "a", "b", "BOGUS"], ["ZINTER", "2", "a", "b", "WITHSCORES", "WITHSCORES"],
                 ["ZADD", "i", "inf", "x", "-inf", "y"], ["ZUNION", "2", "i", "i", "WITHSCORES"],
                 ["ZUNION", "2", "i", "a", "WEIGHTS", "0", "1", "WITHSCORES"],
                 ["ZINTER", "2", "i", "i", "WEIGHTS", "1", "-1", "WITHSCORES"],
                 ["ZUNIONSTORE", "d", "2", "a", "b"], ["ZRANGE", "d", "0", "-1", "WITHSCORES"],
                 ["ZINTERSTORE", "d", "2", "a", "b", "WEIGHTS", "2", "3", "AGGREGATE", "MAX"],
                 ["ZRANGE", "d", "0", "-1", "WITHSCORES"], ["ZDIFFSTORE", "d", "2", "a", "b"],
                 ["ZRANGE", "d", "0", "-1", "WITHSCORES"], ["ZINTERSTORE", "d", "2", "a", "nope"], ["EXISTS", "d"],
                 ["ZUNIONSTORE", "d", "2", "a", "b", "WITHSCORES"], ["ZUNIONSTORE", "d", "0", "a"],
                 ["ZUNIONSTORE", "a", "2", "a", "b"], ["ZRANGE", "a", "0", "-1", "WITHSCORES"],
                 ["ZDIFFSTORE", "d", "1", "nope"], ["SET", "s", "x"], ["ZUNION", "2", "a", "s"],
                 ["ZUNIONSTORE", "d", "1", "s"], ["ZUNIONSTORE", "s", "1", "a"], ["TYPE", "s"],
                 ["ZINTERCARD", "2", "a", "b"], ["ZINTERCARD", "2", "a", "b", "LIMIT", "1"],
                 ["ZINTERCARD", "2", "a", "b", "LIMIT", "0"], ["ZINTERCARD", "2", "a", "b", "LIMIT", "-1"],
                 ["ZINTERCARD", "2", "a", "b", "LIMIT", "x"], ["ZINTERCARD", "1", "nope"], ["ZINTERCARD", "0", "a"],
                 ["ZINTERCARD", "3", "a", "b"], ["ZINTERCARD", "2", "a", "b", "BOGUS"], ["ZINTERCARD", "1"],
                 ["ZINTERCARD", "2", "a", "s"], ["ZINTER", "1", "s"], ["ZDIFF", "2", "nope", "s"]]),
    # plain sets as inputs: every member with score 1 (Redis's zuiInitIterator)
    ("zsetops on sets", [["ZADD", "a", "1", "x", "2", "y", "3", "z"], ["SADD", "p", "y", "z", "v"],
                         ["SADD", "n", "1", "2", "3", "-5"], ["SADD", "big"] + ["b%03d" % i for i in range(600)],
                         ["SADD", "long", "x" * 70, "y"],
                         ["ZUNION", "2", "a", "p", "WITHSCORES"], ["ZUNION", "1", "p"],
                         ["ZUNION", "2", "p", "n", "WITHSCORES"],
                         ["ZUNION", "2", "a", "p", "WEIGHTS", "2", "5", "AGGREGATE", "MAX", "WITHSCORES"],
                         ["ZUNION", "2", "a", "p", "AGGREGATE", "MIN", "WITHSCORES"],
                         ["ZINTER", "2", "a", "p", "WITHSCORES"], ["ZINTER", "2", "p", "a", "WEIGHTS", "-1", "1", "WITHSCORES"],
                         ["ZINTER", "2", "p", "nope"], ["ZDIFF", "2", "p", "a", "WITHSCORES"],
                         ["ZDIFF", "2", "a", "p", "WITHSCORES"], ["ZDIFF", "1", "n", "WITHSCORES"],
                         ["ZINTERCARD", "2", "a", "p"], ["ZINTERCARD", "2", "p", "p", "LIMIT", "2"],
                         ["ZINTERCARD", "1", "big"], ["ZUNION", "2", "big", "a", "WITHSCORES"],
                         ["ZUNIONSTORE", "d", "2", "a", "p"], ["ZRANGE", "d", "0", "-1", "WITHSCORES"],
                         ["OBJECT", "ENCODING", "d"], ["ZINTERSTORE", "d", "2", "p", "a", "WEIGHTS", "3", "1"],
                         ["ZRANGE", "d", "0", "-1", "WITHSCORES"], ["ZDIFFSTORE", "d", "2", "p", "a"],
                         ["ZRANGE", "d", "0", "-1", "WITHSCORES"], ["ZUNIONSTORE", "d", "1", "big"], ["ZCARD", "d"],
                         ["OBJECT", "ENCODING", "d"], ["ZUNIONSTORE", "d", "1", "long"], ["OBJECT", "ENCODING", "d"],
                         ["ZUNIONSTORE", "p", "1", "p"], ["TYPE", "p"], ["ZRANGE", "p", "0", "-1", "WITHSCORES"],
                         ["SET", "str", "v"], ["ZUNION", "2", "n", "str"], ["ZINTERCARD", "2", "n", "str"],
                         ["LPUSH", "l", "x"], ["ZDIFF", "2", "n", "l"], ["HSET", "h", "f", "v"], ["ZINTER", "2", "h", "n"]]),
    ("zrandmember", [["ZRANDMEMBER", "nope"], ["ZRANDMEMBER", "nope", "3"], ["ZRANDMEMBER", "nope", "3", "WITHSCORES"],
                     ["ZADD", "z", "1", "a", "2", "b", "3.5", "c"], ["ZRANDMEMBER", "z", "0"],
                     ["ZRANDMEMBER", "z", "5"], ["ZRANDMEMBER", "z", "3", "WITHSCORES"],
                     ["ZRANDMEMBER", "z", "x"], ["ZRANDMEMBER", "z", "1", "BOGUS"], ["ZRANDMEMBER", "z", "1", "2"],
                     ["ZRANDMEMBER", "z", str(-2**63)],
                     ["ZRANDMEMBER", "z", "-5", "WITHSCORES"], ["ZRANDMEMBER", "z", "2"], ["ZRANDMEMBER", "z"],
                     ["ZRANDMEMBER", "z", "-1"], ["SET", "s", "x"], ["ZRANDMEMBER", "s"], ["ZRANDMEMBER", "s", "x"]]),
    ("zscan", [["ZADD", "z", "1", "a", "2.5", "b", "1e20", "c", "-0", "d", "inf", "e", "1.1", "f"],
               ["ZSCAN", "z", "0"], ["ZSCAN", "z", "0", "MATCH", "[a-c]"], ["ZSCAN", "z", "0", "COUNT", "1"],
               ["ZSCAN", "z", "0", "COUNT", "0"], ["ZSCAN", "z", "0", "COUNT", "x"], ["ZSCAN", "z", "x"],
               ["ZSCAN", "z", "-1"], ["ZSCAN", "z", "0", "TYPE", "zset"], ["ZSCAN", "z", "0", "MATCH"],
               ["ZSCAN", "z", "0", "BOGUS", "1"], ["ZSCAN", "nope", "0"], ["ZSCAN", "nope", "x"], ["ZSCAN", "z"],
               ["SET", "s", "x"], ["ZSCAN", "s", "0"], ["ZSCAN", "s", "x"]]),
    ("big", [["ZADD", "b"] + [x for i in range(140) for x in (str(i * 1.5), "m%03d" % i)],
             ["OBJECT", "ENCODING", "b"], ["ZCARD", "b"], ["ZRANGE", "b", "10", "15", "WITHSCORES"],
             ["ZRANK", "b", "m100"], ["ZREVRANK", "b", "m100"], ["ZCOUNT", "b", "(15", "100"],
             ["ZRANGE", "b", "50", "60", "BYSCORE", "WITHSCORES"], ["ZADD", "b", "-0", "negzero"],
             ["ZSCORE", "b", "negzero"], ["ZREMRANGEBYRANK", "b", "0", "100"], ["ZCARD", "b"],
             ["OBJECT", "ENCODING", "b"], ["ZRANGESTORE", "c", "b", "0", "3"], ["OBJECT", "ENCODING", "c"],
             ["ZADD", "c", "1", "x" * 65], ["OBJECT", "ENCODING", "c"], ["ZADD", "e", "1", "x" * 64],
             ["OBJECT", "ENCODING", "e"], ["ZADD", "e", "-0", "nz"], ["ZSCORE", "e", "nz"],
             ["ZADD", "f"] + [x for i in range(129) for x in ("1", "same")], ["OBJECT", "ENCODING", "f"],
             ["ZUNIONSTORE", "g", "1", "f"], ["OBJECT", "ENCODING", "g"], ["COPY", "b", "h"],
             ["OBJECT", "ENCODING", "h"], ["ZRANGE", "h", "0", "3", "WITHSCORES"],
             ["ZADD", "lex"] + [x for i in range(200) for x in ("0", "w%03d" % i)],
             ["ZRANGEBYLEX", "lex", "[w100", "(w105"], ["ZLEXCOUNT", "lex", "(w010", "[w150"],
             ["ZREMRANGEBYLEX", "lex", "-", "(w190"], ["ZRANGE", "lex", "0", "-1"],
             ["ZPOPMIN", "b", "3"], ["ZPOPMAX", "b", "2"]]),
    ("zset_keyspace", [["ZADD", "z", "1", "a", "2", "b"], ["TYPE", "z"], ["RENAME", "z", "y"], ["ZRANGE", "y", "0", "-1"],
                       ["COPY", "y", "x"], ["ZADD", "x", "3", "c"], ["ZCARD", "y"], ["ZCARD", "x"],
                       ["PEXPIREAT", "x", "1"], ["ZCARD", "x"], ["ZADD", "x", "1", "q"], ["ZRANGE", "x", "0", "-1"],
                       ["GET", "y"], ["SET", "y", "v"], ["TYPE", "y"], ["ZADD", "k", "1", "a"], ["DEL", "k"],
                       ["ZCARD", "k"], ["SCAN", "0", "TYPE", "zset"], ["OBJECT", "REFCOUNT", "x"],
                       ["INCR", "x"], ["APPEND", "x", "a"], ["XLEN", "x"], ["GETRANGE", "x", "0", "1"],
                       ["SETRANGE", "x", "0", "a"], ["BITCOUNT", "x"]]),
    ("zset_getkeys", [["COMMAND", "GETKEYS"] + c for c in (
        ["zadd", "a", "1", "m"], ["zrange", "a", "0", "1"], ["zrangestore", "d", "a", "0", "1"],
        ["zunion", "2", "a", "b"], ["zunionstore", "d", "2", "a", "b"], ["zinterstore", "d", "2", "a", "b"],
        ["zdiffstore", "d", "2", "a", "b"], ["zintercard", "2", "a", "b"], ["zmpop", "2", "a", "b", "MIN"],
        ["zunion", "x", "a"], ["zunion", "0", "a"], ["zunion", "3", "a", "b"], ["zunion", "1", "a", "WITHSCORES"],
        ["zunionstore", "d", "2", "a", "b", "WEIGHTS", "1", "2"], ["zmpop", "5", "a", "b", "MIN"],
        ["zintercard", "1", "a"], ["zdiffstore", "d", "1", "a"], ["zinter", "1", "a"], ["zdiff", "2", "a", "b"],
        ["zscan", "a", "0"], ["zmscore", "a", "m"], ["zrandmember", "a"], ["zpopmin", "a"],
        ["bzpopmin", "a", "b", "0"], ["bzpopmax", "a", "1"], ["bzmpop", "0", "2", "a", "b", "MIN"],
        ["bzmpop", "1.5", "1", "a", "MAX", "COUNT", "2"], ["bzmpop", "0", "5", "a", "b", "MIN"],
        ["bzmpop", "0", "x", "a", "MIN"], ["bzmpop", "0", "0", "a", "MIN"])]),
    ("zset_arity", [["ZADD", "z", "1"], ["ZINCRBY", "z", "1"], ["ZREM", "z"], ["ZCARD"], ["ZSCORE", "z"],
                    ["ZMSCORE", "z"], ["ZCOUNT", "z", "1"], ["ZLEXCOUNT", "z", "1"], ["ZRANK", "z"],
                    ["ZREVRANK", "z"], ["ZRANGE", "z", "1"], ["ZRANGESTORE", "d", "z", "1"],
                    ["ZRANGEBYSCORE", "z", "1"], ["ZREVRANGEBYSCORE", "z", "1"], ["ZRANGEBYLEX", "z", "1"],
                    ["ZREVRANGEBYLEX", "z", "1"], ["ZREVRANGE", "z", "1"], ["ZPOPMIN"], ["ZPOPMAX"],
                    ["ZMPOP", "1", "z"], ["BZPOPMIN", "z"], ["BZPOPMAX", "z"], ["BZMPOP", "0", "1", "z"],
                    ["ZRANDMEMBER"], ["ZREMRANGEBYSCORE", "z", "1"],
                    ["ZREMRANGEBYRANK", "z", "1"], ["ZREMRANGEBYLEX", "z", "1"], ["ZUNION", "1"],
                    ["ZINTER", "1"], ["ZDIFF", "1"], ["ZUNIONSTORE", "d", "1"], ["ZINTERSTORE", "d", "1"],
                    ["ZDIFFSTORE", "d", "1"], ["ZINTERCARD", "1"], ["ZSCAN", "z"]]),
    ("zset_multi", [["MULTI"], ["ZADD", "z", "1", "a"], ["ZADD", "z", "x", "b"], ["ZADD", "z", "NX", "XX", "1", "c"],
                    ["ZINCRBY", "z", "2", "a"], ["ZRANGE", "z", "0", "-1", "WITHSCORES"], ["EXEC"],
                    ["MULTI"], ["ZADD", "z"], ["ZCARD", "z"], ["EXEC"], ["ZCARD", "z"]]),
]

def normalize(cmd, reply):
    """ZRANDMEMBER picks at random (any valid pick will do; see check_zrandmember); ZSCAN
    of a hash-table-encoded set in its hash order."""
    name = str(cmd[0]).upper()
    if name == "ZRANDMEMBER" and len(cmd) >= 3 and reply.startswith(b"*"):
        try:
            count = int(cmd[2])
        except ValueError:
            return reply
        if count < 0 or (reply.startswith(b"*") and not reply.startswith(b"*0")):
            # the length is fixed by the count; which members is the server's choice
            return reply.split(b"\r\n", 1)[0] + b"\r\n<members>"
    if name == "ZRANDMEMBER" and len(cmd) == 2 and reply.startswith(b"$") and reply != b"$-1\r\n":
        return b"$<member>"
    return reply


def check_zrandmember(conn):
    """keel's ZRANDMEMBER answers the same kind of pick as Redis: members of the set,
    distinct for a positive count, count of them for a negative one, scores their own."""
    conn.call("DEL", "rz")
    conn.call("ZADD", "rz", "1", "a", "2", "b", "3", "c", "4", "d", "5", "e")
    scores = {b"a": b"1", b"b": b"2", b"c": b"3", b"d": b"4", b"e": b"5"}
    for count in (1, 2, 4, 5, 9, -1, -3, -12):
        r = conn.call("ZRANDMEMBER", "rz", str(count), "WITHSCORES")
        parts = r.split(b"\r\n")
        n = int(parts[0][1:])
        items = parts[2:-1:2]
        assert n == 2 * (abs(count) if count < 0 else min(count, 5)), (count, r)
        members, ss = items[0::2], items[1::2]
        for m, s in zip(members, ss):
            assert scores[m] == s, (count, r)
        if count > 0:
            assert len(set(members)) == len(members), (count, r)
    r = conn.call("ZRANDMEMBER", "rz")
    assert r.split(b"\r\n")[1] in scores, r


def full_zscan(port):
    """A whole ZSCAN of a set past 128 members (Redis: a hash table, scanned in its own
    order) with scores of every shape: the (member, score text) pairs, sorted, must be
    Redis's; the cursor walk itself is each server's."""
    c = RespConn(port)
    try:
        c.call("DEL", "bigscan")
        scores = ["1.1", "1e20", "0.1", "-0", "0.3333333333333333", "123456789.123", "-2.5e-7",
                  "inf", "-inf", "4e-320", "1e300", "7", "-12345678901234567890"]
        args = []
        for i in range(200):
            args += [scores[i % len(scores)], "m%03d" % i]
        c.call("ZADD", "bigscan", *args)
        c.call("ZADD", "bigscan", "-0", "negz", "1e17", "e17")  # kept as is once past listpack
        pairs, cursor, rounds = [], b"0", 0
        while True:
            r = c.call("ZSCAN", "bigscan", cursor, "COUNT", "7")
            parts = r.split(b"\r\n")
            cursor = parts[2]
            items = parts[5:-1:2]
            pairs += list(zip(items[0::2], items[1::2]))
            rounds += 1
            assert rounds < 1000
            if cursor == b"0":
                break
        return sorted(set(pairs))
    finally:
        c.close()


# ---- the seeded random sequence ----------------------------------------------------------

MEMBERS = ["a", "b", "c", "d", "e", "f", "", "aa", "b\x00"]
SCORES = ["0", "1", "-1", "2.5", "1e3", "-0", "inf", "-inf", "0.1", "1e-5", "x", "nan", "3"]
BOUNDS = ["-inf", "+inf", "0", "1", "(1", "2.5", "(2.5", "-1", "x", "(", "1e3", "(inf"]
LEX = ["-", "+", "[a", "(a", "[b", "(c", "[", "(", "[aa", "x", "[e"]


def random_commands(rng, k):
    """Zset commands for the random sequence of test_redis_diff.py (keys from k())."""
    m = lambda: rng.choice(MEMBERS)  # noqa: E731
    s = lambda: rng.choice(SCORES)  # noqa: E731
    b = lambda: rng.choice(BOUNDS)  # noqa: E731
    lx = lambda: rng.choice(LEX)  # noqa: E731
    i = lambda: str(rng.randint(-6, 6))  # noqa: E731
    opts = lambda: rng.sample(["NX", "XX", "GT", "LT", "CH"], rng.randint(0, 2))  # noqa: E731
    return [
        lambda: ["ZADD", k()] + opts() + [x for _ in range(rng.randint(1, 3)) for x in (s(), m())],
        lambda: ["ZADD", k()] + opts() + [s(), m()],
        lambda: ["ZADD", k(), "INCR"] + opts() + [s(), m()],
        lambda: ["ZINCRBY", k(), s(), m()],
        lambda: ["ZREM", k(), m(), m()],
        lambda: ["ZCARD", k()],
        lambda: ["ZSCORE", k(), m()],
        lambda: ["ZMSCORE", k(), m(), m()],
        lambda: ["ZCOUNT", k(), b(), b()],
        lambda: ["ZLEXCOUNT", k(), lx(), lx()],
        lambda: [rng.choice(["ZRANK", "ZREVRANK"]), k(), m()],
        lambda: ["ZRANGE", k(), i(), i()] + rng.choice([[], ["WITHSCORES"], ["REV"], ["REV", "WITHSCORES"]]),
        lambda: ["ZRANGE", k(), b(), b(), "BYSCORE"] + rng.choice([[], ["REV"]]) +
        rng.choice([[], ["LIMIT", i(), i()]]) + rng.choice([[], ["WITHSCORES"]]),
        lambda: ["ZRANGE", k(), lx(), lx(), "BYLEX"] + rng.choice([[], ["REV"]]) +
        rng.choice([[], ["LIMIT", i(), i()]]),
        lambda: ["ZRANGESTORE", k(), k(), i(), i()] + rng.choice([[], ["REV"]]),
        lambda: [rng.choice(["ZRANGEBYSCORE", "ZREVRANGEBYSCORE"]), k(), b(), b()] +
        rng.choice([[], ["WITHSCORES"], ["LIMIT", i(), i()]]),
        lambda: [rng.choice(["ZRANGEBYLEX", "ZREVRANGEBYLEX"]), k(), lx(), lx()] +
        rng.choice([[], ["LIMIT", i(), i()]]),
        lambda: ["ZREVRANGE", k(), i(), i()] + rng.choice([[], ["WITHSCORES"]]),
        lambda: [rng.choice(["ZPOPMIN", "ZPOPMAX"]), k()] + rng.choice([[], [str(rng.randint(-1, 3))]]),
        lambda: ["ZMPOP", "2", k(), k(), rng.choice(["MIN", "MAX"])] + rng.choice([[], ["COUNT", str(rng.randint(0, 3))]]),
        lambda: ["ZREMRANGEBYSCORE", k(), b(), b()],
        lambda: ["ZREMRANGEBYRANK", k(), i(), i()],
        lambda: ["ZREMRANGEBYLEX", k(), lx(), lx()],
        lambda: [rng.choice(["ZUNION", "ZINTER", "ZDIFF"]), "2", k(), k()] +
        rng.choice([[], ["WITHSCORES"], ["AGGREGATE", rng.choice(["SUM", "MIN", "MAX"]), "WITHSCORES"],
                    ["WEIGHTS", s(), s(), "WITHSCORES"]]),
        lambda: [rng.choice(["ZUNIONSTORE", "ZINTERSTORE", "ZDIFFSTORE"]), k(), "2", k(), k()] +
        rng.choice([[], ["AGGREGATE", rng.choice(["SUM", "MIN", "MAX"])]]),
        lambda: ["ZINTERCARD", "2", k(), k()] + rng.choice([[], ["LIMIT", str(rng.randint(0, 2))]]),
        lambda: ["SADD", k(), m(), m()],  # plain sets as the operations' inputs
        lambda: ["ZSCAN", k(), "0"] + rng.choice([[], ["MATCH", "[a-c]*"]]),
        lambda: ["ZRANDMEMBER", k(), str(rng.choice([0, 5, 10, 20]))] + rng.choice([[], ["WITHSCORES"]]),
    ]


def random_table(rng, k):
    return random_commands(rng, k)


_ = random  # the module's users seed their own random.Random


# ---- big sets: the skiplist encoding ------------------------------------------------------

BIG_MEMBERS = ["m%03d" % i for i in range(180)]


def big_setup(rng):
    """Two sets past 128 members (Redis: skiplist): "bz" with mixed scores and "bl" with
    every score 0, the case Redis specifies lex ranges for."""
    bz, bl = ["ZADD", "bz"], ["ZADD", "bl"]
    for m in BIG_MEMBERS:
        bz += [str(rng.choice([rng.randint(-50, 50), rng.randint(-5, 5) / 4])), m]
        bl += ["0", m]
    return [bz, bl, ["ZUNIONSTORE", "bu", "2", "bz", "bl", "WEIGHTS", "1", "2"]]


def big_commands(rng):
    """Score, rank and (on "bl") lex commands on the big sets; members stay >= 129 so the
    sets stay skiplist-encoded in Redis too (it never converts back)."""
    m = lambda: rng.choice(BIG_MEMBERS)  # noqa: E731
    k = lambda: rng.choice(["bz", "bu"])  # noqa: E731
    sc = lambda: str(rng.choice([rng.randint(-60, 60), rng.randint(-8, 8) / 4, "inf", "-inf"]))  # noqa: E731
    bd = lambda: rng.choice(["-inf", "+inf", "(" + str(rng.randint(-50, 50)), str(rng.randint(-50, 50))])  # noqa: E731
    lx = lambda: rng.choice(["-", "+", "[" + m(), "(" + m(), "[m1", "(m05"])  # noqa: E731
    i = lambda: str(rng.randint(-200, 200))  # noqa: E731
    return [
        lambda: ["ZADD", k(), sc(), m()],
        lambda: ["ZADD", k()] + rng.sample(["GT", "LT", "CH", "XX"], 1) + [sc(), m(), sc(), m()],
        lambda: ["ZINCRBY", k(), sc(), m()],
        lambda: ["ZADD", "bl", "0", m()],
        lambda: ["ZSCORE", k(), m()],
        lambda: ["ZMSCORE", k(), m(), m()],
        lambda: [rng.choice(["ZRANK", "ZREVRANK"]), rng.choice(["bz", "bu", "bl"]), m()],
        lambda: ["ZCOUNT", k(), bd(), bd()],
        lambda: ["ZLEXCOUNT", "bl", lx(), lx()],
        lambda: ["ZRANGE", k(), i(), i()] + rng.choice([[], ["REV"], ["WITHSCORES"]]),
        lambda: ["ZRANGE", k(), bd(), bd(), "BYSCORE"] + rng.choice([[], ["REV"]]) +
        rng.choice([[], ["LIMIT", str(rng.randint(0, 20)), str(rng.randint(-1, 20))]]) + ["WITHSCORES"],
        lambda: ["ZRANGE", "bl", lx(), lx(), "BYLEX"] + rng.choice([[], ["REV"]]) +
        rng.choice([[], ["LIMIT", str(rng.randint(0, 20)), str(rng.randint(-1, 20))]]),
        lambda: ["ZREMRANGEBYLEX", "bl", "[" + m(), "(" + m()] if rng.random() < 0.3 else ["ZCARD", "bl"],
        lambda: ["ZREMRANGEBYSCORE", k(), "(" + str(rng.randint(-50, 50)), str(rng.randint(-50, 50))]
        if rng.random() < 0.2 else ["ZCARD", k()],
        lambda: ["ZREM", k(), m()] if rng.random() < 0.3 else ["ZCARD", k()],
        lambda: ["ZUNIONSTORE", "bu", "2", "bz", "bl", "AGGREGATE", rng.choice(["MIN", "MAX", "SUM"])],
        lambda: ["ZINTER", "2", "bz", "bu", "WITHSCORES"],
        lambda: ["ZDIFF", "2", "bz", "bl", "WITHSCORES"],
        lambda: ["ZRANGESTORE", "bs", k(), i(), i()],
        lambda: ["ZRANGE", "bs", "0", "-1", "WITHSCORES"],
        lambda: ["OBJECT", "ENCODING", rng.choice(["bz", "bl", "bu", "bs"])],
    ]


def big_run(port, seed, n):
    """A seeded sequence over the big sets; keeps them past 128 members (re-adds when a
    removal shrinks one)."""
    rng = random.Random(seed)
    c = RespConn(port)
    out = []
    try:
        c.call("FLUSHALL")
        for cmd in big_setup(rng):
            out.append((cmd, c.call(*cmd)))
        table = big_commands(rng)
        for _ in range(n):
            cmd = rng.choice(table)()
            out.append((cmd, c.call(*cmd)))
    finally:
        c.close()
    return out
