#!/usr/bin/env bash
# Runs a real Prometheus with the orchestrator rules against daemons (or the
# fixture exporter), on a temporary directory, and checks what it sees.
#
# Usage:
#   run_local.sh start --dir DIR [--scale N] [--interval DUR]
#                      [--alertmanager HOST:PORT]
#                      (--fixture | --target HOST:PORT ...)
#       Generates the rules at time scale N (default 1; 60 turns 1h into
#       1m), writes a Prometheus config scraping the targets every DUR
#       (default 1s), starts Prometheus on a free port of 127.0.0.1 and
#       returns once it is ready and every target has been scraped. With
#       --alertmanager, alerts are sent to that Alertmanager. With
#       --fixture, two fixture exporters (mainpc: MPS on a GeForce card;
#       pc2: MIG on an A100) are started as the targets. The URL is in
#       DIR/prometheus.url; logs are in DIR/*.log.
#   run_local.sh check-dashboards --dir DIR [check_dashboards.py options]
#       Runs every dashboard query against that Prometheus.
#   run_local.sh wait-alert --dir DIR NAME [--label K=V ...]
#                      [--state firing|resolved] [--timeout S]
#       Waits for the alert to be firing (or no longer firing).
#   run_local.sh fixture --dir DIR HOST [error_ratio=R group=G slo=S]
#       Changes a fixture exporter's error ratio (default: vision_gpu /
#       availability to 0).
#   run_local.sh stop --dir DIR
#       Stops what start started (by the pids it recorded).
#   run_local.sh selftest [--scale N]
#       start --fixture at scale N (default 60) on a temporary directory,
#       wait for the rules' first results and for the fast-burn page and the
#       crash-loop and not-ready alerts of the fixture, check the
#       dashboards, heal the fixture's burning SLO and wait for the page to
#       resolve, then stop.
#
# Needs `prometheus` and python3 (tests/observability/setup.sh installs
# Debian's prometheus package; it is never run as a service here).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
py="${PYTHON:-python3}"
prog="run_local"

die() { echo "$prog: $*" >&2; exit 1; }

free_port() {
    "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits up to $2 seconds for file $1 to exist.
wait_file() {
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        [[ -s "$1" ]] && return 0
        sleep 0.1
    done
    return 1
}

start_fixture() {
    local dir=$1 host=$2 gpus=$3 peer=$4
    "$py" "$here/fixture_exporter.py" --host "$host" --gpus "$gpus" --peer "$peer" \
        --port-file "$dir/fixture-$host.port" >"$dir/fixture-$host.log" 2>&1 &
    echo $! >"$dir/fixture-$host.pid"
    wait_file "$dir/fixture-$host.port" 10 || die "fixture exporter for $host did not start; see $dir/fixture-$host.log"
}

cmd_start() {
    local dir="" scale=1 interval=1s fixture=0 alertmanager=""
    local targets=()
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --dir) dir=$2; shift 2 ;;
            --scale) scale=$2; shift 2 ;;
            --interval) interval=$2; shift 2 ;;
            --fixture) fixture=1; shift ;;
            --target) targets+=("$2"); shift 2 ;;
            --alertmanager) alertmanager=$2; shift 2 ;;
            *) die "start: unknown argument $1" ;;
        esac
    done
    [[ -n "$dir" ]] || die "start: --dir is required"
    command -v prometheus >/dev/null 2>&1 || die "prometheus not found; run tests/observability/setup.sh"
    mkdir -p "$dir"
    [[ ! -s "$dir/prometheus.pid" ]] || die "start: $dir already has a running setup; stop it first"

    if [[ $fixture -eq 1 ]]; then
        start_fixture "$dir" mainpc mps pc2
        start_fixture "$dir" pc2 mig mainpc
        targets+=("127.0.0.1:$(cat "$dir/fixture-mainpc.port")" "127.0.0.1:$(cat "$dir/fixture-pc2.port")")
    fi
    [[ ${#targets[@]} -gt 0 ]] || die "start: give --fixture or at least one --target"

    "$py" "$root/compose/prometheus/generate_rules.py" --scale "$scale" -o "$dir/rules.yaml"
    {
        echo "global:"
        echo "  scrape_interval: $interval"
        echo "  evaluation_interval: $interval"
        echo "rule_files:"
        echo "  - $dir/rules.yaml"
        if [[ -n "$alertmanager" ]]; then
            echo "alerting:"
            echo "  alertmanagers:"
            echo "    - static_configs:"
            echo "        - targets: [\"$alertmanager\"]"
        fi
        echo "scrape_configs:"
        echo "  - job_name: orchestrator"
        echo "    static_configs:"
        echo "      - targets:"
        for t in "${targets[@]}"; do echo "          - \"$t\""; done
    } >"$dir/prometheus.yml"
    if command -v promtool >/dev/null 2>&1; then
        promtool check config "$dir/prometheus.yml" >"$dir/promtool.log" 2>&1 ||
            die "generated config is invalid: $(cat "$dir/promtool.log")"
    fi

    local port
    port=$(free_port)
    prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/data" \
        --web.listen-address="127.0.0.1:$port" >"$dir/prometheus.log" 2>&1 &
    echo $! >"$dir/prometheus.pid"
    local url="http://127.0.0.1:$port"
    echo "$url" >"$dir/prometheus.url"
    "$py" "$here/promwait.py" --timeout 60 "$url" ready >/dev/null ||
        die "prometheus did not get ready; see $dir/prometheus.log"
    "$py" "$here/promwait.py" --timeout 60 "$url" query \
        "count(up{job=\"orchestrator\"} == 1) >= ${#targets[@]}" >/dev/null ||
        die "not every target is up: ${targets[*]}; see $url/targets"
    echo "$prog: prometheus at $url scraping ${targets[*]} (rules at scale $scale)"
}

url_of() {
    [[ -s "$1/prometheus.url" ]] || die "no prometheus.url in $1: run start first"
    cat "$1/prometheus.url"
}

cmd_check_dashboards() {
    local dir=""
    local rest=()
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --dir) dir=$2; shift 2 ;;
            *) rest+=("$1"); shift ;;
        esac
    done
    [[ -n "$dir" ]] || die "check-dashboards: --dir is required"
    "$py" "$here/check_dashboards.py" --prometheus "$(url_of "$dir")" "${rest[@]}"
}

