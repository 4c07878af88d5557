"""Traces of three hosts with skewed clocks, built from one recorded incident (as test_merge does
for two): the connections below, each split by socket between the hosts named."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from tracer import tracefile
from tracer.correlate import Correlator
from tracer.events import Event

DATA = Path(__file__).parent.parent / "data" / "v1"
WALL = (
    1_763_683_200 - 560
) * 10**9  # wall minus monotonic clock of a host without clock error: the runs cross midnight UTC
# host: (monotonic clock shift, wall-clock error): the boots differ, the clocks are off by up to 2 s.
HOSTS = {
    "alpha": (0, 0),
    "bravo": (7 * 10**12, 1_900_000_000),
    "charlie": (3 * 10**12, -1_900_000_000),
}
# (start after the recording's own start, server host, client host or None, port shift, pid shift)
RUNS = [
    (0, "alpha", "bravo", 0, 0),
    (10 * 10**9, "bravo", "charlie", 1, 10),
    (20 * 10**9, "charlie", "alpha", 2, 20),
    (1_200_000_000, "alpha", "bravo", 0, 30),  # the same 4-tuple as the first, reset again 1.2 s later
    (30 * 10**9, None, "charlie", 3, 40),  # a victim whose server is not traced
]


def recorded() -> list[Event]:
    return [Event.from_dict(r) for r in tracefile.read(DATA / "unread_default.jsonl") if r["type"] == "event"]


def write_host(path: Path, events: list[Event], host: str) -> list[dict]:
    shift, error = HOSTS[host]
    wall = WALL - shift + error
    events = sorted((replace(e, ts_ns=e.ts_ns + shift) for e in events), key=lambda e: e.ts_ns)
    incs = [i.to_dict(wall) for i in Correlator().run(events)]
    head = dict(tracefile.header({"name": "tracepoint"}, {}), host=host, wall_offset_ns=wall)
    w = tracefile.TraceWriter(path, head)
    w.write([e.to_dict() for e in events] + incs + [{"type": "summary", "stats": {"lost": 0, "emitted": len(events)}}])
    w.close()
    return incs


def three_hosts(folder: Path, runs=RUNS) -> dict[str, Path]:
    """One trace per host in folder (HOST.jsonl); their paths by host."""
    evs = recorded()
    server_port = next(e.lport for e in evs if e.kind == "close")
    client_port = next(e.rport for e in evs if e.kind == "close")
    per_host: dict[str, list[Event]] = {h: [] for h in HOSTS}
    for start, server, client, dport, dpid in runs:
        for e in evs:
            side = server if e.lport == server_port else client
            if side is None:
                continue
            lport = e.lport + dport if e.lport in (server_port, client_port) else e.lport
            rport = e.rport + dport if e.rport in (server_port, client_port) else e.rport
            per_host[side].append(
                replace(
                    e,
                    ts_ns=e.ts_ns + start,
                    lport=lport,
                    rport=rport,
                    pid=e.pid + dpid if e.pid else 0,
                    tid=e.tid + dpid if e.tid else 0,
                )
            )
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for host, events in per_host.items():
        paths[host] = folder / f"{host}.jsonl"
        write_host(paths[host], events, host)
    return paths
