"""Reproduce TCP reset scenarios with the C workloads inside private network namespaces."""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .procfs import proc_tcp_rows

WORKLOAD_SRC = Path(__file__).parent / "workloads"
WORKLOADS = ("rst_server", "rst_client")
DEFAULT_CACHE_DIR = Path("/var/cache/rsttrace/workloads")
CFLAGS = ("-std=c99", "-O2", "-Wall", "-Wextra")
NETNS_DIR = Path("/run/netns")
# Root-only (unlike /run/lock), which Hosts needs anyway for `ip netns add`.
LOCK_DIR = Path("/run/rsttrace")
# Deadlines of the scenarios' waits, scaled where everything runs slower (an emulated VM sets
# RSTTRACE_TEST_TIMEOUT_SCALE).
TIMEOUT = 5.0 * float(os.environ.get("RSTTRACE_TEST_TIMEOUT_SCALE", "1") or 1)

_tmp_cache_dir: Path | None = None


class WorkloadError(RuntimeError):
    """A workload or `ip` command misbehaved; the message carries its output."""


# -- building -----------------------------------------------------------------


def _default_cache_dir() -> Path:
    global _tmp_cache_dir
    with contextlib.suppress(OSError):
        DEFAULT_CACHE_DIR.mkdir(parents=True, exist_ok=True)
    if os.access(DEFAULT_CACHE_DIR, os.W_OK):
        return DEFAULT_CACHE_DIR
    # A fresh private directory: a fixed name in /tmp could be planted by another user.
    if _tmp_cache_dir is None:
        _tmp_cache_dir = Path(tempfile.mkdtemp(prefix="rsttrace-workloads-"))
    return _tmp_cache_dir


def _sources_digest() -> str:
    h = hashlib.sha256(" ".join(CFLAGS).encode())
    for name in WORKLOADS:
        h.update((WORKLOAD_SRC / f"{name}.c").read_bytes())
    return h.hexdigest()[:16]


def build_workloads(cache_dir: Path | None = None) -> Path:
    """Compile rst_server and rst_client into cache_dir unless up to date; return the directory.

    The shared default cache has one folder per content of the sources: checkouts of different
    versions on one machine never run each other's binaries (file times cannot tell them apart)."""
    out = Path(cache_dir) if cache_dir is not None else _default_cache_dir() / _sources_digest()
    out.mkdir(parents=True, exist_ok=True)
    cc = os.environ.get("CC", "gcc")
    for name in WORKLOADS:
        src = WORKLOAD_SRC / f"{name}.c"
        binary = out / name
        if binary.exists() and binary.stat().st_mtime_ns >= src.stat().st_mtime_ns:
            continue
        compiler = shutil.which(cc)
        if compiler is None:
            raise RuntimeError(
                f"C compiler {cc!r} not found in PATH: install gcc (or set CC) to build the rsttrace workloads"
            )
        # Build under a private name and rename, so a concurrent build or run
        # never sees a half-written binary.
        tmp = out / f".{name}.{os.getpid()}.tmp"
        proc = subprocess.run([compiler, *CFLAGS, "-o", str(tmp), str(src)], capture_output=True, text=True)
        if proc.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise RuntimeError(f"{cc} failed to compile {src}:\n{proc.stderr}")
        os.replace(tmp, binary)
    return out


