#!/usr/bin/env bash
# Runs every check and test, as CI does, on a fresh machine: installs what
# is missing (Debian packages, Python tools in target/py-venv, the agent
# image), then formatting, lints, and the whole test suite, including the
# end-to-end tests against the local Docker Engine.
#
# Needs: the Rust toolchain with cargo-nextest, gcc, python3, a running
# Docker Engine, and root (to install packages and for the socket
# permission test, which creates users).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*"; }
start=$(date +%s)

step "system packages"
tests/e2e/setup-apt.sh systemd-analyze=systemd docker-compose=docker-compose setpriv=util-linux useradd=passwd /usr/include/zmq.h=libzmq3-dev prometheus=prometheus promtool=prometheus amtool=prometheus-alertmanager prometheus-alertmanager=prometheus-alertmanager ip=iproute2

step "python tools (target/py-venv)"
tests/nvml/setup-venv.sh >/dev/null
tests/exports/setup-venv.sh >/dev/null
tests/legacy/setup-venv.sh >/dev/null
tests/federation/setup-venv.sh >/dev/null
tests/traces/setup-venv.sh >/dev/null

step "observability: rules, dashboards, compose file (tests/observability)"
tests/observability/check.sh --quick

step "formatting"
cargo fmt --all -- --check

step "lints"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "agent image"
scripts/build-agent-image.sh

step "build"
cargo build --workspace --all-targets --locked

step "tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked
else
    cargo test --workspace --locked
fi

printf '\nall checks passed in %ss\n' "$(( $(date +%s) - start ))"
