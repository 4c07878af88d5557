"""The `service` and `top` subcommands, added to the CLI group by register() (tracer/cli.py
calls it last). `python -m tracer.service_cli ...` runs the whole CLI with them added."""

from __future__ import annotations

import re
from pathlib import Path

import click

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class Size(click.ParamType):
    """Bytes: 1048576, 512K, 64M, 1G (powers of 1024)."""

    name = "size"

    def convert(self, value, param, ctx):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        m = re.fullmatch(r"\s*([0-9]{1,15})\s*([kKmMgGtT]?)i?[bB]?\s*", str(value))
        if not m:
            self.fail(f"{value!r} is not a size (bytes, or with K, M, G: 64M)", param, ctx)
        return int(m[1]) * _UNITS[m[2].lower()]


class Duration(click.ParamType):
    """Seconds: 90, 90s, 15m, 1h, 1d."""

    name = "duration"

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        m = re.fullmatch(r"\s*([0-9]{1,9}(?:\.[0-9]{1,6})?)\s*([smhdSMHD]?)\s*", str(value))
        if not m:
            self.fail(f"{value!r} is not a duration (seconds, or with s, m, h, d: 1h)", param, ctx)
        return float(m[1]) * _SECONDS[m[2].lower()]


class Address(click.ParamType):
    """[ADDR]:PORT; the address defaults to 127.0.0.1."""

    name = "[ADDR]:PORT"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        from .metrics import parse_addr

        try:
            return parse_addr(str(value))
        except ValueError as e:
            self.fail(str(e), param, ctx)


def _metrics_options(f):
    f = click.option(
        "--metrics-top-n",
        default=10,
        show_default=True,
        type=click.IntRange(1, 1000),
        help="Command names with a series of their own per label (the rest: other).",
    )(f)
    f = click.option(
        "--metrics",
        "metrics_addr",
        type=Address(),
        metavar="[ADDR]:PORT",
        help="Serve OpenMetrics at http://ADDR:PORT/metrics (ADDR defaults to 127.0.0.1).",
    )(f)
    return f


def register(group: click.Group) -> None:
    """Add `service` and `top` to the group (once)."""
    if "service" in group.commands:
        return
    from .cli import _btf_path, _require_root, _trace_options, live_config

    @group.command("service")
    @_trace_options
    @click.option(
        "--dir",
        "directory",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("/var/log/rsttrace"),
        show_default=True,
        help="Directory of the trace files (created 0750).",
    )
    @click.option(
        "--max-file-size",
        default="64M",
        show_default=True,
        type=Size(),
        help="Start a new file before one grows past this size.",
    )
    @click.option(
        "--max-age",
        default="1h",
        show_default=True,
        type=Duration(),
        help="Start a new file after this long (0: no age limit).",
    )
    @click.option(
        "--max-total-size",
        default="1G",
        show_default=True,
        type=Size(),
        help="Remove the oldest files to keep the directory under this (0: no cap).",
    )
    @_metrics_options
    def service(directory, max_file_size, max_age, max_total_size, metrics_addr, metrics_top_n, **opts):
        """Trace unattended (systemd): rotating JSONL files in --dir, OpenMetrics on --metrics,
        SIGHUP starts a new file, SIGTERM ends cleanly."""
        from .rotate import Limits
        from .service import Service, ServiceOptions

        cfg = live_config(None, True, as_json=False, wide=False, **opts)
        limits = Limits(max_file_size=max_file_size, max_age_s=max_age, max_total_size=max_total_size)
        try:
            limits.check()
        except ValueError as e:
            raise click.UsageError(str(e)) from None
        _require_root()
        _btf_path()
        return Service(cfg, ServiceOptions(directory, limits, metrics_addr, metrics_top_n)).run()

    @group.command("top")
    @_trace_options
    @click.option(
        "--window",
        default=5,
        show_default=True,
        type=click.IntRange(1, 300),
        help="Incidents per second: the mean over this many seconds.",
    )
    @_metrics_options
    def top(window, metrics_addr, metrics_top_n, **opts):
        """A live overview for reset storms, redrawn every second: q or Ctrl-C quits."""
        from .top import run_top

        cfg = live_config(None, True, as_json=False, wide=False, **opts)
        _require_root()
        _btf_path()
        metrics = None
        if metrics_addr is not None:
            from .metrics import Metrics

            metrics = Metrics(top_n=metrics_top_n)
        return run_top(cfg, window_s=window, metrics=metrics, metrics_addr=metrics_addr)

    # The live options without those of terminal output (--json, --wide): neither writes any.
    for cmd in (service, top):
        cmd.params = [p for p in cmd.params if p.name not in ("as_json", "wide")]


def main() -> None:
    from . import cli

    register(cli.main)
    cli.run()


if __name__ == "__main__":
    main()
