#!/usr/bin/env python3
"""Writes the Prometheus recording and alerting rules for orchestratord.

The rules are data in this file; the YAML is its output. One input changes
them: the time scale. At scale 1 (what ships in rules/orchestrator.rules.yaml)
the windows are the real ones (5m ... 3d, a 30d SLO period). At scale N every
window, every `for:` and the period are divided by N, so a test can watch a
page fire and resolve in seconds instead of hours. Label values keep the
nominal window names (`window="1h"`), so dashboards and tests read the same
series whatever the scale.

The SLO part follows Sloth's naming (slo:sli_error:ratio_rate<window>,
slo:objective:ratio, ...) and the multi-window multi-burn-rate alerts of the
Google SRE workbook. Objectives are not constants here: each daemon exports
orchestrator_slo_objective_ratio per group and SLI, and the rules divide by
the budget it implies, so one rule serves every group.

Only the standard library is used: the end-to-end test runs this script on
machines that have nothing but Python.

Usage:
  generate_rules.py                       write the shipped file (scale 1)
  generate_rules.py --scale 60 -o FILE    write scaled rules elsewhere
  generate_rules.py --check               exit 1 if the shipped file is stale
"""

import argparse
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHIPPED = HERE / "rules" / "orchestrator.rules.yaml"

# Labels every SLO series is aggregated to: one SLO is one (host, group, slo).
SLO_BY = "host, group, slo"

ERRORS = "orchestrator_slo_errors_total"
EVENTS = "orchestrator_slo_events_total"

# The scrape job of the daemons (compose/prometheus/prometheus.yml).
JOB = "orchestrator"

# Windows of the error-ratio recordings, and the SLO period.
WINDOWS = ["5m", "30m", "1h", "2h", "6h", "1d", "3d"]
PERIOD = "30d"

# (long window, short window, burn-rate factor) per alert tier. A tier fires
# when both windows burn faster than the factor: the long window proves the
# budget loss is real, the short one that it is still happening (so the
# alert resolves minutes after a fix instead of hours).
PAGE_TIERS = [("1h", "5m", 14.4), ("6h", "30m", 6)]
TICKET_TIERS = [("3d", "6h", 1)]

# How long an SLO's objective is remembered once its daemon is no longer
# scraped: the longest short window of the page tiers.
OBJECTIVE_LOOKBACK = "30m"

# A daemon whose metrics cannot be scraped for this long pages.
DAEMON_DOWN_FOR = "2m"
# How far back a down daemon's `host` is looked up (its build_info series).
HOST_LOOKBACK = "1d"
# A peer refused in every 5m window for this long opens a ticket.
REFUSED_FOR = "15m"

_UNIT_MS = {"d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1_000, "ms": 1}
_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$")


class ScaleError(ValueError):
    """A scale that would turn some window into less than a millisecond."""


def parse_duration(text):
    """Milliseconds in a Prometheus duration made of d, h, m, s, ms parts."""
    match = _DURATION.match(text)
    if not text or not match:
        raise ValueError(f"not a duration: {text!r}")
    parts = [int(g) if g else 0 for g in match.groups()]
    return sum(n * _UNIT_MS[u] for n, u in zip(parts, ["d", "h", "m", "s", "ms"]))


def format_duration(ms):
    """The shortest d/h/m/s/ms spelling of `ms` that Prometheus parses."""
    if ms <= 0:
        raise ScaleError("a duration must be at least 1ms")
    out = []
    for unit in ["d", "h", "m", "s", "ms"]:
        n, ms = divmod(ms, _UNIT_MS[unit])
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)


def scaled(window, scale):
    """`window` divided by `scale`, rounded down to the millisecond."""
    ms = int(parse_duration(window) / scale)
    if ms < 1:
        raise ScaleError(f"scale {scale} makes {window} shorter than 1ms")
    return format_duration(ms)


def _burn(window):
    """The burn rate of one window: its error ratio over the budget."""
    return (
        f"max by ({SLO_BY}) (\n"
        f"  slo:sli_error:ratio_rate{window}\n"
        f"  / on ({SLO_BY}) group_left () slo:error_budget:ratio\n"
        f")"
    )


