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
    r = subprocess.run([sys.executable, str(BENCH), "--events", "2000", "--dir", str(tmp_path), "--json"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    # 10 events and 1 incident per synthesised connection (the recorded 6.18 streams).
    assert (res["events"], res["incidents"]) == (2000, 200)
    for name in ("big.events.parquet", "big.incidents.parquet", "big.events.csv", "big.incidents.csv"):
        assert (tmp_path / name).stat().st_size > 0
    assert len((tmp_path / "big.events.csv").read_text().splitlines()) == 2001
