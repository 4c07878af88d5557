"""The validated, frozen run configuration; filters become numbers and map entries here.

This is the one place where option values are checked: numbers (finite, in range), filters
(exist, fit the kernel's maps), the BTF file and output paths. The CLI calls it before
anything is loaded, so a bad value is one line and its exit code, never a traceback.
"""

from __future__ import annotations

import math
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

import click

from .errors import BadFilter, BadTrace, NoBtf

COMM_MAX = 15  # TASK_COMM_LEN - 1
# Entries of the kernel's filter maps (bpf/rsttrace.bpf.c: rst_pids, rst_ports).
PID_MAP_MAX = 1024
PORT_MAP_MAX = 1024
CGROUP_MAP_MAX = 1024  # rst_cgroups in bpf/rsttrace.bpf.c
_DIGITS = re.compile(r"[0-9]{1,20}")
NETNS_DIRS = (Path("/run/netns"), Path("/var/run/netns"))


class FiniteFloat(click.ParamType):
    """A finite number in [lo, hi] (or (lo, hi] with lo_open): nan, inf and out-of-range
    values are usage errors (exit 2). click.FloatRange lets nan through."""

    name = "float"

    def __init__(self, lo: float | None = None, hi: float | None = None, lo_open: bool = False) -> None:
        self.lo, self.hi, self.lo_open = lo, hi, lo_open

    def _range(self) -> str:
        lo = "" if self.lo is None else f"{self.lo:g} {'<' if self.lo_open else '<='} "
        hi = "" if self.hi is None else f" <= {self.hi:g}"
        return f"{lo}x{hi}"

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            x = float(value)
        else:
            try:
                x = float(str(value).strip())
            except (TypeError, ValueError):
                self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(x):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        if (
            self.lo is not None
            and (x < self.lo or (self.lo_open and x == self.lo))
            or self.hi is not None
            and x > self.hi
        ):
            self.fail(f"{value!r} is not in the range {self._range()}", param, ctx)
        return x


@dataclass(frozen=True)
class Filters:
    pids: frozenset[int] = frozenset()
    comm: str | None = None
    ports: frozenset[int] = frozenset()
    netns: int | None = None
    cgroups: frozenset[int] = frozenset()  # --cgroup/--container: cgroup ids (with descendants)

    def describe(self) -> dict:
        return {
            "pids": sorted(self.pids),
            "comm": self.comm,
            "ports": sorted(self.ports),
            "netns": self.netns,
            "cgroups": sorted(self.cgroups),
        }

    def matches(self, inc: dict) -> bool:
        """The final, exact test on a finished incident: culprit or victim must match."""
        sides = [inc.get("culprit") or {}, inc.get("victim") or {}]
        if self.pids and not any(s.get("pid") in self.pids for s in sides):
            return False
        if self.comm and not any(s.get("comm") == self.comm for s in sides):
            return False
        if self.ports and not ({inc["local"]["port"], inc["remote"]["port"]} & self.ports):
            return False
        if self.netns is not None:
            victim = inc.get("victim") or {}
            if inc.get("netns") != self.netns and victim.get("netns") != self.netns:
                return False
        if self.cgroups:
            cg = inc.get("cgroups") or {}
            if not any((cg.get(side) or {}).get("id") in self.cgroups for side in ("culprit", "victim", "owner")):
                return False
        return True


def _int(value: str | int) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip()
    return int(text) if _DIGITS.fullmatch(text) else None


def parse_pid(value: str | int) -> int:
    pid = _int(value)
    if pid is None or pid <= 0 or pid > 0xFFFFFFFF:
        raise BadFilter(f"invalid pid {value!r}: expected a positive integer")
    if not Path(f"/proc/{pid}").exists():
        raise BadFilter(f"no process with pid {pid}")
    return pid


def parse_port(value: str | int) -> int:
    port = _int(value)
    if port is None or not 1 <= port <= 65535:
        raise BadFilter(f"invalid port {value!r}: expected 1-65535")
    return port


def parse_comm(value: str) -> str:
    try:
        raw = value.encode()
    except UnicodeEncodeError:
        shown = repr(value.encode("utf-8", "surrogateescape"))[2:-1]
        raise BadFilter(f"invalid comm '{shown}': not UTF-8 text") from None
    if not value or len(raw) > COMM_MAX or "\0" in value:
        raise BadFilter(f"invalid comm {value!r}: 1 to {COMM_MAX} bytes (the kernel keeps 15)")
    return value


def _netns_inodes() -> set[int]:
    """Inodes of the network namespaces this host has: those of processes, and named ones."""
    found: set[int] = set()
    try:
        pids = [d for d in os.listdir("/proc") if d.isdigit()]
    except OSError:
        pids = []
    for pid in pids:
        try:
            found.add(os.stat(f"/proc/{pid}/ns/net").st_ino)
        except OSError:
            pass
    for d in NETNS_DIRS:
        try:
            for name in os.listdir(d):
                try:
                    found.add(os.stat(d / name).st_ino)
                except OSError:
                    pass
        except OSError:
            pass
    return found


def parse_netns(value: str | int) -> int:
    """A netns inode number, a name under /run/netns, or a path such as /proc/PID/ns/net;
    it must name a network namespace that exists."""
    text = str(value)
    unknown = (
        f"unknown network namespace {value!r} (an inode number, a name in /run/netns, or a path like /proc/PID/ns/net)"
    )
    if not text.strip() or "\0" in text:
        raise BadFilter(unknown)
    n = _int(text)
    if n is not None:
        if n <= 0 or n not in _netns_inodes():
            raise BadFilter(
                f"no network namespace with inode {text}: expected the inode of "
                "a namespace in use (ls -L -i /proc/PID/ns/net) or a name in /run/netns"
            )
        return n
    path = Path(text) if "/" in text else Path("/run/netns") / text
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        raise BadFilter(unknown) from None
    if st.st_ino not in _netns_inodes() and not str(path).startswith("/proc/"):
        raise BadFilter(f"{value!r} is not a network namespace")
    return st.st_ino


