"""Trace files: JSON Lines with a versioned header; every line is written whole."""

from __future__ import annotations

import json
import os
import platform
import time
import uuid
from pathlib import Path
from typing import Iterator

from .errors import BadTrace

try:  # Every incident (and with -o every event) is written as JSON: orjson takes a tenth of the time.
    import orjson as _orjson

    def dumps(obj) -> str:
        """One compact JSON line (no newline)."""
        return _orjson.dumps(obj, option=_orjson.OPT_NON_STR_KEYS).decode()
except ImportError:  # pragma: no cover - orjson is a dependency; this keeps odd installs working
    def dumps(obj) -> str:
        """One compact JSON line (no newline)."""
        return json.dumps(obj, separators=(",", ":"))

FORMAT = "rsttrace"
# 2: the header carries the clocks (boot time, boot id) and a trace id, for wall-clock
# columns and for merging traces from several hosts. Version 1 files read the same way.
VERSION = 2
READABLE = (1, 2)


def clocks() -> dict:
    """CLOCK_MONOTONIC (the clock of bpf_ktime_get_ns, i.e. every ts_ns) against wall clock.

    The wall-clock read is bracketed by two monotonic reads and the tightest of a few tries is
    kept, so the offset is good to about a microsecond; `clock_error_ns` says how good.
    """
    best = None
    for _ in range(5):
        m0 = time.monotonic_ns()
        wall = time.time_ns()
        boot = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        m1 = time.monotonic_ns()
        if best is None or m1 - m0 < best[0]:
            best = (m1 - m0, m0 + (m1 - m0) // 2, wall, boot)
    err, mono, wall, boot = best
    return {
        "clock": "CLOCK_MONOTONIC",
        "wall_offset_ns": wall - mono,  # wall-clock ns = ts_ns + wall_offset_ns
        "boottime_offset_ns": boot - mono,  # time spent suspended since boot
        "boot_wall_ns": wall - boot,  # wall-clock time of the kernel's boot
        "start_ns": mono,
        "clock_error_ns": err,
    }


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def header(plan: dict | None, filters: dict, wall_offset_ns: int | None = None) -> dict:
    """The first line of a trace. wall_offset_ns overrides the measured one (tests)."""
    clk = clocks()
    if wall_offset_ns is not None:
        clk["wall_offset_ns"] = wall_offset_ns
    return {
        "type": "header", "format": FORMAT, "version": VERSION,
        "kernel": platform.release(), "host": platform.node(), "plan": plan,
        "filters": filters, **clk, "boot_id": _boot_id(), "trace_id": uuid.uuid4().hex,
    }


def recordings(head: dict, path: Path) -> list[dict]:
    """The recordings a trace holds, as `sources` entries: one, or several for a merged trace
    (whose events and incidents say which with `src`)."""
    if head.get("sources"):
        return [dict(s, file=s.get("file") or str(path), label=s.get("label") or Path(s.get("file") or path).name)
                for s in head["sources"]]
    return [{"label": Path(path).name, "file": str(path), "host": head.get("host"),
             "kernel": head.get("kernel"), "version": head.get("version"),
             "wall_offset_ns": head.get("wall_offset_ns") or None, "boot_id": head.get("boot_id"),
             "trace_id": head.get("trace_id"), "filters": head.get("filters")}]


class TraceWriter:
    """Appends complete lines with one write(2) per batch, so a kill -9 loses at most the
    batch being written and never leaves a line half-written in the middle of the file."""

    def __init__(self, path: Path, head: dict) -> None:
        self.path = Path(path)
        try:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        except OSError as e:
            raise BadTrace(f"cannot write trace {self.path}: {e.strerror}") from None
        self.write([head])

    def write(self, records: list[dict]) -> None:
        if not records:
            return
        data = "".join(dumps(r) + "\n" for r in records).encode()
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]

    def close(self) -> None:
        if self.fd >= 0:
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = -1


def check_header(path: Path, rec: object) -> dict:
    """The header line, or BadTrace saying why it is not one this rsttrace can read."""
    if not isinstance(rec, dict) or rec.get("type") != "header" or rec.get("format") != FORMAT:
        raise BadTrace(f"{path}:1: not an rsttrace trace (no header line)")
    version = rec.get("version")
    if not isinstance(version, int) or version < 1:
        raise BadTrace(f"{path}:1: trace header has no valid format version ({version!r})")
    if version not in READABLE:
        raise BadTrace(f"{path}:1: trace format version {version} is newer than this "
                       f"rsttrace understands ({VERSION})")
    return rec


def line_error(line: bytes, e: ValueError) -> str:
    if not line.endswith(b"\n"):
        return "truncated last line"
    if isinstance(e, json.JSONDecodeError):
        return f"invalid JSON ({e.msg})"
    return "not UTF-8 text"


def read(path: Path) -> Iterator[dict]:
    """Yield the records of a trace; the header first. A malformed line raises BadTrace naming
    the file and line; records before it have already been yielded."""
    path = Path(path)
    try:
        f = open(path, "rb")
    except OSError as e:
        raise BadTrace(f"{path}: {e.strerror}") from None
    with f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                if lineno == 1:
                    raise BadTrace(f"{path}:1: not an rsttrace trace (no header line)")
                continue
            try:
                rec = json.loads(line)
            except ValueError as e:
                raise BadTrace(f"{path}:{lineno}: {line_error(line, e)}") from None
            if lineno == 1:
                check_header(path, rec)
            elif not isinstance(rec, dict) or not isinstance(rec.get("type"), str):
                raise BadTrace(f"{path}:{lineno}: not a trace record (no \"type\")")
            yield rec
