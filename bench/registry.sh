#!/usr/bin/env bash
# bench/registry.sh - the service registry (docs/registry.md) on a 3-node cluster:
# registrations/s (KEEL.REG over RESP, Consul-shaped HTTP) and the time for one change to
# reach REG_WATCHERS (default 1000; REG_WATCHERS_BIG, default 10000, too) blocked watchers,
# on the leader and on a follower. Each part is bounded in time (bench/registry.py).
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
KEEL="$BUILD/keel"
N=${REG_COUNT:-20000}
W=${REG_WATCHERS:-1000}
WBIG=${REG_WATCHERS_BIG:-10000}
. scripts/scratch.sh
tmp=$(keel_scratch registry)
cleanup() {
  [ -f "$tmp/k3/cluster.json" ] && "$KEEL" down --dir "$tmp/k3" >/dev/null 2>&1
  rm -rf "$tmp"
}
trap cleanup EXIT
base=${REG_BASE_PORT:-24301}
"$KEEL" up --nodes 3 --dir "$tmp/k3" --base-port $base --detach >/dev/null || exit 1
sleep 1
li=$("$KEEL" status --dir "$tmp/k3" | awk '$3 == "leader" {print $1}' | head -1 | sed 's/^n//')
[ -n "$li" ] || { echo "no leader"; exit 1; }
lc=$((base + li - 1)); lh=$((base + 200 + li - 1))
fi=1; [ "$li" = 1 ] && fi=2
fh=$((base + 200 + fi - 1))
rc=0
echo "-- registrations ($N over RESP, $((N / 10)) over HTTP), sent to the leader"
/usr/bin/python3 bench/registry.py regs "$lc" "$lh" "$N" | sed 's/^/  /' || rc=1
for w in "$W" "$WBIG"; do
  [ "$w" -gt 0 ] || continue
  echo "-- one change to $w blocked watchers on the leader"
  /usr/bin/python3 bench/registry.py fanout "$lh" "$lh" "$w" | sed 's/^/  /' || rc=1
  echo "-- one change (written on the leader) to $w blocked watchers on a follower"
  /usr/bin/python3 bench/registry.py fanout "$fh" "$lh" "$w" | sed 's/^/  /' || rc=1
done
exit $rc
