#!/usr/bin/env bash
# Instructions per request, counted by callgrind: the bare engine
# (examples/bare_proxy.rs), alone and with the README's per-request
# promises made through the engine's API (`promised`: forwarding headers,
# request ids, upstream timeouts; see the example's header), each with
# the `none` request and with the HS256 request; portcullis on an
# `auth = "none"` route and on an `auth = "required"` route with a token
# of each algorithm (HS256, EdDSA, ES256, RS256), log off; and `none` and
# HS256 again with the access log on; with traces exported
# (`-trace`: sample ratio 1.0; `-trace0`: ratio 0; to the upstream
# nginx, which answers OTLP with an empty 200); HS256 with the signed identity
# assertion to the upstream on (`assertion`: cached per token;
# `assertion-bound`: `assertion_binds_request`, signed per request with
# the EdDSA key); and per-route policy: `policy`, a
# required route with `roles`, against `policy-rules`, the same route
# with `methods` (two routes sharing its path) and two `require_claims`
# conditions, the same HS256 token for both (issue #25: within 1.03×);
# `none` and HS256 with the audit trail on (`-audit`: `[audit]` to a
# file, log off); HS256 under a route rate limit no request reaches
# (`hs256-ratelimit`), with `upstream_auth` (`hs256-upstreamauth`), and an
# API key in its place (`hs256-apikey`).
# Over TLS keep-alive (`tls-*`) and HTTP/2 (`h2-*`): bare, bare-bearer,
# promised, promised-bearer, none and hs256 again, each against the floors
# of its own protocol, in a second table (issue #24).
# Each runs behind the same loopback
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
#        [ONLY="hs256 assertion assertion-bound"] [BASELINE_BIN=path] [BUILD=0]
#        scripts/bench-instructions.sh
# BASELINE_BIN counts `none` and `hs256` once more on another portcullis
# build (`baseline-none`, `baseline-hs256`, and over TLS and HTTP/2 when
# those run; before/after in one run), and the `× before` columns set
# each against it.
# ONLY counts the scenarios named alone (a ratio whose floor was not
# counted shows as -).
# KEEP=1 keeps the callgrind files for callgrind_annotate (PROFILE=
# release-debug gives them file and line numbers).
# Everything listens on 127.0.0.1; every process started here is stopped
# on exit.
set -euo pipefail
# A path relative to where the script was started from.
[ -z "${BASELINE_BIN:-}" ] || BASELINE_BIN=$(realpath "$BASELINE_BIN")
cd "$(dirname "$0")/.."
REQUESTS=${REQUESTS:-10000}
WARMUP=${WARMUP:-2000}
PROFILE=${PROFILE:-release}
ONLY=${ONLY:-}
# A `baseline-` scenario is wanted with the one it repeats.
wanted() { [ -z "$ONLY" ] || [[ " $ONLY " == *" $1 "* ]] || [[ " $ONLY " == *" ${1/baseline-/} "* ]]; }

# shellcheck source=scripts/bench-common.sh
source scripts/bench-common.sh
need valgrind ab:apache2-utils nginx cmake
build_binaries "$PROFILE"

# Under callgrind the gateway runs about fifty times slower, and on a busy
# machine its revocation feed can fall more than the default second behind,
# when it answers 503 `auth_unavailable` as it must. The bound only decides
# that answer; the per-request work is the same with a wider one.
export MAX_STALENESS=${MAX_STALENESS:-10s}

UP_PORT=$(free_port)
write_upstream_conf "$UP_PORT"
nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" &
PIDS+=($!)
GW_PORT=$(free_port)
write_config bench-hs256 "$GW_PORT" "$(free_port)" "" > "$WORK/gateway.toml"
# The same gateway signing with its EdDSA key (an assertion needs a key
# the backend can verify with the JWKS), with an upstream that asks for
# the assertion: /assert cached per token, /bound signed per request.
write_config bench-eddsa "$GW_PORT" "$(free_port)" "" > "$WORK/assert.toml"
cat >> "$WORK/assert.toml" <<TOML

[[upstreams]]
name = "nginx-asserted"
targets = ["127.0.0.1:$UP_PORT"]
assertion = { audience = "bench-backend" }

[[routes]]
path = "/assert"
upstream = "nginx-asserted"
auth = "required"

[[routes]]
path = "/bound"
upstream = "nginx-asserted"
auth = "required"
assertion_binds_request = true
TOML
# The policy pair: the same roles, then methods and claim conditions too.
cat >> "$WORK/gateway.toml" <<'TOML'

