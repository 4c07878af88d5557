"""Every exit code in the README is raised by the real code path and mapped in one place."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tracer import cli
from tracer.errors import ExitStatus

ROOT = Path(__file__).parent.parent.parent
DATA = ROOT / "tests" / "data" / "v1"
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="the root check comes first")


def rsttrace(*args, env=None, **kw):
    return subprocess.run(
        [sys.executable, "-m", "tracer", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=None if env is None else {**os.environ, **env},
        **kw,
    )


def one_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def in_process(argv, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        cli.run(argv)
    out, err = capsys.readouterr()
    return e.value.code, out, err


def test_readme_table_lists_every_exit_status():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    codes = [int(m) for m in re.findall(r"^\| (\d+) \|", section, re.M)]
    assert codes == [int(s) for s in ExitStatus] == list(range(14))


# -- one test per code --------------------------------------------------------------------------


def test_0_version():
    r = rsttrace("--version")
    assert (r.returncode, r.stdout, r.stderr) == (0, "rsttrace 0.1.0\n", "")
    assert rsttrace("-V").stdout == "rsttrace 0.1.0\n"


def test_1_unexpected_error_is_one_line_pointing_at_the_debug_flag(capsys, monkeypatch):
    from tracer import report

    def boom(*a, **k):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(report, "summarize", boom)
    monkeypatch.delenv("RSTTRACE_DEBUG", raising=False)
    code, out, err = in_process(["report", str(DATA / "unread_default.jsonl")], capsys)
    assert code == ExitStatus.ERROR == 1
    assert err == (
        "rsttrace: error: unexpected ZeroDivisionError: division by zero (a bug; run with "
        "RSTTRACE_DEBUG=1 or --debug to see the traceback)\n"
    )
    monkeypatch.setenv("RSTTRACE_DEBUG", "1")
    code, out, err = in_process(["report", str(DATA / "unread_default.jsonl")], capsys)
    assert code == 1 and err.startswith("Traceback (most recent call last):")
    assert err.splitlines()[-1].startswith("rsttrace: error: unexpected ZeroDivisionError")
    monkeypatch.delenv("RSTTRACE_DEBUG")
    code, out, err = in_process(["--debug", "report", str(DATA / "unread_default.jsonl")], capsys)
    assert code == 1 and "Traceback (most recent call last):" in err
    os.environ.pop("RSTTRACE_DEBUG", None)  # --debug sets it for the process


@pytest.mark.parametrize(
    "args, message",
    [
        (["--settle", "nan"], "Invalid value for '--settle': 'nan' is not a finite number (see 'rsttrace --help')"),
        (["--settle", "inf"], "Invalid value for '--settle': 'inf' is not a finite number (see 'rsttrace --help')"),
        (
            ["--close-wait", "NaN"],
            "Invalid value for '--close-wait': 'NaN' is not a finite number (see 'rsttrace --help')",
        ),
        (
            ["--close-wait", "-1"],
            "Invalid value for '--close-wait': '-1' is not in the range 0 <= x <= 86400 (see 'rsttrace --help')",
        ),
        (
            ["--duration", "0"],
            "Invalid value for '--duration': '0' is not in the range 0 < x <= 3.1536e+07 (see 'rsttrace --help')",
        ),
        (["--duration", "nan"], "Invalid value for '--duration': 'nan' is not a finite number (see 'rsttrace --help')"),
        (
            ["merge", "a", "b", "--tolerance", "nan"],
            "Invalid value for '--tolerance': 'nan' is not a finite number (see 'rsttrace merge --help')",
        ),
        (["--bogus"], "No such option: --bogus (see 'rsttrace --help')"),
    ],
)
def test_2_usage(args, message):
    r = rsttrace(*args)
    assert r.returncode == ExitStatus.USAGE == 2
    line = one_line(r.stderr)
    if args == ["--bogus"]:
        assert "No such option" in line and "--bogus" in line
    else:
        assert line == "rsttrace: error: " + message


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_3_not_root_and_doctor_works_without_root():
    r = rsttrace("--duration", "1", user="nobody")
    assert r.returncode == ExitStatus.NOT_ROOT == 3
    r = rsttrace("doctor", user="nobody")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert "not root: attach trials skipped (run with sudo to try kprobes and fentry)" in r.stdout
    assert any(line.startswith("tracefs: ") for line in r.stdout.splitlines())


@root_only
def test_4_btf_fifo_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "btf"
    os.mkfifo(fifo)
    for args in (["--duration", "1"], ["doctor"]):
        r = rsttrace(*args, env={"RSTTRACE_BTF": str(fifo)})
        assert r.returncode == ExitStatus.NO_BTF == 4
        assert one_line(r.stderr) == (
            f"rsttrace: error: {fifo}: not a regular file (BTF must be a file such as /sys/kernel/btf/vmlinux)"
        )


@pytest.fixture
def no_signal_handlers(monkeypatch):
    from tracer.session import Session

    monkeypatch.setattr(Session, "install_signal_handlers", lambda self: None)
    monkeypatch.setattr(os, "geteuid", lambda: 0)


def test_5_no_tracefs(capsys, monkeypatch, no_signal_handlers):
    from tracer import kernel

    monkeypatch.setattr(kernel, "find_tracefs", lambda: None)
    monkeypatch.setattr(kernel.os, "system", lambda cmd: 1 << 8)
    code, _, err = in_process(["--duration", "1"], capsys)
    assert code == ExitStatus.NO_TRACEFS == 5
    assert err == (
        "rsttrace: error: tracefs is not mounted and mounting it failed; run: mount -t tracefs "
        "nodev /sys/kernel/tracing\n"
    )


def test_6_missing_tracepoint(capsys, monkeypatch, no_signal_handlers):
    pytest.importorskip("bcc")
    from tracer import kernel

    monkeypatch.setattr(kernel, "REQUIRED_TRACEPOINTS", kernel.REQUIRED_TRACEPOINTS + ("no_such_tracepoint",))
    code, _, err = in_process(["--duration", "1"], capsys)
    assert code == ExitStatus.NO_TRACEPOINT == 6
    assert err.startswith("rsttrace: error: this kernel (") and "lacks tracepoint(s) no_such_tracepoint" in err


def test_7_no_bcc(capsys, monkeypatch, no_signal_handlers):
    monkeypatch.setitem(sys.modules, "bcc", None)  # import bcc -> ImportError
    code, _, err = in_process(["--duration", "1"], capsys)
    assert code == ExitStatus.NO_BCC == 7
    assert err == (
        "rsttrace: error: bcc's Python module is missing: apt-get install python3-bpfcc (and run "
        "rsttrace with a Python that sees it)\n"
    )


def test_8_bpf_load_failed(capsys, monkeypatch, no_signal_handlers):
    bcc = pytest.importorskip("bcc")

    def refuse(*a, **k):
        raise Exception("verifier says no")

    monkeypatch.setattr(bcc, "BPF", refuse)
    code, _, err = in_process(["--duration", "1", "--plan", "tracepoint"], capsys)
    assert code == ExitStatus.BPF_LOAD == 8
    assert err.startswith("rsttrace: error: could not load rsttrace's BPF programs: verifier says no")


@pytest.mark.parametrize(
    "args, message",
    [
        (["-P", "99999", "doctor"], "invalid port '99999': expected 1-65535"),
        (["-p", "0"], "invalid pid '0': expected a positive integer"),
        (["-p", "1_0"], "invalid pid '1_0': expected a positive integer"),
        (["-c", ""], "invalid comm '': 1 to 15 bytes (the kernel keeps 15)"),
        (
            ["--netns", ""],
            "unknown network namespace '' (an inode number, a name in /run/netns, or a path like /proc/PID/ns/net)",
        ),
        (
            ["--netns", "0"],
            "no network namespace with inode 0: expected the inode of a namespace in use "
            "(ls -L -i /proc/PID/ns/net) or a name in /run/netns",
        ),
        (
            ["--netns", "12345"],
            "no network namespace with inode 12345: expected the inode of a namespace in use "
            "(ls -L -i /proc/PID/ns/net) or a name in /run/netns",
        ),
        (["--netns", "/etc/passwd"], "'/etc/passwd' is not a network namespace"),
        (["record", "x.jsonl", "-P", "0"], "invalid port '0': expected 1-65535"),
    ],
)
def test_9_bad_filter(args, message):
    r = rsttrace(*args)
    assert r.returncode == ExitStatus.BAD_FILTER == 9
    assert one_line(r.stderr) == "rsttrace: error: " + message


def test_9_non_utf8_comm_and_too_many_values():
    r = subprocess.run(
        [os.fsencode(sys.executable), b"-m", b"tracer", b"-c", b"\xff\xfe\x1b[2J"],
        capture_output=True,
        timeout=60,
        cwd=ROOT,
    )
    assert r.returncode == 9
    assert r.stderr == b"rsttrace: error: invalid comm '\\xff\\xfe\\x1b[2J': not UTF-8 text\n"
    ports = [a for p in range(1, 1027) for a in ("-P", str(p))]
    r = rsttrace(*ports)
    assert r.returncode == 9
    assert one_line(r.stderr) == "rsttrace: error: too many ports: 1026 (the kernel's filter holds 1024)"
    pids = [a for _ in range(2) for a in ("-p", str(os.getpid()))]
    assert rsttrace(*pids, "--version").returncode == 0  # repeated values count once


def test_10_bad_trace(tmp_path):
    p = tmp_path / "not.jsonl"
    p.write_text("hello\n")
    r = rsttrace("report", p)
    assert r.returncode == ExitStatus.BAD_TRACE == 10
    assert one_line(r.stderr) == f"rsttrace: error: {p}:1: invalid JSON (unexpected character, expected a JSON value)"


@root_only
def test_11_no_compiler():
    r = rsttrace("demo", env={"CC": "rsttrace-no-such-cc"})
    assert r.returncode == ExitStatus.NO_COMPILER == 11
    assert one_line(r.stderr) == (
        "rsttrace: error: C compiler 'rsttrace-no-such-cc' not found in PATH: install "
        "gcc (or set CC) to build the demo's workloads"
    )


def test_12_plan_kprobe_refused(capsys, monkeypatch, no_signal_handlers):
    from tracer import probes

    monkeypatch.setattr(probes, "_try", lambda name, fn: probes.Trial(name, False, "refused by test"))
    pytest.importorskip("bcc")
    code, _, err = in_process(["--duration", "1", "--plan", "kprobe"], capsys)
    assert code == ExitStatus.NO_PLAN == 12
    assert err == (
        "rsttrace: error: --plan kprobe is not possible on this kernel: the kernel refused the kprobe trial\n"
    )


def test_13_stdout_closed(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "tracer", "report", str(DATA / "unread_default.jsonl")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == ExitStatus.OUTPUT == 13
    assert one_line(err) == "rsttrace: error: stdout was closed (EPIPE): stopping"


def test_exit_status_is_the_one_mapping():
    import click

    from tracer.errors import BadFilter, OutputFailed

    assert cli.exit_status(BadFilter("x")) == 9
    assert cli.exit_status(OutputFailed("x")) == 13
    assert cli.exit_status(click.UsageError("x")) == 2
    assert cli.exit_status(KeyboardInterrupt()) == 0
    assert cli.exit_status(RuntimeError()) == 1
