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

# shellcheck source=../py-venv.sh
. "$here/../py-venv.sh"
ensure_venv "$venv" "nvidia-ml-py==$NVIDIA_ML_PY_VERSION" "gpustat==$GPUSTAT_VERSION"
echo "$venv/bin/python"
