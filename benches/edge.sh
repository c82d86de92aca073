#!/usr/bin/env bash
# Edge-policy benchmark (#15): what a request costs the host when the edge
# refuses it, and what authentication adds to one it lets through. One
# trellis serves one manifest, pinned to core 0; wrk runs on core 1. Cases:
#   404           - GET /nope: no route matches
#   401           - GET /hs/hello without a token: refused by auth
#   hello         - GET /hello: the open hello route (instantiates)
#   hello HS256   - GET /hs/hello with an HS256 JWT
#   hello RS256   - GET /rs/hello with an RS256 JWT (key and JWKS file
#                   made here with openssl)
#   hello API key - GET /key/hello with an API key stored (hashed) in the
#                   manifest's SQLite database by `trellis keys add`
#   schema 422    - POST /schema/hello with a JSON body its schema refuses
# Every case is the `hello` component (plugins/hello). Each request of a
# case carries the same token, as one client's would: verified tokens and
# looked-up keys are remembered, so this is the steady state of a client
# session, not a token's first check.
#
# Prints a markdown table (req/s, p50, p99, server CPU µs per request, and
# the CPU per request as a multiple of the 404's and of the open hello's),
# then the issue's ratios against their targets (401 ≤ 1.5 × and a schema
# refusal ≤ 2 × the 404's CPU per request; authenticated hello ≤ 1.10 × open hello, HS256 and
# RS256), and writes both to benches/results/edge.md. It exits 0 whether
# or not a target is met: the numbers are the result.
#
# Knobs: DURATION (wrk, 10s), CONNECTIONS (wrk -c, 32), PORT (8097),
# TRELLIS_BIN (default target/release/trellis, built unless SKIP_BUILD=1
# or TRELLIS_BIN is given), HELLO_WASM_PATH (default
# target/guests/wasm32-wasip2/release/hello.wasm).
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
PORT=${PORT:-8097}
HELLO_WASM=${HELLO_WASM_PATH:-$PWD/target/guests/wasm32-wasip2/release/hello.wasm}

need wrk taskset curl openssl xxd base64
trellis_bin
[[ -f $HELLO_WASM ]] || { echo "no $HELLO_WASM: build the host once (or set HELLO_WASM_PATH)" >&2; exit 1; }

scratch

# ------------------------------------------------------------ credentials
b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }
exp=$(( $(date +%s) + 86400 ))
claims=$(printf '{"sub":"bench","iss":"https://bench.trellis.test","aud":"bench","exp":%d,"scope":"read"}' "$exp" | b64url)

HS_SECRET=$(openssl rand -hex 32)
hs_head=$(printf '{"alg":"HS256","typ":"JWT"}' | b64url)
hs_sig=$(printf '%s.%s' "$hs_head" "$claims" | openssl dgst -sha256 -mac HMAC -macopt "key:$HS_SECRET" -binary | b64url)
HS_TOKEN="$hs_head.$claims.$hs_sig"

openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/rsa.pem" 2>/dev/null
rsa_n=$(openssl rsa -in "$work/rsa.pem" -noout -modulus | cut -d= -f2 | xxd -r -p | b64url)
printf '{"keys":[{"kty":"RSA","kid":"bench","alg":"RS256","use":"sig","n":"%s","e":"AQAB"}]}' "$rsa_n" > "$work/jwks.json"
rs_head=$(printf '{"alg":"RS256","typ":"JWT","kid":"bench"}' | b64url)
rs_sig=$(printf '%s.%s' "$rs_head" "$claims" | openssl dgst -sha256 -sign "$work/rsa.pem" -binary | b64url)
RS_TOKEN="$rs_head.$claims.$rs_sig"

cat > "$work/schema.json" <<'JSON'
{"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
 "required": ["email", "name"],
 "properties": {"email": {"type": "string", "format": "email"}, "name": {"type": "string", "minLength": 1}}}
JSON
cat > "$work/trellis.toml" <<TOML
[server]
listen = "127.0.0.1:$PORT"

[database]
url = "sqlite://$work/keys.db"

[auth.hs]
type = "jwt"
issuer = "https://bench.trellis.test"
audience = "bench"
algorithms = ["HS256"]
secret = { env = "BENCH_HS_SECRET" }

[auth.rs]
type = "jwt"
issuer = "https://bench.trellis.test"
audience = "bench"
algorithms = ["RS256"]
jwks = "$work/jwks.json"

[auth.keys]
type = "api-key"
header = "x-api-key"
store = "database"

[[route]]
name = "hello"
path = "/hello"
component = "$HELLO_WASM"

[[route]]
name = "hs"
path = "/hs/hello"
component = "$HELLO_WASM"
auth = "hs"

[[route]]
name = "rs"
path = "/rs/hello"
component = "$HELLO_WASM"
auth = "rs"

[[route]]
name = "key"
path = "/key/hello"
component = "$HELLO_WASM"
auth = "keys"

# A schema route: a body that fails it is refused before any instance.
[[route]]
name = "schema"
path = "/schema/hello"
methods = ["POST"]
component = "$HELLO_WASM"
schema = { body = "$work/schema.json" }
TOML

