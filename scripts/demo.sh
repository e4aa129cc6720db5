#!/usr/bin/env bash
# make demo: the shop (apps/shop, docs/shop.md) on loopback, under load and chaos.
#
# Starts everything apps/shop/shop.yaml names (3 keel nodes; inventory (four instances),
# payment and order (two each); the gateway), then for DEMO_SECONDS (default 60) keel-shopload sends
# orders through the gateway at DEMO_RATE orders/s (default 200), open loop, with JWTs,
# Idempotency-Keys, declined and slow cards. Meanwhile a chaos loop SIGKILLs one process
# every 10 s - a keel node or a service instance, at random - and brings it back 4 s later
# (keel up --manifest restarts what is down). At the end keel-shopload resolves every order
# whose outcome it did not see and checks the invariants: stock == start - confirmed units,
# the read side caught up and agreeing,
# nothing left reserved, the payment ledger moved by exactly the confirmed orders, and (once
# the shipment service's consumers caught up) exactly one shipment per confirmed order and
# none for any other. Prints
# orders/s, the share answered within the deadline, latency, each kill with the orders it cost
# and how long they went on, and the verdict; exits non-zero if an invariant broke. While it
# runs, a live page at http://127.0.0.1:8090/ (served by keel-shopload) plots orders/s, p50
# and p99, sagas by state, the read side's lag and shipments by status, with the kills marked; at the end the same
# page with the final data is written as $DIR/report.html. The old KV demo is `make demo-kv`.
#
# REGIONS=N (make demo REGIONS=3; needs root): the same in N regions, each a network namespace
# (keel-rK), joined by keel-netdelay, which holds every packet between two regions for
# REGION_DELAY_MS (default 10) one way. Node i and instance i of each service run in region
# i % N on 10.77.0.(i%N+1) (REGION_SUBNET, default 10.77.0); this script, keel up and the load
# generator use the operator's link (10.77.0.254, no delay): the customers sit beside region
# 1's gateway. docs/shop.md, "Regions".
set -u
. "$(dirname "${BASH_SOURCE[0]}")/scratch.sh"
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
KEEL="$PWD/$BUILD/keel"
LOAD="$PWD/$BUILD/keel-shopload"
SECS=${DEMO_SECONDS:-60}
RATE=${DEMO_RATE:-200}
MANIFEST="$PWD/apps/shop/shop.yaml"
DIR=$(keel_scratch shop)
SECRET=keel-shop-demo-hs256-secret-change-me # apps/shop/gateway.yaml's demo key
REGIONS=${REGIONS:-1}
SUBNET=${REGION_SUBNET:-10.77.0}
NETNS=()
relay=
cleanup() {
  "$KEEL" down --dir "$DIR" >/dev/null 2>&1
  [ -z "$relay" ] || { kill "$relay" 2>/dev/null; wait "$relay" 2>/dev/null; }
  for ns in "${NETNS[@]}"; do ip netns del "$ns" 2>/dev/null; done
}
trap cleanup EXIT

# The address instance i (of a service, or node i) listens on.
host_of() {
  if [ "$REGIONS" -gt 1 ]; then echo "$SUBNET.$(($1 % REGIONS + 1))"; else echo 127.0.0.1; fi
}
REGION_ARGS=()
UP_ARGS=() # given to every keel up, the chaos loop's restarts too
if [ "$REGIONS" -gt 1 ]; then
  if [ "$REGIONS" -gt 8 ] || [ "$(id -u)" != 0 ] || [ ! -e /dev/net/tun ]; then
    echo "make demo REGIONS=N: N at most 8, and root with /dev/net/tun (network namespaces)" >&2
    exit 1
  fi
  if ip route | grep -q "^$SUBNET\."; then
    echo "the subnet $SUBNET.0/24 is in use here: choose another with REGION_SUBNET=A.B.C" >&2
    exit 1
  fi
  spec=
  for k in $(seq 1 "$REGIONS"); do
    ns="keel-r$k-$$"
    ip netns add "$ns" || exit 1
    NETNS+=("$ns")
    spec="$spec${spec:+,}$ns=$SUBNET.$k"
  done
  echo "== regions: $REGIONS network namespaces, ${REGION_DELAY_MS:-10} ms one way between them (keel-netdelay)"
  "$PWD/$BUILD/keel-netdelay" --netns "$(IFS=,; echo "${NETNS[*]}")" --subnet "$SUBNET" \
    --delay-ms "${REGION_DELAY_MS:-10}" --operator "keelop$$" > "$DIR/netdelay.log" 2>&1 &
  relay=$!
  for _ in $(seq 50); do grep -q '^ready' "$DIR/netdelay.log" && break; sleep 0.1; done
  grep -q '^ready' "$DIR/netdelay.log" || { cat "$DIR/netdelay.log"; exit 1; }
  REGION_ARGS=(--regions "$spec")
  # Region 1 is the primary: its node leads (asked again after every restart, and handed
  # back by the leader whenever it lost the lead otherwise: --preferred-leader) and answers
  # reads from its lease, so the services beside it pay one inter-region round trip per
  # write (the quorum) and none per read.
  UP_ARGS=(--leader n1 -- --lease-reads 1 --preferred-leader n1)
