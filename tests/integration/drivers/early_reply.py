"""An HTTP-style exchange in which the server answers before reading the whole request.

    early_reply.py server --head H --body B --reply R
    early_reply.py client PORT --head H --body B --reply R

Driven line by line like tracer/workloads: the server prints "listening PORT pid=PID", reads
the H-byte head, waits until the B-byte body has arrived, and on "reply" sends an R-byte
answer; on "close" it prints "closing unread=N" (SIOCINQ, what the kernel holds unread) and
closes without reading the body, so the kernel resets the connection. The client sends head and
body, prints "sent", and on "go" reads exactly R bytes and closes: none of its calls fails.
"""

from __future__ import annotations

import argparse
import array
import fcntl
import os
import socket
import sys
import termios


def say(line: str) -> None:
    print(line, flush=True)


def wait_for(word: str) -> None:
    line = sys.stdin.readline().strip()
    if line != word:
        sys.exit(f"early_reply: expected {word!r}, got {line!r}")


def unread(sock: socket.socket) -> int:
    buf = array.array("i", [0])
    fcntl.ioctl(sock.fileno(), termios.FIONREAD, buf)
    return buf[0]


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            sys.exit(f"early_reply: EOF after {len(data)} of {n} bytes")
        data += chunk
    return data


def server(args) -> None:
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    say(f"listening {lsock.getsockname()[1]} pid={os.getpid()}")
    conn, _ = lsock.accept()
    say("accepted")
    recv_exactly(conn, args.head)
    while unread(conn) < args.body:  # the whole body is queued before we answer
        os.sched_yield()
    wait_for("reply")
    conn.sendall(b"R" * args.reply)
    say("replied")
    wait_for("close")
    say(f"closing unread={unread(conn)}")
    conn.close()
    say("closed")
    wait_for("exit")


def client(args) -> None:
    sock = socket.create_connection(("127.0.0.1", args.port))
    say(f"connected pid={os.getpid()} sport={sock.getsockname()[1]}")
    sock.sendall(b"H" * args.head + b"B" * args.body)
    say("sent")
    wait_for("go")
    got = recv_exactly(sock, args.reply)
    say(f"read {len(got)}")
    sock.close()
    say("closed")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=("server", "client"))
    p.add_argument("port", nargs="?", type=int, default=0)
    p.add_argument("--head", type=int, default=100)
    p.add_argument("--body", type=int, default=1000)
    p.add_argument("--reply", type=int, default=200)
    args = p.parse_args()
    server(args) if args.role == "server" else client(args)


if __name__ == "__main__":
    main()
