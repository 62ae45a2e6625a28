#!/usr/bin/env bash
# Real DICOM peers on loopback for integration tests.
#
#   testbed.sh start DIR   start everything, write DIR/testbed.env, exit 0 when all answer
#   testbed.sh stop DIR    stop what DIR/testbed.env lists and remove DIR
#
# Peers (all on 127.0.0.1, free ports picked at random in 20000-60000):
#   Orthanc "main"    AET ORTHANC_MAIN  (DICOM + HTTP)
#   Orthanc "staging" AET STAGING       (DICOM + HTTP)
#   dcmqrscp          AET ARIA          preloaded with synthetic patients
#   storescp          AET STORESCP      writes to DIR/storescp
#   storescp over TLS AET STORESCP_TLS  mutual TLS, certificates from a CA made here
#   dcmqrscp          AET CORPUS    pydicom's real-world files in every transfer syntax
#                                   (tests/testbed/corpus.py), accepted as stored (-xf)
#   odil_qr.py        AET ODIL_QR   Q/R SCP on python3-odil (another DICOM stack) with
#                                   switchable vendor quirks; its own patients RTB101..
# plus a reserved port for the test program's own SCP (AET RTB_TEST_SCP), known
# to every peer as a move destination, and the test SCU's calling AE RTB_SCU (and
# NOGET_SCU, which the Orthanc servers refuse C-GET).
#
# Every peer runs with TCP_NODELAY=1: DCMTK (and Orthanc, built on it) keep
# Nagle's algorithm on otherwise, and small PDUs then wait for delayed ACKs.
#
# Needs: orthanc, dcmtk (dcmqrscp, dcmqridx, storescp, echoscu), iproute2 (ss);
# python3-odil (Debian's /usr/bin/python3) for ODIL_QR; openssl for the TLS peer (optional).
# The synthetic data generator comes from $RTB_GEN_SYNTHETIC (built by CMake).
# Sizes: RTB_TESTBED_PATIENTS (3), RTB_TESTBED_SLICES (10).
set -euo pipefail

HOST=127.0.0.1
SCU_AET=RTB_SCU
TEST_SCP_AET=RTB_TEST_SCP

die() { echo "testbed: $*" >&2; exit 1; }

# Ports are picked below the kernel's ephemeral range (ip_local_port_range, usually
# 32768-60999): a port in that range may be taken at any moment by one of the many
# outgoing connections a test run makes, between our pick and the peer's bind.
EPHEMERAL_LOW=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
[ "$EPHEMERAL_LOW" -gt 21000 ] || EPHEMERAL_LOW=32768

# pick_port VAR: sets VAR to a port nobody listens on and that this script has not
# handed out yet (a function, not $(...): the list of handed-out ports must survive).
USED_PORTS=" "
pick_port() {
    local p i
    for i in $(seq 1 500); do
        p=$(( 20000 + RANDOM % (EPHEMERAL_LOW - 20000) ))
        case "$USED_PORTS" in *" $p "*) continue ;; esac
        if ! ss -Htln "sport = :$p" | grep -q .; then
            USED_PORTS="$USED_PORTS$p "
            printf -v "$1" '%s' "$p"
            return 0
        fi
    done
    die "no free port found"
}

