"""Trace files: JSON Lines with a versioned header; every line is written whole."""

from __future__ import annotations

import errno
import json
import os
import platform
import stat
import time
import uuid
from pathlib import Path
from typing import Iterator

from .errors import BadTrace, OutputFailed
from .events import EVENT_COLUMNS, EVENT_MINIMUM

try:  # Every incident (and with -o every event) is written as JSON: orjson takes a tenth of the time.
    import orjson as _orjson

    def dumps(obj) -> str:
        """One compact JSON line (no newline)."""
        return _orjson.dumps(obj, option=_orjson.OPT_NON_STR_KEYS).decode()

    _loads = _orjson.loads
except ImportError:  # pragma: no cover - orjson is a dependency; this keeps odd installs working

    def dumps(obj) -> str:
        """One compact JSON line (no newline)."""
        return json.dumps(obj, separators=(",", ":"))

    def _loads(data):
        def refuse(name):
            raise ValueError(f"{name} is not valid JSON")

        return json.loads(data, parse_constant=refuse)


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
        "type": "header",
        "format": FORMAT,
        "version": VERSION,
        "kernel": platform.release(),
        "host": platform.node(),
        "plan": plan,
        "filters": filters,
        **clk,
        "boot_id": _boot_id(),
        "trace_id": uuid.uuid4().hex,
    }


def recordings(head: dict, path: Path) -> list[dict]:
    """The recordings a trace holds, as `sources` entries: one, or several for a merged trace
    (whose events and incidents say which with `src`)."""
    if head.get("sources"):
        return [
            dict(s, file=s.get("file") or str(path), label=s.get("label") or Path(s.get("file") or path).name)
            for s in head["sources"]
        ]
    return [
        {
            "label": Path(path).name,
            "file": str(path),
            "host": head.get("host"),
            "kernel": head.get("kernel"),
            "version": head.get("version"),
            "wall_offset_ns": head.get("wall_offset_ns") or None,
            "boot_id": head.get("boot_id"),
            "trace_id": head.get("trace_id"),
            "filters": head.get("filters"),
        }
    ]


class TraceWriter:
    """Appends complete lines with one write(2) per batch, so a kill -9 loses at most the
    batch being written and never leaves a line half-written in the middle of the file.

    The file is created with O_NOFOLLOW (a symlink planted at the path is refused, never
    followed) and mode 0600 unless `mode` says otherwise. When a write fails (disk full, I/O
    error), the file is cut back to its last complete line and OutputFailed is raised; the
    writer is then `failed` and takes nothing more except `write_final`."""

    def __init__(self, path: Path, head: dict, mode: int = 0o600) -> None:
        self.path = Path(path)
        self.failed: str | None = None
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags | os.O_NONBLOCK, mode)
        except OSError as e:
            why = "it is a symbolic link (refused)" if e.errno == errno.ELOOP else e.strerror
            raise BadTrace(f"cannot write trace {self.path}: {why}") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise BadTrace(f"cannot write trace {self.path}: not a regular file")
        os.set_blocking(fd, True)
        self.fd = fd
        self.good = 0  # bytes of complete lines in the file
        self.write([head])

    def write(self, records: list[dict]) -> None:
        if not records:
            return
        if self.failed or self.fd < 0:
            raise OutputFailed(f"cannot write trace {self.path}: {self.failed or 'closed'}")
        data = "".join(dumps(r) + "\n" for r in records).encode()
        view = memoryview(data)
        try:
            while view:
                n = os.write(self.fd, view)
                view = view[n:]
        except OSError as e:
            self.failed = e.strerror or str(e)
            try:  # never leave half a line: cut back to the last complete one
                os.ftruncate(self.fd, self.good)
            except OSError:
                pass
            raise OutputFailed(f"cannot write trace {self.path}: {self.failed}") from None
        self.good += len(data)

    def write_final(self, record: dict) -> bool:
        """The summary line, also after a failure (cutting back may have made room)."""
        if self.fd < 0:
            return False
        failed, self.failed = self.failed, None
        try:
            self.write([record])
            return True
        except OutputFailed:
            return False
        finally:
            self.failed = self.failed or failed

    def close(self) -> None:
        if self.fd >= 0:
            try:
                os.fsync(self.fd)
            except OSError:
                pass
            os.close(self.fd)
            self.fd = -1


def open_output(path: Path, mode: int = 0o600):
    """A binary file object for a new output at `path`, written under a temporary name in the
    same folder: commit() renames it into place (replacing a symlink there, never following
    it), discard() removes it. Nothing at `path` is touched until commit."""
    return _AtomicOutput(Path(path), mode)


