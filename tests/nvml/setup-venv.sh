#!/usr/bin/env bash
# Creates (or reuses) the Python virtual environment that the NVML simulator's
# client checks run in, and installs the real NVML clients into it:
# nvidia-ml-py (module `pynvml`) and gpustat. Idempotent: a venv that already
# has both packages at the pinned versions is left untouched.
#
# Usage: tests/nvml/setup-venv.sh [VENV_DIR]
#   VENV_DIR defaults to <workspace>/target/py-venv.
# Prints the venv's python interpreter path on its last line.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${1:-$root/target/py-venv}"

# Pinned so a new release of either client cannot change what the checks see
# without a deliberate bump here.
NVIDIA_ML_PY_VERSION="13.615.71"
GPUSTAT_VERSION="1.1.1"

python="${PYTHON:-python3}"
if ! command -v "$python" >/dev/null 2>&1; then
    echo "setup-venv.sh: $python not found; install Python 3 (with the venv module)" >&2
    exit 1
fi

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi

want_ok() {
    "$venv/bin/python" - "$NVIDIA_ML_PY_VERSION" "$GPUSTAT_VERSION" <<'PY'
import sys
from importlib import metadata
want = {"nvidia-ml-py": sys.argv[1], "gpustat": sys.argv[2]}
for name, version in want.items():
    try:
        if metadata.version(name) != version:
            sys.exit(1)
    except metadata.PackageNotFoundError:
        sys.exit(1)
PY
}

if ! want_ok; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "nvidia-ml-py==$NVIDIA_ML_PY_VERSION" "gpustat==$GPUSTAT_VERSION"
    want_ok || { echo "setup-venv.sh: packages missing after install" >&2; exit 1; }
fi

echo "$venv/bin/python"
