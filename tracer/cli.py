"""Command line: `rsttrace` traces live; `demo`, `doctor` and friends are subcommands.

Every option is checked in one place (tracer/config.py) before anything is loaded, and every
exception is mapped to its exit code in one place (`run`, below): one line on stderr, never
a traceback (RSTTRACE_DEBUG=1 or --debug shows it for an unexpected error).
"""

from __future__ import annotations

import json
import itertools
import os
import shutil
import sys
import threading
from pathlib import Path

import click

from . import render
from .config import Config, FiniteFloat, Filters, build_filters, check_btf, check_output
from .errors import ExitStatus, NoCompiler, NotRoot, OutputFailed, RsttraceError

BANNER = "Tracing TCP resets ({plan} plan). Ctrl-C to end."
DEBUG_ENV = "RSTTRACE_DEBUG"


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("rsttrace")
    except Exception:  # noqa: BLE001 - not installed (run from a checkout)
        try:
            import tomllib

            with open(Path(__file__).parent.parent / "pyproject.toml", "rb") as f:
                return tomllib.load(f)["project"]["version"]
        except Exception:  # noqa: BLE001
            return "unknown"


def _require_root() -> None:
    if os.geteuid() != 0:
        raise NotRoot("rsttrace loads BPF programs and needs root: run it with sudo")


class _Outputs:
    """Where a live session's records go: the -o file first, then the terminal, so that
    stdout never shows an incident the file lacks. A failed output (disk full, stdout closed)
    stops the session: the sinks never raise (they run inside bcc's callbacks)."""

    def __init__(self, cfg: Config, term, session) -> None:
        self.cfg, self.term, self.session = cfg, term, session
        self.writer = None
        self.failure: OutputFailed | None = None
        self.dropped = 0  # incidents neither written nor shown after a failure
        self.explained: set[str] = set()

    def fail(self, e: OutputFailed) -> None:
        if self.failure is None:
            self.failure = e
        self.session.exiting = True

    def _write(self, records: list[dict]) -> bool:
        if self.writer is None:
            return True
        if self.failure is not None and not self.failure.stdout_closed:
            return False
        try:
            self.writer.write(records)
            return True
        except OutputFailed as e:
            self.fail(e)
            return False

    def incident(self, inc: dict) -> None:
        file_failed = self.failure is not None and not self.failure.stdout_closed
        if file_failed or not self._write([inc]):
            self.dropped += 1
            return
        if self.term.closed:
            return
        try:
            if self.cfg.json:
                self.term.data(render.to_json(inc))
            elif not self.cfg.quiet:
                # Why and what to do, the first time each kind shows up (JSON always has them).
                self.term.chain(render.chain_lines(inc, explain=inc["kind"] not in self.explained))
                self.explained.add(inc["kind"])
        except OutputFailed as e:
            self.fail(e)

    def record(self, rec: dict) -> None:
        self._write([rec])

    def event(self, ev) -> None:
        if self.writer is not None:  # after stdout closed, the file still takes everything
            self._write([ev.to_dict()])

    def flush(self) -> None:
        try:
            self.term.flush()
        except OutputFailed as e:
            self.fail(e)


