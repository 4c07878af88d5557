"""Render a benchmark run (the dict bench/__main__.py builds) as Markdown."""

from __future__ import annotations

from pathlib import Path

TARGETS = {"0%": 3.0, "10%": 5.0}


def _n(x: float) -> str:
    return f"{x:,.0f}"


def write_report(r: dict, path: Path) -> None:
    m = r["machine"]
    lines = [
        "# rsttrace benchmarks",
        "",
        f"Run `{'bench/run --quick' if r['profile'] == 'quick' else 'bench/run'}` ({r['profile']} profile), "
        f"started {r['started']}, took {r['wall_s']} s. Raw data: `{path.with_suffix('.json').name}`.",
        "",
        f"Machine: {m['cpus']} x {m['cpu']}, {m['mem_gb']} GB, virtualization {m['virt']}, "
        f"kernel {m['kernel']}, Python {m['python']}, bcc {m['bcc']}.",
        f"Load during the whole run: loadavg {r['load']['loadavg_before']} before, "
        f"{r['load']['loadavg_after']} after; CPU steal {r['load']['steal_pct']}%; "
        f"machine busy {r['load']['busy_pct']}% of all CPUs.",
        f"Busiest processes before: {'; '.join(r['background_before'])}. After: {'; '.join(r['background_after'])}.",
        "",
    ]
    parts = r["parts"]
    if "overhead" in parts:
        p = r["params"]
        lines += [
            "## Tracing overhead (loopback connection churn)",
            "",
            f"`bench/churn.c` in its own network namespace: connect, 64-byte request, 64-byte answer, "
            f"close; 32 connections in flight. Runs of {p['seconds']} s, {p['rounds']} rounds, each round "
            "runs no tracer, rsttrace and tcpstates once (order rotated), every run in a fresh netns. "
            "Both tracers trace the whole host with no filter (rsttrace `--json` to a file, tcpstates "
            "line-buffered to a pipe the bench drains). The 10% mix: 7.5% close with unread data, "
            "2.5% SO_LINGER {1, 0}. Overhead = 1 - median(traced) / median(untraced). Tracer CPU: the "
            "tracer process's user + system time during the churn, in % of one CPU (BPF time is "
            "charged to the workload and shows as overhead).",
            "",
            "| resets | tracer | conn/s median | min | max | overhead | tracer CPU | lost events | incidents exact |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for mix, res in parts["overhead"].items():
            s = res["summary"]
            for t in ("none", "rsttrace", "rsttrace-kernel", "tcpstates"):
                if t not in s:
                    continue
                row = s[t]
                lines.append(
                    f"| {mix} | {t} | {_n(row['median'])} | {_n(row['min'])} | {_n(row['max'])} | "
                    f"{'–' if t == 'none' else str(row.get('overhead_pct')) + '%'} | "
                    f"{'–' if t == 'none' else str(row['cpu_pct_median']) + '%'} | "
                    f"{'–' if t == 'none' else row['lost_total']} | "
                    f"{'yes' if row.get('incidents_exact') else ('–' if t != 'rsttrace' else 'NO')} |"
                )
        lines.append("")
        if any("rsttrace-kernel" in res["summary"] for res in parts["overhead"].values()):
            lines += [
                "`rsttrace-kernel` is rsttrace whose consumer takes each record from the ring and "
                "drops it (`RSTTRACE_BENCH_DISCARD=1`): the kernel side's cost, without decoding, "
                "correlation and output.",
                "",
            ]
        for mix, res in parts["overhead"].items():
            s = res["summary"]
            if "rsttrace" not in s or "none" not in s:
                continue
            ro = s["rsttrace"]["overhead_pct"]
            ratio = s.get("tcpstates_vs_rsttrace")
            base = s["none"]
            spread = round(100 * (base["max"] - base["min"]) / base["median"], 1)
            if ro < 0 or spread > 2 * TARGETS[mix]:
                verdict = f"INCONCLUSIVE: untraced runs spread {spread}%, more than the target"
            else:
                verdict = "met" if ro <= TARGETS[mix] else "MISSED"
            if "tcpstates" not in s:
                versus = ""
            elif ratio is None:
                versus = (
                    f"; tcpstates overhead {s['tcpstates']['overhead_pct']}% (rsttrace's overhead "
                    "is at or below zero: within noise)"
                )
            else:
                versus = (
                    f"; tcpstates overhead {s['tcpstates']['overhead_pct']}%, {ratio}x rsttrace's "
                    f"(target at least 10x: {'met' if ratio >= 10 else 'MISSED'})"
                )
            lines.append(
                f"- {mix} resets: rsttrace overhead {ro}% (target at most {TARGETS[mix]}%: "
                f"{verdict}), lost {s['rsttrace']['lost_total']} "
                f"(target 0: {'met' if s['rsttrace']['lost_total'] == 0 else 'MISSED'}){versus}"
                + (f"; kernel side alone {s['rsttrace-kernel']['overhead_pct']}%" if "rsttrace-kernel" in s else "")
            )
        lines += ["", "Per run (conn/s, in run order):", ""]
        for mix, res in parts["overhead"].items():
            seq = ", ".join(f"{x['tracer']} {_n(x['conn_per_s'])}" for x in res["runs"])
            lines.append(f"- {mix}: {seq}")
        lines.append("")
    if "bpfcost" in parts:
        lines += [
            "## Where the kernel-side time goes",
            "",
            "BPF run time per churned connection with rsttrace attached, from the kernel's own "
            "statistics (`kernel.bpf_stats_enabled`, which adds its own clock reads to every run): "
            "unlike conn/s, this is not blurred by other load on the machine.",
            "",
            "| resets | program | runs/conn | ns/run | ns/conn |",
            "|---|---|---|---|---|",
        ]
        for mix, b in parts["bpfcost"].items():
            for name, x in sorted(b["programs"].items(), key=lambda kv: -kv[1]["ns_per_conn"]):
                lines.append(f"| {mix} | {name} | {x['runs_per_conn']} | {x['ns_per_run']} | {x['ns_per_conn']} |")
            lines.append(f"| {mix} | **total** | | | **{b['ns_per_conn']}** |")
        lines.append("")
        if any("closers_ns_per_conn" in b for b in parts["bpfcost"].values()):
            lines.append(
                "Remembering who closed each connection (the closers cache that names the closer of a "
                "write-after-close; budget 300 ns per connection), from the same build without it "
                "run right after: "
                + ", ".join(
                    f"{mix} {b['closers_ns_per_conn']} ns/conn ({b['ns_per_conn']} vs "
                    f"{b['without_closers_ns_per_conn']})"
                    for mix, b in parts["bpfcost"].items()
                    if "closers_ns_per_conn" in b
                )
                + "."
            )
            lines.append("")
    if "ingest" in parts:
        g = parts["ingest"]
        i = g["incidents"]
        lines += [
            "## Ingest: every connection ends in a reset",
            "",
            f"Every churned connection closes with its 64-byte request unread, for {g['seconds']:.0f} s, "
            "with rsttrace tracing the whole host.",
            "",
            "| | value |",
            "|---|---|",
            f"| resets/s untraced (same churn, no tracer) | {_n(g['untraced_resets_per_s'])} |",
            f"| resets/s traced | {_n(g['resets_per_s'])} |",
            f"| resets made (generator) / TCPAbortOnClose | {_n(g['resets'])} / {_n(g['TCPAbortOnClose'])} |",
            f"| abort-on-close incidents reported | {_n(i['kinds'].get('abort-on-close', 0))} |",
            f"| incidents with bytes_discarded != 64 | {i['bytes_not_64']} |",
            f"| victims with read ECONNRESET | {_n(i['victims_read_econnreset'])} |",
            f"| events received, events/s | {_n(g['received'])}, {_n(g['events_per_s'])} |",
            f"| lost events | {g['lost']} |",
            f"| tracer CPU | {g['tracer_cpu_pct']}% of one CPU |",
            f"| peak RSS | {_n(g['peak_rss_kb'])} KB |",
            f"| stop (drain + final report) | {g['stop_s']} s, exit {g['returncode']} |",
            "",
            f"Verdict: {'0 lost and every incident exact' if g['lost'] == 0 and i['exact'] else 'NOT clean'}.",
            "",
        ]
    if "ceiling" in parts:
        c = parts["ceiling"]
        lines += [
            "## Consumer ceiling (synthetic in-kernel source)",
            "",
            "rsttrace built with the bench-only `-DRST_BENCH_SYNTH` (`bpf/hooks/bench.h`): each "
            f"`prctl(RST_BENCH_PRCTL, {c['groups_per_trigger']}, seq)` from `bench/synth.c` emits "
            f"{c['groups_per_trigger']} synthetic abort-on-close incidents of 7 events each through the real "
            "`rst_emit` path (filters, socket maps, ring buffer); the consumer decodes, orders and "
            "correlates them into incidents and prints them as JSON.",
            "",
            "| target events/s | sent events/s | received | lost | incidents / expected | lost reported live | "
            "tracer CPU | up until stopped, exit code |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for s in c["steps"]:
            lines.append(
                f"| {_n(s['target_events_per_s'])} | {_n(s['events_per_s'])} | {_n(s['received'])} | "
                f"{_n(s['lost'])} | {_n(s['incidents'])} / {_n(s['incidents_expected'])} | "
                f"{'yes' if s['lost_warned'] else ('–' if not s['lost'] else 'NO')} | {s['tracer_cpu_pct']}% | "
                f"{'yes' if s['alive'] else 'NO'}, {s['returncode']} |"
            )
        lines += [
            "",
            f"Highest clean step (0 lost, every incident): {_n(c['ceiling_events_per_s'])} events/s "
            "(target: above 100,000).",
            "",
        ]
    if "memory" in parts:
        mm = parts["memory"]
        lines += [
            "## Memory",
            "",
            f"rsttrace RSS while it reports {mm['incidents_per_s']:.0f} incidents/s for {mm['seconds']:.0f} s "
            f"({len(mm['samples'])} samples).",
            "",
            f"- start {_n(mm['start_kb'])} KB, peak {_n(mm['peak_kb'])} KB, end {_n(mm['end_kb'])} KB",
            f"- slope {mm['slope_kb_per_min']} KB/min over the whole run, "
            f"{mm['slope_after_warmup_kb_per_min']} KB/min after the first fifth",
            f"- lost {mm['lost']}, incidents exact: {mm['incidents']['exact']} "
            f"({_n(mm['incidents']['kinds'].get('abort-on-close', 0))})",
            "",
        ]
    if "startup" in parts:
        su = parts["startup"]
        lines += [
            "## Start-up",
            "",
            f"From starting `python -m tracer` to its ready file (BPF compiled, loaded, attached, ring "
            f"open): {', '.join(f'{x:.2f}' for x in su['seconds'])} s; median {su['median_s']:.2f} s, max "
            f"{su['max_s']:.2f} s (target at most 2 s).",
            "",
        ]
    if "service" in parts:
        from .service_part import report_lines

        lines += report_lines(parts["service"])
    if "fleet" in parts:
        from .fleet_part import report_lines as fleet_lines

        lines += fleet_lines(parts["fleet"])
    path.write_text("\n".join(lines))
