#!/usr/bin/env bash
# A bounded fuzz run of every target in tests/fuzz: builds them with clang, libFuzzer,
# ASan and UBSan into build-fuzz (or $BUILD_DIR), runs each for FUZZ_SECONDS (default
# 60) starting from the committed seeds, and prints executions, crashes and hangs per
# target. Inputs that crash land in BUILD_DIR/fuzz/<target>/artifacts/; once fixed,
# copy one to tests/fuzz/regressions/<target>/ and ctest replays it in every build.
#
# usage: tools/fuzz.sh [TARGET...]     targets: dataset config scp_pdu (default: all)
#        FUZZ_SECONDS=600 tools/fuzz.sh scp_pdu
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
BUILD_DIR=${BUILD_DIR:-build-fuzz}
seconds=${FUZZ_SECONDS:-60}
if [ $# -gt 0 ]; then targets=("$@"); else targets=(dataset config scp_pdu); fi

[ "${FUZZ_SKIP_DEPS:-0}" = 1 ] || tools/deps.sh
CC=clang CXX=clang++ cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DRTB_FUZZ=ON >/dev/null
cmake --build "$BUILD_DIR" -j "$(nproc)" $(printf -- '--target fuzz_%s ' "${targets[@]}") \
    >"$BUILD_DIR/fuzz-build.log" || { tail -30 "$BUILD_DIR/fuzz-build.log"; exit 1; }

export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$root/tools/sanitize/lsan.supp:print_suppressions=0}

summary=()
status=0
for t in "${targets[@]}"; do
    work=$BUILD_DIR/fuzz/$t
    rm -rf "$work/artifacts" "$work"/fuzz.*.log
    mkdir -p "$work/corpus" "$work/artifacts"
    echo "fuzzing $t for ${seconds}s (logs: $work/fuzz.*.log)"
    # libFuzzer stops at the first crash, hang (-timeout) or leak and saves the input;
    # it is counted and fuzzing starts again for the time left, so one bug does not
    # hide the next. New inputs go to $work/corpus, kept from run to run.
    # -malloc_limit_mb above the RSS limit: DCMTK allocates a value's declared length
    # (gigabytes, from a few bytes of header) before it finds the file shorter, and
    # frees it; untouched, that memory is never resident. The RSS limit still holds.
    # The SCP allocates on its own threads, after the input that caused it returned:
    # libFuzzer's per-input leak check would blame the wrong input. Its leaks are
    # found once, at exit, by LeakSanitizer, with full stacks (DCMTK has no frame
    # pointers) so that the third-party suppressions match.
    extra=() options=$ASAN_OPTIONS
    if [ "$t" = scp_pdu ]; then
        extra=(-detect_leaks=0)
        options=$ASAN_OPTIONS:fast_unwind_on_malloc=0
    fi
    runs=0 crashes=0 hangs=0 ooms=0 segment=0
    start=$SECONDS
    while (( SECONDS - start < seconds && segment < 100 )); do
        segment=$((segment + 1))
        log=$work/fuzz.$segment.log
        before=$(find "$work/artifacts" -type f | wc -l)
        rc=0
        ASAN_OPTIONS=$options "$BUILD_DIR/tests/fuzz/fuzz_$t" "${extra[@]}" \
            -max_total_time=$((seconds - (SECONDS - start))) \
            -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=8192 -print_final_stats=1 \
            -artifact_prefix="$work/artifacts/" "$work/corpus" "tests/fuzz/corpus/$t" \
            >"$log" 2>&1 || rc=$?
        n=$(grep -a '^stat::number_of_executed_units:' "$log" | awk '{print $2}' | tail -1)
        runs=$((runs + ${n:-0}))
        [ "$rc" = 0 ] && break
        if [ "$(find "$work/artifacts" -type f | wc -l)" = "$before" ]; then
            echo "  $t stopped without saving an input (exit $rc); the end of $log:"
            tail -20 "$log"
            status=1
            break
        fi
        newest=$(ls -t "$work/artifacts" | head -1)
        case $newest in
            timeout-*) hangs=$((hangs + 1)) ;;
            oom-*) ooms=$((ooms + 1)) ;;
            *) crashes=$((crashes + 1)) ;;
        esac
        echo "  found $newest: $(grep -a -m1 -E 'ERROR: |SUMMARY: ' "$log" || echo "exit $rc")"
    done
    took=$((SECONDS - start))
    rate=$((runs / (took > 0 ? took : 1)))
    corpus=$(( $(find "$work/corpus" -type f | wc -l) + $(find "tests/fuzz/corpus/$t" -type f | wc -l) ))
    summary+=("$(printf '%-8s %10s %8s %8s %6s %5s %7s %8s' "$t" "$runs" "$rate" "$crashes" \
        "$hangs" "$ooms" "$corpus" "${took}s")")
    [ "$crashes" = 0 ] && [ "$hangs" = 0 ] && [ "$ooms" = 0 ] || status=1
done

echo
printf '%-8s %10s %8s %8s %6s %5s %7s %8s\n' target execs exec/s crashes hangs ooms corpus time
printf '%s\n' "${summary[@]}"
[ "$status" = 0 ] || echo "inputs that failed: $BUILD_DIR/fuzz/*/artifacts/ (replay one: $BUILD_DIR/tests/fuzz/fuzz_TARGET FILE)"
exit "$status"
