#!/usr/bin/env bash
# Trellis hello-route benchmark: one run, loopback, `wrk`, side by side with
#   trellis   - `trellis serve` with a one-route manifest (the `hello` component)
#   axum      - a plain native axum app (benches/axum-hello.rs), the baseline
#   wasmtime  - `wasmtime serve` 48.0.8 with the same hello.wasm
#   express   - an Express app on one Node.js process (benches/express)
# Each server runs alone on its own port; results go to stdout and to
# benches/results/latest.md. See benches/README.md.
#
# Knobs (environment):
#   DURATION=10s     wrk duration per server (wrk syntax: 10s, 1m, ...)
#   CONNECTIONS=64   wrk -c
#   THREADS=2        wrk -t
#   WARMUP=2s        wrk warm-up run per server, discarded
#   ONLY=a,b         subset of: trellis,axum,wasmtime,express (default: all)
#   PORT_BASE=8080   trellis=+0 axum=+1 wasmtime=+2 express=+3
#   WASMTIME_FEATURES  wasmtime-cli features to build (default: a minimal set
#                    for `serve`; "default" for the crate's default features)
#   SKIP_BUILD=1     don't run cargo build (use existing binaries)
#   HELLO_WASM_PATH  use this hello.wasm instead of the one under target/guests
#   READY_TIMEOUT_S=60  how long a server may take to answer after start
set -euo pipefail

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
WARMUP=${WARMUP:-2s}
ONLY=${ONLY:-trellis,axum,wasmtime,express}
PORT_BASE=${PORT_BASE:-8080}
SKIP_BUILD=${SKIP_BUILD:-0}
WASMTIME_VERSION=48.0.8
WASMTIME_FEATURES=${WASMTIME_FEATURES:-run,serve,cranelift,pooling-allocator,parallel-compilation,component-model-async,clap/default}
READY_TIMEOUT_S=${READY_TIMEOUT_S:-60}   # per server, until it answers
STOP_TIMEOUT_S=10                        # per server, SIGTERM -> SIGKILL

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
TOOLS="$BENCH_DIR/.tools"
RESULTS="$BENCH_DIR/results"
EXPECTED_BODY=$'Hello, world!\n'

ALL_SERVERS=(trellis axum wasmtime express)

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- selection
declare -A SELECTED=()
IFS=',' read -r -a _only <<<"$ONLY"
for s in "${_only[@]}"; do
    s=${s// /}
    [[ -z $s ]] && continue
    case $s in
        trellis|axum|wasmtime|express) SELECTED[$s]=1 ;;
        *) die "ONLY: unknown server '$s' (known: ${ALL_SERVERS[*]})" ;;
    esac
done
((${#SELECTED[@]} > 0)) || die "ONLY selects no server"
selected() { [[ -n ${SELECTED[$1]:-} ]]; }

[[ $CONNECTIONS =~ ^[0-9]+$ && $THREADS =~ ^[0-9]+$ ]] || die "CONNECTIONS and THREADS must be integers"
((CONNECTIONS >= THREADS)) || die "CONNECTIONS must be >= THREADS (wrk)"

# wrk duration -> whole seconds, for timeouts.
dur_secs() {
    local d=$1
    case $d in
        *ms) echo 1 ;;
        *s) echo "${d%s}" ;;
        *m) echo $((${d%m} * 60)) ;;
        *h) echo $((${d%h} * 3600)) ;;
        *) echo "$d" ;;
    esac
}
DURATION_S=$(dur_secs "$DURATION")
WARMUP_S=$(dur_secs "$WARMUP")
[[ $DURATION_S =~ ^[0-9]+$ && $WARMUP_S =~ ^[0-9]+$ ]] || die "bad DURATION/WARMUP (use e.g. 10s, 1m)"

# -------------------------------------------------------------- cleanup/trap
WORK=$(mktemp -d "${TMPDIR:-/tmp}/trellis-bench.XXXXXX")
SERVER_PID=""

