#!/bin/bash
# bench/cpuop.sh - CPU per request of keel server under redis-benchmark, for A/B runs of two binaries.
# usage: bench/cpuop.sh one   KEEL LABEL PORT [N]            one node, SET -P 16 -c 50
#        bench/cpuop.sh three KEEL LABEL BASEPORT TEST [N] [PIPELINE]
#                                            keel up 3 nodes, TEST (set|get) through the leader,
#                                            -c 64 (-c 50 with PIPELINE > 1)
# Prints requests/s and p50, then CPU us per request (utime+stime from /proc/PID/stat before and
# after): one node also splits user/system and counts its page faults (perf stat --no-inherit);
# three nodes give each node's share (the leader named). Keys -r 1000000 (one) or 100000 (three),
# values 100 B; GET runs preload 100,000 SETs. Fresh data directory each run, removed after.
# Alternate the binaries back to back: the machine is shared (bench/RESULTS.md).
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/scratch.sh"
MODE=$1 KEEL=$2 LABEL=$3 P=$4
tick=$(getconf CLK_TCK)
per() { echo "($1)*1000000/$tick/$2" | bc -l | cut -c1-5; }
d=$(keel_scratch cpuop)
if [ "$MODE" = one ]; then
    N=${5:-400000}
    "$KEEL" server --name n1 --data-dir "$d/n1" --initial-cluster n1=127.0.0.1:$((P + 100)) \
        --listen-client 127.0.0.1:$P --listen-http 127.0.0.1:$((P + 200)) >"$d/n1.log" 2>&1 &
    pid=$!
    trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$d"' EXIT
    for _ in $(seq 50); do redis-cli -p $P set x y 2>/dev/null | grep -q OK && break; sleep 0.1; done
    load=$(cut -d' ' -f1 /proc/loadavg)
    read -r u0 s0 < <(awk '{print $14, $15}' /proc/$pid/stat)
    perf stat --no-inherit -e page-faults -p $pid -o "$d/perf.txt" &
    pp=$!
    out=$(redis-benchmark -p $P -t set -P 16 -c 50 -n $N -d 100 -r 1000000 -q 2>&1 |
        tr '\r' '\n' | grep -v '^$' | tail -1)
    read -r u1 s1 < <(awk '{print $14, $15}' /proc/$pid/stat)
    kill -INT $pp
    wait $pp 2>/dev/null
    echo "$LABEL $out us/SET=$(per "$u1+$s1-$u0-$s0" $N) user=$(per "$u1-$u0" $N)" \
        "sys=$(per "$s1-$s0" $N) faults=$(awk '/page-faults/ {print $1}' "$d/perf.txt") load=$load"
    exit 0
fi
T=$5 N=${6:-100000} PIPE=${7:-1}
"$KEEL" up --nodes 3 --dir "$d" --base-port $P --detach >/dev/null 2>&1 || { echo "up failed"; exit 1; }
trap '"$KEEL" down --dir "$d" >/dev/null 2>&1; rm -rf "$d"' EXIT
field() { python3 -c "import json;c=json.load(open('$d/cluster.json'));print(' '.join(str($1) for n in c['nodes']))"; }
pids=($(field "n['pid']"))
ports=($(field "n['client'].split(':')[-1]"))
leader=""
for _ in $(seq 50); do
    for i in 0 1 2; do
        r=$(redis-cli -p ${ports[$i]} info raft 2>/dev/null | tr -d '\r' | grep '^role:' | cut -d: -f2)
        [ "$r" = leader ] && leader=$i
    done
    [ -n "$leader" ] && break
    sleep 0.2
done
[ "$T" = get ] && redis-benchmark -p ${ports[$leader]} -t set -c 64 -n 100000 -d 100 -r 100000 -q >/dev/null 2>&1
snap() { for p in "${pids[@]}"; do awk '{print $14+$15}' /proc/$p/stat; done; }
a=($(snap))
load=$(cut -d' ' -f1 /proc/loadavg)
C=64
[ "$PIPE" -gt 1 ] && C=50 # bench/kv.sh's pipelined shape: -P 16 -c 50
out=$(redis-benchmark -p ${ports[$leader]} -t $T -P $PIPE -c $C -n $N -d 100 -r 100000 -q 2>&1 |
    tr '\r' '\n' | grep -v '^$' | tail -1)
b=($(snap))
tot=0 s=""
for i in 0 1 2; do
    x=$((${b[$i]} - ${a[$i]}))
    tot=$((tot + x))
    s="$s $(per $x $N)"
done
echo "$LABEL $out us/op per node:$s (leader n$((leader + 1))) total=$(per $tot $N) load=$load"
