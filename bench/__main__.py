"""`python -m bench`: run the benchmarks and write bench/RESULTS.md (see bench/README.md)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path

from . import harness as h
from .report import write_report

PARTS = ("overhead", "bpfcost", "ingest", "ceiling", "memory", "startup", "service", "fleet")
# Parts that need neither root nor BPF (no churn programs built for them alone).
UNPRIVILEGED = ("fleet",)
TRACERS = ("none", "rsttrace", "tcpstates")
# Not run by default (--tracers): rsttrace with a consumer that takes the records and drops
# them, so what the kernel side alone costs shows next to the whole.
EXTRA_TRACERS = ("rsttrace-kernel",)
# The 10% mix: three quarters closes with unread data, one quarter SO_LINGER {1, 0}.
MIXES = {"0%": (0, 0), "10%": (750, 250)}

PROFILES = {
    # seconds per churn run, rounds (each round runs none / rsttrace / tcpstates once),
    # ingest seconds, seconds per ceiling step, ceiling steps (events/s), memory seconds,
    # memory sampling period, start-up samples
    "full": dict(
        seconds=10,
        rounds=5,
        ingest=30,
        ceiling_s=10,
        ceiling_rates=(50_000, 100_000, 150_000, 200_000, 300_000, 400_000),
        memory=600,
        memory_every=5,
        startup=5,
        # service: seconds under churn, idle seconds before, connections/s (10% reset),
        # file size and total cap of the trace directory
        service_s=600,
        service_idle_s=60,
        service_rate=2000,
        service_file_size=4 << 20,
        service_cap=16 << 20,
        # fleet: hosts and events (in all) of the pair (pandas vs DuckDB vs Dask) and of the whole
        # fleet (DuckDB, Dask)
        fleet_pair_hosts=2,
        fleet_pair_events=1_000_000,
        fleet_hosts=200,
        fleet_events=10_000_000,
    ),
    "quick": dict(
        seconds=3,
        rounds=2,
        ingest=5,
        ceiling_s=3,
        ceiling_rates=(50_000, 200_000),
        memory=20,
        memory_every=1,
        startup=2,
        service_s=20,
        service_idle_s=5,
        service_rate=2000,
        service_file_size=1 << 20,
        service_cap=4 << 20,
        fleet_pair_hosts=2,
        fleet_pair_events=20_000,
        fleet_hosts=10,
        fleet_events=50_000,
    ),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def one_churn_run(tracer: str, seconds: float, unread_bp: int, linger_bp: int, wd: Path) -> dict:
    """One churn run in a fresh netns under `tracer`; the tracer traces the whole host."""
    with h.churn_netns() as ns:
        h.prepare_netns(ns)
        tp = None
        if tracer == "rsttrace-kernel":
            tp = h.TracerProc("rsttrace", wd, env={"RSTTRACE_BENCH_DISCARD": "1"})
            tp.start()
        elif tracer != "none":
            tp = h.TracerProc(tracer, wd)
            tp.start()
        load = h.LoadProbe().begin()
        cpu0 = tp.cpu() if tp else 0.0
        rep = h.run_churn(ns, seconds=seconds, unread_bp=unread_bp, linger_bp=linger_bp)
        cpu1 = tp.cpu() if tp else 0.0
        load.end()
        run = {"tracer": tracer, "conn_per_s": rep["conn_per_s"], "churn": rep, "load": load.describe()}
        if tp:
            st = tp.stop()
            run.update(
                tracer_cpu_pct=round(100 * (cpu1 - cpu0) / rep["elapsed_s"], 1), lost=st.lost, returncode=st.returncode
            )
            if tracer == "rsttrace-kernel":
                run["received"] = st.received
                st.outfile.unlink()
            elif tracer == "rsttrace":
                incs = h.read_incidents(st.outfile, ns.inode)
                run["incidents"] = h.check_incidents(
                    incs, rep["unread"], rep["linger0"], rep["counters"]["Tcp.OutRsts"]
                )
                run["received"] = st.received
                st.outfile.unlink()
            else:
                run["lines"] = st.lines
    return run


def overhead(p: dict, wd: Path) -> dict:
    out = {}
    tracers = p["tracers"]
    for mix, (u, l) in MIXES.items():
        if mix not in p["mixes"]:
            continue
        runs = []
        for r in range(p["rounds"]):
            k = r % len(tracers)
            order = tracers[k:] + tracers[:k]  # rotate so no tracer always goes first
            for tracer in order:
                run = one_churn_run(tracer, p["seconds"], u, l, wd)
                run["round"] = r
                runs.append(run)
                log(
                    f"overhead {mix} round {r} {tracer}: {run['conn_per_s']:.0f} conn/s"
                    + (f", cpu {run['tracer_cpu_pct']}%, lost {run['lost']}" if tracer != "none" else "")
                )
        out[mix] = {"unread_bp": u, "linger_bp": l, "runs": runs, "summary": summarize(runs)}
    return out


def summarize(runs: list[dict]) -> dict:
    by: dict[str, list[dict]] = {}
    for r in runs:
        by.setdefault(r["tracer"], []).append(r)
    base = statistics.median(r["conn_per_s"] for r in by.get("none", [])) if "none" in by else None
    s = {}
    for t, rs in by.items():
        rates = [r["conn_per_s"] for r in rs]
        med = statistics.median(rates)
        row = {"median": med, "min": min(rates), "max": max(rates), "n": len(rates)}
        if base:
            row["overhead_pct"] = round(100 * (1 - med / base), 2)
        if t != "none":
            row["cpu_pct_median"] = statistics.median(r["tracer_cpu_pct"] for r in rs)
            row["lost_total"] = sum(r["lost"] for r in rs)
            row["returncodes"] = sorted({r["returncode"] for r in rs})
        if t == "rsttrace":
            row["incidents_exact"] = all(r["incidents"]["exact"] for r in rs)
        s[t] = row
    if base and "rsttrace" in s and "tcpstates" in s:
        ro, to = s["rsttrace"]["overhead_pct"], s["tcpstates"]["overhead_pct"]
        s["tcpstates_vs_rsttrace"] = round(to / ro, 1) if ro > 0 else None
    return s


def bpfcost(p: dict, wd: Path) -> dict:
    """BPF run time per connection, by program (kernel.bpf_stats_enabled): the part of the
    overhead that noise from other load cannot blur."""
    out = {}
    for mix, (u, l) in MIXES.items():
        out[mix] = _bpfcost_run(p, wd, u, l)
        log(f"bpfcost {mix}: {out[mix]['ns_per_conn']} ns of BPF per connection")
        # The price of remembering every close's closer (a cache write per connection), from
        # the same build without it, run right after.
        bare = _bpfcost_run(p, wd, u, l, env={"RSTTRACE_BENCH_NO_CLOSERS": "1"})
        out[mix]["without_closers_ns_per_conn"] = bare["ns_per_conn"]
        out[mix]["closers_ns_per_conn"] = out[mix]["ns_per_conn"] - bare["ns_per_conn"]
        log(f"bpfcost {mix}: closers cache {out[mix]['closers_ns_per_conn']} ns per connection")
    return out


def _bpfcost_run(p: dict, wd: Path, u: int, l: int, env: dict | None = None) -> dict:
    with h.churn_netns() as ns, h.BpfStats():
        h.prepare_netns(ns)
        tp = h.TracerProc("rsttrace", wd, env=env)
        tp.start()
        s0 = h.bpf_prog_stats(tp.pid)
        rep = h.run_churn(ns, seconds=p["seconds"], unread_bp=u, linger_bp=l)
        s1 = h.bpf_prog_stats(tp.pid)
        st = tp.stop()
        st.outfile.unlink()
    n = rep["connections"]
    progs = {}
    for name, (c1, t1) in s1.items():
        c0, t0 = s0.get(name, (0, 0))
        if c1 > c0:
            progs[name] = {
                "runs_per_conn": round((c1 - c0) / n, 2),
                "ns_per_run": round((t1 - t0) / (c1 - c0)),
                "ns_per_conn": round((t1 - t0) / n),
            }
    total = sum(x["ns_per_conn"] for x in progs.values())
    return {"connections": n, "conn_per_s": rep["conn_per_s"], "programs": progs, "ns_per_conn": total, "lost": st.lost}


def ingest(p: dict, wd: Path) -> dict:
    """Every connection ends in an unread-data reset, as fast as the machine can go."""
    base = one_churn_run("none", p["ingest"], 10000, 0, wd)
    log(f"ingest untraced: {base['conn_per_s']:.0f} resets/s")
    with h.churn_netns() as ns:
        h.prepare_netns(ns)
        tp = h.TracerProc("rsttrace", wd)
        tp.start()
        load = h.LoadProbe().begin()
        cpu0 = tp.cpu()
        peak = [tp.rss()]
        stop = threading.Event()

        def sample():
            while not stop.wait(1.0):
                peak.append(tp.rss())

        threading.Thread(target=sample, daemon=True).start()
        rep = h.run_churn(ns, seconds=p["ingest"], unread_bp=10000)
        stop.set()
        cpu1 = tp.cpu()
        load.end()
        t_stop = time.monotonic()
        st = tp.stop()
        drain_s = time.monotonic() - t_stop
        incs = h.read_incidents(st.outfile, ns.inode)
        st.outfile.unlink()
    res = {
        "untraced_resets_per_s": base["conn_per_s"],
        "resets_per_s": rep["conn_per_s"],
        "resets": rep["unread"],
        "TCPAbortOnClose": rep["counters"]["TcpExt.TCPAbortOnClose"],
        "seconds": rep["elapsed_s"],
        "lost": st.lost,
        "received": st.received,
        "events_per_s": round(st.received / rep["elapsed_s"]),
        "tracer_cpu_pct": round(100 * (cpu1 - cpu0) / rep["elapsed_s"], 1),
        "peak_rss_kb": max(peak),
        "stop_s": round(drain_s, 2),
        "returncode": st.returncode,
        "incidents": h.check_incidents(incs, rep["unread"], 0, rep["counters"]["Tcp.OutRsts"]),
        "load": load.describe(),
    }
    log(f"ingest: {res['resets_per_s']:.0f} resets/s, lost {st.lost}, incidents exact: {res['incidents']['exact']}")
    return res


def ceiling(p: dict, wd: Path) -> dict:
    """The consumer's ceiling, fed by the synthetic in-kernel source (bpf/hooks/bench.h)."""
    steps = []
    groups = 4
    for rate in p["ceiling_rates"]:
        tp = h.TracerProc("rsttrace", wd, env={"RSTTRACE_BENCH_SYNTH": "1"})
        tp.start()
        load = h.LoadProbe().begin()
        cpu0 = tp.cpu()
        rep = h.run_synth(groups, rate / h.SYNTH_EVENTS_PER_INCIDENT, p["ceiling_s"])
        cpu1 = tp.cpu()
        alive = tp.proc.poll() is None
        load.end()
        st = tp.stop()
        incs = h.read_incidents(st.outfile)
        synthetic = [i for i in incs if (i.get("culprit") or {}).get("comm") == "synth"]
        st.outfile.unlink()
        step = {
            "target_events_per_s": rate,
            "events": rep["events"],
            "events_per_s": round(rep["events"] / rep["elapsed_s"]),
            "received": st.received,
            "lost": st.lost,
            "incidents": len(synthetic),
            "incidents_expected": rep["incidents"],
            "bytes_ok": all(i["bytes_discarded"] == 64 for i in synthetic),
            "lost_warned": "lost so far" in st.stderr,
            "accounted": st.received + st.lost >= rep["events"],
            "tracer_cpu_pct": round(100 * (cpu1 - cpu0) / rep["elapsed_s"], 1),
            "alive": alive,
            "returncode": st.returncode,
            "load": load.describe(),
        }
        steps.append(step)
        log(
            f"ceiling {rate}/s: sent {step['events_per_s']}/s, lost {st.lost}, "
            f"incidents {len(synthetic)}/{rep['incidents']}, cpu {step['tracer_cpu_pct']}%"
        )
    clean = [s for s in steps if s["lost"] == 0 and s["incidents"] == s["incidents_expected"]]
    return {
        "groups_per_trigger": groups,
        "steps": steps,
        "ceiling_events_per_s": max((s["events_per_s"] for s in clean), default=0),
    }


