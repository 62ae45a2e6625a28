#!/usr/bin/env bash
# The demo on a fresh Debian 12 machine (as root): installs what is missing, builds,
# starts the DEMO testbed on loopback (tools/demo-testbed.sh), backs up every source
# of environments/demo.toml into the main Orthanc, validates, and leaves the testbed
# running so you can explore. `tools/demo.sh stop` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = stop ]; then exec tools/demo-testbed.sh stop; fi
tools/deps.sh
tools/build.sh
bin=build/bindings/rtbackup
export RTBACKUP_STATE_DIR=state/demo

step() { printf '\n== %s\n' "$*"; }
step "rtbackup config check"
"$bin" config check
step "starting the DEMO testbed"
tools/demo-testbed.sh start
week_ago=$(TZ=America/Los_Angeles date -d '6 days ago' +%F)
step "a week of Mosaiq treatments in state/demo/mosaiq.db"
"$bin" mosaiq-db create DEMO --patients 8 --from "$week_ago" --days 7 --force
status=0
step "rtbackup backup DEMO --all --since $week_ago"
"$bin" backup DEMO --all --since "$week_ago" || status=$?
step "rtbackup backup DEMO --all --since $week_ago   (again: nothing left to move)"
"$bin" backup DEMO --all --since "$week_ago" || status=$?
step "rtbackup validate DEMO ARIA / MIM"
"$bin" validate DEMO ARIA || status=$?
"$bin" validate DEMO MIM || status=$?
cat <<TXT

The testbed keeps running. Explore it:
  $bin repl DEMO
    DEMO> main = dicom.peer(env, "ORTHANC_MAIN")
    DEMO> main:find{level = "STUDY", PatientID = "*", StudyInstanceUID = "", StudyDate = ""}
    DEMO> require("rtbackup.journal").open("state/demo/DEMO.journal.sqlite"):counts("ARIA")
  $bin find --env DEMO --peer ORTHANC_MAIN --query-level SERIES -k PatientID=RTB001
  Orthanc main in a browser: http://127.0.0.1:18042/app/explorer.html
Stop it with: tools/demo.sh stop
TXT
exit "$status"
