"""Run `rsttrace service` (or `top`) as a real subprocess: ready-file, deadlines, scrapes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from testbed import ready as ready_

from .tracer_proc import STOP_TIMEOUT, TIMEOUT_SCALE

# The CLI with `service` and `top` added, whether or not tracer/cli.py registers them yet.
CLI = [sys.executable, "-m", "tracer.service_cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def poll(what: str, fn, timeout: float = 20.0, every: float = 0.05):
    """fn() until it returns something true; AssertionError naming `what` past the deadline."""
    deadline = time.monotonic() + timeout * TIMEOUT_SCALE
    last = None
    while True:
        try:
            last = fn()
        except (OSError, ValueError) as e:  # not up yet
            last = e
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s (last: {last!r})")
        time.sleep(every)  # polling, with a deadline


def wait_ready(proc: subprocess.Popen, ready: Path, err_path: Path) -> None:
    def kill() -> None:
        proc.kill()
        proc.wait()

    ready_.wait_ready(ready, proc.pid, proc.poll, err_path.read_text, kill)


def scrape(port: int) -> dict:
    """{(name, labels...): value} from http://127.0.0.1:PORT/metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, *sorted(s.labels.items()))] = s.value
    return out


def metric(port: int, name: str, **labels) -> float:
    return scrape(port).get((name, *sorted(labels.items())), 0.0)


class Service:
    def __init__(
        self, *args: str, directory: Path | None = None, metrics_port: int | None = None, env: dict | None = None
    ) -> None:
        self.env = dict(os.environ, **(env or {}))
        self.tmp = Path(tempfile.mkdtemp(prefix="rsttrace-svc-"))
        self.dir = directory or self.tmp / "traces"
        self.ready = self.tmp / "ready"
        self.err_path = self.tmp / "stderr"
        self.port = metrics_port
        plan = os.environ.get("RSTTRACE_TEST_PLAN")
        self.argv = [
            *CLI,
            "service",
            "--dir",
            str(self.dir),
            "--ready-file",
            str(self.ready),
            *(["--plan", plan] if plan else []),
            *(["--metrics", f"127.0.0.1:{metrics_port}"] if metrics_port else []),
            *args,
        ]

    def __enter__(self) -> "Service":
        with open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=err, env=self.env)
        wait_ready(self.proc, self.ready, self.err_path)
        return self

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def scrape(self) -> dict:
        return scrape(self.port)

    def metric(self, name: str, **labels) -> float:
        return metric(self.port, name, **labels)

    def wait_incidents(self, n: int, timeout: float = 30.0) -> None:
        """The service has reported (and so written) n incidents."""
        poll(
            f"{n} incidents",
            lambda: sum(v for k, v in self.scrape().items() if k[0] == "rsttrace_incidents_total") >= n,
            timeout,
        )

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=STOP_TIMEOUT)
        return self.proc.returncode

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
