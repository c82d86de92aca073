#!/usr/bin/env bash
# Trellis load benchmarks: one run, loopback, `wrk`, three suites.
#
# hello - GET /hello, side by side with
#   trellis   - `trellis serve` with a one-route manifest (the `hello` component)
#   axum      - a plain native axum app (benches/axum-hello.rs), the baseline
#   wasmtime  - `wasmtime serve` 48.0.8 with the same hello.wasm
#   trellis-reuse  - trellis with the route's `reuse = { requests = 128 }`
#   wasmtime-reuse - `wasmtime serve --max-instance-reuse-count 128`
#   express   - an Express app on one Node.js process (benches/express/server.js)
# sql   - GET /users/{id}, one primary-key SELECT on PostgreSQL, side by side with
#   trellis   - `trellis serve` with the `users` component, a 20-connection pool
#   trellis-reuse - trellis with the route's `reuse = { requests = 128 }`
#   axum      - a native axum + sqlx app (benches/axum-users.rs), the floor:
#               the same statement and the same bodies without wasm, a
#               20-connection pool
#   express   - Express + pg on one Node.js process, a 20-connection pool
#               (benches/express/users.js)
#   all reading the same `users` table, seeded by this script into its own
#   schema (benches/users-seed.sql), with ids spread over the table by
#   benches/users.lua.
# cached - the same GET /users/{id} and table (seeded once if both suites
#   run) behind a read-through cache in the same Redis, warm (every id is
#   requested once before the warm-up), side by side with
#   trellis       - the users component with its route config
#                   `cache_ttl_ms = "60000"`: the guest's get-or-fill on
#                   `trellis:api/cache`, in-process tier in front of Redis
#   trellis-resp  - the same component without `cache_ttl_ms`, behind the
#                   host's response cache (`cache = { ttl = "60s" }`), whose
#                   hits never instantiate the component
#   express       - Express + pg + redis on one Node.js process, a Redis GET
#                   per request, SELECT + SET EX 60 on a miss
#                   (benches/express/users-cached.js)
#   Before each of them the script deletes the three servers' keys from
#   Redis (prefixes trellis:cache:ns:users-item:user:, trellis:cache:resp:,
#   bench-express:user:; nothing else).
# Each server runs alone on its own port; results go to stdout and to
# benches/results/latest.md. See benches/README.md.
#
# Knobs (environment):
#   DURATION=10s     wrk duration per server (wrk syntax: 10s, 1m, ...)
#   CONNECTIONS=64   wrk -c
#   THREADS=2        wrk -t
#   WARMUP=2s        wrk warm-up run per server, discarded
#   SUITES=a,b       subset of: hello,sql,cached (default: all three)
#   ONLY=a,b         subset of: trellis,trellis-resp,trellis-reuse,axum,
#                    wasmtime,wasmtime-reuse,express
#                    (default: all; sql runs trellis, trellis-reuse, axum
#                    and express, cached trellis, trellis-resp and express)
#   PORT_BASE=8080   hello: trellis=+0 axum=+1 wasmtime=+2 express=+3
#                    trellis-reuse=+9 wasmtime-reuse=+10;
#                    sql: trellis=+4 express=+5 trellis-reuse=+11 axum=+12;
#                    cached: trellis=+6 trellis-resp=+7 express=+8
#   BENCH_DATABASE_URL  PostgreSQL for the sql suite, without the schema
#                    (default postgres://postgres@127.0.0.1:5432/test)
#   SQL_SCHEMA=trellis_bench  schema the sql suite drops, seeds and reads
#   SQL_USERS=10000  rows seeded; requests pick ids uniformly in 1..SQL_USERS
#   SQL_POOL=20      connection pool size, the same for every sql and cached server
#   REDIS_URL        Redis for the cached suite (default redis://127.0.0.1:6379)
#   WASMTIME_FEATURES  wasmtime-cli features to build (default: a minimal set
#                    for `serve`; "default" for the crate's default features)
#   SKIP_BUILD=1     don't run cargo build (use existing binaries)
#   TRELLIS_BIN      the trellis binary to measure (default target/release/trellis;
#                    e.g. an older build, for a before/after comparison)
#   HELLO_WASM_PATH  use this hello.wasm instead of the one under target/guests
#   USERS_WASM_PATH  use this users.wasm instead of the one under target/guests
#   READY_TIMEOUT_S=60  how long a server may take to answer after start
#   SERVER_CPU=0     the core every server is pinned to (taskset), and
#   WRK_CPU=1        the core wrk is pinned to; empty for no pinning. The
#                    databases and Redis are not pinned.
set -euo pipefail

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
WARMUP=${WARMUP:-2s}
SUITES=${SUITES:-hello,sql,cached}
ONLY=${ONLY:-trellis,trellis-resp,trellis-reuse,axum,wasmtime,wasmtime-reuse,express}
PORT_BASE=${PORT_BASE:-8080}
SKIP_BUILD=${SKIP_BUILD:-0}
SERVER_CPU=${SERVER_CPU-0}
WRK_CPU=${WRK_CPU-1}
# Prefixes that pin a server and wrk to their cores (empty: unpinned).
SERVER_PIN=()
[[ -n $SERVER_CPU ]] && SERVER_PIN=(taskset -c "$SERVER_CPU")
WRK_PIN=()
[[ -n $WRK_CPU ]] && WRK_PIN=(taskset -c "$WRK_CPU")
BENCH_DATABASE_URL=${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
SQL_SCHEMA=${SQL_SCHEMA:-trellis_bench}
SQL_USERS=${SQL_USERS:-10000}
SQL_POOL=${SQL_POOL:-20}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
WASMTIME_VERSION=48.0.8
WASMTIME_FEATURES=${WASMTIME_FEATURES:-run,serve,cranelift,pooling-allocator,parallel-compilation,component-model-async,clap/default}
READY_TIMEOUT_S=${READY_TIMEOUT_S:-60}   # per server, until it answers
STOP_TIMEOUT_S=10                        # per server, SIGTERM -> SIGKILL

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
TOOLS="$BENCH_DIR/.tools"
RESULTS="$BENCH_DIR/results"
EXPECTED_BODY=$'Hello, world!\n'

ALL_SUITES=(hello sql cached)
ALL_SERVERS=(trellis trellis-resp trellis-reuse axum wasmtime wasmtime-reuse express)
HELLO_SERVERS=(trellis trellis-reuse axum wasmtime wasmtime-reuse express)
SQL_SERVERS=(trellis trellis-reuse axum express)
CACHED_SERVERS=(trellis trellis-resp express)
# The cached suite's Redis keys, by server; the script deletes these (and
# only these) before each cached server starts.
CACHED_KEY_PATTERNS=('trellis:cache:ns:users-item:user:*' 'trellis:cache:resp:*' 'bench-express:user:*')

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- selection
declare -A SELECTED=() SUITE_ON=()
IFS=',' read -r -a _only <<<"$ONLY"
for s in "${_only[@]}"; do
    s=${s// /}
    [[ -z $s ]] && continue
    case $s in
        trellis|trellis-resp|trellis-reuse|axum|wasmtime|wasmtime-reuse|express) SELECTED[$s]=1 ;;
        *) die "ONLY: unknown server '$s' (known: ${ALL_SERVERS[*]})" ;;
    esac
