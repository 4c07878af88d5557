"""The Dask engine of fleet datasets gives what the DuckDB engine gives: the same merged incidents
(every column), the same stats, the same report, the same command output; on Dask's threads,
on the local cluster of `--engine dask`, and on an existing cluster of two worker processes
reached with --scheduler. The three skewed hosts of tests/unit/fleet_hosts.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("duckdb")
dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")

import tracer  # noqa: E402
from tracer import fleet, fleet_dask  # noqa: E402
from tracer.errors import ExitStatus  # noqa: E402

from .fleet_hosts import three_hosts  # noqa: E402
from .test_fleet import EXPECTED, ORDER, rec_of  # noqa: E402


def rsttrace(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tracer", *map(str, args)], capture_output=True, text=True, timeout=300, **kw
    )


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fleet")
    paths = three_hosts(tmp / "traces")
    root = tmp / "ds"
    fleet.export([paths[h] for h in ORDER], root)
    return paths, root


@pytest.mark.parametrize("tolerance", [2.0, 4.0])
def test_dask_merges_and_reports_as_duckdb(dataset, tolerance):
    _, root = dataset
    tol = int(tolerance * 1e9)
    db = fleet.Dataset(root)
    want_stats = fleet.merge_duckdb(db, tol)
    want = list(fleet.merged_rows(db))
    m = fleet_dask.merge_dask(fleet_dask.Dataset(root), tol)  # Dask's threads: no cluster
    got = list(fleet_dask.merged_rows(m))
    assert m.stats == want_stats
    assert got == want  # every column and value, in id order
    assert [fleet.row_json(r) for r in got] == [fleet.row_json(r) for r in want]  # and Python type (1 is not 1.0)
    assert [(r["culprit_pid"], r["victim_pid"], r["host"], r["victim_host"], r["clock_skew_ns"]) for r in got] == (
        EXPECTED[tolerance]
    )
    assert [r["id"] for r in got] == list(range(1, len(EXPECTED[tolerance]) + 1))
    assert list(m.frame.columns) == [d[0] for d in db.con.execute("DESCRIBE merged").fetchall()]
    summary, m2 = fleet_dask.summarize(fleet_dask.Dataset(root), tol)
    assert summary == fleet.summarize(db, tol)
    assert summary["cross_host"] == sum(1 for e in EXPECTED[tolerance] if e[4] is not None)
    assert (summary["events"], summary["incidents"]) == (47, len(EXPECTED[tolerance]))
    for limit in (0, 2, 50):
        assert fleet_dask.last_rows(m2, limit) == fleet.last_rows(db, limit)


def test_dataset_as_a_dask_dataframe(dataset):
    paths, root = dataset
    inc = tracer.dataset(root, engine="dask")
    assert isinstance(inc, dd.DataFrame)
    rel = tracer.dataset(root)
    assert list(inc.columns) == rel.columns
    df = inc.compute()
    assert len(df) == 9 and df.groupby("host")["culprit_pid"].count().to_dict() == {
        "alpha": 2,
        "bravo": 1,
        "charlie": 1,
    }
    ev = tracer.dataset(root, "events", engine="dask")
    assert list(ev.columns) == tracer.dataset(root, "events").columns
    assert len(ev) == 47 and int((ev["kind"] == "close").sum().compute()) == 9
    rec = tracer.dataset(root, "recordings", engine="dask").compute()
    assert sorted(rec["rec"]) == sorted(rec_of(paths[h]) for h in ORDER)
    merged = tracer.dataset(root, "merged", engine="dask").compute()
    assert merged["id"].tolist() == list(range(1, 8)) and int(merged["clock_skew_ns"].count()) == 2
    with pytest.raises(ValueError, match="duckdb or dask"):
        tracer.dataset(root, engine="spark")


def _same(a: subprocess.CompletedProcess, b: subprocess.CompletedProcess) -> None:
    assert a.returncode == b.returncode == 0, (a.stderr, b.stderr)
    assert a.stdout == b.stdout and a.stderr == b.stderr


def test_commands_on_the_local_cluster_print_what_duckdb_prints(dataset, tmp_path):
    _, root = dataset
    # merge: the lines, the counts, and the Parquet table of the merged incidents.
    db = rsttrace("merge", root, "-o", tmp_path / "db.parquet")
    dk = rsttrace("merge", root, "--engine", "dask", "-o", tmp_path / "dask.parquet")
    _same(db, dk)
    assert dk.stderr.startswith("merged 3 recording(s): 7 incident(s), 2 joined across hosts")
    a, b = pd.read_parquet(tmp_path / "db.parquet"), pd.read_parquet(tmp_path / "dask.parquet")
    assert list(a.columns) == list(b.columns) and len(a) == len(b) == 7
    for c in a.columns:
        assert [fleet_dask._v(x) for x in a[c].astype(object)] == [fleet_dask._v(x) for x in b[c].astype(object)], c
    assert os.stat(tmp_path / "dask.parquet").st_mode & 0o777 == 0o600
    # report: the whole JSON (summary and every incident).
    _same(rsttrace("report", root, "--json"), rsttrace("report", root, "--json", "--engine", "dask"))


def test_an_existing_cluster_of_two_worker_processes_through_scheduler(dataset):
    _, root = dataset
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        distributed.Client(cluster) as client,
    ):
        pids = client.run(os.getpid)  # two worker processes, not this one
        assert len(pids) == 2 and len(set(pids.values()) | {os.getpid()}) == 3
        addr = cluster.scheduler_address
        for args in (["merge", "--json"], ["merge", "--tolerance", "4"], ["report"], ["report", "--limit", "2"]):
            _same(rsttrace(*args, root), rsttrace(*args, root, "--engine", "dask", "--scheduler", addr))
        # The work ran on the cluster's workers: each executed tasks.
        done = client.run(lambda dask_worker: dask_worker.state.executed_count)
        assert len(done) == 2 and all(n > 0 for n in done.values())


def test_bad_datasets_and_options_are_one_line_errors(dataset, tmp_path):
    paths, root = dataset
    r = rsttrace("merge", root, "--scheduler", "tcp://127.0.0.1:9")
    assert (r.returncode, r.stdout) == (ExitStatus.USAGE, "")
    assert r.stderr == "rsttrace: error: --scheduler is for --engine dask (see 'rsttrace merge --help')\n"
    # A missing partition: named as the DuckDB engine names it, before any cluster starts.
    copy = tmp_path / "ds"
    subprocess.run(["cp", "-a", str(root), str(copy)], check=True)
    rec = rec_of(paths["bravo"])
    part = copy / "incidents" / "host=bravo" / "date=2025-11-20" / f"part-{rec}.parquet"
    saved = part.read_bytes()
    part.unlink()
    for engine in ("duckdb", "dask"):
        r = rsttrace("merge", copy, "--engine", engine)
        assert (r.returncode, r.stdout) == (ExitStatus.BAD_TRACE, "")
        assert r.stderr == (
            f"rsttrace: error: {copy}: recording {rec} of host bravo: 3 incidents recorded, 0 found "
            "(a partition file is missing or was changed)\n"
        )
    part.write_bytes(saved[: len(saved) // 2])
    r = rsttrace("report", copy, "--engine", "dask")
    assert (r.returncode, r.stdout) == (ExitStatus.BAD_TRACE, "")
    assert r.stderr.startswith(f"rsttrace: error: {copy}: cannot read the dataset (") and r.stderr.count("\n") == 1
    plain = tmp_path / "plain"
    plain.mkdir()
    r = rsttrace("merge", plain, "--engine", "dask")
    assert r.returncode == ExitStatus.BAD_TRACE
    assert r.stderr == (
        f"rsttrace: error: {plain}: not an rsttrace dataset (no {fleet.MARKER}; "
        "create one with rsttrace export --dataset)\n"
    )
    assert json.loads((root / fleet.MARKER).read_text())["schema_version"] == 1