export BENCH_HS_SECRET=$HS_SECRET
API_KEY=$("$TRELLIS_BIN" keys add keys --name bench --manifest "$work/trellis.toml" 2>"$work/keys.log") \
  || { cat "$work/keys.log" >&2; exit 1; }

TRELLIS_LOG=${TRELLIS_LOG:-error} TRELLIS_CACHE_DIR="$work/cache" \
  taskset -c 0 "$TRELLIS_BIN" serve "$work/trellis.toml" >"$work/trellis.log" 2>&1 &
host=$!
pids+=("$host")
for _ in $(seq 300); do
  curl -fs "http://127.0.0.1:$PORT/hello" >/dev/null && break
  sleep 0.1
done
curl -fs "http://127.0.0.1:$PORT/hello" >/dev/null || { cat "$work/trellis.log" >&2; exit 1; }

hz=$(getconf CLK_TCK)

# Measures one case: LABEL STATUS PATH [HEADER] [LUA]. Checks the status
# with curl first, then runs wrk (a 2 s warm-up, then DURATION) and checks
# every answer was that status. Appends "label|status|req/s|p50|p99|cpu"
# to $work/rows.
measure() {
  local label=$1 status=$2 path=$3 hdr=${4:-} lua=${5:-}
  local url="http://127.0.0.1:$PORT$path" args=() got before after out rps p50 p99 requests non2xx cpu
  [[ -n $hdr ]] && args+=(-H "$hdr")
  [[ -n $lua ]] && args+=(-s "$lua")
  local curl_args=(-s -o /dev/null -w '%{http_code}')
  [[ -n $hdr ]] && curl_args+=(-H "$hdr")
  got=$(curl "${curl_args[@]}" "$url")
  [[ -n $lua ]] || [[ $got == "$status" ]] || { echo "$label: $path answered $got, not $status" >&2; cat "$work/trellis.log" >&2; exit 1; }
  taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d2s "${args[@]}" "$url" >/dev/null
  before=$(cpu_ticks "$host")
  out=$(taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "${args[@]}" "$url")
  after=$(cpu_ticks "$host")
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  non2xx=${non2xx:-0}
  if [[ $status == 2* && $non2xx != 0 ]] || [[ $status != 2* && $non2xx != "$requests" ]]; then
    echo "$label: $non2xx of $requests answers were not $status" >&2
    echo "$out" >&2
    exit 1
  fi
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  cpu=$(awk -v t=$((after - before)) -v hz="$hz" -v n="$requests" 'BEGIN { printf "%.1f", t * 1e6 / hz / n }')
  echo "$label|$status|$rps|$(to_ms "$p50")|$(to_ms "$p99")|$cpu" >> "$work/rows"
}

: > "$work/rows"
measure "404 (no route)" 404 /nope
measure "401 (auth, no token)" 401 /hs/hello
measure "hello (open)" 200 /hello
measure "hello HS256" 200 /hs/hello "Authorization: Bearer $HS_TOKEN"
measure "hello RS256" 200 /rs/hello "Authorization: Bearer $RS_TOKEN"
measure "hello API key" 200 /key/hello "x-api-key: $API_KEY"
printf 'wrk.method = "POST"\nwrk.body = "{\\"email\\": 1, \\"name\\": \\"ada\\"}"\nwrk.headers["Content-Type"] = "application/json"\n' > "$work/bad.lua"
measure "schema 422" 422 /schema/hello "" "$work/bad.lua"

cpu_of() { awk -F'|' -v l="$1" '$1 == l {print $6}' "$work/rows"; }
base404=$(cpu_of "404 (no route)")
open=$(cpu_of "hello (open)")
times() { awk -v x="$1" -v b="$2" 'BEGIN { printf "%.2f ×", x / b }'; }
# ratio CASE BASE TARGET: "CASE / BASE = r × (target ≤ t ×): ok|MISSED".
ratio() {
  local x b
  x=$(cpu_of "$1"); b=$(cpu_of "$2")
  awk -v c="$1" -v bn="$2" -v x="$x" -v b="$b" -v t="$3" 'BEGIN {
    r = x / b
    printf "- %s: %.2f × the CPU per request of %s (target ≤ %.2f ×): %s\n", c, r, bn, t, (r <= t ? "ok" : "MISSED") }'
}

mkdir -p benches/results
{
  echo "| case | status | req/s | p50 ms | p99 ms | server CPU µs/req | × 404 | × open hello |"
  echo "|---|---|---|---|---|---|---|---|"
  while IFS='|' read -r label status rps p50 p99 cpu; do
    echo "| $label | $status | $rps | $p50 | $p99 | $cpu | $(times "$cpu" "$base404") | $(times "$cpu" "$open") |"
  done < "$work/rows"
  echo
  ratio "401 (auth, no token)" "404 (no route)" 1.5
  ratio "schema 422" "404 (no route)" 2.0
  ratio "hello HS256" "hello (open)" 1.10
  ratio "hello RS256" "hello (open)" 1.10
  ratio "hello API key" "hello (open)" 1.10
} | tee benches/results/edge.md