[[routes]]
path = "/policy"
upstream = "nginx"
auth = "required"
roles = ["user"]

[[routes]]
path = "/policy-rules"
upstream = "nginx"
auth = "required"
roles = ["user"]
methods = ["GET"]
require_claims = { tenant = ["acme", "globex"], email_verified = [true] }

[[routes]]
path = "/policy-rules"
upstream = "nginx"
auth = "required"
roles = ["admin"]
methods = ["DELETE"]
TOML
# The same gateway with the audit trail on, to a file.
{ cat "$WORK/gateway.toml"; printf '\n[audit]\nenabled = true\ndestination = "%s"\n' "$WORK/audit.log"; } > "$WORK/gateway-audit.toml"
# One token per algorithm, each signed by that algorithm's key; the one
# gateway verifies them all.
declare -A TOKEN
for alg in hs256 eddsa es256 rs256; do
  write_config "bench-$alg" 1 1 "" > "$WORK/$alg.toml"
  TOKEN[$alg]=$("$BIN" token --config "$WORK/$alg.toml" --sub bench-user --roles user --ttl 1h 2>/dev/null)
done
# `portcullis token` mints no custom claims: the policy token is signed
# here, HS256 with the same key, with the claims the gateway's own carry.
POLICY_TOKEN=$(python3 - "$KEYS/test-hs256.secret" <<'PY'
import base64, hashlib, hmac, json, os, sys, time
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=")
now = int(time.time())
header = {"alg": "HS256", "typ": "at+jwt", "kid": "bench-hs256"}
claims = {"iss": "https://issuer.bench", "aud": "bench", "sub": "bench-user",
          "jti": os.urandom(16).hex(), "iat": now, "exp": now + 3600, "ver": 0,
          "roles": ["user"], "tenant": "acme", "email_verified": True}
signing = b64(json.dumps(header).encode()) + b"." + b64(json.dumps(claims).encode())
secret = open(sys.argv[1], "rb").read()
print((signing + b"." + b64(hmac.new(secret, signing, hashlib.sha256).digest())).decode())
PY
)
wait_port "$UP_PORT"

declare -A PER_REQUEST
# count NAME PORT URL_PATH [HEADER] -- COMMAND…: one proxy under callgrind.
count() {
  local name=$1 port=$2 path=$3 header=$4; shift 5
  wanted "$name" || return 0
  local out="$WORK/$name.callgrind"
  valgrind --tool=callgrind --callgrind-out-file="$out" "$@" 2>"$WORK/$name.valgrind" &
  local pid=$!
  PIDS+=("$pid")
  wait_port "$port" 600
  local ab_args=(-q -k -c 8 ${header:+-H "$header"})
  # With traces on, the export thread sends a batch up to a second after
  # its first span: waiting before zeroing and before the dump puts the
  # export of exactly the counted requests' spans in the count.
  local settle=0
  case $name in *-trace | *-trace0) settle=3 ;; esac
  ab "${ab_args[@]}" -n "$WARMUP" "http://127.0.0.1:$port$path" >/dev/null
  sleep "$settle"
  callgrind_control -z "$pid" >/dev/null 2>&1
  ab "${ab_args[@]}" -n "$REQUESTS" "http://127.0.0.1:$port$path" > "$WORK/$name.ab"
  sleep "$settle"
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

if [ -n "${BASELINE_BIN:-}" ]; then
  count baseline-none "$GW_PORT" /none "" -- "$BASELINE_BIN" serve --config "$WORK/gateway.toml"
  count baseline-hs256 "$GW_PORT" /auth "$BEARER" -- "$BASELINE_BIN" serve --config "$WORK/gateway.toml"
fi

# The access log at the default level (text, stderr to a file), as in
# the load benchmark's `-log` scenarios; the writer thread is counted too.
RUST_LOG=info count none-log "$GW_PORT" /none "" -- "$BIN" serve --config "$WORK/gateway.toml"
RUST_LOG=info count hs256-log "$GW_PORT" /auth "$BEARER" -- "$BIN" serve --config "$WORK/gateway.toml"
POLICY_BEARER="Authorization: Bearer $POLICY_TOKEN"
count policy "$GW_PORT" /policy "$POLICY_BEARER" -- "$BIN" serve --config "$WORK/gateway.toml"
count policy-rules "$GW_PORT" /policy-rules "$POLICY_BEARER" -- "$BIN" serve --config "$WORK/gateway.toml"

