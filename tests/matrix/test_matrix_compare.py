"""The matrix sessions' incidents compared across kernels, scenario by scenario: only the
differences tests/vm/test_compare.py documents (reasons before 6.10, calls unseen without
sock_send/recv_length, sender-side fields before 6.10 on the tracepoint plan) are allowed.

Reads RSTTRACE_MATRIX_RESULTS/<kernel>/<plan>/incidents/ (tests/matrix/test_matrix_session.py)
and compares every kernel and plan with the reference run: RSTTRACE_MATRIX_REFERENCE
("kernel/plan", default: the host's run, else the first kernel's first plan).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.integration import incident_dump
from tests.vm.test_compare import comparable, differences

RESULTS = os.environ.get("RSTTRACE_MATRIX_RESULTS")


def runs() -> list[str]:
    if not RESULTS:
        return []
    return sorted(f"{p.parent.parent.name}/{p.parent.name}" for p in Path(RESULTS).glob("*/*/incidents"))


def reference(all_runs: list[str]) -> str | None:
    want = os.environ.get("RSTTRACE_MATRIX_REFERENCE")
    if want:
        return want
    host = [r for r in all_runs if r.startswith("host/")]
    return (host or all_runs or [None])[0]


def cases():
    all_runs = runs()
    ref = reference(all_runs)
    others = [r for r in all_runs if r != ref]
    if not others:
        why = (
            "RSTTRACE_MATRIX_RESULTS is not set (./run.sh test-kernels sets it)"
            if not RESULTS
            else f"fewer than two matrix runs under {RESULTS}"
        )
        return [pytest.param(None, None, None, marks=pytest.mark.skip(reason=why), id="no-matrix-results")]
    out = []
    for run in others:
        names = sorted(p.stem for p in Path(RESULTS, run, "incidents").glob("*.json"))
        out += [pytest.param(ref, run, name, id=f"{run}:{name}") for name in names]
    return out


# Beyond tests/vm/test_compare.py's kernel differences, two that are the machine's or timing's:
# 1. cgroups: where the test's processes run (a service's cgroup on the host, "/" in a guest).
# 2. The RST answering data sent to a socket closed with FIN comes from its TIME_WAIT socket or,
#    if the data arrives first, from the orphan in FIN_WAIT2 (TCPAbortOnData): which one is
#    timing (tests/integration/test_kinds.py allows both).
CLOSED_REASONS = {"TCP_TIMEWAIT_SOCKET": "<closed>", "TCP_ABORT_ON_DATA": "<closed>"}


def machine_neutral(run: dict) -> dict:
    out = []
    for inc in run["incidents"]:
        inc = {k: v for k, v in inc.items() if k != "cgroups"}
        if inc.get("kind") in ("write-after-close", "process-killed") and inc.get("reason") in CLOSED_REASONS:
            inc["reason"] = CLOSED_REASONS[inc["reason"]]
        out.append(inc)
    return dict(run, incidents=out)


@pytest.mark.parametrize("ref, run, scenario", cases())
def test_same_incidents_as_the_reference(ref, run, scenario):
    theirs = incident_dump.load(Path(RESULTS, ref, "incidents")).get(scenario)
    mine = incident_dump.load(Path(RESULTS, run, "incidents")).get(scenario)
    if theirs is None:
        pytest.skip(f"{scenario} not played in the reference run {ref}")
    h, g = machine_neutral(theirs["runs"][0]), machine_neutral(mine["runs"][0])
    want, problems_h = comparable(h, g)
    got, problems_g = comparable(g, h)
    assert problems_h + problems_g == []
    diffs = differences(want, got)
    assert diffs == [], (
        f"{run} (kernel {g['kernel']}, plan {g['plan']}) vs {ref} (kernel {h['kernel']}, "
        f"plan {h['plan']}):\n  " + "\n  ".join(diffs)
    )
