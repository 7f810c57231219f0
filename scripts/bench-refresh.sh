#!/usr/bin/env bash
# Refresh benchmark: refreshes per second through one gateway, on SQLite
# and on Redis. wrk presents a distinct refresh token on every request and
# feeds each answer's new token back (scripts/refresh.lua), so every
# request is a real rotation: lookup, checks, signing, sealing the grace
# pair, and the atomic store write. Loopback only; stops by itself.
#
# Usage: scripts/bench-refresh.sh [SECONDS] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${1:-10}
CONNECTIONS=${2:-32}

needed=()
command -v wrk >/dev/null || needed+=(wrk)
command -v redis-server >/dev/null || needed+=(redis-server)
command -v cmake >/dev/null || needed+=(cmake)
if [ ${#needed[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${needed[@]}" >/dev/null
fi
cargo build --release --locked -q
BIN=$PWD/target/release/portcullis

WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

REDIS_PORT=$(free_port)
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly yes --appendfsync everysec \
  --dir "$WORK" >/dev/null 2>&1 &
PIDS+=($!)
ADMIN_TOKEN=bench-admin-token-0123456789abcdef
export PORTCULLIS_BENCH_ADMIN=$ADMIN_TOKEN

run_store() { # $1 = label, $2 = store url
  local gw admin cfg pid
  gw=$(free_port); admin=$(free_port); cfg="$WORK/$1.toml"
  cat > "$cfg" <<TOML
[server]
listen = ["127.0.0.1:$gw"]
admin_listen = "127.0.0.1:$admin"
admin_token_env = "PORTCULLIS_BENCH_ADMIN"

[store]
url = "$2"

[tokens]
issuer = "https://issuer.bench"
audience = "bench"
signing_key = "bench-eddsa"

[[tokens.keys]]
kid = "bench-eddsa"
algorithm = "EdDSA"
private_key_file = "$PWD/tests/fixtures/keys/test-eddsa.pem"

[sessions]
max_failures = 1000000

[[upstreams]]
name = "none"
targets = ["127.0.0.1:9"]
TOML
  RUST_LOG=warn "$BIN" serve --config "$cfg" 2>"$WORK/$1.log" &
  pid=$!
  PIDS+=("$pid")
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$admin/healthz" && break; sleep 0.1; done
  # The initial pool: one session per slot, issued through the admin API.
  python3 - "$admin" "$ADMIN_TOKEN" "$((CONNECTIONS * 4))" > "$WORK/$1.tokens" <<'PY'
import http.client, json, sys
port, token, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
conn = http.client.HTTPConnection("127.0.0.1", int(port))
for i in range(count):
    body = json.dumps({"sub": f"bench-{i}", "device": "bench"})
    conn.request("POST", "/admin/sessions", body, {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    print(json.loads(conn.getresponse().read())["refresh_token"])
PY
  local out
  out=$(TOKENS="$WORK/$1.tokens" wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" --latency -s scripts/refresh.lua "http://127.0.0.1:$gw")
  local rps p50 p99 errors
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  errors=$(echo "$out" | awk '/Non-2xx/ {print $5}')
  echo "| $1 | ${rps%.*} | $p50 | $p99 | ${errors:-0} |"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

echo "| store | refreshes/s | p50 | p99 | non-2xx |"
echo "|---|---|---|---|---|"
run_store sqlite "sqlite://$WORK/bench.db"
run_store redis "redis://127.0.0.1:$REDIS_PORT/0"