stop_server() {
    local pid=$SERVER_PID
    [[ -z $pid ]] && return 0
    SERVER_PID=""
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        local i
        for ((i = 0; i < STOP_TIMEOUT_S * 10; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "server pid $pid ignored SIGTERM for ${STOP_TIMEOUT_S}s; killing"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    stop_server
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# -------------------------------------------------------------------- tools
as_root() {
    if [[ $(id -u) -eq 0 ]]; then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else die "need root (or sudo) to run: $*"
    fi
}

ensure_wrk() {
    command -v wrk >/dev/null && return 0
    command -v apt-get >/dev/null || die "wrk not found and no apt-get; install wrk (https://github.com/wg/wrk)"
    log "installing wrk with apt-get"
    if ! as_root env DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y wrk >&2; then
        as_root timeout 600 apt-get update >&2
        as_root env DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y wrk >&2
    fi
    command -v wrk >/dev/null || die "wrk still missing after apt-get install"
}

wasmtime_ok() {
    [[ -x $TOOLS/bin/wasmtime ]] &&
        "$TOOLS/bin/wasmtime" --version 2>/dev/null | grep -q "^wasmtime $WASMTIME_VERSION\b"
}

ensure_wasmtime() {
    wasmtime_ok && return 0
    local features=(--no-default-features --features "$WASMTIME_FEATURES")
    [[ $WASMTIME_FEATURES == default ]] && features=()
    log "installing wasmtime-cli $WASMTIME_VERSION into $TOOLS (features: $WASMTIME_FEATURES); this takes a while"
    # A target dir under .tools (gitignored) lets an interrupted install resume.
    cargo install wasmtime-cli --version "$WASMTIME_VERSION" --locked --force \
        --root "$TOOLS" --target-dir "$TOOLS/build" "${features[@]}" >&2
    wasmtime_ok || die "$TOOLS/bin/wasmtime is not wasmtime $WASMTIME_VERSION after install"
    rm -rf "$TOOLS/build"
}

ensure_express() {
    command -v node >/dev/null || die "node not found (needed for the Express peer; or set ONLY without express)"
    command -v npm >/dev/null || die "npm not found (needed for the Express peer)"
    local ex=$BENCH_DIR/express
    if [[ ! -f $ex/node_modules/.package-lock.json || $ex/package-lock.json -nt $ex/node_modules/.package-lock.json ]]; then
        log "npm ci in benches/express"
        (cd "$ex" && timeout 600 npm ci --no-audit --no-fund >&2)
    fi
}

# Where cargo puts build output (honours CARGO_TARGET_DIR and config).
target_dir() {
    local dir
    dir=$(cd "$REPO" && cargo metadata --format-version 1 --no-deps 2>/dev/null |
        sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
    echo "${dir:-$REPO/target}"
}

find_hello_wasm() {
    local guests=$1/guests
    local p=$guests/wasm32-wasip2/release/hello.wasm
    if [[ -f $p ]]; then echo "$p"; return 0; fi
    # Fall back to the newest release hello.wasm anywhere under target/guests.
    [[ -d $guests ]] || return 1
    find "$guests" -name hello.wasm -path '*release*' -printf '%T@ %p\n' 2>/dev/null |
        sort -rn | head -n1 | cut -d' ' -f2-
}

ensure_wrk
selected wasmtime && ensure_wasmtime
selected express && ensure_express
command -v curl >/dev/null || die "curl not found"

TARGET=$(target_dir)
if [[ $SKIP_BUILD != 1 ]]; then
    pkgs=()
    selected trellis && pkgs+=(-p trellis)
    selected axum && pkgs+=(-p trellis-benches)
    if ((${#pkgs[@]} > 0)); then
        log "cargo build --release ${pkgs[*]}"
        (cd "$REPO" && cargo build --release "${pkgs[@]}" >&2)
    fi
    # Without trellis, nothing else builds the guest: build it the way the
    # host's build script lays it out.
    if selected wasmtime && ! selected trellis; then
        log "cargo build --release --target wasm32-wasip2 -p hello"
        (cd "$REPO" && cargo build --release --target wasm32-wasip2 -p hello --target-dir "$TARGET/guests" >&2)
    fi
fi

HELLO_WASM=""
if selected trellis || selected wasmtime; then
    HELLO_WASM=${HELLO_WASM_PATH:-$(find_hello_wasm "$TARGET" || true)}
    [[ -n $HELLO_WASM && -f $HELLO_WASM ]] || die "hello.wasm not found under $TARGET/guests (set HELLO_WASM_PATH)"
    HELLO_WASM=$(cd "$(dirname "$HELLO_WASM")" && pwd)/$(basename "$HELLO_WASM")
fi
TRELLIS_BIN=$TARGET/release/trellis
AXUM_BIN=$TARGET/release/axum-hello
if selected trellis; then [[ -x $TRELLIS_BIN ]] || die "missing $TRELLIS_BIN"; fi
if selected axum; then [[ -x $AXUM_BIN ]] || die "missing $AXUM_BIN"; fi

# ------------------------------------------------------------------ servers
port_of() {
    case $1 in
        trellis) echo $((PORT_BASE + 0)) ;;
        axum) echo $((PORT_BASE + 1)) ;;
        wasmtime) echo $((PORT_BASE + 2)) ;;
        express) echo $((PORT_BASE + 3)) ;;
    esac
}

label_of() {
    case $1 in
        trellis) echo "trellis (hello.wasm)" ;;
        axum) echo "axum (native)" ;;
        wasmtime) echo "wasmtime serve $WASMTIME_VERSION" ;;
        express) echo "express $EXPRESS_VERSION (node $NODE_VERSION, 1 process)" ;;
    esac
}

