#!/usr/bin/env bash
# Jobs benchmark (#16): JOBS no-op jobs enqueued, then processed at
# CONCURRENCY, by Trellis on Redis Streams and by BullMQ on the same Redis.
#
# Trellis: a host with the producer route only (tests/plugins/job-probe,
# `POST /enqueue?queue=bench`) takes requests from wrk in 2 s rounds until
# at least JOBS jobs wait in Redis (that count is then used for both); it stops, and a host with the same manifest plus a
# `[[worker]]` (tests/plugins/job-worker, payload `noop`: it returns at
# once) at CONCURRENCY drains the queue, pinned to core 0. Its pace is read
# from `GET /admin/queues` every 50 ms: from the first job done to the
# last.
# BullMQ: benches/bullmq/jobs.js adds the jobs (addBulk), then one Worker
# at CONCURRENCY with an empty processor drains them, pinned to core 0.
# A local redis-server is pinned to core 1 meanwhile, as wrk is.
#
# Prints a markdown table (jobs/s, CPU per job of the processing server,
# and Trellis's jobs/s as a multiple of BullMQ's, target 2) and writes it to
# benches/results/jobs.md. Enqueue→done latency under a steady producer is
# not measured here.
#
# Knobs: JOBS (50000), CONCURRENCY (8), REDIS_URL
# (redis://127.0.0.1:6379), PORT (8130; admin on PORT+1), TRELLIS_BIN
# (target/release/trellis, built unless SKIP_BUILD=1 or TRELLIS_BIN is
# given).
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

JOBS=${JOBS:-50000}
CONCURRENCY=${CONCURRENCY:-8}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
PORT=${PORT:-8130}
GUESTS=$PWD/target/guests/wasm32-wasip2/release
TOKEN=bench-jobs-token-0123456789

need wrk taskset curl node npm python3 redis-cli
trellis_bin
for wasm in job_probe job_worker; do
  [[ -f $GUESTS/$wasm.wasm ]] || { echo "no $GUESTS/$wasm.wasm: build the host once" >&2; exit 1; }
done
bull=benches/bullmq
if [[ ! -f $bull/node_modules/.package-lock.json || $bull/package-lock.json -nt $bull/node_modules/.package-lock.json ]]; then
  (cd "$bull" && timeout 600 npm ci --no-audit --no-fund >&2)
fi

scratch
host=
# A local Redis goes to core 1 for the run, so the server under test has
# core 0 to itself (and Redis is restored after).
redis_pid=$(pgrep -x redis-server | head -1 || true)
if [[ -n $redis_pid ]] && redis_cpus=$(taskset -pc "$redis_pid" 2>/dev/null | awk -F': ' '{print $2}'); then
  taskset -pc 1 "$redis_pid" >/dev/null
  trap 'taskset -pc "$redis_cpus" "$redis_pid" >/dev/null 2>&1 || true; scratch_cleanup' EXIT
fi

prefix=trellis-bench-jobs-$$
manifest() {
  cat <<TOML
[server]
listen = "127.0.0.1:$PORT"
admin_listen = "127.0.0.1:$((PORT + 1))"

[database]
url = "sqlite://$work/jobs.db"

[redis]
url = "$REDIS_URL"
jobs_prefix = "$prefix"

[queues.bench]
attempts = 3

[[route]]
name = "enqueue"
path = "/enqueue"
methods = ["POST"]
component = "$GUESTS/job_probe.wasm"
grants = ["queue", "log"]
queues = ["bench"]
TOML
  if [[ $1 == worker ]]; then
    cat <<TOML

[[worker]]
name = "noop"
queue = "bench"
component = "$GUESTS/job_worker.wasm"
grants = ["sql", "queue", "log"]
outbound = []
concurrency = $CONCURRENCY
TOML
  fi
}

# Starts trellis with manifest $1 (producer|worker) pinned to core 0.
start() {
  manifest "$1" > "$work/$1.toml"
  TRELLIS_ADMIN_TOKEN=$TOKEN TRELLIS_LOG=${TRELLIS_LOG:-warn} TRELLIS_CACHE_DIR="$work/cache" \
    taskset -c 0 "$TRELLIS_BIN" serve "$work/$1.toml" >"$work/$1.log" 2>&1 &
  host=$!
  pids+=("$host")
  for _ in $(seq 300); do
    curl -fs "http://127.0.0.1:$PORT/health/live" >/dev/null && return
    sleep 0.1
  done
  cat "$work/$1.log" >&2
  exit 1
}

