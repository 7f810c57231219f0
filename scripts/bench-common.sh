# shellcheck shell=bash
# Shared by the benchmark scripts (sourced, not run): what they install
# and build, a work folder and the processes to stop on exit, loopback
# ports, the upstream nginx and the gateway configuration every benchmark
# uses.

# need COMMAND[:PACKAGE]…: installs, from Debian, the package of each
# command this machine lacks (the command's own name unless given).
need() {
  local missing=() wanted
  for wanted in "$@"; do
    command -v "${wanted%%:*}" >/dev/null || missing+=("${wanted#*:}")
  done
  [ ${#missing[@]} -eq 0 ] ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; }
}

# build_binaries [PROFILE]: the gateway and the bare engine in cargo's
# PROFILE (release unless given; BUILD=0 builds nothing), as $BIN and
# $BARE_BIN.
build_binaries() {
  local profile=${1:-release}
  [ "${BUILD:-1}" = 0 ] || cargo build --profile "$profile" --locked -q --bin portcullis --example bare_proxy
  # shellcheck disable=SC2034 # read by the script that sourced this
  BIN=${CARGO_TARGET_DIR:-target}/$profile/portcullis
  # shellcheck disable=SC2034 # read by the script that sourced this
  BARE_BIN=${CARGO_TARGET_DIR:-target}/$profile/examples/bare_proxy
}

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# wait_port PORT [TENTHS]: until something listens (20 s; a proxy under
# valgrind needs longer).
wait_port() { for _ in $(seq "${2:-200}"); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "nothing listens on $1" >&2; exit 1; }

# write_upstream_conf PORT: nginx answering 200 "ok" on every path, into
# $WORK/nginx/nginx.conf.
write_upstream_conf() {
  mkdir -p "$WORK/nginx"
  cat > "$WORK/nginx/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log crit;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$1;
    location / { return 200 "ok\n"; }
    # The gateway's trace export (bench-instructions.sh's -trace runs):
    # an empty 200 is an OTLP/HTTP success.
    location = /v1/traces { return 200 ""; }
  }
}
NGINX
}

KEYS="$PWD/tests/fixtures/keys"
# write_config SIGNING_KID PORT ADMIN_PORT EXTRA_SERVER_LINES: a gateway with
# every algorithm's key, an `auth = "none"` route at /none and a required
# one at /auth, in front of the nginx upstream at $UP_PORT.
write_config() { # $1 = signing key, $2 = port, $3 = admin port, $4 = extra [server] lines
  cat <<TOML
[server]
listen = ["127.0.0.1:$2"]
admin_listen = "127.0.0.1:$3"
threads = 1
shutdown_grace = "0s"
shutdown_timeout = "1s"
$4

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

[store]
url = "sqlite://$WORK/bench-$2.db"
max_staleness = "${MAX_STALENESS:-1s}"
TOML
}

# make_tls_cert: one ECDSA P-256 certificate for every TLS listener, as
# $WORK/tls.crt with its key as $WORK/tls.key (SEC1), $WORK/tls.pk8
# (PKCS#8, what the gateway and the bare engine read) and both in
# $WORK/tls.pem (HAProxy's form).
make_tls_cert() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -keyout "$WORK/tls.key" -out "$WORK/tls.crt" 2>/dev/null
  openssl pkcs8 -topk8 -nocrypt -in "$WORK/tls.key" -out "$WORK/tls.pk8"
  cat "$WORK/tls.crt" "$WORK/tls.key" > "$WORK/tls.pem"
}

# rss_kb PID: the process's resident memory, in KiB.
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

# start_upstream: the loopback nginx upstream on core 1 (the proxies run
# on core 0), listening on a free port, set as $UP_PORT.
start_upstream() {
  UP_PORT=$(free_port)
  write_upstream_conf "$UP_PORT"
  taskset -c 1 nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" &
  PIDS+=($!)
}