def _run_session(cfg: Config, term, scenario=None) -> "Session":  # noqa: F821
    from .session import Session, Sinks
    from .tracefile import TraceWriter, header

    session = Session(cfg, keep_incidents=scenario is not None)
    out = _Outputs(cfg, term, session)
    sinks = Sinks()
    sinks.on_incident = out.incident
    sinks.on_lost = lambda total: term.note(
        f"rsttrace: {total} event(s) lost so far (ring buffer full); incidents may be incomplete"
    )
    sinks.on_record = out.record
    sinks.on_note = term.note
    sinks.on_flush = out.flush
    session.sinks = sinks
    session.install_signal_handlers()
    session.start()
    try:
        if cfg.output:
            out.writer = TraceWriter(
                cfg.output, header(session.plan.describe(), cfg.filters.describe(), session.wall_offset_ns)
            )
            sinks.on_event = out.event
        term.note(BANNER.format(plan=session.plan.name))
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
            session.run(until=lambda: session.exiting or (done.is_set() and not session.correlator.open))
            session.scenario_result = result
        else:
            session.run()
    finally:
        session.stop()
        stats = getattr(session, "final_stats", {})
        if out.writer:
            final = {"type": "summary", "stats": stats, "incidents": sum(session.kinds.values()) - out.dropped}
            if out.failure is not None and not out.failure.stdout_closed:
                final["error"] = str(out.failure)
            out.writer.write_final(final)
            out.writer.close()
        for line in render.summary(session.kinds, stats):
            term.note(line)
        if out.dropped:
            term.note(f"{out.dropped} incident(s) after the failure neither written nor shown")
    if out.failure is not None:
        raise out.failure
    return session


def _trace_options(f):
    """The options of live tracing, shared by `rsttrace` itself and `rsttrace record`."""
    options = [
        click.option(
            "-p",
            "--pid",
            "pids",
            multiple=True,
            help="Only incidents where this process is culprit or victim (up to 1024).",
        ),
        click.option("-c", "--comm", help="Only incidents where a process with this name is culprit or victim."),
        click.option(
            "-P", "--port", "ports", multiple=True, help="Only connections with this local or remote port (up to 1024)."
        ),
        click.option("--netns", help="Only sockets in this network namespace (inode, /run/netns name, or path)."),
        click.option(
            "--cgroup",
            "cgroups",
            multiple=True,
            help="Only incidents with a side in this cgroup or below it (path in the hierarchy).",
        ),
        click.option(
            "--container",
            "containers",
            multiple=True,
            help="Only incidents with a side in this container (id, at least 12 hex digits).",
        ),
        click.option("--json", "as_json", is_flag=True, help="One JSON object per incident on stdout."),
        click.option("-w", "--wide", is_flag=True, help="Do not fold long lines on a terminal."),
        click.option(
            "--settle",
            default=1.0,
            show_default=True,
            type=FiniteFloat(0.05, 60),
            help="Seconds of quiet after which an incident is reported.",
        ),
        click.option(
            "--duration", type=FiniteFloat(0, 365 * 86400, lo_open=True), help="Stop after this many seconds (> 0)."
        ),
        click.option(
            "--plan",
            "force_plan",
            type=click.Choice(["auto", "kprobe", "tracepoint"]),
            default="auto",
            show_default=True,
            help="Attach plan: auto (kprobes when the kernel allows them), or force one.",
        ),
        click.option(
            "--close-wait",
            "close_wait",
            default=30.0,
            show_default=True,
            type=FiniteFloat(0, 86400),
            help="Report sockets left in CLOSE_WAIT this many seconds (0: off).",
        ),
        click.option(
            "--close-wait-every",
            default=60.0,
            show_default=True,
            type=FiniteFloat(0.1, 86400),
            help="Seconds between per-process counts of overdue CLOSE_WAIT sockets.",
        ),
        click.option(
            "--buffer",
            type=click.Choice(["auto", "perf"]),
            default="auto",
            help="Event transport: ring buffer where the kernel has it (auto), or the perf buffer.",
        ),
        click.option("--ready-file", type=click.Path(path_type=Path), hidden=True),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def live_config(
    output,
    quiet,
    pids,
    comm,
    ports,
    netns,
    as_json,
    wide,
    settle,
    duration,
    force_plan,
    close_wait,
    close_wait_every,
    buffer,
    ready_file,
    cgroups=(),
    containers=(),
) -> Config:
    """The validated Config of a live run (no root needed to check it; nothing is loaded)."""
    filters = build_filters(pids, comm, ports, netns, cgroups, containers)
    if output is not None:
        check_output(output)
    return Config(
        filters=filters,
        settle_s=settle,
        json=as_json,
        output=output,
        wide=wide,
        ready_file=ready_file,
        duration=duration,
        quiet=quiet,
        force_plan=None if force_plan == "auto" else force_plan,
        close_wait_s=close_wait,
        close_wait_every_s=close_wait_every,
        buffer=buffer,
    )


def _btf_path() -> Path:
    from .btf import VMLINUX_BTF

    return check_btf(os.environ.get("RSTTRACE_BTF") or VMLINUX_BTF)


def _trace_live(output, quiet, **opts) -> None:
    from .terminal import Terminal

    cfg = live_config(output, quiet, **opts)
    _require_root()
    _btf_path()
    _run_session(cfg, Terminal(cfg.wide), None)


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@_trace_options
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write events and incidents as JSON Lines to FILE (created 0600).",
)
@click.option("--debug", is_flag=True, help="Show the traceback of an unexpected error (also RSTTRACE_DEBUG=1).")
@click.version_option(_version(), "-V", "--version", prog_name="rsttrace", message="%(prog)s %(version)s")
@click.pass_context
def main(ctx, output, wide, debug, **opts):
    """Explain TCP resets live: who closed with unread data, what the peer got."""
    ctx.ensure_object(dict)
    if debug:
        os.environ[DEBUG_ENV] = "1"
    ctx.obj["wide"] = wide
    ctx.obj["json"] = opts["as_json"]
    ctx.obj["force_plan"] = None if opts["force_plan"] == "auto" else opts["force_plan"]
    # Checked even when a subcommand runs: a bad value is never silently ignored.
    cfg = live_config(output, False, wide=wide, **opts)
    if ctx.invoked_subcommand is not None:
        return
    _require_root()
    _btf_path()
    from .terminal import Terminal

    _run_session(cfg, Terminal(cfg.wide), None)


