"""Bad input gives one clear line and a distinct exit code, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tracer.errors import ExitStatus


def rsttrace(*args, user=None):
    cmd = [sys.executable, "-m", "tracer", *args]
    kw = {}
    if user is not None:
        kw["user"] = user
    return subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
        **kw,
    )


def one_line_error(r):
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_invalid_port_filter():
    r = rsttrace("-P", "http")
    assert r.returncode == ExitStatus.BAD_FILTER
    assert one_line_error(r) == "rsttrace: error: invalid port 'http': expected 1-65535"


def test_unknown_pid():
    r = rsttrace("-p", "4194304999")
    assert r.returncode == ExitStatus.BAD_FILTER
    assert "no process with pid 4194304999" in one_line_error(r)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_not_root():
    r = rsttrace("--duration", "1", user="nobody")
    assert r.returncode == ExitStatus.NOT_ROOT
    assert one_line_error(r) == "rsttrace: error: rsttrace loads BPF programs and needs root: run it with sudo"


def test_unknown_option_is_a_usage_error():
    r = rsttrace("--bogus")
    assert r.returncode == ExitStatus.USAGE
    assert "Traceback" not in r.stderr and "No such option" in r.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="the root check comes first")
def test_missing_btf():
    env = dict(os.environ, RSTTRACE_BTF="/nonexistent/vmlinux")
    r = subprocess.run(
        [sys.executable, "-m", "tracer", "--duration", "1"], capture_output=True, text=True, timeout=60, env=env
    )
    assert r.returncode == ExitStatus.NO_BTF
    assert one_line_error(r) == (
        "rsttrace: error: no BTF at /nonexistent/vmlinux: rsttrace needs a kernel built with CONFIG_DEBUG_INFO_BTF=y"
    )
