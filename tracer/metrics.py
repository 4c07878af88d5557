"""OpenMetrics for `rsttrace service` (and `top`): prometheus_client's registry, counters and
HTTP server; nothing here formats the exposition text by hand.

Names and labels (README: Running it on every host):

    rsttrace_incidents_total{kind}                 incidents by kind
    rsttrace_incidents_by_culprit_total{comm}      by the culprit's command name (capped, below)
    rsttrace_incidents_by_victim_total{comm}       by the victim's command name (capped)
    rsttrace_incidents_by_impact_total{impact}     killed / failed-call / unaffected / unknown
    rsttrace_bytes_discarded_total                 unread bytes thrown away by resets
    rsttrace_sigpipe_deaths_total                  victims killed by SIGPIPE
    rsttrace_close_wait_sockets{owner}             sockets past the CLOSE_WAIT threshold now
    rsttrace_events_lost_total                     kernel events lost (ring buffer full)
    rsttrace_bpf_run_time_seconds_total{program}   BPF run time (kernel.bpf_stats_enabled=1)
    rsttrace_bpf_runs_total{program}               BPF program runs (same condition)
    rsttrace_bpf_stats_enabled                     1 when the kernel counts BPF run time
    process_cpu_seconds_total, process_resident_memory_bytes, ...  the tracer itself

Command names are bounded: the N names with the most incidents lately (--metrics-top-n;
counts halve every 10 minutes) have a series of their own, the rest count under "other"
(TopNames says how, keeping every counter monotonic); the cap bounds what a host full of short-lived, randomly named processes can cost
Prometheus.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable, Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    ProcessCollector,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

OTHER = "other"
UNKNOWN = "unknown"  # an incident without that side (no victim seen, owner unknown): not one of the n
BPF_STATS = Path("/proc/sys/kernel/bpf_stats_enabled")
# No *_created series: a timestamp per series that alerting and dashboards do not use.
disable_created_metrics()


class TopNames:
    """At most `n` names with a series of their own: those with the most incidents lately
    (counts that halve every `half_life_s`, so that the top follows a storm from one process
    to the next); every other name counts under "other".

    Counters must only go up (rate() reads a drop as a restart), so counts never move between
    series: a name that enters the top n starts a new series from then on (what it had before
    stays in "other"), and a name that falls out has its series removed (`on_evict`; its later
    counts go to "other"), so the sum over the series is always the total. A name takes the
    place of the least counted one only with a clear lead (a quarter more, and at least one
    more), so that two names of about the same rate do not swap places on every incident.
    Names outside the top n are counted in a bounded table (Space-Saving: `candidates`
    entries; a new name replaces the least counted one and starts from its count), so memory
    stays bounded however many distinct names a host has.
    """

    def __init__(
        self,
        n: int,
        on_evict: Callable[[str], None] | None = None,
        candidates: int = 0,
        half_life_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if n < 0:
            raise ValueError("n must be >= 0")
        self.n = n
        self.on_evict = on_evict or (lambda _name: None)
        self.capacity = candidates or max(8 * n, 64)
        self.half_life_s = half_life_s
        self.clock = clock
        self.names: dict[str, list[float]] = {}  # the top n: [score, when]
        self.others: dict[str, list[float]] = {}  # the rest, bounded
        self.evictions = 0

    def _score(self, entry: list[float], now: float) -> float:
        if self.half_life_s:
            entry[0] *= 0.5 ** ((now - entry[1]) / self.half_life_s)
        entry[1] = now
        return entry[0]

    def score(self, name: str) -> float:
        entry = self.names.get(name) or self.others.get(name)
        return self._score(entry, self.clock()) if entry else 0.0

    def label(self, name: str | None) -> str:
        if not name:
            return UNKNOWN  # no such side: a fixed series, not one of the n
        now = self.clock()
        if name in self.names:
            entry = self.names[name]
            self._score(entry, now)
            entry[0] += 1
            return name
        if name in (OTHER, UNKNOWN):
            return OTHER
        score = self._count_other(name, now)
        if len(self.names) < self.n:
            self.names[name] = self.others.pop(name)
            return name
        if self.n:
            least = min(self.names, key=lambda k: self._score(self.names[k], now))
            low = self.names[least][0]
            if score > max(low * 1.25, low + 1):
                self.others[least] = self.names.pop(least)
                self.names[name] = self.others.pop(name)
                self.evictions += 1
                self.on_evict(least)
                return name
        return OTHER

    def _count_other(self, name: str, now: float) -> float:
        entry = self.others.get(name)
        if entry is None:
            if len(self.others) < self.capacity:
                entry = self.others[name] = [0.0, now]
            else:  # Space-Saving: the new name takes the least counted one's place and count
                least = min(self.others, key=lambda k: self._score(self.others[k], now))
                entry = self.others[name] = self.others.pop(least)
        self._score(entry, now)
        entry[0] += 1
        return entry[0]


def parse_addr(text: str) -> tuple[str, int]:
    """[ADDR]:PORT (or PORT alone): the address defaults to 127.0.0.1, never every interface
    unless asked for (0.0.0.0 or [::])."""
    text = text.strip()
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"invalid metrics address {text!r}: expected [ADDR]:PORT, PORT 1-65535")
    return host, int(port)


def _sock_key(inc: dict) -> tuple:
    loc, rem = inc.get("local") or {}, inc.get("remote") or {}
    return (inc.get("netns"), loc.get("addr"), loc.get("port"), rem.get("addr"), rem.get("port"))


class BpfProgStats:
    """BPF run time and count per program this process holds, from /proc/self/fdinfo of the
    program fds (run_time_ns, run_cnt: counted only while kernel.bpf_stats_enabled=1)."""

    def __init__(self, progs: dict[str, int] | None = None) -> None:
        self.progs = dict(progs or {})  # name -> fd

    @staticmethod
    def from_bcc(bpf) -> "BpfProgStats":
        progs = {}
        for name, fn in getattr(bpf, "funcs", {}).items():
            fd = getattr(fn, "fd", None)
            if isinstance(fd, int) and fd >= 0:
                progs[name.decode() if isinstance(name, bytes) else str(name)] = fd
        return BpfProgStats(progs)

    @staticmethod
    def enabled() -> bool:
        try:
            return BPF_STATS.read_text().strip() == "1"
        except OSError:
            return False

    def read(self) -> dict[str, tuple[int, int]]:
        """{program: (run_cnt, run_time_ns)}; (0, 0) where the kernel reports nothing."""
        out = {}
        for name, fd in self.progs.items():
            cnt = ns = 0
            try:
                text = Path(f"/proc/self/fdinfo/{fd}").read_text()
            except OSError:
                text = ""
            for line in text.splitlines():
                key, _, val = line.partition(":")
                if key == "run_cnt":
                    cnt = int(val)
                elif key == "run_time_ns":
                    ns = int(val)
            out[name] = (cnt, ns)
        return out


class _Collected:
    """Values that the session's thread keeps and each scrape reads (events lost, BPF)."""

    def __init__(self, metrics: "Metrics") -> None:
        self.m = metrics

    def describe(self):
        return []

    def collect(self) -> Iterable:
        lost = CounterMetricFamily("rsttrace_events_lost", "Kernel events lost (ring or perf buffer full)")
        lost.add_metric([], self.m.lost)
        yield lost
        progs = self.m.bpf.read() if self.m.bpf else {}
        on = GaugeMetricFamily(
            "rsttrace_bpf_stats_enabled", "1 when kernel.bpf_stats_enabled=1 (BPF run time is counted), else 0"
        )
        on.add_metric([], 1 if BpfProgStats.enabled() else 0)
        yield on
        t = CounterMetricFamily(
            "rsttrace_bpf_run_time_seconds",
            "Time the kernel spent in each rsttrace BPF program (0 while kernel.bpf_stats_enabled=0)",
            labels=["program"],
        )
        n = CounterMetricFamily(
            "rsttrace_bpf_runs",
            "Runs of each rsttrace BPF program (0 while kernel.bpf_stats_enabled=0)",
            labels=["program"],
        )
        for name, (cnt, ns) in sorted(progs.items()):
            t.add_metric([name], ns / 1e9)
            n.add_metric([name], cnt)
        yield t
        yield n


