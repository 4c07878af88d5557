"""Run the real `rsttrace` CLI as a subprocess, wait for its ready-file, stop it with SIGTERM."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from testbed.ready import TIMEOUT_SCALE, wait_ready

from . import incident_dump

# Readiness (testbed/ready.py) and drain deadlines; an emulated VM compiles the BPF programs
# several times slower (vagrant/guest-suite scales them).
STOP_TIMEOUT = 30.0 * TIMEOUT_SCALE


def kernel_has_kprobes() -> bool:
    """Checked apart from the tracer's own trial: the kernel offers kprobe events."""
    return any(os.path.exists(f"{t}/kprobe_events") for t in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"))


def expected_plan() -> str:
    """The plan the tracer must use here: the forced one, else kprobe exactly when the
    kernel has kprobes."""
    forced = os.environ.get("RSTTRACE_TEST_PLAN", "auto")
    if forced != "auto":
        return forced
    return "kprobe" if kernel_has_kprobes() else "tracepoint"


class Tracer:
    """dump=False: the test picks the incidents that are its own and calls dump() itself
    (a host-wide tracer may also see other programs' resets)."""

    started: list[tuple[float, float]] = []  # (wall s, CPU s) each start-up took, in order

    def __init__(self, *args: str, settle: float = 0.3, dump: bool = True) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="rsttrace-test-"))
        self.ready = self.dir / "ready"
        self.trace = self.dir / "trace.jsonl"
        self.auto_dump = dump
        # RSTTRACE_TEST_PLAN=kprobe|tracepoint runs the whole suite on one plan (the VM suites run each).
        plan = os.environ.get("RSTTRACE_TEST_PLAN")
        # Quiet time before an incident is reported: longer where everything runs slower, or a
        # victim's next call (a few scheduler ticks later) would come after its incident.
        settle *= min(TIMEOUT_SCALE, 4.0)
        self.argv = [
            sys.executable,
            "-m",
            "tracer",
            "--json",
            "--settle",
            str(settle),
            "--ready-file",
            str(self.ready),
            "-o",
            str(self.trace),
            *(["--plan", plan] if plan else []),
            *args,
        ]

    def __enter__(self) -> "Tracer":
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._out: list[str] = []
        self._err: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._err_reader = threading.Thread(target=lambda: self._err.extend(self.proc.stderr), daemon=True)  # type: ignore[arg-type]
        self._err_reader.start()

        def kill() -> None:
            self.proc.kill()
            self.proc.wait()
            self._err_reader.join(STOP_TIMEOUT)

        def errors() -> str:
            if self.proc.poll() is not None:
                self._err_reader.join(STOP_TIMEOUT)  # the reader holds what it printed
            return "".join(self._err)

        took = wait_ready(self.ready, self.proc.pid, self.proc.poll, errors, kill)
        # How long start-up took, in wall and CPU time (test_under_load reports both).
        Tracer.started.append(took)
        return self

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip():
                self._out.append(line)
                self._lines.put(line)
        self._lines.put(None)

    def wait_incident(self, timeout: float = 10.0) -> dict:
        """The next incident printed on stdout (blocking for it, not sleeping)."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no incident within {timeout}s") from None
        if line is None:
            raise AssertionError(f"rsttrace ended without another incident: {''.join(self._err)}")
        return json.loads(line)

    def wait_stderr(self, text: str, timeout: float = 10.0) -> None:
        """Poll what rsttrace printed on stderr until `text` shows up."""
        deadline = time.monotonic() + timeout
        while not any(text in line for line in list(self._err)):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"{text!r} not on stderr within {timeout}s: {''.join(self._err)}")
            time.sleep(0.02)  # polling output, not waiting for an effect

    def stop(self) -> tuple[list[dict], str, int]:
        if getattr(self, "returncode", None) is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=STOP_TIMEOUT)
            self._reader.join(STOP_TIMEOUT)
            self._err_reader.join(STOP_TIMEOUT)
            self.incidents = [json.loads(line) for line in self._out]
            self.stderr = "".join(self._err)
            self.returncode = self.proc.returncode
            if self.auto_dump:
                self.dump(self.incidents)
        return self.incidents, self.stderr, self.returncode

    def dump(self, incidents: list[dict]) -> None:
        """Record these incidents, normalised, for the comparison across kernels."""
        records = self.records() if self.trace.exists() and self.trace.stat().st_size else []
        incident_dump.dump(incidents, records[0] if records and records[0].get("type") == "header" else None)

    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.trace.read_text().splitlines()]

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
