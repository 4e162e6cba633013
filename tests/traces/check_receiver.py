#!/usr/bin/env python3
"""Checks tests/traces/otlp_receiver.py: an export is decoded to JSON lines
(plain and gzip), with its resource, links and attributes; a body that is
not an export gets 400, one over the receiver's bound gets 413, and
neither writes anything.

Usage: check_receiver.py (with the venv of tests/traces/setup-venv.sh).
Exits 0 and prints `ok` when every check holds.
"""

import gzip
import json
import os
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from otlp_receiver import MAX_BODY  # noqa: E402


def export():
    r = ExportTraceServiceRequest()
    rs = r.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "host.name", "pc2"
    s = rs.scope_spans.add().spans.add()
    s.name = "agent_start"
    s.trace_id = bytes(range(16))
    s.span_id = bytes(range(8))
    s.parent_span_id = bytes(range(8, 16))
    a = s.attributes.add()
    a.key, a.value.string_value = "replica", "Base"
    link = s.links.add()
    link.trace_id, link.span_id = bytes(range(1, 17)), bytes(range(1, 9))
    return r.SerializeToString()


def post(port, body, headers=None):
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/traces", data=body, method="POST", headers=headers or {}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def declared(port, length):
    """The status of a POST that declares `length` bytes and sends none:
    the receiver answers from the header alone."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(
            f"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n".encode()
        )
        return int(c.makefile("rb").readline().split()[1])


def main():
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "spans.jsonl")
        p = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "otlp_receiver.py"), "--out", out],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            port = int(p.stdout.readline().split()[1])
            assert post(port, export()) == 200
            assert post(port, gzip.compress(export()), {"Content-Encoding": "gzip"}) == 200
            spans = [json.loads(line) for line in open(out, encoding="utf-8")]
            assert len(spans) == 2, spans
            s = spans[0]
            assert s["name"] == "agent_start", s
            assert s["trace_id"] == bytes(range(16)).hex(), s
            assert s["parent_span_id"] == bytes(range(8, 16)).hex(), s
            assert s["resource"] == {"host.name": "pc2"}, s
            assert s["attributes"] == {"replica": "Base"}, s
            assert s["links"] == [
                {"trace_id": bytes(range(1, 17)).hex(), "span_id": bytes(range(1, 9)).hex()}
            ], s
            assert spans[1] == s, spans
            assert post(port, b"\xff\xff\xff") == 400
            assert declared(port, MAX_BODY + 1) == 413
            big = gzip.compress(b"\0" * (MAX_BODY + 1))
            assert post(port, big, {"Content-Encoding": "gzip"}) == 413
            assert len(open(out, encoding="utf-8").readlines()) == 2
        finally:
            p.terminate()
            p.wait()
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