done
((${#SELECTED[@]} > 0)) || die "ONLY selects no server"
IFS=',' read -r -a _suites <<<"$SUITES"
for s in "${_suites[@]}"; do
    s=${s// /}
    [[ -z $s ]] && continue
    case $s in
        hello|sql|cached) SUITE_ON[$s]=1 ;;
        *) die "SUITES: unknown suite '$s' (known: ${ALL_SUITES[*]})" ;;
    esac
done
((${#SUITE_ON[@]} > 0)) || die "SUITES selects no suite"
suite_on() { [[ -n ${SUITE_ON[$1]:-} ]]; }
selected() { [[ -n ${SELECTED[$1]:-} ]]; }
# Servers a suite runs: its own list, filtered by ONLY.
suite_servers() {
    local -n _list=${1^^}_SERVERS
    local s
    for s in "${_list[@]}"; do selected "$s" && echo "$s"; done
    return 0
}
# Is server $2 run by suite $1?
in_suite() { suite_on "$1" && suite_servers "$1" | grep -qx "$2"; }
# Is server $1 run by any selected suite?
needed() { in_suite hello "$1" || in_suite sql "$1" || in_suite cached "$1"; }
# Does a selected suite read the users table (so it must be seeded)?
users_suites() { suite_on sql || suite_on cached; }

if suite_on hello && [[ -z $(suite_servers hello) ]]; then die "hello suite: ONLY selects none of its servers"; fi
if suite_on sql && [[ -z $(suite_servers sql) ]]; then die "sql suite: ONLY selects none of ${SQL_SERVERS[*]}"; fi
if suite_on cached && [[ -z $(suite_servers cached) ]]; then die "cached suite: ONLY selects none of ${CACHED_SERVERS[*]}"; fi

[[ $CONNECTIONS =~ ^[0-9]+$ && $THREADS =~ ^[0-9]+$ ]] || die "CONNECTIONS and THREADS must be integers"
((CONNECTIONS >= THREADS)) || die "CONNECTIONS must be >= THREADS (wrk)"
[[ $SQL_USERS =~ ^[1-9][0-9]*$ && $SQL_POOL =~ ^[1-9][0-9]*$ ]] || die "SQL_USERS and SQL_POOL must be positive integers"
[[ $SQL_SCHEMA =~ ^[a-z_][a-z0-9_]*$ ]] || die "SQL_SCHEMA must be a plain lower-case identifier"
[[ $BENCH_DATABASE_URL == postgres://* || $BENCH_DATABASE_URL == postgresql://* ]] ||
    die "BENCH_DATABASE_URL must be a postgres:// URL"
[[ $REDIS_URL == redis://* ]] || die "REDIS_URL must be a redis:// URL"

# The URL both servers get: the base URL plus the libpq `options` parameter
# that sets search_path at connect time (sqlx and pg both pass it on), so
# the unqualified `users` in the query is the benchmark's table.
if [[ $BENCH_DATABASE_URL == *\?* ]]; then _sep='&'; else _sep='?'; fi
SQL_URL="${BENCH_DATABASE_URL}${_sep}options=-csearch_path%3D${SQL_SCHEMA}"

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

# psql reaches the database and the seed runs: a fresh schema, SQL_USERS rows.
PG_VERSION=""
seed_database() {
    command -v psql >/dev/null || die "psql not found (needed to seed the sql suite; apt-get install postgresql-client)"
    log "seeding $SQL_USERS users into schema $SQL_SCHEMA of $BENCH_DATABASE_URL"
    PG_VERSION=$(timeout 30 psql "$BENCH_DATABASE_URL" -XAtqc 'SHOW server_version' 2>"$WORK/psql.err") || {
        cat "$WORK/psql.err" >&2
        die "cannot connect to $BENCH_DATABASE_URL (set BENCH_DATABASE_URL)"
    }
    PG_VERSION=${PG_VERSION%% *}
    timeout 300 psql "$BENCH_DATABASE_URL" -X -q -v ON_ERROR_STOP=1 -v schema="$SQL_SCHEMA" -v users="$SQL_USERS" \
        -f "$BENCH_DIR/users-seed.sql" >&2 || die "seeding $SQL_SCHEMA failed"
    # Read back through the same URL the servers get, so a search_path that
    # does not take effect fails here rather than as a wrong response.
    local n
    n=$(timeout 30 psql "$SQL_URL" -XAtqc 'SELECT count(*) FROM users') || die "cannot read users through $SQL_URL"
    [[ $n == "$SQL_USERS" ]] || die "expected $SQL_USERS rows in $SQL_SCHEMA.users, found $n"
}

# redis-cli reaches REDIS_URL. Records Redis's version for the notes.
REDIS_VERSION=""
redis_cli() { timeout 30 redis-cli -u "$REDIS_URL" --no-auth-warning "$@"; }
check_redis() {
    command -v redis-cli >/dev/null || die "redis-cli not found (needed for the cached suite; apt-get install redis-tools)"
    [[ $(redis_cli ping 2>/dev/null) == PONG ]] || die "no Redis answers at $REDIS_URL (set REDIS_URL)"
    REDIS_VERSION=$(redis_cli info server 2>/dev/null | sed -n 's/^redis_version:\([^[:space:]]*\).*/\1/p')
}

# Deletes the cached suite's keys (CACHED_KEY_PATTERNS) from Redis, never
# anything else: SCAN by pattern, DEL what it finds.
clear_cached_keys() {
    local pat
    for pat in "${CACHED_KEY_PATTERNS[@]}"; do
        redis_cli --scan --pattern "$pat" | xargs -r -n 500 redis-cli -u "$REDIS_URL" --no-auth-warning del >/dev/null ||
            die "could not delete $pat from $REDIS_URL"
    done
}

# Keys in Redis matching pattern $1.
count_keys() { redis_cli --scan --pattern "$1" 2>/dev/null | wc -l; }

# Where cargo puts build output (honours CARGO_TARGET_DIR and config).
target_dir() {
    local dir
    dir=$(cd "$REPO" && cargo metadata --format-version 1 --no-deps 2>/dev/null |
        sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
    echo "${dir:-$REPO/target}"
}

# The release build of guest $2 (hello, users) under target dir $1.
find_guest_wasm() {
    local guests=$1/guests name=$2
    local p=$guests/wasm32-wasip2/release/$name.wasm
    if [[ -f $p ]]; then echo "$p"; return 0; fi
    # Fall back to the newest release build anywhere under target/guests.
    [[ -d $guests ]] || return 1
    find "$guests" -name "$name.wasm" -path '*release*' -printf '%T@ %p\n' 2>/dev/null |
        sort -rn | head -n1 | cut -d' ' -f2-
}

abs_path() { echo "$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"; }

ensure_wrk
{ in_suite hello wasmtime || in_suite hello wasmtime-reuse; } && ensure_wasmtime
needed express && ensure_express
command -v curl >/dev/null || die "curl not found"
suite_on cached && check_redis
# The sql and cached suites read the same table: seed it once.
users_suites && seed_database

TARGET=$(target_dir)
if [[ $SKIP_BUILD != 1 ]]; then
    pkgs=()
    { needed trellis || needed trellis-resp || needed trellis-reuse; } && pkgs+=(-p trellis)
    { in_suite hello axum || in_suite sql axum; } && pkgs+=(-p trellis-benches)
    if ((${#pkgs[@]} > 0)); then
        log "cargo build --release ${pkgs[*]}"
        (cd "$REPO" && cargo build --release "${pkgs[@]}" >&2)
    fi
    # Without trellis, nothing else builds the guest: build it the way the
    # host's build script lays it out.
    if { in_suite hello wasmtime || in_suite hello wasmtime-reuse; } &&
        ! needed trellis && ! needed trellis-resp && ! needed trellis-reuse; then
        log "cargo build --release --target wasm32-wasip2 -p hello"
        (cd "$REPO" && cargo build --release --target wasm32-wasip2 -p hello --target-dir "$TARGET/guests" >&2)
    fi
fi

HELLO_WASM=""
if in_suite hello trellis || in_suite hello wasmtime || in_suite hello trellis-reuse || in_suite hello wasmtime-reuse; then
    HELLO_WASM=${HELLO_WASM_PATH:-$(find_guest_wasm "$TARGET" hello || true)}
    [[ -n $HELLO_WASM && -f $HELLO_WASM ]] || die "hello.wasm not found under $TARGET/guests (set HELLO_WASM_PATH)"
    HELLO_WASM=$(abs_path "$HELLO_WASM")
fi
# A missing users.wasm fails only the sql and cached suites' trellis rows.
USERS_WASM=""
if in_suite sql trellis || in_suite sql trellis-reuse || in_suite cached trellis || in_suite cached trellis-resp; then
    USERS_WASM=${USERS_WASM_PATH:-$(find_guest_wasm "$TARGET" users || true)}
    if [[ -n $USERS_WASM && -f $USERS_WASM ]]; then
        USERS_WASM=$(abs_path "$USERS_WASM")
    else
        log "users.wasm not found (${USERS_WASM_PATH:-under $TARGET/guests; set USERS_WASM_PATH}); the trellis rows of sql/cached will fail"
        USERS_WASM=""
    fi
fi
TRELLIS_BIN=${TRELLIS_BIN:-$TARGET/release/trellis}
AXUM_BIN=$TARGET/release/axum-hello
AXUM_USERS_BIN=$TARGET/release/axum-users
if needed trellis || needed trellis-resp || needed trellis-reuse; then [[ -x $TRELLIS_BIN ]] || die "missing $TRELLIS_BIN"; fi
if in_suite hello axum; then [[ -x $AXUM_BIN ]] || die "missing $AXUM_BIN"; fi
if in_suite sql axum; then [[ -x $AXUM_USERS_BIN ]] || die "missing $AXUM_USERS_BIN"; fi

# ------------------------------------------------------------------ servers
# Port of server $2 in suite $1.
port_of() {
    case $1/$2 in
        hello/trellis) echo $((PORT_BASE + 0)) ;;
        hello/axum) echo $((PORT_BASE + 1)) ;;
        hello/wasmtime) echo $((PORT_BASE + 2)) ;;
        hello/express) echo $((PORT_BASE + 3)) ;;
        hello/trellis-reuse) echo $((PORT_BASE + 9)) ;;
        hello/wasmtime-reuse) echo $((PORT_BASE + 10)) ;;
        sql/trellis) echo $((PORT_BASE + 4)) ;;
        sql/express) echo $((PORT_BASE + 5)) ;;
        sql/trellis-reuse) echo $((PORT_BASE + 11)) ;;
        sql/axum) echo $((PORT_BASE + 12)) ;;
        cached/trellis) echo $((PORT_BASE + 6)) ;;
        cached/trellis-resp) echo $((PORT_BASE + 7)) ;;
        cached/express) echo $((PORT_BASE + 8)) ;;
    esac
}

