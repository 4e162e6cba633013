#!/usr/bin/env bash
# Creates (or reuses) the Python virtual environment in which the OTLP
# receiver of the trace tests runs, and installs opentelemetry-proto (the
# OTLP protobuf messages) into it. Idempotent: a venv that already has the
# pinned version is left untouched.
#
# Usage: tests/traces/setup-venv.sh [VENV_DIR]
#   VENV_DIR defaults to <workspace>/target/py-venv.
# Prints the venv's python interpreter path on its last line.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${1:-$root/target/py-venv}"

# Pinned so a new release cannot change what the receiver decodes without
# a deliberate bump here.
OTEL_PROTO_VERSION="1.45.2"

# shellcheck source=../py-venv.sh
. "$here/../py-venv.sh"
ensure_venv "$venv" "opentelemetry-proto==$OTEL_PROTO_VERSION"
echo "$venv/bin/python"
