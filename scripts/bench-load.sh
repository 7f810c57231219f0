#!/usr/bin/env bash
# Load benchmark: wrk against a loopback nginx upstream, measured in one run
# and interleaved so that machine noise hits every scenario alike.
#
# Scenarios (each: wrk → proxy → nginx, or wrk → nginx):
#   direct              no proxy
#   none                portcullis, auth = "none"
#   hs256 eddsa         portcullis, auth = "required", full checks (verified-
#                       token cache, revoked-jti set, user record)
#   es256 rs256         the same with ES256 / RS256 tokens        (COMPARE=1)
#   haproxy-none        HAProxy as a plain proxy                  (COMPARE=1)
#   haproxy-hs256 …     HAProxy jwt_verify of the same HS256 / ES256 / RS256
#                       tokens: alg pinned, signature, exp, identity header
#                       set from sub, spoofed copies removed       (COMPARE=1)
#   baseline            BASELINE_BIN (another portcullis build), HS256
# Prints req/s, p50/p99 latency and each proxy's CPU time per request
# (utime+stime of its process over the run ÷ requests), the stable figure,
# plus ratios to `none` and, with COMPARE=1, to HAProxy on the same algorithm.
#
# Usage: [COMPARE=1] [BASELINE_BIN=path] scripts/bench-load.sh [ROUNDS] [SECONDS] [CONNECTIONS]
# Everything listens on 127.0.0.1 and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SECONDS_PER_RUN=${2:-5}
CONNECTIONS=${3:-32}
COMPARE=${COMPARE:-0}

needed=()
command -v wrk >/dev/null || needed+=(wrk)
command -v nginx >/dev/null || needed+=(nginx)
command -v cmake >/dev/null || needed+=(cmake)
[ "$COMPARE" = 1 ] && ! command -v haproxy >/dev/null && needed+=(haproxy)
if [ ${#needed[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${needed[@]}" >/dev/null
fi
cargo build --release --locked -q
BIN=target/release/portcullis

WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0; sleep 0.1; done; }
UP_PORT=$(free_port); GW_PORT=$(free_port); ADMIN_PORT=$(free_port); BASE_PORT=$(free_port)

mkdir -p "$WORK/nginx"
cat > "$WORK/nginx/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log crit;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$UP_PORT;
    location / { return 200 "ok\n"; }
  }
}
NGINX
taskset -c 1 nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" &
PIDS+=($!)

KEYS="$PWD/tests/fixtures/keys"
write_config() { # $1 = signing key, $2 = port
  cat <<TOML
[server]
listen = ["127.0.0.1:$2"]
admin_listen = "127.0.0.1:$ADMIN_PORT"
threads = 1
shutdown_grace = "0s"
shutdown_timeout = "1s"

[tokens]
issuer = "https://issuer.bench"
audience = "bench"
signing_key = "$1"

[[tokens.keys]]
kid = "bench-hs256"
algorithm = "HS256"
secret_file = "$KEYS/test-hs256.secret"

[[tokens.keys]]
kid = "bench-eddsa"
algorithm = "EdDSA"
private_key_file = "$KEYS/test-eddsa.pem"

[[tokens.keys]]
kid = "bench-es256"
algorithm = "ES256"
private_key_file = "$KEYS/test-es256.pem"

[[tokens.keys]]
kid = "bench-rs256"
algorithm = "RS256"
private_key_file = "$KEYS/test-rs256.pem"

[[upstreams]]
name = "nginx"
targets = ["127.0.0.1:$UP_PORT"]

[[routes]]
path = "/none"
upstream = "nginx"
auth = "none"

[[routes]]
path = "/auth"
upstream = "nginx"
auth = "required"
TOML
}
declare -A TOKEN
for alg in hs256 eddsa es256 rs256; do
  write_config "bench-$alg" "$GW_PORT" > "$WORK/$alg.toml"
  TOKEN[$alg]=$($BIN token --config "$WORK/$alg.toml" --sub bench-user --roles user --ttl 1h)
done
cp "$WORK/hs256.toml" "$WORK/serve.toml"
printf '\n[store]\nurl = "sqlite://%s/bench.db"\n' "$WORK" >> "$WORK/serve.toml"

RUST_LOG=warn taskset -c 0 $BIN serve --config "$WORK/serve.toml" 2>"$WORK/gateway.log" &
GW_PID=$!
PIDS+=($GW_PID)
wait_http "$GW_PORT"; wait_http "$UP_PORT"

BASE_PID=""
if [ -n "${BASELINE_BIN:-}" ]; then
  write_config bench-hs256 "$BASE_PORT" | grep -v '^admin_listen' > "$WORK/baseline.toml"
  RUST_LOG=warn taskset -c 0 "$BASELINE_BIN" serve --config "$WORK/baseline.toml" 2>"$WORK/baseline.log" &
  BASE_PID=$!
  PIDS+=($BASE_PID)
  wait_http "$BASE_PORT"
fi

