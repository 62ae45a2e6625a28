#!/usr/bin/env bash
# The demo on a fresh Debian 12 machine: installs what is missing, builds, and runs
# rtbackup against the DEMO environment (environments/demo.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/deps.sh
tools/build.sh
bin=build/bindings/rtbackup
echo "== rtbackup config check"
"$bin" config check
echo "== rtbackup config show DEMO"
"$bin" config show DEMO
echo "== rtbackup run scripts/demo/hello.lua"
"$bin" run scripts/demo/hello.lua
