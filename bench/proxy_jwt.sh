#!/usr/bin/env bash
# bench/proxy_jwt.sh - what JWT verification costs keel proxy: one backend (keel-testhttpd,
# GET /hello), keel proxy in front of it with three routes to it: no jwt, jwt with an HS256
# key, jwt with an RS256 key (2048 bits; the key made here by the openssl command), a
# claims_to_headers entry on both. wrk with 64 connections on each route, BENCH_ROUNDS rounds
# alternating the routes; the median round of each is printed. The proxy runs pinned to CPU 0,
# the backend and wrk to CPU 1.
#
#   bench/proxy_jwt.sh                      # BENCH_SECONDS=5 BENCH_ROUNDS=3
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/proxy_lib.sh
SECONDS_RUN=${BENCH_SECONDS:-5}
ROUNDS=${BENCH_ROUNDS:-3}
plib_init proxy_jwt.sh wrk taskset openssl python3 curl
need_keel keel keel-testhttpd
start_testhttpd up 1
UP=127.0.0.1:${PORT[up]}

# keys and tokens: HS256 from a secret, RS256 from a key the openssl command makes
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$TMP/rsa.pem" 2>/dev/null
MOD=$(openssl rsa -in "$TMP/rsa.pem" -noout -modulus 2>/dev/null | cut -d= -f2)
python3 - "$TMP" "$MOD" <<'PY'
import base64, hashlib, hmac, json, subprocess, sys, time
tmp, mod = sys.argv[1], sys.argv[2]
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
secret = b"bench-hs256-secret-0123456789abcdef"
n = bytes.fromhex(mod)
keys = {"keys": [{"kty": "oct", "kid": "h", "k": b64(secret)},
                 {"kty": "RSA", "kid": "r", "n": b64(n), "e": b64(b"\x01\x00\x01")}]}
open(f"{tmp}/jwks.json", "w").write(json.dumps(keys))
claims = b64(json.dumps({"iss": "bench", "sub": "u1", "exp": int(time.time()) + 3600}).encode())
def signing(alg, kid):
    return b64(json.dumps({"alg": alg, "kid": kid}).encode()) + "." + claims
s = signing("HS256", "h")
open(f"{tmp}/hs.tok", "w").write(s + "." + b64(hmac.new(secret, s.encode(), hashlib.sha256).digest()))
s = signing("RS256", "r")
sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", f"{tmp}/rsa.pem"], input=s.encode(),
                     capture_output=True, check=True).stdout
open(f"{tmp}/rs.tok", "w").write(s + "." + b64(sig))
PY

cat >"$TMP/proxy.yaml" <<CONF
listeners: [{address: 127.0.0.1:0}]
clusters: [{name: up, hosts: [$UP]}]
jwt_providers:
  - {name: b, issuer: bench, jwks_file: $TMP/jwks.json, claims_to_headers: [{claim: sub, header: x-user}]}
routes:
  - {name: plain, match: {prefix: /plain}, rewrite_prefix: /hello, cluster: up}
  - {name: jwt, match: {prefix: /jwt}, rewrite_prefix: /hello, jwt: b, cluster: up}
CONF
KEEL_LOG_LEVEL=error start_keel proxy 0 "$TMP/proxy.yaml"
P=${PORT[proxy]}
HS=$(cat "$TMP/hs.tok")
RS=$(cat "$TMP/rs.tok")
check() { # path [header]
  code=$(curl -s -o /dev/null -w '%{http_code}' ${2:+-H "$2"} "http://127.0.0.1:$P$1")
  [ "$code" = 200 ] || { echo "bench/proxy_jwt.sh: $1 answered $code"; exit 1; }
}
check /plain
check /jwt "Authorization: Bearer $HS"
check /jwt "Authorization: Bearer $RS"

run() { # name path [header]
  taskset -c 1 wrk -t1 -c64 -d"${SECONDS_RUN}s" --latency ${3:+-H "$3"} "http://127.0.0.1:$P$2" |
    awk -v n="$1" '/Requests\/sec/ {r=$2} /^ +99%/ {p=$2} END {printf "%s %s %s\n", n, r, p}'
}
for _ in $(seq "$ROUNDS"); do
  run none /plain
  run hs256 /jwt "Authorization: Bearer $HS"
  run rs256 /jwt "Authorization: Bearer $RS"
done >"$TMP/rounds"
echo "route   requests/s (median of $ROUNDS)   p99"
for n in none hs256 rs256; do
  grep "^$n " "$TMP/rounds" | sort -k2 -n | awk -v k="$ROUNDS" 'NR == int((k + 1) / 2) {printf "%-7s %-28s %s\n", $1, $2, $3}'
done
