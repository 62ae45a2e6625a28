#!/usr/bin/env bash
# The status of a large journal: how long `rtbackup status` takes to read it, the
# status page to render, and `rtbackup serve` to answer the page the first time
# (journal read, health checks) and then (the status kept until a journal changes).
# Synthetic journals of STATUS_SIZES series units (2% failed, 3% queued) over a year;
# the page shows 30 days. The peers point at a closed port (health checks fail fast).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
SIZES=${STATUS_SIZES:-"10000 100000"}
work=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT
closed=$(free_port)
cat >"$work/bench.toml" <<TOML
[BENCH]
default_source = "ARIA"
default_backup = "MAIN"
script_ae = { aet = "BENCH" }
[BENCH.sources.ARIA]
type = "aria"
aet = "ARIA"
ip = "127.0.0.1"
port = $closed
[BENCH.backup_targets.MAIN]
type = "orthanc"
aet = "MAIN"
ip = "127.0.0.1"
port = $closed
[BENCH.settings]
state_dir = "$work/state"
TOML
mkdir -p "$work/state"

rows=()
for n in $SIZES; do
  "$RTBACKUP_BIN" run "$here/status_bench.lua" journal "$work/state/BENCH.journal.sqlite" "$n" 365
  reads=() renders=() bytes=0
  for _ in $(seq "$RUNS"); do
    read -r r p bytes < <("$RTBACKUP_BIN" --config "$work/bench.toml" run "$here/status_bench.lua" collect BENCH 30)
    reads+=("$r") renders+=("$p")
  done
  firsts=() thens=()
  for _ in $(seq "$RUNS"); do
    port=$(free_port)
    "$RTBACKUP_BIN" --config "$work/bench.toml" serve BENCH --port "$port" >/dev/null 2>&1 &
    pid=$!
    wait_port "$port"
    firsts+=("$(curl -s -o /dev/null -w '%{time_total}' "http://127.0.0.1:$port/" | awk '{printf "%.0f", $1 * 1000}')")
    thens+=("$(curl -s -o /dev/null -w '%{time_total}' "http://127.0.0.1:$port/" | awk '{printf "%.1f", $1 * 1000}')")
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
  done
  rows+=("| $n | $(median "${reads[@]}") | $(median "${renders[@]}") | $(( bytes / 1024 )) | $(median "${firsts[@]}") | $(median "${thens[@]}") |")
done

cat <<MD
## Status and the status page

Milliseconds for a journal of N series units over a year (2% failed, 3% queued), the
page showing 30 days: \`rtbackup status\` reading the journal (rtbackup.status.collect),
rendering the page from it, and \`rtbackup serve\` answering \`/\` the first time (journal
read and health checks) and the next time (the status is kept until a journal changes).
Median of $RUNS.

| series units | read status (ms) | render page (ms) | page (KiB) | serve, first \`/\` (ms) | serve, next \`/\` (ms) |
|---:|---:|---:|---:|---:|---:|
$(printf '%s\n' "${rows[@]}")
MD
