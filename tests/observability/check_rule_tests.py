#!/usr/bin/env python3
"""Checks that the promtool unit tests of the rules can fail.

Two checks on compose/prometheus:

- coverage: every alert of the shipped rules has a test where it fires and
  a test where it stays quiet (alert_rule_test entries with and without
  exp_alerts).
- mutants: each mutant is the shipped rules with one deliberate mistake (a
  threshold moved, a window dropped, a `for:` removed, a guard taken out).
  `promtool test rules` must fail on every one of them; a mutant the tests
  accept names a rule whose behaviour nothing pins down.

Needs PyYAML (tests/observability/setup.sh puts it in target/py-venv) and
promtool.

Usage: check_rule_tests.py [--promtool PATH]
"""

import argparse
import importlib.util
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
PROM_DIR = ROOT / "compose" / "prometheus"
RULES = PROM_DIR / "rules" / "orchestrator.rules.yaml"
TESTS = sorted((PROM_DIR / "tests").glob("*.yaml"))


def load_generator():
    """A fresh copy of generate_rules, so one mutant's changes cannot leak
    into the next."""
    spec = importlib.util.spec_from_file_location("generate_rules", PROM_DIR / "generate_rules.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def replace(old, new):
    """A mutant made by editing the rendered rules; it must change them."""

    def mutate(gen):
        text = gen.render(1)
        if old not in text:
            raise AssertionError(f"mutant is stale: {old!r} is not in the rules")
        return text.replace(old, new)

    return mutate


def with_data(**changes):
    """A mutant made by changing the generator's data."""

    def mutate(gen):
        for name, value in changes.items():
            setattr(gen, name, value)
        return gen.render(1)

    return mutate


def drop_lines(prefix):
    def mutate(gen):
        lines = gen.render(1).split("\n")
        kept = [l for l in lines if not l.strip().startswith(prefix)]
        if len(kept) == len(lines):
            raise AssertionError(f"mutant is stale: no line starts with {prefix!r}")
        return "\n".join(kept)

    return mutate


def unweighted_period(gen):
    """Sloth's plain average of 5m ratios instead of the event-weighted one."""

    keep = gen.slo_period_rules

    def rules(scale):
        return [r for r in keep(scale) if r["record"] != "slo:sli_error:ratio_rate30d"] + [
            {
                "record": "slo:sli_error:ratio_rate30d",
                "expr": "avg_over_time(slo:sli_error:ratio_rate5m[30d])",
                "labels": {"window": "30d"},
            }
        ]

    gen.slo_period_rules = rules
    return gen.render(1)


def unguarded(gen):
    """Long windows read as if Prometheus always held all of them."""
    gen._guarded_burn = lambda window, scale: gen._burn(window)
    return gen.render(1)


MUTANTS = [
    ("page at 10x instead of 14.4x", with_data(PAGE_TIERS=[("1h", "5m", 10), ("6h", "30m", 6)])),
    ("page at 18x instead of 14.4x", with_data(PAGE_TIERS=[("1h", "5m", 18), ("6h", "30m", 6)])),
    ("page on the 1h window alone", with_data(PAGE_TIERS=[("1h", "1h", 14.4), ("6h", "6h", 6)])),
    ("page on the 5m window alone", with_data(PAGE_TIERS=[("5m", "5m", 14.4), ("30m", "30m", 6)])),
    ("page at 4x on 6h/30m instead of 6x", with_data(PAGE_TIERS=[("1h", "5m", 14.4), ("6h", "30m", 4)])),
    ("page without the 6h/30m tier", with_data(PAGE_TIERS=[("1h", "5m", 14.4)])),
    ("ticket on the 6h window alone", with_data(TICKET_TIERS=[("6h", "6h", 1)])),
    ("ticket on the 3d window alone", with_data(TICKET_TIERS=[("3d", "3d", 1)])),
    ("ticket at 3x instead of 1x", with_data(TICKET_TIERS=[("3d", "6h", 3)])),
    ("ticket at 0.5x instead of 1x", with_data(TICKET_TIERS=[("3d", "6h", 0.5)])),
    (
        "missing error counter is no data",
        replace(
            "0 * sum by (host, group, slo) (rate(orchestrator_slo_events_total",
            "0 * sum by (host, group, slo) (rate(orchestrator_slo_errors_total",
        ),
    ),
    ("idle windows divide by zero", replace("(slo:sli_events:rate5m > 0)", "slo:sli_events:rate5m")),
    ("period ratio not weighted by events", unweighted_period),
    ("budget is the objective", replace('"1 - slo:objective:ratio"', "slo:objective:ratio")),
    ("fleet alerts without for:", drop_lines("for:")),
    ("GPU memory alert at 85%", replace(") > 0.9", ") > 0.85")),
    ("group alert ignores readiness", replace("unless on (host, group)\n", "and on (host, group)\n")),
    ("peer alert on any value", replace("(orchestrator_peer_up) == 0", "(orchestrator_peer_up) <= 1")),
    ("crash-loop alert on any value", replace("(orchestrator_agent_crashlooping) == 1", "(orchestrator_agent_crashlooping) >= 0")),
    ("long windows not guarded against missing history", unguarded),
    ("budget left without the observed share", replace("* on (host, group, slo) slo:period_observed:ratio", "* 1")),
    ("observed share from the first sample, not the first event", replace("(slo:sli_events:rate5m > 0)", "(slo:sli_events:rate5m >= 0)")),
    ("daemon down without its host", replace("group_left (host)", "group_left ()")),
    ("daemon down on a missed scrape", with_data(DAEMON_DOWN_FOR="30s")),
    ("absent on every job", replace('absent(up{job=\\"orchestrator\\"})', "absent(up)")),
    ("peer refused on one refusal", with_data(REFUSED_FOR="1m")),
    (
        "objective forgotten as soon as its daemon is",
        replace("last_over_time(orchestrator_slo_objective_ratio[30m])", "orchestrator_slo_objective_ratio"),
    ),
]


def coverage_problems():
    alerts = [
        r["alert"]
        for g in yaml.safe_load(RULES.read_text())["groups"]
        for r in g["rules"]
        if "alert" in r
    ]
    fires, quiet = set(), set()
    for path in TESTS:
        for case in yaml.safe_load(path.read_text()).get("tests", []):
            for t in case.get("alert_rule_test", []):
                (fires if t.get("exp_alerts") else quiet).add(t["alertname"])
    problems = []
    for name in alerts:
        if name not in fires:
            problems.append(f"no test where {name} fires")
        if name not in quiet:
            problems.append(f"no test where {name} stays quiet")
    return problems, len(alerts)


def promtool_passes(promtool, rules_text, workdir):
    """Runs the shipped tests against `rules_text`, laid out as in the
    repository so the tests' relative rule path finds it. Files run one at
    a time, smallest first, and the first failure ends the run: a mutant
    needs only one test to catch it."""
    if workdir.exists():
        shutil.rmtree(workdir)
    (workdir / "rules").mkdir(parents=True)
    (workdir / "rules" / RULES.name).write_text(rules_text)
    shutil.copytree(PROM_DIR / "tests", workdir / "tests")
    tests = sorted((workdir / "tests").glob("*.yaml"), key=lambda p: p.stat().st_size)
    output = []
    for test in tests:
        result = subprocess.run([promtool, "test", "rules", str(test)], capture_output=True, text=True)
        output.append(result.stdout + result.stderr)
        if result.returncode != 0:
            return False, "".join(output)
    return True, "".join(output)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--promtool", default=shutil.which("promtool") or "promtool")
    args = parser.parse_args(argv)

    problems, n_alerts = coverage_problems()
    with tempfile.TemporaryDirectory(prefix="orch-rule-mutants.") as tmp:
        ok, out = promtool_passes(args.promtool, load_generator().render(1), Path(tmp) / "shipped")
        if not ok:
            print(out, file=sys.stderr)
            problems.append("the tests fail on the unmutated rules")
        else:
            for i, (what, mutate) in enumerate(MUTANTS):
                try:
                    text = mutate(load_generator())
                except AssertionError as err:
                    problems.append(f"mutant '{what}': {err}")
                    continue
                survived, _ = promtool_passes(args.promtool, text, Path(tmp) / f"mutant{i}")
                if survived:
                    problems.append(f"mutant '{what}' passes every test")

    for p in problems:
        print(f"FAIL {p}", file=sys.stderr)
    if problems:
        return 1
    print(f"check_rule_tests: ok: {n_alerts} alerts fire and stay quiet in tests; {len(MUTANTS)} mutants caught")
    return 0


if __name__ == "__main__":
    sys.exit(main())
