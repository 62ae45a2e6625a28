#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine: installs what is missing,
# builds, runs every test (unit, spec, integration against peers on loopback).
# Extra arguments go to ctest (e.g. -R spec.config).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/deps.sh
tools/build.sh
cd "${BUILD_DIR:-build}"
ctest --output-on-failure -j 2 "$@"
