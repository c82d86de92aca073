#!/usr/bin/env bash
# Jobs benchmark (#16): JOBS no-op jobs enqueued, then processed at
# CONCURRENCY, by Trellis on Redis Streams and by BullMQ on the same Redis.
#
# Trellis: a host with the producer route only (tests/plugins/job-probe,
# `POST /enqueue?queue=bench`) takes requests from wrk in 2 s rounds until
# at least JOBS jobs wait in Redis (that count is then used for both); it stops, and a host with the same manifest plus a
# `[[worker]]` (tests/plugins/job-worker, payload `noop`: it returns at
# once) at CONCURRENCY drains the queue, pinned to core 0. Its pace is read
# from the queue's done set in Redis every 50 ms: from the first job done
# to the last.
# BullMQ: benches/bullmq/jobs.js adds the jobs (addBulk), then one Worker
# at CONCURRENCY with an empty processor drains them, pinned to core 0.
# A local redis-server is pinned to core 1 meanwhile, as wrk is.
#
# Enqueue→done latency is measured twice: over the drain (every job waited
# in the backlog, so it is mostly the time to work through it), and under a
# steady producer: benches/bullmq/produce.js, pinned to core 1, sends RATE
# jobs a second for DURATION seconds to the running worker (Trellis: POST
# /enqueue on the worker's host; BullMQ: queue.add), which takes them as
# they come. Trellis's latency is read from the `latency_ms` of its `job
# done` log lines (the worker's host logs at `warn` but for
# `trellis::jobs::worker`, at `info`), BullMQ's from `job.finishedOn -
# job.timestamp`; both are from the enqueue's clock reading to the one
# before the acknowledging round trip.
#
# Prints a markdown table (jobs/s, CPU per job of the processing server and
# of redis-server over the drain, the latencies, and Trellis's jobs/s as a
# multiple of BullMQ's, target 2) and writes it to benches/results/jobs.md.
#
# Knobs: JOBS (50000), CONCURRENCY (8), RATE (1000), DURATION (10), REDIS_URL
# (redis://127.0.0.1:6379), PORT (8130; admin on PORT+1), TRELLIS_BIN
# (target/release/trellis, built unless SKIP_BUILD=1 or TRELLIS_BIN is
# given).
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

JOBS=${JOBS:-50000}
CONCURRENCY=${CONCURRENCY:-8}
RATE=${RATE:-1000}
DURATION=${DURATION:-10}
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

# Starts trellis with manifest $1 (producer|worker) pinned to core 0; the
# worker logs its `job done` lines, which carry each job's latency.
start() {
  manifest "$1" > "$work/$1.toml"
  local log=${TRELLIS_LOG:-warn}
  [[ $1 == worker ]] && log+=",trellis::jobs::worker=info"
  TRELLIS_ADMIN_TOKEN=$TOKEN TRELLIS_LOG=$log TRELLIS_CACHE_DIR="$work/cache" \
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

# "p50 p99" (ms) of the `latency_ms` of the `job done` lines of the
# worker's log from line $1 on, once there are $2 of them (or 30 s passed).
latency() {
  local from=$1 want=$2
  for _ in $(seq 300); do
    (( $(tail -n +"$from" "$work/worker.log" | grep -c 'job done') >= want )) && break
    sleep 0.1
  done
  tail -n +"$from" "$work/worker.log" | python3 -c 'import math, re, sys
v = sorted(int(m.group(1)) for l in sys.stdin if "job done" in l for m in [re.search(r"latency_ms=(\d+)", l)] if m)
pick = lambda p: v[max(0, math.ceil(p * len(v)) - 1)] if v else "-"
print(pick(0.5), pick(0.99))'
}

# redis-server's CPU ticks so far (0 without a local one).
redis_ticks() { if [[ -n $redis_pid ]]; then cpu_ticks "$redis_pid"; else echo 0; fi; }

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
# The drain is followed by the size of the queue's :done set, read with
# redis-cli: the admin API through curl and python3 cost about half a core
# at this pace, taken from the cores the host and Redis run on.
while :; do
  done_=$(redis-cli -u "$REDIS_URL" zcard "$prefix:q:bench:done")
  now=$(date +%s%N)
  if [[ -z $first ]] && (( done_ > 0 )); then
    first=$now before=$(cpu_ticks "$host") redis_before=$(redis_ticks) first_done=$done_
  fi
  (( done_ >= waiting )) && break
  sleep 0.05
done
after=$(cpu_ticks "$host") redis_after=$(redis_ticks)
processed=$(( done_ - first_done ))
trellis_ms=$(( (now - first) / 1000000 ))
trellis_rate=$(( processed * 1000 / trellis_ms ))
per_job() { awk -v t="$1" -v hz="$hz" -v n="$processed" 'BEGIN { printf "%.1f", t * 1e6 / hz / n }'; }
trellis_cpu=$(per_job $((after - before)))
trellis_redis_cpu=$(per_job $((redis_after - redis_before)))
read -r trellis_p50 trellis_p99 < <(latency 1 "$waiting")
# The steady producer, against the same worker.
from=$(( $(wc -l < "$work/worker.log") + 1 ))
steady_done=$done_
produced=$(cd "$bull" && TARGET="http://127.0.0.1:$PORT/enqueue?queue=bench" RATE=$RATE DURATION=$DURATION \
  taskset -c 1 node produce.js)
sent=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["sent"])' "$produced")
for _ in $(seq 300); do
  read -r left active done_ < <(counts)
  (( left == 0 && active == 0 && done_ >= steady_done + sent )) && break
  sleep 0.1
