"""Issue 11 item 5: `demo` honours --json wherever it is given; a pipe gets one line per record."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.root


@pytest.mark.parametrize("argv", [["demo", "--json"], ["--json", "demo"]])
def test_demo_prints_the_incident_as_json(argv):
    r = subprocess.run([sys.executable, "-m", "tracer", *argv], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    [line] = r.stdout.splitlines()
    inc = json.loads(line)
    assert (inc["type"], inc["kind"], inc["bytes_discarded"]) == ("incident", "abort-on-close", 1000)
    assert inc["culprit"]["comm"] == "rst_server" and inc["victim"]["comm"] == "rst_client"
    assert inc["explanation"] and inc["advice"]


def test_demo_on_a_pipe_is_not_folded():
    r = subprocess.run([sys.executable, "-m", "tracer", "demo"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    from tests.integration.test_live import demo_unknown_lines

    # chain, victim, why, fix (and what this kernel could not know): one line each, whatever their length
    assert len(lines) == 4 + demo_unknown_lines()
    assert lines[0].startswith("rst_server[") and lines[0].endswith("with 1000 unread bytes -> RST (abort on close)")
    assert lines[2].startswith("     why: ") and len(lines[2]) > 80
    assert lines[3].startswith("     fix: ") and len(lines[3]) > 80