class Metrics:
    """Everything a scrape shows; `incident()` and `lost_total()` are called by the session's
    thread, the HTTP server's thread only reads."""

    def __init__(self, top_n: int = 10, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.culprits = TopNames(top_n, on_evict=lambda name: self.culprit.remove(name))
        self.victims = TopNames(top_n, on_evict=lambda name: self.victim.remove(name))
        self.owners = TopNames(top_n, on_evict=self._evict_owner)
        self.kind = Counter("rsttrace_incidents", "Incidents by kind", ["kind"], registry=r)
        self.culprit = Counter(
            "rsttrace_incidents_by_culprit",
            "Incidents by the culprit's command name (top N names, the rest as other)",
            ["comm"],
            registry=r,
        )
        self.victim = Counter(
            "rsttrace_incidents_by_victim",
            "Incidents by the victim's command name (top N names, the rest as other)",
            ["comm"],
            registry=r,
        )
        self.impact = Counter(
            "rsttrace_incidents_by_impact", "Incidents by their impact on the victim", ["impact"], registry=r
        )
        self.bytes = Counter("rsttrace_bytes_discarded", "Unread bytes discarded by resets", registry=r)
        self.sigpipe = Counter("rsttrace_sigpipe_deaths", "Victims killed by SIGPIPE", registry=r)
        self.cwait = Gauge(
            "rsttrace_close_wait_sockets",
            "Sockets in CLOSE_WAIT past the threshold, by owner's command name (top N, the rest as other)",
            ["owner"],
            registry=r,
        )
        ProcessCollector(registry=r)
        self.lost = 0
        self.bpf: BpfProgStats | None = None
        self._open_cwait: dict[tuple, str] = {}
        self._lock = threading.Lock()
        r.register(_Collected(self))
        self.server = None

    def incident(self, inc: dict) -> None:
        kind = inc.get("kind") or UNKNOWN
        self.kind.labels(kind).inc()
        culprit = inc.get("culprit") or {}
        victim = inc.get("victim") or {}
        if kind == "close-wait":
            self._close_wait(inc, culprit.get("comm"))
        self.culprit.labels(self.culprits.label(culprit.get("comm"))).inc()
        self.victim.labels(self.victims.label(victim.get("comm"))).inc()
        self.impact.labels(inc.get("impact") or UNKNOWN).inc()
        self.bytes.inc(max(int(inc.get("bytes_discarded") or 0), 0))
        if victim.get("sigpipe") == "killed":
            self.sigpipe.inc()

    def _close_wait(self, inc: dict, comm: str | None) -> None:
        key = _sock_key(inc)
        with self._lock:
            if inc.get("close_wait_closed"):
                owner = self._open_cwait.pop(key, None)
                if owner is not None:
                    self.cwait.labels(owner).dec()
            elif key not in self._open_cwait:
                owner = self.owners.label(comm)
                self._open_cwait[key] = owner
                self.cwait.labels(owner).inc()

    def _evict_owner(self, name: str) -> None:
        """A gauge may move: the evicted owner's open sockets now count under "other"."""
        moved = [k for k, owner in self._open_cwait.items() if owner == name]
        for k in moved:
            self._open_cwait[k] = OTHER
        try:
            self.cwait.remove(name)
        except KeyError:
            pass
        if moved:
            self.cwait.labels(OTHER).inc(len(moved))

    def lost_total(self, total: int) -> None:
        self.lost = max(self.lost, int(total))

    def serve(self, host: str, port: int) -> None:
        """Start the HTTP endpoint (a daemon thread)."""
        res = start_http_server(port, addr=host, registry=self.registry)
        self.server = res[0] if isinstance(res, tuple) else None

    def shutdown(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def free_port() -> int:  # pragma: no cover - used by tests
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
