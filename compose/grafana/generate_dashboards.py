#!/usr/bin/env python3
"""Writes the Grafana dashboards for orchestratord (dashboards/*.json).

Four dashboards, all reading Prometheus through a `datasource` template
variable: the fleet overview, one host, GPU slices, and group SLOs. They
are data in this file and JSON in dashboards/ (Grafana 10/11 schema), so
every panel gets the same data source wiring and layout rules, and a new
panel is one line here. A dashboard edited in Grafana's UI can still be
exported and compared, but the source of truth is this script.

Only the standard library is used.

Usage:
  generate_dashboards.py           write dashboards/*.json
  generate_dashboards.py --check   exit 1 if any file there is stale
"""

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT_DIR = HERE / "dashboards"

DS = {"type": "prometheus", "uid": "${datasource}"}
SCHEMA_VERSION = 39  # Grafana 10.4 / 11.x
GRID_WIDTH = 24

# Selectors every query filters by; the variables are regexes (`.+` = all).
H = 'host=~"$host"'
HG = 'host=~"$host", group=~"$group"'
HGS = 'host=~"$host", group=~"$group", slo=~"$slo"'


# --- panels ----------------------------------------------------------------


def target(expr, legend="", table=False, ref="A"):
    t = {"datasource": DS, "expr": expr, "refId": ref}
    if table:
        t.update({"format": "table", "instant": True, "range": False})
    else:
        t.update({"legendFormat": legend or "__auto", "range": True})
    return t


def _targets(queries, table=False):
    """`queries` is one expression, or a list of (expr, legend) pairs."""
    if isinstance(queries, str):
        queries = [(queries, "")]
    return [target(e, l, table, chr(ord("A") + i)) for i, (e, l) in enumerate(queries)]


def _thresholds(*steps):
    """steps: (value, colour) after a base colour, e.g. ("green", (1, "red"))."""
    base, *rest = steps
    return {
        "mode": "absolute",
        "steps": [{"color": base, "value": None}] + [{"color": c, "value": v} for v, c in rest],
    }


def timeseries(title, queries, unit="short", w=12, h=8, description="", stack=False, min_zero=True):
    defaults = {"unit": unit, "custom": {"fillOpacity": 10, "showPoints": "never"}}
    if stack:
        defaults["custom"]["stacking"] = {"mode": "normal", "group": "A"}
    if min_zero:
        defaults["min"] = 0
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "targets": _targets(queries),
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "_size": (w, h),
    }


def stat(title, queries, unit="short", w=4, h=4, thresholds=("green",), description="", mappings=None, text_mode="auto"):
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "targets": _targets(queries),
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "thresholds": _thresholds(*thresholds),
                "mappings": mappings or [],
                "color": {"mode": "thresholds"},
            },
            "overrides": [],
        },
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "none",
            "textMode": text_mode,
            "justifyMode": "auto",
            "orientation": "auto",
        },
        "_size": (w, h),
    }


def bargauge(title, queries, unit="short", w=12, h=8, thresholds=("green",), minmax=(0, None), description=""):
    defaults = {"unit": unit, "thresholds": _thresholds(*thresholds), "color": {"mode": "thresholds"}}
    if minmax[0] is not None:
        defaults["min"] = minmax[0]
    if minmax[1] is not None:
        defaults["max"] = minmax[1]
    return {
        "type": "bargauge",
        "title": title,
        "description": description,
        "targets": _targets(queries),
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "orientation": "horizontal",
            "displayMode": "gradient",
            "showUnfilled": True,
        },
        "_size": (w, h),
    }


# Scrape labels that say nothing to an operator in a table.
_HIDDEN = {"Time": True, "__name__": True, "instance": True, "job": True}


def table(title, queries, w=12, h=8, hide_value=False, rename=None, unit="short", description="", mappings=None):
    """An instant-query table. Several queries are merged on their common
    labels, each value column named by the query's second element."""
    hidden = dict(_HIDDEN)
    if hide_value:
        hidden["Value"] = True
    rename = dict(rename or {})
    transformations = []
    if not isinstance(queries, str):
        transformations.append({"id": "merge", "options": {}})
        rename.update({f"Value #{chr(ord('A') + i)}": name for i, (_, name) in enumerate(queries)})
    transformations.append({"id": "organize", "options": {"excludeByName": hidden, "renameByName": rename}})
    return {
        "type": "table",
        "title": title,
        "description": description,
        "targets": _targets(queries, table=True),
        "fieldConfig": {
            "defaults": {"unit": unit, "mappings": mappings or [], "custom": {"align": "auto"}},
            "overrides": [],
        },
        "options": {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}},
        "transformations": transformations,
        "_size": (w, h),
    }


