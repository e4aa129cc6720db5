#!/usr/bin/env bash
# make soak: the long runs that do not fit in `make test`. Bounded by SECONDS (default 600),
# split across the parts that exist.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
secs=${1:-600}
rc=0
if [ -x "$BUILD/keel-sim" ]; then
  echo "==== simulator soak: ${secs}s of random seeds ===="
  "$BUILD/keel-sim" --soak "$secs" || rc=1
else
  echo "soak: build/keel-sim is not built; nothing to soak"
  rc=1
fi
echo "==== long system tests (marked slow) ===="
KEEL_SLOW=1 KEEL_BUILD="$PWD/$BUILD" /usr/bin/python3 -m pytest -q -m slow tests/system
st=$?
# pytest exits 5 when nothing is marked slow: not a failure of the soak
[ $st -ne 0 ] && [ $st -ne 5 ] && rc=1
exit $rc