EXPRESS_VERSION=""
NODE_VERSION=""
if selected express; then
    EXPRESS_VERSION=$(node -p "require('$BENCH_DIR/express/node_modules/express/package.json').version")
    NODE_VERSION=$(node --version)
fi

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Starts server $1 in the background; sets SERVER_PID. Output -> $WORK/$1.log.
start_server() {
    local name=$1 port=$2 logf=$WORK/$1.log
    case $name in
        trellis)
            local manifest=$WORK/trellis.toml
            mkdir -p "$WORK/trellis-cache"
            cat >"$manifest" <<EOF
[server]
listen = "127.0.0.1:$port"

[[route]]
path = "/hello"
methods = ["GET"]
component = "$HELLO_WASM"
EOF
            # Default logging, as a user would run it.
            TRELLIS_CACHE_DIR=$WORK/trellis-cache "$TRELLIS_BIN" serve "$manifest" >"$logf" 2>&1 &
            ;;
        axum)
            "$AXUM_BIN" "127.0.0.1:$port" >"$logf" 2>&1 &
            ;;
        wasmtime)
            # -S cli: the guest, like any Rust std component, also imports
            # wasi:cli/environment etc., which `serve` links only with -S cli.
            "$TOOLS/bin/wasmtime" serve -S cli --addr "127.0.0.1:$port" "$HELLO_WASM" >"$logf" 2>&1 &
            ;;
        express)
            (cd "$BENCH_DIR/express" && NODE_ENV=production PORT=$port exec node server.js) >"$logf" 2>&1 &
            ;;
    esac
    SERVER_PID=$!
}

# Waits until the server answers on /hello (any HTTP status), bounded.
wait_ready() {
    local name=$1 url=$2 i
    for ((i = 0; i < READY_TIMEOUT_S * 10; i++)); do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "$name exited during startup; log:" >&2
            tail -n 30 "$WORK/$name.log" >&2 || true
            return 1
        fi
        if curl -s -o /dev/null --max-time 1 "$url"; then return 0; fi
        sleep 0.1
    done
    echo "$name did not answer within ${READY_TIMEOUT_S}s; log:" >&2
    tail -n 30 "$WORK/$name.log" >&2 || true
    return 1
}

# One request: 200, text/plain, body exactly "Hello, world!\n".
check_response() {
    local name=$1 url=$2 meta status ctype
    meta=$(curl -s --max-time 5 -o "$WORK/$name.body" -w '%{http_code} %{content_type}' "$url") || {
        echo "$name: request to $url failed" >&2
        return 1
    }
    status=${meta%% *}
    ctype=${meta#* }
    if [[ $status != 200 ]]; then
        echo "$name: expected status 200, got $status" >&2
        return 1
    fi
    if [[ $ctype != text/plain* ]]; then
        echo "$name: expected content-type text/plain, got '$ctype'" >&2
        return 1
    fi
    if ! cmp -s "$WORK/$name.body" <(printf '%s' "$EXPECTED_BODY"); then
        echo "$name: unexpected body:" >&2
        od -c "$WORK/$name.body" | head -n 5 >&2
        return 1
    fi
}

# wrk latency like 412.00us / 1.23ms / 2.00s -> milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
        printf "%.3f", n }'
}

# Parses wrk --latency output file $1 into: rps p50_ms p99_ms errors
parse_wrk() {
    local f=$1 rps p50 p99 errs
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$f")
    p50=$(awk '$1 == "50%" {print $2}' "$f")
    p99=$(awk '$1 == "99%" {print $2}' "$f")
    # Socket errors (connect/read/write/timeout) + non-2xx/3xx responses.
    errs=$(awk '
        /Socket errors:/ { gsub(/,/, ""); e += $4 + $6 + $8 + $10 }
        /Non-2xx or 3xx responses:/ { e += $NF }
        END { print e + 0 }' "$f")
    [[ -n $rps && -n $p50 && -n $p99 ]] || return 1
    echo "$rps $(to_ms "$p50") $(to_ms "$p99") $errs"
}

declare -A RPS=() P50=() P99=() ERRS=() FAILED=()

mkdir -p "$RESULTS/raw"
LOADAVG_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "?")
WRK_TIMEOUT=$((DURATION_S + 30))

