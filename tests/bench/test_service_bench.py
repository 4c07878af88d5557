"""A short run of the bench's `service` part: its checks hold at a low rate."""

from __future__ import annotations

import pytest

from bench import harness as h
from bench.service_part import report_lines, service

pytestmark = pytest.mark.root


def test_service_part_short_run(tmp_path):
    h.build("churn")
    p = dict(
        service_s=4,
        service_idle_s=1,
        service_rate=500,
        service_file_size=64 << 10,
        service_cap=256 << 10,
        memory_every=1,
    )
    res = service(p, tmp_path)
    if not res["ok"]:
        pytest.fail(repr({k: v for k, v in res.items() if k not in ("rss_samples", "busy")}))
    assert res["files_seen"] > 4 and res["files_left"] <= 4  # rotated, and old files removed
    assert res["max_dir_bytes"] <= 256 << 10
    assert res["lost"] == 0 and res["returncode"] == 0
    assert res["incidents_metrics"] == res["incidents_files"] == res["incidents_summary"] > 0
    assert res["memory_flat"] is None  # not judged on a short run
    assert any("verdict | ok" in line for line in report_lines(res))
