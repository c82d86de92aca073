#!/usr/bin/env bash
# Hot-load benchmark: time from the start of an admin upload to the first
# request served by the new version, for a small (version-a, ~75 KiB) and a
# large (big-blob, ~4 MiB) component, with a cold precompiled cache (a
# digest the host has never compiled) and a warm one (the same bytes
# again). Prints a markdown table and writes it to benches/results/hotload.md.
#
# Knobs: RUNS (per cell, default 5), PORT (public, 8090; admin is PORT+1),
# SKIP_BUILD=1.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-5}
PORT=${PORT:-8090}
ADMIN_PORT=$((PORT + 1))
TOKEN=bench-token
GUESTS=target/guests/wasm32-wasip2/release

if [[ -z "${SKIP_BUILD:-}" ]]; then
  cargo build --release -p trellis >&2
fi
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT

cat > "$work/trellis.toml" <<TOML
[server]
listen = "127.0.0.1:$PORT"
admin_listen = "127.0.0.1:$ADMIN_PORT"
max_component_size = "64MiB"

[[route]]
name = "r"
path = "/r"
component = "$PWD/$GUESTS/hello.wasm"
TOML

TRELLIS_ADMIN_TOKEN=$TOKEN TRELLIS_LOG=warn TRELLIS_CACHE_DIR="$work/cache" \
  target/release/trellis serve "$work/trellis.toml" > "$work/trellis.log" 2>&1 &
pid=$!
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$PORT/r" >/dev/null && break
  sleep 0.1
done

# A copy of $1 with a custom section carrying a nonce appended: the same
# component, a new digest (so the cache has never seen it).
variant() {
  local src=$1 nonce=$2 out=$3
  cp "$src" "$out"
  # section id 0, size 22 = name length (1) + "nonce" (5) + 16 bytes.
  printf '\x00\x16\x05nonce' >> "$out"
  printf '%016d' "$nonce" >> "$out"
}

now_ms() { date +%s%3N; }

# Uploads $1 to route r; prints milliseconds until /r answers from it.
swap_ms() {
  local file=$1 want start
  want="r@$(sha256sum "$file" | cut -c1-12)"
  start=$(now_ms)
  code=$(curl -s -o "$work/answer.json" -w '%{http_code}' -X PUT \
    -H "authorization: Bearer $TOKEN" -H 'content-type: application/wasm' \
    --data-binary @"$file" "http://127.0.0.1:$ADMIN_PORT/admin/routes/r")
  if [[ $code != 200 ]]; then
    echo "upload failed ($code): $(cat "$work/answer.json")" >&2
    exit 1
  fi
  for _ in $(seq 2000); do
    got=$(curl -s -D - -o /dev/null "http://127.0.0.1:$PORT/r" | tr -d '\r' | sed -n 's/^x-trellis-component: //p')
    if [[ $got == "$want" ]]; then
      echo $(($(now_ms) - start))
      return
    fi
  done
  echo "the new version never answered" >&2
  exit 1
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

rows=()
n=0
for spec in "small:$GUESTS/version_a.wasm" "large:$GUESTS/big_blob.wasm"; do
  name=${spec%%:*} src=${spec#*:}
  size=$(stat -c %s "$src")
  cold=() warm=()
  for _ in $(seq "$RUNS"); do
    n=$((n + 1))
    variant "$src" "$n" "$work/c.wasm"
    cold+=("$(swap_ms "$work/c.wasm")")
    # Swap away, then back to the same bytes: a cache hit.
    variant "$src" "$((n + 100000))" "$work/other.wasm"
    swap_ms "$work/other.wasm" >/dev/null
    warm+=("$(swap_ms "$work/c.wasm")")
  done
  rows+=("| $name | $((size / 1024)) KiB | $(printf '%s\n' "${cold[@]}" | median) ms | $(printf '%s\n' "${warm[@]}" | median) ms |")
done

{
  echo "Hot load: upload start → first response from the new version (median of $RUNS)"
  echo
  echo "| component | size | cold cache (compile) | warm cache (precompiled) |"
  echo "|---|---:|---:|---:|"
  printf '%s\n' "${rows[@]}"
  echo
  echo "- release host, loopback, curl for both the upload and the polling GETs (each GET ~5 ms of process start)"
  echo "- machine: $(nproc) cores, $(uname -sr); load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee benches/results/hotload.md