@main.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@_trace_options
@click.option("-q", "--quiet", is_flag=True, help="Do not print incidents; only record them.")
def record(file, quiet, **opts):
    """Trace live and record events and incidents to FILE (JSON Lines; survives kill -9)."""
    _trace_live(file, quiet, **opts)


_ENGINE = click.option(
    "--engine",
    type=click.Choice(["duckdb", "dask"]),
    default="duckdb",
    show_default=True,
    help="What runs the queries on a dataset folder: DuckDB in this process, or Dask (a local "
    "cluster of 2 worker processes, or --scheduler's).",
)
_SCHEDULER = click.option(
    "--scheduler",
    metavar="ADDR",
    help="With --engine dask: the Dask scheduler of an existing cluster (tcp://HOST:PORT), whose "
    "workers have rsttrace installed and see the dataset at the same path.",
)


def _check_engine(engine: str, scheduler: str | None) -> None:
    if scheduler and engine != "dask":
        raise click.UsageError("--scheduler is for --engine dask")


_STRICT = click.option(
    "--strict", is_flag=True, help="Stop at the first bad line or file (default: skip it with a warning)."
)


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object: summary and incidents.")
@click.option(
    "--limit", default=50, show_default=True, type=click.IntRange(0, None), help="Show the last N incidents (0: all)."
)
@click.option(
    "--tolerance",
    default=2.0,
    show_default=True,
    type=FiniteFloat(0, 3600),
    help="Of a dataset folder: seconds the hosts' clocks may differ by when joining them (as merge).",
)
@_ENGINE
@_SCHEDULER
@_STRICT
@click.pass_context
def report(ctx, files, as_json, limit, tolerance, engine, scheduler, strict):
    """Incidents and summary of recorded traces (JSON Lines, exported Parquet, or a fleet dataset,
    merged across hosts); no root needed."""
    from . import frame, report as rep
    from .terminal import Terminal

    term = Terminal(ctx.obj.get("wide", False))
    from .fleet import MARKER

    _check_engine(engine, scheduler)
    if len(files) == 1 and (files[0] / MARKER).exists() and engine == "dask":
        from . import fleet, fleet_dask as fd

        dds = fd.Dataset(files[0])
        with fd.cluster(scheduler):
            summary, m = fd.summarize(dds, int(tolerance * 1e9))
            for w in summary["warnings"]:
                term.warning(w)
            if as_json:
                rows = ",".join(fleet.row_json(r) for r in fd.merged_rows(m))
                term.data(json.dumps(summary)[:-1] + ',"incidents_list":[' + rows + "]}")
                term.flush()
                return
            term.lines(rep.text(summary, fd.last_rows(m, limit)))
        return
    if len(files) == 1 and (files[0] / MARKER).exists():
        from . import fleet

        ds = fleet.Dataset(files[0])
        summary = fleet.summarize(ds, int(tolerance * 1e9))
        for w in summary["warnings"]:
            term.warning(w)
        if as_json:
            rows = ",".join(fleet.row_json(r) for r in fleet.last_rows(ds, 0))
            term.data(json.dumps(summary)[:-1] + ',"incidents_list":[' + rows + "]}")
            term.flush()
            return
        term.lines(rep.text(summary, fleet.last_rows(ds, limit)))
        return
    trace = frame.load(list(files), event_columns=["kind"], strict=strict)
    for w in trace.warnings:
        term.warning(w)
    summary = rep.summarize(trace)
    if as_json:
        term.data(rep.to_json(summary, trace))
        term.flush()
        return
    rows, _ = rep.rows_in_order(trace, limit)
    term.lines(rep.text(summary, rows))


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--to", "fmt", type=click.Choice(["parquet", "csv"]), default="parquet", show_default=True)
@click.option(
    "-o",
    "--output",
    "prefix",
    type=click.Path(path_type=Path),
    help="Write PREFIX.events.FMT and PREFIX.incidents.FMT (default: next to the first file).",
)
@click.option(
    "--dataset",
    type=click.Path(file_okay=False, path_type=Path),
    help="Append the traces to the fleet dataset DIR (Hive-partitioned Parquet, host=/date=; created if new).",
)
@_STRICT
@click.pass_context
def export(ctx, files, fmt, prefix, dataset, strict):
    """Export traces as typed tables: one for events, one for incidents (created 0600)."""
    from . import frame
    from .terminal import Terminal

    term = Terminal(ctx.obj.get("wide", False))
    if dataset is not None:
        if prefix is not None or fmt != "parquet":
            raise click.UsageError("--dataset writes Parquet into DIR: no -o or --to with it")
        from . import fleet as dset

        for done in dset.export(list(files), dataset, strict=strict):
            for w in done.warnings:
                term.warning(w)
            term.lines(
                [
                    f"{done.file}: host {done.host or '?'}, recording {done.rec}: {done.events} event(s), "
                    f"{done.incidents} incident(s), {', '.join(done.days) or 'no days'} -> {dataset}"
                ]
            )
        return
    trace = frame.load(list(files), strict=strict)
    for w in trace.warnings:
        term.warning(w)
    if prefix is None:
        first = files[0]
        stem = first.name.removesuffix(".jsonl").removesuffix(".events.parquet").removesuffix(".incidents.parquet")
        prefix = first.with_name(stem) if not first.is_dir() else first / "trace"
    inputs = list(trace.files) + [frame._parquet_pair(f)[1] for f in trace.files if str(f).endswith(".events.parquet")]
    for name in ("events", "incidents"):
        check_output(Path(f"{prefix}.{name}.{fmt}"), inputs)
    term.lines(str(path) for path in frame.export(trace, prefix, fmt))


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the merged trace (events of all inputs, joined incidents) to FILE (created 0600); "
    "of a dataset: the merged incidents as one Parquet table.",
)
@click.option(
    "--tolerance",
    default=2.0,
    show_default=True,
    type=FiniteFloat(0, 3600),
    help="Seconds the hosts' clocks may differ by (plus the RST's flight time).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per incident on stdout.")