def _seconds(window, scale):
    """A window's length in seconds after scaling, as PromQL reads it."""
    ms = parse_duration(scaled(window, scale))
    return str(ms // 1000) if ms % 1000 == 0 else repr(ms / 1000)


def _covered(window, scale):
    """The share of `window` that has data: from the first evaluation in it
    at which the SLI had events, to now (1 once the window is all history).
    Prometheus may hold less history than a long window, or the SLI may
    have been idle for most of it."""
    return (
        f"clamp_max(\n"
        f"  (time() - min_over_time(slo:sli_active:timestamp[{scaled(window, scale)}]))\n"
        f"  / {_seconds(window, scale)},\n"
        f"  1\n"
        f")"
    )


def _guarded_burn(window, scale):
    """The burn rate of a long window, counting the part of it without data
    as clean traffic at the rate seen: burn × covered share. A 6-minute
    incident on a Prometheus with 6 minutes of history is then a 6-minute
    incident in 3 days, not 3 days of it."""
    return (
        f"{_burn(window)}\n"
        f"* on ({SLO_BY})\n"
        f"{_covered(window, scale)}"
    )


def _tiers_expr(tiers, scale):
    """`(long > f and short > f) or ...`; the value is the long window's
    burn rate of the first tier that holds. Long windows are guarded (see
    _guarded_burn), so an alert means the same on a Prometheus with a few
    minutes of history as on one with months: a 6-minute outage neither
    tickets as 3 days of burn nor keeps the 6h/30m page tier firing."""
    clauses = []
    for long_w, short_w, factor in tiers:
        long_burn = _guarded_burn(long_w, scale)
        clauses.append(
            "(\n"
            + _indent(f"(\n{_indent(long_burn)}\n) > {factor}")
            + "\nand\n"
            + _indent(f"{_burn(short_w)} > {factor}")
            + "\n)"
        )
    return "\nor\n".join(clauses)


def _indent(text, by="  "):
    return "\n".join(by + line for line in text.split("\n"))


def _tiers_text(tiers):
    return ", or ".join(f"{l} and {s} above {f}x" for l, s, f in tiers)


def slo_sli_rules(scale):
    """Error ratios per window, straight from the counters.

    A window with no events has no ratio (not NaN, not 0): idle is neither
    good nor bad. A missing error counter next to a present event counter
    counts as zero errors, because a daemon may only create the error series
    on the first error.
    """
    rules = [
        {
            "record": "slo:sli_errors:rate5m",
            "expr": (
                f"sum by ({SLO_BY}) (rate({ERRORS}[{scaled('5m', scale)}]))\n"
                f"or\n"
                f"0 * sum by ({SLO_BY}) (rate({EVENTS}[{scaled('5m', scale)}]))"
            ),
        },
        {
            "record": "slo:sli_events:rate5m",
            "expr": f"sum by ({SLO_BY}) (rate({EVENTS}[{scaled('5m', scale)}]))",
        },
    ]
    for window in WINDOWS:
        if window == "5m":
            expr = "slo:sli_errors:rate5m\n/\n(slo:sli_events:rate5m > 0)"
        else:
            w = scaled(window, scale)
            expr = (
                "(\n"
                f"  sum by ({SLO_BY}) (rate({ERRORS}[{w}]))\n"
                "  or\n"
                f"  0 * sum by ({SLO_BY}) (rate({EVENTS}[{w}]))\n"
                ")\n"
                "/\n"
                f"(sum by ({SLO_BY}) (rate({EVENTS}[{w}])) > 0)"
            )
        rules.append(
            {
                "record": f"slo:sli_error:ratio_rate{window}",
                "expr": expr,
                "labels": {"window": window},
            }
        )
    return rules


def slo_period_rules(scale):
    """The period's error ratio, weighted by events: bad events over all
    events of the period, from the counters' increases (counter resets, such
    as a daemon restart, are handled by increase()). An average of 5m ratios
    would let a quiet night weigh as much as a busy day.

    And when the SLI was active: the evaluation time whenever it had events
    in the last 5m. Its earliest value in a window is where the data in that
    window begins (see _covered)."""
    p = scaled(PERIOD, scale)
    return [
        {
            "record": "slo:sli_active:timestamp",
            "expr": "0 * (slo:sli_events:rate5m > 0) + time()",
        },
        {
            "record": f"slo:sli_error:ratio_rate{PERIOD}",
            "expr": (
                "(\n"
                f"  sum by ({SLO_BY}) (increase({ERRORS}[{p}]))\n"
                "  or\n"
                f"  0 * sum by ({SLO_BY}) (increase({EVENTS}[{p}]))\n"
                ")\n"
                "/\n"
                f"(sum by ({SLO_BY}) (increase({EVENTS}[{p}])) > 0)"
            ),
            "labels": {"window": PERIOD},
        },
    ]


def slo_meta_rules(scale):
    return [
        {
            # Read with a lookback as long as the page's longest short
            # window, so that a daemon that stops being scraped in a burn
            # does not send an all-clear at once: its SLO alerts go on from
            # the data the windows still hold (Alertmanager silences them
            # while the daemon-down page fires).
            "record": "slo:objective:ratio",
            "expr": (
                f"max by ({SLO_BY}) (\n"
                f"  last_over_time(orchestrator_slo_objective_ratio[{scaled(OBJECTIVE_LOOKBACK, scale)}])\n"
                ")"
            ),
        },
        {"record": "slo:error_budget:ratio", "expr": "1 - slo:objective:ratio"},
        {
            "record": "slo:current_burn_rate:ratio",
            "expr": _burn("5m"),
        },
        {
            "record": "slo:period_burn_rate:ratio",
            "expr": _burn(PERIOD),
        },
        {
            # The share of the period observed so far (orch_core::slo: the
            # allowance extrapolates the events seen to the whole period).
            "record": "slo:period_observed:ratio",
            "expr": _covered(PERIOD, scale),
        },
        {
            # 1 - consumed / allowance, the allowance being the budget's
            # share of the events the whole period is expected to hold:
            # 1 - period burn rate x observed share.
            "record": "slo:period_error_budget_remaining:ratio",
            "expr": (
                "1 - slo:period_burn_rate:ratio\n"
                f"* on ({SLO_BY}) slo:period_observed:ratio"
            ),
        },
    ]


def slo_alert_rules(scale):
    who = "{{ $labels.group }} on {{ $labels.host }}"
    pace = '{{ $value | printf "%.1f" }}x'
    return [
        {
            "alert": "OrchestratorSLOBudgetBurnFast",
            "expr": _tiers_expr(PAGE_TIERS, scale),
            "labels": {"severity": "page"},
            "annotations": {
                "summary": f"{who}: {{{{ $labels.slo }}}} SLO burning its error budget fast",
                "description": (
                    f"Group {{{{ $labels.group }}}} on host {{{{ $labels.host }}}} spends its "
                    f"{PERIOD} {{{{ $labels.slo }}}} error budget {pace} faster than "
                    f"sustainable ({_tiers_text(PAGE_TIERS)}); at 14.4x the whole "
                    f"budget is gone in about 2 days."
                ),
            },
        },
        {
            "alert": "OrchestratorSLOBudgetBurnSlow",
            "expr": _tiers_expr(TICKET_TIERS, scale),
            "labels": {"severity": "ticket"},
            "annotations": {
                "summary": f"{who}: {{{{ $labels.slo }}}} SLO slowly burning its error budget",
                "description": (
                    f"Group {{{{ $labels.group }}}} on host {{{{ $labels.host }}}} spends its "
                    f"{PERIOD} {{{{ $labels.slo }}}} error budget {pace} faster than "
                    f"sustainable ({_tiers_text(TICKET_TIERS)}); kept up, the budget "
                    f"runs out before the {PERIOD} period ends."
                ),
            },
        },
    ]


def daemon_alert_rules(scale):
    """Daemons Prometheus cannot scrape. `up` carries only the target's
    instance and job; the daemon's `host` comes from the last build_info it
    exported, so that Alertmanager can silence that host's other alerts. A
    daemon never scraped since Prometheus started alerts without a host."""
    down = f'max by (instance, job) (up{{job="{JOB}"}}) == 0'
    host = (
        "topk by (instance, job) (\n"
        "  1,\n"
        "  max by (instance, job, host) (\n"
        f"    last_over_time(orchestrator_build_info{{job=\"{JOB}\"}}[{scaled(HOST_LOOKBACK, scale)}])\n"
        "  )\n"
        ")"
    )
    return [
        {
            "alert": "OrchestratorDaemonDown",
            "expr": (
                f"(\n  {down}\n)\n"
                f"* on (instance, job) group_left (host)\n"
                f"{host}\n"
                f"or on (instance, job)\n"
                f"{down}"
            ),
            "for": scaled(DAEMON_DOWN_FOR, scale),
            "labels": {"severity": "page"},
            "annotations": {
                "summary": (
                    "orchestratord {{ with $labels.host }}on {{ . }} {{ end }}"
                    "at {{ $labels.instance }} cannot be scraped"
                ),
                "description": (
                    "Prometheus has not scraped the metrics of orchestratord at "
                    "{{ $labels.instance }}{{ with $labels.host }} (host {{ . }}){{ end }} for more than "
                    f"{DAEMON_DOWN_FOR}: the host, the daemon or its metrics listener is "
                    "down, or the network to it. Its agents and SLOs are not watched "
                    "meanwhile; their alerts are silenced while this one fires."
                ),
            },
        },
        {
            "alert": "OrchestratorDaemonsAbsent",
            "expr": f'absent(up{{job="{JOB}"}})',
            "for": scaled(DAEMON_DOWN_FOR, scale),
            "labels": {"severity": "page"},
            "annotations": {
                "summary": f"Prometheus scrapes no orchestratord (job {JOB})",
                "description": (
                    f"Prometheus has had no target in job {JOB} for more than "
                    f"{DAEMON_DOWN_FOR}: the targets file is empty or missing, or the "
                    "scrape configuration changed. No host of the fleet is watched."
                ),
            },
        },
        {
            "alert": "OrchestratorPeerRefused",
            "expr": (
                "sum by (host, peer, reason) (\n"
                f"  rate(orchestrator_federation_refused_total[{scaled('5m', scale)}])\n"
                ") > 0"
            ),
            "for": scaled(REFUSED_FOR, scale),
            "labels": {"severity": "ticket"},
            "annotations": {
                "summary": "{{ $labels.host }} keeps refusing peer {{ $labels.peer }} ({{ $labels.reason }})",
                "description": (
                    "The daemon on host {{ $labels.host }} has refused peer "
                    "{{ $labels.peer }} ({{ $labels.reason }}) in every 5m window for "
                    f"more than {REFUSED_FOR}: a key, role or version that does not "
                    "match, or someone trying keys."
                ),
            },
        },
    ]


def fleet_alert_rules(scale):
    return [
        {
            "alert": "OrchestratorAgentCrashLooping",
            "expr": (
                "max by (host, group, agent, replica) (orchestrator_agent_crashlooping) == 1"
            ),
            "for": scaled("5m", scale),
            "labels": {"severity": "ticket"},
            "annotations": {
                "summary": (
                    "{{ $labels.group }}/{{ $labels.agent }} replica {{ $labels.replica }} "
                    "on {{ $labels.host }} is crash-looping"
                ),
                "description": (
                    "Agent {{ $labels.agent }} (replica {{ $labels.replica }}) of group "
                    "{{ $labels.group }} on host {{ $labels.host }} restarted more often "
                    "than its crash-loop limit allows; the daemon backs off and holds "
                    "the agents that depend on it until it stays healthy."
                ),
            },
        },
        {
            "alert": "OrchestratorGroupNotReady",
            "expr": (
                "max by (host, group) (orchestrator_group_started) == 1\n"
                "unless on (host, group)\n"
                "max by (host, group) (orchestrator_group_ready) == 1"
            ),
            "for": scaled("10m", scale),
            "labels": {"severity": "ticket"},
            "annotations": {
                "summary": "Group {{ $labels.group }} on {{ $labels.host }} is started but not ready",
                "description": (
                    "Group {{ $labels.group }} on host {{ $labels.host }} was started "
                    "more than 10m ago and not all of its agents are running and healthy."
                ),
            },
        },
        {
            "alert": "OrchestratorPeerDown",
            "expr": "max by (host, peer) (orchestrator_peer_up) == 0",
            "for": scaled("2m", scale),
            "labels": {"severity": "page"},
            "annotations": {
                "summary": "{{ $labels.host }} has lost peer {{ $labels.peer }}",
                "description": (
                    "The daemon on host {{ $labels.host }} has had no heartbeat from "
                    "peer {{ $labels.peer }} for more than 2m: that host, its daemon "
                    "or the network between them is down."
                ),
            },
        },
        {
            "alert": "OrchestratorGPUMemoryNearlyFull",
            "expr": (
                "(\n"
                "  max by (host, gpu, uuid) (orchestrator_gpu_memory_used_bytes)\n"
                "  / on (host, gpu, uuid)\n"
                "  (max by (host, gpu, uuid) (orchestrator_gpu_memory_total_bytes) > 0)\n"
                ") > 0.9"
            ),
            "for": scaled("10m", scale),
            "labels": {"severity": "ticket"},
            "annotations": {
                "summary": "GPU {{ $labels.gpu }} on {{ $labels.host }} is over 90% memory",
                "description": (
                    "GPU {{ $labels.gpu }} ({{ $labels.uuid }}) on host {{ $labels.host }} "
                    "has {{ $value | humanizePercentage }} of its memory in use; "
                    "a new slice or a growing agent may fail to allocate."
                ),
            },
        },
    ]


def rule_groups(scale):
    # One group for everything SLO, in dependency order: rules of a group
    # run one after the other at the same instant, each seeing the results
    # of those before it, while separate groups run on their own schedules
    # and would read each other's results one evaluation late.
    slo = (
        slo_sli_rules(scale)
        + slo_period_rules(scale)
        + slo_meta_rules(scale)
        + slo_alert_rules(scale)
    )
    return {
        "groups": [
            {"name": "orchestrator-slo", "rules": slo},
            {
                "name": "orchestrator-alerts",
                "rules": daemon_alert_rules(scale) + fleet_alert_rules(scale),
            },
        ]
    }


# --- YAML output -----------------------------------------------------------
# A small emitter for the shapes above (maps, lists, strings, numbers): it
# keeps expressions as literal blocks so the shipped file reads like
# hand-written rules.

_PLAIN = re.compile(r"^[A-Za-z][A-Za-z0-9_:.\-]*$")
_RESERVED = {"true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"}


def _scalar(value):
    if isinstance(value, bool) or value is None:
        raise TypeError(f"unsupported value {value!r}")
    if isinstance(value, (int, float)):
        return repr(value)
    if _PLAIN.match(value) and value.lower() not in _RESERVED:
        return value
    return json.dumps(value)


def _emit(value, indent, out):
    pad = " " * indent
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, (dict, list)):
                out.append(f"{pad}{key}:")
                _emit(item, indent + 2, out)
            elif isinstance(item, str) and "\n" in item:
                out.append(f"{pad}{key}: |-")
                out.extend(f"{pad}  {line}" if line else "" for line in item.split("\n"))
            else:
                out.append(f"{pad}{key}: {_scalar(item)}")
    elif isinstance(value, list):
        for item in value:
            lines = []
            _emit(item, indent + 2, lines)
            # The first line of a list item sits after its dash.
            lines[0] = f"{pad}- {lines[0][indent + 2:]}"
            out.extend(lines)
    else:
        raise TypeError(f"unsupported value {value!r}")