def row(title):
    return {"type": "row", "title": title, "collapsed": False, "panels": [], "_size": (GRID_WIDTH, 1)}


UP_DOWN = [
    {"type": "value", "options": {"0": {"text": "down", "color": "red"}, "1": {"text": "up", "color": "green"}}}
]
YES_NO = [
    {"type": "value", "options": {"0": {"text": "no", "color": "green"}, "1": {"text": "yes", "color": "red"}}}
]


# --- variables -------------------------------------------------------------


def datasource_var():
    return {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "hide": 0,
        "includeAll": False,
        "multi": False,
        "options": [],
        "refresh": 1,
        "regex": "",
    }


def query_var(name, label, query, multi=True):
    """A variable filled from label values; `All` is the regex `.+`, so
    every query can use `=~"$name"` whatever is selected."""
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "definition": query,
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "current": {},
        "hide": 0,
        "includeAll": multi,
        "allValue": ".+" if multi else None,
        "multi": multi,
        "options": [],
        "refresh": 2,
        "regex": "",
        "sort": 1,
    }


HOST_ALL = query_var("host", "Host", "label_values(orchestrator_build_info, host)")
HOST_ONE = query_var("host", "Host", "label_values(orchestrator_build_info, host)", multi=False)
SLO_GROUP = query_var("group", "Group", 'label_values(orchestrator_slo_objective_ratio{host=~"$host"}, group)')
SLO_NAME = query_var("slo", "SLO", 'label_values(orchestrator_slo_objective_ratio{host=~"$host", group=~"$group"}, slo)')


# --- layout and assembly ---------------------------------------------------


def layout(panels):
    """Places panels left to right, wrapping at the grid width; a row starts
    a new line. Ids follow the order."""
    x = y = line_h = 0
    placed = []
    for pid, panel in enumerate(panels, start=1):
        w, h = panel.pop("_size")
        if panel["type"] == "row" or x + w > GRID_WIDTH:
            x, y, line_h = 0, y + line_h, 0
        panel["gridPos"] = {"h": h, "w": w, "x": x, "y": y}
        panel["id"] = pid
        if panel["type"] != "row":
            panel["datasource"] = DS
        x += w
        line_h = max(line_h, h)
        if panel["type"] == "row":
            x, y, line_h = 0, y + h, 0
        placed.append(panel)
    return placed


def annotation(name, expr, color, title, text):
    """A Prometheus annotation: a mark wherever `expr` has a value."""
    return {
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "enable": True,
        "hide": False,
        "iconColor": color,
        "name": name,
        "expr": expr,
        "step": "30s",
        "titleFormat": title,
        "textFormat": text,
        "tagKeys": "host",
        "useValueForTime": False,
    }


def dashboard(uid, title, description, variables, panels, annotations=()):
    return {
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
            + list(annotations)
        },
        "description": description,
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [
            {
                "type": "dashboards",
                "tags": ["orchestrator"],
                "asDropdown": True,
                "title": "Orchestrator",
                "includeVars": True,
                "keepTime": True,
            }
        ],
        "panels": layout(panels),
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "tags": ["orchestrator"],
        "templating": {"list": [datasource_var()] + variables},
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "title": title,
        "uid": uid,
        "version": 1,
        "weekStart": "",
    }


# --- the dashboards --------------------------------------------------------

NOT_READY = (
    f'max by (host, group) (orchestrator_group_started{{{H}}}) == 1 '
    f'unless on (host, group) max by (host, group) (orchestrator_group_ready{{{H}}}) == 1'
)


