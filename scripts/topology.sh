#!/usr/bin/env bash
# The docker-compose topology as plain processes on loopback: redis-server,
# the demo backend, and two portcullis replicas running
# deploy/compose/portcullis.toml with loopback addresses put in.
#
#   scripts/topology.sh up DIR     start everything; writes DIR/env
#   scripts/topology.sh down DIR   stop everything started by `up DIR`
#
# PORTCULLIS_BIN names the binary (default: target/release/portcullis).
set -euo pipefail
cd "$(dirname "$0")/.."
ACTION=${1:?usage: topology.sh up|down DIR}
DIR=${2:?usage: topology.sh up|down DIR}
BIN=${PORTCULLIS_BIN:-$PWD/target/release/portcullis}

if [ "$ACTION" = down ]; then
  # SIGINT: the fast shutdown (SIGTERM would drain for shutdown_grace).
  [ -f "$DIR/pids" ] && xargs -r kill -INT < "$DIR/pids" 2>/dev/null || true
  rm -f "$DIR/pids"
  exit 0
fi

mkdir -p "$DIR/keys"
: > "$DIR/pids"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 did not open" >&2; return 1; }

REDIS=$(free_port); BACKEND=$(free_port)
redis-server --bind 127.0.0.1 --port "$REDIS" --save "" --appendonly yes --dir "$DIR" >/dev/null 2>&1 &
echo $! >> "$DIR/pids"
"$BIN" demo-backend --listen "127.0.0.1:$BACKEND" >/dev/null 2>&1 &
echo $! >> "$DIR/pids"
[ -f "$DIR/keys/compose-eddsa.pem" ] || "$BIN" keygen --algorithm eddsa --out "$DIR/keys" --kid compose-eddsa >/dev/null 2>&1
wait_port "$REDIS"; wait_port "$BACKEND"

export PORTCULLIS_ADMIN_TOKEN=${PORTCULLIS_ADMIN_TOKEN:-topology-admin-token-0123456789abcdef}
for replica in 1 2; do
  proxy=$(free_port); admin=$(free_port)
  sed -e "s|0.0.0.0:8080|127.0.0.1:$proxy|" -e "s|0.0.0.0:9090|127.0.0.1:$admin|" \
      -e "s|redis://redis:6379/0|redis://127.0.0.1:$REDIS/0|" -e "s|backend:8081|127.0.0.1:$BACKEND|" \
      -e "s|/keys/|$DIR/keys/|" deploy/compose/portcullis.toml > "$DIR/replica-$replica.toml"
  RUST_LOG=${RUST_LOG:-warn} "$BIN" serve --config "$DIR/replica-$replica.toml" >/dev/null 2>"$DIR/replica-$replica.log" &
  echo $! >> "$DIR/pids"
  wait_port "$proxy"; wait_port "$admin"
  echo "REPLICA_${replica}=127.0.0.1:$proxy" >> "$DIR/env"
  echo "ADMIN_${replica}=127.0.0.1:$admin" >> "$DIR/env"
done
echo "ADMIN_TOKEN=$PORTCULLIS_ADMIN_TOKEN" >> "$DIR/env"
cat "$DIR/env"