cmd_wait_alert() {
    local dir="" timeout=120
    local rest=()
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --dir) dir=$2; shift 2 ;;
            --timeout) timeout=$2; shift 2 ;;
            *) rest+=("$1"); shift ;;
        esac
    done
    [[ -n "$dir" ]] || die "wait-alert: --dir is required"
    "$py" "$here/promwait.py" --timeout "$timeout" "$(url_of "$dir")" alert "${rest[@]}"
}

cmd_fixture() {
    local dir=""
    [[ "${1:-}" == "--dir" ]] && { dir=$2; shift 2; }
    [[ -n "$dir" && $# -ge 1 ]] || die "fixture: usage: fixture --dir DIR HOST [K=V ...]"
    local host=$1
    shift
    [[ -s "$dir/fixture-$host.port" ]] || die "no fixture exporter for $host in $dir"
    local group=vision_gpu slo=availability ratio=0 kv
    for kv in "$@"; do
        case "$kv" in
            group=*) group=${kv#group=} ;;
            slo=*) slo=${kv#slo=} ;;
            error_ratio=*) ratio=${kv#error_ratio=} ;;
            *) die "fixture: unknown setting $kv" ;;
        esac
    done
    "$py" - "$(cat "$dir/fixture-$host.port")" "$group" "$slo" "$ratio" <<'PY'
import sys, urllib.parse, urllib.request
port, group, slo, ratio = sys.argv[1:]
q = urllib.parse.urlencode({"group": group, "slo": slo, "error_ratio": ratio})
urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/control?{q}", method="POST"), timeout=5)
PY
    echo "$prog: $host: $group/$slo error ratio set to $ratio"
}

# Stops one recorded process: TERM, then KILL if it lingers.
stop_pid() {
    local file=$1 pid i
    [[ -s "$file" ]] || return 0
    pid=$(cat "$file")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
}

cmd_stop() {
    local dir=""
    [[ "${1:-}" == "--dir" ]] && dir=$2
    [[ -n "$dir" ]] || die "stop: --dir is required"
    local f
    for f in "$dir"/prometheus.pid "$dir"/fixture-*.pid; do
        [[ -e "$f" ]] && stop_pid "$f"
    done
    echo "$prog: stopped what ran in $dir"
}

# The checker must name a panel that has no data and one that bypasses the
# datasource variable: a copy of the dashboards gets both, and the check of
# that copy must fail naming them.
checker_catches_broken_panels() {
    local dir=$1 out
    mkdir -p "$dir/broken"
    "$py" - "$root/compose/grafana/dashboards" "$dir/broken" <<'PY'
import copy, json, pathlib, sys
src, dst = map(pathlib.Path, sys.argv[1:])
for path in sorted(src.glob("*.json")):
    d = json.loads(path.read_text())
    if path.name == "orchestrator-host.json":
        rows = [p for p in d["panels"] if p["type"] != "row"]
        empty = copy.deepcopy(rows[0])
        empty.update(id=900, title="Broken: no such metric")
        empty["targets"][0]["expr"] = 'orchestrator_no_such_metric{host=~"$host"}'
        fixed = copy.deepcopy(rows[0])
        fixed.update(id=901, title="Broken: fixed data source")
        fixed["targets"][0]["datasource"] = {"type": "prometheus", "uid": "some-uid"}
        d["panels"] += [empty, fixed]
    (dst / path.name).write_text(json.dumps(d))
PY
    if out=$("$py" "$here/check_dashboards.py" --dashboards "$dir/broken" \
        --prometheus "$(url_of "$dir")" 2>&1); then
        die "check_dashboards passed dashboards with broken panels"
    fi
    grep -q "panel 'Broken: no such metric' (A): no data" <<<"$out" ||
        die "check_dashboards did not name the panel without data: $out"
    grep -q "panel 'Broken: fixed data source' (A): target data source is not" <<<"$out" ||
        die "check_dashboards did not name the panel bypassing \$datasource: $out"
    [[ $(grep -c '^FAIL' <<<"$out") -eq 2 ]] ||
        die "check_dashboards reported more than the two broken panels: $out"
    echo "$prog: check_dashboards names broken panels"
}

cmd_selftest() {
    local scale=60
    [[ "${1:-}" == "--scale" ]] && scale=$2
    local dir
    dir=$(mktemp -d "${TMPDIR:-/tmp}/orch-observability.XXXXXX")
    # shellcheck disable=SC2064
    trap "cmd_stop --dir '$dir' >/dev/null; rm -rf '$dir'" EXIT
    local wait=(--timeout 180)
    local page=(OrchestratorSLOBudgetBurnFast --label host=mainpc --label group=vision_gpu --label slo=availability)

    cmd_start --dir "$dir" --scale "$scale" --fixture
    # The recordings' first results, then the alerts the fixture is built
    # to raise (the ALERTS panels need them): the page fires at once, the
    # others after their scaled `for:`.
    "$py" "$here/promwait.py" --timeout 60 "$(url_of "$dir")" query 'slo:period_error_budget_remaining:ratio'
    cmd_wait_alert --dir "$dir" "${wait[@]}" "${page[@]}" --state firing
    cmd_wait_alert --dir "$dir" "${wait[@]}" OrchestratorAgentCrashLooping --label agent=EmotionEngine --state firing
    cmd_wait_alert --dir "$dir" "${wait[@]}" OrchestratorGroupNotReady --label group=emotion_system --state firing
    cmd_wait_alert --dir "$dir" "${wait[@]}" OrchestratorGPUMemoryNearlyFull --label host=mainpc --state firing
    # Healthy SLOs must not page.
    cmd_wait_alert --dir "$dir" --timeout 0 OrchestratorSLOBudgetBurnFast --label group=infra_core --state resolved

    cmd_check_dashboards --dir "$dir"
    checker_catches_broken_panels "$dir"

    cmd_fixture --dir "$dir" mainpc group=vision_gpu slo=availability error_ratio=0
    cmd_wait_alert --dir "$dir" "${wait[@]}" "${page[@]}" --state resolved
    echo "$prog: selftest passed (scale $scale)"
}

[[ $# -ge 1 ]] || { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 2; }
sub=$1
shift
case "$sub" in
    start) cmd_start "$@" ;;
    check-dashboards) cmd_check_dashboards "$@" ;;
    wait-alert) cmd_wait_alert "$@" ;;
    fixture) cmd_fixture "$@" ;;
    stop) cmd_stop "$@" ;;
    selftest) cmd_selftest "$@" ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' ;;
    *) die "unknown command $sub (start, check-dashboards, wait-alert, fixture, stop, selftest)" ;;
esac