def fleet():
    return dashboard(
        "orchestrator-fleet",
        "Orchestrator / Fleet overview",
        "Every host: groups ready, agents up and crash-looping, peers, GPUs, firing alerts.",
        [HOST_ALL],
        [
            stat("Daemons reporting", f"count(orchestrator_build_info{{{H}}})"),
            stat(
                "Groups started, not ready",
                f"count(({NOT_READY})) or vector(0)",
                thresholds=("green", (1, "red")),
            ),
            stat("Agents up", f"sum(orchestrator_agent_up{{{H}}})"),
            stat(
                "Agents crash-looping",
                f"sum(orchestrator_agent_crashlooping{{{H}}})",
                thresholds=("green", (1, "red")),
            ),
            stat(
                "Peers down",
                f"count(orchestrator_peer_up{{{H}}} == 0) or vector(0)",
                thresholds=("green", (1, "red")),
            ),
            stat("GPUs", f"count(orchestrator_gpu_info{{{H}}})"),
            row("Hosts"),
            table(
                "Daemons",
                f"orchestrator_build_info{{{H}}}",
                w=8,
                hide_value=True,
                description="One row per daemon, with its version.",
            ),
            bargauge(
                "Groups ready / started",
                [
                    (f"sum by (host) (orchestrator_group_ready{{{H}}})", "{{host}} ready"),
                    (f"sum by (host) (orchestrator_group_started{{{H}}})", "{{host}} started"),
                ],
                w=8,
            ),
            bargauge(
                "Agents up / wanted",
                [
                    (f"sum by (host) (orchestrator_agent_up{{{H}}})", "{{host}} up"),
                    (f'sum by (host) (orchestrator_group_agents{{{H}, state="wanted"}})', "{{host}} wanted"),
                ],
                w=8,
            ),
            row("Problems"),
            table(
                "Crash-looping agents",
                f"orchestrator_agent_crashlooping{{{H}}} == 1",
                w=8,
                hide_value=True,
            ),
            table("Groups started but not ready", NOT_READY, w=8, hide_value=True),
            table(
                "Firing alerts",
                f'ALERTS{{alertstate="firing", alertname=~"Orchestrator.+", {H}}}',
                w=8,
                hide_value=True,
            ),
            row("Peers and GPUs"),
            table(
                "Peers (as each host sees them)",
                f"orchestrator_peer_up{{{H}}}",
                w=8,
                mappings=UP_DOWN,
                rename={"Value": "up"},
            ),
            timeseries(
                "Peer heartbeat age",
                [(f"orchestrator_peer_heartbeat_age_seconds{{{H}}}", "{{host}} → {{peer}}")],
                unit="s",
                w=8,
            ),
            bargauge(
                "GPU memory used",
                [
                    (
                        f"orchestrator_gpu_memory_used_bytes{{{H}}} / on (host, gpu, uuid) "
                        f"orchestrator_gpu_memory_total_bytes{{{H}}}",
                        "{{host}} GPU {{gpu}}",
                    )
                ],
                unit="percentunit",
                w=8,
                thresholds=("green", (0.8, "orange"), (0.9, "red")),
                minmax=(0, 1),
            ),
        ],
    )


