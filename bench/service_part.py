"""The `service` part: `rsttrace service` for a long run under 10% reset churn.

Checks what a host running it for days needs: the trace directory stays under its cap while
files rotate and old ones go; memory stays flat; the metrics equal the incidents written to
the files (each file is counted once, when it is finished, before the cap removes it); no
event is lost. Also the service's cost idle (before the churn) and under the churn.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from testbed.ready import NotReady, wait_ready

from . import harness as h

INCIDENT = b'"type":"incident"'
FLAT_KB_PER_MIN = 256  # RSS growth after warm-up that still counts as flat


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scrape(port: int) -> dict[str, float]:
    """{metric name with labels: value} of the rsttrace_* families."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def _incidents(m: dict[str, float]) -> int:
    return int(sum(v for k, v in m.items() if k.startswith("rsttrace_incidents_total{")))


class DirWatch:
    """Follows the trace directory from outside, as an operator would, every `every` seconds:

    - every file is hard-linked into `keep` when first seen, so that its lines can still be
      counted when the service's cap has removed it; once a newer file exists it is finished:
      its incidents are counted and the link removed (the bench's disk stays bounded too);
    - the directory's total size is taken from a consistent listing (the same names before
      and after the sizes are read; else read again), and its largest value kept.
    """

    def __init__(self, d: Path, keep: Path, every: float = 0.25) -> None:
        self.d, self.keep, self.every = d, keep, every
        keep.mkdir(parents=True, exist_ok=True)
        self.linked: set[str] = set()
        self.counted: dict[str, int] = {}
        self.max_total = 0
        self.max_files = 0
        self.stop_evt = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _files(self) -> list[Path]:
        return sorted(self.d.glob("rsttrace-*.jsonl"))

    def _total(self) -> tuple[list[Path], int]:
        for _ in range(20):
            files = self._files()
            total = 0
            try:
                for f in files:
                    total += f.stat().st_size
            except FileNotFoundError:
                continue  # removed while being measured: measure again
            if self._files() == files:
                return files, total
        return files, total

    def sweep(self, final: bool = False) -> None:
        files, total = self._total()
        self.max_total = max(self.max_total, total)
        self.max_files = max(self.max_files, len(files))
        for f in files:
            if f.name not in self.linked:
                try:
                    os.link(f, self.keep / f.name)
                    self.linked.add(f.name)
                except FileNotFoundError:
                    pass  # gone before it was seen: a sequence gap tells
        done = {f.name for f in (files if final else files[:-1])}
        newest = files[-1].name if files and not final else None
        for name in sorted(self.linked - set(self.counted)):
            if name in done or (name not in {f.name for f in files} and name != newest):
                link = self.keep / name
                self.counted[name] = link.read_bytes().count(INCIDENT)
                link.unlink()

    def _run(self) -> None:
        while not self.stop_evt.wait(self.every):
            self.sweep()

    def start(self) -> "DirWatch":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_evt.set()
        self.thread.join()


