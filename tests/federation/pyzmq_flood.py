#!/usr/bin/env python3
"""A listed key abusing a daemon's federation listener, over real CURVE.

Two floods, for SECONDS each:

- `frames`: multipart messages of FRAMES frames of 4 MiB (1 GiB at 256),
  one after the other, far past what one connection may hold undelivered;
  every time the daemon cuts the connection, libzmq reconnects and the next
  message starts again.
- `requests`: heartbeats (to stay subscribed) and bursts of `status`
  requests sent without waiting for their replies, far more at once than a
  peer may have answered at a time.

Either ends early when stdin closes. Prints one JSON object on stdout when done: what was sent and, for
`requests`, how many replies were `ok` and how many `unavailable`.

Usage: pyzmq_flood.py MODE ENDPOINT SERVER_PUBLIC_Z85 MY_SECRET_Z85 MY_PUBLIC_Z85 MY_NAME SECONDS [FRAMES]
"""

import json
import os
import select
import struct
import sys
import time

import zmq

MAGIC = b"OF"
VERSION = 1
HEARTBEAT, REQUEST, REPLY = 1, 4, 5
FRAME = 4 * 1024 * 1024
BURST = 200
BURST_EVERY_S = 0.05


def u64(n):
    return struct.pack(">Q", n)


def socket_for(endpoint, server_key, secret, public, hwm):
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.sndhwm = hwm
    sock.sndtimeo = 500
    sock.curve_secretkey = secret.encode()
    sock.curve_publickey = public.encode()
    sock.curve_serverkey = server_key.encode()
    sock.connect(endpoint)
    return sock


def heartbeat(sock, name, incarnation, sequence):
    sock.send_multipart(
        [
            MAGIC + bytes([VERSION, HEARTBEAT]),
            name.encode(),
            u64(incarnation),
            u64(sequence),
            u64(int(time.time() * 1000)),
        ]
    )


def stdin_closed():
    readable, _, _ = select.select([sys.stdin], [], [], 0)
    return bool(readable) and sys.stdin.read(1) == ""


def frames(sock, name, seconds, count):
    """Each message follows a heartbeat, so that the connection carrying
    it is named (the daemon counts it against this key)."""
    big = bytes(FRAME)
    header = MAGIC + bytes([VERSION, REQUEST])
    incarnation = int(time.time() * 1000)
    sent = 0
    timed_out = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not stdin_closed():
        parts = [header, u64(sent)] + [big] * count
        try:
            heartbeat(sock, name, incarnation, sent + 1)
            sock.send_multipart(parts, copy=False)
            sent += 1
        except zmq.Again:
            timed_out += 1
    return {"messages": sent, "frames_each": count, "frame_bytes": FRAME, "timed_out": timed_out}


def requests(sock, name, seconds):
    incarnation = int(time.time() * 1000)
    sequence = 0
    next_beat = 0.0
    next_burst = 0.0
    sent = 0
    replies = {"ok": 0, "unavailable": 0, "other": 0}
    body = json.dumps({"v": 1, "op": "status"}).encode()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not stdin_closed():
        now = time.monotonic()
        try:
            if now >= next_beat:
                sequence += 1
                heartbeat(sock, name, incarnation, sequence)
                next_beat = now + 0.1
            if now >= next_burst:
                for _ in range(BURST):
                    sock.send_multipart(
                        [MAGIC + bytes([VERSION, REQUEST]), u64(sent + 1), name.encode(), body],
                        flags=zmq.NOBLOCK,
                    )
                    sent += 1
                next_burst = now + BURST_EVERY_S
        except zmq.Again:
            pass
        while sock.poll(5):
            msg = sock.recv_multipart()
            if len(msg[0]) < 4 or msg[0][3] != REPLY or len(msg) != 3:
                continue
            reply = json.loads(msg[2])
            if "ok" in reply:
                replies["ok"] += 1
            elif reply.get("err", {}).get("code") == "unavailable":
                replies["unavailable"] += 1
            else:
                replies["other"] += 1
    return {"requests": sent, "replies": replies}


def main(argv):
    mode, endpoint, server_key, secret, public, name, seconds = argv[1:8]
    # Two big messages queued at most; many requests at once.
    hwm = 2 if mode == "frames" else 10 * BURST
    sock = socket_for(endpoint, server_key, secret, public, hwm)
    if mode == "frames":
        count = int(argv[8]) if len(argv) > 8 else 256
        out = frames(sock, name, float(seconds), count)
    elif mode == "requests":
        out = requests(sock, name, float(seconds))
    else:
        print("pyzmq_flood: unknown mode %s" % mode, file=sys.stderr)
        return 2
    print(json.dumps(out, sort_keys=True), flush=True)
    # Leave without tearing libzmq down: with a huge message half sent, its
    # teardown can abort on an assertion (session_base.cpp), which would
    # fail the run for a reason that is the attacker's own.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
