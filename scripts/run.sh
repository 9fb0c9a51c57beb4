#!/usr/bin/env bash
# Build and run the main job on a Debian machine: `twinrt` with the given arguments (none:
# the embedded default, its own MQTT broker, 10 Martinique sensors, /metrics on :8001).
# The `pulsar` crate's build runs `protoc`, which a fresh Debian machine lacks: install it
# (Debian's protobuf-compiler) first if it is missing.
# Usage: scripts/run.sh [twinrt arguments], e.g. scripts/run.sh run --config config/martinique.toml
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v protoc >/dev/null 2>&1 && [ -z "${PROTOC:-}" ]; then
  echo "==> installing protobuf-compiler (protoc, for the pulsar crate's build)" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends protobuf-compiler
fi
exec cargo run --release --locked -- "$@"
