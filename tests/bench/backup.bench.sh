#!/usr/bin/env bash
# Full backup Orthanc -> Orthanc, verified, from three sources holding the same data:
#   local    the source Orthanc itself;
#   distant  the same behind tests/bench/delay_relay.py adding DELAY_MS each way (a WAN);
#   capped   the same behind the relay refusing a third association at once (an archive
#            at its limit of 2, answering A-ASSOCIATE-RJ rejected-transient).
# For each: rtbackup's defaults (adaptive below max_associations = 8) against fixed
# numbers of associations, and `xargs -P{2,4,8}` running one `TCP_NODELAY=1 movescu`
# per study (what a user could script; it verifies nothing). Locally also movescu per
# study back to back, the defaults with the archive verified over DICOM only (no
# http_url: IMAGE-level C-FINDs instead of its REST API), and the CPU (user+sys) per
# 1000 instances of the host and of both Orthancs.
# Then the incremental no-op run over a larger source: its time against the full
# backup, the associations it opened, and the host's peak memory.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
top=$(cd "$here/../.." && pwd)
work=$(mktemp -d)
PATIENTS=${BACKUP_PATIENTS:-50}       # x (CT + RTSTRUCT + RTPLAN + RTDOSE) each
SLICES=${BACKUP_SLICES:-97}           # 50 x (97 + 3) = 5000 instances in 200 series
BIG_PATIENTS=${NOOP_PATIENTS:-200}    # 200 x 100 = 20 000 instances for the no-op run
SOURCES=${BACKUP_SOURCES:-local distant capped} # a subset measures again what a change touched
NOOP=${BACKUP_NOOP:-1}                # 0: no incremental no-op run

RTB_GEN_SYNTHETIC=$RTB_BUILD_DIR/tests/testbed/rtb_gen_synthetic RTB_TESTBED_PATIENTS=1 RTB_TESTBED_SLICES=1 \
  bash "$top/tests/testbed/testbed.sh" start "$work/tb" >/dev/null
. "$work/tb/testbed.env"
gen=$RTB_BUILD_DIR/tests/testbed/rtb_gen_synthetic

count() { curl -s "$1/statistics" | sed -n 's/.*"CountInstances" : \([0-9]*\).*/\1/p'; }
wipe() { # Orthanc HTTP URL; again until it is empty (a move may still be landing)
  for _ in $(seq 50); do
    curl -s "$1/patients" | tr -d '[]" \n' | tr ',' '\n' | while read -r id || [ -n "$id" ]; do
      [ -n "$id" ] && curl -s -X DELETE "$1/patients/$id" >/dev/null
    done
    [ "$(curl -s "$1/patients" | tr -d '[] \n')" = "" ] && return
    sleep 0.2
  done
  echo "cannot empty $1" >&2; exit 1
}
seed() { # patients slices: the source (Orthanc "staging") gets a fresh synthetic clinic
  wipe "$STAGING_HTTP_URL"
  rm -rf "$work/data"; mkdir -p "$work/data"
  "$gen" "$work/data" --patients "$1" --slices "$2" --date 20261101 >/dev/null
  TCP_NODELAY=1 storescu +sd -aet "$SCU_AET" -aec "$STAGING_AET" "$HOST" "$STAGING_PORT" "$work/data" >/dev/null 2>&1
}
DELAY_MS=${DELAY_MS:-5}

# A relay in front of the source: relay NAME ARGS... starts it, its port in ${NAME}_PORT.
relay() {
  local name=$1; shift
  python3 "$here/delay_relay.py" --target "$HOST:$STAGING_PORT" "$@" >"$work/$name.port" 2>"$work/$name.log" &
  pids+=($!)
  for _ in $(seq 100); do [ -s "$work/$name.port" ] && break; sleep 0.05; done
  printf -v "${name}_PORT" '%s' "$(head -1 "$work/$name.port")"
}
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; bash "$top/tests/testbed/testbed.sh" stop "$work/tb" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
relay distant --delay-ms "$DELAY_MS"
relay capped --delay-ms 0 --max-associations 2
local_PORT=$STAGING_PORT

