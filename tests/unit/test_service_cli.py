"""`rsttrace service` and `top`: registered once, options checked before anything loads."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest

from tracer.service_cli import Duration, Size, register


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tracer.service_cli", *args], capture_output=True, text=True)


def test_register_adds_both_once():
    group = click.Group("g")
    register(group)
    register(group)
    assert sorted(group.commands) == ["service", "top"]
    # The real group: in a child process, not this one (other tests read its commands).
    proc = run("--help")
    assert proc.returncode == 0 and "service" in proc.stdout and "top" in proc.stdout, proc.stdout


@pytest.mark.parametrize("text,want", [("4096", 4096), ("64M", 64 << 20), ("1g", 1 << 30), ("512KiB", 512 << 10)])
def test_sizes(text, want):
    assert Size().convert(text, None, None) == want


@pytest.mark.parametrize("text,want", [("90", 90.0), ("15m", 900.0), ("1h", 3600.0), ("0", 0.0), ("1.5s", 1.5)])
def test_durations(text, want):
    assert Duration().convert(text, None, None) == want


@pytest.mark.parametrize(
    "args,msg",
    [
        (["--max-file-size", "12X"], "is not a size"),
        (["--max-age", "-1"], "is not a duration"),
        (["--max-file-size", "100"], "at least 4096"),
        (["--max-file-size", "1M", "--max-total-size", "1M"], "at least twice"),
        (["--metrics", "127.0.0.1:0"], "invalid metrics address"),
        (["--metrics-top-n", "0"], "0"),
    ],
)
def test_bad_options_are_usage_errors(args, msg):
    proc = run("service", "--dir", "/nonexistent/never-created", *args)
    assert proc.returncode == 2, proc.stderr
    assert msg in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
