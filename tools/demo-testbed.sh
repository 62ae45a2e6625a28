#!/usr/bin/env bash
# The DEMO environment's peers on loopback, at the ports environments/demo.toml names:
#   ARIA_DEMO     Orthanc, seeded with a synthetic clinic   11112 (HTTP 18041)
#   MIM_DEMO      DCMTK dcmqrscp, seeded too                11114
#   ORTHANC_MAIN  Orthanc, the backup archive               14242 (HTTP 18042)
#   DEMO_STAGE    Orthanc, staging for Mosaiq records       14243 (HTTP 18043)
# Usage: tools/demo-testbed.sh start|stop|status   (state in state/demo/testbed)
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${DEMO_TESTBED_DIR:-$PWD/state/demo/testbed}
GEN=${RTB_GEN_SYNTHETIC:-$PWD/build/tests/testbed/rtb_gen_synthetic}
HOST=127.0.0.1
ORTHANC=$(command -v Orthanc || echo /usr/sbin/Orthanc)

orthanc_config() { # name aet dicom_port http_port
  mkdir -p "$DIR/$1/storage"
  cat >"$DIR/$1/orthanc.json" <<JSON
{
  "Name": "rtbackup-demo-$1", "StorageDirectory": "$DIR/$1/storage", "IndexDirectory": "$DIR/$1/storage",
  "Plugins": [], "HttpServerEnabled": true, "HttpPort": $4, "RemoteAccessAllowed": false,
  "AuthenticationEnabled": false, "DicomServerEnabled": true, "DicomAet": "$2", "DicomPort": $3,
  "DicomCheckCalledAet": true, "DicomAlwaysAllowEcho": true, "DicomAlwaysAllowStore": true,
  "DicomAlwaysAllowFind": true, "DicomAlwaysAllowGet": true, "DicomAlwaysAllowMove": true,
  "SynchronousCMove": true, "StorageCompression": false,
  "DicomModalities": {
    "aria":    ["ARIA_DEMO", "$HOST", 11112],
    "mim":     ["MIM_DEMO", "$HOST", 11114],
    "main":    ["ORTHANC_MAIN", "$HOST", 14242],
    "staging": ["DEMO_STAGE", "$HOST", 14243],
    "backup":  ["DEMO_BACKUP", "$HOST", 11113]
  }
}
JSON
}

wait_echo() { # aet port pid
  for _ in $(seq 100); do
    kill -0 "$3" 2>/dev/null || { echo "demo: $1 exited; see $DIR/logs" >&2; exit 1; }
    echoscu -aet DEMO_BACKUP -aec "$1" "$HOST" "$2" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "demo: $1 does not answer on port $2" >&2
  exit 1
}

start() {
  [ -f "$DIR/pids" ] && stop
  for port in 11112 11114 14242 14243 18041 18042 18043; do
    if ss -ltn "sport = :$port" | grep -q LISTEN; then
      echo "demo: port $port is in use (another demo running? tools/demo-testbed.sh stop)" >&2
      exit 1
    fi
  done
  [ -x "$GEN" ] || { echo "demo: build first (tools/build.sh): $GEN" >&2; exit 1; }
  mkdir -p "$DIR/logs" "$DIR/aria-data" "$DIR/mim/storage"
  # Dated in the DEMO site's time zone, so the default window (yesterday and today
  # there) takes them.
  today=$(TZ=America/Los_Angeles date +%Y%m%d); yesterday=$(TZ=America/Los_Angeles date -d yesterday +%Y%m%d)
  # Synthetic clinics: ARIA treats RTB001-RTB004 today, MIM holds RTB101-RTB103 from yesterday.
  "$GEN" "$DIR/aria-data" --patients 4 --first 1 --date "$today" --slices 20 >/dev/null
  "$GEN" "$DIR/mim/storage" --patients 3 --first 101 --date "$yesterday" --slices 20 >/dev/null
  cat >"$DIR/mim/dcmqrscp.cfg" <<CFG
NetworkTCPPort  = 11114
MaxPDUSize      = 116794
MaxAssociations = 16
HostTable BEGIN
main    = (ORTHANC_MAIN, $HOST, 14242)
backup  = (DEMO_BACKUP, $HOST, 11113)
HostTable END
VendorTable BEGIN
VendorTable END
AETable BEGIN
MIM_DEMO   $DIR/mim/storage   RW (500, 1024mb)   ANY
AETable END
CFG
  dcmqridx "$DIR/mim/storage" "$DIR"/mim/storage/*.dcm
  orthanc_config aria ARIA_DEMO 11112 18041
  orthanc_config main ORTHANC_MAIN 14242 18042
  orthanc_config staging DEMO_STAGE 14243 18043
  : >"$DIR/pids"
  for name in aria main staging; do
    TCP_NODELAY=1 "$ORTHANC" "$DIR/$name/orthanc.json" >"$DIR/logs/$name.log" 2>&1 </dev/null &
    echo "$!" >>"$DIR/pids"
  done
  TCP_NODELAY=1 dcmqrscp -c "$DIR/mim/dcmqrscp.cfg" >"$DIR/logs/mim.log" 2>&1 </dev/null &
  echo "$!" >>"$DIR/pids"
  mapfile -t pids <"$DIR/pids"
  wait_echo ARIA_DEMO 11112 "${pids[0]}"
  wait_echo ORTHANC_MAIN 14242 "${pids[1]}"
  wait_echo DEMO_STAGE 14243 "${pids[2]}"
  wait_echo MIM_DEMO 11114 "${pids[3]}"
  # ARIA receives its clinic the way a TPS would send it: C-STORE.
  storescu +sd -aet DEMO_BACKUP -aec ARIA_DEMO "$HOST" 11112 "$DIR/aria-data" >/dev/null 2>&1
  echo "demo testbed up in $DIR (ARIA_DEMO 11112, MIM_DEMO 11114, ORTHANC_MAIN 14242, DEMO_STAGE 14243)"
}

stop() {
  if [ -f "$DIR/pids" ]; then
    while read -r pid; do kill "$pid" 2>/dev/null || true; done <"$DIR/pids"
    sleep 1
    while read -r pid; do kill -9 "$pid" 2>/dev/null || true; done <"$DIR/pids"
    rm -f "$DIR/pids"
  fi
  rm -rf "$DIR"
  echo "demo testbed stopped"
}

status() {
  [ -f "$DIR/pids" ] || { echo "demo testbed not running"; return 1; }
  while read -r pid; do kill -0 "$pid" 2>/dev/null && echo "running: $pid" || echo "gone: $pid"; done <"$DIR/pids"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
