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

python="${PYTHON:-python3}"
if ! command -v "$python" >/dev/null 2>&1; then
    echo "setup-venv.sh: $python not found; install Python 3 (with the venv module)" >&2
    exit 1
fi

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi

want_ok() {
    "$venv/bin/python" - "$KUBERNETES_VALIDATE_VERSION" <<'PY'
import sys
from importlib import metadata
try:
    if metadata.version("kubernetes-validate") != sys.argv[1]:
        sys.exit(1)
except metadata.PackageNotFoundError:
    sys.exit(1)
PY
}

if ! want_ok || [ ! -x "$venv/bin/kubernetes-validate" ]; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
    want_ok || { echo "setup-venv.sh: kubernetes-validate missing after install" >&2; exit 1; }
fi

echo "$venv/bin/kubernetes-validate"
