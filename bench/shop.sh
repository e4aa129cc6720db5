#!/usr/bin/env bash
# bench/shop.sh - what one order costs in the shop: the shop from apps/shop/shop.yaml, a
# steady load through the gateway (SHOP_RATE orders/s for SHOP_SECONDS, default 300 and 20),
# and per process the CPU it used (utime + stime from /proc/PID/stat, before and after),
# divided by the orders answered; plus keel's Raft entries per order (the leader's commit
# index before and after) and the payment database's bytes per order. Prints one table.
# SHOP_STAGES=1: also every latency histogram's difference over the run (bench/shop_stages.py:
# the saga's steps, the keel writes, payment's commit, the gateway), percentiles per series.
set -u
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/scratch.sh"
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
KEEL="$PWD/$BUILD/keel"
RATE=${SHOP_RATE:-300}
SECS=${SHOP_SECONDS:-20}
DIR=$(keel_scratch shopbench)
trap '"$KEEL" down --dir "$DIR" >/dev/null 2>&1' EXIT
# SHOP_KEEL_FLAGS: keel server flags for every node (e.g. "--lease-reads 1")
# shellcheck disable=SC2086
"$KEEL" up --manifest apps/shop/shop.yaml --dir "$DIR" --detach ${SHOP_KEEL_FLAGS:+-- $SHOP_KEEL_FLAGS} \
  > "$DIR/up.out" || { cat "$DIR/up.out"; exit 1; }
TCK=$(getconf CLK_TCK)

procs() { # name pid, for every node and service process
  grep -o '"name": *"[^"]*"\|"pid": *[0-9]*' "$DIR/cluster.json" | paste - - |
    sed 's/"name": *"\([^"]*\)"\s*"pid": *\([0-9]*\)/keel-\1 \2/'
  tr -d '\n ' < "$DIR/services.json" |
    grep -o '"service":"[a-z]*","instance":[0-9]*,"port":[0-9]*,"pid":[0-9]*' |
    sed 's/"service":"\([a-z]*\)","instance":\([0-9]*\),"port":[0-9]*,"pid":\([0-9]*\)/\1-\2 \3/'
}
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
cmdstats() { # cmd calls, summed over the three nodes
  for p in 7001 7002 7003; do redis-cli -p "$p" info commandstats 2>/dev/null; done |
    tr -d '\r' | sed -n 's/^cmdstat_\([^:]*\):calls=\([0-9]*\).*/\1 \2/p' |
    awk '{s[$1] += $2} END {for (c in s) print c, s[c]}' | sort
}
commit() { curl -s "127.0.0.1:720$1/status" | grep -o '"commit_index": *[0-9]*' | grep -o '[0-9]*$'; }

procs > "$DIR/procs"
while read -r name pid; do echo "$name $pid $(ticks "$pid")"; done < "$DIR/procs" > "$DIR/before"
c0=$(commit 1)
cmdstats > "$DIR/cmd0"
[ "${SHOP_STAGES:-0}" = 1 ] && /usr/bin/python3 bench/shop_stages.py snap "$DIR" "$DIR/stages0.json"
db0=$(stat -c %s "$DIR/payment.db" "$DIR/payment.db-wal" 2>/dev/null | awk '{s += $1} END {print s}')
"$PWD/$BUILD/keel-shopload" --inventory 127.0.0.1:8000 --orders 127.0.0.1:8000 \
  --payment 127.0.0.1:8110 --jwt-secret keel-shop-demo-hs256-secret-change-me --rate "$RATE" \
  --duration "$SECS" --products 500 --stock 100000 --deadline-ms 5000 > "$DIR/load.out" &
load=$!
wait "$load"
c1=$(commit 1)
cmdstats > "$DIR/cmd1"
[ "${SHOP_STAGES:-0}" = 1 ] && /usr/bin/python3 bench/shop_stages.py snap "$DIR" "$DIR/stages1.json"
answered=$(grep -o 'throughput: [0-9]*' "$DIR/load.out" | grep -o '[0-9]*$')
orders=$((answered * SECS))
echo "shop: $RATE orders/s asked for ${SECS}s; $(grep -E 'answered within|latency from|latency of orders with a fine card|invariants' "$DIR/load.out" | tr '\n' ';')"
echo "orders answered: $orders; keel Raft entries per order: $(awk -v a="$c0" -v b="$c1" -v n="$orders" 'BEGIN {printf "%.1f", (b - a) / n}')"
db1=$(stat -c %s "$DIR/payment.db" "$DIR/payment.db-wal" 2>/dev/null | awk '{s += $1} END {print s}')
echo "payment database growth per order: $(awk -v a="$db0" -v b="$db1" -v n="$orders" 'BEGIN {printf "%.0f bytes", (b - a) / n}')"
echo "keel commands per order (all nodes; 0.1 and more):"
join -a 2 -e 0 -o 2.1,1.2,2.2 "$DIR/cmd0" "$DIR/cmd1" |
  awk -v n="$orders" '{r = ($3 - $2) / n; if (r >= 0.1) printf "  %-16s %6.1f\n", $1, r}' | sort -k2 -nr
printf '%-14s %12s\n' process "CPU us/order"
total=0
while read -r name pid t0; do
  t1=$(ticks "$pid")
  us=$(awk -v a="$t0" -v b="$t1" -v hz="$TCK" -v n="$orders" 'BEGIN {printf "%.0f", (b - a) * 1e6 / hz / n}')
  total=$((total + us))
  printf '%-14s %12s\n' "$name" "$us"
done < "$DIR/before"
printf '%-14s %12s\n' "all of these" "$total"
if [ "${SHOP_STAGES:-0}" = 1 ]; then
  echo "latency histograms over the run (bench/shop_stages.py):"
  /usr/bin/python3 bench/shop_stages.py report "$DIR/stages0.json" "$DIR/stages1.json"
fi