envfile() { # port max_associations adaptive (and the archive's http_url: $ARCHIVE_URL)
  local rest=""
  [ -n "$ARCHIVE_URL" ] && rest="http_url = \"$ARCHIVE_URL\""
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
port = $1
${2:+max_associations = $2}
[BENCH.backup_targets.MAIN]
type = "orthanc"
aet = "$MAIN_AET"
ip = "$HOST"
port = $MAIN_PORT
$rest
[BENCH.settings]
state_dir = "$work/state"
complete_references = false
${3:+adaptive_associations = $3}
TOML
}
# CPU (user+sys, ms) the two Orthancs have used so far: "source archive".
servers_ms() { echo "$(cpu_ms "$STAGING_PID") $(cpu_ms "$MAIN_PID")"; }
# servers_since "S0 M0": what each Orthanc used since servers_ms said that, into $work/srv.
servers_since() {
  local a b c d; read -r a b <<<"$1"; read -r c d <<<"$(servers_ms)"
  echo "$(( c - a )) $(( d - b ))" >"$work/srv"
}
# rtb_backup PORT [N] [dicom]: a full backup, N fixed associations (none: the defaults),
# "dicom": the archive without its http_url; prints ms, the host's user+sys ms into
# $work/cpu and the Orthancs' into $work/srv.
rtb_backup() {
  ARCHIVE_URL=$MAIN_HTTP_URL
  [ "${3:-}" = dicom ] && ARCHIVE_URL=""
  if [ -n "${2:-}" ]; then envfile "$1" "$2" false; else envfile "$1"; fi
  wipe "$MAIN_HTTP_URL"; rm -rf "$work/state"
  local t0 t1 s0
  s0=$(servers_ms)
  t0=$(now_ms)
  /usr/bin/time -f "%U %S" -o "$work/time" "$RTBACKUP_BIN" --config "$work/bench.toml" backup BENCH \
    --since 2026-11-01 --until 2026-11-01 >"$work/backup.log" 2>&1 || {
    # Reported in the table as what it was, with the run's own words on stderr.
    echo "backup failed (port $1, N ${2:-default}):" >&2; grep -v "^  error" "$work/backup.log" | tail -5 >&2
    echo 0 >"$work/cpu"; echo "-" >"$work/final"; echo "failed"; return; }
  t1=$(now_ms)
  servers_since "$s0"
  awk '{printf "%d", ($1 + $2) * 1000}' "$work/time" >"$work/cpu"
  [ "$(count "$MAIN_HTTP_URL")" = "$total" ] || { echo "backup incomplete" >&2; exit 1; }
  grep -q '"verified":'"$total"'\b' "$work/state/BENCH-SRC-last-run.json" || { echo "not all verified (port $1): $(cat "$work/state/BENCH-SRC-last-run.json")" >&2; exit 1; }
  sed -n 's/.*"associations_chosen":{[^}]*"final":\([0-9]*\).*/\1/p' "$work/state/BENCH-SRC-last-run.json" >"$work/final"
  echo $(( t1 - t0 ))
}
# movescu_parallel PORT P: one movescu per study, P at a time.
movescu_parallel() {
  xargs -P"$2" -I{} env TCP_NODELAY=1 movescu -S -aet "$SCU_AET" -aec "$STAGING_AET" -aem "$MAIN_AET" \
    "$HOST" "$1" -k QueryRetrieveLevel=STUDY -k StudyInstanceUID={} <"$work/studies.txt"
}
movescu_loop() {
  while read -r study; do
    TCP_NODELAY=1 movescu -S -aet "$SCU_AET" -aec "$STAGING_AET" -aem "$MAIN_AET" "$HOST" "$STAGING_PORT" \
      -k QueryRetrieveLevel=STUDY -k StudyInstanceUID="$study" >/dev/null 2>&1
  done <"$work/studies.txt"
}
# movescu_timed PORT P: ms, or "incomplete" when the source refused some of them; the
# Orthancs' CPU into $work/srv.
movescu_timed() {
  wipe "$MAIN_HTTP_URL"
  local t0 t1 s0
  s0=$(servers_ms)
  t0=$(now_ms)
  movescu_parallel "$1" "$2" >/dev/null 2>&1 || true
  t1=$(now_ms)
  servers_since "$s0"
  if [ "$(count "$MAIN_HTTP_URL")" = "$total" ]; then echo $(( t1 - t0 )); else echo incomplete; fi
}

