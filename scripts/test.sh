#!/usr/bin/env bash
# Install what the tests need on a Debian machine, then run the whole test suite.
# Usage: scripts/test.sh [extra cargo test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests run for real: Mosquitto (plain and TLS brokers) and its clients,
# Chromium (the web page), promtool, VictoriaMetrics (InfluxDB v2 write API); and `protoc`,
# which the `pulsar` crate's build runs.
scripts/debian-packages.sh mosquitto mosquitto-clients chromium prometheus victoria-metrics protobuf-compiler
# The Debian package starts a system-wide broker on :1883; the tests start their own on
# free ports and never need it, but the default configuration's embedded broker does.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet mosquitto 2>/dev/null; then
  systemctl stop mosquitto || true
fi

scripts/sensorthings-venv.sh   # the SensorThings test server (Python venv, pinned)
scripts/pulsar-client-venv.sh  # Apache's Pulsar client for the Pulsar test broker's checks (Python venv, pinned)
# CI builds once from a clean clone: incremental caches (about 2 GB here) would only take disk.
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL=0; fi
echo "==> disk free for target/: $(df -h --output=avail . | tail -1 | tr -d ' ')"
echo "==> cargo test --workspace --locked"
cargo test --workspace --locked "$@"
