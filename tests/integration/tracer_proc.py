"""Run the real `rsttrace` CLI as a subprocess, wait for its ready-file, stop it with SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

START_TIMEOUT = 120.0  # bcc compiles the programs first: ~4x slower under qemu TCG


def kernel_has_kprobes() -> bool:
    """Checked apart from the tracer's own trial: the kernel offers kprobe events."""
    return any(os.path.exists(f"{t}/kprobe_events") for t in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"))


def expected_plan() -> str:
    """The plan the tracer must use here: the forced one, else kprobe exactly when the
    kernel has kprobes."""
    return os.environ.get("RSTTRACE_TEST_PLAN") or ("kprobe" if kernel_has_kprobes() else "tracepoint")


class Tracer:
    def __init__(self, *args: str, settle: float = 0.3) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="rsttrace-test-"))
        self.ready = self.dir / "ready"
        self.trace = self.dir / "trace.jsonl"
        # RSTTRACE_TEST_PLAN=kprobe|tracepoint runs the whole suite on one plan (tests/vm/vng-run).
        plan = os.environ.get("RSTTRACE_TEST_PLAN")
        self.argv = [sys.executable, "-m", "tracer", "--json", "--settle", str(settle),
                     "--ready-file", str(self.ready), "-o", str(self.trace),
                     *(["--plan", plan] if plan else []), *args]

    def __enter__(self) -> "Tracer":
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + START_TIMEOUT
        while not self.ready.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"rsttrace exited early ({self.proc.returncode}): {self.proc.stderr.read()}")
            if time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError(f"rsttrace not ready after {START_TIMEOUT}s: {self.proc.stderr.read()}")
            time.sleep(0.02)  # polling for readiness, not waiting for an effect
        return self

    def stop(self) -> tuple[list[dict], str, int]:
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=30)
        self.incidents = [json.loads(line) for line in out.splitlines() if line.strip()]
        self.stderr = err
        self.returncode = self.proc.returncode
        return self.incidents, err, self.proc.returncode

    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.trace.read_text().splitlines()]

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
