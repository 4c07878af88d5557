"""A synthetic fleet dataset from recorded incidents: N hosts (default 200), about M events in all
(default 10 million), written through `rsttrace export --dataset`'s writer (tracer.fleet.export).

Each connection replays one recorded two-sided scenario (tests/data/v1: a server closes with
unread data, the client writes into the reset, with SIGPIPE at its default or MSG_NOSIGNAL),
its events split by socket between a server host and a client host, as tests/unit/fleet_hosts.py
does for three. Rewritten per connection: the server's and client's addresses (each host's own,
10.H.H.1), ports (a 4-tuple no other connection has), pids (per host and connection) and times
(one connection every --period ns, on each host's own monotonic clock, booted apart). Each host's
wall clock is off by up to --skew seconds (uniform, seeded). Every tenth connection stays on one
host (a whole incident, nothing to join). The sender half on the server host and the receiver
half on the client host join when their hosts' clock errors differ by at most the merge
tolerance: `planted` counts those, exactly, for --tolerance.

    python -m bench.fleet_gen DIR [--hosts 200] [--events 10000000] [--seed 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = [ROOT / "tests" / "data" / "v1" / n for n in ("unread_default.jsonl", "unread_nosignal.jsonl")]
WALL = 1_763_683_200 * 10**9  # wall minus monotonic clock of a host without clock error
LOCAL_EVERY = 10  # every tenth connection: both sides on one host


@dataclass
class Template:
    events: list  # tracer.events.Event, times from 0
    server_port: int
    client_port: int
    server_pids: set
    delay_ns: int
    socks: dict  # sk and inode values of the recording: a small index each, made unique per connection  # the client's first event minus the server's close (or RST), true time


def _templates() -> list[Template]:
    from tracer import tracefile
    from tracer.correlate import Correlator
    from tracer.events import Event

    out = []
    for path in TEMPLATES:
        evs = [Event.from_dict(r) for r in tracefile.read(path) if r["type"] == "event"]
        t0 = min(e.ts_ns for e in evs)
        evs = [replace(e, ts_ns=e.ts_ns - t0) for e in evs]
        close = next(e for e in evs if e.kind == "close")
        sp, cp = close.lport, close.rport
        server = [e for e in evs if e.lport == sp]
        client = [e for e in evs if e.lport != sp]
        # Each side alone must be one half: a sender without victim, a victim without sender.
        [s] = Correlator().run(sorted(server, key=lambda e: e.ts_ns))
        [r] = Correlator().run(sorted(client, key=lambda e: e.ts_ns))
        assert s.to_dict(0).get("victim") is None and (r.to_dict(0).get("victim") or {}).get("pid"), path
        ts = s.to_dict(0)["timestamps"]
        t_s = min(v for v in (ts.get("close_ns"), ts.get("reset_ns")) if v is not None)
        delay = r.to_dict(0)["timestamps"]["first_ns"] - t_s
        ids = sorted({e.sk for e in evs if e.sk} | {e.ino for e in evs if e.ino})
        out.append(
            Template(evs, sp, cp, {e.pid for e in server if e.pid}, delay, {v: n + 1 for n, v in enumerate(ids)})
        )
    return out


def _addr(h: int) -> str:
    return f"10.{h >> 8 & 255}.{h & 255}.1"


def plan(hosts: int, events: int, seed: int, skew_s: float, tolerance_s: float, period_ns: int) -> dict:
    """Which connection goes where, and what the merge must find: {"conns": [(template,
    server host, client host)], "errors": [ns per host], "planted": n, ...}."""
    tpl = _templates()
    rnd = random.Random(seed)
    errors = [rnd.randint(-int(skew_s * 1e9), int(skew_s * 1e9)) for _ in range(hosts)]
    per = len(tpl[0].events)
    n_conn = max(1, events // per)
    conns, planted, local = [], 0, 0
    for c in range(n_conn):
        k = c % len(tpl)
        a = rnd.randrange(hosts)
        if hosts == 1 or c % LOCAL_EVERY == LOCAL_EVERY - 1:
            b = a
            local += 1
        else:
            b = (a + 1 + rnd.randrange(hosts - 1)) % hosts
            # skew as the merge computes it: victim's first event minus the sender's close, wall clock
            if abs(errors[b] - errors[a] + tpl[k].delay_ns) <= int(tolerance_s * 1e9):
                planted += 1
        conns.append((k, a, b))
    return {
        "templates": tpl,
        "conns": conns,
        "errors": errors,
        "planted": planted,
        "local": local,
        "split": n_conn - local,
        "period_ns": period_ns,
    }


def host_events(p: dict, h: int) -> list:
    """Host h's events, in time order."""
    tpl = p["templates"]
    shift = h * 10**12  # booted apart: each host's monotonic clock is its own
    out = []
    for c, (k, a, b) in enumerate(p["conns"]):
        if h not in (a, b):
            continue
        t = tpl[k]
        start = shift + 10**12 + c * p["period_ns"]
        # A 4-tuple of its own: the server port by connection block, the client port within it.
        sport, cport = 1024 + c // 32768, 32768 + c % 32768
        ports = {t.server_port: sport, t.client_port: cport}
        addrs = {True: _addr(a), False: _addr(b)}  # server side's address, client side's
        for e in t.events:
            on_server = e.lport == t.server_port
            if (a if on_server else b) != h:
                continue
            pid = (e.pid % 1000 + 1000 * (c % 4000) + 100) if e.pid else 0
            tid = (e.tid % 1000 + 1000 * (c % 4000) + 100) if e.tid else 0
            out.append(
                replace(
                    e,
                    ts_ns=e.ts_ns + start,
                    pid=pid,
                    tid=tid,
                    # The tracer tells sockets apart by sk (and inode): one connection's are its own.
                    sk=(c * 64 + t.socks[e.sk]) * 4096 if e.sk else 0,
                    ino=c * 64 + t.socks[e.ino] if e.ino else 0,
                    laddr=addrs[on_server] if e.laddr else e.laddr,
                    raddr=addrs[not on_server] if e.raddr else e.raddr,
                    lport=ports.get(e.lport, e.lport),
                    rport=ports.get(e.rport, e.rport),
                )
            )
    out.sort(key=lambda e: e.ts_ns)
    return out


