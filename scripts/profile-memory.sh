#!/usr/bin/env bash
# Where an idle connection's memory goes (issue #24): the gateway's heap
# under valgrind's massif while IDLE connections that each served one
# request are held open, summed by allocation site and divided by the
# connections, for plain HTTP/1.1, HTTP/1.1 over TLS and HTTP/2 (the
# modes of scripts/bench-memory.sh, which measures the RSS they add up to).
#
# Massif sees only malloc, so the gateway is built with the
# `system-allocator` feature (the system allocator in place of mimalloc)
# in the release-debug profile: its library crate is rebuilt with the
# feature, and again without it by the next plain release-debug build.
# The snapshot is taken through vgdb while the connections are held.
#
# Usage: [IDLE=2000] [MODES="h1 tls h2"] [MIN_BYTES=100] [KEEP=1]
#        scripts/profile-memory.sh
# Prints, per mode, each allocation site holding at least MIN_BYTES per
# connection: bytes per connection, then the innermost frames that are
# not the allocator's (`<-` reads "called from"). KEEP=1 keeps the
# snapshots. Everything listens on 127.0.0.1, and every process started
# here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
IDLE=${IDLE:-2000}
MODES=${MODES:-h1 tls h2}
MIN_BYTES=${MIN_BYTES:-100}

# shellcheck source=scripts/bench-common.sh
source scripts/bench-common.sh
need nginx cmake valgrind openssl
cargo build --profile release-debug --locked -q --features system-allocator --bin portcullis
BIN=${CARGO_TARGET_DIR:-target}/release-debug/portcullis
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

start_upstream
wait_port "$UP_PORT"
make_tls_cert

SOURCE=2
for mode in $MODES; do
  port=$(free_port)
  extra='keepalive_timeout = "10m"'
  [ "$mode" = h1 ] || extra="$extra
tls = { cert = \"$WORK/tls.crt\", key = \"$WORK/tls.pk8\" }"
  write_config bench-hs256 "$port" "$(free_port)" "$extra" > "$WORK/$mode.toml"
  RUST_LOG=warn valgrind --tool=massif --massif-out-file="$WORK/$mode.massif" --threshold=0.1 --depth=60 \
    "$BIN" serve --config "$WORK/$mode.toml" 2>"$WORK/$mode.log" &
  proxy=$!; PIDS+=($!)
  wait_port "$port" 1200
  # First-use allocations (the upstream pool, TLS session state) first.
  python3 scripts/hold-idle.py "$mode" "$port" "127.0.0.$SOURCE" 20 </dev/null >/dev/null
  coproc HOLD { timeout 900 python3 scripts/hold-idle.py "$mode" "$port" "127.0.0.$((SOURCE + 1))" "$IDLE"; }
  SOURCE=$((SOURCE + 2))
  read -r -t 900 _ _ <&"${HOLD[0]}" || { echo "$mode: could not hold $IDLE connections" >&2; exit 1; }
  sleep 2
  timeout 300 vgdb --pid="$proxy" detailed_snapshot "$WORK/$mode.snapshot" >/dev/null
  echo >&"${HOLD[1]}"
  read -r -t 60 open <&"${HOLD[0]}"
  [ "$open" = "$IDLE" ] || { echo "$mode: only $open of $IDLE connections still open" >&2; exit 1; }
  eval "exec ${HOLD[1]}>&-"
  wait "$HOLD_PID" 2>/dev/null || true
  kill "$proxy"; wait "$proxy" 2>/dev/null || true
  echo "== $mode: heap per idle connection, $IDLE held"
  python3 scripts/heap-per-connection.py "$WORK/$mode.snapshot" "$IDLE" "$MIN_BYTES"
  echo
done
