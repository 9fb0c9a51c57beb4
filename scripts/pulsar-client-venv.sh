#!/usr/bin/env bash
# Install Apache's Pulsar client for Python (`pulsar-client`, the C++ client inside) into a
# Python virtual environment: target/pulsar-client-venv, or $TWINRT_PULSAR_VENV when set.
# Idempotent: a fast no-op when the pinned versions are already installed.
# Used by tests/pulsar_broker.rs (it runs tests/support/pulsar_client_check.py against the
# test broker); called by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${TWINRT_PULSAR_VENV:-target/pulsar-client-venv}"
# Pinned: the client and everything it pulls in (checked with `pip freeze`).
pins=(
  "pulsar-client==3.13.0"
  "certifi==2026.10.19.post1"
)
stamp="$venv/.twinrt-pins"
want="$(printf '%s\n' "${pins[@]}")"
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

command -v python3 >/dev/null 2>&1 || { echo "pulsar-client-venv: python3 is required" >&2; exit 1; }
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  # Debian splits venv/ensurepip into python3-venv.
  echo "==> installing python3-venv"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-venv
fi
echo "==> Pulsar client: installing ${pins[0]} into $venv"
mkdir -p "$(dirname "$venv")"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${pins[@]}"
"$venv/bin/python" -c 'import pulsar; pulsar.Client'
printf '%s\n' "$want" > "$stamp"