class _AtomicOutput:
    def __init__(self, path: Path, mode: int) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        except OSError as e:
            raise BadTrace(f"cannot write {path}: {e.strerror}") from None
        self.file = os.fdopen(fd, "wb")

    def commit(self) -> None:
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.replace(self.tmp, self.path)
        except OSError as e:
            self.discard()
            raise OutputFailed(f"cannot write {self.path}: {e.strerror or e}") from None

    def discard(self) -> None:
        try:
            self.file.close()
        except OSError:
            pass
        try:
            os.unlink(self.tmp)
        except OSError:
            pass


# -- reading: one validation at the edge -------------------------------------------------------

MAX_LINE = 1 << 20  # bytes; a longer line is skipped (bounded memory per line)
MAX_DEPTH = 16  # nesting of objects and lists in one record (rsttrace writes 4)
MAX_BAD_SHOWN = 10  # bad lines named one by one per file; the rest are counted
_I64 = (-(1 << 63), (1 << 63) - 1)
_U64 = (0, (1 << 64) - 1)
_I32 = (-(1 << 31), (1 << 31) - 1)
# Event fields and the integer range of their column (tracer/frame.py types them so).
# From the one schema of an event (tracer/events.py EVENT_COLUMNS), plus `src` (merge's).
_RANGES = {"int64": _I64, "int32": _I32, "uint64": _U64}
EVENT_INT_RANGES = {
    k: (EVENT_MINIMUM.get(k, _RANGES[t][0]), _RANGES[t][1]) for k, t in EVENT_COLUMNS.items() if t in _RANGES
} | {"src": (0, _I32[1])}
EVENT_STR_FIELDS = tuple(k for k, t in EVENT_COLUMNS.items() if t == "string")


class LineError(ValueError):
    """Why one line is not a record this rsttrace can use."""


def _walk(v, depth: int = 1) -> None:
    """Nesting depth, integer range and finite numbers of a decoded JSON value."""
    if depth > MAX_DEPTH:
        raise LineError(f"nested deeper than {MAX_DEPTH} levels")
    t = type(v)
    if t is dict:
        for x in v.values():
            if type(x) in (dict, list):
                _walk(x, depth + 1)
            else:
                _walk(x, depth)
    elif t is list:
        for x in v:
            if type(x) in (dict, list):
                _walk(x, depth + 1)
            else:
                _walk(x, depth)
    elif t is int:
        if not _I64[0] <= v <= _U64[1]:
            raise LineError("integer out of 64-bit range")
    elif t is float:
        if v != v or v in (float("inf"), float("-inf")):
            raise LineError("number is not finite")


def _int_field(rec: dict, name: str, rng=_I64, required: bool = False, what: str = "") -> None:
    v = rec.get(name)
    if v is None:
        if required:
            raise LineError(f"{what}without {name}")
        return
    if type(v) is not int:
        raise LineError(f"{what}field {name} is not an integer ({_short(v)})")
    if not rng[0] <= v <= rng[1]:
        raise LineError(f"{what}field {name} is out of range ({v})")


def _str_field(rec: dict, name: str, required: bool = False, what: str = "") -> None:
    v = rec.get(name)
    if v is None:
        if required:
            raise LineError(f"{what}without {name}")
        return
    if type(v) is not str:
        raise LineError(f"{what}field {name} is not a string ({_short(v)})")


def _obj_field(rec: dict, name: str, what: str = "") -> dict | None:
    v = rec.get(name)
    if v is not None and type(v) is not dict:
        raise LineError(f"{what}field {name} is not an object ({_short(v)})")
    return v


def _short(v) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def check_event(rec: dict) -> None:
    for name, rng in EVENT_INT_RANGES.items():
        _int_field(rec, name, rng, required=name == "ts_ns", what="event ")
    for name in EVENT_STR_FIELDS:
        _str_field(rec, name, required=name == "kind", what="event ")
    flags = rec.get("flags")
    if flags is not None and not (type(flags) is list and all(type(x) is str for x in flags)):
        raise LineError(f"event field flags is not a list of strings ({_short(flags)})")


def _check_side(side: dict, what: str) -> None:
    _int_field(side, "pid", _I64, what=what)
    _str_field(side, "comm", what=what)
    _int_field(side, "src", (0, _I32[1]), what=what)
    errors = side.get("errors")
    if errors is not None:
        if type(errors) is not list:
            raise LineError(f"{what}field errors is not a list")
        for e in errors:
            if type(e) is not dict or type(e.get("call")) is not str or type(e.get("errno")) is not str:
                raise LineError(f"{what}error entry is not {{call, errno}} ({_short(e)})")