HAP_PID=""
declare -A HAP_PORT
if [ "$COMPARE" = 1 ]; then
  for name in none hs256 es256 rs256; do HAP_PORT[$name]=$(free_port); done
  SECRET=$(cat "$KEYS/test-hs256.secret")
  # One frontend per algorithm: the alg is pinned like a portcullis key.
  jwt_frontend() { # $1 = name, $2 = alg, $3 = key (secret or public key file)
    cat <<HAP
frontend $1
  bind 127.0.0.1:${HAP_PORT[$1]}
  http-request del-header x-user-id
  http-request set-var(txn.bearer) http_auth_bearer
  http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('\$.alg')
  http-request deny deny_status 401 unless { var(txn.alg) -m str $2 }
  http-request deny deny_status 401 unless { var(txn.bearer),jwt_verify(txn.alg,"$3") -m int 1 }
  http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('\$.exp','int')
  http-request set-var(txn.now) date()
  http-request deny deny_status 401 if { var(txn.exp),sub(txn.now) -m int lt 0 }
  http-request set-header x-user-id %[var(txn.bearer),jwt_payload_query('\$.sub')]
  default_backend nginx
HAP
  }
  {
    cat <<HAP
global
  nbthread 1
  log stderr format raw local0 emerg
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
backend nginx
  http-reuse always
  server up 127.0.0.1:$UP_PORT
frontend none
  bind 127.0.0.1:${HAP_PORT[none]}
  default_backend nginx
HAP
    jwt_frontend hs256 HS256 "$SECRET"
    jwt_frontend es256 ES256 "$KEYS/test-es256.pub.pem"
    jwt_frontend rs256 RS256 "$KEYS/test-rs256.pub.pem"
  } > "$WORK/haproxy.cfg"
  haproxy -c -q -f "$WORK/haproxy.cfg"
  taskset -c 0 haproxy -db -f "$WORK/haproxy.cfg" 2>"$WORK/haproxy.log" &
  HAP_PID=$!
  PIDS+=($HAP_PID)
  wait_http "${HAP_PORT[none]}"
fi

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)

# run NAME PID URL [HEADER]: one wrk run; appends "name rps p50 p99 cpu_us_per_req".
run() {
  local name=$1 pid=$2 url=$3 header=${4:-}
  local before=0 after=0 out
  [ -n "$pid" ] && before=$(cpu_ticks "$pid")
  if [ -n "$header" ]; then
    out=$(taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" --latency -H "$header" "$url")
  else
    out=$(taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" --latency "$url")
  fi
  [ -n "$pid" ] && after=$(cpu_ticks "$pid")
  if echo "$out" | grep -q "Non-2xx"; then echo "$name: non-2xx responses" >&2; echo "$out" >&2; exit 1; fi
  local requests rps p50 p99 cpu="-"
  requests=$(echo "$out" | awk '/requests in/ {print $1}')
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  if [ -n "$pid" ]; then
    cpu=$(awk -v t=$((after - before)) -v hz="$TICK" -v n="$requests" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')
  fi
  echo "$name $rps $p50 $p99 $cpu" >> "$WORK/results"
}

bearer() { echo "Authorization: Bearer ${TOKEN[$1]}"; }
for round in $(seq "$ROUNDS"); do
  echo "round $round/$ROUNDS" >&2
  run direct "" "http://127.0.0.1:$UP_PORT/none"
  run none "$GW_PID" "http://127.0.0.1:$GW_PORT/none"
  run hs256 "$GW_PID" "http://127.0.0.1:$GW_PORT/auth" "$(bearer hs256)"
  run eddsa "$GW_PID" "http://127.0.0.1:$GW_PORT/auth" "$(bearer eddsa)"
  if [ "$COMPARE" = 1 ]; then
    run es256 "$GW_PID" "http://127.0.0.1:$GW_PORT/auth" "$(bearer es256)"
    run rs256 "$GW_PID" "http://127.0.0.1:$GW_PORT/auth" "$(bearer rs256)"
    run haproxy-none "$HAP_PID" "http://127.0.0.1:${HAP_PORT[none]}/none"
    for alg in hs256 es256 rs256; do
      run "haproxy-$alg" "$HAP_PID" "http://127.0.0.1:${HAP_PORT[$alg]}/auth" "$(bearer "$alg")"
    done
  fi
  if [ -n "$BASE_PID" ]; then run baseline "$BASE_PID" "http://127.0.0.1:$BASE_PORT/auth" "$(bearer hs256)"; fi
done

# Medians per scenario; CPU per request relative to `none` and to HAProxy.
python3 - "$WORK/results" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, rps, p50, p99, cpu = line.split()
    rows.setdefault(name, []).append((float(rps), p50, p99, cpu))
def ms(v):
    for unit, f in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if v.endswith(unit):
            return float(v[: -len(unit)]) * f
    return float(v)
def cpu(name):
    return statistics.median(float(x[3]) for x in rows[name]) if name in rows and rows[name][0][3] != "-" else None
order = ["direct", "none", "hs256", "eddsa", "es256", "rs256", "baseline",
         "haproxy-none", "haproxy-hs256", "haproxy-es256", "haproxy-rs256"]
print("| scenario | req/s | p50 ms | p99 ms | CPU µs/req | CPU vs none | CPU vs HAProxy, same check |")
print("|---|---|---|---|---|---|---|")
for name in order:
    if name not in rows:
        continue
    r = rows[name]
    rps = statistics.median(x[0] for x in r)
    p50 = statistics.median(ms(x[1]) for x in r)
    p99 = statistics.median(ms(x[2]) for x in r)
    c = cpu(name)
    vs_none = f"{c / cpu('none'):.3f}" if c and not name.startswith("haproxy") else "-"
    peer = {"none": "haproxy-none", "hs256": "haproxy-hs256", "es256": "haproxy-es256", "rs256": "haproxy-rs256"}.get(name)
    vs_hap = f"{c / cpu(peer):.3f}" if c and peer and cpu(peer) else "-"
    print(f"| {name} | {rps:.0f} | {p50:.2f} | {p99:.2f} | {c if c is not None else '-'} | {vs_none} | {vs_hap} |")
PY
