#!/usr/bin/env bash
# make demo-kv: a 3-node keel server cluster on loopback under load, with the leader killed
# (SIGKILL) a third of the way in and restarted two thirds of the way in. Prints throughput
# per second, latency, errors, time without a leader and the linearizability verdict on the
# recorded history. Exits non-zero if the history is not linearizable.
set -u
. "$(dirname "${BASH_SOURCE[0]}")/scratch.sh"
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
KEEL="$PWD/$BUILD/keel"
LINCHECK="$PWD/$BUILD/keel-lincheck"
SECS=${DEMO_SECONDS:-30}
BASE=${DEMO_BASE_PORT:-27001}
DIR=$(keel_scratch demo)
trap '"$KEEL" down --dir "$DIR" >/dev/null 2>&1' EXIT

echo "== keel demo: 3-node cluster in $DIR (client ports $BASE..$((BASE + 2)))"
"$KEEL" up --nodes 3 --dir "$DIR" --base-port "$BASE" --detach || exit 1

echo
echo "== load: ${SECS}s of GET/SET (16 connections x pipeline 4, 50 keys), recording a history"
"$KEEL" bench kv --cluster "$DIR" --duration "$SECS" --connections 16 --pipeline 4 --keys 50 \
  --history "$DIR/history.jsonl" --final-reads > "$DIR/bench.out" &
bench=$!
sleep $((SECS / 3))
leader=$("$KEEL" status --dir "$DIR" | awk '$3 == "leader" {print $1 " " $2}')
if [ -n "$leader" ]; then
  echo "== t=$((SECS / 3))s: SIGKILL the leader ${leader% *} (pid ${leader#* })"
  kill -9 "${leader#* }"
else
  echo "== t=$((SECS / 3))s: no leader found to kill"
fi
sleep $((SECS / 3))
echo "== t=$((2 * SECS / 3))s: restarting it"
"$KEEL" up --dir "$DIR" --detach > "$DIR/restart.out" 2>&1 || cat "$DIR/restart.out"
wait "$bench"
echo
cat "$DIR/bench.out"
echo
"$KEEL" status --dir "$DIR"
echo
echo "== linearizability check of $(wc -l < "$DIR/history.jsonl") history events"
"$LINCHECK" "$DIR/history.jsonl"
verdict=$?
if [ $verdict -eq 0 ]; then
  echo "== verdict: linearizable; every acknowledged write was read back by the final reads"
else
  echo "== verdict: NOT linearizable (history kept in $DIR/history.jsonl)"
  trap - EXIT
  "$KEEL" down --dir "$DIR" >/dev/null 2>&1
fi
exit $verdict
