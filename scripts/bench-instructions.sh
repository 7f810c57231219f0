#!/usr/bin/env bash
# Instructions per request, counted by callgrind: the bare engine
# (examples/bare_proxy.rs), alone and with the README's per-request
# promises made through the engine's API (`promised`: forwarding headers,
# request ids, upstream timeouts; see the example's header), each with
# the `none` request and with the HS256 request; portcullis on an
# `auth = "none"` route and on an `auth = "required"` route with a token
# of each algorithm (HS256, EdDSA, ES256, RS256), log off; and `none` and
# HS256 again with the access log on, and with the audit trail on
# (`[audit]` to a file, log off). Each runs behind the same loopback
# nginx. Unlike CPU time, an instruction count does not swing from run to
# run on a shared machine, so it shows changes of a few percent that the
# load benchmark (scripts/bench-load.sh) cannot; it counts user-space
# work only (the kernel's share of a request, the same for every proxy
# here, is not in it).
#
# Each proxy runs under valgrind; ab sends WARMUP keep-alive requests,
# the counters are zeroed, then REQUESTS more are counted.
#
# Usage: [REQUESTS=10000] [WARMUP=2000] [KEEP=1] [PROFILE=release]
#        [ONLY="none hs256 none-audit hs256-audit"] scripts/bench-instructions.sh
# ONLY runs just the scenarios named (a ratio whose floor was not run
# prints as -).
# KEEP=1 keeps the callgrind files for callgrind_annotate (PROFILE=
# release-debug gives them file and line numbers).
# Everything listens on 127.0.0.1; every process started here is stopped
# on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
REQUESTS=${REQUESTS:-10000}
WARMUP=${WARMUP:-2000}
PROFILE=${PROFILE:-release}

