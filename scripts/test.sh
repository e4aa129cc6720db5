#!/usr/bin/env bash
# make test: build with -Werror, run unit tests (CTest), the same unit tests built with
# ASan+UBSan, then the system tests (pytest under /usr/bin/python3). Runs every stage,
# then exits non-zero if any failed. Output ends with CTest's and pytest's summaries.
set -u
cd "$(dirname "$0")/.."
JOBS=$(nproc 2>/dev/null || echo 2)
BUILD=${BUILD:-build}
ASAN_BUILD=${ASAN_BUILD:-build-asan}
failed=()

stage() { printf '\n==== %s ====\n' "$*"; }

stage "build (release, -Werror)"
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null &&
  cmake --build "$BUILD" -j "$JOBS" || { echo "build failed"; exit 1; }

stage "build (ASan + UBSan)"
cmake -S . -B "$ASAN_BUILD" -DCMAKE_BUILD_TYPE=Debug -DKEEL_SANITIZE=ON >/dev/null &&
  cmake --build "$ASAN_BUILD" -j "$JOBS" || { echo "sanitizer build failed"; exit 1; }

stage "unit tests under ASan + UBSan"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
(cd "$ASAN_BUILD" && ctest --output-on-failure -j "$JOBS" -LE slow) || failed+=("unit-asan")

stage "unit tests (release)"
(cd "$BUILD" && ctest --output-on-failure -j "$JOBS") || failed+=("unit")

stage "system tests"
KEEL_BUILD="$PWD/$BUILD" /usr/bin/python3 -m pytest -q tests/system
rc=$?
[ $rc -ne 0 ] && failed+=("system")

if [ ${#failed[@]} -ne 0 ]; then
  echo "make test: FAILED stages: ${failed[*]}"
  exit 1
fi
exit 0
