# bench/proxy_lib.sh - what the proxy benchmarks share: sourced, not run.
#
# Sets BUILD, TMP (removed at exit), PIDS (killed at exit) and the helpers below: starting a
# backend (nginx or keel-testhttpd), keel proxy, nginx and HAProxy as reverse proxies with their
# configs, waiting for them, wrk runs and their figures, a process's CPU time and memory, and an
# HS256 key with a token for the JWT runs. Every wait is bounded (5 s). A script does:
#
#   source "$(dirname "$0")/proxy_lib.sh"
#   plib_init proxy_features.sh wrk curl     # its name for messages, the tools it needs
#
# Each start_* helper runs its process in the background of the calling shell (never in a
# subshell: its pid must reach PIDS for the cleanup) and records its pid in PID[name] and its
# port in PORT[name].

# shellcheck disable=SC2034 # the variables set here are read by the scripts that source it
BUILD=${KEEL_BUILD:-${BUILD:-build}}
KEEL="$BUILD/keel"
NGINX=${NGINX:-/usr/sbin/nginx}
HAPROXY=${HAPROXY:-/usr/sbin/haproxy}
PROXY_CPU=${BENCH_SERVER_CPU:-0}
OTHER_CPU=${BENCH_CLIENT_CPU:-1}
PLIB_NAME=bench
PIDS=()
declare -A PID PORT ADMIN

plib_die() { echo "bench/$PLIB_NAME: $*" >&2; exit 1; }

# plib_init NAME TOOL...: checks the tools (paths or names on PATH), makes TMP, sets the cleanup.
plib_init() {
  PLIB_NAME=$1
  shift
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null || plib_die "'$tool' not installed (scripts/deps.sh --bench)"
  done
  TMP=$(mktemp -d)
  trap plib_cleanup EXIT
}

plib_cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$TMP"
}

