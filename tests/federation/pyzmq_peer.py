#!/usr/bin/env python3
"""A foreign federation peer, written from docs/federation.md alone.

Connects a CURVE DEALER to a daemon, subscribes with heartbeats, decodes the
daemon's heartbeats and snapshot, sends one request and reads its reply.
Prints what it decoded as one JSON object on stdout; exits 1 (with the reason
on stderr) if anything is missing or does not match the documented format.

Usage: pyzmq_peer.py ENDPOINT SERVER_PUBLIC_Z85 MY_SECRET_Z85 MY_PUBLIC_Z85 MY_NAME [REQUEST_JSON]

REQUEST_JSON is the body of the one request, a control API request
(default: '{"v": 1, "op": "status"}', which every daemon answers).
"""

import json
import struct
import sys
import time

import zmq

MAGIC = b"OF"
VERSION = 1
HEARTBEAT, SNAPSHOT, EVENTS, REQUEST, REPLY = 1, 2, 3, 4, 5
FRAMES_AFTER_HEADER = {HEARTBEAT: 4, SNAPSHOT: 4, EVENTS: 2, REQUEST: 3, REPLY: 2}
REQUEST_ID = 0x0102030405060708
DEADLINE_S = 20.0


def u64(n):
    return struct.pack(">Q", n)


def read_u64(frame):
    if len(frame) != 8:
        raise ValueError("a u64 frame is 8 bytes, got %d" % len(frame))
    return struct.unpack(">Q", frame)[0]


def decode(frames):
    """Returns (type, trace text, fields) for one message, per the spec."""
    header = frames[0]
    if len(header) < 4 or header[:2] != MAGIC:
        raise ValueError("bad header %r" % header[:4])
    if header[2] != VERSION:
        raise ValueError("unknown version %d" % header[2])
    kind = header[3]
    if kind not in FRAMES_AFTER_HEADER:
        raise ValueError("unknown type %d" % kind)
    body = frames[1:]
    if len(body) != FRAMES_AFTER_HEADER[kind]:
        raise ValueError("type %d with %d frames" % (kind, len(body)))
    trace = header[4:].decode("utf-8")
    if kind == HEARTBEAT:
        fields = {
            "host": body[0].decode("utf-8"),
            "incarnation": read_u64(body[1]),
            "sequence": read_u64(body[2]),
            "sent_at_ms": read_u64(body[3]),
        }
    elif kind == SNAPSHOT:
        fields = {
            "host": body[0].decode("utf-8"),
            "incarnation": read_u64(body[1]),
            "sequence": read_u64(body[2]),
            "body": json.loads(body[3]),
        }
    elif kind == EVENTS:
        fields = {"host": body[0].decode("utf-8"), "batch": json.loads(body[1])}
    elif kind == REQUEST:
        fields = {
            "id": read_u64(body[0]),
            "from": body[1].decode("utf-8"),
            "body": json.loads(body[2]),
        }
    else:
        fields = {"id": read_u64(body[0]), "body": json.loads(body[1])}
    return kind, trace, fields


def main(argv):
    endpoint, server_key, secret, public, name = argv[1:6]
    request = json.loads(argv[6]) if len(argv) > 6 else {"v": 1, "op": "status"}
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.curve_secretkey = secret.encode()
    sock.curve_publickey = public.encode()
    sock.curve_serverkey = server_key.encode()
    sock.connect(endpoint)

    incarnation = int(time.time() * 1000)
    sequence = 0
    next_beat = 0.0
    seen = {}
    request_sent = False
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        now = time.monotonic()
        if now >= next_beat:
            sequence += 1
            sock.send_multipart(
                [
                    MAGIC + bytes([VERSION, HEARTBEAT]),
                    name.encode(),
                    u64(incarnation),
                    u64(sequence),
                    u64(int(time.time() * 1000)),
                ]
            )
            next_beat = now + 0.1
        if "heartbeat" in seen and "snapshot" in seen and not request_sent:
            trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            sock.send_multipart(
                [
                    MAGIC + bytes([VERSION, REQUEST]) + trace.encode(),
                    u64(REQUEST_ID),
                    name.encode(),
                    json.dumps(request).encode(),
                ]
            )
            request_sent = True
        if not sock.poll(50):
            continue
        kind, trace, fields = decode(sock.recv_multipart())
        if kind == HEARTBEAT:
            seen.setdefault("heartbeat", fields)
        elif kind == SNAPSHOT:
            seen.setdefault("snapshot", fields)
        elif kind == REPLY:
            if fields["id"] != REQUEST_ID:
                raise ValueError("reply to unknown request %d" % fields["id"])
            seen["reply"] = fields["body"]
            break
    missing = [k for k in ("heartbeat", "snapshot", "reply") if k not in seen]
    if missing:
        print("pyzmq_peer: never received: %s" % ", ".join(missing), file=sys.stderr)
        return 1
    print(json.dumps(seen, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
