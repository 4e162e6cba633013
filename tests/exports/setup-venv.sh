#!/usr/bin/env bash
# Creates (or reuses) the Python virtual environment the export checks run
# in, and installs kubernetes-validate into it: the schema validator the
# Kubernetes export is checked with. Idempotent: a venv that already has the
# pinned version is left untouched, and other packages in a shared venv are
# kept. Nothing is installed system-wide.
#
# Usage: tests/exports/setup-venv.sh [VENV_DIR]
#   VENV_DIR defaults to <workspace>/target/py-venv.
# Prints the path of the kubernetes-validate program on its last line.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${1:-$root/target/py-venv}"

# Pinned so that a new release (and its bundled schemas) cannot change what
# the checks accept without a deliberate bump here.
KUBERNETES_VALIDATE_VERSION="1.37.0"

# shellcheck source=../py-venv.sh
. "$here/../py-venv.sh"
ensure_venv "$venv" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
[ -x "$venv/bin/kubernetes-validate" ] || { echo "setup-venv.sh: kubernetes-validate missing after install" >&2; exit 1; }
echo "$venv/bin/kubernetes-validate"
