#!/usr/bin/env bash
# bench/mixed.sh - a pipeline of N SET/GET pairs against the same pipeline of N SETs, one
# connection, on one node, on a 3-node leader and on a 3-node follower (issue 12's target:
# the pairs take at most 2x the SETs' time). Each run is bounded (DEADLINE_S).
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
KEEL="$BUILD/keel"
N=${MIXED_PAIRS:-20000}
DEADLINE_S=${MIXED_DEADLINE_S:-60}
. scripts/scratch.sh
tmp=$(keel_scratch mixed)
cleanup() {
  for d in "$tmp"/k1 "$tmp"/k3; do [ -f "$d/cluster.json" ] && "$KEEL" down --dir "$d" >/dev/null 2>&1; done
  rm -rf "$tmp"
}
trap cleanup EXIT
leader_port() { # cluster dir: the client port of the node that says it leads
  "$KEEL" status --dir "$1" | awk '$3 == "leader" {print $1}' | head -1 | sed 's/^n//' |
    awk -v base="$2" '{print base + $1 - 1}'
}
run() { # label, port
  echo "-- $1 ($N pairs)"
  /usr/bin/python3 bench/mixed_pipeline.py "$2" "$N" "$DEADLINE_S" | sed 's/^/  /'
}
"$KEEL" up --nodes 1 --dir "$tmp/k1" --base-port 33001 --detach >/dev/null || exit 1
run "keel 1 node" 33001
"$KEEL" down --dir "$tmp/k1" >/dev/null
"$KEEL" up --nodes 3 --dir "$tmp/k3" --base-port 33101 --detach >/dev/null || exit 1
sleep 1
lp=$(leader_port "$tmp/k3" 33101)
fp=33101; [ "$lp" = 33101 ] && fp=33102
run "keel 3 nodes, leader" "$lp"
run "keel 3 nodes, follower" "$fp"
