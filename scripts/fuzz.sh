#!/usr/bin/env bash
# fuzz.sh [SECONDS] - build every libFuzzer target and run each for SECONDS (default 60).
#
# Configures build-fuzz with clang and -DKEEL_FUZZ=ON (ASan + UBSan + libFuzzer),
# builds the tests/fuzz/fuzz_*.c targets, then runs every build-fuzz/fuzz/fuzz_*
# binary with -max_total_time=SECONDS. Each run writes new inputs to a temporary
# corpus and reads tests/fuzz/corpus/<target>/ as a read-only seed corpus (created
# empty if absent). Crash, leak, timeout and OOM inputs are kept under
# build-fuzz/artifacts/<target>/. Exits non-zero, naming the target and the
# artifact, if any target crashed, leaked or produced a sanitizer report.
#
# Environment: FUZZ_JOBS (build parallelism, default 2), FUZZ_TARGETS (space-
# separated names to run only some, e.g. "fuzz_resp"), FUZZ_ARGS (extra libFuzzer
# flags), FUZZ_BUILD_DIR (default build-fuzz).
set -u
. "$(dirname "${BASH_SOURCE[0]}")/scratch.sh"
cd "$(dirname "$0")/.."
root=$(pwd)
secs=${1:-60}
case "$secs" in '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;; esac
bdir=${FUZZ_BUILD_DIR:-$root/build-fuzz}

command -v clang >/dev/null || { echo "fuzz.sh: clang not found" >&2; exit 2; }
CC=clang cmake -S "$root" -B "$bdir" -DKEEL_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null ||
  { echo "fuzz.sh: cmake configure failed" >&2; exit 2; }

wanted() { [ -z "${FUZZ_TARGETS:-}" ] || [[ " $FUZZ_TARGETS " == *" $1 "* ]]; }
sources=()
for src in "$root"/tests/fuzz/fuzz_*.c; do
  [ -e "$src" ] || continue
  name=$(basename "$src" .c)
  wanted "$name" && sources+=("$name")
done
if [ ${#sources[@]} -gt 0 ]; then
  cmake --build "$bdir" -j"${FUZZ_JOBS:-2}" --target "${sources[@]}" ||
    { echo "fuzz.sh: build failed" >&2; exit 2; }
fi
# run every fuzz binary in the build tree (a target may come from elsewhere than tests/fuzz)
targets=()
for bin in "$bdir"/fuzz/fuzz_*; do
  [ -x "$bin" ] && [ -f "$bin" ] || continue
  name=$(basename "$bin")
  wanted "$name" && targets+=("$name")
done
[ ${#targets[@]} -gt 0 ] || { echo "fuzz.sh: no fuzz targets" >&2; exit 2; }

failed=0
for name in "${targets[@]}"; do
  bin=$bdir/fuzz/$name
  [ -x "$bin" ] || { echo "FAIL $name: binary $bin missing"; failed=1; continue; }
  seeds=$root/tests/fuzz/corpus/$name
  mkdir -p "$seeds"
  work=$(keel_scratch "fuzz-$name")
  arts=$bdir/artifacts/$name
  mkdir -p "$arts"
  log=$bdir/artifacts/$name.log
  echo "== $name: ${secs}s, seeds $(find "$seeds" -type f | wc -l) from $seeds"
  # shellcheck disable=SC2086
  "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$arts/" ${FUZZ_ARGS:-} "$work" "$seeds" >"$log" 2>&1
  rc=$?
  grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" | tail -3
  # a report can be printed without a non-zero exit (e.g. a recovered UBSan check)
  report=$(grep -m1 -E 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:|SUMMARY: ' "$log")
  artifact=$(grep -m1 -oE 'Test unit written to [^ ]+' "$log" | sed 's/Test unit written to //')
  if [ $rc -ne 0 ] || [ -n "$report" ]; then
    echo "FAIL $name (exit $rc): ${report:-see log}"
    echo "     artifact: ${artifact:-none written}; log: $log"
    echo "     reproduce: $bin ${artifact:-<input>}"
    failed=1
  else
    echo "ok   $name: corpus grew to $(find "$work" -type f | wc -l) new inputs"
  fi
  rm -rf "$work"
done
exit $failed