# The HS256 request with the assertion on, log off, against `hs256`.
count assertion "$GW_PORT" /assert "$BEARER" -- "$BIN" serve --config "$WORK/assert.toml"
count assertion-bound "$GW_PORT" /bound "$BEARER" -- "$BIN" serve --config "$WORK/assert.toml"

# Traces on, log off: every request recorded and exported (the export
# thread is counted too), then none recorded.
for ratio in 1.0 0.0; do
  suffix=trace; [ "$ratio" = 0.0 ] && suffix=trace0
  { write_config bench-hs256 "$GW_PORT" "$(free_port)" ""
    printf '\n[tracing]\nenabled = true\nendpoint = "http://127.0.0.1:%s/v1/traces"\nsample_ratio = %s\n' "$UP_PORT" "$ratio"
  } > "$WORK/gateway-$suffix.toml"
  count "none-$suffix" "$GW_PORT" /none "" -- "$BIN" serve --config "$WORK/gateway-$suffix.toml"
  count "hs256-$suffix" "$GW_PORT" /auth "$BEARER" -- "$BIN" serve --config "$WORK/gateway-$suffix.toml"
done

# A route limit on the HS256 route (`[[rate_limits]]`, key = subject,
# on the embedded store: decided in this instance's memory), at a rate
# no request reaches, against `hs256`.
{ write_config bench-hs256 "$GW_PORT" "$(free_port)" "" | sed 's|^path = "/auth"$|path = "/auth"\nrate_limit = "bench"|'
  printf '\n[[rate_limits]]\nname = "bench"\nrate = "1000000/s"\nkey = "subject"\n'
} > "$WORK/gateway-ratelimit.toml"
count hs256-ratelimit "$GW_PORT" /auth "$BEARER" -- "$BIN" serve --config "$WORK/gateway-ratelimit.toml"

# The backend's own credentials (`upstream_auth`, a fixed value from the
# environment) set on every request of the HS256 route, against `hs256`.
{ write_config bench-hs256 "$GW_PORT" "$(free_port)" "" |
    sed "s|^targets = \\[\"127.0.0.1:$UP_PORT\"\\]\$|&\\nupstream_auth = { kind = \"fixed\", env = \"BENCH_UPSTREAM_AUTH\" }|"
} > "$WORK/gateway-upstreamauth.toml"
BENCH_UPSTREAM_AUTH="Basic YmVuY2g6YmVuY2g=" count hs256-upstreamauth "$GW_PORT" /auth "$BEARER" -- \
  "$BIN" serve --config "$WORK/gateway-upstreamauth.toml"

# An API key instead of the token on the same route (`api_keys = true`;
# the key is checked in the local view, no store round trip), against
# `hs256`. The key is made through the admin API of the same gateway,
# started once outside callgrind on the same store.
if wanted hs256-apikey; then
  KEY_ADMIN=$(free_port)
  export BENCH_ADMIN_TOKEN=bench-admin-token-0123456789abcdef0123456789
  write_config bench-hs256 "$GW_PORT" "$KEY_ADMIN" 'admin_token_env = "BENCH_ADMIN_TOKEN"' |
    sed 's|^path = "/auth"$|path = "/auth"\napi_keys = true|' > "$WORK/gateway-apikey.toml"
  "$BIN" serve --config "$WORK/gateway-apikey.toml" 2>"$WORK/apikey-setup.log" &
  setup=$!
  PIDS+=("$setup")
  wait_port "$KEY_ADMIN"
  API_KEY=$(PORTCULLIS_ADMIN_TOKEN=$BENCH_ADMIN_TOKEN "$BIN" admin --url "http://127.0.0.1:$KEY_ADMIN" --json \
    api-key create --sub bench-service --roles user | python3 -c 'import json, sys; print(json.load(sys.stdin)["key"])')
  kill "$setup"; wait "$setup" 2>/dev/null || true
  count hs256-apikey "$GW_PORT" /auth "X-Api-Key: $API_KEY" -- "$BIN" serve --config "$WORK/gateway-apikey.toml"
fi

# The audit trail on (a line per request to a file, the log off); its
# writer thread is counted too.
count none-audit "$GW_PORT" /none "" -- "$BIN" serve --config "$WORK/gateway-audit.toml"
count hs256-audit "$GW_PORT" /auth "$BEARER" -- "$BIN" serve --config "$WORK/gateway-audit.toml"

