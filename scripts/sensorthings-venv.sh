#!/usr/bin/env bash
# Install the SensorThings API test server (django-ogc-sensorthings on SQLite) into a Python
# virtual environment: target/sensorthings-venv, or $TWINRT_STA_VENV when set.
# Idempotent: a fast no-op when the pinned versions are already installed.
# Used by tests/sensorthings_sink.rs (through tests/support/sensorthings.rs); called by
# scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned: the server and everything it pulls in (checked with `pip freeze`).
exec scripts/pinned-venv.sh "SensorThings test server" "${TWINRT_STA_VENV:-target/sensorthings-venv}" \
  'import django, sensorthings.core' \
  "django-ogc-sensorthings==1.2.0" \
  "Django==5.2.19" \
  "django-ninja==1.7.1" \
  "pydantic==2.14.4" \
  "pydantic_core==2.50.5" \
  "odata-query==0.10.0" \
  "uuid_utils==1.2.0" \
  "asgiref==3.13.0" \
  "sqlparse==0.6.1" \
  "annotated-types==0.8.0" \
  "typing-inspection==0.4.5" \
  "typing_extensions==4.16.0" \
  "python-dateutil==2.9.0.post0" \
  "six==1.17.0" \
  "sly==0.4"