need_keel() { # binary names under BUILD
  local b
  for b in "$@"; do [ -x "$BUILD/$b" ] || plib_die "$BUILD/$b not built"; done
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_http PORT [PATH [HEADER]]: until GET PATH (default /hello) answers 200, at most 5 s.
wait_http() {
  local _
  for _ in $(seq 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' ${3:+-H "$3"} "http://127.0.0.1:$1${2:-/hello}")" = 200 ] &&
      return 0
    sleep 0.05
  done
  plib_die "nothing answers 200 on port $1${2:-/hello}"
}

# wait_line FILE PATTERN: until FILE has a line matching PATTERN, at most 5 s.
wait_line() {
  local _
  for _ in $(seq 100); do grep -qs "$2" "$1" && return 0; sleep 0.05; done
  plib_die "no '$2' in $1"
}

# spawn NAME CPU CMD...: CMD in the background pinned to CPU ("" for no pinning), output in
# $TMP/NAME.out; PID[NAME] is its pid.
spawn() {
  local name=$1 cpu=$2
  shift 2
  if [ -n "$cpu" ]; then
    taskset -c "$cpu" "$@" >"$TMP/$name.out" 2>&1 &
  else
    "$@" >"$TMP/$name.out" 2>&1 &
  fi
  PID[$name]=$!
  PIDS+=($!)
}

# start_testhttpd NAME CPU: keel-testhttpd (GET /hello, POST /echo); PORT[NAME].
start_testhttpd() {
  spawn "$1" "$2" "$BUILD/keel-testhttpd" --listen 127.0.0.1:0
  wait_line "$TMP/$1.out" "listening on"
  PORT[$1]=$(sed -n 's/.*listening on .*:\([0-9]*\)$/\1/p' "$TMP/$1.out")
}

# start_keel NAME CPU YAML-FILE: keel proxy on a config whose first listener (and admin, if any)
# is on port 0; PORT[NAME], ADMIN[NAME] (empty without admin). Waits for the ports only.
start_keel() {
  spawn "$1" "$2" "$KEEL" proxy --config "$3" --log-level "${KEEL_LOG_LEVEL:-warn}"
  wait_line "$TMP/$1.out" "listening 0 on port"
  PORT[$1]=$(sed -n 's/.*listening 0 on port \([0-9]*\).*/\1/p' "$TMP/$1.out" | head -1)
  ADMIN[$1]=""
  if grep -q '^admin:' "$3"; then
    wait_line "$TMP/$1.out" "admin on port"
    ADMIN[$1]=$(sed -n 's/.*admin on port \([0-9]*\).*/\1/p' "$TMP/$1.out" | head -1)
  fi
}

# nginx_conf DIR PORT HTTP SERVER [WORKERS [MAIN]]: an nginx config in DIR/nginx.conf listening
# on PORT with the http-level lines HTTP and the server block SERVER; WORKERS > 1, or MAIN
# containing "master", runs a master process; MAIN: more main-level lines.
nginx_conf() {
  mkdir -p "$1"
  local workers=${5:-1} master=off
  [ "$workers" -gt 1 ] && master=on
  case "${6:-}" in *master*) master=on ;; esac
  cat >"$1/nginx.conf" <<CONF
worker_processes $workers;
daemon off;
master_process $master;
worker_rlimit_nofile 20000;
error_log $1/error.log notice;
pid $1/nginx.pid;
${6:-}
events { worker_connections 16384; }
http {
    access_log off;
    client_body_temp_path $1/body;
    proxy_temp_path $1/proxy;
    fastcgi_temp_path $1/fastcgi;
    uwsgi_temp_path $1/uwsgi;
    scgi_temp_path $1/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    $3
    server {
        listen 127.0.0.1:$2;
        $4
    }
}
CONF
}

# nginx_proxy_conf DIR PORT BACKEND-PORT [WORKERS [MAIN]]: nginx as a reverse proxy to one
# upstream with a keep-alive pool (HTTP/1.1 upstream, `Connection ""`).
nginx_proxy_conf() {
  nginx_conf "$1" "$2" \
    "upstream backend { server 127.0.0.1:$3; keepalive 128; keepalive_requests 1000000; }" \
    "location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection \"\"; }" \
    "${4:-1}" "${5:-}"
}

# start_nginx NAME CPU DIR: nginx on DIR/nginx.conf; PID[NAME] is the master (or only) process.
start_nginx() {
  spawn "$1" "$2" "$NGINX" -p "$3" -c "$3/nginx.conf"
}

# start_nginx_backend NAME CPU: nginx, one worker, answering "hello" (5 bytes) on any path.
start_nginx_backend() {
  PORT[$1]=$(free_port)
  nginx_conf "$TMP/$1" "${PORT[$1]}" "" "location / { return 200 'hello'; }"
  start_nginx "$1" "$2" "$TMP/$1"
  wait_http "${PORT[$1]}"
}

# haproxy_global [THREADS [MAXCONN]]: HAProxy's global and defaults sections for `mode http`
# with keep-alive on both sides and `http-reuse always` (as in bench/proxy.sh).
haproxy_global() {
  cat <<CONF
global
    nbthread ${1:-1}
    maxconn ${2:-4096}
defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 30s
    timeout http-keep-alive 300s
    option http-keep-alive
    http-reuse always
CONF
}

# start_haproxy NAME CPU CFG [ARGS...]: HAProxy in the foreground (-db) on CFG.
start_haproxy() {
  local name=$1 cpu=$2 cfg=$3
  shift 3
  spawn "$name" "$cpu" "$HAPROXY" -f "$cfg" -db "$@"
}

# cpu_ticks PID: user+system clock ticks a process (all threads) and its children (nginx's
# workers) have used so far (/proc/PID/stat fields 14 and 15).
cpu_ticks() {
  local total=0 p
  for p in "$1" $(pgrep -P "$1" || true); do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$total"
}

# rss_kb PID: resident memory (VmRSS, KiB) of a process and its children.
rss_kb() {
  local total=0 p
  for p in "$1" $(pgrep -P "$1" || true); do
    total=$((total + $(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)))
  done
  echo "$total"
}

# wrk_load OUT URL CONNS SECONDS CPU-PID [WRK-ARGS...]: wrk -t1 on OTHER_CPU, its text in OUT
# with a last line "cpu_ticks N HZ" (the CPU of CPU-PID during the run).
wrk_load() {
  local out=$1 url=$2 conns=$3 secs=$4 pid=$5 before after
  shift 5
  before=$(cpu_ticks "$pid")
  taskset -c "$OTHER_CPU" wrk -t1 -c"$conns" -d"${secs}s" --latency "$@" "$url" >"$out" 2>&1 || true
  after=$(cpu_ticks "$pid")
  echo "cpu_ticks $((after - before)) $(getconf CLK_TCK)" >>"$out"
}

# wrk_figures OUT: "rps p50_us p99_us cpu_us_per_request requests failed" from wrk_load's OUT;
# failed = non-2xx/3xx answers + socket errors (connect, read, write, timeout).
wrk_figures() {
  python3 - "$1" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def us(s):
    m = re.match(r"([\d.]+)(us|ms|s)", s)
    return float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)]
