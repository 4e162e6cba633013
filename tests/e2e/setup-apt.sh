#!/usr/bin/env bash
# Installs the Debian packages behind commands the tests need, and only those
# whose command is missing: running it again installs nothing.
#
# Usage: tests/e2e/setup-apt.sh [COMMAND=PACKAGE ...]
#   COMMAND is a name looked up in PATH, or an absolute path to a file.
#   default: systemd-analyze=systemd /bin/kill=procps (what
#   `systemd-analyze verify` of the orchestratord unit needs: its
#   ExecReload= runs /bin/kill, and verify checks that it exists)
#
# CI runs as root, so apt-get works directly; elsewhere `sudo -n` is used
# when it needs no password. Packages come without recommends.
set -euo pipefail

prog="setup-apt"
pairs=("$@")
[[ ${#pairs[@]} -gt 0 ]] || pairs=("systemd-analyze=systemd" "/bin/kill=procps")

# A path under a bin/ directory must be an executable file (`kill` is also a
# shell builtin, so `command -v` would find it without the file); any other
# path (a header such as /usr/include/zmq.h) must be a file.
have() {
    if [[ "$1" == */bin/* ]]; then
        [[ -f "$1" && -x "$1" ]]
    elif [[ "$1" == /* ]]; then
        [[ -f "$1" ]]
    else
        command -v "$1" >/dev/null 2>&1
    fi
}

missing=()
for pair in "${pairs[@]}"; do
    cmd="${pair%%=*}"
    pkg="${pair#*=}"
    if [[ -z "$cmd" || -z "$pkg" || "$pair" != *=* ]]; then
        echo "$prog: expected COMMAND=PACKAGE, got '$pair'" >&2
        exit 2
    fi
    have "$cmd" || missing+=("$pkg")
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "$prog: nothing to install"
    exit 0
fi

as_root=()
if [[ "$(id -u)" -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        as_root=(sudo -n)
    else
        echo "$prog: need root to install ${missing[*]} (CI runs as root)" >&2
        exit 1
    fi
fi
command -v apt-get >/dev/null 2>&1 || {
    echo "$prog: apt-get not found; install ${missing[*]} by hand" >&2
    exit 1
}

echo "$prog: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"

for pair in "${pairs[@]}"; do
    cmd="${pair%%=*}"
    have "$cmd" || {
        echo "$prog: $cmd is still missing after installing ${missing[*]}" >&2
        exit 1
    }
done
echo "$prog: installed ${missing[*]}"
