"""The Dask engine of fleet datasets (`--engine dask`, `tracer.dataset(DIR, engine="dask")`).

The same dataset (tracer/fleet.py's layout), the same merge and the same report as the DuckDB
engine, run as Dask dataframes: each part file is a partition, read by a worker; the cross-host
join is a shuffle join on the 4-tuple; the rounds of "best candidate of both its halves" are two
shuffles per round; the merged incidents are sorted and numbered by Dask. What comes back to the
client is small: the recordings table (one row per recording), the Parquet footers (row counts
and schemas, checked as the DuckDB engine checks them), the round counts, the report's
aggregates, and the merged rows a partition at a time when they are printed or written.

Where it runs: `rsttrace merge DIR --engine dask` starts a local cluster of two worker processes
(dask.distributed LocalCluster) for the command, or uses an existing cluster with `--scheduler
ADDR` (its workers need rsttrace installed and the dataset at the same path). In Python,
tracer.dataset(DIR, engine="dask") is a lazy Dask dataframe computed by whatever scheduler is
current (a distributed Client, if one was created, else threads).
"""

from __future__ import annotations

import contextlib
import glob
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from .errors import BadTrace, RsttraceError
from .fleet import (
    MERGE_FROM,
    MERGED_HEAD,
    MERGED_TAIL,
    SCHEMA_VERSION,
    _check_marker,
    _empty,
    _files,
    _RECORDINGS_SCHEMA,
    check_merged_output,
    merged_plan,
    recorder_totals,
    victim_field,
)

_PART = re.compile(r"^part-([0-9a-f]{32})\.parquet$")
KEYS = ("laddr", "lport", "raddr", "rport")
SEQ_BITS = 40  # _k = recording's ord << SEQ_BITS | seq: the order of (ord, seq), as one integer
LOCAL_WORKERS = 2


def _need():
    try:
        import dask.dataframe  # noqa: F401
        import distributed  # noqa: F401
    except ImportError:
        raise RsttraceError("the Dask engine needs Dask: pip install 'rsttrace[fleet]'") from None


# -- where it runs ------------------------------------------------------------------------------


@contextlib.contextmanager
def cluster(scheduler: str | None = None):
    """A dask.distributed Client for one command: connected to the scheduler at ADDR, or to a
    local cluster of LOCAL_WORKERS worker processes started (and stopped) here."""
    _need()
    import logging

    from distributed import Client, LocalCluster

    quiet = logging.ERROR
    for name in ("distributed", "distributed.nanny", "distributed.worker", "distributed.scheduler"):
        logging.getLogger(name).setLevel(quiet)
    if scheduler:
        try:
            client = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError, ValueError) as e:
            raise RsttraceError(f"cannot reach the Dask scheduler at {scheduler}: {e}") from None
        with client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=LOCAL_WORKERS,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",  # any free port: never a warning that 8787 is taken
            silence_logs=quiet,
        ) as lc,
        Client(lc) as client,
    ):
        yield client


# -- reading ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """One part file of a table: a partition of its Dask dataframe."""

    path: str
    host: str
    date: object  # datetime.date, or None for recordings
    rec: str
    rows: int


def _arrow_types(table):
    import pandas as pd

    return table.to_pandas(types_mapper=pd.ArrowDtype)


