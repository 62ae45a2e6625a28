#!/usr/bin/env bash
# Installs the Debian 12 packages rtbackup needs to build, test and run the demo,
# only those that are missing (so a second run is quick and offline). Run as root.
set -euo pipefail

PACKAGES=(
  # build, and the allocator the executable links (jemalloc)
  build-essential cmake pkg-config libjemalloc-dev
  # host: Lua 5.4, libuv, TOML, line editing, CLI parsing, JSON
  liblua5.4-dev lua5.4 libuv1-dev libtomlplusplus-dev libedit-dev lua-argparse lua-cjson
  # DICOM: DCMTK library and tools, hashing, Orthanc as the backup archive
  libdcmtk-dev dcmtk libssl-dev libsndfile1-dev orthanc
  # Mosaiq: ODBC with the SQLite and PostgreSQL drivers; the journal on SQLite
  unixodbc-dev unixodbc libsqliteodbc odbc-postgresql libsqlite3-dev sqlite3
  # the SQL Server driver the sample environments name (FreeTDS), as in the Docker image
  tdsodbc
  # tests
  libcmocka-dev lua-busted iproute2 procps curl openssl time postgresql dicom3tools python3-pydicom
  # system calls a spec must see in order (fsync before rename)
  strace
  # tests of deploy/ and of the metrics format: yamllint, systemd-analyze, logrotate, promtool
  yamllint systemd logrotate prometheus
  # peers and files the project did not write: an independent DICOM stack (odil) for a
  # Q/R SCP with vendor quirks; pydicom's corpus of real-world files (python3-pydicom)
  python3-odil
  # serve (HTTP with libmicrohttpd), alerts (webhooks with libcurl), the status page in a browser
  libmicrohttpd-dev libcurl4-openssl-dev chromium
  # sanitizer build and fuzzing (clang's libFuzzer and AddressSanitizer runtimes, AFL++)
  clang libclang-rt-14-dev afl++
  # the Debian package (cpack -G DEB): lintian checks it, help2man writes its manual page
  lintian help2man
  # the T-SQL parse check of the Mosaiq queries (tests/tsql): Node.js runs node-sql-parser
  nodejs
)

# node-sql-parser comes from the npm registry at the version tests/tsql/package-lock.json
# pins; installed once, so a second run is quick and offline.
tsql_parser() {
  local dir
  dir="$(cd "$(dirname "$0")/.." && pwd)/tests/tsql"
  [ -e "$dir/node_modules/node-sql-parser/package.json" ] && return 0
  npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error
}

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
# Some Node.js builds bring npm, Debian's nodejs does not.
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -eq 0 ]; then
  tsql_parser
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "tools/deps.sh: missing Debian packages: ${missing[*]}" >&2
  echo "run as root (or: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Packaged services (orthanc) must not start on install: the testbed starts its own.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy"
  chmod +x "$policy"
  created_policy=1
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
if [ "$created_policy" = 1 ]; then rm -f "$policy"; fi
tsql_parser
