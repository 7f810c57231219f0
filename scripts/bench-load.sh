#!/usr/bin/env bash
# Load benchmark: wrk against a loopback nginx upstream, measured in one run
# and interleaved so that machine noise hits every scenario alike:
#   direct   wrk → nginx
#   none     wrk → portcullis (auth = "none") → nginx
#   hs256    wrk → portcullis (auth = "required", HS256 token) → nginx
#   eddsa    wrk → portcullis (auth = "required", EdDSA token) → nginx
#   baseline wrk → BASELINE_BIN (auth = "required", HS256) → nginx, when set:
#            another build of portcullis to compare with (e.g. one without
#            revocation checks); it is given the same configuration without
#            the [store] table
# Prints req/s, p50/p99 latency and the gateway's CPU time per request
# (utime+stime of its process over the run ÷ requests), the stable figure.
# Every authenticated request runs the full check: verified-token cache,
# revoked-jti set and the user's record.
#
# Usage: [BASELINE_BIN=path] scripts/bench-load.sh [ROUNDS] [SECONDS] [CONNECTIONS]
# Everything listens on 127.0.0.1 and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SECONDS_PER_RUN=${2:-5}
CONNECTIONS=${3:-32}

needed=()
command -v wrk >/dev/null || needed+=(wrk)
command -v nginx >/dev/null || needed+=(nginx)
command -v cmake >/dev/null || needed+=(cmake)
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
write_config bench-hs256 "$GW_PORT" > "$WORK/hs.toml"
write_config bench-eddsa "$GW_PORT" > "$WORK/ed.toml"
printf '\n[store]\nurl = "sqlite://%s/bench.db"\n' "$WORK" >> "$WORK/hs.toml"
cp "$WORK/hs.toml" "$WORK/serve.toml"
HS_TOKEN=$($BIN token --config "$WORK/hs.toml" --sub bench-user --roles user --ttl 1h)
ED_TOKEN=$($BIN token --config "$WORK/ed.toml" --sub bench-user --roles user --ttl 1h)

RUST_LOG=warn taskset -c 0 $BIN serve --config "$WORK/serve.toml" 2>"$WORK/gateway.log" &
GW_PID=$!
PIDS+=($GW_PID)
BASE_PID=""
if [ -n "${BASELINE_BIN:-}" ]; then
  write_config bench-hs256 "$BASE_PORT" | grep -v '^admin_listen' > "$WORK/baseline.toml"
  RUST_LOG=warn taskset -c 0 "$BASELINE_BIN" serve --config "$WORK/baseline.toml" 2>"$WORK/baseline.log" &
  BASE_PID=$!
  PIDS+=($BASE_PID)
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$BASE_PORT/none" && break; sleep 0.1; done
fi
for _ in $(seq 100); do
  curl -s -o /dev/null "http://127.0.0.1:$GW_PORT/none" && curl -s -o /dev/null "http://127.0.0.1:$UP_PORT/" && break
  sleep 0.1
done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)

# run NAME URL [HEADER]: one wrk run; appends "name rps p50 p99 cpu_us_per_req" to results.
run() {
  local name=$1 url=$2 header=${3:-}
  local before after out pid=$GW_PID
  [ "$name" = baseline ] && pid=$BASE_PID
  before=$(cpu_ticks "$pid")
  if [ -n "$header" ]; then
    out=$(taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" --latency -H "$header" "$url")
  else
    out=$(taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" --latency "$url")
  fi
  after=$(cpu_ticks "$pid")
  if echo "$out" | grep -q "Non-2xx"; then echo "$name: non-2xx responses" >&2; echo "$out" >&2; exit 1; fi
  local requests rps p50 p99 cpu
  requests=$(echo "$out" | awk '/requests in/ {print $1}')
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  if [ "$name" = direct ]; then cpu="-"; else
    cpu=$(awk -v t=$((after - before)) -v hz="$TICK" -v n="$requests" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')
  fi
  echo "$name $rps $p50 $p99 $cpu" >> "$WORK/results"
}

for round in $(seq "$ROUNDS"); do
  echo "round $round/$ROUNDS" >&2
  run direct "http://127.0.0.1:$UP_PORT/none"
  run none "http://127.0.0.1:$GW_PORT/none"
  run hs256 "http://127.0.0.1:$GW_PORT/auth" "Authorization: Bearer $HS_TOKEN"
  run eddsa "http://127.0.0.1:$GW_PORT/auth" "Authorization: Bearer $ED_TOKEN"
  if [ -n "$BASE_PID" ]; then run baseline "http://127.0.0.1:$BASE_PORT/auth" "Authorization: Bearer $HS_TOKEN"; fi
done

# Medians per scenario, and CPU per request relative to auth = "none".
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
none_cpu = statistics.median(float(r[3]) for r in rows["none"])
print("| scenario | req/s | p50 ms | p99 ms | gateway CPU µs/req | CPU vs none |")
print("|---|---|---|---|---|---|")
for name in ("direct", "none", "hs256", "eddsa", "baseline"):
    r = rows.get(name)
    if not r:
        continue
    rps = statistics.median(x[0] for x in r)
    p50 = statistics.median(ms(x[1]) for x in r)
    p99 = statistics.median(ms(x[2]) for x in r)
    if name == "direct":
        print(f"| {name} | {rps:.0f} | {p50:.2f} | {p99:.2f} | - | - |")
    else:
        cpu = statistics.median(float(x[3]) for x in r)
        print(f"| {name} | {rps:.0f} | {p50:.2f} | {p99:.2f} | {cpu:.1f} | {cpu / none_cpu:.3f} |")
PY
