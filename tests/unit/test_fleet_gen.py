"""The synthetic fleet (bench/fleet_gen.py) at small scale: the DuckDB merge finds exactly the
cross-host pairs the generator planted, each with its own connection's peer."""

from __future__ import annotations

import pytest

pytest.importorskip("pandas")
pytest.importorskip("duckdb")

from bench import fleet_gen  # noqa: E402
from tracer import fleet  # noqa: E402


def test_merge_finds_exactly_the_planted_pairs(tmp_path):
    root = tmp_path / "ds"
    res = fleet_gen.generate(root, hosts=5, events=20_000, seed=1, work=tmp_path / "work")
    # 10 events per recorded connection: 2,000 connections, a tenth on one host.
    assert (res["hosts"], res["events"], res["connections"], res["split"], res["local"]) == (5, 20_000, 2000, 1800, 200)
    assert res["planted"] == 1252 and 0 < res["max_clock_error_ns"] <= 2 * 10**9
    ds = fleet.Dataset(root)
    stats = fleet.merge_duckdb(ds, 2 * 10**9)
    assert stats == {
        "inputs": 5,
        "recordings": 5,
        "incidents": 2 * 1800 - 1252 + 200,
        "cross_host": 1252,
        "tolerance_ns": 2 * 10**9,
        "unmatched_senders": 1800 - 1252,
        "unmatched_receivers": 1800 - 1252,
    }
    # Each join pairs a connection's two sides: the same connection number in both pids (the
    # generator's pid = recorded pid % 1000 + 1000 * connection + 100), on two hosts.
    rows = ds.con.execute(
        "SELECT culprit_pid, victim_pid, host, victim_host, clock_skew_ns FROM merged WHERE clock_skew_ns IS NOT NULL"
    ).fetchall()
    assert len(rows) == 1252
    assert all((c - 100) // 1000 == (v - 100) // 1000 and h != vh and abs(s) <= 2 * 10**9 for c, v, h, vh, s in rows)
    assert ds.con.execute("SELECT count(*), sum(events) FROM recordings").fetchone() == (5, 20_000)
    # The generator writes through export --dataset's writer: nothing left behind but the dataset.
    assert not list((tmp_path / "work").iterdir())
