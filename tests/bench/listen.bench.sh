#!/usr/bin/env bash
# Ingest rate of `rtbackup listen` (every instance fsynced before its C-STORE response)
# against DCMTK's `storescp` (which does not fsync), both writing 1000 uncompressed
# 128 KiB CT instances sent by storescu:
#   - over one association (one storescu): every response waits for its own flushes;
#   - over K concurrent associations for each K in LISTEN_SENDERS ("4 8" by default:
#     K storescu processes), storescp with --fork so that it too serves them at once.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
N=${LISTEN_N:-1000}
SENDERS=${LISTEN_SENDERS:-4 8}
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT

mkdir -p "$work/ct"
"$RTBACKUP_BIN" run "$here/make_ct.lua" "$work/ct" "$N"
# The same files split K ways (symbolic links) for each K, one share per sender.
for K in $SENDERS; do
  i=0
  for f in "$work"/ct/*.dcm; do
    mkdir -p "$work/split$K/$((i % K))"
    ln -s "$f" "$work/split$K/$((i % K))/"
    i=$((i + 1))
  done
done

# send PORT AET SENDERS: wall time in ms of SENDERS storescu processes sending all N files.
send() {
  local port=$1 aet=$2 senders=$3 t0 t1 k sp=()
  t0=$(now_ms)
  if [ "$senders" = 1 ]; then
    TCP_NODELAY=1 storescu +sd -aet BENCH -aec "$aet" 127.0.0.1 "$port" "$work/ct" >/dev/null 2>&1 \
      || { echo "storescu failed" >&2; return 1; }
  else
    for k in $(seq 0 $((senders - 1))); do
      TCP_NODELAY=1 storescu +sd -aet BENCH -aec "$aet" 127.0.0.1 "$port" "$work/split$senders/$k" >/dev/null 2>&1 &
      sp+=($!)
    done
    for p in "${sp[@]}"; do wait "$p" || { echo "storescu failed" >&2; return 1; }; done
  fi
  t1=$(now_ms)
  echo $(( t1 - t0 ))
}

# count DIR: the instances that arrived.
count() { find "$1" -type f -name '*.dcm' | wc -l; }

# A new output directory for each run, all removed at the end (the trap): ext4 without
# a journal skips inodes deleted in the last seconds when it creates a file, and a run
# right after another's 1000 files were deleted spent a quarter of its CPU in that
# search (perf: recently_deleted), whichever SCP it was.
fresh_out() { mktemp -d "$work/out.XXXXXX"; }

# run_storescp SENDERS: one measurement against a fresh storescp.
run_storescp() {
  local senders=$1 port out ms fork=()
  [ "$senders" = 1 ] || fork=(--fork)
  port=$(free_port); out=$(fresh_out)
  TCP_NODELAY=1 storescp "${fork[@]}" -aet BENCHSCP -od "$out" -fe .dcm "$port" >/dev/null 2>&1 &
  local pid=$!; pids+=("$pid")
  wait_port "$port"
  ms=$(send "$port" BENCHSCP "$senders")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  [ "$(count "$out")" = "$N" ] || { echo "storescp wrote $(count "$out") of $N" >&2; return 1; }
  echo "$ms"
}

# run_listen SENDERS: one measurement against a fresh rtbackup listen.
run_listen() {
  local senders=$1 port out ms
  port=$(free_port); out=$(fresh_out)
  "$RTBACKUP_BIN" listen --aet BENCHSCP --port "$port" --out-dir "$out" --max-associations $((senders + 4)) \
    --max-per-host $((senders + 4)) >"$work/listen.log" 2>&1 &
  local pid=$!; pids+=("$pid")
  wait_port "$port"
  ms=$(send "$port" BENCHSCP "$senders")
  kill -INT "$pid"; wait "$pid" 2>/dev/null || true
  grep -q "stopped.*stored=$N\b" "$work/listen.log" || { echo "listen: $(tail -1 "$work/listen.log")" >&2; return 1; }
  [ "$(count "$out")" = "$N" ] || { echo "listen wrote $(count "$out") of $N" >&2; return 1; }
  echo "$ms"
}

rate() { awk -v n="$N" -v t="$1" 'BEGIN{printf "%.0f", n*1000/t}'; }

rows=""
summary=""
for senders in 1 $SENDERS; do
  ours=() theirs=()
  for _ in $(seq "$RUNS"); do
    theirs+=("$(run_storescp "$senders")")
    ours+=("$(run_listen "$senders")")
  done
  o=$(median "${ours[@]}"); t=$(median "${theirs[@]}")
  ref="storescp"; [ "$senders" = 1 ] || ref="storescp --fork"
  rows+="| $senders | rtbackup listen (fsync) | $o | $(rate "$o") | ${ours[*]} |
| $senders | $ref (no fsync) | $t | $(rate "$t") | ${theirs[*]} |
"
  summary+="**$(ratio "$t" "$o")** over $senders association(s); "
done

cat <<MD
## Storage SCP ingest

$N uncompressed CT instances (128 KiB pixel data each) sent by \`TCP_NODELAY=1 storescu +sd\` on loopback,
over 1 association and over several concurrent associations (that many storescu processes, each a share).
\`rtbackup listen\` answers each C-STORE only once its file is durable (fdatasync of the data, rename, fsync
of the directory, shared by the associations renaming into it at once); \`storescp\` does not fsync.

| associations | SCP | median ms | instances/s | runs (ms) |
|---:|---|---:|---:|---|
$rows
rtbackup listen / storescp ingest rate: ${summary}goal: at least 0.9 with concurrent
associations (over one association every response waits for its own two flushes: nothing to share).
MD