log "settings: wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency, ${WARMUP} warm-up; servers: $ONLY"
for name in "${ALL_SERVERS[@]}"; do
    selected "$name" || continue
    port=$(port_of "$name")
    url="http://127.0.0.1:$port/hello"
    if port_in_use "$port"; then
        FAILED[$name]="port $port already in use"
        log "$name: port $port is already in use; skipping (set PORT_BASE)"
        continue
    fi
    log "$name: starting on 127.0.0.1:$port"
    start_server "$name" "$port"
    if ! wait_ready "$name" "$url"; then
        FAILED[$name]="did not start"
        stop_server
        continue
    fi
    if ! check_response "$name" "$url"; then
        FAILED[$name]="wrong response"
        stop_server
        continue
    fi
    log "$name: warm-up $WARMUP"
    timeout $((WARMUP_S + 30)) wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" "$url" >/dev/null || true
    log "$name: wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency $url"
    raw=$RESULTS/raw/$name.txt
    if ! timeout "$WRK_TIMEOUT" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$url" >"$raw" 2>&1; then
        FAILED[$name]="wrk failed"
        cat "$raw" >&2
        stop_server
        continue
    fi
    if ! parsed=$(parse_wrk "$raw"); then
        FAILED[$name]="could not parse wrk output"
        cat "$raw" >&2
        stop_server
        continue
    fi
    read -r "RPS[$name]" "P50[$name]" "P99[$name]" "ERRS[$name]" <<<"$parsed"
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        FAILED[$name]="exited during the run"
        tail -n 30 "$WORK/$name.log" >&2 || true
    fi
    log "$name: ${RPS[$name]} req/s, p50 ${P50[$name]} ms, p99 ${P99[$name]} ms"
    stop_server
    sleep 1
done

# -------------------------------------------------------------------- table
ratio() { # $1 / $2 with 2 decimals, or n/a
    if [[ -n $1 && -n $2 ]]; then awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; else echo "n/a"; fi
}

cpu_model=$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || true)
machine="$(nproc) cores, ${cpu_model:-unknown CPU}, $(uname -sr)"
run_date=$(date -u '+%Y-%m-%d %H:%M UTC')

{
    echo "### Hello route, $run_date"
    echo
    echo "| server | req/s | p50 | p99 | × axum |"
    echo "|---|---:|---:|---:|---:|"
    for name in "${ALL_SERVERS[@]}"; do
        selected "$name" || continue
        if [[ -n ${RPS[$name]:-} ]]; then
            printf '| %s | %.0f | %s ms | %s ms | %s |\n' "$(label_of "$name")" "${RPS[$name]}" \
                "${P50[$name]}" "${P99[$name]}" "$(ratio "${RPS[$name]}" "${RPS[axum]:-}")"
        else
            printf '| %s | failed: %s | | | |\n' "$(label_of "$name")" "${FAILED[$name]:-?}"
        fi
    done
    echo
    if [[ -n ${RPS[trellis]:-} ]]; then
        [[ -n ${RPS[axum]:-} ]] &&
            echo "- trellis / axum = $(ratio "${RPS[trellis]}" "${RPS[axum]}") (target ≥ 0.40)"
        [[ -n ${RPS[wasmtime]:-} ]] &&
            echo "- trellis / wasmtime serve = $(ratio "${RPS[trellis]}" "${RPS[wasmtime]}") (target > 1)"
        [[ -n ${RPS[express]:-} ]] &&
            echo "- trellis / express = $(ratio "${RPS[trellis]}" "${RPS[express]}")"
    fi
    for name in "${ALL_SERVERS[@]}"; do
        if [[ -n ${ERRS[$name]:-} && ${ERRS[$name]} != 0 ]]; then
            echo "- warning: $name had ${ERRS[$name]} socket errors or non-2xx responses (see results/raw/$name.txt)"
        fi
        if [[ -n ${RPS[$name]:-} && -n ${FAILED[$name]:-} ]]; then
            echo "- warning: $name ${FAILED[$name]}"
        fi
    done
    echo "- wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency on loopback, $WARMUP warm-up per server, one server at a time; wrk and the server share the machine."
    echo "- machine: $machine; load average at start: $LOADAVG_BEFORE"
} >"$WORK/table.md"

cp "$WORK/table.md" "$RESULTS/latest.md"
echo
cat "$WORK/table.md"
echo
log "written to ${RESULTS#"$REPO"/}/latest.md (raw wrk output in ${RESULTS#"$REPO"/}/raw/)"

((${#FAILED[@]} == 0)) || exit 1