def host():
    return dashboard(
        "orchestrator-host",
        "Orchestrator / Host",
        "One host: its groups, agents, health checks, GPUs, peers and the daemon itself.",
        [HOST_ONE],
        [
            stat("Groups started", f"sum(orchestrator_group_started{{{H}}})"),
            stat("Groups ready", f"sum(orchestrator_group_ready{{{H}}})"),
            stat("Agents up", f"sum(orchestrator_agent_up{{{H}}})"),
            stat(
                "Agents crash-looping",
                f"sum(orchestrator_agent_crashlooping{{{H}}})",
                thresholds=("green", (1, "red")),
            ),
            stat(
                "State file write failures (1h)",
                f"sum(increase(orchestrator_state_write_failures_total{{{H}}}[1h]))",
                thresholds=("green", (1, "red")),
            ),
            stat(
                "Version",
                [(f"orchestrator_build_info{{{H}}}", "{{version}}")],
                text_mode="name",
                description="The daemon's version label.",
            ),
            row("Groups"),
            table(
                "Groups: desired and actual",
                [
                    (f"max by (group) (orchestrator_group_started{{{H}}})", "started"),
                    (f"max by (group) (orchestrator_group_ready{{{H}}})", "ready"),
                ],
                w=12,
                description="started = desired; ready = every agent running and healthy.",
            ),
            timeseries(
                "Replicas per group: wanted / running / healthy",
                [(f"orchestrator_group_agents{{{H}}}", "{{group}} {{state}}")],
                w=12,
            ),
            row("Agents"),
            table(
                "Agents up",
                f"orchestrator_agent_up{{{H}}}",
                w=12,
                mappings=UP_DOWN,
                rename={"Value": "up"},
            ),
            timeseries(
                "Replicas by state",
                [(f"sum by (state) (orchestrator_agent_state{{{H}}})", "{{state}}")],
                w=12,
                stack=True,
            ),
            timeseries(
                "Replicas per agent: wanted / running",
                [
                    (
                        f"orchestrator_agent_replicas{{{H},state=~\"wanted|running\"}}",
                        "{{group}}/{{agent}} {{state}}",
                    )
                ],
                w=12,
                description="wanted is the count after `scale` and autoscaling; the config file's count is the `file` state.",
            ),
            timeseries(
                "Autoscaler decisions",
                [
                    (
                        f"sum by (group, agent, direction, signal) (increase(orchestrator_autoscale_decisions_total{{{H}}}[$__rate_interval]))",
                        "{{group}}/{{agent}} {{direction}} on {{signal}}",
                    )
                ],
                w=12,
                description="Replica count changes made by autoscalers; the `agent-autoscaled` events say the figure and target of each.",
            ),
            timeseries(
                "Restarts",
                [
                    (
                        f"sum by (group, agent) (rate(orchestrator_agent_restarts_total{{{H}}}[$__rate_interval]))",
                        "{{group}}/{{agent}}",
                    )
                ],
                unit="ops",
                w=8,
            ),
            timeseries(
                "Failures by reason",
                [
                    (
                        f"sum by (group, agent, reason) (rate(orchestrator_agent_failures_total{{{H}}}[$__rate_interval]))",
                        "{{group}}/{{agent}} {{reason}}",
                    )
                ],
                unit="ops",
                w=8,
            ),
            timeseries(
                "Health check p99",
                [
                    (
                        "histogram_quantile(0.99, sum by (group, agent, le) "
                        f"(rate(orchestrator_agent_health_check_duration_seconds_bucket{{{H}}}[$__rate_interval])))",
                        "{{group}}/{{agent}}",
                    )
                ],
                unit="s",
                w=8,
            ),
            row("GPUs"),
            timeseries(
                "GPU memory used",
                [
                    (f"orchestrator_gpu_memory_used_bytes{{{H}}}", "GPU {{gpu}} used"),
                    (f"orchestrator_gpu_memory_total_bytes{{{H}}}", "GPU {{gpu}} total"),
                ],
                unit="bytes",
                w=12,
            ),
            timeseries(
                "GPU utilisation",
                [(f"orchestrator_gpu_utilization_ratio{{{H}}}", "GPU {{gpu}}")],
                unit="percentunit",
                w=12,
            ),
            row("Federation and the daemon"),
            table(
                "Peer state",
                f"orchestrator_peer_state{{{H}}} == 1",
                w=8,
                hide_value=True,
            ),
            timeseries(
                "Federation messages",
                [
                    (
                        f"sum by (peer, direction) (rate(orchestrator_federation_messages_total{{{H}}}[$__rate_interval]))",
                        "{{peer}} {{direction}}",
                    ),
                    (
                        f"sum by (peer) (rate(orchestrator_federation_decode_errors_total{{{H}}}[$__rate_interval]))",
                        "{{peer}} decode errors",
                    ),
                ],
                unit="ops",
                w=8,
            ),
            timeseries(
                "Reconcile time per input",
                [
                    (
                        "histogram_quantile(0.5, sum by (le) "
                        f"(rate(orchestrator_reconcile_duration_seconds_bucket{{{H}}}[$__rate_interval])))",
                        "p50",
                    ),
                    (
                        "histogram_quantile(0.99, sum by (le) "
                        f"(rate(orchestrator_reconcile_duration_seconds_bucket{{{H}}}[$__rate_interval])))",
                        "p99",
                    ),
                ],
                unit="s",
                w=8,
            ),
        ],
    )


