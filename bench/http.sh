#!/usr/bin/env bash
# bench/http.sh - keel-testhttpd vs nginx (one worker) on a small fixed body, loaded by wrk.
#
# Both servers answer "hello" (5 bytes) with keep-alive on 127.0.0.1. The
# server runs pinned to CPU 0 and wrk (1 thread, 50 connections) to CPU 1, so
# the two never share a core. Prints requests/s, p50 and p99 for both and the
# keel/nginx ratios. Bounded: each run lasts BENCH_SECONDS (default 10).
#
#   KEEL_BUILD=build bench/http.sh            # uses build/keel-testhttpd
#   BENCH_SECONDS=5 BENCH_CONNECTIONS=50 bench/http.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${KEEL_BUILD:-build}
SECONDS_RUN=${BENCH_SECONDS:-10}
CONNS=${BENCH_CONNECTIONS:-50}
SERVER_CPU=${BENCH_SERVER_CPU:-0}
CLIENT_CPU=${BENCH_CLIENT_CPU:-1}
TESTHTTPD="$BUILD/keel-testhttpd"

for tool in wrk nginx taskset; do
  command -v "$tool" >/dev/null || { echo "bench/http.sh: '$tool' not installed (make deps)"; exit 1; }
done
[ -x "$TESTHTTPD" ] || { echo "bench/http.sh: $TESTHTTPD not built"; exit 1; }

TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() {
  for _ in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0
    sleep 0.05
  done
  echo "bench/http.sh: nothing answers on port $1"; exit 1
}

# Runs wrk against $1; prints "rps p50_us p99_us".
load() {
  local url=$1 out="$TMP/wrk.$RANDOM"
  taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"${SECONDS_RUN}s" --latency "$url" >"$out"
  cat "$out" >&2
  python3 - "$out" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def us(s):
    m = re.match(r"([\d.]+)(us|ms|s)", s)
    v, u = float(m.group(1)), m.group(2)
    return v * {"us": 1, "ms": 1e3, "s": 1e6}[u]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
p50 = us(re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1))
p99 = us(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1))
errs = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: .*", text)
if errs:
    print("bench/http.sh: errors reported by wrk: " + errs.group(0), file=sys.stderr)
print(f"{rps:.0f} {p50:.0f} {p99:.0f}")
PY
}

# ---- nginx -----------------------------------------------------------------
NGINX_PORT=$(free_port)
mkdir -p "$TMP/nginx"
cat >"$TMP/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
master_process off;
error_log $TMP/nginx/error.log warn;
pid $TMP/nginx/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx/body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / { return 200 'hello'; }
    }
}
CONF
taskset -c "$SERVER_CPU" nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" &
PIDS+=($!)
wait_port "$NGINX_PORT"
echo "== nginx $(nginx -v 2>&1 | sed 's/.*\///') on 127.0.0.1:$NGINX_PORT" >&2
read -r N_RPS N_P50 N_P99 < <(load "http://127.0.0.1:$NGINX_PORT/hello")
kill "${PIDS[0]}"; wait "${PIDS[0]}" 2>/dev/null || true; PIDS=()

# ---- keel ------------------------------------------------------------------
KEEL_PORT=$(free_port)
taskset -c "$SERVER_CPU" "$TESTHTTPD" --listen "127.0.0.1:$KEEL_PORT" >"$TMP/keel.out" 2>&1 &
PIDS+=($!)
wait_port "$KEEL_PORT"
echo "== keel-testhttpd on 127.0.0.1:$KEEL_PORT" >&2
read -r K_RPS K_P50 K_P99 < <(load "http://127.0.0.1:$KEEL_PORT/hello")

echo
echo "wrk -t1 -c$CONNS -d${SECONDS_RUN}s --latency, server on CPU $SERVER_CPU, wrk on CPU $CLIENT_CPU"
printf '%-8s %12s %10s %10s\n' server "requests/s" "p50 (us)" "p99 (us)"
printf '%-8s %12s %10s %10s\n' nginx "$N_RPS" "$N_P50" "$N_P99"
printf '%-8s %12s %10s %10s\n' keel "$K_RPS" "$K_P50" "$K_P99"
python3 -c "import sys; k,n=float(sys.argv[1]),float(sys.argv[2]); kp,np_=float(sys.argv[3]),float(sys.argv[4]); print(f'keel/nginx: requests/s x{k/n:.2f}, p99 x{kp/np_:.2f} (lower is better)')" \
  "$K_RPS" "$N_RPS" "$K_P99" "$N_P99"