def _read_part(part: Part, schema, columns, root: str):
    """A part file's rows as a pandas frame of Arrow types, with the dataset's columns (union of
    all its files': a column this file lacks is null) plus date and host from the path."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    want = [f for f in schema if columns is None or f.name in columns]
    try:
        have = set(pq.read_schema(part.path).names)
        read = [f.name for f in want if f.name in have]
        t = pq.read_table(part.path, columns=read + (["rec"] if "rec" in have and "rec" not in read else []))
        n = t.num_rows
        if n != part.rows or ("rec" in have and n and not pc.all(pc.equal(t.column("rec"), part.rec)).as_py()):
            raise BadTrace(f"{root}: {part.path}: changed since the dataset was opened, or rows of another recording")
        cols = [t.column(f.name).cast(f.type) if f.name in have else pa.nulls(n, f.type) for f in want]
    except (OSError, pa.ArrowException) as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise BadTrace(f"{root}: cannot read the dataset ({type(e).__name__}: {first})") from None
    names = [f.name for f in want]
    if part.date is not None and (columns is None or "date" in columns):
        cols.append(pa.array([part.date] * n, pa.date32()))
        names.append("date")
    if columns is None or "host" in columns:
        cols.append(pa.array([part.host] * n, pa.string()))
        names.append("host")
    return _arrow_types(pa.table(cols, names=names))


class Dataset:
    """A dataset opened for Dask: the recordings table (pandas, with `ord`), and for events and
    incidents the part files, their union schema and row counts (from the Parquet footers),
    checked against the recordings as the DuckDB engine checks them."""

    def __init__(self, root: Path) -> None:
        _need()
        self.root = Path(root)
        if not self.root.is_dir():
            raise BadTrace(f"{self.root}: not a folder (an rsttrace dataset is one)")
        self.info = _check_marker(self.root)
        self.recordings = self._recordings()
        self.recs = set(self.recordings["rec"])
        self.parts: dict[str, list[Part]] = {}
        self.schemas: dict = {}
        for name in ("events", "incidents"):
            self._scan(name)
            self._check_counts(name)

    def _footer(self, path: str):
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            md = pq.read_metadata(path)
            return md.schema.to_arrow_schema(), md.num_rows
        except (OSError, pa.ArrowException) as e:
            first = (str(e).strip().splitlines() or [""])[0]
            raise BadTrace(f"{self.root}: cannot read the dataset ({type(e).__name__}: {first})") from None

    def _recordings(self):
        import pandas as pd
        import pyarrow as pa
        import pyarrow.parquet as pq

        files = sorted(glob.glob(_files(self.root, "recordings", 1)))
        if not files:
            raise BadTrace(f"{self.root}: a dataset without recordings (recordings/host=*/part-*.parquet)")
        schema = _RECORDINGS_SCHEMA()
        tables = []
        for f in files:
            self._footer(f)
            try:
                t = pq.read_table(f)
                t = pa.table(
                    [
                        t.column(c).cast(schema.field(c).type)
                        if c in t.column_names
                        else pa.nulls(t.num_rows, schema.field(c).type)
                        for c in schema.names
                    ],
                    schema=schema,
                )
            except (OSError, pa.ArrowException, KeyError) as e:
                raise BadTrace(f"{self.root}: cannot read the dataset ({type(e).__name__}: {e})") from None
            host = unquote(Path(f).parent.name.removeprefix("host="))
            tables.append(t.append_column("host", pa.array([host] * t.num_rows, pa.string())))
        rec = pa.concat_tables(tables).to_pandas(types_mapper=pd.ArrowDtype)
        rec = rec.sort_values(["host", "label", "rec"], na_position="last", kind="stable", ignore_index=True)
        rec["ord"] = range(len(rec))
        bad = rec[(rec["schema_version"] != SCHEMA_VERSION).fillna(True) | rec["wall_offset_ns"].isna()]
        bad = bad if len(bad) else rec[rec["rec"].isna()]
        if len(bad):
            r = bad.iloc[0]
            raise BadTrace(
                f"{self.root}: recording {_v(r['rec'])} of host {_v(r['host'])}: schema version "
                f"{_v(r['schema_version'])} or no clock offset"
            )
        dup = rec["rec"].value_counts()
        if len(dup) and dup.iloc[0] > 1:
            raise BadTrace(f"{self.root}: recording {dup.index[0]} is in the dataset {int(dup.iloc[0])} times")
        return rec

    def _scan(self, name: str) -> None:
        import pyarrow as pa

        parts, schemas = [], []
        for f in sorted(glob.glob(_files(self.root, name, 2))):
            p = Path(f)
            m = _PART.match(p.name)
            if not m or m.group(1) not in self.recs:
                continue  # not of a recorded recording: an export under way, or not ours
            schema, rows = self._footer(f)
            host = unquote(p.parent.parent.name.removeprefix("host="))
            try:
                import datetime

                date = datetime.date.fromisoformat(p.parent.name.removeprefix("date="))
            except ValueError:
                raise BadTrace(f"{self.root}: {f}: not a date partition") from None
            parts.append(Part(f, host, date, m.group(1), rows))
            schemas.append(schema.remove_metadata())
        if schemas:
            try:
                schema = pa.unify_schemas(schemas)
            except pa.ArrowException as e:
                raise BadTrace(f"{self.root}: cannot read the dataset ({type(e).__name__}: {e})") from None
        else:
            schema = _empty(name).schema
        self.parts[name] = parts
        self.schemas[name] = pa.schema([f for f in schema if f.name not in ("date", "host")])

    def _check_counts(self, name: str) -> None:
        found: dict[str, int] = {}
        for p in self.parts[name]:
            found[p.rec] = found.get(p.rec, 0) + p.rows
        for r in self.recordings.sort_values(["host", "rec"]).itertuples():
            want = _v(getattr(r, name))
            if want != found.get(r.rec, 0):
                raise BadTrace(
                    f"{self.root}: recording {r.rec} of host {r.host}: {want} {name} recorded, "
                    f"{found.get(r.rec, 0)} found (a partition file is missing or was changed)"
                )

    def frame(self, name: str, columns: list[str] | None = None):
        """events or incidents as a Dask dataframe, one partition per part file (columns: only
        those, read from the files and no more)."""
        import dask.dataframe as dd

        if name == "recordings":
            return dd.from_pandas(self.recordings.drop(columns="ord"), npartitions=1)
        schema = self.schemas[name]
        meta = _read_meta(schema, columns, name)
        if not self.parts[name]:
            return dd.from_pandas(meta, npartitions=1)
        cols = None if columns is None else tuple(columns)
        return dd.from_map(
            _read_part,
            self.parts[name],
            schema=schema,
            columns=cols,
            root=str(self.root),
            meta=meta,
            enforce_metadata=False,
            label=f"rsttrace-{name}",
        )


def _read_meta(schema, columns, name):
    import pyarrow as pa

    fields = [f for f in schema if columns is None or f.name in columns]
    extra = [("date", pa.date32()), ("host", pa.string())]
    fields += [pa.field(n, t) for n, t in extra if columns is None or n in columns]
    return _arrow_types(pa.schema(fields).empty_table())


def _v(x):
    from .frame import value

    return value(x)


# -- merging ------------------------------------------------------------------------------------


def _tag(df, recs: dict, victim_cols: list[str]):
    """Each incident with its recording's place (_src), clock offset (_off) and label, its key _k,
    which half it is, and the wall-clock times the join compares."""
    import pandas as pd
    import pyarrow as pa

    df = df.copy()
    info = [recs[r] for r in df["rec"].astype(object)]
    df["_src"] = pd.Series([x[0] for x in info], index=df.index, dtype="int64")
    df["_off"] = pd.Series([x[1] for x in info], index=df.index, dtype="int64")
    df["_label"] = pd.Series([x[2] for x in info], index=df.index, dtype=df["rec"].dtype)
    i64 = pd.ArrowDtype(pa.int64())  # keys and times stay integers through joins that leave nulls
    df["_k"] = (df["_src"] * (1 << SEQ_BITS) + df["seq"].to_numpy(dtype="int64")).astype(i64)
    victim = pd.Series(False, index=df.index)
    for c in victim_cols:
        victim = victim | df[c].notna().to_numpy()
    df["_sender"] = ~victim
    df["_receiver"] = victim & df["culprit_pid"].isna().to_numpy() & df["reset_ns"].isna().to_numpy()
    # The sender's close or RST (else its first event); the receiver's first event: wall clock.
    t = df[["close_ns", "reset_ns"]].min(axis=1, skipna=True).fillna(df["first_ns"])
    df["_t"] = (t.to_numpy(dtype="int64") + df["_off"]).astype(i64)
    df["_tr"] = (df["first_ns"].to_numpy(dtype="int64") + df["_off"]).astype(i64)
    for c in KEYS:  # null-safe keys (IS NOT DISTINCT FROM): a null joins a null
        df["_" + c] = df[c].astype(object).where(df[c].notna(), None).map(lambda x: "\0" if x is None else str(x))
    return df


def _pairs(m, tolerance_ns: int):
    """Candidates (i: sender's _k, j: receiver's _k, skew, a = |skew|) of a 4-tuple join's rows:
    different recordings, wall-clock times within the tolerance."""
    import pandas as pd

    m = m[(m["_src_s"] != m["_src_r"]).to_numpy(dtype=bool)]
    out = pd.DataFrame({"i": m["_k_s"], "j": m["_k_r"], "skew": m["_tr"] - m["_t"]})
    out["a"] = out["skew"].abs()
    return out[out["a"] <= tolerance_ns]


def _best(df, key: str, other: str):
    """Per `key`, its candidate of least (|skew|, other key): all of a key's rows are in this
    partition (shuffled on key)."""
    return df.sort_values(["a", other], kind="stable").drop_duplicates(key)


def _without(df, col: str, taken):
    """df's rows whose `col` is not among `taken`'s values (an anti-join)."""
    t = taken[[col]].assign(_taken=True)
    m = df.merge(t, on=col, how="left")
    return m[m["_taken"].isna()].drop(columns="_taken")


def _assemble(df, plan: list[tuple[str, str]], hosts: dict):
    """The merged table's columns (tracer.fleet.merged_plan) of joined rows: s (the incident,
    unprefixed), m (skew, j: the match), r (the receiver's half, prefixed _r_)."""
    import pandas as pd
    import pyarrow as pa

    joined = df["j"].notna()
    out = pd.DataFrame(index=df.index)
    out["rec"] = df["rec"]
    out["source_id"] = df["id"]
    out["src"] = df["_src"].astype(pd.ArrowDtype(pa.int32()))
    out["wall_ns"] = df["first_ns"] + df["_off"]
    for c, how in plan:
        if how == "own":
            out[c] = df[c]
            continue
        if how == "victim":
            mine, theirs = df[c], df["_r_" + c]
        else:
            theirs = df["skew"] if c == "clock_skew_ns" else df["_r_" + MERGE_FROM[c]]
            mine = df[c] if how == "set" else pd.Series(pd.NA, index=df.index, dtype=theirs.dtype)
        out[c] = mine.where(~joined, theirs.astype(mine.dtype) if how == "victim" else theirs)
        if how != "victim":
            out[c] = out[c].astype(theirs.dtype)
    vrec = out["victim_rec"].astype(object)
    own = df["host"].astype(object)
    out["victim_host"] = pd.Series(
        [hosts.get(v, h) if v is not None and v is not pd.NA else h for v, h in zip(vrec, own)],
        index=df.index,
        dtype=pd.ArrowDtype(pa.string()),
    )
    return out


def _range_key(df, base: int):
    df = df.copy()
    df["_w"] = (df["wall_ns"].to_numpy(dtype="int64") - base) // 1024
    return df


def _in_order(df):
    return df.sort_values(["wall_ns", "src", "source_id"], kind="stable").drop(columns="_w")


def _number(df, offsets, partition_info=None):
    import pandas as pd
    import pyarrow as pa

    base = offsets[partition_info["number"]] if partition_info else 0
    df = df.copy()
    df.insert(0, "id", pd.Series(range(base + 1, base + 1 + len(df)), index=df.index, dtype=pd.ArrowDtype(pa.int64())))
    return df


@dataclass
class Merged:
    frame: object  # the merged incidents, a Dask dataframe (persisted), sorted and numbered by id
    stats: dict
    lengths: list[int]  # rows per partition, in id order


def merge_dask(ds: Dataset, tolerance_ns: int) -> Merged:
    """The cross-host join of tracer/fleet.py's merge_duckdb (and so of tracer/merge.py), as Dask
    dataframes; the same incidents, columns and stats."""
    import dask
    import dask.dataframe as dd

    inc = ds.frame("incidents")
    cols = list(inc.columns)
    victim_cols = [c for c in cols if victim_field(c)]
    rec = ds.recordings
    recs = {
        r: (int(o), int(w), _v(lb)) for r, o, w, lb in zip(rec["rec"], rec["ord"], rec["wall_offset_ns"], rec["label"])
    }
    hosts = {r: _v(h) for r, h in zip(rec["rec"], rec["host"])}
    meta = _tag(inc._meta, recs, victim_cols)
    inc = inc.map_partitions(_tag, recs, victim_cols, meta=meta).persist()
    keys = ["_" + c for c in KEYS]
    halves = [inc[inc[flag]][["_k", "_src", t, *keys]] for flag, t in (("_sender", "_t"), ("_receiver", "_tr"))]
    cand = halves[0].merge(halves[1], on=keys, suffixes=("_s", "_r"), how="inner")
    cmeta = _pairs(cand._meta, tolerance_ns)
    cand = cand.map_partitions(_pairs, tolerance_ns, meta=cmeta).persist()
    picks = []
    while True:
        bi = cand.shuffle(on="i").map_partitions(_best, "i", "j", meta=cmeta)
        bj = cand.shuffle(on="j").map_partitions(_best, "j", "i", meta=cmeta)
        pick = bi.merge(bj[["i", "j"]], on=["i", "j"], how="inner")[["i", "j", "skew"]].persist()
        if not len(pick):
            break
        picks.append(pick)
        cand = _without(_without(cand, "i", pick), "j", pick).persist()
    if picks:
        match = dd.concat(picks).persist()
    else:
        match = dd.from_pandas(cmeta[["i", "j", "skew"]], npartitions=1)
    n_m = len(match)
    # The merged incidents: every incident but the receivers absorbed by a match; a sender with a
    # match takes its receiver's victim columns.
    kept = _without(inc, "_k", match[["j"]].rename(columns={"j": "_k"}))
    kept = kept.merge(match.rename(columns={"i": "_k"}), on="_k", how="left")
    rcols = ["_k", *victim_cols, *MERGE_FROM.values()]
    rside = inc[rcols].rename(columns={c: "_r_" + c for c in rcols})
    joined = kept.merge(rside, left_on="j", right_on="_r__k", how="left")
    plan = merged_plan(cols)
    ameta = _assemble(joined._meta, plan, hosts)
    out = joined.map_partitions(_assemble, plan, hosts, meta=ameta)
    # By (wall_ns, src, source_id). Dask finds its range partitions through float64 quantiles,
    # which round wall-clock nanoseconds (about 1.8e18) and put the smallest rows last: it ranges
    # on microseconds from the first incident instead (exact in a float64), and each range is
    # then sorted exactly.
    base = int(_v(out["wall_ns"].min().compute()) or 0)
    out = out.map_partitions(_range_key, base, meta=_range_key(ameta, 0)).sort_values("_w")
    out = out.map_partitions(_in_order, meta=ameta).persist()
    lengths = [int(x) for x in out.map_partitions(len).compute()]
    offsets = [sum(lengths[:k]) for k in range(len(lengths))]
    nmeta = _number(ameta, [0])
    out = out.map_partitions(_number, offsets, meta=nmeta)
    names = [*MERGED_HEAD, *(c for c, _ in plan), *MERGED_TAIL]
    out = out[names].persist()
    n_s, n_r = dask.compute(inc["_sender"].sum(), inc["_receiver"].sum())
    stats = {
        "inputs": len(rec),
        "recordings": len(rec),
        "incidents": sum(lengths),
        "cross_host": n_m,
        "tolerance_ns": tolerance_ns,
        "unmatched_senders": int(n_s) - n_m,
        "unmatched_receivers": int(n_r) - n_m,
    }
    return Merged(out, stats, lengths)


# -- the merged rows out ------------------------------------------------------------------------


def _arrow(df):
    import pyarrow as pa

    return pa.Table.from_pandas(df, preserve_index=False)


def partitions(m: Merged):
    """The merged incidents as Arrow tables, a partition at a time, in id order."""
    for k, n in enumerate(m.lengths):
        if n:
            yield _arrow(m.frame.partitions[k].compute())


def merged_rows(m: Merged, first_id: int = 1):
    """The merged incidents from id first_id on as flat rows (the Python values the DuckDB
    engine's rows have), by id, a partition at a time (never all in memory)."""
    base = 0
    for k, n in enumerate(m.lengths):
        if n and base + n >= first_id:
            t = _arrow(m.frame.partitions[k].compute())
            t = t.drop_columns([c for c in ("time", "close_time", "reset_time") if c in t.column_names])
            for row in t.slice(max(0, first_id - 1 - base)).to_pylist():
                yield row
        base += n


def write_merged(root: Path, m: Merged, path: Path) -> None:
    """The merged incidents as one Parquet table at path (as tracer.fleet.write_merged)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .errors import OutputFailed
    from .tracefile import open_output

    path = Path(path)
    check_merged_output(root, path)
    target = open_output(path, 0o600)
    try:
        schema = _arrow(m.frame._meta).schema
        with pq.ParquetWriter(target.file, schema) as w:
            for t in partitions(m):
                w.write_table(t.cast(schema))
    except (OSError, pa.ArrowException) as e:
        target.discard()
        raise OutputFailed(f"cannot write {path}: {getattr(e, 'strerror', None) or e}") from None
    except BaseException:
        target.discard()
        raise
    target.commit()


def last_rows(m: Merged, limit: int) -> list[dict]:
    """The last `limit` merged incidents (0: all), by id (= by wall-clock time, recording, id)."""
    n = sum(m.lengths)
    return list(merged_rows(m, 1 if not limit else max(1, n - int(limit) + 1)))


# -- report: the aggregations as Dask -------------------------------------------------------------


def _ordered(counts, names: list[str], keys: list[tuple[str, bool]]):
    """A small computed aggregate (pandas), ordered as the DuckDB engine's ORDER BY."""
    df = counts.reset_index()
    df.columns = names
    return df.sort_values([k for k, _ in keys], ascending=[a for _, a in keys], kind="stable", na_position="last")


def _counts(series) -> dict:
    """{value: count} of a computed value_counts, by count (descending) then value; as
    tracer.fleet's counts() (a null value is named None)."""
    df = _ordered(series, ["k", "n"], [("n", False), ("k", True)])
    return {str(_v(k)): int(n) for k, n in zip(df["k"], df["n"]) if n}


def summarize(ds: Dataset, tolerance_ns: int) -> tuple[dict, Merged]:
    """What tracer.fleet.summarize says, computed by Dask over the merged incidents and events:
    the same keys, numbers and order. Also the merge, for the incident rows that follow it."""
    import dask
    import pandas as pd

    from .report import NO_SIGPIPE, NO_VICTIM, _clock

    m = merge_dask(ds, tolerance_ns)
    mg = m.frame
    ev = ds.frame("events", ["kind"])
    victim = ~mg["victim_addr"].isna()
    fate = mg["victim_sigpipe"].fillna(NO_SIGPIPE).where(victim, NO_VICTIM)
    culprit = mg["culprit_comm"].fillna("?")
    vcomm = mg["victim_comm"].fillna("?")
    cg = mg.assign(_c=culprit).groupby("_c")
    vg = mg.assign(_c=vcomm)[victim].groupby("_c")
    ages = mg["close_wait_age_ns"].dropna()
    aggs = {
        "n": mg["wall_ns"].count(),
        "first": mg["wall_ns"].min(),
        "last": mg["wall_ns"].max(),
        "bytes": mg["bytes_discarded"].sum(),
        "cross": mg["clock_skew_ns"].count(),
        "c_n": cg.size(),
        "c_b": cg["bytes_discarded"].sum(),
        "c_p": cg["culprit_pid"].nunique(),
        "v_n": vg.size(),
        "v_p": vg["victim_pid"].nunique(),
        "v_f": mg.assign(_c=vcomm, _f=fate)[victim].groupby(["_c", "_f"]).size(),
        "events": ev["kind"].value_counts(dropna=False),
        "kinds": mg["kind"].value_counts(dropna=False),
        "impact": mg["impact"].dropna().value_counts(),
        "fates": fate.value_counts(dropna=False),
        "ages": ages.count(),
        "age_min": ages.min(),
        "age_max": ages.max(),
    }
    got = dict(zip(aggs, dask.compute(*aggs.values())))
    n_ages = int(got["ages"])
    median = int(ages.nsmallest(n_ages // 2 + 1).max().compute()) if n_ages else None
    c = pd.DataFrame({"n": got["c_n"], "b": got["c_b"], "p": got["c_p"]})
    c = c.rename_axis("c").reset_index().sort_values(["b", "n", "c"], ascending=[False, False, True], kind="stable")
    fates: dict[str, dict] = {}
    f = _ordered(got["v_f"], ["c", "f", "n"], [("n", False), ("f", True)])
    for vc, fv, n in zip(f["c"], f["f"], f["n"]):
        fates.setdefault(str(vc), {})[str(fv)] = int(n)
    v = pd.DataFrame({"n": got["v_n"], "p": got["v_p"]}).rename_axis("c").reset_index()
    v = v.sort_values(["n", "c"], ascending=[False, True], kind="stable")
    rec = ds.recordings
    n_inc = int(got["n"])
    summary = {
        "files": [str(ds.root)],
        "sources": [
            {"label": _v(r.label), "host": _v(r.host), "kernel": _v(r.kernel), "file": _v(r.file)}
            for r in rec.itertuples()
        ],
        "events": int(got["events"].sum()),
        "events_by_kind": _counts(got["events"]),
        "incidents": n_inc,
        "first_incident": _clock(int(got["first"])) if n_inc else None,
        "last_incident": _clock(int(got["last"])) if n_inc else None,
        "by_kind": _counts(got["kinds"]),
        "by_impact": _counts(got["impact"]) if "impact" in mg.columns else {},
        "by_culprit": [
            {"comm": str(k), "incidents": int(n), "bytes_discarded": int(_v(b) or 0), "pids": int(p)}
            for k, n, b, p in zip(c["c"], c["n"], c["b"], c["p"])
        ],
        "by_victim": [
            {"comm": str(k), "incidents": int(n), "pids": int(p), "fates": fates[str(k)]}
            for k, n, p in zip(v["c"], v["n"], v["p"])
        ],
        "bytes_discarded": int(_v(got["bytes"]) or 0),
        "signal_fates": _counts(got["fates"]),
        "close_wait_ages_ns": {
            "count": n_ages,
            "min": int(got["age_min"]),
            "median": median,
            "max": int(got["age_max"]),
        }
        if n_ages
        else None,
        "cross_host": int(got["cross"]),
    }
    summary["recorder"], summary["warnings"] = recorder_totals(zip(map(_v, rec["summaries"]), map(_v, rec["warnings"])))
    return summary, m


# -- tracer.dataset(engine="dask") ----------------------------------------------------------------


def open_table(root, table: str, tolerance: float):
    """One table of the dataset as a lazy Dask dataframe (merged: the join runs first, on the
    current scheduler, and the merged frame is persisted)."""
    ds = Dataset(Path(root))
    if table == "merged":
        return merge_dask(ds, int(tolerance * 1e9)).frame
    return ds.frame(table)