def check_incident(rec: dict) -> None:
    w = "incident "
    _int_field(rec, "id", _I64, required=True, what=w)
    _str_field(rec, "kind", required=True, what=w)
    _int_field(rec, "src", (0, _I32[1]), what=w)
    _int_field(rec, "bytes_discarded", _I64, what=w)
    _int_field(rec, "netns", _I64, what=w)
    for name in ("reason", "family", "state", "summary", "explanation", "advice"):
        _str_field(rec, name, what=w)
    for name in ("local", "remote"):
        end = _obj_field(rec, name, w)
        if end is None:
            raise LineError(f"incident without {name} address")
        _str_field(end, "addr", required=True, what=f"incident {name} ")
        _int_field(end, "port", (0, 65535), required=True, what=f"incident {name} ")
    ts = _obj_field(rec, "timestamps", w)
    if ts is None:
        raise LineError("incident without timestamps")
    _int_field(ts, "first_ns", _I64, required=True, what="incident timestamps ")
    for name, v in ts.items():
        if v is not None and type(v) is not int:
            raise LineError(f"incident timestamp {name} is not an integer ({_short(v)})")
    for name in ("culprit", "victim", "owner"):
        side = _obj_field(rec, name, w)
        if side is not None:
            _check_side(side, f"incident {name} ")
    # The integer columns of the incidents table, however the record spells them (a nested
    # field is flattened to victim_port, close_wait_age_ns, ...): integers of 64 bits or nothing.
    from .frame import INCIDENT_INTS, flatten_incident

    row = flatten_incident(rec)
    for name in INCIDENT_INTS:
        v = row.get(name)
        if v is not None and (type(v) is not int or not _I64[0] <= v <= _I64[1]):
            raise LineError(f"incident field {name} is not a 64-bit integer ({_short(v)})")


def check_header(path: Path, rec: object) -> dict:
    """The header line, or BadTrace saying why it is not one this rsttrace can read."""
    if not isinstance(rec, dict) or rec.get("type") != "header" or rec.get("format") != FORMAT:
        raise BadTrace(f"{path}:1: not an rsttrace trace (no header line)")
    version = rec.get("version")
    if type(version) is not int or version < 1:
        raise BadTrace(f"{path}:1: trace header has no valid format version ({_short(version)})")
    if version not in READABLE:
        raise BadTrace(f"{path}:1: trace format version {version} is newer than this rsttrace understands ({VERSION})")
    try:
        _walk(rec)
        for name in ("host", "kernel", "boot_id", "trace_id"):
            _str_field(rec, name, what="header ")
        _int_field(rec, "wall_offset_ns", _I64, what="header ")
        for name in ("plan", "filters"):
            _obj_field(rec, name, "header ")
        sources = rec.get("sources")
        if sources is not None:
            if type(sources) is not list or not sources or len(sources) > 1 << 16:
                raise LineError("header field sources is not a list of recordings")
            for s in sources:
                if type(s) is not dict:
                    raise LineError("header field sources is not a list of recordings")
                for name in ("label", "file", "host", "kernel", "boot_id", "trace_id"):
                    _str_field(s, name, what="header source ")
                _int_field(s, "wall_offset_ns", _I64, what="header source ")
                _int_field(s, "version", _I64, what="header source ")
                _obj_field(s, "filters", "header source ")
    except LineError as e:
        raise BadTrace(f"{path}:1: {e}") from None
    return rec


def parse_record(line: bytes) -> dict:
    """One line -> a validated record (a dict with a string "type"), or LineError saying why
    not. Nothing malformed gets past: types, ranges, finite numbers, nesting, length."""
    if len(line) > MAX_LINE:
        raise LineError(f"line longer than {MAX_LINE} bytes")
    try:
        rec = _loads(line)
    except ValueError as e:  # orjson: also NaN, Infinity, bad UTF-8, >1024 levels
        msg = str(e).split(":", 1)[0] if str(e) else "invalid JSON"
        if "UTF-8" in msg or "utf-8" in msg:
            raise LineError("not UTF-8 text") from None
        raise LineError(f"invalid JSON ({msg})") from None
    except RecursionError:
        raise LineError(f"nested deeper than {MAX_DEPTH} levels") from None
    if type(rec) is not dict or type(rec.get("type")) is not str:
        raise LineError('not a trace record (no "type")')
    _walk(rec)
    kind = rec["type"]
    if kind == "event":
        check_event(rec)
    elif kind == "incident":
        check_incident(rec)
    elif kind == "summary":
        stats = rec.get("stats")
        if stats is not None and type(stats) is not dict:
            raise LineError("summary field stats is not an object")
        _int_field(rec, "src", (0, _I32[1]), what="summary ")
    elif kind == "header":
        raise LineError("a second header line")
    return rec


