# Helpers shared by the small bench scripts (edge.sh, fairness.sh,
# fleet.sh, jobs.sh, outbound.sh); source it, don't run it.

# CPU ticks (user + system) process $1 has used so far; divide by CLK_TCK.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# wrk latency (e.g. 512.00us, 1.20ms, 2.01s) in milliseconds.
to_ms() {
  awk -v v="$1" 'BEGIN {
    n = v + 0
    if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /s$/) n *= 1000
    printf "%.2f", n }'
}

# Exits unless every command named is on PATH.
need() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "$tool not found (wrk: apt-get install wrk)" >&2; exit 1; }
  done
}

# Sets TRELLIS_BIN (default target/release/trellis, which is built first
# unless SKIP_BUILD is set) and exits unless it is there.
trellis_bin() {
  TRELLIS_BIN=${TRELLIS_BIN:-target/release/trellis}
  if [[ -z "${SKIP_BUILD:-}" && $TRELLIS_BIN == target/release/trellis ]]; then
    cargo build --release -p trellis >&2
  fi
  [[ -x $TRELLIS_BIN ]] || { echo "no trellis binary at $TRELLIS_BIN" >&2; exit 1; }
}

# A scratch directory $work and a list $pids of background processes:
# on exit the processes are killed and the directory removed.
scratch() {
  work=$(mktemp -d)
  pids=()
  trap scratch_cleanup EXIT
}

# What scratch's exit trap does; a script that sets its own trap calls it.
scratch_cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
