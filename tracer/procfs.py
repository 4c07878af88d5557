"""Find which processes hold sockets, by their inodes, from /proc."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

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
