"""The live loop: drain the ring, order by kernel time, correlate, hand incidents to the sinks."""

from __future__ import annotations

import ctypes
import heapq
import os
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .cgroups import CgroupPaths, path_from_names
from .closewait import CloseWaitWatch, Overdue
from .config import Config
from .correlate import Correlator
from .events import Decoder, Event
from .layout import layout
from .btf import VMLINUX_BTF
from .kernel import KernelFeatures, ensure_tracefs
from .procfs import SocketOwners
from .probes import Loaded, Plan, choose_plan, load
from .tracefile import clocks

# Bytes per name in the kernel's rst_cgnames entries (RST_CGNAME_LEN in bpf/rsttrace.bpf.c).
CGNAME_LEN = 80
# The kernel's counters (rst_stats), by the names rsttrace.h gives their indexes.
STAT_INDEXES = {name.lower(): i for i, name in layout().prefixed("RST_STAT_").items() if name != "MAX"}
DRAIN_INTERVAL_S = 0.05
# Events are held this long before correlation so that records from other CPUs, and the
# peer's RST handling (timestamped before the sender's send_reset), fall into order.
REORDER_NS = 100_000_000
# The correlator's settle clock advances at most this often while replaying a batch: ticking
# on every event costs a scan of the open incidents each time (settle times are >= 50 ms).
TICK_NS = 10_000_000
# Records taken from the ring per drain. libbpf's consume keeps reading while records keep
# arriving, so without a budget a busy ring is never left to correlate and report.
BATCH_MAX = 8192


@dataclass
class Sinks:
    """Where things go; each callable is optional."""

    on_event: Callable[[Event], None] | None = None
    on_incident: Callable[[dict], None] | None = None
    on_lost: Callable[[int], None] | None = None
    on_record: Callable[[dict], None] | None = None  # other records for the trace file
    on_note: Callable[[str], None] | None = None  # periodic lines for people (stderr)
    on_flush: Callable[[], None] | None = None  # after each drained batch: one write, not one per line


