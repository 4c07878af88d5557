"""Exit statuses and the exceptions that map to them (one place, used by the CLI)."""

from __future__ import annotations

from enum import IntEnum


class ExitStatus(IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2  # click's own code for bad options
    NOT_ROOT = 3
    NO_BTF = 4
    NO_TRACEFS = 5
    NO_TRACEPOINT = 6
    NO_BCC = 7
    BPF_LOAD = 8
    BAD_FILTER = 9
    BAD_TRACE = 10
    NO_COMPILER = 11
    NO_PLAN = 12  # --plan kprobe where the kernel refuses kprobes
    OUTPUT = 13  # an output failed while running: disk full, I/O error, stdout closed


class RsttraceError(Exception):
    """An error the user can act on: printed as one line, no traceback."""

    status = ExitStatus.ERROR

    def __init__(self, message: str, status: ExitStatus | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class NotRoot(RsttraceError):
    status = ExitStatus.NOT_ROOT


class NoBtf(RsttraceError):
    status = ExitStatus.NO_BTF


class NoTracefs(RsttraceError):
    status = ExitStatus.NO_TRACEFS


class NoTracepoint(RsttraceError):
    status = ExitStatus.NO_TRACEPOINT


class NoBcc(RsttraceError):
    status = ExitStatus.NO_BCC


class BpfLoadError(RsttraceError):
    status = ExitStatus.BPF_LOAD


class PlanUnavailable(RsttraceError):
    status = ExitStatus.NO_PLAN


class BadFilter(RsttraceError):
    status = ExitStatus.BAD_FILTER


class BadTrace(RsttraceError):
    status = ExitStatus.BAD_TRACE


class NoCompiler(RsttraceError):
    status = ExitStatus.NO_COMPILER


class OutputFailed(RsttraceError):
    """Writing an output failed part-way (ENOSPC, EIO) or stdout was closed (EPIPE)."""

    status = ExitStatus.OUTPUT

    def __init__(self, message: str, stdout_closed: bool = False) -> None:
        super().__init__(message)
        self.stdout_closed = stdout_closed