def open_regular(path: Path):
    """A binary file object for reading `path`, refused in one line unless it is a regular
    file (a FIFO or /dev/zero would block or never end)."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        raise BadTrace(f"{path}: {e.strerror}") from None
    except ValueError:
        raise BadTrace(f"{path}: invalid file name") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise BadTrace(f"{path}: is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise BadTrace(f"{path}: not a regular file (a FIFO, device or socket is not a trace)")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def lines_of(f) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, line without its newline, whether it had one); a line longer than
    MAX_LINE comes back cut to MAX_LINE + 1 bytes (the rest is skipped, never held)."""
    lineno = 0
    while True:
        line = f.readline(MAX_LINE + 1)
        if not line:
            return
        lineno += 1
        if line.endswith(b"\n"):
            yield lineno, line[:-1], True
            continue
        if len(line) <= MAX_LINE:
            yield lineno, line, False  # the last line, without a newline
            return
        while True:  # too long: skip to the end of this line
            chunk = f.readline(1 << 16)
            if not chunk or chunk.endswith(b"\n"):
                break
        yield lineno, line, True


class Reader:
    """Records of one trace file, validated. A bad line is skipped and named in `warnings`
    (FILE:LINE: why), or with strict=True raises BadTrace naming it; `bad` counts them.
    File-level problems (missing, not a regular file, no header) raise BadTrace."""

    def __init__(self, path: Path, strict: bool = False) -> None:
        self.path = Path(path)
        self.strict = strict
        self.bad = 0
        self.warnings: list[str] = []
        self.header: dict | None = None

    def _bad(self, lineno: int, why: str) -> None:
        if self.strict:
            raise BadTrace(f"{self.path}:{lineno}: {why}")
        self.bad += 1
        if self.bad <= MAX_BAD_SHOWN:
            self.warnings.append(f"{self.path}:{lineno}: {why} (line skipped)")

    def finish(self) -> None:
        if self.bad > MAX_BAD_SHOWN:
            self.warnings.append(
                f"{self.path}: {self.bad} bad line(s) skipped in all ({self.bad - MAX_BAD_SHOWN} more not named)"
            )

    def records(self) -> Iterator[tuple[int, bytes, dict]]:
        """(line number, raw line, record) for the header and each valid record after it."""
        with open_regular(self.path) as f:
            first = True
            for lineno, line, had_nl in lines_of(f):
                if first:
                    first = False
                    if line.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte order mark (an editor's)
                        line = line[3:]
                    if not line.strip():
                        raise BadTrace(f"{self.path}:1: not an rsttrace trace (no header line)")
                    try:
                        if len(line) > MAX_LINE:
                            raise LineError(f"line longer than {MAX_LINE} bytes")
                        head = _loads(line)
                    except ValueError as e:
                        why = (
                            "truncated last line"
                            if not had_nl
                            else (str(e) if isinstance(e, LineError) else line_error(line + b"\n", e))
                        )
                        raise BadTrace(f"{self.path}:1: {why}") from None
                    self.header = check_header(self.path, head)
                    yield lineno, line, head
                    continue
                if not line.strip():
                    continue
                try:
                    rec = parse_record(line)
                except LineError as e:
                    self._bad(lineno, "truncated last line" if not had_nl else str(e))
                    continue
                yield lineno, line, rec
            if first:
                raise BadTrace(f"{self.path}:1: not an rsttrace trace (empty file)")
        self.finish()


def line_error(line: bytes, e: ValueError) -> str:
    if not line.endswith(b"\n"):
        return "truncated last line"
    msg = str(e)
    if "UTF-8" in msg or "utf-8" in msg or isinstance(e, UnicodeDecodeError):
        return "not UTF-8 text"
    if isinstance(e, json.JSONDecodeError):
        return f"invalid JSON ({e.msg})"
    return f"invalid JSON ({msg.split(':', 1)[0]})" if msg else "invalid JSON"


def read(path: Path, strict: bool = True, warnings: list[str] | None = None) -> Iterator[dict]:
    """Yield the validated records of a trace; the header first. A bad line raises BadTrace
    naming the file and line (records before it have been yielded), or with strict=False is
    skipped and named in `warnings`."""
    r = Reader(path, strict=strict)
    try:
        for _lineno, _line, rec in r.records():
            yield rec
    finally:
        if warnings is not None:
            warnings.extend(r.warnings)
