#!/usr/bin/env bash
# The demo on a fresh Debian machine that has only a Rust toolchain:
# installs what the build needs, builds the release binary, then runs the
# gateway in front of the built-in demo backend. It prints curl commands to
# try; Ctrl-C stops it. Arguments go to `portcullis demo` (e.g. --listen).
set -euo pipefail
cd "$(dirname "$0")/.."

# cmake builds pingora's zlib-ng; a C compiler builds it, SQLite and aws-lc.
needed=()
command -v cmake >/dev/null || needed+=(cmake)
command -v cc >/dev/null || needed+=(build-essential)
if [ ${#needed[@]} -gt 0 ]; then
  echo "installing: ${needed[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${needed[@]}" >/dev/null
fi

if ! command -v portcullis >/dev/null; then
  echo "note: the demo prints 'portcullis admin …' commands; run them as"
  echo "      target/release/portcullis admin …, or install the binary first:"
  echo "      cargo install --locked --path ."
fi
exec cargo run --release --locked -- demo "$@"
