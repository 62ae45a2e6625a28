#!/usr/bin/env bash
# RT Beams Treatment Records built and written per second from a Mosaiq delivery
# group: rtbackup (rtbackup.mosaiq.map + the C builder + atomic save) against an
# equivalent pydicom program (rtrecord_bench.py) on the same data, same session.
# Cases: the 2-beam / 2-control-point fixture and a VMAT-like 2 arcs x 178
# control points with 60 leaf pairs. Each run is a loop inside one process
# (interpreter start-up excluded on both sides).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
# Debian's python3-pydicom lives under /usr/bin/python3 (not a pyenv/venv python).
PYTHON=${PYTHON:-/usr/bin/python3}
N_STATIC=${RTRECORD_N_STATIC:-2000}
N_VMAT=${RTRECORD_N_VMAT:-20}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$RTBACKUP_BIN" run "$here/rtrecord_bench.lua" export "$work/groups.py"
"$PYTHON" -c 'import pydicom' 2>/dev/null || { echo "python3-pydicom is needed" >&2; exit 2; }

# rate N MS: records per second.
rate() { awk -v n="$1" -v t="$2" 'BEGIN { printf "%.0f", n * 1000 / t }'; }

rows=() runs=()
for spec in "two_beam_static:$N_STATIC:2 beams x 2 control points" "vmat:$N_VMAT:2 arcs x 178 control points"; do
  IFS=: read -r case n label <<<"$spec"
  for mode in save nosave; do
    ours=() theirs=()
    for _ in $(seq "$RUNS"); do
      rm -rf "$work/out" && mkdir -p "$work/out"
      ours+=("$("$RTBACKUP_BIN" run "$here/rtrecord_bench.lua" run "$case" "$n" "$work/out" "$mode")")
      rm -rf "$work/out" && mkdir -p "$work/out"
      theirs+=("$("$PYTHON" "$here/rtrecord_bench.py" "$work/groups.py" "$case" "$n" "$work/out" "$mode")")
    done
    o=$(median "${ours[@]}"); t=$(median "${theirs[@]}")
    what=$([ "$mode" = save ] && echo "built + written" || echo "built only")
    rows+=("| $label, $what | $(rate "$n" "$o") | $(rate "$n" "$t") | **$(ratio "$t" "$o")×** |")
    runs+=("$case $mode ($n records): rtbackup ${ours[*]}; pydicom ${theirs[*]}")
  done
done

cat <<MD
## RT Beams Treatment Record generation

Records per second from one Mosaiq delivery group (mapping, enum tables, cm→mm,
MLC leaf decoding, deterministic UIDs, dataset, write): rtbackup against an
equivalent pydicom $("$PYTHON" -c 'import pydicom; print(pydicom.__version__)') program on the same data. "Written" is
the product's atomic write (temporary file, fsync, rename, fsync of the directory),
done the same way on both sides.

| record | rtbackup records/s | pydicom records/s | rtbackup / pydicom |
|---|---:|---:|---:|
$(printf '%s\n' "${rows[@]}")

Runs (ms per loop): $(printf '%s; ' "${runs[@]}")
MD
