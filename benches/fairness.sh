#!/usr/bin/env bash
# Fairness benchmark: GET /hello with wrk, the host pinned to core 0 and
# every client (wrk, the loopers, the slowloris) to core 1, in three cases:
#   alone      - hello only
#   loopers    - beside a second wrk keeping LOOPERS requests to /loop in
#                flight (a guest that spins until its 300 ms timeout)
#   slowloris  - beside SLOW_CONNS connections that each send one byte of a
#                request head a second (the host closes them after its
#                header_timeout, 10 s by default; the clients reconnect)
# It prints a markdown table (req/s, p50, p99, host CPU per request, and
# hello's req/s as a share of alone) and writes it to
# benches/results/fairness.md.
#
# Knobs: DURATION (wrk, 10s), CONNECTIONS (wrk -c, 16), LOOPERS (16),
# SLOW_CONNS (2000), PORT (8095), TRELLIS_BIN (default
# target/release/trellis, built unless SKIP_BUILD=1).
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-16}
LOOPERS=${LOOPERS:-16}
SLOW_CONNS=${SLOW_CONNS:-2000}
PORT=${PORT:-8095}
GUESTS=target/guests/wasm32-wasip2/release

need wrk taskset
trellis_bin
# The host and the slowloris each hold SLOW_CONNS descriptors.
ulimit -n "$((SLOW_CONNS * 2 + 1024))"

scratch

cat > "$work/trellis.toml" <<TOML
[server]
listen = "127.0.0.1:$PORT"

[[route]]
name = "hello"
path = "/hello"
component = "$PWD/$GUESTS/hello.wasm"

[[route]]
name = "loop"
path = "/loop"
component = "$PWD/$GUESTS/loop_forever.wasm"
timeout = "300ms"
TOML

TRELLIS_LOG=${TRELLIS_LOG:-error} TRELLIS_CACHE_DIR="$work/cache" \
  taskset -c 0 "$TRELLIS_BIN" serve "$work/trellis.toml" > "$work/trellis.log" 2>&1 &
host=$!
pids+=("$host")
for _ in $(seq 200); do
  curl -fs "http://127.0.0.1:$PORT/hello" >/dev/null && break
  sleep 0.1
done
curl -fs "http://127.0.0.1:$PORT/hello" >/dev/null || { cat "$work/trellis.log" >&2; exit 1; }

hz=$(getconf CLK_TCK)

# Runs wrk on /hello; prints "req/s p50_ms p99_ms cpu_us_per_request".
measure() {
  local before after out rps p50 p99 requests
  before=$(cpu_ticks "$host")
  out=$(taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "http://127.0.0.1:$PORT/hello")
  after=$(cpu_ticks "$host")
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  echo "$rps $(to_ms "$p50") $(to_ms "$p99") $(( (after - before) * 1000000 / hz / requests ))"
}

# A wrk duration (10s, 1m) in whole seconds.
secs() { case $1 in *m) echo $(( ${1%m} * 60 )) ;; *s) echo "${1%s}" ;; *) echo "$1" ;; esac; }

taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d2s "http://127.0.0.1:$PORT/hello" >/dev/null
read -r a_rps a_p50 a_p99 a_cpu < <(measure)

# The loopers: a second wrk keeping LOOPERS requests to /loop in flight
# (each runs until its 300 ms timeout), for longer than the measurement.
taskset -c 1 wrk -t1 -c"$LOOPERS" -d"$(( $(secs "$DURATION") + 4 ))s" --timeout 5s \
  "http://127.0.0.1:$PORT/loop" >/dev/null &
loopers=$!
pids+=("$loopers")
sleep 1
read -r l_rps l_p50 l_p99 l_cpu < <(measure)
wait "$loopers" 2>/dev/null || true
pids=("$host")
sleep 1

taskset -c 1 python3 - "$PORT" "$SLOW_CONNS" <<'PY' &
import asyncio, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
async def one():
    while True:
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            for b in b"GET /hello HTTP/1.1\r\nhost: x\r\n":
                w.write(bytes([b])); await w.drain(); await asyncio.sleep(1)
        except OSError:
            await asyncio.sleep(1)
async def main():
    await asyncio.gather(*(one() for _ in range(n)))
asyncio.run(main())
PY
pids+=("$!")
sleep 3
read -r s_rps s_p50 s_p99 s_cpu < <(measure)

share() { awk -v x="$1" -v a="$a_rps" 'BEGIN { printf "%.0f %%", 100 * x / a }'; }
mkdir -p benches/results
{
  echo "| hello | req/s | p50 ms | p99 ms | host CPU µs/req | share of alone |"
  echo "|---|---|---|---|---|---|"
  echo "| alone | $a_rps | $a_p50 | $a_p99 | $a_cpu | 100 % |"
  echo "| beside $LOOPERS looping guests | $l_rps | $l_p50 | $l_p99 | $l_cpu | $(share "$l_rps") |"
  echo "| beside $SLOW_CONNS slowloris connections | $s_rps | $s_p50 | $s_p99 | $s_cpu | $(share "$s_rps") |"
} | tee benches/results/fairness.md
