"""The live loop: drain the ring, order by kernel time, correlate, hand incidents to the sinks."""

from __future__ import annotations

import ctypes
import heapq
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .config import Config
from .correlate import Correlator
from .events import Decoder, Event
from .btf import VMLINUX_BTF
from .kernel import KernelFeatures, ensure_tracefs
from .procfs import socket_owner
from .probes import Loaded, Plan, choose_plan, load

DRAIN_INTERVAL_S = 0.05
# Events are held this long before correlation so that records from other CPUs, and the
# peer's RST handling (timestamped before the sender's send_reset), fall into order.
REORDER_NS = 100_000_000


@dataclass
class Sinks:
    """Where things go; each callable is optional."""

    on_event: Callable[[Event], None] | None = None
    on_incident: Callable[[dict], None] | None = None
    on_lost: Callable[[int], None] | None = None


@dataclass
class Session:
    config: Config
    sinks: Sinks = field(default_factory=Sinks)
    feats: KernelFeatures | None = None
    plan: Plan | None = None
    loaded: Loaded | None = None
    exiting: bool = False

    def __post_init__(self) -> None:
        self._heap: list[tuple[int, int, Event]] = []
        self._seq = 0
        self._lost_reported = 0
        self.incidents: list[dict] = []
        self.wall_offset_ns = time.time_ns() - time.monotonic_ns()
        self.correlator = Correlator(settle_ns=int(self.config.settle_s * 1e9), owner_of=socket_owner)

    # -- start / stop -------------------------------------------------------------
    def start(self) -> None:
        self.feats = KernelFeatures.probe(Path(os.environ.get("RSTTRACE_BTF", VMLINUX_BTF)))
        tracefs = ensure_tracefs()
        if self.feats.tracefs is None:
            self.feats.read_tracefs(tracefs)
        self.plan = choose_plan(self.feats, force=self.config.force_plan)
        self.loaded = load(self.plan)
        self.decoder = Decoder(self.feats.rst_reasons())
        self._write_filters()
        bpf = self.loaded.bpf
        if self.plan.ringbuf:
            bpf["rst_events"].open_ring_buffer(self._on_raw)
        else:
            bpf["rst_events"].open_perf_buffer(self._on_raw, page_cnt=256, lost_cb=self._on_perf_lost)
        self._perf_lost = 0
        if self.config.ready_file:
            Path(self.config.ready_file).write_text(f"{os.getpid()}\n")

    def _write_filters(self) -> None:
        f = self.config.filters
        bpf = self.loaded.bpf
        cfg_t = bpf["rst_cfg"]
        cfg = cfg_t.Leaf()
        cfg.netns = f.netns or 0
        cfg.want_pid = 1 if f.pids else 0
        cfg.want_comm = 1 if f.comm else 0
        cfg.want_port = 1 if f.ports else 0
        if f.comm:
            cfg.comm = f.comm.encode()
        cfg_t[ctypes.c_int(0)] = cfg
        for pid in f.pids:
            bpf["rst_pids"][ctypes.c_uint32(pid)] = ctypes.c_uint8(1)
        for port in f.ports:
            bpf["rst_ports"][ctypes.c_uint16(port)] = ctypes.c_uint8(1)

    def install_signal_handlers(self) -> None:
        # Explicitly: a process started from a background shell inherits SIGINT ignored.
        def stop(_sig, _frame):
            self.exiting = True
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)

    # -- data path ----------------------------------------------------------------------
    def _on_raw(self, _ctx, data, _size) -> None:
        raw = ctypes.cast(data, ctypes.POINTER(self.decoder.struct)).contents
        ev = self.decoder.decode(raw)
        self._seq += 1
        heapq.heappush(self._heap, (ev.ts_ns, self._seq, ev))

    def _on_perf_lost(self, count: int) -> None:
        self._perf_lost += count

    def stats(self) -> dict:
        out = {"emitted": 0, "lost": 0, "filtered": 0}
        if self.loaded is not None:
            table = self.loaded.bpf["rst_stats"]
            for name, idx in (("emitted", 0), ("lost", 1), ("filtered", 2)):
                out[name] = sum(v.value if hasattr(v, "value") else v for v in table[ctypes.c_int(idx)])
        out["lost"] += getattr(self, "_perf_lost", 0)
        out.update({k: v for k, v in self.correlator.stats.items() if k != "events"})
        return out

    def drain(self, final: bool = False) -> None:
        bpf = self.loaded.bpf
        if self.plan.ringbuf:
            bpf.ring_buffer_consume()
        else:
            bpf.perf_buffer_poll(timeout=0)
        now = time.monotonic_ns()
        horizon = now if final else now - REORDER_NS
        while self._heap and self._heap[0][0] <= horizon:
            _ts, _seq, ev = heapq.heappop(self._heap)
            if self.sinks.on_event:
                self.sinks.on_event(ev)
            self._emit(self.correlator.tick(ev.ts_ns))
            self._emit(self.correlator.feed(ev))
        self._emit(self.correlator.flush() if final else self.correlator.tick(horizon))
        lost = self.stats()["lost"]
        if lost != self._lost_reported:
            self._lost_reported = lost
            if self.sinks.on_lost:
                self.sinks.on_lost(lost)

    def _emit(self, incidents) -> None:
        for inc in incidents:
            d = inc.to_dict(self.wall_offset_ns)
            if not self.config.filters.matches(d):
                continue
            self.incidents.append(d)
            if self.sinks.on_incident:
                self.sinks.on_incident(d)

    def run(self, until: Callable[[], bool] | None = None) -> None:
        deadline = time.monotonic() + self.config.duration if self.config.duration else None
        while not self.exiting:
            time.sleep(DRAIN_INTERVAL_S)
            self.drain()
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
