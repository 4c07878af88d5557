"""`rsttrace record` checks where it will write before it loads anything."""

from __future__ import annotations

import subprocess
import sys

from tracer.errors import ExitStatus


def test_record_into_a_missing_directory_is_a_clear_error(tmp_path):
    target = tmp_path / "no" / "such" / "trace.jsonl"
    r = subprocess.run(
        [sys.executable, "-m", "tracer", "record", str(target), "--duration", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == ExitStatus.BAD_TRACE
    assert r.stderr.strip() == f"rsttrace: error: cannot write trace {target}: no directory {target.parent}"


def test_record_takes_the_live_filters():
    r = subprocess.run([sys.executable, "-m", "tracer", "record", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    for opt in ("--pid", "--comm", "--port", "--netns", "--quiet", "--duration", "--settle"):
        assert opt in r.stdout
    r = subprocess.run(
        [sys.executable, "-m", "tracer", "record", "x.jsonl", "-P", "http"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == ExitStatus.BAD_FILTER
    assert r.stderr.strip() == "rsttrace: error: invalid port 'http': expected 1-65535"
