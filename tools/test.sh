#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine: installs what is missing,
# builds, runs every test (unit, spec, integration against peers on loopback).
# Extra arguments go to ctest (e.g. -R spec.config).
#
# --sanitize (or SANITIZE=1): the same suite built with AddressSanitizer and
# UndefinedBehaviorSanitizer (and LeakSanitizer) into build-asan (or $BUILD_DIR).
# Every report any of our processes writes lands in BUILD_DIR/sanitizer/; the run
# fails when there is one, even if the test that caused it passed (a child process's
# report only shows as an exit code the test may have expected).
set -euo pipefail
cd "$(dirname "$0")/.."
sanitize=${SANITIZE:-0}
if [ "${1:-}" = "--sanitize" ]; then
    sanitize=1
    shift
fi
tools/deps.sh
if [ "$sanitize" != 1 ]; then
    tools/build.sh
    cd "${BUILD_DIR:-build}"
    ctest --output-on-failure -j 2 "$@"
    exit
fi

export BUILD_DIR=${BUILD_DIR:-build-asan}
cmake -S . -B "$BUILD_DIR" -DRTB_SANITIZE=ON >/dev/null # kept in the cache for build.sh
tools/build.sh
reports=$(realpath "$BUILD_DIR")/sanitizer
rm -rf "$reports"
mkdir -p "$reports"
# exitcode 86: a sanitizer report, told apart from an ordinary failure. Allocation
# stacks are unwound the fast way: the slow way (fast_unwind_on_malloc=0, which sees
# through DCMTK's and Lua's frames) makes the heaviest specs 8 times slower, past
# their timeouts. A leak report whose stack stops in a library: rerun that test with
# ASAN_OPTIONS=...:fast_unwind_on_malloc=0 to see where it came from.
export ASAN_OPTIONS=${ASAN_OPTIONS:-halt_on_error=1:detect_leaks=1:strict_string_checks=1:check_initialization_order=1:exitcode=86:log_path=$reports/asan}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1:exitcode=86:log_path=$reports/ubsan}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tools/sanitize/lsan.supp:print_suppressions=0}
cd "$BUILD_DIR"
set +e
ctest --output-on-failure -j 2 "$@"
tests=$?
set -e
if compgen -G "$reports/*" >/dev/null; then
    echo
    echo "sanitizer reports ($reports):"
    for f in "$reports"/*; do
        echo "==== $f"
        cat "$f"
    done
    exit 1
fi
echo "no sanitizer reports"
exit "$tests"
