#!/usr/bin/env bash
# Creates (or reuses) the Python virtual environment in which the federation
# interop check runs, and installs pyzmq into it (its wheels bundle a libzmq
# with CURVE). Idempotent: a venv that already has the pinned version is left
# untouched.
#
# Usage: tests/federation/setup-venv.sh [VENV_DIR]
#   VENV_DIR defaults to <workspace>/target/py-venv.
# Prints the venv's python interpreter path on its last line.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${1:-$root/target/py-venv}"

# Pinned so a new release cannot change what the check sees without a
# deliberate bump here.
PYZMQ_VERSION="27.1.0"

# shellcheck source=../py-venv.sh
. "$here/../py-venv.sh"
ensure_venv "$venv" "pyzmq==$PYZMQ_VERSION"
echo "$venv/bin/python"
