"""Trace files: JSON Lines with a versioned header; every line is written whole."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Iterator

from .errors import BadTrace

FORMAT = "rsttrace"
VERSION = 1


def header(plan: dict | None, filters: dict, wall_offset_ns: int) -> dict:
    return {
        "type": "header", "format": FORMAT, "version": VERSION,
        "kernel": platform.release(), "host": platform.node(), "plan": plan,
        "filters": filters, "wall_offset_ns": wall_offset_ns,
    }


class TraceWriter:
    """Appends complete lines with one write(2) per batch, so a kill -9 loses at most the
    batch being written and never leaves a line half-written in the middle of the file."""

    def __init__(self, path: Path, head: dict) -> None:
        self.path = Path(path)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self.write([head])

    def write(self, records: list[dict]) -> None:
        if not records:
            return
        data = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records).encode()
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]

    def close(self) -> None:
        if self.fd >= 0:
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = -1


def read(path: Path) -> Iterator[dict]:
    """Yield the records of a trace; the header first. A malformed line raises BadTrace naming
    the file and line; records before it have already been yielded."""
    path = Path(path)
    try:
        f = open(path, encoding="utf-8")
    except OSError as e:
        raise BadTrace(f"{path}: {e.strerror}") from None
    with f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                what = "truncated last line" if not line.endswith("\n") else f"invalid JSON ({e.msg})"
                raise BadTrace(f"{path}:{lineno}: {what}") from None
            if lineno == 1 and (rec.get("type") != "header" or rec.get("format") != FORMAT):
                raise BadTrace(f"{path}:1: not an rsttrace trace (no header line)")
            if lineno == 1 and rec.get("version", 0) > VERSION:
                raise BadTrace(f"{path}:1: trace format version {rec['version']} is newer than this "
                               f"rsttrace understands ({VERSION})")
            yield rec
