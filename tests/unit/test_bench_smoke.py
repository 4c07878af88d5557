"""The scale benchmark runs end to end on a small trace (timings are printed, not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pandas")

BENCH = Path(__file__).resolve().parent.parent.parent / "bench" / "trace_scale.py"


def test_trace_scale_smoke(tmp_path):
    r = subprocess.run(
        [sys.executable, str(BENCH), "--events", "2000", "--dir", str(tmp_path), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    # 10 events and 1 incident per synthesised connection (the recorded 6.18 streams).
    assert (res["events"], res["incidents"]) == (2000, 200)
    for name in ("big.events.parquet", "big.incidents.parquet", "big.events.csv", "big.incidents.csv"):
        assert (tmp_path / name).stat().st_size > 0
    assert len((tmp_path / "big.events.csv").read_text().splitlines()) == 2001


def test_bench_incident_check_accounts_for_resets_the_kernel_sent_unasked():
    from bench.harness import check_incidents

    def made(kind):
        return {"kind": kind, "bytes_discarded": 64, "victim": {"errors": [{"call": "read", "errno": "ECONNRESET"}]}}

    asked = [made("abort-on-close")] * 3 + [made("linger-zero")]
    assert check_incidents(asked, 3, 1, out_rsts=4)["exact"]
    stray = [{"kind": "passive-reset"}, {"kind": "reset-received"}]
    # The kernel counted one RST nobody asked for: sender and receiver side may both show.
    res = check_incidents(asked + stray, 3, 1, out_rsts=5)
    assert res["exact"] and (res["other_incidents"], res["kernel_rsts_not_asked_for"]) == (2, 1)
    # Not more than that, and none where the kernel sent none.
    assert not check_incidents(asked + stray * 2, 3, 1, out_rsts=5)["exact"]
    assert not check_incidents(asked + stray, 3, 1, out_rsts=4)["exact"]
    # A reset the kernel sent must show.
    assert not check_incidents(asked, 3, 1, out_rsts=5)["exact"]
    # Wrong bytes or a victim without its ECONNRESET.
    assert not check_incidents(asked[:-1] + [dict(made("abort-on-close"), bytes_discarded=63)], 4, 0, 4)["exact"]