@_ENGINE
@_SCHEDULER
@_STRICT
@click.pass_context
def merge(ctx, files, output, tolerance, as_json, engine, scheduler, strict):
    """Join traces from several hosts (or a dataset folder): each RST sent on one with its victim on another."""
    from . import merge as mg, report as rep
    from .frame import flatten_incident
    from .terminal import Terminal

    term = Terminal(ctx.obj.get("wide", False))
    _check_engine(engine, scheduler)
    if any(f.is_dir() for f in files):
        if len(files) != 1:
            folder = next(f for f in files if f.is_dir())
            raise click.UsageError(f"{folder} is a directory: merge takes one dataset folder, or trace files")
        return _merge_dataset(term, files[0], output, int(tolerance * 1e9), tolerance, as_json, engine, scheduler)
    if len(files) < 2:
        raise click.UsageError("merge needs at least two traces")
    if output is not None:
        check_output(output, files)
    warnings: list[str] = []
    sources, incidents, stats = mg.merge(list(files), int(tolerance * 1e9), strict=strict, warnings=warnings)
    for w in warnings:
        term.warning(w)
    if output is not None:
        mg.write(list(files), output, sources, incidents, stats, strict=strict)
    hosts = [s.get("host") for s in sources]

    def line(inc: dict) -> str:
        row = flatten_incident(inc)
        row["host"] = hosts[inc["src"]]
        row["victim_host"] = (
            hosts[inc["victim"]["src"]] if inc.get("victim") and "src" in inc["victim"] else row["host"]
        )
        row["wall_ns"] = inc["timestamps"]["first_ns"] + sources[inc["src"]]["wall_offset_ns"]
        return rep.incident_line(row)

    if as_json:
        for inc in incidents:
            term.data(mg.to_json(inc))
        term.flush()
    else:
        _print_rows(term, incidents, line)
    _merge_note(term, stats, tolerance)


