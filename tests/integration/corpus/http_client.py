"""A requests (urllib3) client driven by lines on stdin, for test_corpus.py.

  http_client.py upload URL SIZE   POST SIZE bytes (ending in wsgi_app.MARKER), print the answer
  http_client.py reuse URL         GET, print it; on "go", GET again on the pooled connection
                                   (a Session keeps it alive) and print the answer or the error

Answers are printed as "status CODE BODY"; errors as "error TYPE: TEXT"; urllib3's own debug
log ("Starting new HTTP connection", "Resetting dropped connection") as "urllib3 MESSAGE"."""

import logging
import os
import sys

import requests

MARKER = b"--end-of-upload--"


def show(fn):
    try:
        r = fn()
        print(f"status {r.status_code} {r.text.strip()}", flush=True)
    except requests.RequestException as e:
        print(f"error {type(e).__name__}: {e}", flush=True)


logging.basicConfig(stream=sys.stdout, level=logging.DEBUG, format="urllib3 %(message)s")
mode, url = sys.argv[1], sys.argv[2]
print(f"pid={os.getpid()}", flush=True)
with requests.Session() as s:
    if mode == "upload":
        size = int(sys.argv[3])
        show(lambda: s.post(url, data=b"x" * (size - len(MARKER)) + MARKER))
    else:
        show(lambda: s.get(url))
        sys.stdin.readline()
        show(lambda: s.get(url))
print("done", flush=True)
