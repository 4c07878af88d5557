"""The OpenMetrics endpoint scraped by a real Prometheus server (Debian's `prometheus`), with
exact values after a known workload, read back through Prometheus' query API."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from testbed import scenarios

from .service_proc import Service, free_port, poll

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(
        not shutil.which("prometheus"), reason="no prometheus server (apt-get install prometheus; run.sh installs it)"
    ),
]


class Prometheus:
    """A private server: temp config and storage, loopback only, 1 s scrapes of one target.
    Debian's own prometheus.service is not used (nor needed)."""

    def __init__(self, target_port: int) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="rsttrace-prom-"))
        self.port = free_port()
        cfg = self.dir / "prometheus.yml"
        cfg.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: rsttrace\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{target_port}']\n"
        )
        self.argv = [
            "prometheus",
            f"--config.file={cfg}",
            f"--storage.tsdb.path={self.dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]

    def __enter__(self) -> "Prometheus":
        self.log = open(self.dir / "log", "wb")
        self.proc = subprocess.Popen(self.argv, stdout=self.log, stderr=subprocess.STDOUT)
        poll("prometheus ready", lambda: self._get("/-/ready").startswith("Prometheus"), timeout=60)
        return self

    def _get(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
            return r.read().decode()

    def query(self, q: str) -> dict:
        """{frozenset(labels without __name__, job, instance): value}"""
        data = json.loads(self._get("/api/v1/query?" + urllib.parse.urlencode({"query": q})))
        assert data["status"] == "success", data
        out = {}
        for r in data["data"]["result"]:
            labels = {k: v for k, v in r["metric"].items() if k not in ("__name__", "job", "instance")}
            out[frozenset(labels.items())] = float(r["value"][1])
        return out

    def wait_for(self, q: str, want: dict, timeout: float = 30.0) -> None:
        """Poll Prometheus until the query gives exactly `want` ({labels dict as tuple: value})."""
        expect = {frozenset(dict(k).items()): v for k, v in want.items()}
        got = {}

        def same():
            nonlocal got
            got = self.query(q)
            return got == expect

        try:
            poll(q, same, timeout=timeout, every=0.25)
        except AssertionError:
            raise AssertionError(f"{q}: {got} != {expect}") from None

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def one(value) -> dict:
    return {(): value}


def test_prometheus_scrapes_exact_values(ns):
    port = free_port()
    # A settle time that holds on a loaded machine: the victim's calls must fall into its incident.
    with (
        Service(
            "--netns",
            str(ns.inode),
            "--settle",
            "2",
            "--close-wait",
            "1",
            "--close-wait-every",
            "0.5",
            "--metrics-top-n",
            "5",
            metrics_port=port,
        ) as svc,
        Prometheus(port) as prom,
    ):
        prom.wait_for('up{job="rsttrace"}', one(1))
        for unread in (1000, 2000, 3000):  # default SIGPIPE: the client dies
            scenarios.unread_close(ns, unread=unread)
        for _ in range(2):  # MSG_NOSIGNAL: EPIPE, the client lives on
            scenarios.unread_close(ns, unread=500, nosignal=True)
        with scenarios.close_wait(ns) as run:
            try:
                prom.wait_for("rsttrace_close_wait_sockets", {(("owner", "rst_server"),): 1})
            except AssertionError as e:
                raise AssertionError(f"{e}; service: {svc.scrape()}; {svc.stderr}") from None
            run.server.send("close")
            run.server.expect("closed")
            prom.wait_for("rsttrace_close_wait_sockets", {(("owner", "rst_server"),): 0})
            run.server.send("exit")
        prom.wait_for("rsttrace_incidents_total", {(("kind", "abort-on-close"),): 5, (("kind", "close-wait"),): 2})
        prom.wait_for(
            "rsttrace_incidents_by_impact_total",
            {(("impact", "killed"),): 3, (("impact", "failed-call"),): 2, (("impact", "unknown"),): 2},
        )
        prom.wait_for("rsttrace_incidents_by_culprit_total", {(("comm", "rst_server"),): 7})
        prom.wait_for("rsttrace_incidents_by_victim_total", {(("comm", "rst_client"),): 5, (("comm", "unknown"),): 2})
        prom.wait_for("rsttrace_bytes_discarded_total", one(7000))
        prom.wait_for("rsttrace_sigpipe_deaths_total", one(3))
        prom.wait_for("rsttrace_events_lost_total", one(0))
        # The tracer's own cost: the process collector, and BPF run time (0 unless the kernel
        # counts it: kernel.bpf_stats_enabled).
        assert prom.query("process_cpu_seconds_total")[frozenset()] > 0
        assert prom.query("process_resident_memory_bytes")[frozenset()] > 10 << 20
        stats_on = Path("/proc/sys/kernel/bpf_stats_enabled").read_text().strip() == "1"
        prom.wait_for("rsttrace_bpf_stats_enabled", one(1 if stats_on else 0))
        runs = prom.query("rsttrace_bpf_runs_total")
        assert runs and all(dict(k).get("program") for k in runs)
        if not stats_on:
            assert set(runs.values()) == {0.0}
        assert svc.stop() == 0, svc.stderr


PROMTOOL_RULES = Path(__file__).resolve().parents[2] / "packaging" / "prometheus" / "rsttrace-alerts.yml"


def test_alert_rules_pass_promtool():
    if not shutil.which("promtool"):
        pytest.skip("no promtool (apt-get install prometheus)")
    proc = subprocess.run(["promtool", "check", "rules", str(PROMTOOL_RULES)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 2 rules found" in proc.stdout, proc.stdout
