#!/usr/bin/env bash
# Load benchmark: every proxy on core 0 (one worker thread), wrk / h2load and
# a loopback nginx upstream on core 1, all scenarios interleaved round by
# round in one run, so that machine noise hits every scenario alike; each
# round in a fresh random order, each run after one unmeasured second.
#
# Scenarios (plain HTTP/1.1, keep-alive):
#   direct              wrk → nginx, no proxy
#   bare                a bare pingora proxy (examples/bare_proxy.rs): the floor
#   promised            the same with the README's per-request promises made
#                       through the engine's API (BARE_PROMISES=1: forwarding
#                       headers, request ids, upstream timeouts)
#   bare-bearer         both floors sent the HS256 request (its Authorization
#   promised-bearer     header is work for the engine too): the floors of
#                       every scenario that sends a token
#   none                portcullis, auth = "none", RUST_LOG=warn (no access log)
#   bare-nosteal        both with `work_stealing = false` (pingora's runtime
#   none-nosteal        per thread instead of the work-stealing one)
#   none-log            a second portcullis with the default log level (info:
#                       an access line per request, text, stderr to a file)
#   hs256 eddsa         auth = "required", full checks (verified-token cache,
#   es256 rs256         revoked-jti set, user record), log off; hs256-log
#   hs256-log           with the access log on
#   haproxy-*           HAProxy plain, and jwt_verify of the same tokens
#                       (COMPARE=1, default on)
#   baseline            BASELINE_BIN (another portcullis build), HS256
# TLS=1 (default on): TLS 1.3, one ECDSA P-256 certificate for every proxy:
#   tls-*-keepalive     wrk over keep-alive connections
#   tls-*-handshake     wrk with `Connection: close`: one full handshake per
#                       request (CPU per request = CPU per handshake)
#   tls-*-h2            h2load, HTTP/2, 4 connections × 16 streams
# MEMORY=1 (default on): RSS at rest and per idle connection, plain,
# TLS and HTTP/2 (scripts/bench-memory.sh, IDLE connections, default
# 10000), and per verified-token cache entry.
#
# Prints, per scenario, medians of req/s, p50/p99 latency and the proxy's
# CPU time per request (utime+stime of its whole process over the run ÷
# requests), ratios to the floors that got the same request (`bare`,
# `promised` or their `-bearer` runs), to `none` and to HAProxy on the
# same check, and the verified-token cache misses of each measured run of
# an authenticated scenario (the unmeasured second takes the first).
#
# Usage: [COMPARE=0] [TLS=0] [MEMORY=0] [IDLE=10000] [BASELINE_BIN=path] [BUILD=0]
#        scripts/bench-load.sh [ROUNDS=5] [SECONDS=4] [CONNECTIONS=32]
# Everything listens on 127.0.0.1, every client run is bounded in time, and
# every process started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
SECONDS_PER_RUN=${2:-4}
CONNECTIONS=${3:-32}
COMPARE=${COMPARE:-1}
TLS=${TLS:-1}
MEMORY=${MEMORY:-1}
IDLE=${IDLE:-10000}

# shellcheck source=scripts/bench-common.sh
source scripts/bench-common.sh
need wrk nginx cmake haproxy h2load:nghttp2-client openssl
build_binaries release
# 10,000 idle connections need that many descriptors in the proxy and the client.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

start_upstream
make_tls_cert

declare -A TOKEN
for alg in hs256 eddsa es256 rs256; do
  write_config "bench-$alg" 1 1 "" > "$WORK/$alg.toml"
  TOKEN[$alg]=$($BIN token --config "$WORK/$alg.toml" --sub bench-user --roles user --ttl 1h 2>/dev/null)
done