label_of() {
    case $1/$2 in
        hello/trellis) echo "trellis (hello.wasm)" ;;
        hello/axum) echo "axum (native)" ;;
        hello/wasmtime) echo "wasmtime serve $WASMTIME_VERSION" ;;
        hello/trellis-reuse) echo "trellis-reuse (hello.wasm, reuse = { requests = 128 })" ;;
        hello/wasmtime-reuse) echo "wasmtime serve $WASMTIME_VERSION --max-instance-reuse-count 128" ;;
        hello/express) echo "express $EXPRESS_VERSION (node $NODE_VERSION, 1 process)" ;;
        sql/trellis) echo "trellis (users.wasm, pool $SQL_POOL)" ;;
        sql/trellis-reuse) echo "trellis-reuse (users.wasm, reuse = { requests = 128 }, pool $SQL_POOL)" ;;
        sql/axum) echo "axum + sqlx (native, pool $SQL_POOL)" ;;
        sql/express) echo "express $EXPRESS_VERSION + pg $PG_CLIENT_VERSION (node $NODE_VERSION, 1 process, pool $SQL_POOL)" ;;
        cached/trellis) echo "trellis (users.wasm, guest read-through cache: L1 in process + Redis)" ;;
        cached/trellis-resp) echo "trellis-resp (users.wasm behind the host response cache: L1 + Redis)" ;;
        cached/express) echo "express $EXPRESS_VERSION + redis $REDIS_CLIENT_VERSION + pg $PG_CLIENT_VERSION (node $NODE_VERSION, 1 process, Redis GET per request)" ;;
    esac
}

EXPRESS_VERSION=""
NODE_VERSION=""
PG_CLIENT_VERSION=""
REDIS_CLIENT_VERSION=""
if needed express; then
    EXPRESS_VERSION=$(node -p "require('$BENCH_DIR/express/node_modules/express/package.json').version")
    NODE_VERSION=$(node --version)
    if in_suite sql express || in_suite cached express; then
        PG_CLIENT_VERSION=$(node -p "require('$BENCH_DIR/express/node_modules/pg/package.json').version")
    fi
    in_suite cached express &&
        REDIS_CLIENT_VERSION=$(node -p "require('$BENCH_DIR/express/node_modules/redis/package.json').version")
