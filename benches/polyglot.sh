#!/usr/bin/env bash
# Polyglot benchmark (#19): the same hello handler in Rust, JavaScript and
# Python, served by Trellis and by `wasmtime serve` 48.0.8, each with a
# fresh instance per request and with instance reuse:
#   trellis         - `trellis serve`, a fresh instance per request
#   trellis reuse   - the route with `reuse = { requests = REUSE }`
#   wasmtime        - `wasmtime serve -S cli`
#   wasmtime reuse  - `wasmtime serve -S cli --max-instance-reuse-count REUSE`
#   wasmtime-t, wasmtime-reuse-t - the same with `-W timeout=30s`: a
#                     deadline per request, as every Trellis route has (its
#                     default `timeout`), which makes wasmtime insert epoch
#                     checks into the guest's code as Trellis does. The
#                     ratios compare Trellis with these (same settings).
# The components:
#   rust    - plugins/hello (hello.wasm, built with the host)
#   rust-p3 - tests/plugins/p3-hello: the same hello as a WASI 0.3 handler
#             (wasi:http/handler@0.3.0). Its reuse runs let one instance
#             take 16 requests at once, `wasmtime serve`'s default for
#             WASI 0.3 (Trellis: `reuse = { requests = REUSE,
#             concurrent = 16 }`), and its fresh runs pass
#             `--max-instance-reuse-count 1` to wasmtime serve, whose
#             default for WASI 0.3 is reuse.
#   js      - `trellis new js --lang js` + `trellis build` (componentize-js)
#   python  - `trellis new python --lang python` + `trellis build`
#             (componentize-py)
# The JS and Python ones are the scaffolds with no grants, so they import
# only WASI and `wasmtime serve` runs them as they are. They are built once
# into benches/.tools/polyglot (gitignored); REBUILD=1 builds them again.
#
# Each server runs alone, pinned to core 0, with wrk on core 1 (a 2 s
# warm-up, then DURATION). Trellis keeps its default logging (an INFO line
# per request, to a file). Prints a markdown table (req/s, p50, p99, server
# CPU µs per request, answers that were not 2xx, and Trellis ÷ wasmtime
# serve's req/s at the same setting),
# and writes it to benches/results/polyglot.md. It exits 0 whether or not
# Trellis is faster: the numbers are the result.
#
# Knobs: DURATION (wrk, 10s), CONNECTIONS (wrk -c, 16), PORT (8098),
# REUSE (128), LANGS (rust,rust-p3,js,python), TRELLIS_BIN (default
# target/release/trellis, built unless SKIP_BUILD=1 or TRELLIS_BIN is
# given), WASMTIME (default benches/.tools/bin/wasmtime, which
# benches/run.sh installs).
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-16}
PORT=${PORT:-8098}
REUSE=${REUSE:-128}
LANGS=${LANGS:-rust,rust-p3,js,python}
WASMTIME=${WASMTIME:-benches/.tools/bin/wasmtime}
BUILT=benches/.tools/polyglot

need wrk taskset curl
trellis_bin
TRELLIS_BIN=$(realpath "$TRELLIS_BIN")
[[ -x $WASMTIME ]] || {
  echo "no $WASMTIME: run benches/run.sh once (it installs wasmtime-cli 48.0.8 there), or set WASMTIME" >&2
  exit 1
}

# The component of LANG, built by `trellis new` + `trellis build` unless
# it is already there.
component() {
  local lang=$1
  if [[ $lang == rust ]]; then
    echo "$PWD/target/guests/wasm32-wasip2/release/hello.wasm"
    return
  fi
  if [[ $lang == rust-p3 ]]; then
    echo "$PWD/target/guests/wasm32-wasip2/release/p3_hello.wasm"
    return
  fi
  local dir=$BUILT/$lang
  if [[ -n ${REBUILD:-} || ! -f $dir/dist/$lang.wasm ]]; then
    rm -rf "$dir"
    mkdir -p "$BUILT"
    (cd "$BUILT" && "$TRELLIS_BIN" new "$lang" --lang "$lang" >&2)
    (cd "$dir" && "$TRELLIS_BIN" build >&2)
  fi
  realpath "$dir/dist/$lang.wasm"
}

scratch
hz=$(getconf CLK_TCK)
: > "$work/rows"