def memory(p: dict, wd: Path) -> dict:
    """RSS of rsttrace at 1,000 incidents/s."""
    with h.churn_netns() as ns:
        h.prepare_netns(ns)
        tp = h.TracerProc("rsttrace", wd)
        tp.start()
        load = h.LoadProbe().begin()
        t0 = time.monotonic()
        samples = [(0.0, tp.rss())]
        stop = threading.Event()

        def sample():
            while not stop.wait(p["memory_every"]):
                samples.append((time.monotonic() - t0, tp.rss()))

        threading.Thread(target=sample, daemon=True).start()
        rep = h.run_churn(ns, seconds=p["memory"], unread_bp=10000, rate=1000)
        stop.set()
        samples.append((time.monotonic() - t0, tp.rss()))
        load.end()
        st = tp.stop()
        incs = h.read_incidents(st.outfile, ns.inode)
        st.outfile.unlink()
    kb = [s[1] for s in samples]
    later = samples[len(samples) // 5 :]  # past the warm-up
    return {
        "seconds": rep["elapsed_s"],
        "incidents_per_s": rep["conn_per_s"],
        "samples": samples,
        "start_kb": kb[0],
        "peak_kb": max(kb),
        "end_kb": kb[-1],
        "slope_kb_per_min": round(slope(samples) * 60, 1),
        "slope_after_warmup_kb_per_min": round(slope(later) * 60, 1),
        "lost": st.lost,
        "incidents": h.check_incidents(incs, rep["unread"], 0, rep["counters"]["Tcp.OutRsts"]),
        "load": load.describe(),
    }


def slope(samples: list[tuple[float, int]]) -> float:
    """Least-squares KB per second."""
    if len(samples) < 2:
        return 0.0
    xs = [s[0] for s in samples]
    ys = [s[1] for s in samples]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0


def startup(p: dict, wd: Path) -> dict:
    times = []
    for _ in range(p["startup"]):
        tp = h.TracerProc("rsttrace", wd)
        times.append(round(tp.start(), 3))
        tp.stop()
        log(f"start-up: {times[-1]:.2f} s")
    return {"seconds": times, "median_s": statistics.median(times), "max_s": max(times)}


def service(p: dict, wd: Path) -> dict:
    from .service_part import service as run

    return run(p, wd)


def fleet(p: dict, wd: Path) -> dict:
    from .fleet_part import fleet as run

    return run(p, wd, log=log)


def _size(text: str) -> tuple[int, int]:
    """HOSTSxEVENTS, e.g. 200x10000000."""
    try:
        hosts, events = (int(x.replace("_", "")) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOSTSxEVENTS, e.g. 2x1000000") from None
    if hosts < 1 or events < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: hosts and events must be positive")
    return hosts, events


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="short runs: checks the bench, not the machine")
    ap.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts of {','.join(PARTS)}")
    ap.add_argument("--seconds", type=float, help="override the seconds per overhead run")
    ap.add_argument("--rounds", type=int, help="override the rounds per overhead mix")
    ap.add_argument("--tracers", default=",".join(TRACERS), help="overhead: which of none,rsttrace,tcpstates")
    ap.add_argument("--mixes", default=",".join(MIXES), help="overhead: which reset mixes (0%%,10%%)")
    ap.add_argument("--memory-seconds", type=float, help="override the memory run's length")
    ap.add_argument("--service-seconds", type=float, help="override the service run's length (600)")
    ap.add_argument(
        "--fleet-pair", type=_size, metavar="HOSTSxEVENTS", help="fleet: the pandas comparison's size (2x1000000)"
    )
    ap.add_argument("--fleet-whole", type=_size, metavar="HOSTSxEVENTS", help="fleet: the whole fleet (200x10000000)")
    ap.add_argument(
        "--out",
        type=Path,
        help="write the report here (default bench/RESULTS.md; --quick writes bench/RESULTS-quick.md)",
    )
    args = ap.parse_args(argv)
    parts = [x for x in args.only.split(",") if x]
    unknown = set(parts) - set(PARTS)
    if unknown:
        ap.error(f"unknown part(s) {', '.join(sorted(unknown))}; choose from {', '.join(PARTS)}")
    privileged = [x for x in parts if x not in UNPRIVILEGED]
    if privileged and os.geteuid() != 0:
        print("bench: needs root (BPF, network namespaces): sudo bench/run", file=sys.stderr)
        return 3
    profile = "quick" if args.quick else "full"
    p = dict(PROFILES[profile])
    for key, val in (
        ("seconds", args.seconds),
        ("rounds", args.rounds),
        ("memory", args.memory_seconds),
        ("service_s", args.service_seconds),
    ):
        if val:
            p[key] = val
    if args.fleet_pair:
        p["fleet_pair_hosts"], p["fleet_pair_events"] = args.fleet_pair
    if args.fleet_whole:
        p["fleet_hosts"], p["fleet_events"] = args.fleet_whole
    p["tracers"] = tuple(t for t in args.tracers.split(",") if t)
    p["mixes"] = tuple(m for m in args.mixes.split(",") if m)
    if set(p["tracers"]) - set(TRACERS + EXTRA_TRACERS) or set(p["mixes"]) - set(MIXES):
        ap.error(f"--tracers: some of {','.join(TRACERS + EXTRA_TRACERS)}; --mixes: some of {','.join(MIXES)}")
    if "overhead" in parts and "tcpstates" in p["tracers"]:
        h.ensure_tcpstates()
    if privileged:
        h.build("churn")
        h.build("synth")
    wd = h.workdir()
    results = {
        "profile": profile,
        "params": p,
        "machine": h.machine(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "parts": {},
    }
    total = h.LoadProbe().begin()
    results["background_before"] = h.other_load()
    t0 = time.monotonic()
    try:
        for part in PARTS:
            if part in parts:
                log(f"{part} ...")
                results["parts"][part] = globals()[part](p, wd)
    finally:
        shutil.rmtree(wd, ignore_errors=True)
    results["load"] = total.end().describe()
    results["background_after"] = h.other_load()
    results["wall_s"] = round(time.monotonic() - t0)
    out = args.out or h.BENCH_DIR / ("RESULTS-quick.md" if args.quick else "RESULTS.md")
    out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    write_report(results, out)
    log(f"wrote {out} and {out.with_suffix('.json')} ({results['wall_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