needed=()
command -v valgrind >/dev/null || needed+=(valgrind)
command -v ab >/dev/null || needed+=(apache2-utils)
command -v nginx >/dev/null || needed+=(nginx)
command -v cmake >/dev/null || needed+=(cmake)
if [ ${#needed[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${needed[@]}" >/dev/null
fi
cargo build --profile "$PROFILE" --locked -q --bin portcullis --example bare_proxy
TARGET=${CARGO_TARGET_DIR:-target}/$PROFILE
BIN=$TARGET/portcullis
BARE_BIN=$TARGET/examples/bare_proxy

# shellcheck source=scripts/bench-common.sh
source scripts/bench-common.sh

UP_PORT=$(free_port)
write_upstream_conf "$UP_PORT"
nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" &
PIDS+=($!)
GW_PORT=$(free_port)
write_config bench-hs256 "$GW_PORT" "$(free_port)" "" > "$WORK/gateway.toml"
# The same gateway with the audit trail on, to a file.
{ cat "$WORK/gateway.toml"; printf '\n[audit]\nenabled = true\ndestination = "%s"\n' "$WORK/audit.log"; } > "$WORK/gateway-audit.toml"
# One token per algorithm, each signed by that algorithm's key; the one
# gateway verifies them all.
declare -A TOKEN
for alg in hs256 eddsa es256 rs256; do
  write_config "bench-$alg" 1 1 "" > "$WORK/$alg.toml"
  TOKEN[$alg]=$("$BIN" token --config "$WORK/$alg.toml" --sub bench-user --roles user --ttl 1h 2>/dev/null)
done
wait_port "$UP_PORT"

declare -A PER_REQUEST
# count NAME PORT URL_PATH [HEADER] -- COMMAND…: one proxy under callgrind.
count() {
  local name=$1 port=$2 path=$3 header=$4; shift 5
  if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then return 0; fi
  local out="$WORK/$name.callgrind"
  valgrind --tool=callgrind --callgrind-out-file="$out" "$@" 2>"$WORK/$name.valgrind" &
  local pid=$!
  PIDS+=("$pid")
  wait_port "$port" 600
  local ab_args=(-q -k -c 8 ${header:+-H "$header"})
  ab "${ab_args[@]}" -n "$WARMUP" "http://127.0.0.1:$port$path" >/dev/null
  callgrind_control -z "$pid" >/dev/null 2>&1
  ab "${ab_args[@]}" -n "$REQUESTS" "http://127.0.0.1:$port$path" > "$WORK/$name.ab"
  callgrind_control -d "$pid" >/dev/null 2>&1
  kill "$pid"; wait "$pid" 2>/dev/null || true
  if ! grep -q "^Complete requests: *$REQUESTS" "$WORK/$name.ab" ||
     ! grep -q "^Failed requests: *0" "$WORK/$name.ab" || grep -q "^Non-2xx" "$WORK/$name.ab"; then
    echo "$name: not every request succeeded" >&2; cat "$WORK/$name.ab" >&2; exit 1
  fi
  # The dump after zeroing holds exactly the counted requests.
  PER_REQUEST[$name]=$(cat "$out".* | awk -v n="$REQUESTS" '/^summary:/ {s += $2} END {printf "%.0f", s / n}')
}

# No access log: this counts the request path, not the log writer.
export RUST_LOG=warn
BARE_PORT=$(free_port)
# Each floor twice: with the request `none` gets, and with the HS256
# request (its `Authorization` header is work for the engine too).
BEARER="Authorization: Bearer ${TOKEN[hs256]}"
count bare "$BARE_PORT" /none "" -- "$BARE_BIN" "127.0.0.1:$BARE_PORT" "127.0.0.1:$UP_PORT"
count bare-bearer "$BARE_PORT" /auth "$BEARER" -- "$BARE_BIN" "127.0.0.1:$BARE_PORT" "127.0.0.1:$UP_PORT"
export BARE_PROMISES=1
count promised "$BARE_PORT" /none "" -- "$BARE_BIN" "127.0.0.1:$BARE_PORT" "127.0.0.1:$UP_PORT"
count promised-bearer "$BARE_PORT" /auth "$BEARER" -- "$BARE_BIN" "127.0.0.1:$BARE_PORT" "127.0.0.1:$UP_PORT"
# The promises one kind at a time: what each costs in the engine.
BARE_PROMISES=headers count promised-headers "$BARE_PORT" /none "" -- "$BARE_BIN" "127.0.0.1:$BARE_PORT" "127.0.0.1:$UP_PORT"
BARE_PROMISES=timeouts count promised-timeouts "$BARE_PORT" /none "" -- "$BARE_BIN" "127.0.0.1:$BARE_PORT" "127.0.0.1:$UP_PORT"
unset BARE_PROMISES
count none "$GW_PORT" /none "" -- "$BIN" serve --config "$WORK/gateway.toml"
# The warm-up fills the verified-token cache, so the counted requests of
# every algorithm are cache hits: their counts should match HS256's.
for alg in hs256 eddsa es256 rs256; do
  count "$alg" "$GW_PORT" /auth "Authorization: Bearer ${TOKEN[$alg]}" -- "$BIN" serve --config "$WORK/gateway.toml"
done

# The access log at the default level (text, stderr to a file), as in
# the load benchmark's `-log` scenarios; the writer thread is counted too.
RUST_LOG=info count none-log "$GW_PORT" /none "" -- "$BIN" serve --config "$WORK/gateway.toml"
RUST_LOG=info count hs256-log "$GW_PORT" /auth "$BEARER" -- "$BIN" serve --config "$WORK/gateway.toml"

# The audit trail on (a line per request to a file, the log off); its
# writer thread is counted too.
count none-audit "$GW_PORT" /none "" -- "$BIN" serve --config "$WORK/gateway-audit.toml"
count hs256-audit "$GW_PORT" /auth "$BEARER" -- "$BIN" serve --config "$WORK/gateway-audit.toml"

# Each scenario against the floors that got the same request: `bare` and
# `promised` for `none`, their `-bearer` runs for a request with a token;
# `-log` and `-audit` runs also against the same request with both off.
printf '%-16s %14s %10s %10s %10s %10s\n' scenario instr/request "× bare" "× promised" "× hs256" "× off"
for name in bare bare-bearer promised promised-bearer promised-headers promised-timeouts none hs256 eddsa es256 rs256 none-log hs256-log none-audit hs256-audit; do
  [ -n "${PER_REQUEST[$name]:-}" ] || continue
  case $name in *-bearer) floor=-bearer ;; none | none-log | none-audit | bare | promised*) floor="" ;; *) floor=-bearer ;; esac
  off=${name%-log}; off=${off%-audit}
  awk -v n="$name" -v v="${PER_REQUEST[$name]}" -v b="${PER_REQUEST[bare$floor]:-0}" \
    -v p="${PER_REQUEST[promised$floor]:-0}" -v h="${PER_REQUEST[hs256]:-0}" -v off="${PER_REQUEST[$off]:-0}" -v same="$([ "$off" = "$name" ] && echo 1 || echo 0)" \
    'function r(x, f) { return f > 0 ? sprintf("%.3f", x / f) : "-" }
     BEGIN {printf "%-16s %14d %10s %10s %10s %10s\n", n, v, r(v, b), r(v, p), r(v, h), same ? "-" : r(v, off)}'
done
