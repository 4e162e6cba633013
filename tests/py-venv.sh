#!/usr/bin/env bash
# Shared by the setup-venv.sh scripts: `ensure_venv VENV NAME==VERSION...`
# creates the virtual environment if it is missing and installs the pinned
# packages unless they are already there at those versions. Nothing is
# installed system-wide; other packages in a shared venv are kept.

ensure_venv() {
    local venv=$1
    shift
    local python="${PYTHON:-python3}"
    if ! command -v "$python" >/dev/null 2>&1; then
        echo "setup-venv: $python not found; install Python 3 (with the venv module)" >&2
        return 1
    fi
    if [ ! -x "$venv/bin/python" ]; then
        "$python" -m venv "$venv"
    fi
    if ! pinned_present "$venv" "$@"; then
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
        pinned_present "$venv" "$@" || {
            echo "setup-venv: packages missing after install: $*" >&2
            return 1
        }
    fi
}

pinned_present() {
    local venv=$1
    shift
    "$venv/bin/python" - "$@" <<'PY'
import sys
from importlib import metadata
for pin in sys.argv[1:]:
    name, version = pin.split("==")
    try:
        if metadata.version(name) != version:
            sys.exit(1)
    except metadata.PackageNotFoundError:
        sys.exit(1)
PY
}
