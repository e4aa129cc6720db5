#!/usr/bin/env bash
# make soak: the long runs that do not fit in `make test`. Bounded by SECONDS (default 600),
# split across the parts that exist: half for the shop under chaos (make demo, longer; its
# invariants must hold), half for the simulator, then the system tests marked slow.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
secs=${1:-600}
rc=0
shop_secs=$((secs / 2 < 60 ? 60 : secs / 2))
sim_secs=$((secs - shop_secs < 30 ? 30 : secs - shop_secs))
echo "==== the shop under load and chaos: ${shop_secs}s (scripts/demo.sh, a kill every 10 s) ===="
DEMO_SECONDS=$shop_secs BUILD=$BUILD bash scripts/demo.sh || rc=1
if [ -x "$BUILD/keel-sim" ]; then
  echo "==== simulator soak: ${sim_secs}s of random seeds ===="
  "$BUILD/keel-sim" --soak "$sim_secs" || rc=1
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
