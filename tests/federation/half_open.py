#!/usr/bin/env python3
"""Opens many TCP connections to one address and keeps them silent.

Connects COUNT sockets to HOST:PORT, never sends a byte, prints how many
connections were made (one line) once they all are, then holds them until
stdin closes. Connections the server shuts meanwhile are not reopened.

Usage: half_open.py HOST PORT COUNT
"""

import resource
import socket
import sys


def main(argv):
    host, port, count = argv[1], int(argv[2]), int(argv[3])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = count + 64
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    held = []
    for _ in range(count):
        s = socket.create_connection((host, port), timeout=5)
        held.append(s)
    print(len(held), flush=True)
    sys.stdin.read()
    for s in held:
        s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