fi

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Starts server $2 of suite $1 in the background; sets SERVER_PID.
# Output -> $WORK/<suite>-<name>.log.
start_server() {
    local suite=$1 name=$2 port=$3 logf=$WORK/$1-$2.log
    local manifest=$WORK/$suite-trellis.toml
    case $suite/$name in
        hello/trellis | hello/trellis-reuse)
            mkdir -p "$WORK/trellis-cache"
            manifest=$WORK/$suite-$name.toml
            local reuse=""
            [[ $name == trellis-reuse ]] && reuse='reuse = { requests = 128 }'
            cat >"$manifest" <<EOF
[server]
listen = "127.0.0.1:$port"

[[route]]
path = "/hello"
methods = ["GET"]
component = "$HELLO_WASM"
$reuse
EOF
            # Default logging, as a user would run it.
            TRELLIS_CACHE_DIR=$WORK/trellis-cache "${SERVER_PIN[@]}" "$TRELLIS_BIN" serve "$manifest" >"$logf" 2>&1 &
            ;;
        hello/axum)
            "${SERVER_PIN[@]}" "$AXUM_BIN" "127.0.0.1:$port" >"$logf" 2>&1 &
            ;;
        hello/wasmtime)
            # -S cli: the guest, like any Rust std component, also imports
            # wasi:cli/environment etc., which `serve` links only with -S cli.
            "${SERVER_PIN[@]}" "$TOOLS/bin/wasmtime" serve -S cli --addr "127.0.0.1:$port" "$HELLO_WASM" >"$logf" 2>&1 &
            ;;
        hello/wasmtime-reuse)
            "${SERVER_PIN[@]}" "$TOOLS/bin/wasmtime" serve -S cli --max-instance-reuse-count 128 \
                --addr "127.0.0.1:$port" "$HELLO_WASM" >"$logf" 2>&1 &
            ;;
        hello/express)
            (cd "$BENCH_DIR/express" && NODE_ENV=production PORT=$port exec "${SERVER_PIN[@]}" node server.js) >"$logf" 2>&1 &
            ;;
        sql/trellis | sql/trellis-reuse)
            mkdir -p "$WORK/trellis-cache"
            manifest=$WORK/$suite-$name.toml
            # benches/users.toml is the same manifest for running by hand
            # (trellis-reuse adds the route's `reuse`).
            # `cache` is granted because the component imports it; without
            # `cache_ttl_ms` in the route's config it never caches, and
            # check_db_reads verifies that every request read PostgreSQL.
            local reuse=""
            [[ $name == trellis-reuse ]] && reuse='reuse = { requests = 128 }'
            cat >"$manifest" <<EOF
[server]
listen = "127.0.0.1:$port"

[database]
url = "$SQL_URL"
max_connections = $SQL_POOL

[[route]]
name = "users-item"
path = "/users/{id}"
methods = ["GET"]
component = "$USERS_WASM"
grants = ["sql", "cache", "config", "log"]
$reuse
EOF
            # The manifest names the database; an inherited
            # TRELLIS_DATABASE_URL must not point it elsewhere.
            env -u TRELLIS_DATABASE_URL TRELLIS_CACHE_DIR="$WORK/trellis-cache" \
                "${SERVER_PIN[@]}" "$TRELLIS_BIN" serve "$manifest" >"$logf" 2>&1 &
            ;;
        sql/axum)
            PORT=$port DATABASE_URL=$SQL_URL POOL_MAX=$SQL_POOL "${SERVER_PIN[@]}" "$AXUM_USERS_BIN" >"$logf" 2>&1 &
            ;;
        sql/express)
            (cd "$BENCH_DIR/express" && NODE_ENV=production PORT=$port DATABASE_URL=$SQL_URL POOL_MAX=$SQL_POOL \
                exec "${SERVER_PIN[@]}" node users.js) >"$logf" 2>&1 &
            ;;
        cached/trellis | cached/trellis-resp)
            mkdir -p "$WORK/trellis-cache"
            manifest=$WORK/$suite-$name.toml
            # The sql suite's manifest plus [redis] (the cache's shared
            # tier; the in-process tier has its default size). trellis: the
            # guest reads through trellis:api/cache (route config
            # cache_ttl_ms); trellis-resp: no cache_ttl_ms, so the guest
            # always reads PostgreSQL, behind the host's response cache.
            local route_cache='config = { cache_ttl_ms = "60000" }'
            [[ $name == trellis-resp ]] && route_cache='cache = { ttl = "60s" }'
            cat >"$manifest" <<EOF
[server]
listen = "127.0.0.1:$port"

[database]
url = "$SQL_URL"
max_connections = $SQL_POOL

[redis]
url = "$REDIS_URL"

[[route]]
name = "users-item"
path = "/users/{id}"
methods = ["GET"]
component = "$USERS_WASM"
grants = ["sql", "cache", "config", "log"]
$route_cache
EOF
            env -u TRELLIS_DATABASE_URL TRELLIS_CACHE_DIR="$WORK/trellis-cache" \
                "${SERVER_PIN[@]}" "$TRELLIS_BIN" serve "$manifest" >"$logf" 2>&1 &
            ;;
        cached/express)
            (cd "$BENCH_DIR/express" && NODE_ENV=production PORT=$port DATABASE_URL=$SQL_URL POOL_MAX=$SQL_POOL \
                REDIS_URL=$REDIS_URL TTL_S=60 KEY_PREFIX=bench-express:user: exec "${SERVER_PIN[@]}" node users-cached.js) >"$logf" 2>&1 &
            ;;
    esac
    SERVER_PID=$!
}

# Waits until the server answers on $3 (any HTTP status), bounded.
wait_ready() {
    local suite=$1 name=$2 url=$3 i
    for ((i = 0; i < READY_TIMEOUT_S * 10; i++)); do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "$suite/$name exited during startup; log:" >&2
            tail -n 30 "$WORK/$suite-$name.log" >&2 || true
            return 1
        fi
        if curl -s -o /dev/null --max-time 1 "$url"; then return 0; fi
        sleep 0.1
    done
    echo "$suite/$name did not answer within ${READY_TIMEOUT_S}s; log:" >&2
    tail -n 30 "$WORK/$suite-$name.log" >&2 || true
    return 1
}

