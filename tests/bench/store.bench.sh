#!/usr/bin/env bash
# C-STORE of 1000 uncompressed 128 KiB CT instances to a local `storescp --ignore`:
# `rtbackup store` against `TCP_NODELAY=1 storescu +sd` on the same files.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
N=${STORE_N:-1000}
work=$(mktemp -d)
trap 'kill $scp_pid 2>/dev/null || true; rm -rf "$work"' EXIT

mkdir -p "$work/ct"
"$RTBACKUP_BIN" run "$here/make_ct.lua" "$work/ct" "$N"
port=$(free_port)
TCP_NODELAY=1 storescp --ignore -aet BENCHSCP "$port" >/dev/null 2>&1 &
scp_pid=$!
wait_port "$port"

ours=() theirs=()
for _ in $(seq "$RUNS"); do
  ours+=("$(time_ms "$RTBACKUP_BIN" store --aet BENCH --aec BENCHSCP --host 127.0.0.1 --port "$port" --filepath "$work/ct" --format csv)")
  theirs+=("$(TCP_NODELAY=1 time_ms storescu +sd -aet BENCH -aec BENCHSCP 127.0.0.1 "$port" "$work/ct")")
done
o=$(median "${ours[@]}"); t=$(median "${theirs[@]}")
cat <<MD
## C-STORE throughput

$N uncompressed CT instances (128 KiB pixel data each, $(du -sm "$work/ct" | cut -f1) MB) over one association
to \`storescp --ignore\` on loopback.

| tool | median ms | instances/s | runs (ms) |
|---|---:|---:|---|
| rtbackup store | $o | $(awk -v n="$N" -v t="$o" 'BEGIN{printf "%.0f", n*1000/t}') | ${ours[*]} |
| TCP_NODELAY=1 storescu +sd | $t | $(awk -v n="$N" -v t="$t" 'BEGIN{printf "%.0f", n*1000/t}') | ${theirs[*]} |

rtbackup / storescu time ratio: **$(ratio "$o" "$t")** (goal: at most 1.2).
MD