def _merge_note(term, stats: dict, tolerance: float) -> None:
    term.note(
        f"merged {stats['recordings']} recording(s): {stats['incidents']} incident(s), "
        f"{stats['cross_host']} joined across hosts (tolerance {tolerance:g} s); unmatched: "
        f"{stats['unmatched_senders']} sender(s) without victim, "
        f"{stats['unmatched_receivers']} victim(s) without sender"
    )


def _merge_dataset(
    term, root: Path, output, tolerance_ns: int, tolerance: float, as_json: bool, engine: str, scheduler=None
) -> None:
    """`rsttrace merge DIR`: the same incidents and lines as `merge A B ...`, joined by the engine."""
    from . import fleet as dset, report as rep

    if output is not None:
        dset.check_merged_output(root, output)
    if engine == "dask":
        from . import fleet_dask as fd

        dds = fd.Dataset(root)  # a bad dataset is named before any cluster starts
        with fd.cluster(scheduler):
            m = fd.merge_dask(dds, tolerance_ns)
            if output is not None:
                fd.write_merged(root, m, output)
            _print_rows(term, fd.merged_rows(m), dset.row_json if as_json else rep.incident_line)
        _merge_note(term, m.stats, tolerance)
        return
    ds = dset.Dataset(root)
    stats = dset.merge_duckdb(ds, tolerance_ns)
    if output is not None:
        dset.write_merged(ds, output)
    _print_rows(term, dset.merged_rows(ds), dset.row_json if as_json else rep.incident_line)
    _merge_note(term, stats, tolerance)


def _print_rows(term, rows, line, batch: int = 4096) -> None:
    """One written block per `batch` rows, not one per row (a fleet's merge prints millions)."""
    rows = iter(rows)
    while chunk := list(itertools.islice(rows, batch)):
        term.lines(line(r) for r in chunk)
    term.flush()


def _find_compiler() -> str:
    cc = os.environ.get("CC") or "gcc"
    if not shutil.which(cc):
        raise NoCompiler(f"C compiler {cc!r} not found in PATH: install gcc (or set CC) to build the demo's workloads")
    return cc


