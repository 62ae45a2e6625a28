# Helpers for the benchmark scripts, and the defaults run.sh gives them, so that each
# *.bench.sh also runs alone from the repository root.
_bench_top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export RTBACKUP_BIN=${RTBACKUP_BIN:-$_bench_top/build/bindings/rtbackup}
export RTB_BUILD_DIR=${RTB_BUILD_DIR:-$_bench_top/build}
export RUNS=${RUNS:-5}
[ -x "$RTBACKUP_BIN" ] || { echo "build first: tools/build.sh (no $RTBACKUP_BIN)" >&2; exit 2; }

# now_ms: wall clock in milliseconds.
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# median N1 N2 ...: the median of the numbers (upper median for an even count).
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int(NR/2)+1]}'; }

# time_ms CMD...: runs CMD (output discarded), prints its wall time in ms; fails if CMD fails.
time_ms() {
  local t0 t1
  t0=$(now_ms)
  "$@" >/dev/null 2>&1 || { echo "benchmark command failed: $*" >&2; return 1; }
  t1=$(now_ms)
  echo $(( t1 - t0 ))
}

# free_port: a TCP port nobody listens on, below the kernel's ephemeral range (where
# the benchmark's own outgoing connections could take it before the server binds).
free_port() {
  local p
  while :; do
    p=$(( 20000 + RANDOM % 12000 ))
    ss -ltn "sport = :$p" | grep -q LISTEN || { echo "$p"; return; }
  done
}

# wait_port PORT: until something listens there (10 s at most).
wait_port() {
  for _ in $(seq 100); do
    ss -ltn "sport = :$1" | grep -q LISTEN && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2
  return 1
}

# ratio A B: A/B with two decimals.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

# cpu_ms PID: the CPU (user+sys) process PID has used so far, in ms.
cpu_ms() { awk -v t="$(getconf CLK_TCK)" '{printf "%d", ($14 + $15) * 1000 / t}' "/proc/$1/stat"; }
