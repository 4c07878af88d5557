"""Fleet datasets: many hosts' traces as Hive-partitioned Parquet, queried by an engine (DuckDB).

Layout of a dataset folder (schema version SCHEMA_VERSION, named in MARKER and in every
recording's row):

    DIR/rsttrace-dataset.json                              what this folder is, and its schema version
    DIR/recordings/host=H/part-REC.parquet                 one row per recording: its clock offset, kernel, ...
    DIR/events/host=H/date=YYYY-MM-DD/part-REC.parquet     that recording's events of that (UTC) day
    DIR/incidents/host=H/date=YYYY-MM-DD/part-REC.parquet  its incidents, by the day of their first event

REC is the recording's id (the trace's trace_id, or a hash of the file). Appending a recording
adds files and rewrites none; its recordings row is written last, so a reader sees a recording
whole or not at all (the views below take only rows of recorded recordings). Each events and
incidents row keeps the host's own monotonic times (ts_ns, first_ns, ...) and its `rec`; the
recording's wall_offset_ns turns them into wall-clock time, which is what merging compares.
The columns are those of tracer.frame.load (events: tracer.events.Event; incidents:
flatten_incident), minus the labels the layout replaces (trace, host), plus `rec` and `seq`
(the incident's place in its file, which breaks ties exactly as `rsttrace merge A B` does).
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from .errors import BadTrace, RsttraceError

SCHEMA_VERSION = 1
MARKER = "rsttrace-dataset.json"
FORMAT = "rsttrace-dataset"
TABLES = ("events", "incidents", "recordings")
# Columns of the per-trace tables (tracer.frame) that the layout replaces: host is the partition,
# the trace label is the recordings table's, `victim_*` labels are derived again when merging.
REPLACED = ("trace", "host", "victim_trace", "victim_host")
_REC_ID = re.compile(r"^[0-9a-f]{32}$")


def _need():
    try:
        import duckdb  # noqa: F401
    except ImportError:
        raise RsttraceError("fleet datasets need DuckDB: pip install 'rsttrace[fleet]'") from None


def host_dir(host: str | None) -> str:
    """The partition folder of a host: its name percent-encoded (pyarrow, DuckDB and Dask decode it)."""
    name = quote(host or "unknown", safe="")
    if len(name) > 200:
        raise BadTrace(f"host name too long for a partition folder ({len(name)} bytes encoded)")
    return f"host={name}"


def recording_id(source: dict, path: Path) -> str:
    """The recording's trace_id when it has one of the form rsttrace writes, else a hash of the file."""
    tid = source.get("trace_id")
    if isinstance(tid, str) and _REC_ID.match(tid):
        return tid
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:32]


# -- writing ----------------------------------------------------------------------------------


def _marker(root: Path) -> dict:
    return {"format": FORMAT, "schema_version": SCHEMA_VERSION}