# TLS keep-alive (`tls-*`: ab over https, keep-alive, 8 connections, no
# ALPN so HTTP/1.1) and HTTP/2 (`h2-*`: h2load over TLS, ALPN h2, 4
# connections × 16 streams, as in the load benchmark): the bare engine and
# its promises floor with the same certificate, and the gateway on
# `none` and HS256, log off. Each client run opens new connections, and
# a TLS handshake costs as much as some tens of requests, so a TLS count
# is the difference of two counted runs of the same client, WARMUP and
# REQUESTS requests, over the difference in requests: the handshakes
# and connection set-up cancel out (SETUP holds what they cost a run).
declare -A SETUP
# secure_client PROTO PORT URL_PATH HEADER N: N requests, the client's report on stdout.
secure_client() {
  local proto=$1 port=$2 path=$3 header=$4 n=$5
  case $proto in
    tls) ab -q -k -c 8 ${header:+-H "$header"} -n "$n" "https://127.0.0.1:$port$path" ;;
    h2) h2load -c 4 -m 16 ${header:+-H "$header"} -n "$n" "https://127.0.0.1:$port$path" ;;
  esac
}
# secure_ok PROTO N REPORT: every one of the N requests answered 2xx.
secure_ok() {
  case $1 in
    tls) grep -q "^Complete requests: *$2" "$3" && grep -q "^Failed requests: *0" "$3" && ! grep -q "^Non-2xx" "$3" ;;
    h2) grep -q "^requests: $2 total, $2 started, $2 done, $2 succeeded, 0 failed" "$3" &&
          grep -q "^status codes: $2 2xx" "$3" ;;
  esac
}
# count_secure NAME PROTO PORT URL_PATH HEADER -- COMMAND…: one proxy under callgrind.
count_secure() {
  local name=$1 proto=$2 port=$3 path=$4 header=$5; shift 6
  wanted "$name" || return 0
  local out="$WORK/$name.callgrind" run n
  valgrind --tool=callgrind --callgrind-out-file="$out" "$@" 2>"$WORK/$name.valgrind" &
  local pid=$!
  PIDS+=("$pid")
  wait_port "$port" 600
  secure_client "$proto" "$port" "$path" "$header" "$WARMUP" >/dev/null
  for run in short long; do
    n=$WARMUP; [ "$run" = long ] && n=$REQUESTS
    callgrind_control -z "$pid" >/dev/null 2>&1
    secure_client "$proto" "$port" "$path" "$header" "$n" > "$WORK/$name.$run"
    callgrind_control -d "$pid" >/dev/null 2>&1
    if ! secure_ok "$proto" "$n" "$WORK/$name.$run"; then
      echo "$name: not every request succeeded" >&2; cat "$WORK/$name.$run" >&2; exit 1
    fi
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true
  # Two dumps, each after zeroing: the short run's, then the long run's.
  local short long
  short=$(awk '/^summary:/ {s += $2} END {print s}' "$out.1")
  long=$(awk '/^summary:/ {s += $2} END {print s}' "$out.2")
  PER_REQUEST[$name]=$(awk -v s="$short" -v l="$long" -v a="$WARMUP" -v b="$REQUESTS" 'BEGIN {printf "%.0f", (l - s) / (b - a)}')
  SETUP[$name]=$(awk -v s="$short" -v a="$WARMUP" -v r="${PER_REQUEST[$name]}" 'BEGIN {printf "%.0f", s - a * r}')
}

if [ -n "$(for p in tls h2; do for s in bare bare-bearer promised promised-bearer none hs256 baseline-none baseline-hs256; do wanted "$p-$s" && echo y; done; done)" ]; then
  command -v h2load >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client >/dev/null; }
  [ "$REQUESTS" -gt "$WARMUP" ] || { echo "TLS counts need REQUESTS > WARMUP" >&2; exit 1; }
  make_tls_cert
  write_config bench-hs256 "$GW_PORT" "$(free_port)" "tls = { cert = \"$WORK/tls.crt\", key = \"$WORK/tls.pk8\" }" > "$WORK/gateway-tls.toml"
  BARE_TLS=("$BARE_BIN" "127.0.0.1:$BARE_PORT" "127.0.0.1:$UP_PORT" "$WORK/tls.crt" "$WORK/tls.pk8")
  for proto in tls h2; do
    count_secure "$proto-bare" "$proto" "$BARE_PORT" /none "" -- "${BARE_TLS[@]}"
    count_secure "$proto-bare-bearer" "$proto" "$BARE_PORT" /auth "$BEARER" -- "${BARE_TLS[@]}"
    BARE_PROMISES=1 count_secure "$proto-promised" "$proto" "$BARE_PORT" /none "" -- "${BARE_TLS[@]}"
    BARE_PROMISES=1 count_secure "$proto-promised-bearer" "$proto" "$BARE_PORT" /auth "$BEARER" -- "${BARE_TLS[@]}"
    count_secure "$proto-none" "$proto" "$GW_PORT" /none "" -- "$BIN" serve --config "$WORK/gateway-tls.toml"
    count_secure "$proto-hs256" "$proto" "$GW_PORT" /auth "$BEARER" -- "$BIN" serve --config "$WORK/gateway-tls.toml"
    if [ -n "${BASELINE_BIN:-}" ]; then
      count_secure "$proto-baseline-none" "$proto" "$GW_PORT" /none "" -- "$BASELINE_BIN" serve --config "$WORK/gateway-tls.toml"
      count_secure "$proto-baseline-hs256" "$proto" "$GW_PORT" /auth "$BEARER" -- "$BASELINE_BIN" serve --config "$WORK/gateway-tls.toml"
    fi
  done
