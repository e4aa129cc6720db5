#!/usr/bin/env bash
# bench/big_hash.sh - how long one keel node's loop stalls while a hash grows to millions of
# fields: redis-benchmark sends pipelined HSETs of random fields (-r FIELDS) to one key for
# SECONDS, while a client PINGs every millisecond; prints the longest PINGs (with when they
# ended) and the snapshots taken meanwhile (their end times), so a stall can be matched to a
# table resize, a snapshot's completion or neither.
# Usage: BUILD=build-dev bash bench/big_hash.sh [SECONDS] [FIELDS]   (defaults 36, 8000000)
set -u
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/scratch.sh"
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
KEEL="$PWD/$BUILD/keel"
SECS=${1:-36}
FIELDS=${2:-8000000}
DIR=$(keel_scratch bench-big-hash)
PORT=27311
trap '"$KEEL" down --dir "$DIR" >/dev/null 2>&1; rm -rf "$DIR"' EXIT
"$KEEL" up --nodes 1 --dir "$DIR" --base-port "$PORT" --detach >/dev/null || exit 1
/usr/bin/python3 - "$PORT" "$SECS" > "$DIR/ping.out" <<'EOF' &
import sys, time
import redis
r = redis.Redis(port=int(sys.argv[1]))
end = time.time() + float(sys.argv[2])
worst = []
while time.time() < end:
    t = time.perf_counter()
    r.ping()
    worst.append((time.perf_counter() - t, time.time()))
    time.sleep(0.001)
worst.sort(reverse=True)
print("longest PINGs (ms, ended at):",
      ", ".join("%.1f %s" % (d * 1000, time.strftime("%H:%M:%S", time.gmtime(at)) +
                             ("%.3f" % (at % 1))[1:]) for d, at in worst[:6]))
print("PINGs:", len(worst))
EOF
ping=$!
timeout $((SECS + 2)) redis-benchmark -p "$PORT" -c 20 -P 32 -n 100000000 -r "$FIELDS" -t hset \
  -q > /dev/null 2>&1
wait "$ping"
cat "$DIR/ping.out"
echo "fields: $(redis-cli -p "$PORT" hlen myhash)"
grep -h '"snapshot taken"' "$DIR"/*.log | sed 's/.*"ts":"[^T]*T\([^Z]*\)Z".*"index":\([0-9]*\),"bytes":\([0-9]*\),"ms":\([0-9]*\).*/snapshot taken at \1: index \2, \3 bytes, \4 ms/'