def _check_marker(root: Path) -> dict:
    p = root / MARKER
    try:
        st = os.lstat(p)
        if not stat.S_ISREG(st.st_mode) or st.st_size > 4096:
            raise BadTrace(f"{root}: {MARKER} is not a regular file of an rsttrace dataset")
        info = json.loads(p.read_bytes())
    except FileNotFoundError:
        raise BadTrace(
            f"{root}: not an rsttrace dataset (no {MARKER}; create one with rsttrace export --dataset)"
        ) from None
    except (OSError, ValueError) as e:
        raise BadTrace(f"{root}: {MARKER} unreadable ({getattr(e, 'strerror', None) or e})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise BadTrace(f"{root}: {MARKER} does not describe an rsttrace dataset")
    if info.get("schema_version") != SCHEMA_VERSION:
        raise BadTrace(
            f"{root}: dataset schema version {info.get('schema_version')!r}; this rsttrace reads {SCHEMA_VERSION}"
        )
    return info


def _write_parquet(table, path: Path, inputs) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .config import check_output
    from .errors import OutputFailed
    from .tracefile import open_output

    check_output(path, inputs)
    target = open_output(path, 0o600)
    try:
        pq.write_table(table, target.file)
    except (OSError, pa.ArrowException) as e:
        target.discard()
        raise OutputFailed(f"cannot write {path}: {getattr(e, 'strerror', None) or e}") from None
    except BaseException:
        target.discard()
        raise
    target.commit()


def _mkdir(path: Path) -> None:
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        from .errors import OutputFailed

        raise OutputFailed(f"cannot create {path}: {e.strerror}") from None


def _plain(table):
    """Dictionary (categorical) columns as plain ones, null-typed columns as text: every part
    file of a table has the same types, whatever its recording held."""
    import pyarrow as pa

    cols = []
    for c in table.columns:
        if pa.types.is_dictionary(c.type):
            c = c.cast(c.type.value_type)
        if pa.types.is_null(c.type):
            c = c.cast(pa.string())
        cols.append(c)
    return pa.table(cols, names=table.column_names)


def _by_day(table, time_col: str):
    """(date text, rows of that UTC day) for each day the table's time column touches."""
    import pyarrow.compute as pc

    days = pc.strftime(table.column(time_col), format="%Y-%m-%d")
    for day in sorted(pc.unique(days).to_pylist(), key=lambda d: (d is None, d)):
        if day is None:
            raise BadTrace("a row without a wall-clock time cannot be placed in a date partition")
        yield day, table.filter(pc.equal(days, day))


@dataclass
class Exported:
    """What export() added for one recording."""

    file: Path
    host: str | None
    rec: str
    events: int
    incidents: int
    days: list[str]
    warnings: list[str]


def export(files: list[Path], root: Path, strict: bool = False) -> list[Exported]:
    """Append each trace (JSON Lines or an exported Parquet pair) to the dataset at root,
    creating it when the folder is new or empty. A recording already there is refused."""
    import pyarrow as pa

    from . import frame

    frame._need()
    root = Path(root)
    _mkdir(root)
    if (root / MARKER).exists() or any(root.iterdir()):
        _check_marker(root)
    else:
        _write_json(root / MARKER, _marker(root))
    done = []
    for path in files:
        trace = frame.load(path, strict=strict)
        if len(trace.sources) != 1:
            raise BadTrace(f"{path}: a merged trace ({len(trace.sources)} recordings): export each host's own trace")
        src = trace.sources[0]
        if not src.get("wall_offset_ns"):
            raise BadTrace(f"{path}: no wall-clock offset in the header: cannot place its times against another host's")
        rec = recording_id(src, Path(trace.files[0]))
        hdir = host_dir(src.get("host"))
        rec_path = root / "recordings" / hdir / f"part-{rec}.parquet"
        if rec_path.exists():
            raise BadTrace(f"{path}: recording {rec} is already in the dataset {root} (not added twice)")
        inputs = list(trace.files)
        ev = _table("events", trace.events, rec)
        inc = _table("incidents", trace.incidents, rec)
        days: set[str] = set()
        for name, table, col in (("events", ev, "time"), ("incidents", inc, "time")):
            for day, part in _by_day(table, col):
                folder = root / name / hdir / f"date={day}"
                _mkdir(folder)
                _write_parquet(part, folder / f"part-{rec}.parquet", inputs)
                days.add(day)
        row = {
            "rec": rec,
            "label": src.get("label"),
            "file": str(path),
            "kernel": src.get("kernel"),
            "version": src["version"] if type(src.get("version")) is int else None,
            "wall_offset_ns": int(src["wall_offset_ns"]),
            "boot_id": src.get("boot_id") if isinstance(src.get("boot_id"), str) else None,
            "trace_id": src.get("trace_id") if isinstance(src.get("trace_id"), str) else None,
            "schema_version": SCHEMA_VERSION,
            "events": ev.num_rows,
            "incidents": inc.num_rows,
            "days": ",".join(sorted(days)),
            "summaries": json.dumps(trace.summaries, default=str),
            "warnings": json.dumps(trace.warnings),
        }
        _mkdir(rec_path.parent)
        _write_parquet(pa.Table.from_pylist([row], schema=_RECORDINGS_SCHEMA()), rec_path, inputs)
        done.append(Exported(Path(path), src.get("host"), rec, ev.num_rows, inc.num_rows, sorted(days), trace.warnings))
    return done


def _table(name: str, df, rec: str):
    """A per-trace table of tracer.frame.load as the dataset stores it: the layout's labels
    dropped, `rec` (and for incidents `seq`, the file order) added."""
    import pyarrow as pa

    t = _plain(pa.Table.from_pandas(df, preserve_index=False))
    t = t.drop_columns([c for c in REPLACED if c in t.column_names])
    if name == "incidents":
        t = t.add_column(0, "seq", pa.array(range(t.num_rows), pa.int64()))
    return t.add_column(0, "rec", pa.array([rec] * t.num_rows, pa.string()))


def _empty(name: str):
    """The table no recording has rows for, with the columns an empty trace's would have."""
    import pyarrow as pa

    from . import frame

    acc = frame._Acc(None)
    df = frame._events_frame(acc) if name == "events" else frame._incidents_frame(acc)
    t = _table(name, df, "")
    t = t.append_column("host", pa.array([], pa.string()))
    return t.append_column("date", pa.array([], pa.date32()))


def _RECORDINGS_SCHEMA():
    import pyarrow as pa

    ints = ("wall_offset_ns", "schema_version", "events", "incidents", "version")
    names = ("rec", "label", "file", "kernel", "version", "wall_offset_ns", "boot_id", "trace_id")
    names += ("schema_version", "events", "incidents", "days", "summaries", "warnings")
    return pa.schema([(n, pa.int64() if n in ints else pa.string()) for n in names])


def _write_json(path: Path, obj: dict) -> None:
    from .errors import OutputFailed
    from .tracefile import open_output

    target = open_output(path, 0o600)
    try:
        target.file.write(json.dumps(obj).encode() + b"\n")
    except OSError as e:
        target.discard()
        raise OutputFailed(f"cannot write {path}: {e.strerror}") from None
    target.commit()


# -- reading: DuckDB ---------------------------------------------------------------------------


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _files(root: Path, name: str, depth: int) -> str:
    return str(root / name / "/".join(["*"] * depth) / "*.parquet")


# DuckDB's memory for one command (RSTTRACE_DUCKDB_MEMORY, e.g. 4GB, where more is to spare).
MEMORY_LIMIT = os.environ.get("RSTTRACE_DUCKDB_MEMORY", "1GB")


class Dataset:
    """A dataset opened on a DuckDB connection of its own, with three views: recordings (with
    `ord`, the order that breaks ties as the file order does for `rsttrace merge A B`), events
    and incidents (rows of recorded recordings only)."""

    def __init__(self, root: Path, threads: int | None = None) -> None:
        _need()
        import duckdb

        self.root = Path(root)
        if not self.root.is_dir():
            raise BadTrace(f"{self.root}: not a folder (an rsttrace dataset is one)")
        self.info = _check_marker(self.root)
        self.con = duckdb.connect(":memory:")
        if threads:
            self.con.execute(f"SET threads = {int(threads)}")
        # DuckDB takes up to 80% of RAM by default: a fleet's merge held 5.3 GB on this 24 GB
        # machine. Bounded, it spills what does not fit to a private scratch folder instead.
        self._scratch = tempfile.mkdtemp(prefix="rsttrace-duckdb-")
        atexit.register(shutil.rmtree, self._scratch, True)
        if not re.fullmatch(r"\d+(\.\d+)?\s*[KMGT]i?B", MEMORY_LIMIT):
            raise RsttraceError(f"RSTTRACE_DUCKDB_MEMORY={MEMORY_LIMIT!r}: not a size such as 512MB or 4GB")
        self.con.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")
        self.con.execute(f"SET temp_directory = '{self._scratch}'")
        with self.errors():
            self._views()

    def errors(self):
        return _duck_errors(self.root)

    def _read(self, name: str, depth: int) -> str | None:
        import glob

        pattern = _files(self.root, name, depth)
        if not glob.glob(pattern):
            return None
        types = "{'host': 'VARCHAR'}" if depth == 1 else "{'host': 'VARCHAR', 'date': 'DATE'}"
        return (
            f"read_parquet({_sql_str(pattern)}, hive_partitioning = true, hive_types = {types}, "
            "hive_types_autocast = false, union_by_name = true)"
        )

    def _views(self) -> None:
        rec = self._read("recordings", 1)
        if rec is None:
            raise BadTrace(f"{self.root}: a dataset without recordings (recordings/host=*/part-*.parquet)")
        self.con.execute(
            f"CREATE VIEW recordings AS SELECT *, CAST(row_number() OVER (ORDER BY host, label, rec) - 1 AS INTEGER) "
            f"AS ord FROM {rec}"
        )
        bad = self.con.execute(
            "SELECT host, rec, schema_version FROM recordings WHERE schema_version IS DISTINCT FROM ? "
            "OR wall_offset_ns IS NULL OR rec IS NULL LIMIT 1",
            [SCHEMA_VERSION],
        ).fetchone()
        if bad:
            raise BadTrace(
                f"{self.root}: recording {bad[1]} of host {bad[0]}: schema version {bad[2]} or no clock offset"
            )
        dup = self.con.execute(
            "SELECT rec, count(*) FROM recordings GROUP BY rec HAVING count(*) > 1 LIMIT 1"
        ).fetchone()
        if dup:
            raise BadTrace(f"{self.root}: recording {dup[0]} is in the dataset {dup[1]} times")
        for name in ("events", "incidents"):
            src = self._read(name, 2)
            if src is None:
                self.con.register(f"_empty_{name}", _empty(name))
                self.con.execute(f"CREATE VIEW {name} AS SELECT * FROM _empty_{name}")
            else:
                self.con.execute(
                    f"CREATE VIEW {name} AS SELECT t.* FROM {src} t WHERE t.rec IN (SELECT rec FROM recordings)"
                )
            self._check_counts(name)

    def _check_counts(self, name: str) -> None:
        """Each recording's rows are all there: a missing or changed part file is an error, not a
        silently smaller answer."""
        row = self.con.execute(
            f"SELECT r.host, r.rec, r.{name}, coalesce(n.n, 0) FROM recordings r "
            f"LEFT JOIN (SELECT rec, count(*) AS n FROM {name} GROUP BY rec) n USING (rec) "
            f"WHERE r.{name} IS DISTINCT FROM coalesce(n.n, 0) ORDER BY r.host, r.rec LIMIT 1"
        ).fetchone()
        if row:
            raise BadTrace(
                f"{self.root}: recording {row[1]} of host {row[0]}: {row[2]} {name} recorded, {row[3]} found "
                "(a partition file is missing or was changed)"
            )

    def relation(self, table: str):
        return self.con.sql(f"SELECT * FROM {table}")


class _duck_errors:
    """DuckDB's errors (a corrupt or unreadable Parquet file, a type clash between parts) as
    BadTrace: one line naming the dataset."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __enter__(self):
        return self

    def __exit__(self, typ, e, tb):
        if e is None:
            return False
        import duckdb

        if isinstance(e, duckdb.Error):
            first = (str(e).strip().splitlines() or [""])[0]
            raise BadTrace(f"{self.root}: cannot read the dataset ({type(e).__name__}: {first})") from None
        return False


# -- merging: the cross-host join as queries ---------------------------------------------------

# Columns the merge sets on a joined incident (tracer/merge.py: victim_incident, clock_skew_ns,
# timestamps.victim_first_ns, victim.src), flattened as tracer.frame.flatten_incident does.
MERGE_SET = (
    "clock_skew_ns",
    "victim_incident_trace",
    "victim_incident_id",
    "victim_incident_kind",
    "victim_first_ns",
    "victim_rec",
)


# Where the merge takes them from on a join: the receiver's half (its recording's label, its id, ...),
# clock_skew_ns from the match.
MERGE_FROM = {
    "victim_incident_trace": "_label",
    "victim_incident_id": "id",
    "victim_incident_kind": "kind",
    "victim_first_ns": "first_ns",
    "victim_rec": "rec",
}
# The merged table's columns before and after those of merged_plan (victim_host: the victim's
# recording's host, else the incident's own).
MERGED_HEAD = ("id", "rec", "source_id", "src", "wall_ns")
MERGED_TAIL = ("victim_host",)


def merged_plan(cols: list[str]) -> list[tuple[str, str]]:
    """The merged table's columns between MERGED_HEAD and MERGED_TAIL, from the incidents table's
    columns, each with where its value comes from (every engine builds them from this): "own" the
    incident's own; "victim" the receiver half's when joined, else its own; "set" / "new" what
    the merge sets (MERGE_FROM) when joined, else its own value ("set") or null ("new": a column
    the dataset's incidents do not have)."""
    plan = []
    for c in cols:
        if c in ("rec", "seq", "id", "wall_ns"):
            continue
        if victim_field(c):
            plan.append((c, "victim"))
        elif c not in MERGE_SET:
            plan.append((c, "own"))
    return plan + [(c, "set" if c in cols else "new") for c in MERGE_SET]


def victim_field(name: str) -> bool:
    """A flat column that came from the incident's `victim` object (flatten_incident), which a
    merge replaces by the victim host's: not its cgroup columns, nor what the merge sets."""
    if not name.startswith("victim_") or name in MERGE_SET:
        return False
    field = name[len("victim_") :]
    return not field.startswith(("cgroup_", "container", "runtime", "pod_uid"))


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def merge_duckdb(ds: Dataset, tolerance_ns: int) -> dict:
    """Pair each RST's sender incident with its victim's on another host, exactly as
    tracer/merge.py does, into the temporary table `merged`; its stats.

    Halves: a sender has no victim; a receiver has a victim but no culprit and no RST time.
    Candidates: the same 4-tuple, different recordings, wall-clock times (the sender's close or
    RST, the receiver's first event) within tolerance_ns. merge.py then takes candidates by
    (|skew|, sender's place, receiver's place) and keeps each half once; that greedy choice is
    the same as taking, round after round, every candidate that is the best of both its halves
    (a total order makes those disjoint, and the greedy scan would take each of them): a few
    set-based rounds, however many incidents."""
    con = ds.con
    cols = [r[0] for r in con.execute("DESCRIBE incidents").fetchall()]
    victim = "(" + " OR ".join(f"{_q(c)} IS NOT NULL" for c in cols if victim_field(c)) + ")"
    with ds.errors():
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _inc AS SELECT i.*, r.ord AS _src, r.wall_offset_ns AS _off, "
            "r.label AS _label, row_number() OVER (ORDER BY r.ord, i.seq) AS _k, "
            f"NOT {victim} AS _sender, "
            f"({victim} AND i.culprit_pid IS NULL AND i.reset_ns IS NULL) AS _receiver "
            "FROM incidents i JOIN recordings r USING (rec)"
        )
        tup = " AND ".join(f"s.{c} IS NOT DISTINCT FROM r.{c}" for c in ("laddr", "lport", "raddr", "rport"))
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _cand AS "
            "SELECT i, j, abs(skew) AS a, skew FROM ("
            "  SELECT s._k AS i, r._k AS j, (r.first_ns + r._off) - "
            "    (coalesce(least(s.close_ns, s.reset_ns), s.first_ns) + s._off) AS skew "
            f"  FROM _inc s JOIN _inc r ON {tup} AND s._src <> r._src "
            "  WHERE s._sender AND r._receiver"
            ") WHERE abs(skew) <= ?",
            [tolerance_ns],
        )
        con.execute("CREATE OR REPLACE TEMP TABLE _match (i BIGINT, j BIGINT, skew BIGINT)")
        while True:
            con.execute(
                "CREATE OR REPLACE TEMP TABLE _pick AS SELECT i, j, skew FROM ("
                "  SELECT *, row_number() OVER (PARTITION BY i ORDER BY a, j) AS bi, "
                "  row_number() OVER (PARTITION BY j ORDER BY a, i) AS bj FROM _cand"
                ") WHERE bi = 1 AND bj = 1"
            )
            if not con.execute("SELECT count(*) FROM _pick").fetchone()[0]:
                break
            con.execute("INSERT INTO _match SELECT * FROM _pick")
            con.execute("DELETE FROM _cand WHERE i IN (SELECT i FROM _pick) OR j IN (SELECT j FROM _pick)")
        out = []
        for c, how in merged_plan(cols):
            if how == "own":
                out.append(f"s.{_q(c)}")
            elif how == "victim":
                out.append(f"CASE WHEN m.i IS NULL THEN s.{_q(c)} ELSE r.{_q(c)} END AS {_q(c)}")
            else:
                kept = f"s.{_q(c)}" if how == "set" else "NULL"
                new = "m.skew" if c == "clock_skew_ns" else f"r.{_q(MERGE_FROM[c])}"
                out.append(f"CASE WHEN m.i IS NULL THEN {kept} ELSE {new} END AS {_q(c)}")
        con.execute(
            "CREATE OR REPLACE TEMP TABLE merged AS SELECT "
            "row_number() OVER (ORDER BY s.first_ns + s._off, s._src, s.id) AS id, "
            "s.rec, s.id AS source_id, s._src AS src, (s.first_ns + s._off) AS wall_ns, "
            + ", ".join(out)
            + " FROM _inc s LEFT JOIN _match m ON m.i = s._k LEFT JOIN _inc r ON r._k = m.j "
            "WHERE s._k NOT IN (SELECT j FROM _match) ORDER BY id"
        )
        con.execute(
            "CREATE OR REPLACE TEMP TABLE merged AS SELECT m.*, coalesce(v.host, m.host) AS victim_host "
            "FROM merged m LEFT JOIN recordings v ON v.rec = m.victim_rec ORDER BY m.id"
        )
        n_rec, n_inc, n_s, n_r, n_m = con.execute(
            "SELECT (SELECT count(*) FROM recordings), (SELECT count(*) FROM merged), "
            "(SELECT count(*) FILTER (WHERE _sender) FROM _inc), (SELECT count(*) FILTER (WHERE _receiver) FROM _inc), "
            "(SELECT count(*) FROM _match)"
        ).fetchone()
        for t in ("_cand", "_pick", "_match"):
            con.execute(f"DROP TABLE IF EXISTS {t}")
    return {
        "inputs": n_rec,
        "recordings": n_rec,
        "incidents": n_inc,
        "cross_host": n_m,
        "tolerance_ns": tolerance_ns,
        "unmatched_senders": n_s - n_m,
        "unmatched_receivers": n_r - n_m,
    }


