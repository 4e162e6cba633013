#!/usr/bin/env bash
# Installs what the observability checks need, and nothing else:
# - Debian's prometheus package (the `prometheus` server and `promtool`)
#   and prometheus-alertmanager (`prometheus-alertmanager` and `amtool`),
#   through tests/e2e/setup-apt.sh, only if missing. Neither is started as
#   a service here: run_local.sh and the e2e tests start their own.
# - the project venv (target/py-venv by default) with PyYAML, which
#   check_rule_tests.py reads the rules and their tests with. The other
#   scripts use only the standard library.
# Idempotent: a second run installs nothing.
#
# Usage: tests/observability/setup.sh [VENV_DIR]
# Prints the venv's python on its last line.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${1:-$root/target/py-venv}"

# Pinned so that a new release cannot change what the checks read without
# a deliberate bump here.
PYYAML_VERSION="6.0.3"

bash "$root/tests/e2e/setup-apt.sh" promtool=prometheus prometheus=prometheus \
    amtool=prometheus-alertmanager prometheus-alertmanager=prometheus-alertmanager >&2

# shellcheck source=../py-venv.sh
. "$root/tests/py-venv.sh"
ensure_venv "$venv" "PyYAML==$PYYAML_VERSION" >&2
echo "$venv/bin/python"
