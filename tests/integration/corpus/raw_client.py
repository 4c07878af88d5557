"""A plain socket client driven by lines on stdin (the victim of the memcached test).

Usage: raw_client.py HOST PORT PAYLOAD_BYTES [WRITES]
Prints "connected sport=N pid=N", sends PAYLOAD_BYTES of 'x' (no newline: one over-long
command line), prints "sent N", waits for "go", then does WRITES writes of 100 bytes, each
printed as "write 100 OK" or "write -1 ERRNO". Python ignores SIGPIPE, so EPIPE is returned."""

import errno
import os
import socket
import sys

host, port, payload = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
writes = int(sys.argv[4]) if len(sys.argv) > 4 else 3
s = socket.create_connection((host, port))
print(f"connected sport={s.getsockname()[1]} pid={os.getpid()}", flush=True)
s.sendall(b"x" * payload)
print(f"sent {payload}", flush=True)
sys.stdin.readline()
for _ in range(writes):
    try:
        print(f"write {s.send(b'y' * 100)} OK", flush=True)
    except OSError as e:
        print(f"write -1 {errno.errorcode[e.errno]}", flush=True)
s.close()
print("done", flush=True)
