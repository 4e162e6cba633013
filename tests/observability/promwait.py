#!/usr/bin/env python3
"""Waits on a Prometheus server until something is true, or times out.

  promwait.py URL ready                      the server answers /-/ready
  promwait.py URL query EXPR                 EXPR returns at least one series
  promwait.py URL alert NAME [--label K=V ...] [--state firing|resolved]

`alert ... --state firing` waits for an alert called NAME whose labels
include every K=V given to be firing (pending does not count);
`--state resolved` waits until no such alert is firing. On success it prints
what it found; on timeout it prints what it saw last and exits 1. Only the
standard library is used.
"""

import argparse
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request


def get_json(url, timeout=5.0):
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.load(resp)


def check_ready(base, _args):
    try:
        with urllib.request.urlopen(f"{base}/-/ready", timeout=5) as resp:
            return resp.status == 200, "ready"
    except (urllib.error.URLError, OSError) as err:
        return False, f"not ready: {err}"


def check_query(base, args):
    body = get_json(f"{base}/api/v1/query?{urllib.parse.urlencode({'query': args.expr})}")
    result = body.get("data", {}).get("result", [])
    return bool(result), f"{len(result)} series for {args.expr}"


def matching_alerts(base, name, labels):
    body = get_json(f"{base}/api/v1/alerts")
    alerts = body.get("data", {}).get("alerts", [])
    return [
        a
        for a in alerts
        if a["labels"].get("alertname") == name and all(a["labels"].get(k) == v for k, v in labels.items())
    ]


def check_alert(base, args):
    found = matching_alerts(base, args.name, dict(args.label))
    firing = [a for a in found if a.get("state") == "firing"]
    seen = ", ".join(f"{a.get('state')} {json.dumps(a['labels'], sort_keys=True)}" for a in found) or "none"
    if args.state == "firing":
        return bool(firing), f"{args.name}: {seen}"
    return not firing, f"{args.name}: {seen}"


def parse_label(text):
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected K=V, got {text!r}")
    return key, value


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="Prometheus base URL, e.g. http://127.0.0.1:9090")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait (default 60)")
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between tries")
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("ready").set_defaults(check=check_ready)
    q = sub.add_parser("query")
    q.add_argument("expr")
    q.set_defaults(check=check_query)
    a = sub.add_parser("alert")
    a.add_argument("name")
    a.add_argument("--label", type=parse_label, action="append", default=[])
    a.add_argument("--state", choices=["firing", "resolved"], default="firing")
    a.set_defaults(check=check_alert)
    args = parser.parse_args(argv)

    base = args.url.rstrip("/")
    deadline = time.monotonic() + args.timeout
    last = "nothing yet"
    while True:
        try:
            ok, last = args.check(base, args)
        except (urllib.error.URLError, OSError, ValueError) as err:
            ok, last = False, f"error: {err}"
        if ok:
            print(f"promwait: {args.what}: {last}")
            return 0
        if time.monotonic() >= deadline:
            print(f"promwait: timed out after {args.timeout:g}s waiting for {args.what}; last: {last}", file=sys.stderr)
            return 1
        time.sleep(args.poll)


if __name__ == "__main__":
    sys.exit(main())