done
read -r trellis_steady_p50 trellis_steady_p99 < <(latency "$from" "$sent")
kill "$host"; wait "$host" 2>/dev/null || true; host=
redis-cli -u "$REDIS_URL" --scan --pattern "$prefix:*" | xargs -r redis-cli -u "$REDIS_URL" del >/dev/null

# ------------------------------------------------------------------ BullMQ
bull_json=$(cd "$bull" && JOBS=$JOBS CONCURRENCY=$CONCURRENCY REDIS_URL=$REDIS_URL REDIS_PID=$redis_pid \
  taskset -c 0 node jobs.js)
read -r bull_rate bull_cpu bull_redis_cpu bull_p50 bull_p99 bull_enqueue_ms < <(python3 -c 'import json, sys
j = json.loads(sys.argv[1])
print(j["jobs_per_s"], j["cpu_us_per_job"], j["redis_cpu_us_per_job"], j["p50_ms"], j["p99_ms"], j["enqueue_ms"])' "$bull_json")
bull_steady=$(cd "$bull" && MODE=steady CONCURRENCY=$CONCURRENCY REDIS_URL=$REDIS_URL RATE=$RATE DURATION=$DURATION \
  PRODUCER="taskset -c 1" taskset -c 0 node jobs.js)
read -r bull_steady_p50 bull_steady_p99 < <(python3 -c 'import json, sys
j = json.loads(sys.argv[1]); print(j["p50_ms"], j["p99_ms"])' "$bull_steady")

mkdir -p benches/results
{
  echo "Jobs, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)): $JOBS no-op jobs waiting in Redis, processed at concurrency $CONCURRENCY, server on core 0:"
  echo
  echo "| server | jobs/s | CPU per job | Redis CPU per job | drain latency p50 / p99 | steady latency p50 / p99 | × BullMQ |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  echo "| Trellis (Redis Streams, wasm worker) | $trellis_rate | $trellis_cpu µs | $trellis_redis_cpu µs | $trellis_p50 / $trellis_p99 ms | $trellis_steady_p50 / $trellis_steady_p99 ms | $(awk -v a="$trellis_rate" -v b="$bull_rate" 'BEGIN { printf "%.2f", a / b }') |"
  echo "| BullMQ $(node -p 'require("./benches/bullmq/node_modules/bullmq/package.json").version') (node $(node --version)) | $bull_rate | $bull_cpu µs | $bull_redis_cpu µs | $bull_p50 / $bull_p99 ms | $bull_steady_p50 / $bull_steady_p99 ms | 1.00 |"
  echo
  echo "Steady latency: $RATE jobs/s for ${DURATION} s from a producer on core 1 (Trellis: POST /enqueue to the worker's host, $produced; BullMQ: queue.add)."
  echo
  echo "Enqueueing: Trellis ${enqueue_rps[*]} req/s over HTTP (one job a request, wrk -c$CONCURRENCY); BullMQ addBulk of 1000 at a time, $bull_enqueue_ms ms for $JOBS."
} | tee benches/results/jobs.md