# GET $2 into $WORK/$1.body; checks status 200 and a content type starting
# with $3.
fetch_checked() {
    local tag=$1 url=$2 want_ctype=$3 meta status ctype
    meta=$(curl -s --max-time 5 -o "$WORK/$tag.body" -w '%{http_code} %{content_type}' "$url") || {
        echo "$tag: request to $url failed" >&2
        return 1
    }
    status=${meta%% *}
    ctype=${meta#* }
    if [[ $status != 200 ]]; then
        echo "$tag: GET $url: expected status 200, got $status; body:" >&2
        head -c 500 "$WORK/$tag.body" >&2
        echo >&2
        return 1
    fi
    if [[ $ctype != "$want_ctype"* ]]; then
        echo "$tag: GET $url: expected content-type $want_ctype, got '$ctype'" >&2
        return 1
    fi
}

# One request: 200, text/plain, body exactly "Hello, world!\n".
check_hello() {
    local name=$1 url=$2
    fetch_checked "hello-$name" "$url" text/plain || return 1
    if ! cmp -s "$WORK/hello-$name.body" <(printf '%s' "$EXPECTED_BODY"); then
        echo "$name: unexpected body:" >&2
        od -c "$WORK/hello-$name.body" | head -n 5 >&2
        return 1
    fi
}

# GET /users/1 and /users/SQL_USERS: 200, application/json, the seeded row
# (users-seed.sql) as {"id":..,"name":..,"email":..,"created_at":".."}.
# The email is unique to the benchmark's seed, so this also shows the server
# reads the benchmark schema. Keeps the first body for the notes. $3 is the
# suite (default sql), for the file names. In the sql suite also a missing
# id (check_missing_user), and the Rust servers' bodies byte for byte
# (same_body).
check_users() {
    local name=$1 base=$2 suite=${3:-sql} id body ws='[[:space:]]*'
    for id in 1 "$SQL_USERS"; do
        fetch_checked "$suite-$name" "$base/users/$id" application/json || return 1
        body=$(<"$WORK/$suite-$name.body")
        local pat
        for pat in "\"id\"$ws:$ws$id$ws[,}]" \
            "\"name\"$ws:$ws\"Bench User $id\"" \
            "\"email\"$ws:$ws\"user$id@bench\\.trellis\\.test\"" \
            "\"created_at\"$ws:$ws\"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}"; do
            if ! grep -Eq -- "$pat" <<<"$body"; then
                echo "$name: GET $base/users/$id: body does not match /$pat/:" >&2
                head -c 500 <<<"$body" >&2
                return 1
            fi
        done
        [[ $id == 1 ]] && cp "$WORK/$suite-$name.body" "$RESULTS/raw/$suite-$name.body"
        if [[ $suite == sql ]]; then same_body "$name" "$id" "$WORK/$suite-$name.body" || return 1; fi
    done
    if [[ $suite == sql ]]; then check_missing_user "$name" "$base" || return 1; fi
    return 0
}

# The sql suite's Rust servers (trellis, trellis-reuse, axum) answer the
# same bytes: the first of them checked in this run is the reference, and
# each later one's body for request $2 (an id, or `missing`), in file $3,
# must equal the reference's. Express is not compared byte for byte: its
# created_at has milliseconds (JavaScript's Date) and its 404 message is
# worded differently; check_users and check_missing_user check its shape.
same_body() {
    local name=$1 what=$2 file=$3 ref=$WORK/sql-ref-$2.body
    case $name in trellis | trellis-reuse | axum) ;; *) return 0 ;; esac
    if [[ ! -f $ref ]]; then
        cp "$file" "$ref"
        echo "$name" >"$WORK/sql-ref.name"
        return 0
    fi
    if ! cmp -s "$file" "$ref"; then
        echo "$name: GET /users/$what: body differs from $(<"$WORK/sql-ref.name")'s:" >&2
        head -c 500 "$file" >&2
        echo >&2
        head -c 500 "$ref" >&2
        echo >&2
        return 1
    fi
}

# GET /users/<SQL_USERS + 1>, an id not in the table: 404, application/json,
# {"error":{"code":"NOT_FOUND",...}}; for the Rust servers the same body,
# less the request_id the Trellis host adds to a component's errors.
check_missing_user() {
    local name=$1 base=$2 id=$((SQL_USERS + 1)) meta status ctype body
    local tag=sql-$name-missing ws='[[:space:]]*'
    meta=$(curl -s --max-time 5 -o "$WORK/$tag.body" -w '%{http_code} %{content_type}' "$base/users/$id") || {
        echo "$name: request to $base/users/$id failed" >&2
        return 1
    }
    status=${meta%% *}
    ctype=${meta#* }
    body=$(<"$WORK/$tag.body")
    if [[ $status != 404 || $ctype != application/json* ]] || ! grep -Eq -- "\"code\"$ws:$ws\"NOT_FOUND\"" <<<"$body"; then
        echo "$name: GET $base/users/$id: expected 404 application/json NOT_FOUND, got $status '$ctype':" >&2
        head -c 500 <<<"$body" >&2
        echo >&2
        return 1
    fi
    sed -E 's/,"request_id":"[^"]*"//' "$WORK/$tag.body" >"$WORK/$tag.cmp"
    same_body "$name" missing "$WORK/$tag.cmp"
}

# wrk latency like 412.00us / 1.23ms / 2.00s -> milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
        printf "%.3f", n }'
}

# Completed requests in wrk output file $1 (0 if none).
wrk_requests() { awk '/ requests in / {n = $1} END {print n + 0}' "$1" 2>/dev/null || echo 0; }

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

# Results, keyed "suite/server".
declare -A RPS=() P50=() P99=() ERRS=() FAILED=() DB_READS=() CPU_SERVER=() CPU_PG=()
declare -A CPU_REDIS=() DB_TOTAL=() REDIS_KEYS=()

mkdir -p "$RESULTS/raw"
LOADAVG_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "?")
WRK_TIMEOUT=$((DURATION_S + 30))

# CPU time (user + system, clock ticks) of process $1 and all its threads.
proc_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null || echo ""; }

# CPU ticks of every local `postgres` process (postmaster and backends), or
# empty when none is visible (a remote database).
pg_ticks() {
    local pid t=0 n=0 c
    for pid in $(pgrep -x postgres 2>/dev/null); do
        c=$(proc_ticks "$pid")
        [[ -n $c ]] && t=$((t + c)) && n=$((n + 1))
    done
    ((n > 0)) && echo "$t" || echo ""
}
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)

# Microseconds of CPU per request: $1 ticks over $2 requests.
us_per_request() {
    [[ -n $1 && $2 -gt 0 ]] || { echo ""; return 0; }
    awk -v t="$1" -v n="$2" -v hz="$CLK_TCK" 'BEGIN { printf "%.0f", t / hz / n * 1e6 }'
}

# Index scans on the benchmark table's primary key so far (PostgreSQL's
# cumulative statistics; a backend reports its counts when it goes idle or
# exits).
pk_scans() {
    timeout 30 psql "$BENCH_DATABASE_URL" -XAtqc \
        "SELECT coalesce(sum(idx_scan), 0) FROM pg_stat_user_indexes WHERE schemaname = '$SQL_SCHEMA' AND relname = 'users' AND indexrelname = 'users_pkey'" 2>/dev/null ||
        echo ""
}

