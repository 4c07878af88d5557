"""Find which process holds a socket, by its inode, from /proc."""

from __future__ import annotations

import os


def socket_owner(ino: int, proc: str = "/proc") -> tuple[int, str] | None:
    """(pid, comm) of a process with socket inode `ino` open, or None."""
    target = f"socket:[{ino}]"
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
                if os.readlink(f"{fd_dir}/{fd}") == target:
                    with open(f"{proc}/{entry.name}/comm") as f:
                        return int(entry.name), f.read().strip()
            except OSError:
                continue
    return None
