#!/usr/bin/env bash
# Memory per idle connection (issue #24): the RSS each proxy holds for a
# connection that has served one request and is left open, over plain
# HTTP/1.1, HTTP/1.1 over TLS 1.3, and HTTP/2 over TLS 1.3 (ALPN h2), for
# portcullis, the bare engine (examples/bare_proxy.rs) and HAProxy.
#
# Each cell of the table is its own fresh process on core 0 (one worker
# thread), so no cell inherits memory another freed: started, 20
# connections served and closed (first-use allocations: the upstream
# pool, TLS session state, lazily built tables), RSS read, then
# scripts/hold-idle.py on core 1 opens IDLE connections one after the
# other, each serving `GET /none` once, and holds them; one second later
# RSS is read again and every connection is checked to be still open.
# Per idle connection = RSS growth ÷ connections. RSS at rest is the
# plain process's, started and listening, before any request.
#
# Usage: [IDLE=10000] [PROXIES="portcullis bare haproxy"] [MODES="h1 tls h2"]
#        [BASELINE_BIN=path] [BUILD=0] scripts/bench-memory.sh
# BASELINE_BIN adds a row for another portcullis build (before/after in
# one run). HAProxy holds at most 9,000 (its maxconn is bound by the
# descriptor limit, two per connection).
# Everything listens on 127.0.0.1, and every process started here is
# stopped on exit.
set -euo pipefail
# A path relative to where the script was started from.
[ -z "${BASELINE_BIN:-}" ] || BASELINE_BIN=$(realpath "$BASELINE_BIN")
cd "$(dirname "$0")/.."
IDLE=${IDLE:-10000}
PROXIES=${PROXIES:-portcullis bare haproxy}
MODES=${MODES:-h1 tls h2}
[ -n "${BASELINE_BIN:-}" ] && PROXIES="$PROXIES baseline"

# shellcheck source=scripts/bench-common.sh
source scripts/bench-common.sh
need nginx cmake haproxy openssl
build_binaries release
# IDLE connections need that many descriptors in the proxy and the client.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

start_upstream
wait_port "$UP_PORT"
make_tls_cert

# haproxy_conf PORT TLS: one frontend, idle connections kept 10 minutes.
haproxy_conf() {
  local bind="bind 127.0.0.1:$1"
  [ "$2" = 1 ] && bind="$bind ssl crt $WORK/tls.pem alpn h2,http/1.1"
  cat <<HAP
global
  nbthread 1
  maxconn 9900
  log stderr format raw local0 emerg
  ssl-default-bind-options ssl-min-ver TLSv1.3
defaults
  mode http
  timeout connect 2s
  timeout client 10m
  timeout server 30s
  option http-keep-alive
backend nginx
  http-reuse always
  server up 127.0.0.1:$UP_PORT
frontend idle
  $bind
  default_backend nginx
HAP
}

# start PROXY TLS PORT: one proxy process on core 0; sets STARTED.
start() {
  local proxy=$1 tls=$2 port=$3 extra='keepalive_timeout = "10m"' bin=$BIN
  [ "$tls" = 1 ] && extra="$extra
tls = { cert = \"$WORK/tls.crt\", key = \"$WORK/tls.pk8\" }"
  case $proxy in
    portcullis | baseline)
      [ "$proxy" = baseline ] && bin=$BASELINE_BIN
      write_config bench-hs256 "$port" "$(free_port)" "$extra" > "$WORK/$proxy-$port.toml"
      RUST_LOG=warn taskset -c 0 "$bin" serve --config "$WORK/$proxy-$port.toml" 2>"$WORK/$proxy-$port.log" &
      ;;
    bare)
      local tls_args=()
      [ "$tls" = 1 ] && tls_args=("$WORK/tls.crt" "$WORK/tls.pk8")
      taskset -c 0 "$BARE_BIN" "127.0.0.1:$port" "127.0.0.1:$UP_PORT" "${tls_args[@]}" 2>"$WORK/bare-$port.log" &
      ;;
    haproxy)
      haproxy_conf "$port" "$tls" > "$WORK/haproxy-$port.cfg"
      taskset -c 0 haproxy -db -f "$WORK/haproxy-$port.cfg" 2>"$WORK/haproxy-$port.log" &
      ;;
  esac
  STARTED=$!; PIDS+=($!)
  wait_port "$port"
  sleep 1
}

SOURCE=2
declare -A CELL REST
# hold PROXY MODE: one fresh process, IDLE connections held in MODE;
# records bytes per connection in CELL and the first RSS at rest in REST.
hold() {
  local proxy=$1 mode=$2 tls=1 port rest before after count=$IDLE open
  [ "$mode" = h1 ] && tls=0
  [ "$proxy" = haproxy ] && [ "$count" -gt 9000 ] && count=9000
  port=$(free_port)
  start "$proxy" "$tls" "$port"
  rest=$(rss_kb "$STARTED")
  taskset -c 1 python3 scripts/hold-idle.py "$mode" "$port" "127.0.0.$SOURCE" 20 </dev/null >/dev/null
  sleep 1
  before=$(rss_kb "$STARTED")
  coproc HOLD { timeout 900 taskset -c 1 python3 scripts/hold-idle.py "$mode" "$port" "127.0.0.$((SOURCE + 1))" "$count"; }
  SOURCE=$((SOURCE + 2))
  read -r -t 600 _ _ <&"${HOLD[0]}" || { echo "$proxy $mode: could not hold $count connections" >&2; exit 1; }
  sleep 1
  after=$(rss_kb "$STARTED")
  echo >&"${HOLD[1]}"
  read -r -t 60 open <&"${HOLD[0]}"
  [ "$open" = "$count" ] || { echo "$proxy $mode: only $open of $count connections still open" >&2; exit 1; }
  eval "exec ${HOLD[1]}>&-"
  wait "$HOLD_PID" 2>/dev/null || true
  kill "$STARTED" 2>/dev/null; wait "$STARTED" 2>/dev/null || true
  CELL[$proxy.$mode]=$(((after - before) * 1024 / count))
  [ -n "${REST[$proxy]:-}" ] || REST[$proxy]=$rest
}

for proxy in $PROXIES; do
  for mode in $MODES; do
    echo "$proxy $mode" >&2
    hold "$proxy" "$mode"
  done
done

kib() { awk -v b="$1" 'BEGIN {printf "%.1f KiB", b / 1024}'; }
declare -A TITLE=([h1]="plain HTTP/1.1" [tls]="HTTP/1.1 over TLS" [h2]="HTTP/2 over TLS")
header="| process | RSS at rest MiB |"; rule="|---|---|"
for mode in $MODES; do header="$header ${TITLE[$mode]} |"; rule="$rule---|"; done
echo
echo "RSS per idle connection (growth ÷ connections held: $IDLE, HAProxy $((IDLE > 9000 ? 9000 : IDLE)))"
echo
echo "$header"
echo "$rule"
for proxy in $PROXIES; do
  line="| ${proxy/bare/bare pingora} | $(awk -v k="${REST[$proxy]}" 'BEGIN {printf "%.1f", k / 1024}') |"
  for mode in $MODES; do
    line="$line $(kib "${CELL[$proxy.$mode]}") |"
  done
  echo "$line"
done