@dataclass
class Session:
    config: Config
    sinks: Sinks = field(default_factory=Sinks)
    feats: KernelFeatures | None = None
    plan: Plan | None = None
    loaded: Loaded | None = None
    exiting: bool = False
    # Every incident dict stays in memory only when asked (the demo checks what it saw); a
    # long-running tracer keeps counts, or its memory grows with every incident.
    keep_incidents: bool = False

    def __post_init__(self) -> None:
        self._heap: list[tuple[int, int, Event]] = []
        self._seq = 0
        self._next_tick_ns = 0
        self._batch = 0
        self._last_ts = 0
        self._lost_reported = 0
        self.incidents: list[dict] = []
        self.kinds: Counter[str] = Counter()
        self.impacts: Counter[str] = Counter()
        self.wall_offset_ns = clocks()["wall_offset_ns"]
        self._cgroups = CgroupPaths()
        self._cgroups_recorded: set[int] = set()
        self.correlator = Correlator(
            settle_ns=int(self.config.settle_s * 1e9), owner_of=SocketOwners(), cgroup_path=self._cgroup_path
        )
        self.cwait: CloseWaitWatch | None = None
        self._cwait_next_scan = 0
        self._cwait_next_count = 0
        self._cwait_diag_noted = False
        self._cwait_known = False
        self._cwait_full = 0

    # -- start / stop -------------------------------------------------------------
    def start(self) -> None:
        self.feats = KernelFeatures.probe(Path(os.environ.get("RSTTRACE_BTF", VMLINUX_BTF)))
        tracefs = ensure_tracefs()
        if self.feats.tracefs is None:
            self.feats.read_tracefs(tracefs)
        self.plan = choose_plan(self.feats, force=self.config.force_plan)
        self.correlator.lacks = self.feats.losses(self.plan.name)
        self.loaded = load(self.plan, perf_only=self.config.buffer == "perf")
        self.decoder = Decoder(self.feats.rst_reasons())
        self._start_close_wait()
        self._write_filters()
        bpf = self.loaded.bpf
        if self.plan.ringbuf:
            # bench/ only: take every record and drop it, to measure the kernel side alone.
            discard = bool(os.environ.get("RSTTRACE_BENCH_DISCARD"))
            bpf["rst_events"].open_ring_buffer(self._on_discard if discard else self._on_raw)
        else:
            bpf["rst_events"].open_perf_buffer(self._on_raw, page_cnt=256, lost_cb=self._on_perf_lost)
        self._perf_lost = 0
        if self.config.ready_file:
            Path(self.config.ready_file).write_text(f"{os.getpid()}\n")

    def _start_close_wait(self) -> None:
        """Follow CLOSE_WAIT (unless disabled): note what is in it already."""
        if not self.config.close_wait_s:
            return
        self.cwait = CloseWaitWatch(
            threshold_ns=int(self.config.close_wait_s * 1e9),
            report=self._report_close_wait,
            forget=self._forget_close_wait,
            netns_filter=self.config.filters.netns,
        )
        self.cwait.start(time.monotonic_ns())

    def _report_close_wait(self, o: Overdue, now_ns: int) -> None:
        row = o.row
        # First let the kernel report its close, however late (bpf/hooks/cwait.h): whoever
        # reads the report may close it at once.
        since = o.since_ns if o.since_ns is not None else self.cwait.first_seen.get(o.ino, now_ns)
        try:
            self.loaded.bpf["rst_cwait"][ctypes.c_uint64(o.ino)] = ctypes.c_uint64(since)
        except Exception:  # map full: the close goes unreported, the leak was reported
            self._cwait_full += 1
        if not self._cwait_known:
            self._cwait_known = True
            self._write_filters()
        # An event like the kernel's: recorded, ordered and correlated with them, so that a
        # replay of the trace gives the same incidents.
        flags = (["preexisting"] if o.preexisting else []) + (["noage"] if o.since_ns is None else [])
        pid, comm = o.owner or (0, "")
        self._take(
            Event(
                ts_ns=now_ns,
                kind="cwait_overdue",
                pid=pid,
                tid=pid,
                comm=comm,
                ino=o.ino,
                netns=o.netns,
                family=row.family,
                laddr=row.laddr,
                lport=row.lport,
                raddr=row.raddr,
                rport=row.rport,
                state="CLOSE_WAIT",
                bytes=max(row.rx_queue - 1, 0),
                flags=flags,
                span_ms=0 if o.since_ns is None else (now_ns - o.since_ns) // 1_000_000,
            )
        )

    def _forget_close_wait(self, ino: int) -> None:
        try:
            del self.loaded.bpf["rst_cwait"][ctypes.c_uint64(ino)]
        except KeyError:
            pass  # the kernel took it at the close

    def _close_wait_tick(self, now_ns: int) -> None:
        if self.cwait is None:
            return
        if now_ns >= self._cwait_next_scan:
            interval = min(max(self.cwait.threshold_ns // 4, 200_000_000), 5_000_000_000)
            self._cwait_next_scan = now_ns + interval
            self.cwait.sweep(now_ns)
            if self.cwait.diag_error and not self._cwait_diag_noted and self.sinks.on_note:
                self._cwait_diag_noted = True
                self.sinks.on_note(
                    f"CLOSE_WAIT: {self.cwait.diag_error}; read /proc/PID/net/tcp "
                    "instead (ages count from when first seen)"
                )
        every = int(self.config.close_wait_every_s * 1e9)
        if not self._cwait_next_count:
            self._cwait_next_count = now_ns + every
        elif now_ns >= self._cwait_next_count:
            self._cwait_next_count = now_ns + every
            counts = self.cwait.counts(now_ns)
            if counts:
                self._close_wait_counts(counts, now_ns)

    def _close_wait_counts(self, counts, now_ns: int) -> None:
        from .render import seconds

        rec = {
            "type": "close_wait_count",
            "ts_ns": now_ns,
            "owners": [
                {"pid": o[0] if o else None, "comm": o[1] if o else None, "sockets": n, "oldest_ns": age}
                for o, n, age in counts
            ],
        }
        if self.sinks.on_record:
            self.sinks.on_record(rec)
        if self.sinks.on_note:
            for o, n, age in counts:
                who = f"{o[1]}[{o[0]}]" if o else "?"
                self.sinks.on_note(
                    f"CLOSE_WAIT: {who} holds {n} socket(s) past the threshold"
                    f" (oldest {seconds(age) if age else 'from before tracing'})"
                )

    def _write_filters(self) -> None:
        f = self.config.filters
        bpf = self.loaded.bpf
        for pid in f.pids:
            bpf["rst_pids"][ctypes.c_uint32(pid)] = ctypes.c_uint8(1)
        for port in f.ports:
            bpf["rst_ports"][ctypes.c_uint16(port)] = ctypes.c_uint8(1)
        for cgid in f.cgroups:
            bpf["rst_cgroups"][ctypes.c_uint64(cgid)] = ctypes.c_uint8(1)
        cfg_t = bpf["rst_cfg"]
        cfg = cfg_t.Leaf()
        cfg.netns = f.netns or 0
        cfg.want_pid = 1 if f.pids else 0
        cfg.want_comm = 1 if f.comm else 0
        cfg.want_port = 1 if f.ports else 0
        cfg.want_cgroup = 1 if f.cgroups else 0
        cfg.cwait_ms = int(self.config.close_wait_s * 1000) if self.cwait else 0
        cfg.cwait_known = 1 if self._cwait_known else 0
        if f.comm:
            cfg.comm = f.comm.encode()
        cfg.ready = 1  # last: the programs emit nothing until the whole filter is in place
        cfg_t[ctypes.c_int(0)] = cfg

    def install_signal_handlers(self) -> None:
        # Explicitly: a process started from a background shell inherits SIGINT ignored.
        def stop(_sig, _frame):
            self.exiting = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGHUP, stop)  # terminal gone: still complete the -o file

    # -- data path ----------------------------------------------------------------------
    def _on_raw(self, _ctx, data, _size) -> None:
        ev = self.decoder.decode_bytes(ctypes.string_at(data, self.decoder.size))
        if ev.kind == "cwait_end" and self.cwait is not None and self.cwait.closed(ev.ino):
            ev.flags.append("preexisting")
        self._take(ev)
        self._batch += 1
        self._last_ts = ev.ts_ns
        # A negative return stops libbpf's ring_buffer__consume after this record (consumed).
        return -1 if self._batch >= BATCH_MAX else 0

    def _cgroup_path(self, cgid: int) -> str | None:
        """A cgroup's path: from the names the kernel kept when an event first carried it (the
        container may be gone by now), else from the file system. Recorded in the trace the
        first time (a replay resolves from there)."""
        path = self._kernel_cgroup_path(cgid) or self._cgroups(cgid)
        if cgid not in self._cgroups_recorded and self.sinks.on_record:
            self._cgroups_recorded.add(cgid)
            self.sinks.on_record({"type": "cgroup", "id": cgid, "path": path})
        return path

    def _kernel_cgroup_path(self, cgid: int) -> str | None:
        if self.loaded is None or not cgid:
            return None
        try:
            entry = self.loaded.bpf["rst_cgnames"][ctypes.c_uint64(cgid)]
        except (KeyError, LookupError):
            return None
        # (entry.name would stop at the first NUL: the names are NUL-padded slots.)
        raw = ctypes.string_at(ctypes.addressof(entry), ctypes.sizeof(entry))
        size = CGNAME_LEN
        names = [raw[i : i + size].split(b"\0", 1)[0].decode(errors="replace") for i in range(0, len(raw), size)]
        return path_from_names(names) if any(names) else None

    def _take(self, ev: Event) -> None:
        """Record an event and queue it for correlation in kernel-time order."""
        # Recorded as soon as decoded, not after the reorder delay, so that a kill -9 loses only
        # what the kernel still holds; readers order by ts_ns.
        if self.sinks.on_event:
            self.sinks.on_event(ev)
        self._seq += 1
        heapq.heappush(self._heap, (ev.ts_ns, self._seq, ev))

    def _on_discard(self, _ctx, _data, _size) -> int:
        self._batch += 1
        return -1 if self._batch >= BATCH_MAX else 0

    def _on_perf_lost(self, count: int) -> None:
        self._perf_lost += count

    def stats(self) -> dict:
        out = {"emitted": 0, "lost": 0, "filtered": 0}
        if self.loaded is not None:
            table = self.loaded.bpf["rst_stats"]
            for name, idx in STAT_INDEXES.items():
                out[name] = sum(v.value if hasattr(v, "value") else v for v in table[ctypes.c_int(idx)])
        out["lost"] += getattr(self, "_perf_lost", 0)
        if self._cwait_full:
            out["cwait_full"] = self._cwait_full
        out.update({k: v for k, v in self.correlator.stats.items() if k != "events"})
        return out

    def drain(self, final: bool = False) -> bool:
        """Take a batch of records, report what is due; True when the batch was full."""
        bpf = self.loaded.bpf
        self._batch = 0
        if self.plan.ringbuf:
            bpf.ring_buffer_consume()
            if final:
                while self._batch >= BATCH_MAX:
                    self._batch = 0
                    bpf.ring_buffer_consume()
        else:
            bpf.perf_buffer_poll(timeout=0)
        full = self._batch >= BATCH_MAX
        now = time.monotonic_ns()
        if full:
            # The ring holds more, written after the last record taken: order only up to it.
            now = min(now, self._last_ts)
        horizon = now if final else now - REORDER_NS
        while self._heap and self._heap[0][0] <= horizon:
            _ts, _seq, ev = heapq.heappop(self._heap)
            if ev.ts_ns >= self._next_tick_ns:
                self._emit(self.correlator.tick(ev.ts_ns))
                self._next_tick_ns = ev.ts_ns + TICK_NS
            self._emit(self.correlator.feed(ev))
        self._emit(self.correlator.flush() if final else self.correlator.tick(horizon))
        if not final:
            self._close_wait_tick(now)
        if self.sinks.on_flush:
            self.sinks.on_flush()
        lost = self.stats()["lost"]
        if lost != self._lost_reported:
            self._lost_reported = lost
            if self.sinks.on_lost:
                self.sinks.on_lost(lost)
        return full

    def _emit(self, incidents) -> None:
        for inc in incidents:
            d = inc.to_dict(self.wall_offset_ns)
            if not self.config.filters.matches(d):
                continue
            self.kinds[d["kind"]] += 1
            self.impacts[d["impact"]] += 1
            if self.keep_incidents:
                self.incidents.append(d)
            if self.sinks.on_incident:
                self.sinks.on_incident(d)

    def run(self, until: Callable[[], bool] | None = None) -> None:
        deadline = time.monotonic() + self.config.duration if self.config.duration else None
        full = False
        while not self.exiting:
            if not full:  # more is waiting: no sleep
                time.sleep(DRAIN_INTERVAL_S)
            full = self.drain()
            if deadline and time.monotonic() >= deadline:
                break
            if until and until():
                break

    def stop(self) -> None:
        if self.loaded is not None:
            self.drain(final=True)
            self.final_stats = self.stats()
            self.loaded.close()
            self.loaded = None
