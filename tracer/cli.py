"""Command line: `rsttrace` traces live; `demo`, `doctor` and friends are subcommands."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import click

from . import render
from .config import Config, Filters, build_filters
from .errors import BadTrace, ExitStatus, NotRoot, RsttraceError

BANNER = "Tracing TCP resets ({plan} plan). Ctrl-C to end."


def _require_root() -> None:
    if os.geteuid() != 0:
        raise NotRoot("rsttrace loads BPF programs and needs root: run it with sudo")


def _run_session(cfg: Config, term, scenario=None) -> "Session":  # noqa: F821
    from .session import Session, Sinks
    from .tracefile import TraceWriter, header

    session = Session(cfg, keep_incidents=scenario is not None)
    writer = None
    sinks = Sinks()

    explained: set[str] = set()

    def on_incident(inc: dict) -> None:
        if cfg.json:
            term.data(render.to_json(inc))
        elif not cfg.quiet:
            # Why and what to do, the first time each kind shows up (JSON always has them).
            term.chain(render.chain_lines(inc, explain=inc["kind"] not in explained))
            explained.add(inc["kind"])
        if writer:
            writer.write([inc])

    def on_lost(total: int) -> None:
        term.note(f"rsttrace: {total} event(s) lost so far (ring buffer full); incidents may be incomplete")

    def on_record(rec: dict) -> None:
        if writer:
            writer.write([rec])

    sinks.on_incident = on_incident
    sinks.on_lost = on_lost
    sinks.on_record = on_record
    sinks.on_note = term.note
    sinks.on_flush = term.flush
    session.sinks = sinks
    session.install_signal_handlers()
    session.start()
    if cfg.output:
        writer = TraceWriter(cfg.output, header(session.plan.describe(), cfg.filters.describe(),
                                                session.wall_offset_ns))
        sinks.on_event = lambda ev: writer.write([ev.to_dict()])
    term.note(BANNER.format(plan=session.plan.name))
    try:
        if scenario is not None:
            done = threading.Event()
            result: dict = {}

            def work():
                try:
                    result["value"] = scenario()
                except BaseException as e:  # reported below, in the main thread
                    result["error"] = e
                finally:
                    done.set()
            threading.Thread(target=work, daemon=True).start()
            session.run(until=lambda: done.is_set() and not session.correlator.open)
            session.scenario_result = result
        else:
            session.run()
    finally:
        session.stop()
        if writer:
            writer.write([{"type": "summary", "stats": session.final_stats,
                           "incidents": sum(session.kinds.values())}])
            writer.close()
        for line in render.summary(session.kinds, session.final_stats):
            term.note(line)
    return session


def _trace_options(f):
    """The options of live tracing, shared by `rsttrace` itself and `rsttrace record`."""
    options = [
        click.option("-p", "--pid", "pids", multiple=True,
                     help="Only incidents where this process is culprit or victim."),
        click.option("-c", "--comm", help="Only incidents where a process with this name is culprit or victim."),
        click.option("-P", "--port", "ports", multiple=True, help="Only connections with this local or remote port."),
        click.option("--netns", help="Only sockets in this network namespace (inode, /run/netns name, or path)."),
        click.option("--json", "as_json", is_flag=True, help="One JSON object per incident on stdout."),
        click.option("-w", "--wide", is_flag=True, help="Do not fold lines at 80 columns."),
        click.option("--settle", default=1.0, show_default=True, type=click.FloatRange(0.05, 60),
                     help="Seconds of quiet after which an incident is reported."),
        click.option("--duration", type=click.FloatRange(0, None), help="Stop after this many seconds."),
        click.option("--plan", "force_plan", type=click.Choice(["auto", "kprobe", "tracepoint"]),
                     default="auto", show_default=True,
                     help="Attach plan: auto (kprobes when the kernel allows them), or force one."),
        click.option("--close-wait", "close_wait", default=30.0, show_default=True,
                     type=click.FloatRange(0, 86400),
                     help="Report sockets left in CLOSE_WAIT this many seconds (0: off)."),
        click.option("--close-wait-every", default=60.0, show_default=True, type=click.FloatRange(0.1, 86400),
                     help="Seconds between per-process counts of overdue CLOSE_WAIT sockets."),
        click.option("--buffer", type=click.Choice(["auto", "perf"]), default="auto",
                     help="Event transport: ring buffer where the kernel has it (auto), or the perf buffer."),
        click.option("--ready-file", type=click.Path(path_type=Path), hidden=True),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _trace_live(output, quiet, pids, comm, ports, netns, as_json, wide, settle, duration, force_plan,
                close_wait, close_wait_every, buffer, ready_file) -> None:
    from .terminal import Terminal

    term = Terminal(wide)
    filters = build_filters(pids, comm, ports, netns)
    if output is not None and not output.parent.is_dir():
        raise BadTrace(f"cannot write trace {output}: no directory {output.parent}")
    _require_root()
    cfg = Config(filters=filters, settle_s=settle, json=as_json, output=output, wide=wide,
                 ready_file=ready_file, duration=duration, quiet=quiet,
                 force_plan=None if force_plan == "auto" else force_plan,
                 close_wait_s=close_wait, close_wait_every_s=close_wait_every, buffer=buffer)
    _run_session(cfg, term)


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@_trace_options
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write events and incidents as JSON Lines to FILE.")
@click.pass_context
def main(ctx, output, wide, **opts):
    """Explain TCP resets live: who closed with unread data, what the peer got."""
    ctx.ensure_object(dict)
    ctx.obj["wide"] = wide
    ctx.obj["force_plan"] = None if opts["force_plan"] == "auto" else opts["force_plan"]
    if ctx.invoked_subcommand is not None:
        return
    _trace_live(output, False, wide=wide, **opts)


@main.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@_trace_options
@click.option("-q", "--quiet", is_flag=True, help="Do not print incidents; only record them.")
def record(file, quiet, **opts):
    """Trace live and record events and incidents to FILE (JSON Lines; survives kill -9)."""
    _trace_live(file, quiet, **opts)


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object: summary and incidents.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(0, None),
              help="Show the last N incidents (0: all).")
def report(files, as_json, limit):
    """Incidents and summary of recorded traces (JSON Lines or exported Parquet); no root needed."""
    from . import frame, report as rep

    trace = frame.load(list(files), event_columns=["kind"])
    for w in trace.warnings:
        click.echo(f"rsttrace: warning: {w}", err=True)
    summary = rep.summarize(trace)
    if as_json:
        click.echo(rep.to_json(summary, trace))
        return
    rows, _ = rep.rows_in_order(trace, limit)
    click.echo("\n".join(rep.text(summary, rows)))


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--to", "fmt", type=click.Choice(["parquet", "csv"]), default="parquet", show_default=True)
@click.option("-o", "--output", "prefix", type=click.Path(path_type=Path),
              help="Write PREFIX.events.FMT and PREFIX.incidents.FMT (default: next to the first file).")
def export(files, fmt, prefix):
    """Export traces as typed tables: one for events, one for incidents."""
    from . import frame

    trace = frame.load(list(files))
    for w in trace.warnings:
        click.echo(f"rsttrace: warning: {w}", err=True)
    if prefix is None:
        first = files[0]
        prefix = first.with_name(first.name.removesuffix(".jsonl")) if not first.is_dir() else first / "trace"
    for path in frame.export(trace, prefix, fmt):
        click.echo(str(path))


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the merged trace (events of all inputs, joined incidents) to FILE.")
@click.option("--tolerance", default=2.0, show_default=True, type=click.FloatRange(0, 3600),
              help="Seconds the hosts' clocks may differ by (plus the RST's flight time).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per incident on stdout.")
def merge(files, output, tolerance, as_json):
    """Join traces from several hosts: each RST sent on one with its victim on another."""
    from . import merge as mg, report as rep
    from .frame import flatten_incident

    if len(files) < 2:
        raise click.UsageError("merge needs at least two traces")
    sources, incidents, stats = mg.merge(list(files), int(tolerance * 1e9))
    if output is not None:
        mg.write(list(files), output, sources, incidents, stats)
    hosts = [s.get("host") for s in sources]
    for inc in incidents:
        if as_json:
            click.echo(mg.to_json(inc))
            continue
        row = flatten_incident(inc)
        row["host"] = hosts[inc["src"]]
        row["victim_host"] = hosts[inc["victim"]["src"]] if inc.get("victim") and "src" in inc["victim"] \
            else row["host"]
        row["wall_ns"] = inc["timestamps"]["first_ns"] + sources[inc["src"]]["wall_offset_ns"]
        click.echo(rep.incident_line(row))
    click.echo(f"merged {stats['recordings']} recording(s): {stats['incidents']} incident(s), "
               f"{stats['cross_host']} joined across hosts (tolerance {tolerance:g} s); unmatched: "
               f"{stats['unmatched_senders']} sender(s) without victim, "
               f"{stats['unmatched_receivers']} victim(s) without sender", err=True)


@main.command()
@click.option("--unread", default=1000, show_default=True, type=click.IntRange(1, 1 << 20))
@click.pass_context
def demo(ctx, unread):
    """Reproduce the seed scenario in a private network namespace while tracing it."""
    from . import scenarios
    from .terminal import Terminal

    term = Terminal(ctx.obj.get("wide", False))
    _require_root()
    scenarios.build_workloads()
    with scenarios.Netns("rstdemo") as ns:
        term.note(f"demo: server and client in network namespace {ns.name}; the server closes "
                  f"with {unread} bytes unread, the client (default SIGPIPE) keeps writing")
        cfg = Config(filters=Filters(netns=ns.inode), settle_s=0.5, force_plan=ctx.obj.get("force_plan"))
        session = _run_session(cfg, term, scenario=lambda: scenarios.unread_close(ns, unread=unread))
    res = session.scenario_result
    if "error" in res:
        raise RsttraceError(f"demo workload failed: {res['error']}")
    found = [i for i in session.incidents
             if i["kind"] == "abort-on-close" and i["bytes_discarded"] == unread]
    if not found:
        raise RsttraceError("demo: the expected incident was not seen")


@main.command()
@click.pass_context
def doctor(ctx):
    """Say what this kernel offers and which attach plan rsttrace would use, and why."""
    from .kernel import OPTIONAL_TRACEPOINTS, REQUIRED_TRACEPOINTS, KernelFeatures, find_tracefs
    from .probes import choose_plan

    lines = []
    feats = KernelFeatures.probe()
    lines.append(f"kernel {feats.release}; BTF at {feats.btf_path}: struct offsets come from it")
    tfs = find_tracefs()
    lines.append(f"tracefs: {'mounted at ' + str(tfs) if tfs else 'not mounted (rsttrace mounts it)'}")
    for tp in REQUIRED_TRACEPOINTS + tuple(OPTIONAL_TRACEPOINTS) + ("sys_exit",):
        n = feats.tracepoints.get(tp, -1)
        lines.append(f"  tracepoint {tp}: " + ("MISSING" if n == -1 else "present" if n is None
                                                 else f"present, {n} args"))
    reasons = feats.rst_reasons()
    lines.append(f"reset reasons: {len(reasons)} from BTF enum sk_rst_reason" if reasons
                 else "reset reasons: none in this kernel (before 6.10); kinds come from the close path")
    if os.geteuid() != 0:
        lines.append("not root: attach trials skipped (run with sudo to try kprobes and fentry)")
        click.echo("\n".join(lines))
        return
    plan = choose_plan(feats, force=ctx.obj.get("force_plan"), report_fentry=True)
    for t in plan.trials:
        lines.append(f"trial {t.name}: {'works' if t.ok else 'refused'} ({t.detail})")
    lines.append(f"chosen plan: {plan.name} ({plan.why})")
    lines.extend(_plan_words(plan, feats))
    for m in plan.missing:
        lines.append(f"degraded: {m}")
    click.echo("\n".join(lines))


def _plan_words(plan, feats) -> list[str]:
    """What the chosen plan hooks, in plain words."""
    out = []
    if plan.name == "kprobe":
        out.append("  a close() that throws away unread data: kprobes on tcp_close and "
                   "tcp_send_active_reset (every RST this host starts itself)")
        if "kprobe:tcp_v4_send_reset" in plan.hooks:
            out.append("  RSTs from TIME_WAIT sockets and for unknown connections: kprobes on "
                       + " and ".join(h.split(":")[1] for h in plan.hooks
                                   if h.startswith("kprobe:") and h.endswith("_send_reset"))
                       + " (tcp:tcp_send_reset misses them before 6.10)")
        out.append("  the rest (state changes, received RSTs, signals): tracepoints")
    else:
        out.append("  a close() that throws away unread data: the socket's move to CLOSE "
                   "(sock:inet_sock_set_state, rcv_nxt - copied_seq); RSTs: tcp:tcp_send_reset")
        if plan.trials and plan.trials[0].ok and plan.why.startswith("forced"):
            out.append("  (the kprobe plan would work here: --plan auto)")
    io = feats.io_errors_from
    out.append({
        "tracepoint": "  the peer's send/recv errors: sock:sock_send_length/sock_recv_length",
        "sys_exit": "  the peer's send/recv errors: raw_syscalls:sys_exit, for read/write/send*/recv* "
                    "on TCP sockets (no sock_*_length tracepoints before 6.3)",
    }.get(io, "  the peer's send/recv errors: not available on this kernel"))
    return out


def run() -> None:
    """Console-script entry: one-line errors with distinct exit codes, never a traceback."""
    from .terminal import Terminal

    try:
        main(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(ExitStatus.ERROR)
    except click.ClickException as e:
        e.show()
        sys.exit(ExitStatus.USAGE)
    except RsttraceError as e:
        Terminal().error(str(e))
        sys.exit(e.status)
    except KeyboardInterrupt:
        sys.exit(ExitStatus.OK)
    sys.exit(ExitStatus.OK)


if __name__ == "__main__":
    run()
