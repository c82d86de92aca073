#!/usr/bin/env bash
# Outbound benchmark: GET /out, whose handler calls a local upstream's
# GET /hello and answers with its body, on
#   trellis  - a route granted `outbound = ["up"]`, its guest the
#              outbound-probe test component (wasi:http/outgoing-handler,
#              the host's pooled client and breaker)
#   express  - Express with Node's built-in fetch (undici, keep-alive)
#              (benches/express/outbound.js)
#   direct   - wrk against the upstream itself: the floor
# The upstream is the native axum hello (benches/axum-hello.rs). The server
# under test is pinned to core 0; wrk and the upstream to core 1; each
# server runs alone. Prints a markdown table (req/s, p50, p99, server CPU
# per request, latency added over the direct call, and the ratio to
# Express) and writes it to benches/results/outbound.md.
#
# Knobs: DURATION (wrk, 10s), CONNECTIONS (wrk -c, 32), PORT_BASE (8096:
# upstream +0, trellis +1, express +2), TRELLIS_BIN (default
# target/release/trellis; trellis and axum-hello are built unless
# SKIP_BUILD=1).
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
PORT_BASE=${PORT_BASE:-8096}
UP_PORT=$PORT_BASE
TRELLIS_PORT=$((PORT_BASE + 1))
EXPRESS_PORT=$((PORT_BASE + 2))
GUESTS=target/guests/wasm32-wasip2/release
TRELLIS_BIN=${TRELLIS_BIN:-target/release/trellis}

need wrk taskset node npm curl
if [[ -z "${SKIP_BUILD:-}" ]]; then
  cargo build --release -p trellis -p trellis-benches >&2
fi
[[ -d benches/express/node_modules ]] || (cd benches/express && npm ci --no-audit --no-fund >&2)

scratch

wait_up() {
  for _ in $(seq 300); do
    curl -fs "$1" >/dev/null && return 0
    sleep 0.1
  done
  echo "no answer from $1" >&2
  return 1
}

taskset -c 1 target/release/axum-hello "127.0.0.1:$UP_PORT" 2>"$work/upstream.log" &
upstream=$!
pids+=("$upstream")
wait_up "http://127.0.0.1:$UP_PORT/hello"

hz=$(getconf CLK_TCK)

# Measures URL served by PID: prints "req/s p50_ms p99_ms cpu_us_per_request".
measure() {
  local url=$1 pid=$2 before after out rps p50 p99 requests
  taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d2s "$url" >/dev/null
  before=$(cpu_ticks "$pid")
  out=$(taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "$url")
  after=$(cpu_ticks "$pid")
  if grep -q "Non-2xx" <<<"$out"; then
    echo "$url: non-2xx answers during the run" >&2
    echo "$out" >&2
    exit 1
  fi
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  echo "$rps $(to_ms "$p50") $(to_ms "$p99") $(( (after - before) * 1000000 / hz / requests ))"
}

read -r d_rps d_p50 d_p99 d_cpu < <(measure "http://127.0.0.1:$UP_PORT/hello" "$upstream")

cat > "$work/trellis.toml" <<TOML
[server]
listen = "127.0.0.1:$TRELLIS_PORT"

[upstreams.up]
url = "http://127.0.0.1:$UP_PORT"
max_connections = 256

[[route]]
name = "out"
path = "/out"
component = "$PWD/$GUESTS/outbound_probe.wasm"
outbound = ["up"]
TOML
TRELLIS_LOG=${TRELLIS_LOG:-error} TRELLIS_CACHE_DIR="$work/cache" \
  taskset -c 0 "$TRELLIS_BIN" serve "$work/trellis.toml" >"$work/trellis.log" 2>&1 &
trellis=$!
pids+=("$trellis")
trellis_url="http://127.0.0.1:$TRELLIS_PORT/out?url=http%3A%2F%2F127.0.0.1%3A$UP_PORT%2Fhello"
wait_up "$trellis_url" || { cat "$work/trellis.log" >&2; exit 1; }
read -r t_rps t_p50 t_p99 t_cpu < <(measure "$trellis_url" "$trellis")
kill "$trellis"; wait "$trellis" 2>/dev/null || true

PORT=$EXPRESS_PORT UPSTREAM="http://127.0.0.1:$UP_PORT" \
  taskset -c 0 node benches/express/outbound.js 2>"$work/express.log" &
express=$!
pids+=("$express")
wait_up "http://127.0.0.1:$EXPRESS_PORT/out" || { cat "$work/express.log" >&2; exit 1; }
read -r e_rps e_p50 e_p99 e_cpu < <(measure "http://127.0.0.1:$EXPRESS_PORT/out" "$express")

added() { awk -v x="$1" -v d="$d_p50" 'BEGIN { printf "%.2f", x - d }'; }
ratio() { awk -v x="$1" -v e="$e_rps" 'BEGIN { printf "%.2f ×", x / e }'; }
mkdir -p benches/results
{
  echo "| GET /out → upstream /hello | req/s | p50 ms | p99 ms | server CPU µs/req | p50 added over direct, ms | vs Express |"
  echo "|---|---|---|---|---|---|---|"
  echo "| trellis (guest, outbound upstream) | $t_rps | $t_p50 | $t_p99 | $t_cpu | $(added "$t_p50") | $(ratio "$t_rps") |"
  echo "| express + fetch (undici) | $e_rps | $e_p50 | $e_p99 | $e_cpu | $(added "$e_p50") | 1.00 × |"
  echo "| direct (the upstream alone) | $d_rps | $d_p50 | $d_p99 | $d_cpu | 0.00 | $(ratio "$d_rps") |"
} | tee benches/results/outbound.md