@main.command()
@click.option("--unread", default=1000, show_default=True, type=click.IntRange(1, 1 << 20))
@click.option("--json", "as_json", is_flag=True, help="Print the incident as JSON.")
@click.pass_context
def demo(ctx, unread, as_json):
    """Reproduce the seed scenario in a private network namespace while tracing it."""
    from . import scenarios
    from .terminal import Terminal

    as_json = as_json or ctx.obj.get("json", False)
    term = Terminal(ctx.obj.get("wide", False))
    _require_root()
    _btf_path()
    cc = _find_compiler()
    try:
        scenarios.build_workloads()
    except RuntimeError as e:
        first = str(e).splitlines()[0] if str(e) else "failed"
        raise NoCompiler(f"cannot build the demo's workloads with {cc}: {first}") from None
    with scenarios.Netns("rstdemo") as ns:
        term.note(
            f"demo: server and client in network namespace {ns.name}; the server closes "
            f"with {unread} bytes unread, the client (default SIGPIPE) keeps writing"
        )
        cfg = Config(
            filters=Filters(netns=ns.inode),
            settle_s=0.5,
            json=as_json,
            force_plan=ctx.obj.get("force_plan"),
            wide=ctx.obj.get("wide", False),
        )
        session = _run_session(cfg, term, scenario=lambda: scenarios.unread_close(ns, unread=unread))
    res = session.scenario_result
    if "error" in res:
        raise RsttraceError(f"demo workload failed: {res['error']}")
    found = [i for i in session.incidents if i["kind"] == "abort-on-close" and i["bytes_discarded"] == unread]
    if not found:
        raise RsttraceError("demo: the expected incident was not seen")


_NO_TRACEFS = Path("/nonexistent/rsttrace-tracefs")


@main.command()
@click.pass_context
def doctor(ctx):
    """Say what this kernel offers and which attach plan rsttrace would use, and why."""
    from .hooks import HOOKS
    from .kernel import KernelFeatures, find_tracefs
    from .probes import choose_plan
    from .terminal import Terminal

    term = Terminal(ctx.obj.get("wide", False))
    lines = []
    btf = _btf_path()
    try:
        tfs = find_tracefs()
        tfs_text = f"mounted at {tfs}" if tfs else "not mounted (rsttrace mounts it)"
    except OSError as e:  # not root: tracefs is usually 0700
        tfs, tfs_text = None, f"not readable ({e.strerror}; run with sudo)"
    feats = KernelFeatures.probe(btf, tracefs=tfs or _NO_TRACEFS)
    lines.append(f"kernel {feats.release}; BTF at {feats.btf_path}: struct offsets come from it")
    lines.append(f"tracefs: {tfs_text}")
    for h in HOOKS:  # one table: tracer/hooks.py
        if not h.is_tracepoint:
            continue
        n = feats.tracepoints.get(h.name, -1)
        have = "MISSING" if n == -1 else "present" if n is None else f"present, {n} args"
        lines.append(f"  tracepoint {h.label}: {have} ({'required' if h.required else 'optional'}: {h.gives})")
    reasons = feats.rst_reasons()
    lines.append(
        f"reset reasons: {len(reasons)} from BTF enum sk_rst_reason"
        if reasons
        else "reset reasons: none in this kernel (before 6.10); kinds come from the close path"
    )
    if os.geteuid() != 0:
        lines.append("not root: attach trials skipped (run with sudo to try kprobes and fentry)")
        term.lines(lines)
        return
    plan = choose_plan(feats, force=ctx.obj.get("force_plan"), report_fentry=True)
    for t in plan.trials:
        lines.append(f"trial {t.name}: {'works' if t.ok else 'refused'} ({t.detail})")
    lines.append(f"chosen plan: {plan.name} ({plan.why})")
    lines.extend(_plan_words(plan, feats))
    lines.append(f"who acted (task or softirq): {feats.context_method()}")
    for m in plan.missing:
        lines.append(f"degraded: {m}")
    for loss in feats.losses(plan.name):
        lines.append(f"this kernel lacks {loss.what}: {loss.lost}")
    term.lines(lines)