fi

# Each scenario against the floors that got the same request: `bare` and
# `promised` for `none`, their `-bearer` runs for a request with a token.
# `× off`: a -log, -trace, -audit, -ratelimit, -upstreamauth or -apikey run against the same request with both off;
# `× policy`: policy-rules against policy; `× before`: none and hs256
# against the BASELINE_BIN build's.
printf '%-16s %14s %10s %10s %10s %10s %10s %10s\n' scenario instr/request "× bare" "× promised" "× hs256" "× off" "× policy" "× before"
for name in bare bare-bearer promised promised-bearer promised-headers promised-timeouts none hs256 baseline-none baseline-hs256 eddsa es256 rs256 none-log hs256-log \
  none-trace hs256-trace none-trace0 hs256-trace0 assertion assertion-bound policy policy-rules \
  none-audit hs256-audit hs256-ratelimit hs256-upstreamauth hs256-apikey; do
  [ -n "${PER_REQUEST[$name]:-}" ] || continue
  case $name in *-bearer) floor=-bearer ;; none | none-* | baseline-none | bare | promised*) floor="" ;; *) floor=-bearer ;; esac
  awk -v n="$name" -v v="${PER_REQUEST[$name]}" -v b="${PER_REQUEST[bare$floor]:-0}" \
    -v p="${PER_REQUEST[promised$floor]:-0}" -v h="${PER_REQUEST[hs256]:-0}" -v off="${PER_REQUEST[${name%-*}]:-0}" \
    -v pol="${PER_REQUEST[policy]:-0}" -v before="${PER_REQUEST[baseline-$name]:-0}" \
    'function r(x) { return x > 0 ? sprintf("%.3f", v / x) : "-" }
     BEGIN {printf "%-16s %14d %10s %10s %10s %10s %10s %10s\n", n, v, r(b), r(p), r(h), n ~ /-(log|trace0?|audit|ratelimit|upstreamauth|apikey)$/ ? r(off) : "-", n == "policy-rules" ? r(pol) : "-", r(before)}'
done

# The TLS and HTTP/2 rows, each against the floors of its own protocol
# that got the same request, and against the same scenario over plain
# HTTP/1.1 (`× plain`); `setup/run`: what one client run's connections
# cost beyond their requests (handshakes included); `× before`: against
# the BASELINE_BIN build's.
secure_rows=()
for proto in tls h2; do
  for s in bare bare-bearer promised promised-bearer none hs256 baseline-none baseline-hs256; do
    [ -n "${PER_REQUEST[$proto-$s]:-}" ] && secure_rows+=("$proto-$s")
  done
done
if [ ${#secure_rows[@]} -gt 0 ]; then
  printf '\n%-20s %14s %10s %10s %10s %12s %10s\n' scenario instr/request "× bare" "× promised" "× plain" setup/run "× before"
  for name in "${secure_rows[@]}"; do
    proto=${name%%-*}; plain=${name#*-}
    case $plain in *-bearer | *hs256) floor=-bearer ;; *) floor="" ;; esac
    awk -v n="$name" -v v="${PER_REQUEST[$name]}" -v b="${PER_REQUEST[$proto-bare$floor]:-0}" \
      -v p="${PER_REQUEST[$proto-promised$floor]:-0}" -v pl="${PER_REQUEST[$plain]:-0}" -v su="${SETUP[$name]}" \
      -v before="${PER_REQUEST[$proto-baseline-$plain]:-0}" \
      'function r(x) { return x > 0 ? sprintf("%.3f", v / x) : "-" }
       BEGIN {printf "%-20s %14d %10s %10s %10s %12d %10s\n", n, v, r(b), r(p), r(pl), su, r(before)}'
  done
fi
