"""CLOSE_WAIT leaks: sockets the peer has closed and the owner has not, found by a periodic sweep.

The kernel keeps nothing per socket for this (bpf/hooks/cwait.h): every connection the peer
closes first passes through CLOSE_WAIT, and following each in a map cost the whole host (bench/).
A sweep with sock_diag (tracer/sockdiag.py) finds the sockets still in CLOSE_WAIT, with how long
each has been idle; the kernel reports the late close itself. Without sock_diag, /proc/PID/net/tcp
gives the same sockets but no idle time: the age then counts from when a sweep first saw them.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable

from . import sockdiag
from .procfs import inode_owners, parse_proc_tcp, proc_tcp_rows  # noqa: F401 (parse_proc_tcp: tests)
from .sockdiag import TcpRow

CLOSE_WAIT = 0x08  # TCP_CLOSE_WAIT; also the `st` column of /proc/net/tcp


def netns_pids(proc: str = "/proc") -> dict[int, int]:
    """One process per network namespace: {netns inode: pid}."""
    out: dict[int, int] = {}
    for entry in os.scandir(proc):
        if entry.name.isdigit():
            try:
                out.setdefault(os.stat(f"{proc}/{entry.name}/ns/net").st_ino, int(entry.name))
            except OSError:
                continue
    return out


@dataclass
class Overdue:
    """A socket in CLOSE_WAIT for at least the threshold."""

    ino: int
    netns: int
    since_ns: int | None  # None: unknown (there before tracing began, and no idle time)
    row: TcpRow
    preexisting: bool
    owner: tuple[int, str] | None = None


@dataclass
class CloseWaitWatch:
    """Sweeps for CLOSE_WAIT sockets. `report` turns an overdue one into an incident (and lets
    the kernel know it, for its late close); `forget` is told of reported sockets gone since."""

    threshold_ns: int
    report: Callable[[Overdue, int], None]
    forget: Callable[[int], None] = lambda ino: None
    netns_filter: int | None = None
    proc: str = "/proc"
    reported: dict[int, Overdue] = field(default_factory=dict)  # inode -> while in CLOSE_WAIT
    first_seen: dict[int, int] = field(default_factory=dict)  # inode -> ns (rows without idle time)
    preexisting: set[int] = field(default_factory=set)  # inodes in CLOSE_WAIT when tracing began
    diag_error: str | None = None  # why sock_diag could not be used (the /proc fallback was)

    def rows(self) -> list[tuple[int, TcpRow]]:
        """(netns, row) of every socket in CLOSE_WAIT in the namespaces followed."""
        own = _own_netns(self.proc)
        out: list[tuple[int, TcpRow]] = []
        for netns, pid in netns_pids(self.proc).items():
            if self.netns_filter and netns != self.netns_filter:
                continue
            try:
                found = sockdiag.sockets_in(None if netns == own else f"{self.proc}/{pid}/ns/net", 1 << CLOSE_WAIT)
            except sockdiag.DiagUnavailable as e:
                self.diag_error = str(e)
                found = proc_tcp_rows(pid, self.proc)
            out += [(netns, r) for r in found if r.state == CLOSE_WAIT and r.ino]
        return out

    def start(self, now_ns: int) -> None:
        """Remember what is in CLOSE_WAIT as tracing begins (reported by the first sweep)."""
        for _netns, row in self.rows():
            self.preexisting.add(row.ino)
            if row.idle_ms is None:
                self.first_seen[row.ino] = now_ns

    def sweep(self, now_ns: int) -> list[Overdue]:
        """Report the sockets newly overdue; forget those no longer in CLOSE_WAIT."""
        present: set[int] = set()
        fresh: list[Overdue] = []
        for netns, row in self.rows():
            present.add(row.ino)
            if row.idle_ms is not None:
                since: int | None = now_ns - row.idle_ms * 1_000_000
                age = now_ns - since
            else:
                seen = self.first_seen.setdefault(row.ino, now_ns)
                since = None if row.ino in self.preexisting else seen
                age = now_ns - seen
            if row.ino not in self.reported and age >= self.threshold_ns:
                fresh.append(Overdue(row.ino, netns, since, row, row.ino in self.preexisting))
        for ino in [k for k in self.reported if k not in present]:
            del self.reported[ino]
            self.forget(ino)
        for ino in [k for k in self.first_seen if k not in present]:
            del self.first_seen[ino]
        if fresh:
            owners = inode_owners([o.ino for o in fresh], self.proc)
            for o in fresh:
                o.owner = owners.get(o.ino)
                self.reported[o.ino] = o
                self.report(o, now_ns)
        return fresh

    def closed(self, ino: int) -> bool:
        """A late close of ino arrived: True when it was there before tracing began."""
        self.reported.pop(ino, None)
        if ino in self.preexisting:
            self.preexisting.discard(ino)
            return True
        return False

    def counts(self, now_ns: int) -> list[tuple[tuple[int, str] | None, int, int | None]]:
        """Overdue sockets still in CLOSE_WAIT per owner: [(owner, count, oldest age ns or None)]."""
        per: dict = defaultdict(list)
        for o in self.reported.values():
            per[o.owner].append(None if o.since_ns is None else now_ns - o.since_ns)
        out = []
        for owner, ages in per.items():
            known = [a for a in ages if a is not None]
            out.append((owner, len(ages), max(known) if known else None))
        return sorted(out, key=lambda t: -t[1])


def _own_netns(proc: str) -> int | None:
    try:
        return os.stat(f"{proc}/self/ns/net").st_ino
    except OSError:
        return None
