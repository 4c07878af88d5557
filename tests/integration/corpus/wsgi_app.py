"""The WSGI application gunicorn serves in test_corpus.py (the program under test is gunicorn).

GET anything: 200 "ok". POST /upload: answered at once, 413, without reading the body; before
answering, it waits until the whole body has reached the socket (the client ends it with
MARKER: peeked at, never read) and reports the receive queue then (SIOCINQ), which is what
gunicorn's close() will discard: "unread=N"."""

import fcntl
import socket
import struct
import termios
import time

MARKER = b"--end-of-upload--"


def _inq(sock) -> int:
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]


def app(environ, start_response):
    if environ["REQUEST_METHOD"] == "POST" and environ["PATH_INFO"] == "/upload":
        sock = environ["gunicorn.socket"]
        deadline = time.monotonic() + 10
        while True:
            n = _inq(sock)
            if n and sock.recv(n, socket.MSG_PEEK).endswith(MARKER):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("upload never arrived")
            time.sleep(0.001)
        body = f"unread={n}\n".encode()
        start_response("413 Payload Too Large", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    body = b"ok\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
