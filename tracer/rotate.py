"""A trace written as a series of files in one directory: rotated by size and by age, the
directory kept under a total size (oldest files removed first, never the one being written),
and a new file started on request (SIGHUP, logrotate's convention).

Each file is a whole trace of its own: tracefile.TraceWriter writes it (complete lines, one
write per batch, created 0600 with O_NOFOLLOW) and every file starts with a header, so any
file can be read, reported or merged alone, and a set of them read together.

The size rule is exact: a file is closed before a batch's next line would take it past
`max_file_size`, so every file is at most that size, unless one line alone is larger (that
line then gets a file of its own). Files are named

    <prefix>-<UTC start, YYYYmmddTHHMMSSZ>-<sequence, 6 digits>.jsonl

so that the names sort in the order they were written, across restarts too.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import OutputFailed
from .tracefile import TraceWriter, dumps

NAME = re.compile(r"^(?P<prefix>[A-Za-z0-9_.-]+)-(?P<stamp>\d{8}T\d{6}Z)-(?P<seq>\d{6,})\.jsonl$")


@dataclass
class Limits:
    max_file_size: int = 64 << 20  # bytes per file
    max_age_s: float = 3600.0  # seconds a file is written to (0: no age limit)
    max_total_size: int = 1 << 30  # bytes of all trace files in the directory (0: no cap)

    def check(self) -> None:
        if self.max_file_size < 4096:
            raise ValueError("the file size limit must be at least 4096 bytes (a header is ~600)")
        if self.max_total_size and self.max_total_size < 2 * self.max_file_size:
            raise ValueError(
                "the total size cap must be at least twice the file size limit "
                "(the file being written is never removed)"
            )
        if self.max_age_s < 0:
            raise ValueError("the age limit must not be negative")


class RotatingWriter:
    """`head()` gives the header of each new file (a fresh one per file: its own trace id).
    `on_note` receives one line per removal or rotation problem (the service logs them)."""

    def __init__(
        self,
        directory: Path,
        head: Callable[[], dict],
        limits: Limits,
        prefix: str = "rsttrace",
        on_note: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        limits.check()
        self.dir = Path(directory)
        self.head = head
        self.limits = limits
        self.prefix = prefix
        self.note = on_note or (lambda _line: None)
        self.clock, self.monotonic = clock, monotonic
        self.writer: TraceWriter | None = None
        self._head_size = 0
        self.opened_at = 0.0
        self.seq = 0
        self.removed = 0  # files removed by the total cap
        self.rotations = 0
        self._closed: list[list] = []  # [path, size] of finished files, oldest first
        self._scan()
        self._open()

    # -- the directory ---------------------------------------------------------------------
    def files(self) -> list[Path]:
        """This writer's trace files in the directory, oldest first (by name)."""
        out = []
        try:
            names = os.listdir(self.dir)
        except OSError:
            return out
        for name in names:
            m = NAME.match(name)
            if m and m["prefix"] == self.prefix:
                out.append((m["stamp"], int(m["seq"]), name))
        return [self.dir / name for _s, _q, name in sorted(out)]

    def _scan(self) -> None:
        """Learn the files already there (an earlier run's, or after logrotate moved some):
        they count towards the cap; the sequence continues after the highest."""
        current = self.writer.path if self.writer else None
        self._closed = []
        for p in self.files():
            m = NAME.match(p.name)
            self.seq = max(self.seq, int(m["seq"]))
            if p == current:
                continue
            try:
                st = os.lstat(p)
            except OSError:
                continue
            self._closed.append([p, st.st_size])

    def total_size(self) -> int:
        return sum(s for _p, s in self._closed) + (self.writer.good if self.writer else 0)

    # -- files -----------------------------------------------------------------------------
    def _open(self) -> None:
        self.seq += 1
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self.clock()))
        path = self.dir / f"{self.prefix}-{stamp}-{self.seq:06d}.jsonl"
        head = self.head()
        self._enforce_cap(len(dumps(head).encode()) + 1)  # room for the header first
        self.writer = TraceWriter(path, head)
        self._head_size = self.writer.good  # a new file holds only its header
        self.opened_at = self.monotonic()

    def _finish(self) -> None:
        w = self.writer
        if w is None:
            return
        w.close()
        self._closed.append([w.path, w.good])
        self.writer = None

    def rotate(self) -> Path:
        """Close the current file, start the next; the path of the new one."""
        self._finish()
        self.rotations += 1
        self._open()
        return self.writer.path

    def reopen(self) -> Path:
        """SIGHUP: a new file now, and a fresh look at the directory (logrotate may have
        renamed, compressed or removed files)."""
        self._finish()
        self._scan()
        self._open()
        return self.writer.path

    def _enforce_cap(self, extra: int = 0) -> None:
        """Remove the oldest finished files until the directory, with `extra` bytes about to
        be written, fits under the cap: the cap holds at every moment, not only after."""
        cap = self.limits.max_total_size
        if not cap:
            return
        while self._closed and self.total_size() + extra > cap:
            path, _size = self._closed.pop(0)
            try:
                os.unlink(path)
                self.removed += 1
            except FileNotFoundError:
                pass  # someone else removed it
            except OSError as e:
                self.note(f"rsttrace: cannot remove old trace {path}: {e.strerror}")

    # -- writing ---------------------------------------------------------------------------
    def _due_by_age(self) -> bool:
        age = self.limits.max_age_s
        return bool(age) and self.monotonic() - self.opened_at >= age and self._has_records()

    def _has_records(self) -> bool:
        return self.writer is not None and self.writer.good > self._head_size

    def tick(self) -> None:
        """Rotate by age (the service calls this after every batch, idle or not)."""
        if self.writer is not None and self._due_by_age():
            self.rotate()

    def write(self, records: list[dict]) -> None:
        """Append records, starting new files as the size limit requires (one write per
        file per batch). Raises OutputFailed when the disk refuses (the file keeps only
        complete lines)."""
        if not records:
            return
        if self.writer is None:
            raise OutputFailed(f"cannot write trace in {self.dir}: closed")
        if self._due_by_age():
            self.rotate()
        limit = self.limits.max_file_size
        chunk: list[dict] = []
        size = self.writer.good
        for rec in records:
            n = len(dumps(rec).encode()) + 1
            if size + n > limit and size > self._head_size:
                self._write_chunk(chunk, size)
                chunk = []
                self.rotate()
                size = self.writer.good
            chunk.append(rec)
            size += n
        self._write_chunk(chunk, size)

    def _write_chunk(self, chunk: list[dict], size_after: int) -> None:
        if chunk:
            self._enforce_cap(size_after - self.writer.good)
            self.writer.write(chunk)

    def close(self, final: dict | None = None) -> bool:
        """Write the summary line (if any) into the current file, under the same size rule,
        and close it."""
        ok = True
        if self.writer is not None:
            if final is not None:
                n = len(dumps(final).encode()) + 1
                if not self.writer.failed and self.writer.good + n > self.limits.max_file_size and self._has_records():
                    try:
                        self.rotate()
                    except Exception:  # noqa: BLE001 - the summary goes where it can
                        pass
                if self.writer is not None:
                    self._enforce_cap(n)
                    ok = self.writer.write_final(final)
            self._finish()
            self._enforce_cap()
        return ok

    @property
    def path(self) -> Path | None:
        return self.writer.path if self.writer else None
