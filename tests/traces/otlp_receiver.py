#!/usr/bin/env python3
"""An OTLP/HTTP trace receiver for tests.

Takes `POST /v1/traces` with a protobuf `ExportTraceServiceRequest` (as the
daemon's exporter sends it, gzip or not), decodes it with the
`opentelemetry-proto` package, and appends one JSON line per span to the
output file:

    {"name": ..., "trace_id": hex, "span_id": hex, "parent_span_id": hex
     or "", "links": [{"trace_id": hex, "span_id": hex}], "attributes":
     {key: value}, "resource": {key: value}}

Bodies over MAX_BODY bytes are refused with 413 and nothing is written;
anything that does not decode gets 400.

Usage: otlp_receiver.py --out SPANS.jsonl [--port PORT] [--bind ADDR]
Prints `listening PORT` on stdout once it accepts connections (port 0: any
free port).
"""

import argparse
import gzip
import io
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

MAX_BODY = 16 * 1024 * 1024


def value_of(any_value):
    kind = any_value.WhichOneof("value")
    if kind is None:
        return None
    v = getattr(any_value, kind)
    if kind == "array_value":
        return [value_of(x) for x in v.values]
    if kind == "kvlist_value":
        return {kv.key: value_of(kv.value) for kv in v.values}
    if kind == "bytes_value":
        return v.hex()
    return v


def attrs(kvs):
    return {kv.key: value_of(kv.value) for kv in kvs}


def spans_of(request):
    for rs in request.resource_spans:
        resource = attrs(rs.resource.attributes)
        for ss in rs.scope_spans:
            for s in ss.spans:
                yield {
                    "name": s.name,
                    "trace_id": s.trace_id.hex(),
                    "span_id": s.span_id.hex(),
                    "parent_span_id": s.parent_span_id.hex(),
                    "links": [
                        {"trace_id": link.trace_id.hex(), "span_id": link.span_id.hex()}
                        for link in s.links
                    ],
                    "attributes": attrs(s.attributes),
                    "resource": resource,
                }


class Handler(BaseHTTPRequestHandler):
    out = None
    lock = threading.Lock()

    def log_message(self, *args):
        pass

    def reply(self, code, body=b"", ctype="application/x-protobuf"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        if self.path != "/v1/traces":
            return self.reply(404, b"not found", "text/plain")
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return self.reply(411, b"length required", "text/plain")
        if length < 0 or length > MAX_BODY:
            self.close_connection = True
            return self.reply(413, b"body too large", "text/plain")
        body = self.rfile.read(length)
        try:
            if self.headers.get("Content-Encoding", "") == "gzip":
                with gzip.GzipFile(fileobj=io.BytesIO(body)) as z:
                    body = z.read(MAX_BODY + 1)
                if len(body) > MAX_BODY:
                    return self.reply(413, b"body too large", "text/plain")
            request = ExportTraceServiceRequest.FromString(body)
        except (DecodeError, OSError, EOFError) as e:
            return self.reply(400, str(e).encode(), "text/plain")
        lines = [json.dumps(s, sort_keys=True) for s in spans_of(request)]
        with Handler.lock, open(Handler.out, "a", encoding="utf-8") as f:
            for line in lines:
                f.write(line + "\n")
        self.reply(200, ExportTraceServiceResponse().SerializeToString())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--bind", default="127.0.0.1")
    args = ap.parse_args()
    Handler.out = args.out
    open(args.out, "a", encoding="utf-8").close()
    server = ThreadingHTTPServer((args.bind, args.port), Handler)
    print(f"listening {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
