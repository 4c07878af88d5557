"""What /proc says about sockets: which processes hold them (by inode), and each namespace's
TCP table (/proc/PID/net/tcp{,6}: the one parser of it)."""

from __future__ import annotations

import ipaddress
import os
import time
from collections.abc import Iterable

from .sockdiag import TcpRow

# One walk of every process's fds can take tens of milliseconds on a busy host, and after lost
# events every incident may ask (its victim made no call we saw): walk at most this often and
# answer from the last walk in between (bench/RESULTS.md: a walk per incident stalled the
# consumer until the ring overflowed, which lost more events).
RESCAN_S = 0.2


def socket_inodes(proc: str = "/proc") -> dict[int, tuple[int, str]]:
    """{socket inode: (pid, comm)} for every socket some process holds (one walk of /proc)."""
    found: dict[int, tuple[int, str]] = {}
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        fd_dir = f"{proc}/{entry.name}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        comm = None
        for fd in fds:
            try:
                link = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if not link.startswith("socket:["):
                continue
            if comm is None:
                try:
                    with open(f"{proc}/{entry.name}/comm") as f:
                        comm = f.read().strip()
                except OSError:
                    break
            found.setdefault(int(link[8:-1]), (int(entry.name), comm))
    return found


def inode_owners(inos: Iterable[int], proc: str = "/proc") -> dict[int, tuple[int, str]]:
    """{socket inode: (pid, comm)} for the inodes asked."""
    everything = socket_inodes(proc)
    return {i: everything[i] for i in inos if i in everything}


class SocketOwners:
    """socket inode -> (pid, comm), from a walk of /proc/*/fd that is repeated when stale."""

    def __init__(self, proc: str = "/proc", rescan_s: float = RESCAN_S) -> None:
        self.proc = proc
        self.rescan_s = rescan_s
        self._map: dict[int, tuple[int, str]] = {}
        self._at = float("-inf")

    def __call__(self, ino: int) -> tuple[int, str] | None:
        owner = self._map.get(ino)
        if owner is None and time.monotonic() - self._at >= self.rescan_s:
            self._map = socket_inodes(self.proc)
            self._at = time.monotonic()
            owner = self._map.get(ino)
        return owner


def socket_owner(ino: int, proc: str = "/proc") -> tuple[int, str] | None:
    """(pid, comm) of a process with socket inode `ino` open, or None (one fresh walk)."""
    return socket_inodes(proc).get(ino)


def _addr(hexaddr: str) -> str:
    raw = bytes.fromhex(hexaddr)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    # Four host-order 32-bit words.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
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
        rows.append(
            TcpRow(
                family,
                _addr(la),
                int(lp, 16),
                _addr(ra),
                int(rp, 16),
                int(st, 16),
                int(queues.split(":")[1], 16),
                int(parts[9]),
            )
        )
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
