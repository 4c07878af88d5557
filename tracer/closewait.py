"""CLOSE_WAIT leaks: overdue sockets from the kernel's map, and those already there at start-up."""

from __future__ import annotations

import ipaddress
import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Iterable

from .procfs import inode_owners

CLOSE_WAIT = 0x08  # the `st` column of /proc/net/tcp


@dataclass(frozen=True)
class TcpRow:
    """One line of /proc/PID/net/tcp{,6}."""

    family: str
    laddr: str
    lport: int
    raddr: str
    rport: int
    state: int
    rx_queue: int
    ino: int


def _addr(hexaddr: str) -> str:
    raw = bytes.fromhex(hexaddr)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    # Four host-order 32-bit words.
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return str(ipaddress.IPv6Address(words))


def parse_proc_tcp(text: str, family: str) -> list[TcpRow]:
    rows = []
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 10:
            continue
        local, remote, st, queues = parts[1], parts[2], parts[3], parts[4]
        la, lp = local.rsplit(":", 1)
        ra, rp = remote.rsplit(":", 1)
        rows.append(TcpRow(family, _addr(la), int(lp, 16), _addr(ra), int(rp, 16), int(st, 16),
                           int(queues.split(":")[1], 16), int(parts[9])))
    return rows


def proc_tcp_rows(pid: int, proc: str = "/proc") -> list[TcpRow]:
    """The TCP sockets of PID's network namespace."""
    rows: list[TcpRow] = []
    for name, family in (("tcp", "ipv4"), ("tcp6", "ipv6")):
        try:
            with open(f"{proc}/{pid}/net/{name}") as f:
                rows += parse_proc_tcp(f.read(), family)
        except OSError:
            continue
    return rows


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
    """A socket known to be in CLOSE_WAIT for at least the threshold."""

    key: object  # kernel sk address, or ("old", inode)
    ino: int
    netns: int
    since_ns: int | None  # None: before tracing started
    row: TcpRow | None = None
    owner: tuple[int, str] | None = None


@dataclass
class CloseWaitWatch:
    """Finds overdue CLOSE_WAIT sockets; `report` turns one into an incident dict."""

    threshold_ns: int
    report: Callable[[Overdue, int], None]
    netns_filter: int | None = None
    proc: str = "/proc"
    reported: dict = field(default_factory=dict)  # key -> Overdue, while in CLOSE_WAIT
    preexisting: dict[int, tuple[int, int]] = field(default_factory=dict)  # ino -> (netns, found_ns)

    def scan_start(self, now_ns: int) -> dict[int, int]:
        """Sockets in CLOSE_WAIT at start-up: {inode: now_ns}, to tell the kernel about."""
        for netns, pid in netns_pids(self.proc).items():
            if self.netns_filter and netns != self.netns_filter:
                continue
            for row in proc_tcp_rows(pid, self.proc):
                if row.state == CLOSE_WAIT and row.ino:
                    self.preexisting[row.ino] = (netns, now_ns)
        return {ino: found for ino, (_, found) in self.preexisting.items()}

    def scan(self, now_ns: int, in_kernel: Iterable[tuple[int, int, int, int]]) -> list[Overdue]:
        """in_kernel: (sk, ts_ns, ino, netns) of the map's entries. Returns newly overdue sockets."""
        present = set()
        fresh: list[Overdue] = []
        for sk, ts, ino, netns in in_kernel:
            present.add(sk)
            if sk not in self.reported and now_ns - ts >= self.threshold_ns and ino:
                fresh.append(Overdue(sk, ino, netns, ts))
        for ino, (netns, found) in self.preexisting.items():
            key = ("old", ino)
            present.add(key)
            if key not in self.reported and now_ns - found >= self.threshold_ns:
                fresh.append(Overdue(key, ino, netns, None))
        for key in [k for k in self.reported if k not in present]:
            del self.reported[key]
        if not fresh:
            return []
        owners = inode_owners([o.ino for o in fresh], self.proc)
        rows_of: dict[int, dict[int, TcpRow]] = {}
        reps = None
        out = []
        for o in fresh:
            o.owner = owners.get(o.ino)
            pid = o.owner[0] if o.owner else None
            if pid is None:
                reps = reps if reps is not None else netns_pids(self.proc)
                pid = reps.get(o.netns)
            if pid is not None and pid not in rows_of:
                rows_of[pid] = {r.ino: r for r in proc_tcp_rows(pid, self.proc)}
            o.row = rows_of.get(pid, {}).get(o.ino) if pid is not None else None
            if o.row is None or o.row.state != CLOSE_WAIT:
                if isinstance(o.key, tuple):
                    self.preexisting.pop(o.ino, None)  # it left CLOSE_WAIT: nothing to report
                continue
            self.reported[o.key] = o
            self.report(o, now_ns)
            out.append(o)
        return out

    def forget_preexisting(self, ino: int) -> None:
        self.preexisting.pop(ino, None)
        self.reported.pop(("old", ino), None)

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
