#!/usr/bin/env bash
# C-STORE of 1000 uncompressed 128 KiB CT instances, `rtbackup store` against one
# `TCP_NODELAY=1 storescu +sd` on the same files, into two peers on loopback:
#   - `storescp --ignore`, a sink that stores nothing (the protocol's own cost);
#   - Orthanc, which ingests several associations in parallel: rtbackup's defaults
#     (adaptive associations, up to the peer's max_associations = 8) and fixed numbers.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
top=$(cd "$here/../.." && pwd)
N=${STORE_N:-1000}
work=$(mktemp -d)
scp_pid=
trap 'kill $scp_pid 2>/dev/null || true; bash "$top/tests/testbed/testbed.sh" stop "$work/tb" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

mkdir -p "$work/ct"
"$RTBACKUP_BIN" run "$here/make_ct.lua" "$work/ct" "$N"
port=$(free_port)
TCP_NODELAY=1 storescp --ignore -aet BENCHSCP "$port" >/dev/null 2>&1 &
scp_pid=$!
wait_port "$port"
RTB_GEN_SYNTHETIC=$RTB_BUILD_DIR/tests/testbed/rtb_gen_synthetic RTB_TESTBED_PATIENTS=1 RTB_TESTBED_SLICES=1 \
  bash "$top/tests/testbed/testbed.sh" start "$work/tb" >/dev/null
. "$work/tb/testbed.env"

wipe() {
  curl -s "$MAIN_HTTP_URL/patients" | tr -d '[]" \n' | tr ',' '\n' | while read -r id || [ -n "$id" ]; do
    [ -n "$id" ] && curl -s -X DELETE "$MAIN_HTTP_URL/patients/$id" >/dev/null
  done
}
count() { curl -s "$MAIN_HTTP_URL/statistics" | sed -n 's/.*"CountInstances" : \([0-9]*\).*/\1/p'; }
# rtb AEC PORT [ARGS...]: rtbackup store's ms (every file stored, else the bench fails).
rtb() {
  local aec=$1 p=$2; shift 2
  local t0 t1
  t0=$(now_ms)
  "$RTBACKUP_BIN" store --aet BENCH --aec "$aec" --host 127.0.0.1 --port "$p" --filepath "$work/ct" \
    --format csv "$@" >"$work/out.csv" 2>"$work/err" || { echo "store failed: $(tail -2 "$work/err")" >&2; exit 1; }
  t1=$(now_ms)
  echo $(( t1 - t0 ))
}
scu() { TCP_NODELAY=1 time_ms storescu +sd -aet BENCH -aec "$1" 127.0.0.1 "$2" "$work/ct"; }
into_orthanc() { # what... : wipes Orthanc, runs it, checks all N arrived
  wipe
  sync
  local ms
  ms=$("$@")
  [ "$(count)" = "$N" ] || { echo "Orthanc holds $(count) of $N" >&2; exit 1; }
  echo "$ms"
}

# The sink's runs all come before Orthanc's (whose writeback of 129 MB a run would
# land in whichever sink run came next), each after a sync, and the three tools take
# turns at going first.
sink_ours=() sink_one=() sink_scu=()
for i in $(seq "$RUNS"); do
  for k in 0 1 2; do
    sync
    case $(( (i + k) % 3 )) in
      0) sink_scu+=("$(scu BENCHSCP "$port")") ;;
      1) sink_ours+=("$(rtb BENCHSCP "$port")") ;;
      2) sink_one+=("$(rtb BENCHSCP "$port" --associations 1)") ;;
    esac
  done
done
declare -A orth
for _ in $(seq "$RUNS"); do
  orth[scu]+="$(into_orthanc scu "$MAIN_AET" "$MAIN_PORT") "
  orth[def]+="$(into_orthanc rtb "$MAIN_AET" "$MAIN_PORT") "
  for n in 1 2 4 8; do orth[N$n]+="$(into_orthanc rtb "$MAIN_AET" "$MAIN_PORT" --associations "$n") "; done
done
med() { local v; read -ra v <<<"$1"; median "${v[@]}"; }
rate() { awk -v n="$N" -v t="$1" 'BEGIN{printf "%.0f", n*1000/t}'; }
s=$(median "${sink_scu[@]}"); o=$(median "${sink_ours[@]}"); one=$(median "${sink_one[@]}")
os=$(med "${orth[scu]}"); od=$(med "${orth[def]}")
rows=""
for n in 1 2 4 8; do
  m=$(med "${orth[N$n]}")
  rows+="| rtbackup store --associations $n | $m | $(rate "$m") | ${orth[N$n]}| $(ratio "$os" "$m")× |
"
done
cat <<MD
## C-STORE throughput

$N uncompressed CT instances (128 KiB pixel data each, $(du -sm "$work/ct" | cut -f1) MB) on loopback.

Into \`storescp --ignore\` (a sink):

| tool | median ms | instances/s | runs (ms) | speed-up over storescu |
|---|---:|---:|---|---:|
| TCP_NODELAY=1 storescu +sd | $s | $(rate "$s") | ${sink_scu[*]} | 1.00× |
| rtbackup store (defaults) | $o | $(rate "$o") | ${sink_ours[*]} | **$(ratio "$s" "$o")×** |
| rtbackup store --associations 1 | $one | $(rate "$one") | ${sink_one[*]} | $(ratio "$s" "$one")× |

Into Orthanc $(dpkg-query -W -f='${Version}' orthanc) (the testbed's "main"; emptied before each run):

| tool | median ms | instances/s | runs (ms) | speed-up over storescu |
|---|---:|---:|---|---:|
| TCP_NODELAY=1 storescu +sd | $os | $(rate "$os") | ${orth[scu]}| 1.00× |
| **rtbackup store (defaults: adaptive, up to 8)** | **$od** | $(rate "$od") | ${orth[def]}| **$(ratio "$os" "$od")×** |
$rows
Goals: into Orthanc at least 1.5× one storescu with the defaults; into the sink at least 1.0×.
MD
