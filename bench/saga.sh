#!/usr/bin/env bash
# bench/saga.sh - three-step sagas completed per second and their p50/p99 (issue 16), on a
# fresh 3-node keel cluster, with `keel-saga demo`: every fourth saga refused at its last step
# (compensated). Two kinds of steps: in keel server (each step a KEEL.GETV and a KEEL.TXN),
# and kit calls over HTTP to three keel-example-ledger services (one POST each, with its
# Idempotency-Key). One orchestrator; concurrency CONC (sagas at once).
# Knobs: BUILD (build), N (sagas per run, 3000; 300 at concurrency 1), CONC ("1 10 50 200").
set -u
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/scratch.sh"
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
KEEL="$PWD/$BUILD/keel"
SAGA="$PWD/$BUILD/keel-saga"
LEDGER="$PWD/$BUILD/keel-example-ledger"
N=${N:-3000}
CONC=${CONC:-1 10 50 200}
tmp=$(keel_scratch bench-saga)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  "$KEEL" down --dir "$tmp/keel3" >/dev/null 2>&1
  rm -rf "$tmp"
}
trap cleanup EXIT
"$KEEL" up --nodes 3 --dir "$tmp/keel3" --base-port 26901 --detach >/dev/null || exit 1
ADDR=127.0.0.1:26901,127.0.0.1:26902,127.0.0.1:26903
http=""
for step in reserve charge ship; do
  "$LEDGER" --listen 127.0.0.1:0 --name "$step" >"$tmp/$step.out" 2>/dev/null &
  pids+=($!)
  port=""
  for _ in $(seq 100); do
    port=$(sed -n 's/.*listening on port \([0-9]*\).*/\1/p' "$tmp/$step.out" | head -1)
    [ -n "$port" ] && break
    sleep 0.1
  done
  [ -n "$port" ] || { echo "saga bench: $step did not start" >&2; exit 1; }
  http="${http:+$http,}127.0.0.1:$port"
done
run=0
printf '%-6s %-14s %s\n' "conc" "steps" "summary"
for c in $CONC; do
  n=$N
  [ "$c" -le 1 ] && n=$((N / 10))
  for mode in keel http; do
    run=$((run + 1))
    extra=()
    [ "$mode" = http ] && extra=(--http "$http")
    out=$(timeout 600 "$SAGA" --addr "$ADDR" demo --prefix "b$run" --count "$n" \
      --concurrency "$c" --fail-every 4 "${extra[@]}" 2>/dev/null | grep '^summary')
    printf '%-6s %-14s %s\n' "$c" "$([ "$mode" = http ] && echo "kit, HTTP" || echo "in keel")" \
      "${out:-(failed)}"
  done
done
