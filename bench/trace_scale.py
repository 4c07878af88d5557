"""Benchmark: synthesise a large trace (default 1,000,000 events) and time report, export and load."""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = [ROOT / "tests" / "data" / "v1" / name for name in ("unread_default.jsonl", "unread_nosignal.jsonl")]
CULPRITS = ("api", "worker", "rst_server", "gateway")
VICTIMS = ("client", "rst_client", "loadgen")


def _templates() -> tuple[dict, list[tuple[list[dict], dict]]]:
    """The recorded scenarios: (events, incident) of one connection each, times from 0."""
    out, head = [], None
    for path in TEMPLATES:
        recs = [json.loads(line) for line in path.read_text().splitlines()]
        head = head or recs[0]
        events = [r for r in recs if r["type"] == "event"]
        [inc] = [r for r in recs if r["type"] == "incident"]
        t0 = min(e["ts_ns"] for e in events)
        for e in events:
            e["ts_ns"] -= t0
        for k, v in inc["timestamps"].items():
            if v is not None and k != "wall_ns":
                inc["timestamps"][k] = v - t0
        out.append((events, inc))
    return head, out


def synthesise(path: Path, n_events: int, period_ns: int = 1_000_000) -> tuple[int, int]:
    """Write a trace of about n_events events, one reset every period_ns; return (events, incidents)."""
    head, templates = _templates()
    head = dict(head, version=2, host="bench", trace_id="bench", wall_offset_ns=1_700_000_000 * 10**9)
    base = 10**12
    n_ev = n_inc = 0
    with open(path, "w") as f:
        f.write(json.dumps(head, separators=(",", ":")) + "\n")
        i = 0
        while n_ev < n_events:
            events, inc = templates[i % len(templates)]
            t = base + i * period_ns
            srv, cli = inc["culprit"]["pid"], inc["victim"]["pid"]
            sport, cport = inc["local"]["port"], inc["remote"]["port"]
            pids = {srv: 1000 + i % 50, cli: 5000 + i % 400}
            comms = {"rst_server": CULPRITS[i % 4], "rst_client": VICTIMS[i % 3]}
            ports = {sport: 8000 + i % 4, cport: 10000 + i % 50000}
            unread = 100 + (i * 37) % 5000
            lines = []
            for e in events[: n_events - n_ev]:
                e = dict(
                    e,
                    ts_ns=e["ts_ns"] + t,
                    pid=pids.get(e["pid"], e["pid"]),
                    tid=pids.get(e["tid"], e["tid"]),
                    comm=comms.get(e["comm"], e["comm"]),
                    lport=ports.get(e["lport"], e["lport"]),
                    rport=ports.get(e["rport"], e["rport"]),
                )
                if e["kind"] == "close" and e["bytes"]:
                    e["bytes"] = unread
                lines.append(json.dumps(e, separators=(",", ":")))
            n_ev += len(lines)
            if len(lines) == len(events):
                inc = copy.deepcopy(inc)
                inc["id"] = i + 1
                inc["culprit"] = {"pid": pids[srv], "comm": comms["rst_server"]}
                inc["bytes_discarded"] = unread
                inc["local"]["port"], inc["remote"]["port"] = ports[sport], ports[cport]
                v = inc["victim"]
                v["pid"], v["comm"], v["port"] = pids[cli], comms["rst_client"], ports[cport]
                for err in v["errors"]:
                    err["ts_ns"] += t
                    err["pid"] = err["tid"] = pids[cli]
                ts = inc["timestamps"]
                for k in ("first_ns", "close_ns", "reset_ns", "last_ns"):
                    if ts[k] is not None:
                        ts[k] += t
                ts["wall_ns"] = ts["first_ns"] + head["wall_offset_ns"]
                lines.append(json.dumps(inc, separators=(",", ":")))
                n_inc += 1
            f.write("\n".join(lines) + "\n")
            i += 1
        f.write(
            json.dumps({"type": "summary", "stats": {"emitted": n_ev, "lost": 0, "filtered": 0}, "incidents": n_inc})
            + "\n"
        )
    return n_ev, n_inc


def _timed(argv: list[str]) -> tuple[float, float]:
    """Wall-clock and CPU seconds (user + system, all threads) of a command. On a shared
    machine the CPU time is the steadier number."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--dir", type=Path, help="work directory (default: a fresh temporary one)")
    ap.add_argument("--json", action="store_true", help="print the timings as one JSON object")
    args = ap.parse_args(argv)
    work = args.dir or Path(tempfile.mkdtemp(prefix=f"rsttrace-bench-{os.getpid()}-"))
    work.mkdir(parents=True, exist_ok=True)
    trace = work / "big.jsonl"
    t0 = time.perf_counter()
    n_ev, n_inc = synthesise(trace, args.events)
    res = {"events": n_ev, "incidents": n_inc, "bytes": trace.stat().st_size, "synthesise_s": time.perf_counter() - t0}
    cli = [sys.executable, "-m", "tracer"]
    # Separate processes: each time includes start-up and imports, as a user would see it.
    runs = {
        "report": ["report", str(trace)],
        "report_json": ["report", "--json", str(trace)],
        "export_parquet": ["export", str(trace), "--to", "parquet", "-o", str(work / "big")],
        "export_csv": ["export", str(trace), "--to", "csv", "-o", str(work / "big")],
        "report_parquet": ["report", str(work / "big.events.parquet")],
    }
    for name, args_ in runs.items():
        res[name + "_s"], res[name + "_cpu_s"] = _timed(cli + args_)
    import tracer

    for name, src in (("load_jsonl", trace), ("load_parquet", work / "big.events.parquet")):
        t0, c0 = time.perf_counter(), time.process_time()
        t = tracer.load(src)
        res[name + "_s"], res[name + "_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
        if (len(t.events), len(t.incidents)) != (n_ev, n_inc):
            raise SystemExit(
                f"{src}: loaded {len(t.events)} events, {len(t.incidents)} incidents; wrote {n_ev}, {n_inc}"
            )
    if args.json:
        print(json.dumps(res))
    else:
        for k, v in res.items():
            print(f"{k:22} {v:,.2f}" if isinstance(v, float) else f"{k:22} {v:,}")
    return res


if __name__ == "__main__":
    main()
