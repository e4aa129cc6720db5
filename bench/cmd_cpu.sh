#!/bin/bash
# bench/cmd_cpu.sh - requests/s and server CPU per request of redis-benchmark's own tests, one
# keel node, for A/B runs of two binaries (a change to the path every command takes: lookup,
# dispatch, apply).
# usage: bench/cmd_cpu.sh KEEL LABEL PORT [N] [PIPELINE] [TESTS]
# Runs redis-benchmark -c 50 -P PIPELINE (default 16) -n N (default 300,000) -r 100000 -t T
# for each T in TESTS (default "set get incr sadd hset spop zadd lpush lpop") against a fresh
# node, and prints requests/s and the server's CPU us per request (utime+stime from
# /proc/PID/stat before and after), with the load average at the start of each test.
# The machine may be shared: alternate the binaries back to back (bench/RESULTS.md).
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/scratch.sh"
KEEL=$1 LABEL=$2 P=$3 N=${4:-300000} PIPE=${5:-16}
TESTS=${6:-"set get incr sadd hset spop zadd lpush lpop"}
tick=$(getconf CLK_TCK)
per() { awk -v t="$1" -v k="$tick" -v n="$2" 'BEGIN { printf "%.2f", t * 1000000 / k / n }'; }
d=$(keel_scratch cmdcpu)
"$KEEL" server --name n1 --data-dir "$d/n1" --initial-cluster n1=127.0.0.1:$((P + 100)) \
    --listen-client 127.0.0.1:$P --listen-http 127.0.0.1:$((P + 200)) >"$d/n1.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$d"' EXIT
for _ in $(seq 50); do redis-cli -p $P set x y 2>/dev/null | grep -q OK && break; sleep 0.1; done
for t in $TESTS; do
    load=$(cut -d' ' -f1 /proc/loadavg)
    read -r u0 s0 < <(awk '{print $14, $15}' /proc/$pid/stat)
    out=$(redis-benchmark -p $P -c 50 -P "$PIPE" -n "$N" -r 100000 -q -t "$t" 2>&1 |
        tr '\r' '\n' | grep -v '^$' | tail -1 | awk '{print $(NF-5)}')
    read -r u1 s1 < <(awk '{print $14, $15}' /proc/$pid/stat)
    printf '%s %-6s %10s rps %6s us/op load=%s\n' "$LABEL" "$t" "$out" \
        "$(per $((u1 + s1 - u0 - s0)) "$N")" "$load"
done