declare -A PORT PID HAP_PORT
# start_gateway NAME LOG_LEVEL [extra server lines]: one portcullis process.
start_gateway() {
  local name=$1 level=$2 extra=${3:-} admin
  PORT[$name]=$(free_port); admin=$(free_port)
  write_config bench-hs256 "${PORT[$name]}" "$admin" "$extra" > "$WORK/$name.toml"
  RUST_LOG=$level taskset -c 0 "$BIN" serve --config "$WORK/$name.toml" 2>"$WORK/$name.log" &
  PID[$name]=$!; PIDS+=($!)
  echo "$admin" > "$WORK/$name.admin"
}
start_bare() { # NAME [CERT KEY]
  local name=$1; shift
  PORT[$name]=$(free_port)
  BARE_WORK_STEALING=${STEAL:-1} BARE_PROMISES=${PROMISES:-0} taskset -c 0 "$BARE_BIN" "127.0.0.1:${PORT[$name]}" "127.0.0.1:$UP_PORT" "$@" 2>"$WORK/$name.log" &
  PID[$name]=$!; PIDS+=($!)
}
start_gateway gw warn
start_gateway gwlog "${LOG_LEVEL:-info}"
start_bare bare
PROMISES=1 start_bare promised
# The engine's runtime without work stealing (one runtime per thread).
start_gateway gwns warn "work_stealing = false"
STEAL=0 start_bare barens
if [ -n "${BASELINE_BIN:-}" ]; then
  PORT[baseline]=$(free_port)
  write_config bench-hs256 "${PORT[baseline]}" "$(free_port)" "" > "$WORK/baseline.toml"
  RUST_LOG=warn taskset -c 0 "$BASELINE_BIN" serve --config "$WORK/baseline.toml" 2>"$WORK/baseline.log" &
  PID[baseline]=$!; PIDS+=($!)
fi
if [ "$TLS" = 1 ]; then
  start_gateway gwtls warn "tls = { cert = \"$WORK/tls.crt\", key = \"$WORK/tls.pk8\" }"
  start_bare baretls "$WORK/tls.crt" "$WORK/tls.pk8"
fi

if [ "$COMPARE" = 1 ] || [ "$TLS" = 1 ]; then
  for name in none hs256 es256 rs256 tls; do HAP_PORT[$name]=$(free_port); done
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
  maxconn 9900
  log stderr format raw local0 emerg
  ssl-default-bind-options ssl-min-ver TLSv1.3
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
frontend tls
  bind 127.0.0.1:${HAP_PORT[tls]} ssl crt $WORK/tls.pem alpn h2,http/1.1
  default_backend nginx
HAP
    jwt_frontend hs256 HS256 "$SECRET"
    jwt_frontend es256 ES256 "$KEYS/test-es256.pub.pem"
    jwt_frontend rs256 RS256 "$KEYS/test-rs256.pub.pem"
  } > "$WORK/haproxy.cfg"
  haproxy -c -q -f "$WORK/haproxy.cfg"
  taskset -c 0 haproxy -db -f "$WORK/haproxy.cfg" 2>"$WORK/haproxy.log" &
  PID[haproxy]=$!; PIDS+=($!)
  PORT[haproxy]=${HAP_PORT[none]}
fi

wait_port "$UP_PORT"
for name in "${!PORT[@]}"; do wait_port "${PORT[$name]}"; done
[ -n "${HAP_PORT[tls]:-}" ] && wait_port "${HAP_PORT[tls]}"
sleep 1

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)
misses() { # verified-token cache misses of a gateway so far
  curl -s "http://127.0.0.1:$(cat "$WORK/$1.admin")/metrics" |
    awk '/^portcullis_verified_token_cache_misses_total/ {print $2}'
}