def service(p: dict, wd: Path) -> dict:
    seconds, idle_s = p["service_s"], p["service_idle_s"]
    file_size, cap = p["service_file_size"], p["service_cap"]
    u, l = 750, 250  # the 10% mix (bench/__main__.py MIXES)
    port = _free_port()
    d = wd / "service"
    ready = wd / "service.ready"
    err = wd / "service.err"
    argv = [
        sys.executable,
        "-m",
        "tracer.service_cli",
        "service",
        "--dir",
        str(d),
        "--ready-file",
        str(ready),
        "--max-file-size",
        str(file_size),
        "--max-total-size",
        str(cap),
        "--max-age",
        "60",
        "--metrics",
        f"127.0.0.1:{port}",
    ]
    with h.churn_netns() as ns:
        h.prepare_netns(ns)
        # Only the churn's namespace: the counts must be exact on a machine others use too
        # (the kernel side still sees every event of the host and filters it there).
        argv += ["--netns", str(ns.inode)]
        with open(err, "wb") as ef:
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=ef, cwd=h.REPO)
        try:
            wait_ready(
                ready,
                proc.pid,
                proc.poll,
                lambda: err.read_text()[-2000:],
                proc.kill,
                what="service",
                budget=h.START_TIMEOUT,
            )
        except NotReady as e:
            raise h.BenchError(str(e)) from None
        watch = DirWatch(d, wd / "service.seen").start()
        # Idle: no churn of ours (the host's own traffic goes on).
        t0 = time.monotonic()
        c0 = h.cpu_seconds(proc.pid)
        rss = [(0.0, h.rss_kb(proc.pid))]
        time.sleep(idle_s)  # measuring an idle stretch, not waiting for an effect
        c1 = h.cpu_seconds(proc.pid)
        idle = {
            "seconds": round(time.monotonic() - t0, 1),
            "cpu_pct": round(100 * (c1 - c0) / idle_s, 2),
            "rss_kb": h.rss_kb(proc.pid),
        }
        h_log(f"service idle: cpu {idle['cpu_pct']}%, rss {idle['rss_kb']} KB")
        stop = threading.Event()
        t1 = time.monotonic()

        def sample():
            while not stop.wait(p["memory_every"]):
                rss.append((time.monotonic() - t1, h.rss_kb(proc.pid)))

        threading.Thread(target=sample, daemon=True).start()
        load = h.LoadProbe().begin()
        c2 = h.cpu_seconds(proc.pid)
        rep = h.run_churn(ns, seconds=seconds, unread_bp=u, linger_bp=l, rate=p["service_rate"])
        c3 = h.cpu_seconds(proc.pid)
        load.end()
        stop.set()
        rss.append((time.monotonic() - t1, h.rss_kb(proc.pid)))
        busy = {
            "seconds": rep["elapsed_s"],
            "conn_per_s": rep["conn_per_s"],
            "resets_per_s": round((rep["unread"] + rep["linger0"]) / rep["elapsed_s"], 1),
            "cpu_pct": round(100 * (c3 - c2) / rep["elapsed_s"], 2),
            "load": load.describe(),
        }
        # Settled: the metrics stop moving (every incident reported).
        last, still = -1, 0
        deadline = time.monotonic() + 60
        while still < 3 and time.monotonic() < deadline:
            n = _incidents(_scrape(port))
            still = still + 1 if n == last else 0
            last = n
            time.sleep(0.5)  # polling the endpoint until it is steady
        metrics = _scrape(port)
        watch.stop()
        watch.sweep()
        before_stop = sum(watch.counted.values()) + sum(
            (watch.keep / n).read_bytes().count(INCIDENT) for n in watch.linked - set(watch.counted)
        )
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
        watch.sweep(final=True)
    files = sorted(d.glob("rsttrace-*.jsonl"))
    summary = json.loads(files[-1].read_bytes().splitlines()[-1])
    kb = [s[1] for s in rss]
    later = rss[len(rss) // 5 :]
    from .__main__ import slope

    res = {
        "seconds": seconds,
        "rate": p["service_rate"],
        "file_size": file_size,
        "cap": cap,
        "idle": idle,
        "busy": busy,
        "rss_start_kb": kb[0],
        "rss_peak_kb": max(kb),
        "rss_end_kb": kb[-1],
        "rss_slope_after_warmup_kb_per_min": round(slope(later) * 60, 1),
        "files_seen": len(watch.counted),
        "files_left": len(files),
        "max_dir_bytes": watch.max_total,
        "files_missed": _gaps(watch.counted),
        "rss_samples": rss,
        "incidents_metrics": _incidents(metrics),
        "incidents_files": before_stop,
        "incidents_summary": summary.get("incidents"),
        "lost": summary.get("stats", {}).get("lost"),
        "metric_lost": metrics.get("rsttrace_events_lost_total"),
        "sigpipe_deaths": metrics.get("rsttrace_sigpipe_deaths_total"),
        "kinds": {
            k.split("=", 1)[1].rstrip("}"): int(v)
            for k, v in metrics.items()
            if k.startswith("rsttrace_incidents_total{")
        },
        "returncode": rc,
        "churn": {k: rep[k] for k in ("connections", "unread", "linger0")},
    }
    # Flat memory: judged on runs long enough to have a warm-up behind them (the full 600 s).
    res["memory_flat"] = res["rss_slope_after_warmup_kb_per_min"] <= FLAT_KB_PER_MIN if seconds >= 120 else None
    res["kinds_exact"] = (
        res["kinds"].get("abort-on-close", 0) == rep["unread"] and res["kinds"].get("linger-zero", 0) == rep["linger0"]
    )
    res["ok"] = (
        res["max_dir_bytes"] <= cap
        and res["files_missed"] == 0
        and res["lost"] == 0
        and res["kinds_exact"]
        and res["incidents_metrics"] == res["incidents_files"] == res["incidents_summary"]
        and rc == 0
        and res["memory_flat"] is not False
    )
    h_log(
        f"service: {busy['resets_per_s']} resets/s for {seconds} s, cpu {busy['cpu_pct']}%, rss "
        f"{res['rss_start_kb']}->{res['rss_end_kb']} KB (slope {res['rss_slope_after_warmup_kb_per_min']} "
        f"KB/min), dir max {watch.max_total} B (cap {cap}), incidents metrics {res['incidents_metrics']} "
        f"files {res['incidents_files']} summary {res['incidents_summary']}, lost {res['lost']}: "
        f"{'ok' if res['ok'] else 'NOT OK'}"
    )
    return res


def _gaps(counted: dict[str, int]) -> int:
    """Files never seen finished (rotated and removed between two sweeps): sequence gaps."""
    seqs = sorted(int(name.rsplit("-", 1)[1].split(".")[0]) for name in counted)
    return (seqs[-1] - seqs[0] + 1 - len(seqs)) if seqs else 0


def h_log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def report_lines(s: dict) -> list[str]:
    return [
        "## Service mode (`rsttrace service` under 10% reset churn)",
        "",
        f"{s['seconds']:.0f} s of `bench/churn.c` at {s['rate']} connections/s, 10% of them reset "
        f"({s['busy']['resets_per_s']} resets/s), the service with `--netns` (the churn's namespace: "
        f"exact counts on a shared machine) `--max-file-size {s['file_size']} --max-total-size {s['cap']} "
        f"--metrics`.",
        "",
        "| | value |",
        "|---|---|",
        f"| CPU idle (before the churn, {s['idle']['seconds']} s) | {s['idle']['cpu_pct']}% of one CPU |",
        f"| RSS idle | {s['idle']['rss_kb']} KB |",
        f"| CPU under the churn | {s['busy']['cpu_pct']}% of one CPU |",
        f"| RSS start / peak / end | {s['rss_start_kb']} / {s['rss_peak_kb']} / {s['rss_end_kb']} KB |",
        f"| RSS slope after warm-up | {s['rss_slope_after_warmup_kb_per_min']} KB/min "
        f"({'flat' if s.get('memory_flat') else 'not judged: run under 120 s' if s.get('memory_flat') is None else 'GROWING'}) |",
        f"| trace directory, largest seen | {s['max_dir_bytes']} B (cap {s['cap']}) |",
        f"| files written / left | {s['files_seen']} / {s['files_left']} |",
        f"| incidents: metrics / files / summary | {s['incidents_metrics']} / {s['incidents_files']} / "
        f"{s['incidents_summary']} |",
        f"| incidents by kind = resets made | {s['kinds_exact']} ({s['kinds']}) |",
        f"| events lost | {s['lost']} |",
        f"| verdict | {'ok' if s['ok'] else 'NOT OK'} |",
        "",
    ]