def write_host(p: dict, h: int, path: Path) -> int:
    """Host h's trace (JSON Lines, as rsttrace record writes it); its events."""
    from tracer import tracefile
    from tracer.correlate import Correlator

    events = host_events(p, h)
    wall = WALL - h * 10**12 + p["errors"][h]
    incs = [i.to_dict(wall) for i in Correlator().run(events)]
    head = dict(
        tracefile.header({"name": "tracepoint"}, {}),
        host=f"host{h:04d}",
        wall_offset_ns=wall,
        trace_id=f"{h + 1:032x}",
    )
    w = tracefile.TraceWriter(path, head)
    for k in range(0, len(events), 4096):
        w.write([e.to_dict() for e in events[k : k + 4096]])
    w.write(incs + [{"type": "summary", "stats": {"lost": 0, "emitted": len(events)}}])
    w.close()
    return len(events)


def generate(
    root: Path,
    hosts: int = 200,
    events: int = 10_000_000,
    seed: int = 1,
    skew_s: float = 2.0,
    tolerance_s: float = 2.0,
    period_ns: int = 1_000_000,
    work: Path | None = None,
    keep_traces: bool = False,
) -> dict:
    """Write the dataset at root (through tracer.fleet.export, a host at a time); what it holds."""
    from tracer import fleet

    t0 = time.perf_counter()
    p = plan(hosts, events, seed, skew_s, tolerance_s, period_ns)
    scratch = None
    if work is None and not keep_traces:  # each host's trace lives here until exported: removed at the end
        scratch = tempfile.TemporaryDirectory(prefix="rsttrace-fleet-")
        work = scratch.name
    work = Path(work or tempfile.mkdtemp(prefix="rsttrace-fleet-"))
    work.mkdir(parents=True, exist_ok=True)
    n_ev = 0
    traces = []
    for h in range(hosts):
        path = work / f"host{h:04d}.jsonl"
        n_ev += write_host(p, h, path)
        fleet.export([path], root)
        traces.append(path)
        if not keep_traces:
            path.unlink()
    if scratch is not None:
        scratch.cleanup()
    return {
        "hosts": hosts,
        "events": n_ev,
        "connections": len(p["conns"]),
        "split": p["split"],
        "local": p["local"],
        "planted": p["planted"],
        "tolerance_s": tolerance_s,
        "max_clock_error_ns": max(abs(e) for e in p["errors"]),
        "seconds": round(time.perf_counter() - t0, 2),
        "traces": [str(t) for t in traces] if keep_traces else [],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.fleet_gen", description=__doc__.splitlines()[0])
    ap.add_argument("dir", type=Path, help="the dataset folder (new, or an rsttrace dataset to add hosts to)")
    ap.add_argument("--hosts", type=int, default=200)
    ap.add_argument("--events", type=int, default=10_000_000, help="events in all (about)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--skew", type=float, default=2.0, help="each host's wall clock is off by up to this (s)")
    ap.add_argument("--tolerance", type=float, default=2.0, help="the merge tolerance `planted` is counted for (s)")
    ap.add_argument("--keep-traces", type=Path, help="also keep each host's JSON Lines trace in this folder")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    if a.hosts < 1 or a.events < 1:
        ap.error("--hosts and --events must be positive")
    res = generate(
        a.dir, a.hosts, a.events, a.seed, a.skew, a.tolerance, work=a.keep_traces, keep_traces=bool(a.keep_traces)
    )
    print(json.dumps(res) if a.json else "\n".join(f"{k:20} {v}" for k, v in res.items() if k != "traces"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
