#!/usr/bin/env bash
# Full backup Orthanc -> Orthanc: rtbackup with its defaults (and with 1, 2, 4, 8
# associations) against one `TCP_NODELAY=1 movescu` per study run back to back; then
# the incremental no-op run over a larger source: its time against the full backup,
# the associations it opened, and the host's peak memory.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
top=$(cd "$here/../.." && pwd)
work=$(mktemp -d)
trap 'bash "$top/tests/testbed/testbed.sh" stop "$work/tb" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
PATIENTS=${BACKUP_PATIENTS:-50}       # x (CT + RTSTRUCT + RTPLAN + RTDOSE) each
SLICES=${BACKUP_SLICES:-97}           # 50 x (97 + 3) = 5000 instances in 200 series
BIG_PATIENTS=${NOOP_PATIENTS:-200}    # 200 x 100 = 20 000 instances for the no-op run

RTB_GEN_SYNTHETIC=$RTB_BUILD_DIR/tests/testbed/rtb_gen_synthetic RTB_TESTBED_PATIENTS=1 RTB_TESTBED_SLICES=1 \
  bash "$top/tests/testbed/testbed.sh" start "$work/tb" >/dev/null
. "$work/tb/testbed.env"
gen=$RTB_BUILD_DIR/tests/testbed/rtb_gen_synthetic

wipe() { # Orthanc HTTP URL
  curl -s "$1/patients" | tr -d '[]" \n' | tr ',' '\n' | while read -r id; do
    [ -n "$id" ] && curl -s -X DELETE "$1/patients/$id" >/dev/null
  done
}
count() { curl -s "$1/statistics" | sed -n 's/.*"CountInstances" : \([0-9]*\).*/\1/p'; }
seed() { # patients slices: the source (Orthanc "staging") gets a fresh synthetic clinic
  wipe "$STAGING_HTTP_URL"
  rm -rf "$work/data"; mkdir -p "$work/data"
  "$gen" "$work/data" --patients "$1" --slices "$2" --date 20261101 >/dev/null
  TCP_NODELAY=1 storescu +sd -aet "$SCU_AET" -aec "$STAGING_AET" "$HOST" "$STAGING_PORT" "$work/data" >/dev/null 2>&1
}
envfile() { # max_associations
  cat >"$work/bench.toml" <<TOML
[BENCH]
description = "benchmark"
default_source = "SRC"
default_backup = "MAIN"
script_ae = { aet = "$SCU_AET", port = $TEST_SCP_PORT }
[BENCH.sources.SRC]
type = "mim"
aet = "$STAGING_AET"
ip = "$HOST"
port = $STAGING_PORT
${1:+max_associations = $1}
[BENCH.backup_targets.MAIN]
type = "orthanc"
aet = "$MAIN_AET"
ip = "$HOST"
port = $MAIN_PORT
[BENCH.settings]
state_dir = "$work/state"
complete_references = false
TOML
}
rtb_backup() { # max_associations (empty: defaults); prints ms
  envfile "$1"
  wipe "$MAIN_HTTP_URL"; rm -rf "$work/state"
  local ms
  ms=$(time_ms "$RTBACKUP_BIN" --config "$work/bench.toml" backup BENCH --since 2026-11-01 --until 2026-11-01)
  [ "$(count "$MAIN_HTTP_URL")" = "$total" ] || { echo "backup incomplete" >&2; exit 1; }
  echo "$ms"
}
movescu_parallel() { # what the data path allows: four movescu at a time
  xargs -P4 -I{} env TCP_NODELAY=1 movescu -S -aet "$SCU_AET" -aec "$STAGING_AET" -aem "$MAIN_AET" \
    "$HOST" "$STAGING_PORT" -k QueryRetrieveLevel=STUDY -k StudyInstanceUID={} <"$work/studies.txt" >/dev/null 2>&1
}
movescu_loop() {
  while read -r study; do
    TCP_NODELAY=1 movescu -S -aet "$SCU_AET" -aec "$STAGING_AET" -aem "$MAIN_AET" "$HOST" "$STAGING_PORT" \
      -k QueryRetrieveLevel=STUDY -k StudyInstanceUID="$study" >/dev/null 2>&1
  done <"$work/studies.txt"
}