def merged_rows(ds: Dataset, batch: int = 4096):
    """The merged incidents as flat rows, by id, a batch at a time (never all in memory)."""
    with ds.errors():
        cur = ds.con.execute("SELECT * EXCLUDE (time, close_time, reset_time) FROM merged ORDER BY id")
        names = [d[0] for d in cur.description]
        while True:
            rows = cur.fetchmany(batch)
            if not rows:
                return
            for r in rows:
                yield dict(zip(names, r))


def row_json(row: dict) -> str:
    return json.dumps(row, default=str, separators=(",", ":"))


def check_merged_output(root: Path, path: Path) -> None:
    from .config import check_output

    check_output(path, [])
    if Path(os.path.realpath(path)).is_relative_to(os.path.realpath(root)):
        raise BadTrace(f"cannot write {path}: it is inside the dataset {root} (the dataset is an input)")


def write_merged(ds: Dataset, path: Path) -> None:
    """The merged incidents as one Parquet table at path, written under a temporary name and
    renamed into place (nothing in the dataset is touched)."""
    from .errors import OutputFailed
    from .tracefile import open_output

    path = Path(path)
    check_merged_output(ds.root, path)
    target = open_output(path, 0o600)
    target.file.close()
    try:
        with ds.errors():
            ds.con.execute(f"COPY (SELECT * FROM merged ORDER BY id) TO {_sql_str(str(target.tmp))} (FORMAT parquet)")
        os.chmod(target.tmp, 0o600)
        os.replace(target.tmp, path)
    except OSError as e:
        target.discard()
        raise OutputFailed(f"cannot write {path}: {e.strerror}") from None
    except BaseException:
        target.discard()
        raise


