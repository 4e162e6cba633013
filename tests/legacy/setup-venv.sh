#!/usr/bin/env bash
# Creates (or reuses) the Python virtual environment the legacy-import
# oracle runs in, and installs PyYAML into it: the YAML loader the legacy
# launcher read its config with. Idempotent: a venv that already has the
# pinned version is left untouched, and other packages in a shared venv are
# kept. Nothing is installed system-wide.
#
# Usage: tests/legacy/setup-venv.sh [VENV_DIR]
#   VENV_DIR defaults to <workspace>/target/py-venv.
# Prints the venv's python interpreter path on its last line.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${1:-$root/target/py-venv}"

# Pinned so that a new release cannot change how the oracle reads a file
# without a deliberate bump here.
PYYAML_VERSION="6.0.2"

# shellcheck source=../py-venv.sh
. "$here/../py-venv.sh"
ensure_venv "$venv" "PyYAML==$PYYAML_VERSION"
echo "$venv/bin/python"