def render(scale):
    header = [
        "# Prometheus rules for orchestratord: SLO recordings (Sloth naming),",
        "# multi-window multi-burn-rate alerts, and fleet alerts.",
        f"# Generated by compose/prometheus/generate_rules.py at time scale {scale:g}:",
        "# edit the script, not this file, and run it again.",
    ]
    lines = []
    _emit(rule_groups(scale), 0, lines)
    return "\n".join(header + lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="divide every window and `for:` by this (default 1: the shipped rules)",
    )
    parser.add_argument(
        "-o", "--output", type=Path, help=f"where to write (default {SHIPPED.relative_to(HERE.parent.parent)})"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="compare the shipped file with what scale 1 generates; exit 1 if they differ",
    )
    args = parser.parse_args(argv)
    if args.scale <= 0:
        parser.error("--scale must be positive")
    try:
        text = render(args.scale)
    except ScaleError as err:
        parser.error(str(err))

    if args.check:
        if args.scale != 1 or args.output:
            parser.error("--check compares the shipped file at scale 1; drop --scale/--output")
        current = SHIPPED.read_text() if SHIPPED.exists() else None
        if current != text:
            print(
                f"{SHIPPED} is not what generate_rules.py writes; run "
                "compose/prometheus/generate_rules.py and commit the result",
                file=sys.stderr,
            )
            return 1
        print(f"{SHIPPED.name} is current")
        return 0

    target = args.output or SHIPPED
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