# Starts SERVER (trellis, trellis-reuse, wasmtime[-reuse][-t]) on
# WASM pinned to core 0; sets $server.
start() {
  local kind=$1 wasm=$2 lang=$3
  case $kind in
    trellis | trellis-reuse)
      {
        printf '[server]\nlisten = "127.0.0.1:%s"\n\n[[route]]\npath = "/"\n' "$PORT"
        printf 'component = "%s"\ngrants = []\noutbound = []\n' "$wasm"
        if [[ $kind == trellis-reuse && $lang == *-p3 ]]; then
          printf 'reuse = { requests = %s, concurrent = 16 }\n' "$REUSE"
        elif [[ $kind == trellis-reuse ]]; then
          printf 'reuse = { requests = %s }\n' "$REUSE"
        fi
      } > "$work/trellis.toml"
      TRELLIS_CACHE_DIR="$work/cache" taskset -c 0 "$TRELLIS_BIN" serve "$work/trellis.toml" \
        >"$work/$kind.log" 2>&1 &
      ;;
    wasmtime* )
      local args=(serve -S cli --addr "127.0.0.1:$PORT")
      [[ $kind == wasmtime-reuse* ]] && args+=(--max-instance-reuse-count "$REUSE")
      if [[ $lang == *-p3 ]]; then
        args+=(-W component-model-async=y -S p3=y)
        [[ $kind != wasmtime-reuse* ]] && args+=(--max-instance-reuse-count 1)
      fi
      [[ $kind == *-t ]] && args+=(-W timeout=30s)
      taskset -c 0 "$WASMTIME" "${args[@]}" "$wasm" >"$work/$kind.log" 2>&1 &
      ;;
  esac
  server=$!
  pids+=("$server")
  for _ in $(seq 600); do
    curl -fs -o /dev/null "http://127.0.0.1:$PORT/" && return 0
    kill -0 "$server" 2>/dev/null || break
    sleep 0.1
  done
  echo "$kind did not answer 200 on /:" >&2
  cat "$work/$kind.log" >&2
  exit 1
}

stop() {
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
}

# Measures LANG on SERVER: appends "lang|server|req/s|p50|p99|cpu".
measure() {
  local lang=$1 kind=$2 wasm=$3 before after out rps requests non2xx p50 p99 cpu
  start "$kind" "$wasm" "$lang"
  taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d2s "http://127.0.0.1:$PORT/" >/dev/null
  before=$(cpu_ticks "$server")
  out=$(taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "http://127.0.0.1:$PORT/")
  after=$(cpu_ticks "$server")
  # Requests per dropped instance, for Trellis with reuse: an instance
  # that left host state behind is not reused.
  per=""
  if [[ $kind == trellis-reuse ]]; then
    per=$(curl -fs "http://127.0.0.1:$PORT/metrics" | awk '
      /^trellis_instance_requests_sum/ {s = $NF} /^trellis_instance_requests_count/ {c = $NF}
      END { if (c > 0) printf "%.1f", s / c }')
  fi
  stop
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  # A failed answer is a result too (a guest that cannot be reused), so
  # it is counted, not fatal.
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  non2xx=${non2xx:-0}
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  cpu=$(awk -v t=$((after - before)) -v hz="$hz" -v n="$requests" 'BEGIN { printf "%.1f", t * 1e6 / hz / n }')
  echo "$lang|$kind|$rps|$(to_ms "$p50")|$(to_ms "$p99")|$cpu|$non2xx of $requests|$per" >> "$work/rows"
  echo "$lang $kind: $rps req/s, $cpu µs/req, $non2xx of $requests not 2xx" >&2
}

for lang in ${LANGS//,/ }; do
  wasm=$(component "$lang")
  for kind in trellis wasmtime-t wasmtime trellis-reuse wasmtime-reuse-t wasmtime-reuse; do
    measure "$lang" "$kind" "$wasm"
  done
done

# Trellis ÷ wasmtime serve at the same setting (with a timeout), for
# req/s; no ratio when
# wasmtime serve's answers failed (a guest that cannot be reused).
versus() {
  awk -F'|' -v l="$1" -v k="$2" -v w="$3" '
    $1 == l && $2 == k {t = $3} $1 == l && $2 == w {m = $3; f = $7 + 0}
    END { if (f > 0) printf "n/a: wasmtime serve failed"; else if (m > 0) printf "%.2f ×", t / m }' "$work/rows"
}

mkdir -p benches/results
{
  echo "| component | server | req/s | p50 ms | p99 ms | server CPU µs/req | failed | requests/instance | Trellis ÷ wasmtime serve |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
  while IFS='|' read -r lang kind rps p50 p99 cpu failed per; do
    ratio=""
    case $kind in
      trellis) ratio=$(versus "$lang" trellis wasmtime-t) ;;
      trellis-reuse) ratio=$(versus "$lang" trellis-reuse wasmtime-reuse-t) ;;
    esac
    echo "| $lang | $kind | $rps | $p50 | $p99 | $cpu | $failed | $per | $ratio |"
  done < "$work/rows"
} | tee benches/results/polyglot.md
