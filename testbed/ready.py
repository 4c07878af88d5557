"""Start-up of a real rsttrace process (the live tracer, `record`, `service`, `top`, or bcc's
tcpstates in bench/): wait until it traces, or say why it never will. The one copy of it for
tests/, bench/ and notebooks/."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path

# Readiness deadlines; an emulated VM compiles the BPF programs several times slower
# (vagrant/guest-suite scales them).
TIMEOUT_SCALE = float(os.environ.get("RSTTRACE_TEST_TIMEOUT_SCALE", "1") or 1)
# Start-up is counted in the tracer's own CPU time, not the wall clock's: compiling and loading
# the BPF programs is CPU-bound (about 1 s of CPU here), and on a loaded machine the tracer gets
# only its share of a CPU. With 8 busy processes on 2 CPUs it was ready after 6.5 s of wall time
# for the same 1.06 s of CPU; next to other VMs at a load of 7-11 a wall-clock deadline was
# missed. A CPU budget holds however busy the machine is (test_under_load.py runs with every
# CPU busy); a tracer that is stuck, not starved, is caught by START_STALL: no CPU used at all
# for that long (the scheduler gives a runnable task of equal priority some CPU every few ms).
START_TIMEOUT = 30.0 * TIMEOUT_SCALE
START_STALL = 30.0 * TIMEOUT_SCALE


class NotReady(RuntimeError):
    """The process exited, or used its CPU budget, or stalled, before it was ready."""


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system, its reaped children's included) a process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def wait_ready(
    ready: Path | Callable[[], bool],
    pid: int,
    exited: Callable[[], int | None],
    errors: Callable[[], str] = lambda: "",
    kill: Callable[[], None] | None = None,
    what: str = "rsttrace",
    budget: float = START_TIMEOUT,
    stall: float = START_STALL,
) -> tuple[float, float]:
    """Poll until `ready` (a file that appears, or a test) holds; return (wall, CPU) seconds
    the start took. `exited()`: the process's exit status once it has ended (Popen.poll);
    `errors()`: what it printed, for the message; `kill()`: stop it when it is given up on."""
    is_ready = ready.exists if isinstance(ready, Path) else ready
    began = last_progress = time.monotonic()
    used = 0.0
    while not is_ready():
        rc = exited()
        if rc is not None:
            raise NotReady(f"{what} exited early ({rc}): {errors()}")
        now = time.monotonic()
        with contextlib.suppress(OSError):  # it may exit between the poll and the read
            cpu = cpu_seconds(pid)
            if cpu > used:
                used, last_progress = cpu, now
        if used > budget or now - last_progress > stall:
            if kill is not None:
                kill()
            why = (
                f"after {used:.1f}s of its own CPU time"
                if used > budget
                else (f"and used no CPU for {now - last_progress:.1f}s")
            )
            raise NotReady(f"{what} not ready {why} ({now - began:.1f}s since it started): {errors()}")
        time.sleep(0.02)  # polling for readiness, not waiting for an effect
    return time.monotonic() - began, used