# "waiting active done" of queue bench.
counts() {
  curl -fs -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$((PORT + 1))/admin/queues" |
    python3 -c 'import json, sys
q = next(q for q in json.load(sys.stdin)["queues"] if q["name"] == "bench")
print(q["waiting"] + q["delayed"], q["active"], q["done"])'
}

# ----------------------------------------------------------------- Trellis
start producer
cat > "$work/enqueue.lua" <<'LUA'
wrk.method = "POST"
wrk.body = "noop"
function response(status, headers, body)
  if status ~= 200 or not body:find('"job"') then
    io.stderr:write("enqueue answered " .. status .. ": " .. body .. "\n")
    os.exit(1)
  end
end
LUA
# wrk runs for a duration, not a count: rounds of 2 s until JOBS wait.
waiting=0 enqueue_rps=()
while (( waiting < JOBS )); do
  taskset -c 1 wrk -t1 -c"$CONCURRENCY" -d2s -s "$work/enqueue.lua" \
    "http://127.0.0.1:$PORT/enqueue?queue=bench" > "$work/enqueue.out"
  enqueue_rps+=("$(awk '/^Requests\/sec/ {print $2}' "$work/enqueue.out")")
  read -r waiting _ _ < <(counts)
done
JOBS=$waiting
kill "$host"; wait "$host" 2>/dev/null || true; host=

start worker
hz=$(getconf CLK_TCK)
first= before=
while :; do
  read -r left active done_ < <(counts)
  now=$(date +%s%N)
  if [[ -z $first ]] && (( done_ > 0 )); then first=$now before=$(cpu_ticks "$host") first_done=$done_; fi
  (( left == 0 && active == 0 && done_ >= waiting )) && break
  sleep 0.05
done
after=$(cpu_ticks "$host")
processed=$(( done_ - first_done ))
trellis_ms=$(( (now - first) / 1000000 ))
trellis_rate=$(( processed * 1000 / trellis_ms ))
trellis_cpu=$(awk -v t=$((after - before)) -v hz="$hz" -v n="$processed" 'BEGIN { printf "%.1f", t * 1e6 / hz / n }')
kill "$host"; wait "$host" 2>/dev/null || true; host=
redis-cli -u "$REDIS_URL" --scan --pattern "$prefix:*" | xargs -r redis-cli -u "$REDIS_URL" del >/dev/null

# ------------------------------------------------------------------ BullMQ
bull_json=$(cd "$bull" && JOBS=$JOBS CONCURRENCY=$CONCURRENCY REDIS_URL=$REDIS_URL \
  taskset -c 0 node jobs.js)
read -r bull_rate bull_cpu bull_enqueue_ms < <(python3 -c 'import json, sys
j = json.loads(sys.argv[1]); print(j["jobs_per_s"], j["cpu_us_per_job"], j["enqueue_ms"])' "$bull_json")

mkdir -p benches/results
{
  echo "Jobs, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)): $JOBS no-op jobs waiting in Redis, processed at concurrency $CONCURRENCY, server on core 0:"
  echo
  echo "| server | jobs/s | CPU per job | × BullMQ |"
  echo "|---|---:|---:|---:|"
  echo "| Trellis (Redis Streams, wasm worker) | $trellis_rate | $trellis_cpu µs | $(awk -v a="$trellis_rate" -v b="$bull_rate" 'BEGIN { printf "%.2f", a / b }') |"
  echo "| BullMQ $(node -p 'require("./benches/bullmq/node_modules/bullmq/package.json").version') (node $(node --version)) | $bull_rate | $bull_cpu µs | 1.00 |"
  echo
  echo "Enqueueing: Trellis ${enqueue_rps[*]} req/s over HTTP (one job a request, wrk -c$CONCURRENCY); BullMQ addBulk of 1000 at a time, $bull_enqueue_ms ms for $JOBS."
} | tee benches/results/jobs.md