def _plan_words(plan, feats) -> list[str]:
    """What the chosen plan hooks, in plain words."""
    out = []
    if plan.name == "kprobe":
        out.append(
            "  a close() that throws away unread data: kprobes on tcp_close and "
            "tcp_send_active_reset (every RST this host starts itself)"
        )
        if "kprobe:tcp_v4_send_reset" in plan.hooks:
            out.append(
                "  RSTs from TIME_WAIT sockets and for unknown connections: kprobes on "
                + " and ".join(
                    h.split(":")[1] for h in plan.hooks if h.startswith("kprobe:") and h.endswith("_send_reset")
                )
                + " (tcp:tcp_send_reset misses them before 6.10)"
            )
        out.append("  the rest (state changes, received RSTs, signals): tracepoints")
    else:
        out.append(
            "  a close() that throws away unread data: the socket's move to CLOSE "
            "(sock:inet_sock_set_state, rcv_nxt - copied_seq); RSTs: tcp:tcp_send_reset"
        )
        if plan.trials and plan.trials[0].ok and plan.why.startswith("forced"):
            out.append("  (the kprobe plan would work here: --plan auto)")
    io = feats.io_errors_from
    out.append(
        {
            "tracepoint": "  the peer's send/recv errors: sock:sock_send_length/sock_recv_length",
            "sys_exit": "  the peer's send/recv errors: raw_syscalls:sys_exit, for read/write/send*/recv* "
            "on TCP sockets (no sock_*_length tracepoints before 6.3)",
        }.get(io, "  the peer's send/recv errors: not available on this kernel")
    )
    return out


def _usage_error(e: click.ClickException) -> None:
    """click's message as one line (anything the user typed made safe), and where help is."""
    from .terminal import Terminal

    msg = " ".join(e.format_message().split("\n"))
    ctx = getattr(e, "ctx", None)
    hint = ""
    if isinstance(e, click.UsageError) and ctx is not None:
        hint = f" (see '{ctx.command_path} --help')"
    Terminal().error(msg + hint)


def exit_status(e: BaseException) -> int:
    """The one mapping from an exception to rsttrace's exit code (README: Exit codes)."""
    if isinstance(e, RsttraceError):
        return int(e.status)
    if isinstance(e, click.exceptions.Abort):
        return int(ExitStatus.ERROR)
    if isinstance(e, click.ClickException):
        return int(ExitStatus.USAGE)
    if isinstance(e, KeyboardInterrupt):
        return int(ExitStatus.OK)
    return int(ExitStatus.ERROR)


def run(argv: list[str] | None = None) -> None:
    """Console-script entry: one-line errors with distinct exit codes, never a traceback."""
    from .terminal import Terminal

    try:
        code = main(args=argv, prog_name="rsttrace", standalone_mode=False)
        status = code if isinstance(code, int) else ExitStatus.OK
    except click.exceptions.Exit as e:
        status = e.exit_code
    except click.exceptions.Abort as e:
        status = exit_status(e)
    except click.ClickException as e:
        _usage_error(e)
        status = exit_status(e)
    except RsttraceError as e:
        Terminal().error(str(e))
        status = exit_status(e)
    except KeyboardInterrupt as e:
        status = exit_status(e)
    except Exception as e:  # noqa: BLE001 - the last resort: one line, the traceback on request
        if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            import traceback

            traceback.print_exc()
        Terminal().error(
            f"unexpected {type(e).__name__}: {e} (a bug; run with {DEBUG_ENV}=1 or --debug to see the traceback)"
        )
        status = exit_status(e)
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
    sys.exit(status)


from .service_cli import register as _register_service  # noqa: E402 (needs `main`)

_register_service(main)

if __name__ == "__main__":
    run()
