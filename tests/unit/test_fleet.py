"""Fleet datasets: export to Hive-partitioned Parquet, read by pandas/pyarrow/DuckDB, merged on
DuckDB with exactly the incidents of `rsttrace merge A B C` (tracer/merge.py), three hosts whose
clocks are off by up to 2 s."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pd = pytest.importorskip("pandas")
duckdb = pytest.importorskip("duckdb")

import tracer  # noqa: E402
from tracer import fleet, frame, merge, tracefile  # noqa: E402
from tracer.errors import ExitStatus  # noqa: E402

from .fleet_hosts import HOSTS, WALL, three_hosts  # noqa: E402

DATA = Path(__file__).parent.parent / "data"
ORDER = sorted(HOSTS)  # the dataset orders recordings by host (then label, id): the files, in that order


def rsttrace(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tracer", *map(str, args)], capture_output=True, text=True, timeout=120, **kw
    )


def export(tmp_path, hosts=ORDER) -> tuple[dict[str, Path], Path]:
    paths = three_hosts(tmp_path / "traces")
    root = tmp_path / "ds"
    r = rsttrace("export", "--dataset", root, *[paths[h] for h in hosts])
    assert r.returncode == 0, r.stderr
    return paths, root


def rec_of(path: Path) -> str:
    return next(tracefile.read(path))["trace_id"]


def test_layout_partitions_by_host_and_day(tmp_path):
    paths, root = export(tmp_path)
    recs = {h: rec_of(paths[h]) for h in ORDER}
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    # The runs cross midnight UTC; each host's clock error moves its rows, not the partition rule.
    days = {"alpha": ["2025-11-20", "2025-11-21"], "bravo": ["2025-11-20"], "charlie": ["2025-11-20", "2025-11-21"]}
    want = [fleet.MARKER]
    for h in ORDER:
        want.append(f"recordings/host={h}/part-{recs[h]}.parquet")
        for t in ("events", "incidents"):
            want += [f"{t}/host={h}/date={d}/part-{recs[h]}.parquet" for d in days[h]]
    assert files == sorted(want)
    assert json.loads((root / fleet.MARKER).read_text()) == {"format": "rsttrace-dataset", "schema_version": 1}
    assert all(os.stat(root / f).st_mode & 0o777 == 0o600 for f in files)
    # Each host's clock offset is kept, so that merging can correct the skew.
    rec = pd.read_parquet(root / "recordings").sort_values("host")
    assert rec["host"].astype(str).tolist() == ORDER
    assert rec["wall_offset_ns"].tolist() == [WALL - shift + err for shift, err in (HOSTS[h] for h in ORDER)]
    assert rec["schema_version"].tolist() == [1, 1, 1]
    assert rec["events"].tolist() == [13, 17, 17] and rec["incidents"].tolist() == [3, 3, 3]


def test_columns_come_from_the_trace_schema(tmp_path):
    paths, root = export(tmp_path)
    t = frame.load(paths["alpha"])
    ev = duckdb.sql(f"SELECT * FROM read_parquet('{root}/events/*/*/*.parquet', hive_partitioning=true)")
    inc = tracer.dataset(root)
    keep = lambda cols: [c for c in cols if c not in fleet.REPLACED]  # noqa: E731
    assert ev.columns == ["rec", *keep(t.events.columns), "date", "host"]
    assert inc.columns == ["rec", "seq", *keep(t.incidents.columns), "date", "host"]
    assert set(tracer.events.EVENT_COLUMNS) - {"type"} <= set(ev.columns)


def test_readable_by_pandas_pyarrow_and_duckdb(tmp_path):
    paths, root = export(tmp_path)
    df = pd.read_parquet(root / "incidents")  # pyarrow's Hive partitioning decodes host= and date=
    assert len(df) == 9
    assert df.groupby(df["host"].astype(str))["culprit_pid"].count().to_dict() == {
        "alpha": 2,  # the servers of runs 1 and 4
        "bravo": 1,
        "charlie": 1,
    }
    ev = pd.read_parquet(root / "events")
    assert len(ev) == 47 and int((ev["kind"] == "close").sum()) == 9  # 4 servers and 5 clients closed
    rel = tracer.dataset(root, "events")
    assert rel.aggregate("count(*), count(DISTINCT host), min(date), max(date)").fetchall()[0] == (
        47,
        3,
        pd.Timestamp("2025-11-20").date(),
        pd.Timestamp("2025-11-21").date(),
    )
    # Wall-clock time = the host's monotonic ts_ns + its recording's offset, in every row.
    con = duckdb.connect()
    n = con.execute(
        f"SELECT count(*) FROM read_parquet('{root}/events/*/*/*.parquet', hive_partitioning=true) e "
        f"JOIN read_parquet('{root}/recordings/*/*.parquet', hive_partitioning=true) r USING (rec) "
        "WHERE epoch_ns(e.time) = e.ts_ns + r.wall_offset_ns"
    ).fetchone()[0]
    assert n == 47


def test_append_rewrites_nothing_and_refuses_a_recording_twice(tmp_path):
    paths, root = export(tmp_path, hosts=["alpha", "bravo"])
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in root.rglob("*.parquet")}
    assert len(before) == 2 + 4 + 2  # recordings, events and incidents of two hosts (alpha: two days)
    r = rsttrace("export", "--dataset", root, paths["charlie"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith(
        f"host charlie, recording {rec_of(paths['charlie'])}: 17 event(s), 3 incident(s), "
        f"2025-11-20, 2025-11-21 -> {root}"
    )
    after = {p: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in root.rglob("*.parquet")}
    assert {p: after[p] for p in before} == before and len(after) == len(before) + 5
    r = rsttrace("export", "--dataset", root, paths["alpha"])
    assert r.returncode == ExitStatus.BAD_TRACE
    assert r.stderr == (
        f"rsttrace: error: {paths['alpha']}: recording {rec_of(paths['alpha'])} is already in the dataset {root} "
        "(not added twice)\n"
    )
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in root.rglob("*.parquet")} == after


# (culprit pid, victim pid, sender host, victim host, clock skew ns) of each merged incident, by id.
# Default tolerance (2 s): alpha->bravo joins (+1.9 s error); bravo->charlie does not (3.8 s apart).
# The 4-tuple that alpha reset twice, 1.2 s apart: merge.py takes the nearest pair first, and with
# bravo's clock 1.9 s ahead the second RST is nearer the first victim (0.7 s): joined so, exactly.
EXPECTED = {
    2.0: [
        (16107, None, "alpha", "alpha", None),
        (16137, 16109, "alpha", "bravo", 700_024_477),
        (None, 16139, "bravo", "bravo", None),
        (None, 16119, "charlie", "charlie", None),
        (16117, None, "bravo", "bravo", None),
        (16127, 16129, "charlie", "alpha", 1_900_024_477),
        (None, 16149, "charlie", "charlie", None),
    ],
    4.0: [
        (16107, 16139, "alpha", "bravo", 3_100_024_477),
        (16137, 16109, "alpha", "bravo", 700_024_477),
        (16117, 16119, "bravo", "charlie", -3_799_975_523),
        (16127, 16129, "charlie", "alpha", 1_900_024_477),
        (None, 16149, "charlie", "charlie", None),
    ],
}


@pytest.mark.parametrize("tolerance", [2.0, 4.0])
def test_merge_on_duckdb_gives_the_incidents_of_merge_py(tmp_path, tolerance):
    paths, root = export(tmp_path)
    files = [paths[h] for h in ORDER]
    # The present path: traces in, a merged trace out, loaded as a table.
    r_py = rsttrace("merge", *files, "--tolerance", tolerance, "-o", tmp_path / "merged.jsonl")
    assert r_py.returncode == 0, r_py.stderr
    r_db = rsttrace("merge", root, "--tolerance", tolerance, "-o", tmp_path / "merged.parquet")
    assert r_db.returncode == 0, r_db.stderr
    # The same lines and the same counts.
    assert r_db.stdout == r_py.stdout and r_db.stderr == r_py.stderr
    n = len(EXPECTED[tolerance])
    assert r_db.stderr.startswith(f"merged 3 recording(s): {n} incident(s)")

    want = tracer.load(tmp_path / "merged.jsonl").incidents.sort_values("id", ignore_index=True)
    got = pd.read_parquet(tmp_path / "merged.parquet")
    assert got["id"].tolist() == list(range(1, n + 1)) == want["id"].tolist()

    def v(x):
        return frame.value(x)

    rows = [
        (v(r["culprit_pid"]), v(r["victim_pid"]), r["host"], r["victim_host"], v(r["clock_skew_ns"]))
        for r in got.to_dict("records")
    ]
    assert rows == EXPECTED[tolerance]
    # Every column both tables have, value for value (labels aside: a dataset has no file names).
    common = [c for c in want.columns if c in got.columns and c not in ("trace", "victim_trace", "time")]
    assert {"culprit_pid", "victim_pid", "victim_errors", "victim_sigpipe", "clock_skew_ns", "bytes_discarded"} <= set(
        common
    )
    assert {"victim_incident_id", "victim_incident_kind", "victim_first_ns", "first_ns", "lport"} <= set(common)
    for c in common:
        assert [v(x) for x in got[c].astype(object)] == [v(x) for x in want[c].astype(object)], c
    assert [int(t.value) for t in want["time"]] == got["wall_ns"].tolist()


@pytest.mark.parametrize("tolerance", [2.0, 4.0])
def test_merge_stats_match_merge_py(tmp_path, tolerance):
    paths, root = export(tmp_path)
    _, incs, stats = merge.merge([paths[h] for h in ORDER], int(tolerance * 1e9))
    ds = fleet.Dataset(root)
    assert fleet.merge_duckdb(ds, int(tolerance * 1e9)) == stats
    got = ds.con.execute("SELECT source_id, src, clock_skew_ns FROM merged ORDER BY id").fetchall()
    assert got == [(i["source_id"], i["src"], i.get("clock_skew_ns")) for i in incs]


def test_halves_are_those_of_merge_py_on_every_recorded_trace(tmp_path):
    """The engine tells senders and receivers apart from the flat columns; merge.py from the
    nested incident: the same answer for every incident of every recorded trace."""
    files = sorted(DATA.glob("*.jsonl")) + sorted((DATA / "v1").glob("*.jsonl"))
    usable = [f for f in files if (next(tracefile.read(f)).get("wall_offset_ns") or 0)]
    assert len(usable) >= 15
    root = tmp_path / "ds"
    fleet.export(usable, root)
    ds = fleet.Dataset(root)
    fleet.merge_duckdb(ds, 2 * 10**9)
    got = ds.con.execute("SELECT r.file, i.id, i._sender, i._receiver FROM _inc i JOIN recordings r USING (rec)")
    got = sorted(got.fetchall())
    want = sorted(
        (str(f), rec["id"], merge.is_sender_half(rec), merge.is_receiver_half(rec))
        for f in usable
        for rec in tracefile.read(f)
        if rec["type"] == "incident"
    )
    assert got == want and len(want) >= 20
    assert {(s, r) for _, _, s, r in want} >= {(True, False), (False, True), (False, False)}


def test_not_a_dataset_corrupt_or_missing_parts_are_one_line_errors(tmp_path):
    paths, root = export(tmp_path)
    plain = tmp_path / "plain"
    plain.mkdir()
    r = rsttrace("merge", plain)
    assert (r.returncode, r.stdout) == (ExitStatus.BAD_TRACE, "")
    assert r.stderr == (
        f"rsttrace: error: {plain}: not an rsttrace dataset (no {fleet.MARKER}; "
        "create one with rsttrace export --dataset)\n"
    )
    # An output inside the dataset would be read as part of it: refused before anything runs.
    r = rsttrace("merge", root, "-o", root / "merged.parquet")
    assert r.returncode == ExitStatus.BAD_TRACE and "inside the dataset" in r.stderr
    assert not (root / "merged.parquet").exists()
    # A missing partition file: named, not a silently smaller answer.
    rec = rec_of(paths["bravo"])
    part = root / "incidents" / "host=bravo" / "date=2025-11-20" / f"part-{rec}.parquet"
    saved = part.read_bytes()
    part.unlink()
    r = rsttrace("merge", root)
    assert r.returncode == ExitStatus.BAD_TRACE and r.stdout == ""
    assert r.stderr == (
        f"rsttrace: error: {root}: recording {rec} of host bravo: 3 incidents recorded, 0 found "
        "(a partition file is missing or was changed)\n"
    )
    # A corrupt one: one line, no traceback.
    part.write_bytes(saved[: len(saved) // 2])
    r = rsttrace("merge", root)
    assert r.returncode == ExitStatus.BAD_TRACE and r.stdout == ""
    assert r.stderr.startswith(f"rsttrace: error: {root}: cannot read the dataset (") and r.stderr.count("\n") == 1
    assert "Traceback" not in r.stderr
    # A future schema version is refused by name.
    part.write_bytes(saved)
    (root / fleet.MARKER).write_text('{"format": "rsttrace-dataset", "schema_version": 2}')
    r = rsttrace("merge", root)
    assert r.returncode == ExitStatus.BAD_TRACE
    assert r.stderr == f"rsttrace: error: {root}: dataset schema version 2; this rsttrace reads 1\n"


def test_host_names_are_percent_encoded_in_partitions(tmp_path):
    from .fleet_hosts import recorded, write_host

    HOSTS_ODD = "web 1/../x=y%"
    p = tmp_path / "odd.jsonl"
    HOSTS[HOSTS_ODD] = (0, 0)
    try:
        write_host(p, recorded(), HOSTS_ODD)
    finally:
        del HOSTS[HOSTS_ODD]
    root = tmp_path / "ds"
    fleet.export([p], root)
    [d] = [x.name for x in (root / "incidents").iterdir()]
    assert d == "host=web%201%2F..%2Fx%3Dy%25"
    assert tracer.dataset(root).aggregate("any_value(host), count(*)").fetchall()[0] == (HOSTS_ODD, 1)
    assert pd.read_parquet(root / "incidents")["host"].astype(str).tolist() == [HOSTS_ODD]


@pytest.mark.parametrize("tolerance", [2.0, 4.0])
def test_report_on_duckdb_says_what_report_of_the_merged_trace_says(tmp_path, tolerance):
    paths, root = export(tmp_path)
    m = tmp_path / "merged.jsonl"
    assert rsttrace("merge", *[paths[h] for h in ORDER], "--tolerance", tolerance, "-o", m).returncode == 0
    for extra in ([], ["--limit", "2"], ["--limit", "0"]):
        want = rsttrace("report", m, "--tolerance", tolerance, *extra)
        got = rsttrace("report", root, "--tolerance", tolerance, *extra)
        assert got.returncode == want.returncode == 0, got.stderr
        assert got.stdout == want.stdout and got.stderr == want.stderr == ""
    want = json.loads(rsttrace("report", m, "--json").stdout)
    got = json.loads(rsttrace("report", root, "--json", "--tolerance", tolerance).stdout)
    assert len(got.pop("incidents_list")) == len(want.pop("incidents_list")) == len(EXPECTED[tolerance])
    assert got["files"] == [str(root)] and want["files"] == [str(m)]
    assert [s["file"] for s in got.pop("sources")] == [str(paths[h]) for h in ORDER]
    want.pop("sources"), got.pop("files"), want.pop("files")
    assert got == want
    joined = sum(1 for e in EXPECTED[tolerance] if e[4] is not None)
    assert got["cross_host"] == joined and got["events"] == 47 and got["incidents"] == len(EXPECTED[tolerance])
    assert got["bytes_discarded"] == 1000 * sum(1 for e in EXPECTED[tolerance] if e[0] is not None)
    assert got["recorder"] == {"lost": 0, "emitted": 47}


def test_duckdb_memory_is_bounded_and_its_scratch_private(tmp_path):
    """DuckDB would take 80% of RAM (a 200-host fleet's merge held 5.3 GB): 1 GB unless told."""
    _paths, root = export(tmp_path)
    ds = fleet.Dataset(root)
    assert ds.con.execute("SELECT current_setting('memory_limit')").fetchall() == [("953.6 MiB",)]
    scratch = ds.con.execute("SELECT current_setting('temp_directory')").fetchall()[0][0]
    assert Path(scratch).name.startswith("rsttrace-duckdb-") and oct(Path(scratch).stat().st_mode & 0o777) == "0o700"
    env = dict(os.environ, RSTTRACE_DUCKDB_MEMORY="1GB'; SELECT 1; --")
    r = rsttrace("merge", root, env=env)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == (
        'rsttrace: error: RSTTRACE_DUCKDB_MEMORY="1GB\'; SELECT 1; --": not a size such as 512MB or 4GB\n'
    )
    r = rsttrace("merge", root, env=dict(os.environ, RSTTRACE_DUCKDB_MEMORY="2GB"))
    assert r.returncode == 0, r.stderr
    assert r.stdout == rsttrace("merge", root).stdout
