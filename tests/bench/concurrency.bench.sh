#!/usr/bin/env bash
# What the thread pool buys: many C-FINDs against Orthanc and series-level C-MOVEs
# from dcmqrscp to Orthanc, one association at a time vs several at once, with the
# DCMTK tools run one after another as the reference.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
top=$(cd "$here/../.." && pwd)
work=$(mktemp -d)
trap 'bash "$top/tests/testbed/testbed.sh" stop "$work/tb" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
FINDS=${FINDS:-64}
RTB_GEN_SYNTHETIC=$RTB_BUILD_DIR/tests/testbed/rtb_gen_synthetic RTB_TESTBED_PATIENTS=8 RTB_TESTBED_SLICES=40 \
  bash "$top/tests/testbed/testbed.sh" start "$work/tb" >/dev/null
envf=$work/tb/testbed.env
. "$envf"

run_lua() { "$RTBACKUP_BIN" run "$here/find_move.lua" "$envf" "$@" | cut -d' ' -f1; }

findscu_loop() {
  for _ in $(seq "$FINDS"); do
    TCP_NODELAY=1 findscu -S -aet "$SCU_AET" -aec "$MAIN_AET" "$HOST" "$MAIN_PORT" \
      -k QueryRetrieveLevel=STUDY -k PatientID='*' -k StudyInstanceUID >/dev/null 2>&1
  done
}
movescu_loop() {
  # the same series rtbackup moves, listed by rtbackup's own find (not timed)
  while read -r study series; do
    TCP_NODELAY=1 movescu -S -aet "$SCU_AET" -aec "$ARIA_AET" -aem "$MAIN_AET" "$HOST" "$ARIA_PORT" \
      -k QueryRetrieveLevel=SERIES -k StudyInstanceUID="$study" -k SeriesInstanceUID="$series" >/dev/null 2>&1
  done < "$work/series.txt"
}
cat > "$work/list.lua" <<'LUA'
local dicom = require "rtbackup.dicom"
local tb = {}
for line in io.lines(arg[1]) do local k, v = line:match("^([%w_]+)=(.*)$") if k then tb[k] = v end end
local aria = dicom.peer{aet = tb.ARIA_AET, host = tb.HOST, port = tonumber(tb.ARIA_PORT), calling_aet = tb.SCU_AET}
for _, st in ipairs(aria:find{level = "STUDY", PatientID = "*", StudyInstanceUID = ""}) do
  for _, se in ipairs(aria:find{level = "SERIES", StudyInstanceUID = st.StudyInstanceUID, SeriesInstanceUID = ""}) do
    print(st.StudyInstanceUID, se.SeriesInstanceUID)
  end
end
LUA
"$RTBACKUP_BIN" run "$work/list.lua" "$envf" | tr '\t' ' ' > "$work/series.txt"
nseries=$(wc -l < "$work/series.txt")

f_tool=() f1=() f8=() m_tool=() m1=() m4=()
for _ in $(seq "$RUNS"); do
  f_tool+=("$(time_ms findscu_loop)")
  f1+=("$(run_lua find 1 "$FINDS")")
  f8+=("$(run_lua find 8 "$FINDS")")
  m_tool+=("$(time_ms movescu_loop)")
  m1+=("$(run_lua move 1)")
  m4+=("$(run_lua move 4)")
done
ft=$(median "${f_tool[@]}"); f1m=$(median "${f1[@]}"); f8m=$(median "${f8[@]}")
mt=$(median "${m_tool[@]}"); m1m=$(median "${m1[@]}"); m4m=$(median "${m4[@]}")
cat <<MD
## Parallel C-FIND and C-MOVE (thread pool)

$FINDS STUDY-level C-FINDs to Orthanc, and series-level C-MOVEs of every series of a
dcmqrscp archive ($nseries series, 8 patients, 40-slice CTs + RT objects) to Orthanc.
One association per operation in every case.

| work | findscu/movescu one by one (ms) | rtbackup, 1 at a time (ms) | rtbackup, N at once (ms) | speed-up N vs tool |
|---|---:|---:|---:|---:|
| $FINDS C-FINDs, N = 8 | $ft | $f1m | $f8m | $(ratio "$ft" "$f8m")× |
| $nseries C-MOVEs, N = 4 | $mt | $m1m | $m4m | $(ratio "$mt" "$m4m")× |

Runs (ms): findscu ${f_tool[*]}; rtbackup find 1: ${f1[*]}; find 8: ${f8[*]}; movescu ${m_tool[*]}; rtbackup move 1: ${m1[*]}; move 4: ${m4[*]}.
MD