def gpu():
    return dashboard(
        "orchestrator-gpu",
        "Orchestrator / GPU slices",
        "Who holds which GPU slice, who uses what of each GPU, MPS and MIG capacity left, GPU telemetry.",
        [HOST_ALL],
        [
            table(
                "GPUs",
                f"orchestrator_gpu_info{{{H}}}",
                w=24,
                h=6,
                hide_value=True,
                description="mig: enabled / disabled / unsupported (GeForce cards have no MIG).",
            ),
            row("Slices"),
            table(
                "Slices and their holders",
                f"orchestrator_gpu_slice_info{{{H}}}",
                w=12,
                h=10,
                hide_value=True,
                description="kind: mig, mps, exclusive or time-slice; profile: the MIG profile, "
                "memory/compute% for MPS, whole for a whole GPU.",
            ),
            bargauge(
                "Memory per slice",
                [
                    (
                        f"orchestrator_gpu_slice_memory_bytes{{{H}}}",
                        "{{host}} GPU {{gpu}} {{kind}}: {{group}}/{{agent}} #{{replica}}",
                    )
                ],
                unit="bytes",
                w=12,
                h=10,
            ),
            row("Who uses what"),
            table(
                "GPU memory used per agent",
                [
                    (f"orchestrator_agent_gpu_memory_used_bytes{{{H}}}", "used"),
                    (f"orchestrator_agent_gpu_memory_limit_bytes{{{H}}}", "limit"),
                    (f"orchestrator_agent_gpu_utilization_ratio{{{H}}}", "utilisation"),
                ],
                w=12,
                h=10,
                description="Per replica and GPU, sampled by the daemon's GPU worker from NVML's "
                "process lists: memory used, what its slice holds, and the share of the GPU it "
                "kept busy (per process where NVML gives it, else the GPU's).",
            ),
            bargauge(
                "GPU memory by holder",
                [
                    (
                        f"orchestrator_agent_gpu_memory_used_bytes{{{H}}}",
                        "{{host}} GPU {{gpu}}: {{group}}/{{agent}} #{{replica}}",
                    ),
                    (
                        f"orchestrator_gpu_unowned_memory_bytes{{{H}}}",
                        "{{host}} GPU {{gpu}}: no agent's",
                    ),
                ],
                unit="bytes",
                w=12,
                h=10,
                description="Memory held per agent replica, and by processes that are none of "
                "the host's agents (a desktop session, a stray container): what explains the free figure.",
            ),
            row("Capacity left"),
            bargauge(
                "MPS memory not promised",
                [(f"orchestrator_gpu_mps_free_memory_bytes{{{H}}}", "{{host}} GPU {{gpu}}")],
                unit="bytes",
                w=8,
            ),
            bargauge(
                "MPS compute not promised",
                [(f"orchestrator_gpu_mps_free_compute_ratio{{{H}}}", "{{host}} GPU {{gpu}}")],
                unit="percentunit",
                w=8,
                minmax=(0, 1),
                thresholds=("red", (0.1, "orange"), (0.25, "green")),
            ),
            bargauge(
                "MIG memory slices free",
                [(f"orchestrator_gpu_mig_free_memory_slices{{{H}}}", "{{host}} GPU {{gpu}}")],
                w=8,
                thresholds=("red", (1, "green")),
            ),
            row("Telemetry"),
            timeseries(
                "Memory used",
                [
                    (
                        f"orchestrator_gpu_memory_used_bytes{{{H}}} / on (host, gpu, uuid) "
                        f"orchestrator_gpu_memory_total_bytes{{{H}}}",
                        "{{host}} GPU {{gpu}}",
                    )
                ],
                unit="percentunit",
                w=12,
            ),
            timeseries(
                "Utilisation",
                [(f"orchestrator_gpu_utilization_ratio{{{H}}}", "{{host}} GPU {{gpu}}")],
                unit="percentunit",
                w=12,
            ),
            timeseries(
                "Temperature",
                [(f"orchestrator_gpu_temperature_celsius{{{H}}}", "{{host}} GPU {{gpu}}")],
                unit="celsius",
                w=12,
                min_zero=False,
            ),
            timeseries(
                "Power",
                [(f"orchestrator_gpu_power_watts{{{H}}}", "{{host}} GPU {{gpu}}")],
                unit="watt",
                w=12,
            ),
        ],
    )


def _burn_windows(windows):
    names = "|".join(windows)
    return (
        f'{{__name__=~"slo:sli_error:ratio_rate({names})", {HGS}}} '
        f"/ on (host, group, slo) group_left () slo:error_budget:ratio{{{HGS}}}"
    )