def open_table(root, table: str = "incidents", *, engine: str = "duckdb", tolerance: float = 2.0, threads=None):
    """tracer.dataset(): one table of the dataset at root, lazily, as a DuckDB relation (its
    connection lives as long as the relation), or with engine="dask" as a Dask dataframe
    (tracer.fleet_dask). `merged` runs the cross-host join first."""
    if table not in (*TABLES, "merged"):
        raise ValueError(f"table must be one of {', '.join((*TABLES, 'merged'))}, not {table!r}")
    if engine == "dask":
        from . import fleet_dask

        return fleet_dask.open_table(root, table, tolerance)
    if engine != "duckdb":
        raise ValueError(f"engine must be duckdb or dask, not {engine!r}")
    ds = Dataset(Path(root), threads=threads)
    if table == "merged":
        merge_duckdb(ds, int(tolerance * 1e9))
    return ds.relation(table)


# -- report: the aggregations as queries --------------------------------------------------------


def summarize(ds: Dataset, tolerance_ns: int) -> dict:
    """What tracer.report.summarize says of a merged trace, computed by DuckDB over the dataset's
    merged incidents (merge_duckdb) and events: the same keys and numbers."""
    from .report import NO_SIGPIPE, NO_VICTIM, _clock

    merge_duckdb(ds, tolerance_ns)
    q = ds.con.execute

    def counts(sql: str, params=()) -> dict:
        return {str(k): int(n) for k, n in q(sql, list(params)).fetchall() if n}

    with ds.errors():
        cols = {r[0] for r in q("DESCRIBE merged").fetchall()}
        fate = "CASE WHEN victim_addr IS NULL THEN ? ELSE coalesce(victim_sigpipe, ?) END"
        sources = q("SELECT label, host, kernel, file, summaries, warnings FROM recordings ORDER BY ord").fetchall()
        n_inc, first, last, nbytes, cross = q(
            "SELECT count(*), min(wall_ns), max(wall_ns), coalesce(sum(bytes_discarded), 0), count(clock_skew_ns) "
            "FROM merged"
        ).fetchone()
        by_culprit = [
            {"comm": c, "incidents": int(n), "bytes_discarded": int(b), "pids": int(p)}
            for c, n, b, p in q(
                "SELECT coalesce(culprit_comm, '?') AS c, count(*), coalesce(sum(bytes_discarded), 0) AS b, "
                "count(DISTINCT culprit_pid) FROM merged GROUP BY c ORDER BY b DESC, count(*) DESC, c"
            ).fetchall()
        ]
        fates: dict[str, dict] = {}
        for c, f, n in q(
            f"SELECT coalesce(victim_comm, '?') AS c, {fate} AS f, count(*) AS n FROM merged "
            "WHERE victim_addr IS NOT NULL GROUP BY c, f ORDER BY n DESC, f",
            [NO_VICTIM, NO_SIGPIPE],
        ).fetchall():
            fates.setdefault(c, {})[f] = int(n)
        by_victim = [
            {"comm": c, "incidents": int(n), "pids": int(p), "fates": fates[c]}
            for c, n, p in q(
                "SELECT coalesce(victim_comm, '?') AS c, count(*), count(DISTINCT victim_pid) FROM merged "
                "WHERE victim_addr IS NOT NULL GROUP BY c ORDER BY count(*) DESC, c"
            ).fetchall()
        ]
        ages = q(
            "SELECT count(*), min(a), list_sort(list(a))[count(*) // 2 + 1], max(a) FROM "
            "(SELECT close_wait_age_ns AS a FROM merged WHERE close_wait_age_ns IS NOT NULL)"
        ).fetchone()
        summary = {
            "files": [str(ds.root)],
            "sources": [{"label": s[0], "host": s[1], "kernel": s[2], "file": s[3]} for s in sources],
            "events": int(q("SELECT count(*) FROM events").fetchone()[0]),
            "events_by_kind": counts("SELECT kind, count(*) AS n FROM events GROUP BY kind ORDER BY n DESC, kind"),
            "incidents": int(n_inc),
            "first_incident": _clock(first) if n_inc else None,
            "last_incident": _clock(last) if n_inc else None,
            "by_kind": counts("SELECT kind, count(*) AS n FROM merged GROUP BY kind ORDER BY n DESC, kind"),
            "by_impact": counts(
                "SELECT impact, count(*) AS n FROM merged WHERE impact IS NOT NULL GROUP BY impact "
                "ORDER BY n DESC, impact"
            )
            if "impact" in cols
            else {},
            "by_culprit": by_culprit,
            "by_victim": by_victim,
            "bytes_discarded": int(nbytes),
            "signal_fates": counts(
                f"SELECT {fate} AS f, count(*) AS n FROM merged GROUP BY f ORDER BY n DESC, f", [NO_VICTIM, NO_SIGPIPE]
            ),
            "close_wait_ages_ns": {"count": int(ages[0]), "min": ages[1], "median": ages[2], "max": ages[3]}
            if ages[0]
            else None,
            "cross_host": int(cross),
        }
    summary["recorder"], summary["warnings"] = recorder_totals([(s[4], s[5]) for s in sources])
    return summary


def recorder_totals(rows) -> tuple[dict, list[str]]:
    """The recorders' counters added up and their warnings, from the recordings' (summaries,
    warnings) JSON texts, in recording order: one row per recording, not per incident."""
    from collections import Counter

    stats: Counter = Counter()
    warnings: list[str] = []
    for summaries, warned in rows:
        for summ in json.loads(summaries or "[]"):
            for k, v in ((summ.get("stats") or {}) if isinstance(summ, dict) else {}).items():
                if isinstance(v, int):
                    stats[k] += v
        warnings += json.loads(warned or "[]")
    return dict(stats), warnings


def last_rows(ds: Dataset, limit: int) -> list[dict]:
    """The last `limit` merged incidents by time (0: all), as flat rows for tracer.report.text."""
    lim = f"LIMIT {int(limit)}" if limit else ""
    with ds.errors():
        cur = ds.con.execute(
            "SELECT * EXCLUDE (time, close_time, reset_time) FROM "
            f"(SELECT * FROM merged ORDER BY wall_ns DESC, src DESC, id DESC {lim}) ORDER BY wall_ns, src, id"
        )
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]