# record NAME PROC REQUESTS RPS P50 P99 TICKS [MISSES]
record() {
  local cpu
  cpu=$(awk -v t="$7" -v hz="$TICK" -v n="$3" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')
  echo "$1 $4 $5 $6 $cpu ${8:--}" >> "$WORK/results"
}

# run NAME PROC URL [wrk args…]: one bounded wrk run against process PROC.
run() {
  local name=$1 proc=$2 url=$3; shift 3
  local pid="" before=0 after=0 out m0="" m1=""
  [ -n "$proc" ] && pid=${PID[$proc]}
  # One unmeasured second first, on fresh connections like the measured
  # run, so no run pays for its process having sat idle.
  timeout 20 taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d1s "$@" "$url" >/dev/null
  [[ $proc == gw* ]] && m0=$(misses "$proc")
  [ -n "$pid" ] && before=$(cpu_ticks "$pid")
  out=$(timeout $((SECONDS_PER_RUN + 20)) taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" --latency "$@" "$url")
  [ -n "$pid" ] && after=$(cpu_ticks "$pid")
  [[ $proc == gw* ]] && m1=$(misses "$proc")
  if echo "$out" | grep -q "Non-2xx"; then echo "$name: non-2xx responses" >&2; echo "$out" >&2; exit 1; fi
  local requests rps p50 p99
  requests=$(echo "$out" | awk '/requests in/ {print $1}')
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  local missed="-"
  [ -n "$m0" ] && [[ $url == */auth ]] && missed=$(awk -v a="$m0" -v b="$m1" 'BEGIN {print b - a}')
  record "$name" "$proc" "$requests" "$rps" "$p50" "$p99" $((after - before)) "$missed"
}

# run_h2 NAME PROC URL: one bounded h2load run (HTTP/2 over TLS).
run_h2() {
  local name=$1 proc=$2 url=$3 before after out requests rps
  timeout 20 taskset -c 1 h2load -c4 -m16 -D 1 "$url" >/dev/null
  before=$(cpu_ticks "${PID[$proc]}")
  out=$(timeout $((SECONDS_PER_RUN + 20)) taskset -c 1 h2load -c4 -m16 -D "$SECONDS_PER_RUN" "$url")
  after=$(cpu_ticks "${PID[$proc]}")
  requests=$(echo "$out" | awk '/^requests:/ {print $8}')
  rps=$(echo "$out" | awk '/^finished in/ {gsub(",", "", $4); print $4}')
  if [ "$(echo "$out" | awk '/^status codes:/ {gsub(",", "", $3); print $3}')" != "$requests" ]; then
    echo "$name: non-2xx or failed requests" >&2; echo "$out" >&2; exit 1
  fi
  record "$name" "$proc" "$requests" "$rps" - - $((after - before))
}

bearer() { echo "Authorization: Bearer ${TOKEN[$1]}"; }
url() { echo "http://127.0.0.1:${PORT[$1]}$2"; }
# The scenarios, each a `run` or `run_h2` command line. Every round runs
# them all in a fresh random order, so no scenario always comes first
# after its process sat idle or always follows the same neighbour: in a
# fixed order, the first run of each process in a round came out the
# costliest in every round.
SCENARIOS=()
scenario() { # RUNNER NAME PROC URL [wrk args…]
  SCENARIOS+=("$(printf '%q ' "$@")")
  echo "$2" >> "$WORK/order"
}
scenario run direct "" "http://127.0.0.1:$UP_PORT/none"
scenario run bare bare "$(url bare /none)"
scenario run promised promised "$(url promised /none)"
scenario run bare-bearer bare "$(url bare /auth)" -H "$(bearer hs256)"
scenario run promised-bearer promised "$(url promised /auth)" -H "$(bearer hs256)"
scenario run none gw "$(url gw /none)"
scenario run none-log gwlog "$(url gwlog /none)"
scenario run bare-nosteal barens "$(url barens /none)"
scenario run none-nosteal gwns "$(url gwns /none)"
scenario run hs256 gw "$(url gw /auth)" -H "$(bearer hs256)"
scenario run hs256-log gwlog "$(url gwlog /auth)" -H "$(bearer hs256)"
scenario run eddsa gw "$(url gw /auth)" -H "$(bearer eddsa)"
scenario run es256 gw "$(url gw /auth)" -H "$(bearer es256)"
scenario run rs256 gw "$(url gw /auth)" -H "$(bearer rs256)"
if [ "$COMPARE" = 1 ]; then
  scenario run haproxy-none haproxy "http://127.0.0.1:${HAP_PORT[none]}/none"
  for alg in hs256 es256 rs256; do
    scenario run "haproxy-$alg" haproxy "http://127.0.0.1:${HAP_PORT[$alg]}/auth" -H "$(bearer "$alg")"
  done
fi
if [ -n "${BASELINE_BIN:-}" ]; then scenario run baseline baseline "$(url baseline /auth)" -H "$(bearer hs256)"; fi
if [ "$TLS" = 1 ]; then
  for proxy in gwtls baretls haproxy; do
    port=${PORT[$proxy]}; [ "$proxy" = haproxy ] && port=${HAP_PORT[tls]}
    label=${proxy/gwtls/portcullis}; label=${label/baretls/bare}
    scenario run "tls-$label-keepalive" "$proxy" "https://127.0.0.1:$port/none"
    scenario run "tls-$label-handshake" "$proxy" "https://127.0.0.1:$port/none" -H "Connection: close"
    scenario run_h2 "tls-$label-h2" "$proxy" "https://127.0.0.1:$port/none"
  done
fi
for round in $(seq "$ROUNDS"); do
  echo "round $round/$ROUNDS" >&2
  for i in $(shuf -i 0-$((${#SCENARIOS[@]} - 1))); do eval "${SCENARIOS[$i]}"; done
done

# Medians per scenario; CPU per request relative to bare pingora, to
# `none` and to HAProxy on the same check, each the median of the ratios
# within a round (runs seconds apart), not a ratio of medians taken from
# different rounds.
python3 - "$WORK/results" "$WORK/order" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    name, rps, p50, p99, cpu, missed = line.split()
    runs.setdefault(name, []).append((float(rps), p50, p99, float(cpu), missed))
# The scenarios in the order they were declared, not the order they ran.
rows = {name: runs[name] for name in open(sys.argv[2]).read().split() if name in runs}
def ms(v):
    for unit, f in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if v.endswith(unit):
            return float(v[: -len(unit)]) * f
    return float(v)
def med(values):
    values = list(values)
    return statistics.median(values) if values else None
def cpu(name):
    return med(x[3] for x in rows[name]) if name in rows and name != "direct" else None
def paired(a, b):
    """CPU per request of `a` over `b`, round by round: the runs of one
    round are seconds apart, so a slow phase of the machine hits both."""
    if a not in rows or b not in rows or "direct" in (a, b):
        return []
    return [x[3] / y[3] for x, y in zip(rows[a], rows[b]) if x[3] and y[3]]
def ratio(a, b):
    r = paired(a, b)
    return f"{statistics.median(r):.3f}" if r else "-"
def spread(a, b):
    r = paired(a, b)
    return f"{statistics.median(r):.3f} (rounds {min(r):.3f}–{max(r):.3f})" if r else "-"
peers = {"none": "haproxy-none", "none-log": "haproxy-none", "hs256": "haproxy-hs256",
         "hs256-log": "haproxy-hs256", "es256": "haproxy-es256", "rs256": "haproxy-rs256",
         "bare": "haproxy-none", "promised": "haproxy-none"}
for mode in ("keepalive", "handshake", "h2"):
    peers[f"tls-portcullis-{mode}"] = f"tls-haproxy-{mode}"
    peers[f"tls-bare-{mode}"] = f"tls-haproxy-{mode}"
BEARER = {"hs256", "hs256-log", "eddsa", "es256", "rs256", "baseline", "promised-bearer"}
print(f"{len(next(iter(rows.values())))} interleaved rounds, medians\n")
print("| scenario | req/s | p50 ms | p99 ms | CPU µs/req | vs bare pingora | vs bare + promises | vs `none` | vs HAProxy, same check | cache misses |")
print("|---|---|---|---|---|---|---|---|---|---|")
for name, r in rows.items():
    c = cpu(name)
    p50 = med(ms(x[1]) for x in r if x[1] != "-")
    p99 = med(ms(x[2]) for x in r if x[2] != "-")
    tls = name.startswith("tls-")
    # Each against the floor that got the same request.
    bearer = "-bearer" if name in BEARER else ""
    floor = ("tls-bare-" + name.split("-")[-1]) if tls else {"none-nosteal": "bare-nosteal"}.get(name, "bare" + bearer)
    vs_bare = ratio(name, floor) if not name.startswith(("haproxy", "tls-haproxy")) and name not in ("bare", floor) else "-"
    vs_promised = (ratio(name, "promised" + bearer) if not tls and "nosteal" not in name
                   and not name.startswith(("haproxy", "bare", "promised")) else "-")
    vs_none = ratio(name, "none") if not tls and not name.startswith(("haproxy", "bare", "promised")) else "-"
    missed = "/".join(x[4] for x in r) if r[0][4] != "-" else "-"
    fmt = lambda v: f"{v:.2f}" if v is not None else "-"
    fmt1 = lambda v: f"{v:.1f}" if v is not None else "-"
    print(f"| {name} | {med(x[0] for x in r):.0f} | {fmt(p50)} | {fmt(p99)} | {fmt1(c)} | "
          f"{vs_bare} | {vs_promised} | {vs_none} | {ratio(name, peers.get(name, ''))} | {missed} |")
print()
print(f"none / bare: {spread('none', 'bare')}")
print(f"hs256 / bare (same request): {spread('hs256', 'bare-bearer')}")
print(f"bare + promises / bare: {spread('promised', 'bare')}")
print(f"none / bare + promises: {spread('none', 'promised')}")
print(f"hs256 / bare + promises (same request): {spread('hs256', 'promised-bearer')}")
print(f"access log on / off: none {spread('none-log', 'none')}, hs256 {spread('hs256-log', 'hs256')}")
PY

[ "$MEMORY" = 1 ] || exit 0

# Memory: RSS at rest and per idle connection (plain HTTP/1.1, HTTP/1.1
# over TLS, HTTP/2), each proxy in fresh processes: scripts/bench-memory.sh.
echo
IDLE=$IDLE BUILD=0 scripts/bench-memory.sh

# Per verified-token cache entry: ENTRIES distinct HS256 tokens (same user,
# claims as `portcullis token` writes them, each with its own jti), each
# sent once on one keep-alive connection to a fresh gateway.
ENTRIES=${ENTRIES:-20000}
start_gateway gwcache warn
wait_port "${PORT[gwcache]}"
sleep 1
before=$(rss_kb "${PID[gwcache]}")
python3 - "${PORT[gwcache]}" "${TOKEN[hs256]}" "$KEYS/test-hs256.secret" "$ENTRIES" <<'PY'
import base64, hashlib, hmac, http.client, json, sys
port, token, secret_file, count = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
secret = open(secret_file, "rb").read().rstrip(b"\r\n")
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=")
head, body, _ = token.split(".")
claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
conn = http.client.HTTPConnection("127.0.0.1", port)
for i in range(count):
    claims["jti"] = f"bench-entry-{i:08d}"
    signing = head.encode() + b"." + b64(json.dumps(claims, separators=(",", ":")).encode())
    signed = signing + b"." + b64(hmac.new(secret, signing, hashlib.sha256).digest())
    conn.request("GET", "/auth", headers={"Authorization": "Bearer " + signed.decode()})
    response = conn.getresponse()
    response.read()
    if response.status != 200:
        sys.exit(f"token {i}: status {response.status}")
PY
after=$(rss_kb "${PID[gwcache]}")
cached=$(misses gwcache)
awk -v a="$after" -v b="$before" -v n="$cached" \
  'BEGIN {printf "\nverified-token cache: %d entries, %.0f bytes per entry (RSS growth / entries)\n", n, (a - b) * 1024 / n}'
