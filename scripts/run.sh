#!/usr/bin/env bash
# Build and run the main job on a Debian machine: `twinrt` with the given arguments (none:
# the embedded default, its own MQTT broker, 10 Martinique sensors, /metrics on :8001).
# The `pulsar` crate's build runs `protoc`, which a fresh Debian machine lacks: install it
# (Debian's protobuf-compiler) first if it is missing.
# Usage: scripts/run.sh [twinrt arguments], e.g. scripts/run.sh run --config config/martinique.toml
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v protoc >/dev/null 2>&1 && [ -z "${PROTOC:-}" ]; then
  scripts/debian-packages.sh protobuf-compiler
fi
exec cargo run --release --locked -- "$@"
