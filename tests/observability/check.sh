#!/usr/bin/env bash
# Every check of the Prometheus rules, the Grafana dashboards and the
# observability compose file; what CI runs. Installs what it needs first
# (setup.sh). Takes a few minutes, most of it check_rule_tests.py.
#
#   1. the rules and dashboards are what their generators write
#   2. promtool check rules / check config, on the shipped rules and on the
#      rules at time scale 60; amtool check-config of the Alertmanager config
#   3. promtool test rules (compose/prometheus/tests)
#   4. every alert is tested firing and quiet, and the tests catch mutants
#   5. the fixture exporter's output passes promtool check metrics
#   6. the dashboards' static checks
#   7. docker-compose config of compose/observability.compose.yaml (no pull)
#   8. the shipped rules in a real Prometheus against the fixture: the
#      fixture's burn is seen and every dashboard query returns data
#   9. run_local.sh selftest: the rules at scale 60, alerts firing and
#      resolving, the dashboard checker catching broken panels
#
# Usage: tests/observability/check.sh [--quick]
#   --quick skips 4 (mutants) and 9.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
quick=0
[[ "${1:-}" == "--quick" ]] && quick=1

py=$(bash "$here/setup.sh" | tail -n 1)
export PYTHON="$py"
prom="$root/compose/prometheus"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/orch-observability-check.XXXXXX")
trap 'bash "$here/run_local.sh" stop --dir "$tmp/shipped" >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT

step() { echo; echo "== $*"; }

step "generators are current"
"$py" "$prom/generate_rules.py" --check
"$py" "$root/compose/grafana/generate_dashboards.py" --check

step "promtool check rules / config"
promtool check rules "$prom"/rules/*.yaml
"$py" "$prom/generate_rules.py" --scale 60 -o "$tmp/rules-scale60.yaml"
promtool check rules "$tmp/rules-scale60.yaml"
promtool check config "$prom/prometheus.yml"
amtool check-config "$root/compose/alertmanager/alertmanager.yml"

step "promtool test rules"
promtool test rules "$prom"/tests/*.yaml

if [[ $quick -eq 0 ]]; then
    step "rule tests cover every alert and catch mutants"
    "$py" "$here/check_rule_tests.py"
fi

step "fixture exporter output passes promtool check metrics"
"$py" "$here/fixture_exporter.py" --host check --peer other --port-file "$tmp/fixture.port" >"$tmp/fixture.log" 2>&1 &
fixture_pid=$!
for _ in $(seq 50); do [[ -s "$tmp/fixture.port" ]] && break; sleep 0.1; done
metrics_ok=0
"$py" -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' \
    "http://127.0.0.1:$(cat "$tmp/fixture.port")/metrics" >"$tmp/fixture.metrics" &&
    promtool check metrics <"$tmp/fixture.metrics" && metrics_ok=1
kill "$fixture_pid"
wait "$fixture_pid" 2>/dev/null || true
[[ $metrics_ok -eq 1 ]] || { echo "check: fixture metrics rejected" >&2; exit 1; }
echo "fixture metrics ok ($(grep -vc '^#' "$tmp/fixture.metrics") samples)"

step "dashboards: static checks"
"$py" "$here/check_dashboards.py"

step "docker-compose config"
compose=(docker-compose)
command -v docker-compose >/dev/null 2>&1 || compose=(docker compose)
"${compose[@]}" -f "$root/compose/observability.compose.yaml" config -q
echo "observability.compose.yaml ok"

step "shipped rules in a real Prometheus, dashboards against it"
bash "$here/run_local.sh" start --dir "$tmp/shipped" --fixture
"$py" "$here/promwait.py" --timeout 60 "$(cat "$tmp/shipped/prometheus.url")" query 'slo:period_error_budget_remaining:ratio'
# The fixture burns at 20x from its start. The 5m window sees it at once;
# the page waits until the 1h window does, counting the part of it this new
# Prometheus has no data for as clean traffic (minutes, not one): the
# selftest below watches the page at scale 60.
"$py" "$here/promwait.py" --timeout 60 "$(cat "$tmp/shipped/prometheus.url")" query \
    'slo:current_burn_rate:ratio{host="mainpc", group="vision_gpu", slo="availability"} > 14.4'
bash "$here/run_local.sh" check-dashboards --dir "$tmp/shipped" --allow-empty '^Firing (SLO )?alerts$'
bash "$here/run_local.sh" stop --dir "$tmp/shipped"

if [[ $quick -eq 0 ]]; then
    step "run_local.sh selftest (rules at scale 60)"
    bash "$here/run_local.sh" selftest --scale 60
fi

echo
echo "observability checks passed"