def slo():
    return dashboard(
        "orchestrator-slo",
        "Orchestrator / Group SLOs",
        "Per group and SLI: objective, error ratio per window, 30d error budget left, "
        "burn rates against the alert thresholds, firing SLO alerts.",
        [HOST_ALL, SLO_GROUP, SLO_NAME],
        [
            table(
                "Objectives",
                f"slo:objective:ratio{{{HGS}}}",
                w=8,
                unit="percentunit",
                rename={"Value": "objective"},
            ),
            bargauge(
                "Error budget left (30d)",
                [(f"slo:period_error_budget_remaining:ratio{{{HGS}}}", "{{host}} {{group}} {{slo}}")],
                unit="percentunit",
                w=8,
                minmax=(None, 1),
                thresholds=("red", (0.25, "orange"), (0.5, "green")),
            ),
            table(
                "Firing SLO alerts",
                f'ALERTS{{alertstate="firing", alertname=~"OrchestratorSLO.+", {HGS}}}',
                w=8,
                hide_value=True,
            ),
            row("Error ratio"),
            table(
                "Error ratio per window",
                f'{{__name__=~"slo:sli_error:ratio_rate.+", {HGS}}}',
                w=12,
                unit="percentunit",
                description="Bad events over all events in each window; 30d is the SLO period.",
            ),
            timeseries(
                "Error ratio: 5m, 1h, 6h, 3d",
                [(f'{{__name__=~"slo:sli_error:ratio_rate(5m|1h|6h|3d)", {HGS}}}', "{{group}} {{slo}} {{window}}")],
                unit="percentunit",
                w=12,
            ),
            row("Burn rate"),
            timeseries(
                "Page tiers (page above 14.4x on 1h and 5m, or 6x on 6h and 30m)",
                [(_burn_windows(["5m", "30m", "1h", "6h"]), "{{group}} {{slo}} {{window}}")],
                w=12,
            ),
            timeseries(
                "Ticket tier (ticket above 1x on 3d and 6h)",
                [(_burn_windows(["6h", "3d"]), "{{group}} {{slo}} {{window}}")],
                w=12,
            ),
            timeseries(
                "Current and period burn rate",
                [
                    (f"slo:current_burn_rate:ratio{{{HGS}}}", "{{group}} {{slo}} now (5m)"),
                    (f"slo:period_burn_rate:ratio{{{HGS}}}", "{{group}} {{slo}} 30d"),
                ],
                w=12,
            ),
            timeseries(
                "The daemon's own figures",
                [
                    (f'orchestrator_slo_burn_rate{{{HGS}, window="1h"}}', "{{group}} {{slo}} burn 1h"),
                    (
                        f"orchestrator_slo_error_budget_remaining_ratio{{{HGS}}}",
                        "{{group}} {{slo}} budget left",
                    ),
                ],
                w=12,
                min_zero=False,
                description="What each daemon computes itself (also shown by `orchestratorctl slo`); "
                "it should agree with the Prometheus recordings above.",
            ),
        ],
        annotations=[
            annotation(
                "Config applied",
                f"changes(orchestrator_config_generation{{{H}}}[1m]) > 0",
                "rgba(138, 184, 255, 1)",
                "{{host}}: new config generation",
                "a new config generation (apply, reload, rollback or undo)",
            ),
            annotation(
                "Rollback",
                f'orchestrator_rollout_phase{{{H}, phase="rolling_back"}} == 1',
                "rgba(242, 73, 92, 1)",
                "{{host}}: generation {{generation}} rolled back",
                "a rollout step failed and the last good generation was put back",
            ),
        ],
    )


DASHBOARDS = {"fleet": fleet, "host": host, "gpu-slices": gpu, "group-slos": slo}


def render_all():
    return {
        f"orchestrator-{name}.json": json.dumps(make(), indent=2, ensure_ascii=False) + "\n"
        for name, make in DASHBOARDS.items()
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if dashboards/ is not what this writes")
    args = parser.parse_args(argv)
    files = render_all()
    if args.check:
        stale = [n for n, text in files.items() if not (OUT_DIR / n).exists() or (OUT_DIR / n).read_text() != text]
        extra = sorted(p.name for p in OUT_DIR.glob("*.json") if p.name not in files)
        for name in stale:
            print(f"{OUT_DIR / name} is stale: run compose/grafana/generate_dashboards.py", file=sys.stderr)
        for name in extra:
            print(f"{OUT_DIR / name} is not written by generate_dashboards.py", file=sys.stderr)
        if stale or extra:
            return 1
        print(f"{len(files)} dashboards are current")
        return 0
    OUT_DIR.mkdir(exist_ok=True)
    for name, text in files.items():
        (OUT_DIR / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
