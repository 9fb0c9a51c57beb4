#!/usr/bin/env bash
# Make a Python virtual environment hold exactly the given pinned packages.
# Usage: scripts/pinned-venv.sh LABEL VENV_DIR PYTHON_CHECK PIN...
#   LABEL         what it is, for messages ("Pulsar client")
#   VENV_DIR      where the venv lives (created if missing)
#   PYTHON_CHECK  Python code that must run in the venv once installed (an import)
#   PIN...        pip requirements, `name==version`, the first one the package wanted
# Idempotent: a fast no-op when the venv already holds these pins (a stamp file lists them).
# Installs Debian's python3-venv when venv or ensurepip is missing.
set -euo pipefail

[ "$#" -ge 4 ] || { echo "usage: $0 LABEL VENV_DIR PYTHON_CHECK PIN..." >&2; exit 2; }
label="$1"
venv="$2"
check="$3"
shift 3
pins=("$@")

stamp="$venv/.twinrt-pins"
want="$(printf '%s\n' "${pins[@]}")"
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

command -v python3 >/dev/null 2>&1 || { echo "$label: python3 is required" >&2; exit 1; }
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  # Debian splits venv/ensurepip into python3-venv.
  echo "==> installing python3-venv"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-venv
fi
echo "==> $label: installing ${pins[0]} into $venv"
mkdir -p "$(dirname "$venv")"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${pins[@]}"
"$venv/bin/python" -c "$check"
printf '%s\n' "$want" > "$stamp"