seed "$PATIENTS" "$SLICES"
total=$(count "$STAGING_HTTP_URL")
curl -s "$STAGING_HTTP_URL/studies?expand" | grep -o '"StudyInstanceUID" : "[0-9.]*"' | cut -d'"' -f4 >"$work/studies.txt"
nstudies=$(wc -l <"$work/studies.txt")

declare -A ms   # ms[source,run] = "runs..."
cpu=() finals=() srv_p4=() srv_def=() srv_dicom=() # srv_*: "source,archive" CPU ms of the Orthancs, local runs
ARCHIVE_URL=$MAIN_HTTP_URL
loop=()
for _ in $(seq "$RUNS"); do
  wipe "$MAIN_HTTP_URL"
  loop+=("$(time_ms movescu_loop)")
  for src in $SOURCES; do
    port_var=${src}_PORT; port=${!port_var}
    for p in 2 4 8; do
      ms[$src,P$p]+="$(movescu_timed "$port" "$p") "
      [ "$src$p" = local4 ] && srv_p4+=("$(tr ' ' , <"$work/srv")")
    done
    ms[$src,def]+="$(rtb_backup "$port") "
    [ "$src" = local ] && cpu+=("$(cat "$work/cpu")") && srv_def+=("$(tr ' ' , <"$work/srv")")
    finals+=("$src:$(cat "$work/final")")
    if [ "$src" = local ]; then
      ms[$src,dicom]+="$(rtb_backup "$port" "" dicom) "
      srv_dicom+=("$(tr ' ' , <"$work/srv")")
    fi
    for n in 1 2 4 8; do ms[$src,N$n]+="$(rtb_backup "$port" "$n") "; done
  done
done

# med "RUNS...": the median, or what went wrong ("incomplete", "failed") in any run.
med() {
  local v bad; read -ra v <<<"$1"
  bad=$(printf '%s\n' "${v[@]}" | grep -v '^[0-9]*$' | head -1)
  if [ -n "$bad" ]; then echo "$bad"; else median "${v[@]}"; fi
}
sratio() { case "$1$2" in ''|*[!0-9]*) echo "–";; *) ratio "$1" "$2";; esac; } # ratio, or – for a failed run
best() { # the smallest of the medians given
  printf '%s\n' "$@" | grep '^[0-9][0-9]*$' | sort -n | head -1
}
section=""
for src in $SOURCES; do
  d=$(med "${ms[$src,def]}")
  bp=$(best "$(med "${ms[$src,P2]}")" "$(med "${ms[$src,P4]}")" "$(med "${ms[$src,P8]}")")
  bn=$(best "$(med "${ms[$src,N1]}")" "$(med "${ms[$src,N2]}")" "$(med "${ms[$src,N4]}")" "$(med "${ms[$src,N8]}")")
  rows=""
  if [ -n "${ms[$src,dicom]:-}" ]; then
    m=$(med "${ms[$src,dicom]}")
    rows+="| rtbackup backup, defaults, the archive verified over DICOM only (no http_url) | $m | ${ms[$src,dicom]}| $(sratio "$m" "$d")× |
"
  fi
  for p in 2 4 8; do
    m=$(med "${ms[$src,P$p]}")
    rows+="| movescu per study, $p at a time (xargs -P$p) | $m | ${ms[$src,P$p]}| |
