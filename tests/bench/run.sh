#!/usr/bin/env bash
# Runs every benchmark (tests/bench/*.bench.sh) and writes BENCHMARKS.md: the machine,
# the date, and each benchmark's section. One command reproduces every figure:
#   tests/bench/run.sh            (after tools/build.sh; RUNS=5 by default)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
export RTBACKUP_BIN=${RTBACKUP_BIN:-$top/build/bindings/rtbackup}
export RTB_BUILD_DIR=${RTB_BUILD_DIR:-$top/build}
export RUNS=${RUNS:-5}
[ -x "$RTBACKUP_BIN" ] || { echo "build first: tools/build.sh" >&2; exit 2; }

out=$(mktemp)
{
  echo "# Benchmarks"
  echo
  echo "Reproduce with \`tests/bench/run.sh\` (builds are RelWithDebInfo; every figure is the"
  echo "median of $RUNS runs; ratios compare with the reference tool measured in the same run)."
  echo
  echo "- date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "- machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/ {print $2}') GiB RAM"
  echo "- system: $(. /etc/os-release && echo "$PRETTY_NAME"), kernel $(uname -r)"
  echo "- rtbackup $("$RTBACKUP_BIN" --version | cut -d' ' -f2), DCMTK $(dpkg-query -W -f='${Version}' dcmtk), Orthanc $(dpkg-query -W -f='${Version}' orthanc)"
  for b in "$here"/*.bench.sh; do
    echo
    # One benchmark failing does not lose the others' figures: it is said in its place.
    bash "$b" || printf '## %s\n\nFailed (exit %s); its messages went to stderr.\n' "$(basename "$b")" "$?"
  done
} > "$out"
mv "$out" "$top/BENCHMARKS.md"
cat "$top/BENCHMARKS.md"