fi

echo "== the shop: keel up --manifest apps/shop/shop.yaml --dir $DIR ${REGION_ARGS[*]}"
"$KEEL" up --manifest "$MANIFEST" --dir "$DIR" --detach "${REGION_ARGS[@]}" "${UP_ARGS[@]}" || exit 1

H0=$(host_of 0)
H1=$(host_of 1)
echo
echo "== load: ${RATE} orders/s for ${SECS}s through the gateway ($H0:8000), chaos every 10s"
echo "== live page: http://${DEMO_LIVE:-127.0.0.1:8090}/ (the HTML report is written at the end)"
"$LOAD" --inventory "$H0:8000" --orders "$H0:8000" --payment "$H0:8110" \
  --query "$H0:8130" --shipments "$H0:8150,$H1:8151" --jwt-secret "$SECRET" --rate "$RATE" --duration "$SECS" --products 500 --stock 100000 \
  --deadline-ms 5000 --json "$DIR/report.json" --live "${DEMO_LIVE:-127.0.0.1:8090}" --html "$DIR/report.html" \
  --events "$DIR/chaos.log" --metrics "$H0:8120,$H1:8121" &
load=$!

# the processes chaos may kill: keel nodes and service instances (not the gateway: it is the
# one door; its upstreams are what the seed's chaos hits)
victims() {
  grep -o '"pid": *[0-9]*' "$DIR/cluster.json" | grep -o '[0-9]*$' | sed 's/^/keel-node /'
  tr -d '\n ' < "$DIR/services.json" | grep -o '"service":"[a-z]*","instance":[0-9]*,"port":[0-9]*,"pid":[0-9]*' |
    grep -v '"service":"gateway"' | sed 's/"service":"\([a-z]*\)","instance":\([0-9]*\),"port":[0-9]*,"pid":\([0-9]*\)/\1-\2 \3/'
}
t=0
while [ $((t + 14)) -le "$SECS" ] && kill -0 "$load" 2>/dev/null; do
  sleep 6
  t=$((t + 6))
  pick=$(victims | shuf -n 1)
  [ -n "$pick" ] || continue
  echo "== chaos t=${t}s: SIGKILL ${pick% *} (pid ${pick#* })"
  kill -9 "${pick#* }" 2>/dev/null
  echo "$(date +%s%3N) SIGKILL ${pick% *}" >> "$DIR/chaos.log" # marks on the live page
  sleep 4
  t=$((t + 4))
  if "$KEEL" up --manifest "$MANIFEST" --dir "$DIR" --detach "${UP_ARGS[@]}" > "$DIR/restart.out" 2>&1; then
    echo "== chaos t=${t}s: restarted ${pick% *}"
  else
    echo "== chaos t=${t}s: restart failed:"; cat "$DIR/restart.out"
  fi
done                                   # a kill every 10 s: at 6, 16, 26, ...
wait "$load"
verdict=$?
echo
"$KEEL" status --dir "$DIR" | tail -12
if [ -n "$relay" ]; then # what crossed between the regions, from the relay's own counters
  "$KEEL" down --dir "$DIR" >/dev/null 2>&1
  kill "$relay"; wait "$relay"; relay=
  echo; echo "== keel-netdelay (packets per link):"; tail -n +2 "$DIR/netdelay.log"
fi
echo
if [ $verdict -eq 0 ]; then
  echo "== verdict: every invariant held (report: $DIR/report.html, data: $DIR/report.json)"
else
  echo "== verdict: FAILED (logs and report kept in $DIR)"
  trap - EXIT
  cleanup
fi
exit $verdict
