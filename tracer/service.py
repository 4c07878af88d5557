"""`rsttrace service`: trace unattended, for systemd (packaging/systemd/rsttrace.service).

- The JSON Lines trace (events, incidents, CLOSE_WAIT counts, the summary) goes into a
  directory as rotating files (tracer/rotate.py): by size and age, under a total cap.
- SIGHUP starts a new file (logrotate's convention); SIGTERM and SIGINT end the run: the last
  batch is drained and written, and the summary line closes the last file.
- Lines for people (start, lost events, CLOSE_WAIT notes, reopen, the end) go to stderr,
  which systemd puts in the journal.
- Nothing is restarted here: when the kernel side fails (loading, attaching, polling) or the
  disk refuses the trace, the service exits non-zero with one line (the exit codes of
  README: Exit codes) and leaves restarting to systemd (Restart=on-failure).
- --metrics serves OpenMetrics (tracer/metrics.py).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .config import Config
from .errors import ExitStatus, OutputFailed, RsttraceError
from .rotate import Limits, RotatingWriter

PREFIX = "rsttrace"
LOST_LOG_S = 10.0


def log(line: str) -> None:
    """One line on stderr (the journal under systemd)."""
    try:
        sys.stderr.write(line.replace("\n", " ") + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


class KernelSideFailed(RsttraceError):
    status = ExitStatus.ERROR


@dataclass
class ServiceOptions:
    directory: Path
    limits: Limits
    metrics_addr: tuple[str, int] | None = None
    metrics_top_n: int = 10


def prepare_dir(directory: Path) -> Path:
    """The trace directory: created 0750 if missing; it must be a real directory."""
    d = Path(directory)
    try:
        d.mkdir(mode=0o750, parents=True, exist_ok=True)
    except OSError as e:
        raise OutputFailed(f"cannot create trace directory {d}: {e.strerror}") from None
    if d.is_symlink() or not d.is_dir():
        raise OutputFailed(f"trace directory {d} is not a directory")
    if not os.access(d, os.W_OK | os.X_OK):
        raise OutputFailed(f"trace directory {d} is not writable")
    return d


class Service:
    def __init__(self, cfg: Config, opts: ServiceOptions, note: Callable[[str], None] = log) -> None:
        self.cfg, self.opts, self.note = cfg, opts, note
        self.writer: RotatingWriter | None = None
        self.metrics = None
        self.pending: list[dict] = []
        self.failure: RsttraceError | None = None
        self.incidents = 0
        self.hup = False
        self.session = None
        self._lost_logged = -LOST_LOG_S

    # -- sinks (they run inside bcc's callbacks: they never raise) -------------------------
    def _fail(self, e: RsttraceError) -> None:
        if self.failure is None:
            self.failure = e
        self.session.exiting = True

    def _event(self, ev) -> None:
        self.pending.append(ev.to_dict())

    def _incident(self, inc: dict) -> None:
        self.pending.append(inc)
        self.incidents += 1
        if self.metrics is not None:
            self.metrics.incident(inc)

    def _record(self, rec: dict) -> None:
        self.pending.append(rec)

    def _lost(self, total: int) -> None:
        # At most one line per LOST_LOG_S in a storm (the session reports after every batch);
        # the metric and the summary line always have the exact total.
        now = time.monotonic()
        if now >= self._lost_logged + LOST_LOG_S:
            self._lost_logged = now
            self.note(f"rsttrace: {total} event(s) lost so far (ring buffer full); incidents may be incomplete")
        if self.metrics is not None:
            self.metrics.lost_total(total)

    def _flush(self) -> None:
        if self.writer is None or self.failure is not None:
            self.pending.clear()
            return
        try:
            if self.hup:
                self.hup = False
                self.writer.write(self.pending)
                self.pending = []
                path = self.writer.reopen()
                self.note(f"rsttrace: SIGHUP: now writing {path}")
            self.writer.write(self.pending)
            self.writer.tick()
        except RsttraceError as e:
            self._fail(e)
        finally:
            self.pending = []

    # -- the run ---------------------------------------------------------------------------
    def _head(self) -> dict:
        from .tracefile import header

        s = self.session
        return header(s.plan.describe(), self.cfg.filters.describe(), s.wall_offset_ns)

    def run(self) -> int:
        from .session import Session, Sinks

        directory = prepare_dir(self.opts.directory)
        if self.opts.metrics_addr is not None:
            from .metrics import Metrics

            self.metrics = Metrics(top_n=self.opts.metrics_top_n)
        session = self.session = Session(self.cfg)
        session.sinks = Sinks(
            on_incident=self._incident,
            on_lost=self._lost,
            on_record=self._record,
            on_note=self.note,
            on_flush=self._flush,
            on_event=self._event,
        )
        session.install_signal_handlers()
        signal.signal(signal.SIGHUP, self._on_hup)
        try:
            session.start()
        except RsttraceError:
            raise
        except Exception as e:  # noqa: BLE001 - bcc raises plain Exceptions
            raise KernelSideFailed(f"rsttrace service: the kernel side failed to start: {e}") from None
        kernel_error: Exception | None = None
        stats: dict = {}
        try:
            if self.metrics is not None:
                from .metrics import BpfProgStats

                self.metrics.bpf = BpfProgStats.from_bcc(session.loaded.bpf)
                host, port = self.opts.metrics_addr
                try:
                    self.metrics.serve(host, port)
                except OSError as e:
                    raise OutputFailed(f"cannot serve metrics on {host}:{port}: {e.strerror}") from None
            self.writer = RotatingWriter(directory, self._head, self.opts.limits, prefix=PREFIX, on_note=self.note)
            where = (
                f"; metrics on http://{self.opts.metrics_addr[0]}:{self.opts.metrics_addr[1]}/metrics"
                if self.metrics
                else ""
            )
            self.note(f"rsttrace service: tracing ({session.plan.name} plan), writing {directory}{where}")
            try:
                session.run()
            except RsttraceError as e:
                self.failure = self.failure or e
            except Exception as e:  # noqa: BLE001 - polling the kernel's buffers failed
                kernel_error = e
        finally:
            try:
                session.stop()
            except Exception as e:  # noqa: BLE001
                kernel_error = kernel_error or e
            stats = getattr(session, "final_stats", {})
            if self.metrics is not None and "lost" in stats:
                self.metrics.lost_total(stats["lost"])
            if self.writer is not None:
                self._flush_final()
                final = {"type": "summary", "stats": stats, "incidents": self.incidents}
                if self.failure is not None:
                    final["error"] = str(self.failure)
                self.writer.close(final)
            if self.metrics is not None:
                self.metrics.shutdown()
        if kernel_error is not None:
            raise KernelSideFailed(f"rsttrace service: the kernel side failed: {kernel_error}")
        if self.failure is not None:
            raise self.failure
        self.note(
            f"rsttrace service: stopped; {self.incidents} incident(s), events: "
            f"{stats.get('emitted', 0)} emitted, {stats.get('lost', 0)} lost; "
            f"{self.writer.rotations} rotation(s), {self.writer.removed} old file(s) removed"
        )
        return 0

    def _flush_final(self) -> None:
        self.hup = False
        if self.pending and self.failure is None:
            try:
                self.writer.write(self.pending)
            except RsttraceError as e:
                self.failure = self.failure or e
        self.pending = []

    def _on_hup(self, _sig, _frame) -> None:
        self.hup = True
