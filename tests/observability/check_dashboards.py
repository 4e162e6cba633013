#!/usr/bin/env python3
"""Checks every query of every panel of the Grafana dashboards.

Queries are read from the dashboard JSON itself (rows and nested panels
included), so a new panel is checked without a new test. Two passes:

- static, always: each dashboard has a `datasource` variable of type
  prometheus; every panel and every target reads through it; panel ids and
  dashboard uids are unique; every `$variable` a query uses is defined.
- live, with --prometheus URL: template variables are substituted (values
  from --var NAME=VALUE, else `.+` so a `=~"$var"` matcher matches
  everything; Grafana's interval variables get fixed defaults), each query
  runs as an instant query, and every panel whose query errors or returns
  no data is named. Variable queries (`label_values(...)`) must return
  values too, or the dropdown would be empty.

Exit status: 0 all good, 1 some check failed, 2 bad usage.
Only the standard library is used.

Usage:
  check_dashboards.py [--dashboards DIR] [--prometheus URL]
                      [--var NAME=VALUE ...] [--allow-empty REGEX ...]
"""

import argparse
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DIR = ROOT / "compose" / "grafana" / "dashboards"

# Grafana's own variables, with values that suit an instant query over a
# Prometheus that has been scraping for a minute or more.
BUILTINS = {
    "__rate_interval": "1m",
    "__interval": "1m",
    "__interval_ms": "60000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}
MATCH_ALL = ".+"

# $name, ${name}, ${name:format}, [[name]]
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(.+?)\s*,\s*)?(\w+)\s*\)\s*$")


class Problem(Exception):
    pass


def panels_of(dashboard):
    """Every panel, rows' nested panels included, rows themselves excluded."""
    out = []

    def walk(panels):
        for panel in panels or []:
            if panel.get("type") == "row":
                walk(panel.get("panels"))
            else:
                out.append(panel)

    walk(dashboard.get("panels"))
    return out


def variables_of(dashboard):
    return {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}


def _uses_datasource_var(ds):
    if isinstance(ds, dict):
        return ds.get("type") == "prometheus" and ds.get("uid") in ("${datasource}", "$datasource")
    return ds in ("${datasource}", "$datasource")


def variable_names(text):
    return [next(g for g in m.groups() if g) for m in VARIABLE.finditer(text)]


def static_problems(name, dashboard, seen_uids):
    problems = []
    uid = dashboard.get("uid")
    if not uid:
        problems.append(f"{name}: no uid")
    elif uid in seen_uids:
        problems.append(f"{name}: uid {uid!r} is also used by {seen_uids[uid]}")
    else:
        seen_uids[uid] = name
    variables = variables_of(dashboard)
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        problems.append(f"{name}: no `datasource` variable of type prometheus")
    ids = {}
    for panel in panels_of(dashboard):
        title = panel.get("title", "?")
        where = f"{name}: panel {title!r}"
        if panel.get("id") in ids:
            problems.append(f"{where}: id {panel.get('id')} is also panel {ids[panel['id']]!r}")
        ids[panel.get("id")] = title
        if not _uses_datasource_var(panel.get("datasource")):
            problems.append(f"{where}: panel data source is not ${{datasource}}")
        targets = panel.get("targets") or []
        if not targets:
            problems.append(f"{where}: no queries")
        for t in targets:
            if not _uses_datasource_var(t.get("datasource")):
                problems.append(f"{where} ({t.get('refId')}): target data source is not ${{datasource}}")
            if not t.get("expr", "").strip():
                problems.append(f"{where} ({t.get('refId')}): empty expression")
            for var in variable_names(t.get("expr", "")):
                if var not in variables and var not in BUILTINS:
                    problems.append(f"{where} ({t.get('refId')}): unknown variable ${var}")
    for var in variables.values():
        if var.get("type") == "query" and not _uses_datasource_var(var.get("datasource")):
            problems.append(f"{name}: variable {var['name']!r} does not read through ${{datasource}}")
    return problems


def substitute(expr, values):
    def one(match):
        var = next(g for g in match.groups() if g)
        if var not in values:
            raise Problem(f"unknown variable ${var}")
        return values[var]

    return VARIABLE.sub(one, expr)


