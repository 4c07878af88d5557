"""Print memcached's `stats` (the text protocol's own counters): mc_stats.py HOST PORT."""

import socket
import sys

s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
s.sendall(b"stats\r\n")
answer = b""
while not answer.endswith(b"END\r\n"):
    answer += s.recv(65536)
print(answer.decode(), end="")