def parse_cgroups(paths=(), containers=()) -> frozenset[int]:
    """--cgroup PATH and --container ID as cgroup ids, each with its descendants' (a container's
    processes may sit in a child cgroup). Paths are relative to the hierarchy that names
    containers here (tracer/cgroups.py), or absolute under it."""
    from .cgroups import CgroupPaths, container_of

    if not paths and not containers:
        return frozenset()
    tree = CgroupPaths()
    if tree.root is None:
        raise BadFilter("--cgroup/--container: no cgroup hierarchy is mounted")
    tree._walk()
    by_path = {p: i for i, p in tree._map.items()}
    wanted: set[str] = set()
    for raw in paths:
        text = str(raw).strip()
        if not text or "\0" in text:
            raise BadFilter(f"invalid cgroup path {raw!r}")
        root = str(tree.root)
        rel = "/" + text.removeprefix(root).strip("/") if text.startswith(root) else "/" + text.strip("/")
        if rel.rstrip("/") not in by_path and rel not in by_path:
            raise BadFilter(f"no cgroup {text} under {root}")
        wanted.add(rel.rstrip("/") or "/")
    for raw in containers:
        text = str(raw).strip().lower()
        if len(text) < 12 or not all(c in "0123456789abcdef" for c in text):
            raise BadFilter(f"invalid container id {raw!r}: expected at least 12 hex digits")
        found = {p for p in by_path if (c := container_of(p)) and c["id"].startswith(text)}
        if not found:
            raise BadFilter(f"no running container with id {text} (under {tree.root})")
        wanted |= found
    ids = {i for p, i in by_path.items() if any(p == w or p.startswith(w.rstrip("/") + "/") for w in wanted)}
    if len(ids) > CGROUP_MAP_MAX:
        raise BadFilter(f"too many cgroups: {len(ids)} (the kernel's filter holds {CGROUP_MAP_MAX})")
    return frozenset(ids)


def build_filters(pids=(), comm=None, ports=(), netns=None, cgroups=(), containers=()) -> Filters:
    pid_set = frozenset(parse_pid(p) for p in pids)
    if len(pid_set) > PID_MAP_MAX:
        raise BadFilter(f"too many pids: {len(pid_set)} (the kernel's filter holds {PID_MAP_MAX})")
    port_set = frozenset(parse_port(p) for p in ports)
    if len(port_set) > PORT_MAP_MAX:
        raise BadFilter(f"too many ports: {len(port_set)} (the kernel's filter holds {PORT_MAP_MAX})")
    return Filters(
        pids=pid_set,
        comm=parse_comm(comm) if comm is not None else None,
        ports=port_set,
        netns=parse_netns(netns) if netns is not None else None,
        cgroups=parse_cgroups(cgroups, containers),
    )


def check_btf(path: str | os.PathLike) -> Path:
    """The BTF file to read (RSTTRACE_BTF): a regular file, never a FIFO or a device that
    would block or never end."""
    p = Path(path)
    try:
        st = os.stat(p)
    except (OSError, ValueError):
        raise NoBtf(f"no BTF at {p}: rsttrace needs a kernel built with CONFIG_DEBUG_INFO_BTF=y") from None
    if not stat.S_ISREG(st.st_mode):
        raise NoBtf(f"{p}: not a regular file (BTF must be a file such as /sys/kernel/btf/vmlinux)")
    return p


def check_output(path: Path, inputs=()) -> Path:
    """An output path that may be created: its folder exists, it is not a folder, and it is
    not one of the inputs (writing would destroy what is being read)."""
    path = Path(path)
    parent = path.parent
    if not parent.is_dir():
        raise BadTrace(f"cannot write trace {path}: no directory {parent}")
    try:
        st = os.lstat(path)
    except (OSError, ValueError):
        return path
    if stat.S_ISLNK(st.st_mode):
        raise BadTrace(f"cannot write {path}: it is a symbolic link (refused; name the file itself)")
    if stat.S_ISDIR(st.st_mode):
        raise BadTrace(f"cannot write {path}: it is a directory")
    if not stat.S_ISREG(st.st_mode):
        raise BadTrace(f"cannot write {path}: not a regular file (a FIFO, device or socket)")
    for inp in inputs:
        try:
            si = os.stat(inp)
        except (OSError, ValueError):
            continue
        if (si.st_dev, si.st_ino) == (st.st_dev, st.st_ino):
            raise BadTrace(f"cannot write {path}: it is also an input (writing would destroy it)")
    return path


@dataclass(frozen=True)
class Config:
    filters: Filters = field(default_factory=Filters)
    settle_s: float = 1.0
    json: bool = False
    output: Path | None = None
    wide: bool = False
    ready_file: Path | None = None
    duration: float | None = None
    force_plan: str | None = None
    quiet: bool = False
    close_wait_s: float = 30.0  # report sockets in CLOSE_WAIT this long; 0: do not follow
    close_wait_every_s: float = 60.0  # per-process count of overdue CLOSE_WAIT sockets
    buffer: str = "auto"  # "perf": use the perf buffer even where the ring buffer works