def values_for(dashboard, given):
    values = dict(BUILTINS)
    for name, var in variables_of(dashboard).items():
        values[name] = "prometheus" if var.get("type") == "datasource" else MATCH_ALL
    values.update(given)
    return values


class Prometheus:
    def __init__(self, url, timeout):
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _get(self, path, params):
        query = urllib.parse.urlencode(params, doseq=True)
        try:
            with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=self.timeout) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as err:
            try:
                body = json.load(err)
            except ValueError:
                raise Problem(f"HTTP {err.code}") from None
        except (urllib.error.URLError, OSError, ValueError) as err:
            raise Problem(f"cannot query {self.url}: {err}") from None
        if body.get("status") != "success":
            raise Problem(f"{body.get('errorType', 'error')}: {body.get('error', body)}")
        return body["data"]

    def query(self, expr):
        data = self._get("/api/v1/query", {"query": expr})
        return data["result"] if data["resultType"] in ("vector", "matrix") else [data["result"]]

    def label_values(self, label, match):
        params = {"match[]": [match]} if match else {}
        return self._get(f"/api/v1/label/{urllib.parse.quote(label)}/values", params)


def live_problems(name, dashboard, prom, given, allow_empty):
    problems = []
    values = values_for(dashboard, given)
    for var in variables_of(dashboard).values():
        if var.get("type") != "query":
            continue
        query = var.get("query")
        text = query.get("query", "") if isinstance(query, dict) else (query or "")
        where = f"{name}: variable {var['name']!r}"
        match = LABEL_VALUES.match(text)
        if not match:
            problems.append(f"{where}: cannot check query {text!r} (only label_values is understood)")
            continue
        try:
            selector = substitute(match.group(1) or "", values)
            found = prom.label_values(match.group(2), selector)
        except Problem as err:
            problems.append(f"{where}: {err}: {text}")
            continue
        if not found:
            problems.append(f"{where}: no values: {text}")
    checked = 0
    for panel in panels_of(dashboard):
        title = panel.get("title", "?")
        for t in panel.get("targets") or []:
            where = f"{name}: panel {title!r} ({t.get('refId')})"
            try:
                expr = substitute(t.get("expr", ""), values)
                result = prom.query(expr)
            except Problem as err:
                problems.append(f"{where}: {err}: {t.get('expr')}")
                continue
            checked += 1
            if not result and not any(r.search(title) for r in allow_empty):
                problems.append(f"{where}: no data: {expr}")
    return problems, checked


def parse_var(text):
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.lstrip("$"), value


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dashboards", type=Path, default=DEFAULT_DIR, help="directory of dashboard JSON")
    parser.add_argument("--prometheus", help="Prometheus base URL; without it only the static pass runs")
    parser.add_argument("--var", type=parse_var, action="append", default=[], help="NAME=VALUE for a variable")
    parser.add_argument(
        "--allow-empty",
        action="append",
        default=[],
        metavar="REGEX",
        help="panels whose title matches may return no data (e.g. a problems table on a healthy fleet)",
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per HTTP request")
    args = parser.parse_args(argv)

    files = sorted(args.dashboards.glob("*.json"))
    if not files:
        print(f"check_dashboards: no dashboards in {args.dashboards}", file=sys.stderr)
        return 2
    given = dict(args.var)
    allow_empty = [re.compile(r) for r in args.allow_empty]
    prom = Prometheus(args.prometheus, args.timeout) if args.prometheus else None

    problems = []
    seen_uids = {}
    panels = queries = 0
    for path in files:
        try:
            dashboard = json.loads(path.read_text())
        except ValueError as err:
            problems.append(f"{path.name}: not JSON: {err}")
            continue
        panels += len(panels_of(dashboard))
        problems += static_problems(path.name, dashboard, seen_uids)
        if prom:
            found, checked = live_problems(path.name, dashboard, prom, given, allow_empty)
            problems += found
            queries += checked

    for p in problems:
        print(f"FAIL {p}", file=sys.stderr)
    what = f"{len(files)} dashboards, {panels} panels"
    if prom:
        what += f", {queries} queries run against {args.prometheus}"
    if problems:
        print(f"check_dashboards: {len(problems)} problem(s) in {what}", file=sys.stderr)
        return 1
    print(f"check_dashboards: ok: {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
