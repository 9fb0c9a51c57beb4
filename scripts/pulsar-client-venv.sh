#!/usr/bin/env bash
# Install Apache's Pulsar client for Python (`pulsar-client`, the C++ client inside) into a
# Python virtual environment: target/pulsar-client-venv, or $TWINRT_PULSAR_VENV when set.
# Idempotent: a fast no-op when the pinned versions are already installed.
# Used by tests/pulsar_broker.rs (it runs tests/support/pulsar_client_check.py against the
# test broker); called by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned: the client and everything it pulls in (checked with `pip freeze`).
exec scripts/pinned-venv.sh "Pulsar client" "${TWINRT_PULSAR_VENV:-target/pulsar-client-venv}" \
  'import pulsar; pulsar.Client' \
  "pulsar-client==3.13.0" \
  "certifi==2026.10.19.post1"