# After sql server $1 stopped (its connections closed, so every backend has
# reported), checks that it ran one primary-key lookup per request it
# answered ($2 requests; scans counted from $3): sets DB_READS, and fails
# the row when the server answered without reading PostgreSQL each time
# (say, from a cache).
check_db_reads() {
    local key=sql/$1 answered=$2 before=$3 after="" i per
    [[ -n $before ]] || return 0
    for ((i = 0; i < 50; i++)); do
        after=$(pk_scans)
        [[ -n $after ]] && ((after - before >= answered)) && break
        sleep 0.2
    done
    [[ -n $after ]] || return 0
    per=$(awk -v s=$((after - before)) -v n="$answered" 'BEGIN { printf "%.2f", n ? s / n : 0 }')
    DB_READS[$key]=$per
    if awk -v p="$per" 'BEGIN { exit !(p < 0.99) }'; then
        FAILED[$key]="made $((after - before)) primary-key lookups for $answered requests (not one per request)"
    fi
}

# CPU ticks of the local redis-server, or empty when none is visible.
redis_ticks() {
    local pid t=0 n=0 c
    for pid in $(pgrep -x redis-server 2>/dev/null); do
        c=$(proc_ticks "$pid")
        [[ -n $c ]] && t=$((t + c)) && n=$((n + 1))
    done
    ((n > 0)) && echo "$t" || echo ""
}

# The Redis key pattern of cached server $1.
cached_pattern() {
    case $1 in
        trellis) echo "${CACHED_KEY_PATTERNS[0]}" ;;
        trellis-resp) echo "${CACHED_KEY_PATTERNS[1]}" ;;
        express) echo "${CACHED_KEY_PATTERNS[2]}" ;;
    esac
}

# Cached suite, server $1 at $2: requests every id 1..SQL_USERS once (curl,
# 16 in parallel) so the measured run sees a warm cache; fails unless all
# answer 200. Then checks the responses again, now served from the cache,
# and for trellis-resp that the host's response cache answered.
PREWARM_S=()
prewarm_cached() {
    local name=$1 base=$2 t0 ok
    t0=$(date +%s.%N)
    ok=$(timeout 300 curl -s --parallel --parallel-max 16 -o /dev/null -w '%{http_code}\n' \
        "$base/users/[1-$SQL_USERS]" 2>/dev/null | grep -c '^200$' || true)
    if [[ $ok != "$SQL_USERS" ]]; then
        echo "cached/$name: pre-warm: $ok of $SQL_USERS ids answered 200" >&2
        return 1
    fi
    PREWARM_S[${#PREWARM_S[@]}]="$name $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')"
    check_users "$name" "$base" cached || return 1
    if [[ $name == trellis-resp ]]; then
        local hdr
        hdr=$(curl -s --max-time 5 -o /dev/null -D - "$base/users/1" | tr -d '\r' |
            awk -F': *' 'tolower($1) == "x-trellis-cache" {print $2}')
        if [[ $hdr != hit ]]; then
            echo "cached/$name: GET /users/1 after pre-warm: x-trellis-cache '$hdr', expected hit" >&2
            return 1
        fi
    fi
}

# Waits until the primary-key scan count settles (backends report as they
# exit) and prints it.
pk_scans_settled() {
    local last="" now i
    for ((i = 0; i < 25; i++)); do
        sleep 0.2
        now=$(pk_scans)
        [[ -n $now && $now == "$last" ]] && break
        last=$now
    done
    echo "$now"
}

# Starts, checks, warms up, measures and stops server $2 of suite $1.
bench_one() {
    local suite=$1 name=$2 key=$1/$2 port url base raw parsed
    local wrk_args=(-t"$THREADS" -c"$CONNECTIONS")
    port=$(port_of "$suite" "$name")
    base="http://127.0.0.1:$port"
    case $suite in
        hello) url="$base/hello" ;;
        # users.lua writes each request's path; wrk needs only the base URL.
        sql | cached) url="$base/users/1"; wrk_args+=(-s "$BENCH_DIR/users.lua") ;;
    esac
    local target=$url wrk_tail=()
    [[ $suite == sql || $suite == cached ]] && target=$base && wrk_tail=(-- "$SQL_USERS")
    if [[ $key == sql/trellis* || $key == cached/trellis* ]] && [[ -z $USERS_WASM ]]; then
        FAILED[$key]="users.wasm not found"
        return 0
    fi
    if port_in_use "$port"; then
        FAILED[$key]="port $port already in use"
        log "$key: port $port is already in use; skipping (set PORT_BASE)"
        return 0
    fi
    local scans_before=""
    [[ $suite == sql || $suite == cached ]] && scans_before=$(pk_scans)
    # A cold start for every cached server: no keys of any of them in Redis
    # (and its in-process tier starts empty with the process).
    [[ $suite == cached ]] && clear_cached_keys
    log "$key: starting on 127.0.0.1:$port"
    start_server "$suite" "$name" "$port"
    if ! wait_ready "$suite" "$name" "$url"; then
        FAILED[$key]="did not start"
        stop_server
        return 0
    fi
    local ok=0
    case $suite in
        hello) check_hello "$name" "$url" && ok=1 ;;
        sql) check_users "$name" "$base" && ok=1 ;;
        cached) check_users "$name" "$base" cached && prewarm_cached "$name" "$base" && ok=1 ;;
    esac
    if ((!ok)); then
        FAILED[$key]="wrong response"
        tail -n 20 "$WORK/$suite-$name.log" >&2 || true
        stop_server
        return 0
    fi
    log "$key: warm-up $WARMUP"
    timeout $((WARMUP_S + 30)) "${WRK_PIN[@]}" wrk "${wrk_args[@]}" -d"$WARMUP" "$target" "${wrk_tail[@]}" >"$WORK/warmup.txt" 2>&1 || true
    log "$key: wrk ${wrk_args[*]} -d$DURATION --latency $target${wrk_tail[*]:+ ${wrk_tail[*]}}"
    raw=$RESULTS/raw/$suite-$name.txt
    local srv0 pg0 srv1 pg1 rd0 rd1
    srv0=$(proc_ticks "$SERVER_PID")
    pg0=$([[ $suite == sql || $suite == cached ]] && pg_ticks || true)
    rd0=$([[ $suite == cached ]] && redis_ticks || true)
    if ! timeout "$WRK_TIMEOUT" "${WRK_PIN[@]}" wrk "${wrk_args[@]}" -d"$DURATION" --latency "$target" "${wrk_tail[@]}" >"$raw" 2>&1; then
        FAILED[$key]="wrk failed"
        cat "$raw" >&2
        stop_server
        return 0
    fi
    if ! parsed=$(parse_wrk "$raw"); then
        FAILED[$key]="could not parse wrk output"
        cat "$raw" >&2
        stop_server
        return 0
    fi
    read -r "RPS[$key]" "P50[$key]" "P99[$key]" "ERRS[$key]" <<<"$parsed"
    srv1=$(proc_ticks "$SERVER_PID")
    pg1=$([[ $suite == sql || $suite == cached ]] && pg_ticks || true)
    rd1=$([[ $suite == cached ]] && redis_ticks || true)
    local answered
    answered=$(wrk_requests "$raw")
    [[ -n $srv0 && -n $srv1 ]] && CPU_SERVER[$key]=$(us_per_request $((srv1 - srv0)) "$answered")
    if [[ -n $pg0 && -n $pg1 ]]; then
        local pg_d=$((pg1 - pg0))
        # A postgres process that exits during the run (an autovacuum
        # worker, a closing backend) takes its ticks out of the sum; with
        # the cached suite's near-zero PostgreSQL work that shows as a
        # negative number.
        [[ $suite == cached ]] && ((pg_d < 0)) && pg_d=0
        CPU_PG[$key]=$(us_per_request "$pg_d" "$answered")
    fi
    [[ -n $rd0 && -n $rd1 ]] && CPU_REDIS[$key]=$(us_per_request $((rd1 - rd0)) "$answered")
    [[ $suite == cached ]] && REDIS_KEYS[$key]=$(count_keys "$(cached_pattern "$name")")
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        FAILED[$key]="exited during the run"
        tail -n 30 "$WORK/$suite-$name.log" >&2 || true
    fi
    log "$key: ${RPS[$key]} req/s, p50 ${P50[$key]} ms, p99 ${P99[$key]} ms"
    stop_server
    if [[ $suite == sql ]]; then
        # Requests answered: the readiness probe, the three checks (two
        # users and a missing one, each a primary-key lookup), warm-up, run.
        check_db_reads "$name" $((4 + $(wrk_requests "$WORK/warmup.txt") + $(wrk_requests "$raw"))) "$scans_before"
        [[ -n ${DB_READS[$key]:-} ]] && log "$key: ${DB_READS[$key]} primary-key lookups per request"
    fi
    if [[ $suite == cached && -n $scans_before ]]; then
        # Informative, not a check. A backend may hold its counts for up to
        # 10 s while idle, so they are read once the server has stopped
        # (its backends exit and report): all lookups over the server's
        # life, less the SQL_USERS the checks and the pre-warm need (one per
        # id), over the requests after the pre-warm (warm-up + measured
        # run). ≈ 0 when every one of those was a cache hit.
        local scans_after after_warm
        scans_after=$(pk_scans_settled)
        if [[ -n $scans_after ]]; then
            DB_TOTAL[$key]=$((scans_after - scans_before))
            after_warm=$(($(wrk_requests "$WORK/warmup.txt") + answered))
            DB_READS[$key]=$(awk -v s=$((DB_TOTAL[$key] - SQL_USERS)) -v n="$after_warm" 'BEGIN { printf "%.4f", n ? s / n : 0 }')
            log "$key: ${DB_TOTAL[$key]} PostgreSQL lookups since start; ${DB_READS[$key]} per request after the pre-warm"
        fi
    fi
    sleep 1
}