"
  done
  for n in 1 2 4 8; do
    m=$(med "${ms[$src,N$n]}")
    rows+="| rtbackup, $n at once (fixed: max_associations = $n, adaptive off) | $m | ${ms[$src,N$n]}| $(sratio "$m" "$d")× |
"
  done
  section+="
### Source: $src

| run | median ms | runs (ms) | defaults' speed-up over it |
|---|---:|---|---:|
| **rtbackup backup, defaults (adaptive, up to 8; the archive's http_url set)** | **$d** | ${ms[$src,def]}| 1.00× |
$rows
Defaults against the best \`xargs movescu\` ($bp ms): **$(sratio "$bp" "$d")×**; against the best fixed
number of associations ($bn ms): **$(sratio "$bn" "$d")×** (goal: at least 0.95).
"
done

noop_md=""
if [ "$NOOP" = 1 ]; then
  # The incremental no-op: a larger source, backed up once, then run again.
  seed "$BIG_PATIENTS" 97
  big=$(count "$STAGING_HTTP_URL")
  envfile "$STAGING_PORT"
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
  noop_md="
Incremental no-op over $big instances ($BIG_PATIENTS studies): the full backup took $full_ms ms; a rerun
that finds everything present takes **$n ms** (median; runs ${noop[*]}), $(awk -v a="$n" -v b="$full_ms" 'BEGIN{printf "%.1f", 100*a/b}')% of the full
backup (goal: under 2%), moves $moved instances, and opens $assoc associations. Peak memory
of the host (max RSS) during that run: $(median "${rss[@]}") KiB."
fi
# per_k "A,B A,B ...": the medians of the As and of the Bs, in ms per 1000 instances.
per_k() {
  local as=() bs=() x
  for x in $1; do as+=("${x%,*}"); bs+=("${x#*,}"); done
  awk -v a="$(median "${as[@]}")" -v b="$(median "${bs[@]}")" -v n="$total" \
    'BEGIN{printf "%.0f | %.0f", a * 1000 / n, b * 1000 / n}'
}
cpu_md=""
[ "${#cpu[@]}" -gt 0 ] && cpu_md="Host CPU of the full backup with the defaults (user+sys of the rtbackup process, local):
$(awk -v c="$(median "${cpu[@]}")" -v n="$total" 'BEGIN{printf "%.0f", c*1000/n}') ms per 1000 instances (runs, ms: ${cpu[*]}).

What the two Orthancs spend (local; user+sys ms per 1000 instances, medians; runs as source,archive ms):

| run | source Orthanc | archive Orthanc | runs |
|---|---:|---:|---|
| movescu per study, 4 at a time | $(per_k "${srv_p4[*]}") | ${srv_p4[*]} |
| rtbackup backup, defaults (plan, moves, verification through the archive's REST API) | $(per_k "${srv_def[*]}") | ${srv_def[*]} |
| rtbackup backup, defaults, the archive verified over DICOM only | $(per_k "${srv_dicom[*]}") | ${srv_dicom[*]} |"

cat <<MD
## Full and incremental backup, Orthanc to Orthanc

$total instances ($PATIENTS patients: a $SLICES-slice CT, RTSTRUCT, RTPLAN, RTDOSE each; $nstudies studies,
$(( PATIENTS * 4 )) series) from one Orthanc into another, every instance verified by rtbackup (movescu
verifies nothing). The same source three ways: \`local\`; \`distant\`, behind a relay adding $DELAY_MS ms each
way (tests/bench/delay_relay.py); \`capped\`, behind the relay refusing a third association at once
(A-ASSOCIATE-RJ rejected-transient, as an archive at its limit; a movescu refused so loses its study:
"incomplete"). Movescu per study, back to back (local): $(median "${loop[@]}") ms (runs ${loop[*]}).

Goals: the defaults at least as fast as the best \`xargs -P{2,4,8} movescu\` on the local source, and
at least 0.95× the best fixed number of associations on each source.
$section
Associations the adaptive defaults ended with (source:final, every run): ${finals[*]}.
$cpu_md
$noop_md
MD
