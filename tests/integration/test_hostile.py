"""Hostile input to the live tracer (issue 12): a process named with escape sequences, stdout
closed under the tracer, a full disk under `-o`. Runs the real CLI as root in private
network namespaces."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from testbed.ready import wait_ready

from .tracer_proc import STOP_TIMEOUT

pytestmark = pytest.mark.root

# 11 bytes (comm keeps 15): clear the screen, turn text red, ring the bell.
EVIL = b"\x1b[2J\x1b[31mX\x07"

# Inside the namespace: rename this task to EVIL, then close a connection with 1000 unread
# bytes (RST), then write on the peer (ECONNRESET, then EPIPE). Prints the pid and ports.
WORKLOAD = r"""
import ctypes, socket, sys, time
n = int(sys.argv[2])
libc = ctypes.CDLL(None, use_errno=True)
name = bytes.fromhex(sys.argv[1])
for i in range(n):
    srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
    cli = socket.create_connection(srv.getsockname())
    conn, _ = srv.accept()
    cli.sendall(b"x" * 1000)
    time.sleep(0.01)
    if libc.prctl(15, ctypes.c_char_p(name), 0, 0, 0) != 0:  # PR_SET_NAME
        raise OSError(ctypes.get_errno(), "prctl")
    print(srv.getsockname()[1], cli.getsockname()[1], flush=True)
    conn.close()  # 1000 bytes unread -> RST
    srv.close()
    time.sleep(0.01)
    for _ in range(2):
        try:
            cli.send(b"y" * 10, socket.MSG_NOSIGNAL)
        except OSError:
            pass
    cli.close()
import os
print("pid", os.getpid(), flush=True)
"""


def start_tracer(*args: str, stdout=subprocess.PIPE) -> tuple[subprocess.Popen, Path]:
    d = Path(tempfile.mkdtemp(prefix="rsttrace-hostile-"))
    ready = d / "ready"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tracer", "--settle", "0.3", "--ready-file", str(ready), *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
    )
    wait_ready(ready, proc.pid, proc.poll, lambda: repr(proc.stderr.read()), proc.kill)
    return proc, d


def run_workload(ns, n: int = 1) -> tuple[list[tuple[int, int]], int]:
    out = ns.run(sys.executable, "-c", WORKLOAD, EVIL.hex(), str(n)).stdout.split("\n")
    ports = [tuple(map(int, line.split())) for line in out if line and not line.startswith("pid")]
    pid = int(next(line for line in out if line.startswith("pid")).split()[1])
    return ports, pid


def read_until(stream, needle: bytes, timeout: float) -> bytes:
    """Bytes from a pipe until `needle` shows up (blocking on the pipe, not sleeping)."""
    buf = b""
    deadline = time.monotonic() + timeout
    fd = stream.fileno()
    while needle not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{needle!r} not seen within {timeout}s: {buf!r}")
        r, _, _ = select.select([fd], [], [], left)
        if r:
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(f"stream ended before {needle!r}: {buf!r}")
            buf += chunk
    return buf


def test_process_named_with_escape_sequences_is_shown_escaped(ns):
    proc, d = start_tracer("--netns", str(ns.inode), "-o", str(Path(tempfile.mkdtemp()) / "t.jsonl"))
    trace = Path(proc.args[proc.args.index("-o") + 1])
    try:
        [(sport, cport)], pid = run_workload(ns)
        screen = read_until(proc.stdout, b"fix:", 20)
        proc.send_signal(signal.SIGTERM)
        rest, err = proc.communicate(timeout=STOP_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
    screen += rest
    assert proc.returncode == 0, err
    # Not one byte that a terminal would act on: no ESC, no BEL, nothing below space but newlines.
    assert not any(b < 0x20 and b != 0x0A for b in screen), screen
    first = screen.decode().splitlines()[0]
    assert first.startswith(
        f"\\x1b[2J\\x1b[31mX\\x07[{pid}] closed 127.0.0.1:{sport}<-127.0.0.1:{cport} with 1000 unread bytes -> RST"
    )
    assert f"\\x1b[2J\\x1b[31mX\\x07[{pid}] write: ECONNRESET" in screen.decode().splitlines()[1]
    assert b"\x1b" not in err and b"\x07" not in err
    # The file keeps the exact name, escaped the way JSON escapes it.
    raw = trace.read_bytes()
    assert b'"comm":"\\u001b[2J\\u001b[31mX\\u0007"' in raw
    [inc] = [json.loads(x) for x in raw.splitlines() if b'"type":"incident"' in x]
    assert inc["culprit"] == {"pid": pid, "comm": EVIL.decode()}
    assert stat_mode(trace) == 0o600
    # And `report` on that file escapes it the same way.
    r = subprocess.run([sys.executable, "-m", "tracer", "report", str(trace)], capture_output=True, timeout=120)
    assert r.returncode == 0 and b"\x1b" not in r.stdout
    # (in the live chain's words: one renderer)
    assert f"abort-on-close: {first} -> ".encode() in r.stdout


def stat_mode(p: Path) -> int:
    return os.stat(p).st_mode & 0o777


def test_stdout_closed_stops_cleanly_and_completes_the_file(ns):
    out = Path(tempfile.mkdtemp()) / "t.jsonl"
    proc, d = start_tracer("--netns", str(ns.inode), "--json", "-o", str(out))
    try:
        proc.stdout.close()  # the reader went away (rsttrace | head -0)
        run_workload(ns, n=3)
        _, err = proc.communicate(timeout=STOP_TIMEOUT + 10)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = err.decode()
    assert proc.returncode == 13, err
    assert "Traceback" not in err
    assert err.splitlines()[-1] == "rsttrace: error: stdout was closed (EPIPE): stopping"
    recs = [json.loads(x) for x in out.read_text().splitlines()]  # every line whole
    assert recs[0]["type"] == "header" and recs[-1]["type"] == "summary"
    assert recs[-1]["incidents"] == sum(r["type"] == "incident" for r in recs) >= 1


@pytest.fixture
def tiny_disk():
    d = Path(tempfile.mkdtemp(prefix="rsttrace-tinyfs-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8k,mode=0700", "tmpfs", str(d)], check=True)
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)
        d.rmdir()


def test_disk_full_stops_with_one_line_and_stdout_agrees_with_the_file(ns, tiny_disk):
    out = tiny_disk / "t.jsonl"
    proc, d = start_tracer("--netns", str(ns.inode), "--json", "-o", str(out))
    try:
        run_workload(ns, n=20)  # far more than 8 KB of events
        stdout, err = proc.communicate(timeout=STOP_TIMEOUT + 20)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = err.decode()
    assert proc.returncode == 13, err
    assert "Traceback" not in err
    assert err.splitlines()[-1] == f"rsttrace: error: cannot write trace {out}: No space left on device"
    # The summary still reaches stderr.
    assert any(x.startswith("events: ") and " received, " in x for x in err.splitlines())
    lines = out.read_bytes().split(b"\n")
    assert lines[-1] == b""  # ends with a whole line
    recs = [json.loads(x) for x in lines[:-1]]
    shown = [json.loads(x) for x in stdout.splitlines()]
    written = [r for r in recs if r["type"] == "incident"]
    assert [i["id"] for i in shown] == [i["id"] for i in written]