log "settings: wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency, ${WARMUP} warm-up; suites: $SUITES; servers: $ONLY"
for suite in "${ALL_SUITES[@]}"; do
    suite_on "$suite" || continue
    for name in $(suite_servers "$suite"); do
        bench_one "$suite" "$name"
    done
    # Leave no benchmark keys behind in Redis.
    if [[ $suite == cached ]]; then clear_cached_keys; fi
done

# -------------------------------------------------------------------- table
ratio() { # $1 / $2 with 2 decimals, or n/a
    if [[ -n $1 && -n $2 ]]; then awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; else echo "n/a"; fi
}

# Table rows for suite $1, ratios against server $2. The sql table also
# has CPU per request of the server and of PostgreSQL; the cached table
# also of Redis.
table_rows() {
    local suite=$1 base=$2 name key cpu blank
    for name in $(suite_servers "$suite"); do
        key=$suite/$name
        cpu="" blank=""
        [[ $suite == sql ]] && cpu=" ${CPU_SERVER[$key]:-?} µs | ${CPU_PG[$key]:-?} µs |" blank=" | |"
        [[ $suite == cached ]] &&
            cpu=" ${CPU_SERVER[$key]:-?} µs | ${CPU_PG[$key]:-?} µs | ${CPU_REDIS[$key]:-?} µs |" blank=" | | |"
        if [[ -n ${RPS[$key]:-} ]]; then
            printf '| %s | %.0f | %s ms | %s ms |%s %s |\n' "$(label_of "$suite" "$name")" "${RPS[$key]}" \
                "${P50[$key]}" "${P99[$key]}" "$cpu" "$(ratio "${RPS[$key]}" "${RPS[$suite/$base]:-}")"
        else
            printf '| %s | failed: %s | | |%s |\n' "$(label_of "$suite" "$name")" "${FAILED[$key]:-?}" \
                "$blank"
        fi
    done
}

# The sql suite's "- a / b = R (note); server CPU / req: C×" line for
# servers $1 and $2 (note $3), when both were measured: R is req/s over
# req/s, C server CPU per request over server CPU per request.
sql_ratio() {
    local a=sql/$1 b=sql/$2 note=${3:-} cpu=n/a
    [[ -n ${RPS[$a]:-} && -n ${RPS[$b]:-} ]] || return 0
    [[ -n ${CPU_SERVER[$a]:-} && ${CPU_SERVER[$b]:-0} != 0 ]] && cpu="$(ratio "${CPU_SERVER[$a]}" "${CPU_SERVER[$b]}")×"
    echo "- $1 / $2 = $(ratio "${RPS[$a]}" "${RPS[$b]}")${note:+ ($note)}; server CPU / req: $cpu"
}

# Warnings for suite $1.
table_warnings() {
    local suite=$1 name key
    for name in $(suite_servers "$suite"); do
        key=$suite/$name
        if [[ -n ${ERRS[$key]:-} && ${ERRS[$key]} != 0 ]]; then
            echo "- warning: $name had ${ERRS[$key]} socket errors or non-2xx responses (see results/raw/$suite-$name.txt)"
        fi
        if [[ -n ${RPS[$key]:-} && -n ${FAILED[$key]:-} ]]; then
            echo "- warning: $name ${FAILED[$key]}"
        fi
    done
}

cpu_model=$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || true)
machine="$(nproc) cores, ${cpu_model:-unknown CPU}, $(uname -sr)"
run_date=$(date -u '+%Y-%m-%d %H:%M UTC')
wrk_line="wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency on loopback, $WARMUP warm-up per server, one server at a time"
if [[ -n $SERVER_CPU && -n $WRK_CPU ]]; then
    placement="each server pinned to core $SERVER_CPU, wrk to core $WRK_CPU"
else
    placement="wrk and the server share the machine's cores"
fi

