#!/bin/bash
# bench/hash_cpu.sh - requests/s and server CPU per request of hash commands, one keel node,
# for A/B runs of two binaries (issue 19: a smaller resting form must not make commands slower).
# usage: bench/hash_cpu.sh KEEL LABEL PORT [N] [PIPELINE]
# Preloads 100,000 hashes h:<12 digits> of 5 fields f1..f5 (8-byte values, as bench/memory.sh),
# one of 16 fields (w16: the most a packed table holds) and one of 500 (w500: a chained table),
# then runs redis-benchmark -c 50 -P PIPELINE (default 16) -n N (default 200,000) per test:
#   hset5     HSET h:<rand> f3 <8 bytes>   (replaces a field of a 5-field hash)
#   hget5     HGET h:<rand> f3
#   hgetall5  HGETALL h:<rand>
#   hincrby5  HINCRBY h:<rand> n 1         (adds a sixth field, then increments it)
#   hset16 / hget16     HSET / HGET w16 f9
#   hset500 / hget500   HSET / HGET w500 f250
# and 100,000 sets s:<12 digits> of 5 integers (as bench/memory.sh's setint: inline in keel):
#   sismember5  SISMEMBER s:<rand> 3       (absent but in one key)
#   smembers5   SMEMBERS s:<rand>
#   sadd5       SADD s:<rand> 7            (adds a sixth member once per key, then present)
#   srem5       SREM s:<rand> 7
# Prints requests/s and the server's CPU us per request (utime+stime from /proc/PID/stat before
# and after), with the load average at the start of each test. Fresh data directory, removed.
# The machine may be shared: alternate the binaries back to back (bench/RESULTS.md).
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/scratch.sh"
KEEL=$1 LABEL=$2 P=$3 N=${4:-200000} PIPE=${5:-16}
tick=$(getconf CLK_TCK)
per() { awk -v t="$1" -v k="$tick" -v n="$2" 'BEGIN { printf "%.2f", t * 1000000 / k / n }'; }
d=$(keel_scratch hashcpu)
"$KEEL" server --name n1 --data-dir "$d/n1" --initial-cluster n1=127.0.0.1:$((P + 100)) \
    --listen-client 127.0.0.1:$P --listen-http 127.0.0.1:$((P + 200)) >"$d/n1.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$d"' EXIT
for _ in $(seq 50); do redis-cli -p $P set x y 2>/dev/null | grep -q OK && break; sleep 0.1; done
/usr/bin/python3 - >"$d/load.resp" <<'PY'
import sys
out = sys.stdout.buffer
def cmd(*a):
    b = [b"*%d\r\n" % len(a)]
    for x in a:
        x = x if isinstance(x, bytes) else str(x).encode()
        b.append(b"$%d\r\n%s\r\n" % (len(x), x))
    return b"".join(b)
out.write(b"".join(cmd("HSET", "h:%012d" % i,
                       *[x for k in range(1, 6) for x in ("f%d" % k, "v%07d" % (i + k))])
                   for i in range(100000)))
out.write(b"".join(cmd("SADD", "s:%012d" % i, *[i * 8 + k for k in range(5)])
                   for i in range(100000)))
out.write(cmd("HSET", "w16", *[x for k in range(16) for x in ("f%d" % k, "v%07d" % k)]))
out.write(cmd("HSET", "w500", *[x for k in range(500) for x in ("f%d" % k, "v%07d" % k)]))
PY
redis-cli -p $P --pipe <"$d/load.resp" | grep -q "errors: 0," || { echo "preload failed"; exit 1; }
run() { # name, command...
    local name=$1
    shift
    local load u0 s0 u1 s1 out
    load=$(cut -d' ' -f1 /proc/loadavg)
    read -r u0 s0 < <(awk '{print $14, $15}' /proc/$pid/stat)
    out=$(redis-benchmark -p $P -c 50 -P "$PIPE" -n "$N" -r 100000 -q "$@" 2>&1 |
        tr '\r' '\n' | grep -v '^$' | tail -1 | awk '{print $(NF-5)}')
    read -r u1 s1 < <(awk '{print $14, $15}' /proc/$pid/stat)
    printf '%s %-9s %10s rps %6s us/op load=%s\n' "$LABEL" "$name" "$out" \
        "$(per $((u1 + s1 - u0 - s0)) "$N")" "$load"
}
run hset5 HSET h:__rand_int__ f3 v1234567
run hget5 HGET h:__rand_int__ f3
run hgetall5 HGETALL h:__rand_int__
run hincrby5 HINCRBY h:__rand_int__ n 1
run hset16 HSET w16 f9 v7654321
run hget16 HGET w16 f9
run hset500 HSET w500 f250 v7654321
run hget500 HGET w500 f250
run sismember5 SISMEMBER s:__rand_int__ 3
run smembers5 SMEMBERS s:__rand_int__
run sadd5 SADD s:__rand_int__ 7
run srem5 SREM s:__rand_int__ 7
