"""Run the real `rsttrace` CLI as a subprocess, wait for its ready-file, stop it with SIGTERM."""

from __future__ import annotations

import contextlib
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

from . import incident_dump

# Readiness and drain deadlines; an emulated VM compiles the BPF programs several times slower
# (vagrant/guest-suite scales them).
TIMEOUT_SCALE = float(os.environ.get("RSTTRACE_TEST_TIMEOUT_SCALE", "1"))
# Start-up is counted in the tracer's own CPU time, not the wall clock's: compiling and loading
# the BPF programs is CPU-bound (about 1 s of CPU here), and on a loaded machine the tracer gets
# only its share of a CPU. With 8 busy processes on 2 CPUs it was ready after 6.5 s of wall time
# for the same 1.06 s of CPU; next to other VMs at a load of 7-11 a wall-clock deadline was
# missed. A CPU budget holds however busy the machine is (test_under_load.py runs with every
# CPU busy); a tracer that is stuck, not starved, is caught by START_STALL: no CPU used at all
# for that long (the scheduler gives a runnable task of equal priority some CPU every few ms).
START_TIMEOUT = 30.0 * TIMEOUT_SCALE
START_STALL = 30.0 * TIMEOUT_SCALE
STOP_TIMEOUT = 30.0 * TIMEOUT_SCALE


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system, its reaped children's included) a process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


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
        began = last_progress = time.monotonic()
        used = 0.0
        while not self.ready.exists():
            if self.proc.poll() is not None:
                self._err_reader.join(STOP_TIMEOUT)  # the reader holds what it printed
                raise RuntimeError(f"rsttrace exited early ({self.proc.returncode}): {''.join(self._err)}")
            now = time.monotonic()
            with contextlib.suppress(OSError):  # it may exit between the poll and the read
                cpu = cpu_seconds(self.proc.pid)
                if cpu > used:
                    used, last_progress = cpu, now
            if used > START_TIMEOUT or now - last_progress > START_STALL:
                self.proc.kill()
                self.proc.wait()
                self._err_reader.join(STOP_TIMEOUT)
                why = (
                    f"after {used:.1f}s of its own CPU time"
                    if used > START_TIMEOUT
                    else f"and used no CPU for {now - last_progress:.1f}s"
                )
                raise RuntimeError(
                    f"rsttrace not ready {why} ({now - began:.1f}s since it started): {''.join(self._err)}"
                )
            time.sleep(0.02)  # polling for readiness, not waiting for an effect
        # How long start-up took, in wall and CPU time (test_under_load reports both).
        Tracer.started.append((time.monotonic() - began, used))
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
