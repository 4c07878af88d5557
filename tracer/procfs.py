"""Find which processes hold sockets, by their inodes, from /proc."""

from __future__ import annotations

import os
from collections.abc import Iterable


def inode_owners(inos: Iterable[int], proc: str = "/proc") -> dict[int, tuple[int, str]]:
    """{socket inode: (pid, comm)} for the inodes asked, in one pass over /proc."""
    wanted = {f"socket:[{i}]": i for i in inos if i}
    found: dict[int, tuple[int, str]] = {}
    if not wanted:
        return found
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        fd_dir = f"{proc}/{entry.name}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                ino = wanted.get(os.readlink(f"{fd_dir}/{fd}"))
            except OSError:
                continue
            if ino is not None and ino not in found:
                try:
                    with open(f"{proc}/{entry.name}/comm") as f:
                        found[ino] = (int(entry.name), f.read().strip())
                except OSError:
                    continue
        if len(found) == len(wanted):
            break
    return found


def socket_owner(ino: int, proc: str = "/proc") -> tuple[int, str] | None:
    """(pid, comm) of a process with socket inode `ino` open, or None."""
    return inode_owners([ino], proc).get(ino)