# The last lines the peers logged: a failed start removes the directory, so what went
# wrong must be said right away.
last_log_lines() {
    tail -n 3 "$DIR"/logs/*.log 2>/dev/null | tr '\n' ' ' | cut -c1-600
}

# Waits until an AE answers C-ECHO, or fails after $3 seconds.
wait_echo() {
    local aet=$1 port=$2 limit=$3 pid=$4 i
    for i in $(seq 1 $(( limit * 5 ))); do
        if echoscu -to 2 -ta 2 -aet RTB_PROBE -aec "$aet" "$HOST" "$port" >/dev/null 2>&1; then
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || die "$aet (pid $pid) exited: $(last_log_lines)"
        sleep 0.2
    done
    die "$aet did not answer C-ECHO on port $port within ${limit}s; see $DIR/logs"
}

# echoscu speaks plain TCP; for the TLS storescp, waiting for the port is enough.
wait_port() {
    local port=$1 limit=$2 pid=$3 i
    for i in $(seq 1 $(( limit * 5 ))); do
        ss -Htln "sport = :$port" | grep -q . && return 0
        kill -0 "$pid" 2>/dev/null || die "pid $pid exited: $(last_log_lines)"
        sleep 0.2
    done
    die "nothing listens on port $port after ${limit}s; see $DIR/logs"
}

orthanc_config() {
    # $1 name, $2 aet, $3 dicom port, $4 http port
    local name=$1 aet=$2 dport=$3 hport=$4
    mkdir -p "$DIR/$name/storage"
    cat >"$DIR/$name/orthanc.json" <<EOF
{
  "Name": "rtbackup-testbed-$name",
  "StorageDirectory": "$DIR/$name/storage",
  "IndexDirectory": "$DIR/$name/storage",
  "Plugins": [],
  "HttpServerEnabled": true,
  "HttpPort": $hport,
  "RemoteAccessAllowed": false,
  "AuthenticationEnabled": false,
  "DicomServerEnabled": true,
  "DicomAet": "$aet",
  "DicomPort": $dport,
  "DicomCheckCalledAet": true,
  "DicomAlwaysAllowEcho": true,
  "DicomAlwaysAllowStore": true,
  "DicomAlwaysAllowFind": false,
  "DicomAlwaysAllowGet": false,
  "DicomAlwaysAllowMove": false,
  "DicomCheckModalityHost": false,
  "DicomScpTimeout": 30,
  "SynchronousCMove": true,
  "StorageCompression": false,
  "ConcurrentJobs": 2,
  "DeidentifyLogs": false,
  "DicomModalities": {
    "main":    { "AET": "ORTHANC_MAIN",  "Host": "$HOST", "Port": $MAIN_PORT,
                 "AllowEcho": true, "AllowFind": true, "AllowMove": true, "AllowGet": true, "AllowStore": true },
    "staging": { "AET": "STAGING",       "Host": "$HOST", "Port": $STAGING_PORT,
                 "AllowEcho": true, "AllowFind": true, "AllowMove": true, "AllowGet": true, "AllowStore": true },
    "aria":    { "AET": "ARIA",          "Host": "$HOST", "Port": $ARIA_PORT,
                 "AllowEcho": true, "AllowFind": true, "AllowMove": true, "AllowGet": true, "AllowStore": true },
    "odil":    { "AET": "ODIL_QR",       "Host": "$HOST", "Port": $ODIL_PORT,
                 "AllowEcho": true, "AllowFind": true, "AllowMove": true, "AllowGet": true, "AllowStore": true },
    "storescp": { "AET": "STORESCP",     "Host": "$HOST", "Port": $STORESCP_PORT,
                 "AllowEcho": true, "AllowFind": false, "AllowMove": false, "AllowGet": false, "AllowStore": true },
    "scu":     { "AET": "$SCU_AET",      "Host": "$HOST", "Port": $TEST_SCP_PORT,
                 "AllowEcho": true, "AllowFind": true, "AllowMove": true, "AllowGet": true, "AllowStore": true },
    "noget":   { "AET": "NOGET_SCU",     "Host": "$HOST", "Port": $TEST_SCP_PORT,
                 "AllowEcho": true, "AllowFind": true, "AllowMove": true, "AllowGet": false, "AllowStore": true },
    "testscp": { "AET": "$TEST_SCP_AET", "Host": "$HOST", "Port": $TEST_SCP_PORT,
                 "AllowEcho": true, "AllowFind": true, "AllowMove": true, "AllowGet": true, "AllowStore": true }
  }
}
EOF
}

start() {
    command -v Orthanc >/dev/null || [ -x /usr/sbin/Orthanc ] || die "Orthanc not installed (apt-get install orthanc)"
    local orthanc_bin
    orthanc_bin=$(command -v Orthanc || echo /usr/sbin/Orthanc)
    for t in dcmqrscp dcmqridx storescp echoscu ss; do
        command -v $t >/dev/null || die "$t not found (apt-get install dcmtk iproute2)"
    done
    /usr/bin/python3 -c "import odil" 2>/dev/null || die "python3-odil not installed (apt-get install python3-odil)"
    local gen=${RTB_GEN_SYNTHETIC:-}
    [ -n "$gen" ] && [ -x "$gen" ] || die "set RTB_GEN_SYNTHETIC to the built rtb_gen_synthetic program"

    [ -e "$DIR/testbed.env" ] && { echo "testbed: stopping the previous testbed in $DIR" >&2; stop; }
    mkdir -p "$DIR/logs" "$DIR/synthetic" "$DIR/aria" "$DIR/storescp"
    DIR=$(cd "$DIR" && pwd)

    for var in MAIN_PORT MAIN_HTTP STAGING_PORT STAGING_HTTP ARIA_PORT STORESCP_PORT TLS_PORT \
               TEST_SCP_PORT CLOSED_PORT CORPUS_PORT; do
        pick_port "$var"
    done
    pick_port ODIL_PORT

    local patients=${RTB_TESTBED_PATIENTS:-3} slices=${RTB_TESTBED_SLICES:-10}
    "$gen" "$DIR/synthetic" --patients "$patients" --slices "$slices" >"$DIR/synthetic/index.txt"
    # ODIL_QR serves patients of its own (RTB101..), so that moving from it never meets
    # ARIA's instances already in a target; its folder holds DICOM files only.
    mkdir -p "$DIR/odil"
    "$gen" "$DIR/odil" --first 101 --patients "$patients" --slices "$slices" >"$DIR/odil-index.txt"
    echo '{}' >"$DIR/odil-quirks.json"
    cat >"$DIR/odil-destinations.txt" <<EOF
ORTHANC_MAIN  $HOST $MAIN_PORT
STAGING       $HOST $STAGING_PORT
ARIA          $HOST $ARIA_PORT
STORESCP      $HOST $STORESCP_PORT
$TEST_SCP_AET $HOST $TEST_SCP_PORT
$SCU_AET      $HOST $TEST_SCP_PORT
EOF

    # dcmqrscp "ARIA": the generated files are indexed in place of a C-STORE.
    # It runs in its default forking mode: Debian's 3.6.7 build crashes after the
    # first association with --single-process.
    cat >"$DIR/aria/dcmqrscp.cfg" <<EOF
NetworkTCPPort  = $ARIA_PORT
MaxPDUSize      = 116794
MaxAssociations = 16

HostTable BEGIN
main     = (ORTHANC_MAIN, $HOST, $MAIN_PORT)
staging  = (STAGING, $HOST, $STAGING_PORT)
storescp = (STORESCP, $HOST, $STORESCP_PORT)
testscp  = ($TEST_SCP_AET, $HOST, $TEST_SCP_PORT)
scu      = ($SCU_AET, $HOST, $TEST_SCP_PORT)
HostTable END

VendorTable BEGIN
VendorTable END

AETable BEGIN
ARIA   $DIR/aria/storage   RW (500, 1024mb)   ANY
AETable END
EOF
    mkdir -p "$DIR/aria/storage"
    cp "$DIR"/synthetic/*.dcm "$DIR/aria/storage/"
    dcmqridx "$DIR/aria/storage" "$DIR"/aria/storage/*.dcm

    # dcmqrscp "CORPUS": its own process, because dcmqrscp has no option to accept every
    # transfer syntax; an association profile (-xf) does, but it replaces the negotiation
    # of every AE of the process, incoming and outgoing (ARIA's C-MOVEs included). The
    # readable corpus files are indexed in place (like ARIA's) so that they keep the exact
    # transfer syntax and bytes they were written with.
    mkdir -p "$DIR/corpus-qr/storage"
    /usr/bin/python3 "$(dirname "$0")/corpus.py" build "$DIR/corpus" --profile "$DIR/corpus-qr/profile.cfg" \
        >"$DIR/logs/corpus.log" 2>&1 || die "corpus.py failed; see $DIR/logs/corpus.log"
    awk -F'\t' 'NR > 1 && $2 == "good" { print $1 }' "$DIR/corpus/index.tsv" | while read -r f; do
        cp "$DIR/corpus/$f" "$DIR/corpus-qr/storage/"
    done
    sed -e "s/^NetworkTCPPort .*/NetworkTCPPort  = $CORPUS_PORT/" \
        -e "s|^ARIA .*|CORPUS $DIR/corpus-qr/storage RW (500, 1024mb) ANY|" \
        "$DIR/aria/dcmqrscp.cfg" >"$DIR/corpus-qr/dcmqrscp.cfg"
    dcmqridx "$DIR/corpus-qr/storage" "$DIR"/corpus-qr/storage/*.dcm 2>>"$DIR/logs/corpus.log"

    # A private CA and certificates for the TLS storescp (skipped without openssl;
    # the TLS test then skips too).
    local tls=0
    if command -v openssl >/dev/null; then
        tls=1
        mkdir -p "$DIR/tls" "$DIR/storescp-tls"
        (
            cd "$DIR/tls"
            openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=rtbackup-testbed-ca
            openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost
            openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2
            openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj /CN=RTB_SCU
            openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem -days 2
        ) >"$DIR/logs/openssl.log" 2>&1 || die "openssl failed; see $DIR/logs/openssl.log"
    fi

    local env="$DIR/testbed.env.tmp"
    : >"$env"
    orthanc_config main ORTHANC_MAIN "$MAIN_PORT" "$MAIN_HTTP"
    orthanc_config staging STAGING "$STAGING_PORT" "$STAGING_HTTP"

    TCP_NODELAY=1 "$orthanc_bin" "$DIR/main/orthanc.json" >"$DIR/logs/main.log" 2>&1 </dev/null &
    MAIN_PID=$!
    echo "MAIN_PID=$MAIN_PID" >>"$env"
    TCP_NODELAY=1 "$orthanc_bin" "$DIR/staging/orthanc.json" >"$DIR/logs/staging.log" 2>&1 </dev/null &
    STAGING_PID=$!
    echo "STAGING_PID=$STAGING_PID" >>"$env"
    TCP_NODELAY=1 dcmqrscp -c "$DIR/aria/dcmqrscp.cfg" >"$DIR/logs/aria.log" 2>&1 </dev/null &
    ARIA_PID=$!
    echo "ARIA_PID=$ARIA_PID" >>"$env"
    TCP_NODELAY=1 storescp -aet STORESCP -od "$DIR/storescp" -uf "$STORESCP_PORT" >"$DIR/logs/storescp.log" 2>&1 </dev/null &
    STORESCP_PID=$!
    echo "STORESCP_PID=$STORESCP_PID" >>"$env"
    /usr/bin/python3 "$(dirname "$0")/odil_qr.py" --aet ODIL_QR --host "$HOST" --port "$ODIL_PORT" \
        --dir "$DIR/odil" --quirks "$DIR/odil-quirks.json" --destinations "$DIR/odil-destinations.txt" \
        >"$DIR/logs/odil.log" 2>&1 </dev/null &
    ODIL_PID=$!
    echo "ODIL_PID=$ODIL_PID" >>"$env"
    TCP_NODELAY=1 dcmqrscp -c "$DIR/corpus-qr/dcmqrscp.cfg" -xf "$DIR/corpus-qr/profile.cfg" Corpus Corpus \
        >"$DIR/logs/corpus-qr.log" 2>&1 </dev/null &
    CORPUS_PID=$!
    echo "CORPUS_PID=$CORPUS_PID" >>"$env"
    if [ $tls = 1 ]; then
        TCP_NODELAY=1 storescp -aet STORESCP_TLS -od "$DIR/storescp-tls" -uf \
            +tls "$DIR/tls/server.key" "$DIR/tls/server.pem" +cf "$DIR/tls/ca.pem" "$TLS_PORT" \
            >"$DIR/logs/storescp-tls.log" 2>&1 </dev/null &
        TLS_PID=$!
        echo "TLS_PID=$TLS_PID" >>"$env"
    fi
    # The pids are recorded first, so "stop" can clean up even if a wait fails.
    cp "$env" "$DIR/testbed.env"

    wait_echo ORTHANC_MAIN "$MAIN_PORT" 60 "$MAIN_PID"
    wait_echo STAGING "$STAGING_PORT" 60 "$STAGING_PID"
    wait_echo ARIA "$ARIA_PORT" 30 "$ARIA_PID"
    wait_echo STORESCP "$STORESCP_PORT" 30 "$STORESCP_PID"
    wait_echo ODIL_QR "$ODIL_PORT" 30 "$ODIL_PID"
    wait_echo CORPUS "$CORPUS_PORT" 30 "$CORPUS_PID"
    if [ $tls = 1 ]; then wait_port "$TLS_PORT" 30 "$TLS_PID"; fi

    cat >>"$env" <<EOF
RTB_TESTBED_DIR=$DIR
HOST=$HOST
SCU_AET=$SCU_AET
TEST_SCP_AET=$TEST_SCP_AET
TEST_SCP_PORT=$TEST_SCP_PORT
CLOSED_PORT=$CLOSED_PORT
MAIN_AET=ORTHANC_MAIN
MAIN_PORT=$MAIN_PORT
MAIN_HTTP_URL=http://$HOST:$MAIN_HTTP
STAGING_AET=STAGING
STAGING_PORT=$STAGING_PORT
STAGING_HTTP_URL=http://$HOST:$STAGING_HTTP
ARIA_AET=ARIA
ARIA_PORT=$ARIA_PORT
STORESCP_AET=STORESCP
STORESCP_PORT=$STORESCP_PORT
STORESCP_DIR=$DIR/storescp
SYNTH_DIR=$DIR/synthetic
SYNTH_PATIENTS=$patients
SYNTH_CT_SLICES=$slices
SYNTH_INSTANCES=$(( patients * (slices + 3) ))
ODIL_AET=ODIL_QR
ODIL_PORT=$ODIL_PORT
ODIL_DIR=$DIR/odil
ODIL_QUIRKS=$DIR/odil-quirks.json
ODIL_DESTINATIONS=$DIR/odil-destinations.txt
ODIL_PATIENTS=$patients
ODIL_INSTANCES=$(( patients * (slices + 3) ))
CORPUS_AET=CORPUS
CORPUS_PORT=$CORPUS_PORT
CORPUS_DIR=$DIR/corpus
EOF
    if [ $tls = 1 ]; then
        cat >>"$env" <<EOF
TLS_AET=STORESCP_TLS
TLS_PORT=$TLS_PORT
TLS_CA=$DIR/tls/ca.pem
TLS_WRONG_CA=$DIR/tls/server.pem
TLS_CERT=$DIR/tls/client.pem
TLS_KEY=$DIR/tls/client.key
EOF
    fi
    mv "$env" "$DIR/testbed.env"
    echo "testbed: up in $DIR (main $MAIN_PORT, staging $STAGING_PORT, aria $ARIA_PORT, storescp $STORESCP_PORT)"
}

stop() {
    local envf="$DIR/testbed.env" pids="" pid
    if [ -f "$envf" ]; then
        pids=$(sed -n 's/^[A-Z_]*_PID=\([0-9][0-9]*\)$/\1/p' "$envf")
    fi
    for pid in $pids; do kill "$pid" 2>/dev/null || true; done
    # Give them a moment to exit cleanly (Orthanc flushes its index), then insist.
    for _ in $(seq 1 50); do
        local alive=0
        for pid in $pids; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.1
    done
    for pid in $pids; do kill -9 "$pid" 2>/dev/null || true; done
    rm -rf "$DIR"
}

[ $# -eq 2 ] || die "usage: testbed.sh start|stop DIR"
DIR=$2
# Ports are picked free but bound later, so another program can take one in between
# (seen when several testbeds start at once): then start again on fresh ports.
start_with_retries() {
    local attempt
    for attempt in 1 2 3; do
        if (start); then return 0; fi
        echo "testbed: start failed (attempt $attempt); retrying on other ports" >&2
        stop >/dev/null 2>&1 || true
        mkdir -p "$DIR"
    done
    die "could not start the testbed"
}

case "$1" in
    start) start_with_retries ;;
    stop) stop ;;
    *) die "usage: testbed.sh start|stop DIR" ;;
esac
