"""Helpers of the real-software corpus (test_corpus.py): programs in namespaces, their sockets
seen from /proc, the kernel's counters, a peer's receive queue taken with pidfd_getfd + FIONREAD.

Nothing here is product code: tracer/ never imports it."""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from testbed import scenarios

HERE = Path(__file__).parent
# Deadlines for what the programs do (start, answer, die); an emulated VM is several times slower.
SCALE = float(os.environ.get("RSTTRACE_TEST_TIMEOUT_SCALE", "1"))
TIMEOUT = 15.0 * SCALE

# /proc/net/tcp state codes
STATES = {
    1: "ESTABLISHED",
    2: "SYN_SENT",
    3: "SYN_RECV",
    4: "FIN_WAIT1",
    5: "FIN_WAIT2",
    6: "TIME_WAIT",
    7: "CLOSE",
    8: "CLOSE_WAIT",
    9: "LAST_ACK",
    10: "LISTEN",
    11: "CLOSING",
}

# The counters each test records; a test asserts the delta of all of them, zeros included.
COUNTERS = (
    "Tcp.OutRsts",
    "Tcp.EstabResets",
    "Tcp.AttemptFails",
    "TcpExt.TCPAbortOnClose",
    "TcpExt.TCPAbortOnData",
    "TcpExt.TCPAbortOnLinger",
    "TcpExt.TCPAbortOnTimeout",
)


def need(*programs: str) -> list[str]:
    """The programs' paths; the test is skipped, with the reason, when one is not installed."""
    paths = []
    for prog in programs:
        path = prog if os.path.isabs(prog) and os.access(prog, os.X_OK) else shutil.which(prog)
        if path is None:
            pytest.skip(f"{prog} not installed (./run.sh setup installs it)")
        paths.append(path)
    return paths


def need_module(name: str):
    try:
        return __import__(name)
    except ImportError:
        pytest.skip(f"Python package {name} not installed (pip install -e '.[test]')")


def wait_for(pred: Callable[[], object], what: str, timeout: float = TIMEOUT, interval: float = 0.002):
    """Poll pred until it returns something true; return that, or fail saying what never came."""
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s ({pred!r})")
        time.sleep(interval)


def free_port() -> int:
    import random

    return random.randint(20000, 60000)


# -- processes ------------------------------------------------------------------------


