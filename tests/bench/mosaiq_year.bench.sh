#!/usr/bin/env bash
# A year of a synthetic clinic's Mosaiq history (SQLite through its ODBC driver) backed
# up in one run: every record built, stored to Orthanc "staging", moved to Orthanc
# "main" and verified by content (its stored file through main's REST API, canonical
# digest; MOSAIQ_YEAR_REST=0: main without http_url, each record by C-GET). Reports the
# wall time, the records per second, the busy seconds of each phase and the host's CPU
# and peak memory. Goal: >= 10 000 records in <= 5 minutes on this machine.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
top=$(cd "$here/../.." && pwd)
work=$(mktemp -d)
trap 'bash "$top/tests/testbed/testbed.sh" stop "$work/tb" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
PATIENTS=${MOSAIQ_YEAR_PATIENTS:-650}   # one course each (some two): ~10 000 records a year
DAYS=${MOSAIQ_YEAR_DAYS:-365}
REST=${MOSAIQ_YEAR_REST:-1}
FROM=2025-01-01
UNTIL=$(date -u -d "$FROM + $(( DAYS - 1 )) days" +%F)

RTB_GEN_SYNTHETIC=$RTB_BUILD_DIR/tests/testbed/rtb_gen_synthetic RTB_TESTBED_PATIENTS=1 RTB_TESTBED_SLICES=1 \
  bash "$top/tests/testbed/testbed.sh" start "$work/tb" >/dev/null
. "$work/tb/testbed.env"
rest=""
[ "$REST" = 1 ] && rest="http_url = \"$MAIN_HTTP_URL\""

cat >"$work/year.toml" <<TOML
[YEAR]
description = "a year of Mosaiq"
default_source = "MOSAIQ"
default_backup = "MAIN"
script_ae = { aet = "$SCU_AET", port = $TEST_SCP_PORT }
[YEAR.sources.MOSAIQ]
type = "mosaiq"
odbc_driver = "SQLite3"
db_server = "localhost"
db_database = "$work/mosaiq.db"
db_username = "bench"
db_password = ""
staging_target_alias = "STAGING"
[YEAR.backup_targets.MAIN]
type = "orthanc"
aet = "$MAIN_AET"
ip = "$HOST"
port = $MAIN_PORT
$rest
[YEAR.backup_targets.STAGING]
type = "dicom_scp"
aet = "$STAGING_AET"
ip = "$HOST"
port = $STAGING_PORT
[YEAR.settings]
state_dir = "$work/state"
TOML
rtb() { "$RTBACKUP_BIN" --config "$work/year.toml" "$@"; }

t0=$(now_ms)
rtb mosaiq-db create YEAR --patients "$PATIENTS" --from "$FROM" --days "$DAYS" --leaf-encoding float32_mm \
  >"$work/create.txt"
gen_ms=$(( $(now_ms) - t0 ))

# CPU seconds (user + sys) the testbed's Orthanc serving $1 ("main", "staging") has used.
orthanc_cpu() {
  local pid
  pid=$(pgrep -f "$work/tb/$1/orthanc.json" | head -n 1)
  awk -v ms="$(cpu_ms "$pid")" 'BEGIN { printf "%.1f", ms / 1000 }'
}
main0=$(orthanc_cpu main) staging0=$(orthanc_cpu staging)
t0=$(now_ms)
/usr/bin/time -f "%U %S %M" -o "$work/time" "$RTBACKUP_BIN" --config "$work/year.toml" \
  backup YEAR --since "$FROM" --until "$UNTIL" --format json >"$work/summary.json" 2>"$work/log.txt" || true
wall_ms=$(( $(now_ms) - t0 ))
read -r user sys rss < <(tail -n 1 "$work/time")
main_cpu=$(awk -v a="$(orthanc_cpu main)" -v b="$main0" 'BEGIN { print a - b }')
staging_cpu=$(awk -v a="$(orthanc_cpu staging)" -v b="$staging0" 'BEGIN { print a - b }')

/usr/bin/python3 - "$work/summary.json" "$wall_ms" "$user" "$sys" "$rss" "$gen_ms" "$(cat "$work/create.txt")" \
  "$main_cpu" "$staging_cpu" "$(nproc)" "$REST" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
wall, user, system, rss, gen = int(sys.argv[2]) / 1000, float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]) / 1000
created = sys.argv[7].strip()
main_cpu, staging_cpu, cores = float(sys.argv[8]), float(sys.argv[9]), int(sys.argv[10])
rest = sys.argv[11] == "1"
how = "its stored file through main's REST API" if rest else "C-GET of each record"
n = s.get("records_built", 0)
p = s.get("phase_seconds", {})
goal = "met" if n >= 10000 and wall <= 300 else "missed"
print("## A year of Mosaiq, end to end\n")
print(f"The clinic: {created} (generated in {gen:.0f} s). One `rtbackup backup` of the year: every record")
print("built, stored to Orthanc \"staging\", moved to Orthanc \"main\" and verified by content")
print(f"({how}, canonical digest compared with what was built). Exit code "
      f"{s.get('exit_code')} ({s.get('status')}); {s.get('deliveries_skipped', 0)} deliveries named as not "
      "buildable (HDR, QA mode).\n")
print("| | value |")
print("|---|---:|")
print(f"| records built, moved and verified | {n} built, {s.get('moved', 0)} moved, {s.get('verified', 0)} verified, {s.get('failed', 0)} failed |")
print(f"| wall time | **{wall:.0f} s** ({n / wall:.0f} records/s) |")
for name in ("query", "build", "store", "move", "verify"):
    sec = p.get(name)
    if sec is not None:
        print(f"| {name} (busy seconds) | {sec:.1f} s ({n / sec if sec else 0:.0f} records/s) |")
print(f"| planning (query + build + store, overlapped) | {s.get('plan_seconds', 0):.1f} s |")
print(f"| moving and verifying (overlapped) | {s.get('move_verify_seconds', 0):.1f} s |")
print(f"| rtbackup CPU (user + sys) | {user + system:.0f} s ({(user + system) / max(n, 1) * 1000:.1f} ms per record) |")
print(f"| rtbackup peak memory (max RSS) | {rss // 1024} MiB |")
print(f"| Orthanc \"staging\" CPU (C-STOREs in, C-MOVEs out) | {staging_cpu:.0f} s ({staging_cpu / max(n, 1) * 1000:.1f} ms per record) |")
print(f"| Orthanc \"main\" CPU (C-MOVE sub-operations in, {'REST reads' if rest else 'C-GETs'} out) | {main_cpu:.0f} s ({main_cpu / max(n, 1) * 1000:.1f} ms per record) |")
cpu = user + system + main_cpu + staging_cpu
print(f"| the three processes' CPU / (wall time x {cores} cores) | {cpu:.0f} s / {wall * cores:.0f} s = {cpu / (wall * cores) * 100:.0f}% |")
print(f"\nGoal: at least 10 000 records in at most 5 minutes on this machine: **{goal}**.")
PY
