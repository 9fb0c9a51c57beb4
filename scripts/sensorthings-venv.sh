#!/usr/bin/env bash
# Install the SensorThings API test server (django-ogc-sensorthings on SQLite) into a Python
# virtual environment: target/sensorthings-venv, or $TWINRT_STA_VENV when set.
# Idempotent: a fast no-op when the pinned versions are already installed.
# Used by tests/sensorthings_sink.rs (through tests/support/sensorthings.rs); called by
# scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${TWINRT_STA_VENV:-target/sensorthings-venv}"
# Pinned: the server and everything it pulls in (checked with `pip freeze`).
pins=(
  "django-ogc-sensorthings==1.2.0"
  "Django==5.2.19"
  "django-ninja==1.7.1"
  "pydantic==2.14.4"
  "pydantic_core==2.50.5"
  "odata-query==0.10.0"
  "uuid_utils==1.2.0"
  "asgiref==3.13.0"
  "sqlparse==0.6.1"
  "annotated-types==0.8.0"
  "typing-inspection==0.4.5"
  "typing_extensions==4.16.0"
  "python-dateutil==2.9.0.post0"
  "six==1.17.0"
  "sly==0.4"
)
stamp="$venv/.twinrt-pins"
want="$(printf '%s\n' "${pins[@]}")"
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

command -v python3 >/dev/null 2>&1 || { echo "sensorthings-venv: python3 is required" >&2; exit 1; }
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  # Debian splits venv/ensurepip into python3-venv.
  echo "==> installing python3-venv"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-venv
fi
echo "==> SensorThings test server: installing ${pins[0]} into $venv"
mkdir -p "$(dirname "$venv")"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${pins[@]}"
"$venv/bin/python" -c 'import django, sensorthings.core'
printf '%s\n' "$want" > "$stamp"