seed "$PATIENTS" "$SLICES"
total=$(count "$STAGING_HTTP_URL")
curl -s "$STAGING_HTTP_URL/studies?expand" | grep -o '"StudyInstanceUID" : "[0-9.]*"' | cut -d'"' -f4 >"$work/studies.txt"
nstudies=$(wc -l <"$work/studies.txt")

tool=() par=() def=() a1=() a2=() a4=() a8=()
for _ in $(seq "$RUNS"); do
  wipe "$MAIN_HTTP_URL"
  tool+=("$(time_ms movescu_loop)")
  [ "$(count "$MAIN_HTTP_URL")" = "$total" ] || { echo "movescu incomplete" >&2; exit 1; }
  wipe "$MAIN_HTTP_URL"
  par+=("$(time_ms movescu_parallel)")
  def+=("$(rtb_backup "")")
  a1+=("$(rtb_backup 1)"); a2+=("$(rtb_backup 2)"); a4+=("$(rtb_backup 4)"); a8+=("$(rtb_backup 8)")
done
t=$(median "${tool[@]}"); d=$(median "${def[@]}")

# The incremental no-op: a larger source, backed up once, then run again.
seed "$BIG_PATIENTS" 97
big=$(count "$STAGING_HTTP_URL")
envfile ""
wipe "$MAIN_HTTP_URL"; rm -rf "$work/state"
full_ms=$(time_ms "$RTBACKUP_BIN" --config "$work/bench.toml" backup BENCH --since 2026-11-01 --until 2026-11-01)
noop=() rss=()
for _ in $(seq "$RUNS"); do
  t0=$(now_ms)
  /usr/bin/time -f "%M" -o "$work/rss" "$RTBACKUP_BIN" --config "$work/bench.toml" backup BENCH \
    --since 2026-11-01 --until 2026-11-01 >/dev/null 2>&1
  noop+=($(( $(now_ms) - t0 ))); rss+=("$(cat "$work/rss")")
done
n=$(median "${noop[@]}")
assoc=$(sed -n 's/.*"associations":\([0-9]*\).*/\1/p' "$work/state/BENCH-SRC-last-run.json")
moved=$(sed -n 's/.*"moved":\([0-9]*\).*/\1/p' "$work/state/BENCH-SRC-last-run.json")

cat <<MD
## Full and incremental backup, Orthanc to Orthanc

$total instances ($PATIENTS patients: a $SLICES-slice CT, RTSTRUCT, RTPLAN, RTDOSE each; $nstudies studies,
$(( PATIENTS * 4 )) series) from one Orthanc into another, verified. Reference: one
\`TCP_NODELAY=1 movescu\` per study, back to back (no verification).

| run | median ms | runs (ms) | speed-up vs movescu |
|---|---:|---|---:|
| movescu per study, back to back | $t | ${tool[*]} | 1.00× |
| movescu per study, 4 at a time (xargs -P4; the data path's limit) | $(median "${par[@]}") | ${par[*]} | $(ratio "$t" "$(median "${par[@]}")")× |
| rtbackup backup, defaults (4 associations) | $d | ${def[*]} | $(ratio "$t" "$d")× |
| rtbackup, max_associations = 1 | $(median "${a1[@]}") | ${a1[*]} | $(ratio "$t" "$(median "${a1[@]}")")× |
| rtbackup, max_associations = 2 | $(median "${a2[@]}") | ${a2[*]} | $(ratio "$t" "$(median "${a2[@]}")")× |
| rtbackup, max_associations = 4 | $(median "${a4[@]}") | ${a4[*]} | $(ratio "$t" "$(median "${a4[@]}")")× |
| rtbackup, max_associations = 8 | $(median "${a8[@]}") | ${a8[*]} | $(ratio "$t" "$(median "${a8[@]}")")× |

Goal: at least 2.0× back-to-back movescu with the defaults.

Incremental no-op over $big instances ($BIG_PATIENTS studies): the full backup took $full_ms ms; a rerun
that finds everything present takes **$n ms** (median; runs ${noop[*]}), $(awk -v a="$n" -v b="$full_ms" 'BEGIN{printf "%.1f", 100*a/b}')% of the full
backup (goal: under 2%), moves $moved instances, and opens $assoc associations. Peak memory
of the host (max RSS) during that run: $(median "${rss[@]}") KiB.
MD
