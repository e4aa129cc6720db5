#!/usr/bin/env bash
# Proves the sans-I/O check can fail: a scratch tree with one offending file per rule
# must be rejected, and a clean one accepted.
set -u
here="$(cd "$(dirname "$0")" && pwd)"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/src/core" "$tmp/src/proto"
echo 'int f(void) { return 1; } /* time(NULL) in a comment is fine */' > "$tmp/src/core/ok.c"
"$here/check-sans-io.sh" "$tmp" >/dev/null || { echo "clean tree rejected"; exit 1; }
fail=0
try() { # name, file content
  printf '%s\n' "$2" > "$tmp/src/proto/bad.c"
  if "$here/check-sans-io.sh" "$tmp" >/dev/null; then echo "not caught: $1"; fail=1; fi
  rm -f "$tmp/src/proto/bad.c"
}
try "uv.h include" '#include <uv.h>'
try "socket header" '#include <sys/socket.h>'
try "unistd include" '#include <unistd.h>'
try "pthread include" '#include <pthread.h>'
try "time() call" 'long f(void) { return time(0); }'
try "clock_gettime call" 'void f(void *t) { clock_gettime(1, t); }'
try "fopen call" 'void *f(void) { return fopen("x", "r"); }'
[ $fail -eq 0 ] && echo "sans-io check bites: 7 offences caught, clean tree accepted"
exit $fail
