#!/usr/bin/env bash
# Fleet benchmark (#20): how long `trellis deploy --wait` takes, through
# one host, until the last of three hosts sharing PostgreSQL serves the new
# version. Each host has its own precompiled-component cache, as on three
# machines. Cases, for a small and a large component:
#   cold - a digest no host has seen: the deploying host compiles it, the
#          others fetch it from the store and compile it too
#   warm - a digest every host compiled before (the precompiled cache):
#          a deploy that goes back to an earlier version
# Each case is the median (and the range) of RUNS deploys. A cold deploy
# gets a new digest by appending a custom section with a counter to the
# component (valid wasm; the code is the same).
#
# Prints a markdown table and writes it to benches/results/fleet.md.
#
# Knobs: RUNS (5), PG_URL (postgres://postgres@127.0.0.1:5432/postgres; a
# database trellis_bench_fleet is dropped and made there), SMALL_WASM
# (hello.wasm), LARGE_WASM (big_blob.wasm: a 4 MiB data segment, as in
# hotload.sh), TRELLIS_BIN (target/release/trellis, built unless
# SKIP_BUILD=1 or TRELLIS_BIN is given), PORT (8120: hosts on PORT..PORT+2,
# admin APIs on PORT+10..PORT+12).
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

RUNS=${RUNS:-5}
PORT=${PORT:-8120}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
GUESTS=$PWD/target/guests/wasm32-wasip2/release
SMALL_WASM=${SMALL_WASM:-$GUESTS/hello.wasm}
LARGE_WASM=${LARGE_WASM:-$GUESTS/big_blob.wasm}
TOKEN=bench-fleet-token-0123456789

need psql curl python3
trellis_bin
# The warm case alternates between the last two cold digests.
(( RUNS >= 2 )) || { echo "RUNS must be at least 2" >&2; exit 1; }
for wasm in "$SMALL_WASM" "$LARGE_WASM"; do
  [[ -f $wasm ]] || { echo "no $wasm: build the host once" >&2; exit 1; }
done

scratch

db=trellis_bench_fleet
PGOPTIONS="-c client_min_messages=warning" psql -q "$PG_URL" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
url=${PG_URL%/*}/$db

cat > "$work/trellis.toml" <<TOML
[database]
url = "$url"

[deployments]
shared = true
reconcile = "5s"
TOML

admins=()
for i in 0 1 2; do
  TRELLIS_HOST_ID=bench-$i TRELLIS_ADMIN_TOKEN=$TOKEN TRELLIS_LOG=${TRELLIS_LOG:-warn} \
    TRELLIS_CACHE_DIR="$work/cache-$i" \
    "$TRELLIS_BIN" serve "$work/trellis.toml" --listen "127.0.0.1:$((PORT + i))" \
    --admin-listen "127.0.0.1:$((PORT + 10 + i))" >"$work/host-$i.log" 2>&1 &
  pids+=("$!")
  admins+=("http://127.0.0.1:$((PORT + 10 + i))")
done
for i in 0 1 2; do
  for _ in $(seq 300); do
    curl -fs "http://127.0.0.1:$((PORT + i))/health/live" >/dev/null && break
    sleep 0.1
  done
  curl -fs "http://127.0.0.1:$((PORT + i))/health/live" >/dev/null \
    || { cat "$work/host-$i.log" >&2; exit 1; }
done

# FILE N: FILE with a custom section holding N appended, as $work/c-N.wasm.
variant() {
  python3 - "$1" "$2" "$work/c-$2.wasm" <<'PY'
import sys
def leb(n):
    out = bytearray()
    while True:
        b = n & 0x7f
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)
src, n, dst = sys.argv[1], sys.argv[2], sys.argv[3]
name, payload = b"trellis-bench", n.encode()
body = leb(len(name)) + name + payload
open(dst, "wb").write(open(src, "rb").read() + b"\x00" + leb(len(body)) + body)
PY
  echo "$work/c-$2.wasm"
}

# ROUTE FILE: milliseconds `trellis deploy --wait` took through host 0.
deploy_ms() {
  local started ended
  started=$(date +%s%N)
  "$TRELLIS_BIN" deploy "$1" "$2" --admin "${admins[0]}" --token "$TOKEN" \
    --set "path=/$1" --wait 60s >"$work/deploy.out" 2>"$work/deploy.err" \
    || { cat "$work/deploy.err" >&2; exit 1; }
  ended=$(date +%s%N)
  grep -q "3 live host(s) serve" "$work/deploy.err" \
    || { echo "deploy did not reach three hosts:" >&2; cat "$work/deploy.err" >&2; exit 1; }
  echo $(( (ended - started) / 1000000 ))
}

# "median (min-max)" of the numbers on stdin.
summary() { sort -n | awk '{ v[NR] = $1 } END { printf "%d ms (%d-%d)", v[int((NR + 1) / 2)], v[1], v[NR] }'; }

n=0
rows=()
for size in small large; do
  [[ $size == small ]] && file=$SMALL_WASM || file=$LARGE_WASM
  kib=$(( $(stat -c %s "$file") / 1024 ))
  route=$size
  cold=()
  for _ in $(seq "$RUNS"); do
    n=$((n + 1))
    cold+=("$(deploy_ms "$route" "$(variant "$file" "$n")")")
  done
  # Two digests every host has compiled: the last two cold ones.
  warm=()
  for r in $(seq "$RUNS"); do
    back=$(( r % 2 == 1 ? n - 1 : n ))
    warm+=("$(deploy_ms "$route" "$work/c-$back.wasm")")
  done
  rows+=("| $(basename "$file") | $kib KiB | $(printf '%s\n' "${cold[@]}" | summary) | $(printf '%s\n' "${warm[@]}" | summary) |")
done

mkdir -p benches/results
{
  echo "Fleet deploy, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), three hosts on one PostgreSQL, $RUNS deploys a case, \`trellis deploy --wait\` through one host:"
  echo
  echo "| component | size | cold (median, range) | precompiled cache (median, range) |"
  echo "|---|---:|---:|---:|"
  printf '%s\n' "${rows[@]}"
} | tee benches/results/fleet.md