class Program:
    """A program started inside a namespace (ip netns exec execs it: Popen.pid is its pid),
    in a session of its own so that teardown kills it and everything it forked."""

    def __init__(
        self,
        ns: scenarios.Netns,
        argv: Sequence[str],
        *,
        user: str | None = None,
        cwd: str | None = None,
        env: dict | None = None,
        stdin=subprocess.DEVNULL,
    ) -> None:
        # Open for the program's whole life (it writes there); removed by stop().
        self.log = tempfile.NamedTemporaryFile(prefix="corpus-", suffix=".log", delete=False)  # noqa: SIM115
        cmd = ["ip", "netns", "exec", ns.name]
        if user is not None:
            # setpriv execs too: the pid stays the program's own.
            cmd += ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups"]
        self.argv = list(argv)
        self.popen = subprocess.Popen(
            [*cmd, *argv],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=stdin,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
        self.pid = self.popen.pid
        self._final: str | None = None

    def output(self) -> str:
        """Everything it printed so far (or in all, once stopped)."""
        if self._final is not None:
            return self._final
        return Path(self.log.name).read_text(errors="replace")

    def wait_output(self, text: str, timeout: float = TIMEOUT) -> str:
        wait_for(
            lambda: text in self.output() or self.popen.poll() is not None, f"{self.argv[0]} printing {text!r}", timeout
        )
        out = self.output()
        assert text in out, f"{self.argv[0]} exited ({self.popen.returncode}) without {text!r}:\n{out}"
        return out

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(TIMEOUT)
        if self._final is None:
            self._final = self.output()
            with contextlib.suppress(OSError):
                os.unlink(self.log.name)

    def __enter__(self) -> Program:  # noqa: PYI034 (as scenarios.Proc; Self needs 3.11)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def comm(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


# -- sockets seen from /proc ----------------------------------------------------------------


@dataclass(frozen=True)
class Conn:
    laddr: str
    lport: int
    raddr: str
    rport: int
    state: str
    inode: int


def _addr(hexaddr: str) -> tuple[str, int]:
    host, port = hexaddr.split(":")
    if len(host) == 8:
        return socket.inet_ntop(socket.AF_INET, struct.pack("<I", int(host, 16))), int(port, 16)
    raw = b"".join(struct.pack("<I", int(host[i : i + 8], 16)) for i in range(0, 32, 8))
    return socket.inet_ntop(socket.AF_INET6, raw), int(port, 16)


def conns(pid: int) -> list[Conn]:
    """Every TCP socket of pid's namespace (/proc/PID/net is that namespace's table)."""
    out = []
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(FileNotFoundError), open(f"/proc/{pid}/net/{table}") as f:
            for row in list(f)[1:]:
                cols = row.split()
                (la, lp), (ra, rp) = _addr(cols[1]), _addr(cols[2])
                out.append(Conn(la, lp, ra, rp, STATES.get(int(cols[3], 16), cols[3]), int(cols[9])))
    return out


def find_conn(pid: int, *, lport: int | None = None, rport: int | None = None, state: str | None = None) -> Conn | None:
    for c in conns(pid):
        if (
            (lport is None or c.lport == lport)
            and (rport is None or c.rport == rport)
            and (state is None or c.state == state)
        ):
            return c
    return None


def socket_fd(pid: int, inode: int) -> int | None:
    """The fd number under which pid holds the socket with this inode."""
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                return int(fd)
    return None


_SYS_PIDFD_GETFD = 438  # x86_64, as the tracer itself


@contextlib.contextmanager
def _their_fd(pid: int, fd: int) -> Iterator[int]:
    """A duplicate of pid's fd, taken with pidfd_getfd (the socket is the same one)."""
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        dup = libc.syscall(_SYS_PIDFD_GETFD, pidfd, fd, 0)
        if dup < 0:
            raise OSError(ctypes.get_errno(), f"pidfd_getfd({pid}, {fd})")
        try:
            yield dup
        finally:
            os.close(dup)
    finally:
        os.close(pidfd)


def fionread(pid: int, fd: int) -> int:
    """SIOCINQ of pid's socket fd: the bytes in its receive queue, unread."""
    with _their_fd(pid, fd) as dup:
        return struct.unpack("i", fcntl.ioctl(dup, termios.FIONREAD, b"\0\0\0\0"))[0]


def bytes_received(pid: int, fd: int) -> int:
    """tcpi_bytes_received of pid's TCP socket fd (struct tcp_info, offset 128, since 4.1)."""
    with _their_fd(pid, fd) as dup:
        s = socket.socket(fileno=os.dup(dup))
        try:
            info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
        finally:
            s.close()
    return struct.unpack_from("<Q", info, 128)[0]


# -- counters ---------------------------------------------------------------------------


class Counters:
    """The namespace's nstat counters: delta() is what changed since construction (or last mark)."""

    def __init__(self, ns: scenarios.Netns) -> None:
        self.ns = ns
        self.mark()

    def mark(self) -> None:
        self.before = self.ns.counters()

    def delta(self, keys: Sequence[str] = COUNTERS) -> dict[str, int]:
        after = self.ns.counters()
        return {k: after.get(k, 0) - self.before.get(k, 0) for k in keys}


# -- tracing ------------------------------------------------------------------------------


def errors(side: dict | None) -> list[tuple[str, str]]:
    return [(e["call"], e["errno"]) for e in side["errors"]] if side else []


def lo(port: int, addr: str = "127.0.0.1") -> dict:
    return {"addr": addr, "port": port}


def driver(name: str) -> str:
    return str(HERE / name)


PY = sys.executable


def one(incidents: list[dict]) -> dict:
    """The one incident expected; otherwise fail showing them all (explanations left out)."""
    import json

    if len(incidents) != 1:
        shown = [{k: v for k, v in i.items() if k not in ("explanation", "advice")} for i in incidents]
        raise AssertionError(f"expected 1 incident, got {len(incidents)}:\n{json.dumps(shown, indent=1)}")
    return incidents[0]


def held_socket(
    pids: Callable[[], Sequence[int]] | Sequence[int], netns_pid: int, what: str, **match
) -> tuple[Conn, int, int]:
    """Wait until one of pids holds the connection matching `match` (see find_conn) in netns_pid's
    namespace; return (conn, pid, fd). A connection still in the accept queue has inode 0 and no
    holder yet: it is waited for too."""

    def look():
        conn = find_conn(netns_pid, **match)
        if conn is None or conn.inode == 0:
            return None
        for pid in pids() if callable(pids) else pids:
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                fd = socket_fd(pid, conn.inode)
                if fd is not None:
                    return conn, pid, fd
        return None

    return wait_for(look, what)
