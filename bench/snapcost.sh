#!/bin/bash
# bench/snapcost.sh - CPU and page faults of one keel node under pipelined SET (snapshot cost).
# usage: bench/snapcost.sh KEEL_BINARY LABEL [PORT] [extra keel server flags...]
# Prints requests/s, CPU us per SET of the serving process (utime+stime) and of its reaped
# snapshot children (cutime+cstime), and the serving process's page faults (perf stat
# --no-inherit). Run two binaries alternately, back to back: this machine is shared.
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/scratch.sh"
KEEL=$1
LABEL=$2
P=${3:-27301}
shift 3 2>/dev/null || shift $#
N=1000000
d=$(keel_scratch snapcost)
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$d"' EXIT
"$KEEL" server --name n1 --data-dir "$d/n1" --initial-cluster n1=127.0.0.1:$((P + 100)) \
    --listen-client 127.0.0.1:$P --listen-http 127.0.0.1:$((P + 200)) "$@" >"$d/n1.log" 2>&1 &
pid=$!
for _ in $(seq 50); do redis-cli -p $P set x y 2>/dev/null | grep -q OK && break; sleep 0.1; done
read -r u0 s0 cu0 cs0 < <(awk '{print $14, $15, $16, $17}' /proc/$pid/stat)
perf stat --no-inherit -e page-faults -p $pid -o "$d/perf.txt" &
pp=$!
rps=$(redis-benchmark -p $P -t set -P 16 -c 50 -n $N -d 100 -r 1000000 -q 2>&1 |
    tr '\r' '\n' | grep -v '^$' | tail -1)
read -r u1 s1 cu1 cs1 < <(awk '{print $14, $15, $16, $17}' /proc/$pid/stat)
kill -INT $pp
wait $pp 2>/dev/null
tick=$(getconf CLK_TCK)
echo "$LABEL $rps" \
    "parent_us_per_set=$(echo "($u1+$s1-$u0-$s0)*1000000/$tick/$N" | bc -l | cut -c1-5)" \
    "child_us_per_set=$(echo "($cu1+$cs1-$cu0-$cs0)*1000000/$tick/$N" | bc -l | cut -c1-5)" \
    "parent_page_faults=$(awk '/page-faults/ {print $1}' "$d/perf.txt")" \
    "snapshots=$(grep -c 'snapshot taken' "$d/n1.log")" "load=$(cut -d' ' -f1 /proc/loadavg)"
