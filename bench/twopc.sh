#!/usr/bin/env bash
# bench/twopc.sh - two-phase commit against the saga for the same business operation (issue
# 16): a transfer between two SQLite banks (tx/twopc_ledger.h), run one at a time by
# keel-twopc bench as 2PC (tx/twopc: BEGIN, prepare both, COMMIT, commit both, END) and as a
# two-step saga (tx/saga: debit, credit, each compensated by a refund), on the same fresh
# 3-node keel cluster. Three conditions of bank-b: healthy; slow (SLOW_MS per call); down
# for DOWN_MS at the start of each transfer, then back.
# Knobs: N (default 300 transfers per healthy run), N_SLOW (100), N_DOWN (5), SLOW_MS (20),
# DOWN_MS (2000), PREPARE_MS (the 2PC prepare timeout, 1000).
set -u
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/scratch.sh"
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
KEEL="$PWD/$BUILD/keel"
TOOL="$PWD/$BUILD/keel-twopc"
N=${N:-300}
N_SLOW=${N_SLOW:-100}
N_DOWN=${N_DOWN:-5}
SLOW_MS=${SLOW_MS:-20}
DOWN_MS=${DOWN_MS:-2000}
PREPARE_MS=${PREPARE_MS:-1000}
tmp=$(keel_scratch bench-twopc)
cleanup() {
  "$KEEL" down --dir "$tmp/keel3" >/dev/null 2>&1
  rm -rf "$tmp"
}
trap cleanup EXIT
"$KEEL" up --nodes 3 --dir "$tmp/keel3" --base-port 26701 --detach >/dev/null || exit 1
ADDR=127.0.0.1:26701,127.0.0.1:26702,127.0.0.1:26703
mkdir -p "$tmp/banks"
"$TOOL" --dir "$tmp/banks" setup --accounts 100 --balance 100000 >/dev/null || exit 1
bench() { # label, n, args...
  local label=$1 n=$2; shift 2
  printf '%-7s ' "$label"
  timeout 600 "$TOOL" --addr "$ADDR" --dir "$tmp/banks" bench --count "$n" \
    --prepare-timeout-ms "$PREPARE_MS" "$@" 2>/dev/null || echo "(failed)"
}
echo "== healthy"
bench healthy "$N" --mode 2pc
bench healthy "$N" --mode saga
echo "== bank-b slow: ${SLOW_MS} ms per call"
bench slow "$N_SLOW" --mode 2pc --slow-ms "$SLOW_MS"
bench slow "$N_SLOW" --mode saga --slow-ms "$SLOW_MS"
echo "== bank-b down ${DOWN_MS} ms at the start of each transfer"
bench down "$N_DOWN" --mode 2pc --down-ms "$DOWN_MS"
bench down "$N_DOWN" --mode saga --down-ms "$DOWN_MS"
echo "== conservation"
"$TOOL" --dir "$tmp/banks" check --expect 20000000