# -- namespaces -----------------------------------------------------------------


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise WorkloadError(f"ip {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _delete_netns(name: str) -> None:
    # Processes left inside would keep the namespace, and its sockets, alive
    # after the name is gone.
    for pid in _ip("netns", "pids", name, check=False).stdout.split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    _ip("netns", "del", name, check=False)


def _delete_stale(prefix: str) -> None:
    """Delete namespaces whose creating harness process died before cleaning up."""
    if not NETNS_DIR.is_dir():
        return
    pattern = re.compile(rf"{re.escape(prefix)}-(\d+)-[0-9a-f]{{6}}")
    for entry in NETNS_DIR.iterdir():
        match = pattern.fullmatch(entry.name)
        if match and not _alive(int(match.group(1))):
            _delete_netns(entry.name)


class Netns:
    """A uniquely named network namespace with lo up, emptied and deleted on exit."""

    def __init__(self, name_prefix: str = "rst") -> None:
        self.prefix = name_prefix
        self.name = ""
        self.inode = 0

    def __enter__(self) -> Netns:
        _delete_stale(self.prefix)
        # The pid lets a later harness tell our leftovers from live namespaces.
        self.name = f"{self.prefix}-{os.getpid()}-{secrets.token_hex(3)}"
        _ip("netns", "add", self.name)
        try:
            _ip("-n", self.name, "link", "set", "lo", "up")
            self.inode = os.stat(NETNS_DIR / self.name).st_ino
        except BaseException:
            _delete_netns(self.name)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        _delete_netns(self.name)

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace to completion; raise if it fails."""
        proc = subprocess.run(["ip", "netns", "exec", self.name, *argv], capture_output=True, text=True)
        if proc.returncode != 0:
            raise WorkloadError(f"{' '.join(argv)} in {self.name} failed: {proc.stderr.strip()}")
        return proc

    def counters(self) -> dict[str, int]:
        """This namespace's SNMP and netstat counters, named like nstat: "TcpExt.TCPAbortOnClose"."""
        lines = self.run("cat", "/proc/net/snmp", "/proc/net/netstat").stdout.splitlines()
        counters = {}
        # Both files alternate a header line and a value line per group.
        for header, values in zip(lines[::2], lines[1::2]):
            group, *names = header.split()
            _, *numbers = values.split()
            counters.update({f"{group.rstrip(':')}.{n}": int(v) for n, v in zip(names, numbers)})
        return counters


# -- processes --------------------------------------------------------------------


class Proc:
    """A program in a namespace, driven by lines on its stdin and stdout (stderr merged)."""

    def __init__(self, ns: Netns | None, argv: Sequence[str | os.PathLike[str]]) -> None:
        """ns None: run argv as it is (a program that joins a namespace itself, like podman,
        which needs the host's /sys that `ip netns exec` replaces)."""
        self.argv = [os.fspath(a) for a in argv]
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        # `ip netns exec` execs the program rather than forking, so this pid is
        # the workload's own (scenarios check it against the pid it prints).
        self._popen = subprocess.Popen(
            ["ip", "netns", "exec", ns.name, *self.argv] if ns is not None else self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        self.pid = self._popen.pid
        self._reader = threading.Thread(target=self._read, name=f"proc-{self.pid}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._popen.stdout is not None
        for line in self._popen.stdout:
            line = line.rstrip("\n")
            self.lines.append(line)
            self._queue.put(line)
        self._queue.put(None)

    def __enter__(self) -> Proc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    def _error(self, what: str) -> WorkloadError:
        output = "\n".join(f"  | {line}" for line in self.lines) or "  (no output)"
        return WorkloadError(
            f"{os.path.basename(self.argv[0])} (pid {self.pid}, returncode "
            f"{self._popen.poll()}): {what}; output so far:\n{output}"
        )

    def expect(self, prefix: str, timeout: float = TIMEOUT) -> str:
        """Skip output lines up to and including the first one starting with prefix; return it."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise self._error(f"no {prefix!r} line within {timeout}s") from None
            if line is None:
                self._queue.put(None)  # later calls must see the EOF too
                raise self._error(f"output ended before a {prefix!r} line")
            if line.startswith(prefix):
                return line

    def send(self, line: str) -> None:
        assert self._popen.stdin is not None
        try:
            self._popen.stdin.write(line + "\n")
            self._popen.stdin.flush()
        except BrokenPipeError:
            raise self._error(f"exited before reading {line!r}") from None

    def wait(self, timeout: float = TIMEOUT) -> int:
        """Wait for exit; return the returncode (negative: killed by that signal)."""
        try:
            rc = self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise self._error(f"still running after {timeout}s") from None
        self._reader.join(timeout)  # so .lines holds everything it printed
        return rc

    def close(self) -> None:
        """Kill the program if it still runs, reap it and release the pipes."""
        if self._popen.poll() is None:
            self._popen.kill()
        self._popen.wait()
        self._reader.join(TIMEOUT)
        for pipe in (self._popen.stdin, self._popen.stdout):
            if pipe is not None:
                with contextlib.suppress(BrokenPipeError):
                    pipe.close()


# -- scenarios --------------------------------------------------------------------


@dataclass
class ScenarioResult:
    """What a scenario ran and what each side printed; netns_inode is the server's namespace."""

    name: str
    server_pid: int
    client_pid: int
    server_port: int
    client_port: int
    netns_inode: int
    server_lines: list[str]
    client_lines: list[str]
    client_returncode: int
    server_returncode: int
    bytes_unread: int | None


def _field(line: str, key: str) -> int:
    match = re.search(rf"\b{key}=(\d+)", line)
    if match is None:
        raise WorkloadError(f"no {key}= in {line!r}")
    return int(match.group(1))


def _last_number(line: str) -> int:
    return int(line.split()[-1])


def _has_connection(pid: int, local_port: int, remote_port: int) -> bool:
    # /proc/PID/net is PID's namespace, so no `ip netns exec` per poll.
    return any((r.lport, r.rport) == (local_port, remote_port) for r in proc_tcp_rows(pid))


@dataclass
class _Run:
    server: Proc
    client: Proc
    server_port: int
    client_port: int
    server_ns: Netns

    def wait_reset_received(self, timeout: float = TIMEOUT) -> None:
        """Wait until the client's kernel has processed the server's RST.

        Otherwise a still in-flight reset would let the first write succeed. A
        reset socket leaves the connection table while the client holds its fd.
        """
        deadline = time.monotonic() + timeout
        while _has_connection(self.client.pid, self.client_port, self.server_port):
            if time.monotonic() > deadline:
                raise self.client._error(f"connection still present after {timeout}s")
            time.sleep(0.001)

    def finish(self, name: str, bytes_unread: int | None = None) -> ScenarioResult:
        client_rc = self.client.wait()
        self.server.send("exit")
        return self.result(name, client_rc, self.server.wait(), bytes_unread)

    def result(self, name: str, client_rc: int, server_rc: int, bytes_unread: int | None) -> ScenarioResult:
        return ScenarioResult(
            name=name,
            server_pid=self.server.pid,
            client_pid=self.client.pid,
            server_port=self.server_port,
            client_port=self.client_port,
            netns_inode=self.server_ns.inode,
            server_lines=list(self.server.lines),
            client_lines=list(self.client.lines),
            client_returncode=client_rc,
            server_returncode=server_rc,
            bytes_unread=bytes_unread,
        )


@contextlib.contextmanager
def _connected(
    server_ns: Netns,
    client_ns: Netns,
    server_addr: str,
    port: int | None,
    server_args: Sequence[object],
    client_args: Sequence[object],
) -> Iterator[_Run]:
    """Start both workloads; yield once the client has connected and sent its data."""
    bins = build_workloads()
    family = ["-6"] if ":" in server_addr else []
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(
            Proc(server_ns, [bins / "rst_server", str(port or 0), *family, *map(str, server_args)])
        )
        listening = server.expect("listening")
        server_port = int(listening.split()[1])
        client = stack.enter_context(
            Proc(client_ns, [bins / "rst_client", server_addr, str(server_port), *map(str, client_args)])
        )
        connected = client.expect("connected")
        for proc, line in ((server, listening), (client, connected)):
            if _field(line, "pid") != proc.pid:
                raise proc._error(f"printed pid {_field(line, 'pid')}, but Popen.pid is {proc.pid}")
        server.expect("accepted")
        client.expect("sent")
        yield _Run(server, client, server_port, _field(connected, "sport"), server_ns)


def unread_close(
    ns: Netns,
    unread: int = 1000,
    sigpipe: str = "default",
    nosignal: bool = False,
    writes: int = 3,
    port: int | None = None,
    *,
    recv: bool = False,
    server_ns: Netns | None = None,
    client_ns: Netns | None = None,
    server_addr: str = "127.0.0.1",
) -> ScenarioResult:
    """The server closes with `unread` bytes unread (-> RST), then the client writes (or recv()s).

    Both sides run in ns unless server_ns / client_ns say otherwise; with
    --recv the client does one recv() instead of the writes.
    """
    if unread < 1:
        raise ValueError("unread must be at least 1 byte, or close() sends a FIN")
    client_args: list[object] = ["--send", unread, "--writes", writes, "--sigpipe", sigpipe]
    if nosignal:
        client_args.append("--nosignal")
    if recv:
        client_args.append("--recv")
    with _connected(
        server_ns or ns,
        client_ns or ns,
        server_addr,
        port,
        ["--mode", "unread", "--expect", unread],
        client_args,
    ) as run:
        run.server.send("close")
        bytes_unread = _last_number(run.server.expect("unread"))
        run.server.expect("closed")
        run.wait_reset_received()
        run.client.send("go")
        return run.finish("unread_close", bytes_unread)
