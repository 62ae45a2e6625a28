#!/usr/bin/env bash
# Regenerates the committed seed corpora (corpus/<target>/) from the project itself:
# synthetic datasets made with the dataset API, the sample environments, and the bytes
# DCMTK's echoscu and storescu send to an SCP (captured through capture_pdus.py while
# they talk to storescp). Usage: tests/fuzz/make_seeds.sh [BUILD_DIR] (default build).
set -euo pipefail
cd "$(dirname "$0")"
here=$PWD
build=$(cd "$here/../.." && realpath "${1:-build}")
rtbackup=$build/bindings/rtbackup
tmp=$(mktemp -d)
trap 'kill $scp_pid 2>/dev/null || true; rm -rf "$tmp"' EXIT

# dataset
"$rtbackup" run make_seeds.lua corpus/dataset

# config: the samples, and one with secrets of both kinds and a few problems
cp ../../environments/demo.toml corpus/config/demo.toml
cat > corpus/config/secrets_and_problems.toml <<'TOML'
[SEED]
description = "fuzz seed"
default_source = "ARIA"
default_backup = "MAIN"
[SEED.script_ae]
aet = "SEED_SCU"
port = 11113
[SEED.sources.ARIA]
type = "aria"
aet = "ARIA_SEED"
ip = "127.0.0.1"
port = 104
[SEED.sources.Mosaiq]
type = "mosaiq"
db_password = "__SEED_DB_PASSWORD__"
db_user_env_var = "SEED_DB_USER"
[SEED.backup_targets.MAIN]
type = "orthanc"
aet = "WAY_TOO_LONG_AE_TITLE_FOR_DICOM"
ip = "127.0.0.1"
port = 70000
[SEED.settings]
max_uids_per_run = 100
window = "19:00-06:30"
[OTHER]
default_source = "NOWHERE"
TOML

# scp_pdu: a storescp to answer, echoscu and storescu calling FUZZ_SCP through the proxy
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$tmp/in"
storescp -od "$tmp/in" "$port" & scp_pid=$!
for _ in $(seq 50); do echoscu -aec FUZZ_SCP 127.0.0.1 "$port" 2>/dev/null && break; sleep 0.1; done
/usr/bin/python3 capture_pdus.py corpus/scp_pdu/echo.bin "$port" -- \
    echoscu -aet FUZZ_SCU -aec FUZZ_SCP 127.0.0.1 '{port}'
/usr/bin/python3 capture_pdus.py corpus/scp_pdu/store_ct.bin "$port" -- \
    storescu -aet FUZZ_SCU -aec FUZZ_SCP 127.0.0.1 '{port}' corpus/dataset/ct_explicit.dcm
/usr/bin/python3 capture_pdus.py corpus/scp_pdu/store_plan_implicit.bin "$port" -- \
    storescu -xi -aet FUZZ_SCU -aec FUZZ_SCP 127.0.0.1 '{port}' corpus/dataset/plan_nested.dcm
# The association request alone: the first PDU of echo.bin (6-byte header + its length).
/usr/bin/python3 - corpus/scp_pdu/echo.bin corpus/scp_pdu/associate_rq.bin <<'PY'
import struct, sys
data = open(sys.argv[1], "rb").read()
length = struct.unpack(">I", data[2:6])[0]
open(sys.argv[2], "wb").write(data[:6 + length])
PY
ls -l corpus/*
