"""The validated, frozen run configuration; filters become numbers and map entries here."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BadFilter

COMM_MAX = 15  # TASK_COMM_LEN - 1


@dataclass(frozen=True)
class Filters:
    pids: frozenset[int] = frozenset()
    comm: str | None = None
    ports: frozenset[int] = frozenset()
    netns: int | None = None

    def describe(self) -> dict:
        return {"pids": sorted(self.pids), "comm": self.comm, "ports": sorted(self.ports),
                "netns": self.netns}

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
        return True


def parse_pid(value: str | int) -> int:
    try:
        pid = int(value)
    except (TypeError, ValueError):
        raise BadFilter(f"invalid pid {value!r}: expected a positive integer") from None
    if pid <= 0:
        raise BadFilter(f"invalid pid {value!r}: expected a positive integer")
    if not Path(f"/proc/{pid}").exists():
        raise BadFilter(f"no process with pid {pid}")
    return pid


def parse_port(value: str | int) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise BadFilter(f"invalid port {value!r}: expected 1-65535") from None
    if not 1 <= port <= 65535:
        raise BadFilter(f"invalid port {value!r}: expected 1-65535")
    return port


def parse_comm(value: str) -> str:
    if not value or len(value.encode()) > COMM_MAX or "\0" in value:
        raise BadFilter(f"invalid comm {value!r}: 1 to {COMM_MAX} bytes (the kernel keeps 15)")
    return value


def parse_netns(value: str | int) -> int:
    """A netns inode number, a name under /run/netns, or a path such as /proc/PID/ns/net."""
    text = str(value)
    if text.isdigit():
        return int(text)
    path = Path(text) if "/" in text else Path("/run/netns") / text
    try:
        return os.stat(path).st_ino
    except OSError:
        raise BadFilter(f"unknown network namespace {value!r} (an inode number, a name in "
                        "/run/netns, or a path like /proc/PID/ns/net)") from None


def build_filters(pids=(), comm=None, ports=(), netns=None) -> Filters:
    return Filters(
        pids=frozenset(parse_pid(p) for p in pids),
        comm=parse_comm(comm) if comm else None,
        ports=frozenset(parse_port(p) for p in ports),
        netns=parse_netns(netns) if netns is not None else None,
    )


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