def find(pat, default="0"):
    m = re.search(pat, text, re.M)
    return m.group(1) if m else default
rps = float(find(r"Requests/sec:\s+([\d.]+)"))
p50 = us(find(r"^\s+50%\s+(\S+)", "0us"))
p99 = us(find(r"^\s+99%\s+(\S+)", "0us"))
total = int(find(r"(\d+) requests in"))
bad = int(find(r"Non-2xx or 3xx responses: (\d+)"))
m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
bad += sum(int(x) for x in m.groups()) if m else 0
ticks, hz = map(int, re.search(r"cpu_ticks (\d+) (\d+)", text).groups())
print(f"{rps:.0f} {p50:.0f} {p99:.0f} {ticks * 1e6 / hz / max(total, 1):.2f} {total} {bad}")
PY
}

# hs256_token DIR ISSUER: writes DIR/jwks.json (one oct key, kid "h") and DIR/secret, and prints
# an HS256 token for ISSUER with sub "u1" that expires in an hour.
hs256_token() {
  python3 - "$1" "$2" <<'PY'
import base64, hashlib, hmac, json, sys, time
d, iss = sys.argv[1], sys.argv[2]
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
secret = b"bench-hs256-secret-0123456789abcdef"
open(f"{d}/secret", "wb").write(secret)
open(f"{d}/jwks.json", "w").write(json.dumps({"keys": [{"kty": "oct", "kid": "h", "k": b64(secret)}]}))
claims = b64(json.dumps({"iss": iss, "sub": "u1", "exp": int(time.time()) + 3600}).encode())
s = b64(json.dumps({"alg": "HS256", "kid": "h", "typ": "JWT"}).encode()) + "." + claims
print(s + "." + b64(hmac.new(secret, s.encode(), hashlib.sha256).digest()))
PY
}

# hs256_tokens DIR ISSUER COUNT: COUNT distinct HS256 tokens (sub "u0".."uN", one a line) in
# DIR/tokens, signed with the key hs256_token wrote (call that first).
hs256_tokens() {
  python3 - "$1" "$2" "$3" <<'PY'
import base64, hashlib, hmac, json, sys, time
d, iss, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
secret = open(f"{d}/secret", "rb").read()
head = b64(json.dumps({"alg": "HS256", "kid": "h", "typ": "JWT"}).encode())
exp = int(time.time()) + 3600
with open(f"{d}/tokens", "w") as f:
    for i in range(count):
        s = head + "." + b64(json.dumps({"iss": iss, "sub": f"u{i}", "exp": exp}).encode())
        f.write(s + "." + b64(hmac.new(secret, s.encode(), hashlib.sha256).digest()) + "\n")
PY
}

# machine_note: the line every table starts with (cores, load, date).
machine_note() {
  echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
}