{
    if suite_on hello; then
        echo "### Hello route, $run_date"
        echo
        echo "| server | req/s | p50 | p99 | × axum |"
        echo "|---|---:|---:|---:|---:|"
        table_rows hello axum
        echo
        if [[ -n ${RPS[hello/trellis]:-} ]]; then
            [[ -n ${RPS[hello/axum]:-} ]] &&
                echo "- trellis / axum = $(ratio "${RPS[hello/trellis]}" "${RPS[hello/axum]}") (target ≥ 0.40)"
            [[ -n ${RPS[hello/wasmtime]:-} ]] &&
                echo "- trellis / wasmtime serve = $(ratio "${RPS[hello/trellis]}" "${RPS[hello/wasmtime]}") (target > 1)"
            [[ -n ${RPS[hello/express]:-} ]] &&
                echo "- trellis / express = $(ratio "${RPS[hello/trellis]}" "${RPS[hello/express]}")"
        fi
        if [[ -n ${RPS[hello/trellis-reuse]:-} && -n ${RPS[hello/wasmtime-reuse]:-} ]]; then
            echo "- trellis-reuse / wasmtime-reuse = $(ratio "${RPS[hello/trellis-reuse]}" "${RPS[hello/wasmtime-reuse]}") (target ≥ 1.0, aim 1.2)"
        fi
        table_warnings hello
        echo "- $wrk_line; $placement."
        echo
    fi
    if suite_on sql; then
        echo "### SQL read: GET /users/{id} from PostgreSQL, $run_date"
        echo
        echo "| server | req/s | p50 | p99 | server CPU / req | PostgreSQL CPU / req | × express |"
        echo "|---|---:|---:|---:|---:|---:|---:|"
        table_rows sql express
        echo
        sql_ratio trellis express "target ≥ 2.00"
        sql_ratio trellis-reuse express
        sql_ratio trellis axum
        sql_ratio trellis-reuse axum
        table_warnings sql
        reads=""
        for name in $(suite_servers sql); do
            [[ -n ${DB_READS[sql/$name]:-} ]] && reads+="${reads:+, }$name ${DB_READS[sql/$name]}"
        done
        [[ -n $reads ]] && echo "- primary-key lookups per request, from PostgreSQL's statistics: $reads (1.00 = every request read the table; no cache in between)"
        echo "- each request: \`SELECT id, name, email, created_at FROM users WHERE id = \$1\` on a pool of $SQL_POOL connections, answered as JSON; ids uniform over 1..$SQL_USERS (benches/users.lua, the same sequence for every server)"
        echo "- trellis-reuse: trellis's manifest with the route's \`reuse = { requests = 128 }\`; axum: benches/axum-users.rs, the same statement and the same response bytes as the component on a sqlx pool, no wasm (the floor)"
        echo "- a / b ratios: req/s over req/s (above 1: a is faster), and server CPU per request over server CPU per request (above 1: a costs more per request)"
        echo "- PostgreSQL ${PG_VERSION:-?} on the same machine (schema $SQL_SCHEMA, $SQL_USERS rows, all in its cache), not pinned; $placement"
        echo "- CPU / req: user + system CPU time during the measured run over the requests wrk completed, for the server process (all threads) and for all local \`postgres\` processes"
        echo "- $wrk_line"
        echo
    fi
    if suite_on cached; then
        echo "### Cached read: GET /users/{id} through a warm read-through cache (Redis + PostgreSQL), $run_date"
        echo
        echo "| server | req/s | p50 | p99 | server CPU / req | PostgreSQL CPU / req | Redis CPU / req | × express |"
        echo "|---|---:|---:|---:|---:|---:|---:|---:|"
        table_rows cached express
        echo
        for name in trellis trellis-resp; do
            if [[ -n ${RPS[cached/$name]:-} && -n ${RPS[cached/express]:-} ]]; then
                echo "- $name / express = $(ratio "${RPS[cached/$name]}" "${RPS[cached/express]}") (target ≥ 5.00)"
            fi
        done
        table_warnings cached
        reads=""
        for name in $(suite_servers cached); do
            [[ -n ${DB_READS[cached/$name]:-} ]] &&
                reads+="${reads:+, }$name ${DB_READS[cached/$name]} (${DB_TOTAL[cached/$name]} since start)"
        done
        [[ -n $reads ]] && echo "- PostgreSQL primary-key lookups per request after the pre-warm (warm-up + measured run), from PostgreSQL's statistics: (lookups over the server's life − $SQL_USERS for the checks and the pre-warm) / requests; informative, ≈ 0 means every request was a cache hit: $reads"
        keys=""
        for name in $(suite_servers cached); do
            [[ -n ${REDIS_KEYS[cached/$name]:-} ]] && keys+="${keys:+, }$name ${REDIS_KEYS[cached/$name]}"
        done
        [[ -n $keys ]] && echo "- keys in Redis after the run, per server's prefix: $keys"
        warm=""
        for w in "${PREWARM_S[@]}"; do warm+="${warm:+, }${w% *} ${w##* } s"; done
        echo "- warm cache: before its warm-up each server's keys are deleted from Redis (prefixes \`trellis:cache:ns:users-item:user:\`, \`trellis:cache:resp:\`, \`bench-express:user:\`; nothing else), then every id 1..$SQL_USERS is requested once (curl, 16 in parallel${warm:+; took $warm}), so all $SQL_USERS users are cached before the $WARMUP wrk warm-up and the measured run; TTL 60 s everywhere, longer than warm-up + run"
        echo "- trellis: the users component with route config \`cache_ttl_ms = \"60000\"\`: each request instantiates the component, which calls \`trellis:api/cache\` get-or-fill (in-process tier, then Redis); trellis-resp: the same component without it, behind the route's \`cache = { ttl = \"60s\" }\`, whose hits are answered by the host without instantiating the component; express: \`benches/express/users-cached.js\`, a Redis GET per request (node-redis, one connection), pg on a miss, SET EX 60. Express has no in-process tier; Trellis's in-process tier in front of Redis is part of the design being compared"
        echo "- responses checked before the pre-warm (cache misses) and after it (hits): /users/1 and /users/$SQL_USERS as in the sql suite; PostgreSQL ${PG_VERSION:-?} and Redis ${REDIS_VERSION:-?} ($REDIS_URL) on the same machine, pool $SQL_POOL"
        echo "- CPU / req: user + system CPU time during the measured run over the requests wrk completed, for the server process, all local \`postgres\` processes and the local \`redis-server\`"
        echo "- $wrk_line"
        echo
    fi
    echo "- machine: $machine; load average at start: $LOADAVG_BEFORE"
} >"$WORK/table.md"

cp "$WORK/table.md" "$RESULTS/latest.md"
echo
cat "$WORK/table.md"
echo
log "written to ${RESULTS#"$REPO"/}/latest.md (raw wrk output and sample response bodies in ${RESULTS#"$REPO"/}/raw/)"

((${#FAILED[@]} == 0)) || exit 1
