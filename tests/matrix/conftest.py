"""The matrix session's results: one JSON per kernel and plan, written when pytest ends."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import pytest

OUTCOMES: dict[str, str] = {}


def pytest_runtest_logreport(report):
    if "test_matrix_session.py::test_scenario" not in report.nodeid:
        return
    name = report.nodeid.rsplit("[", 1)[-1].rstrip("]")
    if report.when == "call" or report.outcome != "passed":
        if report.outcome == "skipped" or OUTCOMES.get(name) not in ("failed",):
            OUTCOMES[name] = report.outcome


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    if not OUTCOMES:
        return
    from . import test_matrix_session as m

    out = m.results_dir()
    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    doc = {
        "kernel": os.environ.get("RSTTRACE_MATRIX_KERNEL", "host"),
        "release": platform.release(),
        "plan": m.SESSION_INFO.get("plan"),
        "start_wall_s": m.SESSION_INFO.get("start_wall_s"),
        "start_cpu_s": m.SESSION_INFO.get("start_cpu_s"),
        "scenarios_wall_s": m.SESSION_INFO.get("scenarios_wall_s"),
        "scenarios": dict(sorted(OUTCOMES.items())),
        "passed": sum(1 for v in OUTCOMES.values() if v == "passed"),
        "failed": sum(1 for v in OUTCOMES.values() if v == "failed"),
        "skipped": sum(1 for v in OUTCOMES.values() if v == "skipped"),
    }
    Path(out, "summary.json").write_text(json.dumps(doc, indent=1) + "\n")
