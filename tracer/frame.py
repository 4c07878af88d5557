"""pandas views of traces: load() reads JSON Lines or Parquet into typed events and incidents tables."""

from __future__ import annotations

import functools
import io
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from .errors import BadTrace, OutputFailed, RsttraceError
from .events import EVENT_COLUMNS
from .tracefile import Reader, check_header, recordings

try:  # several times faster on big traces; the standard library otherwise
    from orjson import loads as _loads
except ImportError:
    from json import loads as _loads

if TYPE_CHECKING:
    import pandas as pd

NL = b"\n"
INCIDENT_MARK = b'"type":"incident"'
EVENT_MARK = b'"type":"event"'  # how TraceWriter writes it; other spellings take the slow path
# Event fields and their column types (tracer/events.py Event). Unknown fields are kept too.
EVENT_INTS = {k: t for k, t in EVENT_COLUMNS.items() if t in ("int64", "int32", "uint64")}
EVENT_STRS = tuple(k for k, t in EVENT_COLUMNS.items() if t == "string")
EVENT_ORDER = tuple(EVENT_COLUMNS)
INCIDENT_INTS = (
    "id",
    "culprit_pid",
    "bytes_discarded",
    "netns",
    "lport",
    "rport",
    "victim_pid",
    "victim_netns",
    "victim_port",
    "victim_exit_signal",
    "victim_error_count",
    "first_ns",
    "close_ns",
    "reset_ns",
    "last_ns",
    "wall_ns",
    "close_wait_age_ns",
    "clock_skew_ns",
)
INCIDENT_ORDER = (
    "trace",
    "host",
    "id",
    "time",
    "kind",
    "reason",
    "culprit_pid",
    "culprit_comm",
    "bytes_discarded",
    "family",
    "netns",
    "laddr",
    "lport",
    "raddr",
    "rport",
    "state",
    "victim_trace",
    "victim_host",
    "victim_pid",
    "victim_comm",
    "victim_netns",
    "victim_addr",
    "victim_port",
    "victim_state",
    "victim_sk_err",
    "victim_errors",
    "victim_error_count",
    "victim_sigpipe",
    "victim_exit_signal",
    "close_wait_age_ns",
    "first_ns",
    "close_ns",
    "reset_ns",
    "last_ns",
    "close_time",
    "reset_time",
)
PARQUET_META = b"rsttrace"
# Incident columns computed from others (and from the recordings' headers) when loading.
DERIVED = ("trace", "host", "victim_host", "victim_trace", "time", "close_time", "reset_time")


def _need():
    try:
        import pandas  # noqa: F401
        import pyarrow  # noqa: F401
    except ImportError as e:
        raise RsttraceError(
            f"reading traces as tables needs pandas and pyarrow ({e.name} is missing): pip install 'rsttrace[analysis]'"
        ) from None


@dataclass
class Trace:
    """Events and incidents of one or more traces; `sources` has one entry per recording."""

    events: "pd.DataFrame"
    incidents: "pd.DataFrame"
    sources: list[dict] = field(default_factory=list)
    summaries: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"<Trace {len(self.events)} events, {len(self.incidents)} incidents from {len(self.files)} file(s)>"


class _Acc:
    """What has been read so far, across files; turned into a Trace at the end or on error."""

    def __init__(self, event_columns: Iterable[str] | None, strict: bool = False) -> None:
        self.strict = strict
        self.event_columns = None if event_columns is None else list(event_columns)
        self.event_tables: list = []
        self.incident_tables: list = []
        self.sources: list[dict] = []
        self.summaries: list[dict] = []
        self.warnings: list[str] = []
        self.files: list[Path] = []

    def add_source(self, info: dict) -> int:
        label = info["label"]
        taken = {s["label"] for s in self.sources}
        n = 2
        while label in taken:
            label, n = f"{info['label']}#{n}", n + 1
        self.sources.append(dict(info, label=label))
        return len(self.sources) - 1


def _sources_of(head: dict, path: Path, acc: _Acc) -> list[int]:
    """Global source indices for a file's local `src` numbers (merged files have several)."""
    return [acc.add_source(r) for r in recordings(head, path)]


# -- events -------------------------------------------------------------------------------


def _event_schema(columns: list[str] | None):
    import pyarrow as pa

    types = {"type": pa.string(), "src": pa.int32(), "flags": pa.list_(pa.string())}
    types.update({k: getattr(pa, t)() for k, t in EVENT_INTS.items()})
    types.update({k: pa.string() for k in EVENT_STRS})
    names = list(types) if columns is None else ["src", *[c for c in columns if c in types]]
    return pa.schema([(n, types[n]) for n in names])


def _events_fast(lines: list[bytes], schema, extras: bool):
    import pyarrow as pa
    import pyarrow.json as pj

    if not lines:
        return pa.Table.from_pylist([], schema=schema)
    # Unknown fields are inferred, not dropped: a newer tracer's event fields stay visible.
    behaviour = "infer" if extras else "ignore"
    table = pj.read_json(
        io.BytesIO(b"\n".join(lines)),
        read_options=pj.ReadOptions(block_size=16 << 20),
        parse_options=pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior=behaviour),
    )
    if table.num_rows != len(lines):
        raise ValueError("row count")
    for name in ("ts_ns", "kind"):
        if name in table.column_names and table.column(name).null_count:
            raise ValueError(f"null {name}")
    return table


def _rows_table(rows: list[dict], schema, extras: bool):
    """Known fields typed by the schema; with `extras`, unknown fields inferred (as the fast reader)."""
    import pyarrow as pa

    table = pa.Table.from_pylist(rows, schema=schema)
    if extras:
        names: dict[str, None] = {}
        for r in rows:
            names.update(dict.fromkeys(k for k in r if k not in schema.names and k != "type"))
        for name in names:
            vals = [r.get(name) for r in rows]
            if any(isinstance(v, (list, dict)) for v in vals):  # tables stay flat: nested -> JSON text
                vals = [None if v is None else v if isinstance(v, str) else json.dumps(v) for v in vals]
            try:
                col = pa.array(vals)
            except (pa.ArrowException, OverflowError, TypeError, ValueError):
                col = pa.array([None if v is None else json.dumps(v) for v in vals], pa.string())
            table = table.append_column(name, col)
    return table


def _finish_events_table(table, local_src: list[int]):
    """Per-file table -> common shape: global src, flags as one string."""
    import pyarrow as pa
    import pyarrow.compute as pc

    src = (
        table.column("src").fill_null(0) if "src" in table.column_names else pa.array([0] * table.num_rows, pa.int32())
    )
    if pc.max(src).as_py() is not None and pc.max(src).as_py() >= len(local_src):
        raise ValueError("src")
    table = table.drop_columns([c for c in ("src", "type") if c in table.column_names])
    table = table.add_column(0, "src", pc.take(pa.array(local_src, pa.int32()), src))
    if "flags" in table.column_names and pa.types.is_list(table.schema.field("flags").type):
        i = table.column_names.index("flags")
        table = table.set_column(i, "flags", pc.binary_join(table.column("flags").fill_null([]), ","))
    return table


# -- incidents ------------------------------------------------------------------------------


def flatten_incident(inc: dict) -> dict:
    """One incident (Incident.to_dict schema, plus any newer fields) as one flat row."""
    row: dict = {}
    for k, v in inc.items():
        if k == "type" or (k == "victim" and v is None):  # no victim: its columns stay null
            continue
        if k == "timestamps" and isinstance(v, dict):
            row.update(v)
        elif k in ("local", "remote") and isinstance(v, dict):
            p = "l" if k == "local" else "r"
            row[p + "addr"], row[p + "port"] = v.get("addr"), v.get("port")
        elif k == "victim" and isinstance(v, dict):
            for vk, vv in v.items():
                if vk == "errors":
                    row["victim_errors"] = ", ".join(f"{e.get('call')} {e.get('errno')}" for e in vv or [])
                    row["victim_error_count"] = len(vv or [])
                elif isinstance(vv, (dict, list)):
                    row["victim_" + vk] = json.dumps(vv, separators=(",", ":"))
                else:
                    row["victim_" + vk] = vv
        elif k == "cgroups" and isinstance(v, dict):
            # Each side's cgroup and container as columns of their own: culprit_container, ...
            for side, cg in v.items():
                if isinstance(cg, dict):
                    for ck, cv in cg.items():
                        name = ck if ck in ("container", "runtime", "pod_uid") else f"cgroup_{ck}"
                        row[f"{side}_{name}"] = cv
        elif isinstance(v, dict):
            for sk, sv in v.items():
                row[f"{k}_{sk}"] = json.dumps(sv, separators=(",", ":")) if isinstance(sv, (dict, list)) else sv
        elif isinstance(v, list):
            row[k] = json.dumps(v, separators=(",", ":"))
        else:
            row[k] = v
    if "close_wait_age_ns" not in row and "age_ns" in row:
        row["close_wait_age_ns"] = row["age_ns"]
    return row


def value(x):
    """A flat-row value, with pandas' missing markers (NA, NaN, NaT) as None and whole floats
    (an integer column with gaps) as ints."""
    t = type(x)
    if x is None or t is str or t is int or t is bool:  # the common cases, first
        return x
    if t is float:
        return None if x != x else int(x) if x.is_integer() else x
    try:
        if x != x:  # NaN, NaT
            return None
    except (TypeError, ValueError):  # pd.NA refuses comparison
        return None
    if type(x).__name__ in ("NAType", "NaTType"):
        return None
    if isinstance(x, float) and x.is_integer():
        return int(x)
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):  # numpy scalars
        return value(x.item())
    return x


_ENDS = ("laddr", "lport", "raddr", "rport")
_SIDES = ("culprit", "victim", "owner")


@functools.lru_cache(maxsize=64)
def _row_plan(keys: tuple[str, ...]) -> tuple[tuple[str, ...], dict[str, tuple[tuple[str, str], ...]]]:
    """Which flat columns are the incident's own and which belong to a side (culprit_pid ->
    culprit.pid), worked out once per set of columns."""
    top, sides = [], {s: [] for s in _SIDES}
    for k in keys:
        if k in _ENDS:
            continue
        side, _, field = k.partition("_")
        if side in sides and field and not field.startswith(("cgroup_", "container", "runtime", "pod_uid")):
            sides[side].append((k, field))
        else:
            top.append(k)
    return tuple(top), {s: tuple(v) for s, v in sides.items()}


def incident_of_row(row: dict) -> dict:
    """A flat row (flatten_incident, or a row of load().incidents) as the incident it came from,
    as far as the renderer (tracer/render.py) needs it: so that `report` and `merge` print the
    same text as the live chain, from the same code."""
    top, side_cols = _row_plan(tuple(row))
    get = row.get
    inc: dict = {k: value(row[k]) for k in top}
    inc["local"] = {"addr": value(get("laddr")), "port": value(get("lport"))}
    inc["remote"] = {"addr": value(get("raddr")), "port": value(get("rport"))}
    for name, cols in side_cols.items():
        side = {field: value(row[k]) for k, field in cols}
        if name == "victim" and side.get("addr") is None and side.get("pid") is None:
            inc[name] = None
            continue
        if name != "victim" and not side.get("pid"):
            inc[name] = None
            continue
        errors = side.get("errors")
        if isinstance(errors, str):
            if errors.startswith("["):  # the generic flattening: JSON text
                side["errors"] = json.loads(errors)
            else:  # "write ECONNRESET, write EPIPE"
                side["errors"] = [dict(zip(("call", "errno"), e.split(" ", 1))) for e in errors.split(", ") if e]
        inc[name] = side if name != "culprit" else {k: v for k, v in side.items() if v is not None}
    return inc


def _column_of(vals: list):
    """An arrow column for values of one field; mixed or odd values are kept as JSON text."""
    import pyarrow as pa

    try:
        return pa.array(vals)
    except (pa.ArrowException, OverflowError, TypeError, ValueError):
        return pa.array([None if v is None else v if isinstance(v, str) else json.dumps(v) for v in vals], pa.string())


def _incidents_slow(rows: list[dict]):
    """Flat rows (flatten_incident) as an arrow table."""
    import pyarrow as pa

    names: dict[str, None] = {}
    for r in rows:
        names.update(dict.fromkeys(r))
    return pa.table({c: _column_of([r.get(c) for r in rows]) for c in names}) if rows else pa.table({})


def _incidents_fast(lines: list[bytes]):
    """The same flat table as _incidents_slow, parsed and flattened by arrow; ValueError when
    the lines hold something only the slow path handles."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as pj

    table = pj.read_json(io.BytesIO(b"\n".join(lines)), read_options=pj.ReadOptions(block_size=16 << 20))
    if table.num_rows != len(lines):
        raise ValueError("row count")
    cols: dict = {}
    for name in table.column_names:
        col = table.column(name)
        if name == "type":
            if pc.any(pc.not_equal(col, "incident")).as_py():
                raise ValueError("not all incidents")
            continue
        if pa.types.is_list(col.type):
            raise ValueError("list")
        if not pa.types.is_struct(col.type):
            cols[name] = col
            continue
        if name == "cgroups":
            # As flatten_incident: culprit_cgroup_id, culprit_container, ... (no side: no column)
            for i, side in enumerate(col.flatten()):
                side_name = col.type.field(i).name
                if not pa.types.is_struct(side.type):
                    if side.null_count != len(side):
                        raise ValueError("nested")
                    continue
                for j, leaf in enumerate(side.flatten()):
                    ck = side.type.field(j).name
                    cols[f"{side_name}_{ck if ck in ('container', 'runtime', 'pod_uid') else 'cgroup_' + ck}"] = leaf
            continue
        prefix = {"timestamps": "", "victim": "victim_"}.get(name, name + "_")
        for i, child in enumerate(col.flatten()):
            field = col.type.field(i).name
            if name in ("local", "remote"):
                key = ("l" if name == "local" else "r") + field
            else:
                key = prefix + field
            if name == "victim" and field == "errors":
                cols["victim_errors"], cols["victim_error_count"] = _errors_text(child)
            elif pa.types.is_struct(child.type) or pa.types.is_list(child.type):
                raise ValueError("nested")
            else:
                cols[key] = child
    if "close_wait_age_ns" not in cols and "age_ns" in cols:
        cols["close_wait_age_ns"] = cols["age_ns"]
    return pa.table(cols)


def _errors_text(errors):
    """victim.errors (list of {call, errno, ...}) -> "write ECONNRESET, write EPIPE", and the count."""
    import pyarrow as pa
    import pyarrow.compute as pc

    texts, counts = [], []
    for chunk in errors.chunks:
        if pa.types.is_null(chunk.type.value_type):  # every list empty
            texts.append(pc.if_else(chunk.is_null(), pa.scalar(None, pa.string()), ""))
            counts.append(pc.list_value_length(chunk))
            continue
        values = chunk.values
        words = pc.binary_join_element_wise(values.field("call"), values.field("errno"), " ")
        lists = pa.ListArray.from_arrays(chunk.offsets, words, mask=chunk.is_null())
        texts.append(pc.binary_join(lists, ", "))
        counts.append(pc.list_value_length(chunk))
    return pa.chunked_array(texts, pa.string()), pa.chunked_array(counts, pa.int32())


def _finish_incidents_table(table, local_src: list[int]):
    """Per-file table -> common shape: src and victim_src as global recording numbers."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = table.num_rows
    index = pa.array(local_src, pa.int32())
    for name in ("src", "victim_src"):
        if name in table.column_names:
            col = table.column(name).cast(pa.int32())
            if pc.max(col).as_py() is not None and pc.max(col).as_py() >= len(local_src):
                raise BadTrace(f"incident {name} names no recording of this trace")
            mapped = pc.take(index, col)
            table = table.drop_columns([name])
        else:
            mapped = pa.array([local_src[0]] * n if name == "src" else [None] * n, pa.int32())
        table = table.append_column(name, mapped)
    return table


# -- files ----------------------------------------------------------------------------------


def _read_jsonl(path: Path, acc: _Acc) -> None:
    """One JSON Lines trace. Every line is validated once, at the edge (tracefile.Reader):
    a bad line is skipped and named in the warnings (strict: BadTrace), so nothing
    malformed reaches pyarrow or pandas and no valid line is lost."""
    reader = Reader(path, strict=acc.strict)
    records = reader.records()
    try:
        _lineno, _raw, head = next(records)
        local_src: list[int] | None = None
        event_lines: list[bytes] = []
        incident_lines: list[bytes] = []
        others: list[dict] = []
        n_src = len(recordings(head, path))
        for lineno, raw, rec in records:
            kind = rec["type"]
            src = rec.get("src")
            if kind in ("event", "incident") and src is not None and src >= n_src:
                reader._bad(lineno, f"{kind} src {src} names no recording of this trace")
                continue
            if kind == "incident":
                victim = rec.get("victim") or {}
                if victim.get("src") is not None and victim["src"] >= n_src:
                    reader._bad(lineno, f"incident victim src {victim['src']} names no recording of this trace")
                    continue
            if kind == "event":
                event_lines.append(raw)
            elif kind == "incident":
                incident_lines.append(raw)
                others.append(rec)
            else:
                others.append(rec)
    except BadTrace as e:
        if reader.header is None:
            raise
        # strict: keep what came before the bad line (load's `partial`)
        local_src = _sources_of(reader.header, path, acc)
        acc.files.append(path)
        _add_jsonl_tables(acc, local_src, event_lines, incident_lines, others)
        raise e from None
    acc.files.append(path)
    local_src = _sources_of(head, path, acc)
    _add_jsonl_tables(acc, local_src, event_lines, incident_lines, others)
    acc.summaries.extend(dict(r, file=str(path)) for r in others if r["type"] == "summary")
    acc.warnings.extend(reader.warnings)
    if not any(r["type"] == "summary" for r in others):
        acc.warnings.append(
            f"{path}: no summary line: the recording was cut short (killed?); "
            "incidents still open at that moment are not in it"
        )


def _add_jsonl_tables(
    acc: _Acc, local_src: list[int], event_lines: list[bytes], incident_lines: list[bytes], others: list[dict]
) -> None:
    """Validated lines -> tables: arrow's JSON reader (fast), or rows built in Python."""
    import pyarrow as pa

    schema = _event_schema(acc.event_columns)
    extras = acc.event_columns is None
    try:
        raw = _events_fast(event_lines, schema, extras)
        if any(
            pa.types.is_nested(f.type) or pa.types.is_null(f.type) for f in raw.schema if f.name not in schema.names
        ):
            raise ValueError("nested or untyped unknown field")  # the precise path keeps it as text
    except (ValueError, TypeError, OverflowError, pa.ArrowException):
        raw = _rows_table([_loads(x) for x in event_lines], schema, extras)
    acc.event_tables.append(_finish_events_table(raw, local_src))
    incidents = [r for r in others if r["type"] == "incident"]
    table = None
    if incidents and len(incident_lines) == len(incidents):
        try:
            table = _incidents_fast(incident_lines)
        except (ValueError, TypeError, OverflowError, pa.ArrowException):
            table = None
    if table is None:
        table = _incidents_slow([flatten_incident(r) for r in incidents])
    acc.incident_tables.append(_finish_incidents_table(table, local_src))


def _parquet_pair(path: Path) -> tuple[Path, Path]:
    name = path.name
    for suffix in (".events.parquet", ".incidents.parquet"):
        if name.endswith(suffix):
            stem = name[: -len(suffix)]
            return path.with_name(stem + ".events.parquet"), path.with_name(stem + ".incidents.parquet")
    return path.with_name(name + ".events.parquet"), path.with_name(name + ".incidents.parquet")


def _check_regular(path: Path) -> None:
    try:
        st = os.stat(path)
    except OSError as e:
        raise BadTrace(f"{path}: {e.strerror}") from None
    except ValueError:
        raise BadTrace(f"{path}: invalid file name") from None
    if not stat.S_ISREG(st.st_mode):
        raise BadTrace(f"{path}: not a regular file (a FIFO, device or socket is not a trace)")


def _parquet_meta(path: Path, meta: bytes | None) -> dict:
    """The rsttrace metadata of an exported pair, validated like a header line."""
    if meta is None:
        raise BadTrace(f"{path}: Parquet file without rsttrace metadata (not written by rsttrace export)")
    try:
        info = _loads(meta)
    except ValueError:
        raise BadTrace(f"{path}: rsttrace metadata is not valid JSON") from None
    head = {
        "type": "header",
        "format": "rsttrace",
        "version": 2,
        "sources": info.get("sources") if isinstance(info, dict) else None,
    }
    if not isinstance(info, dict) or not head["sources"]:
        raise BadTrace(f"{path}: rsttrace metadata without recordings")
    try:
        check_header(path, head)
    except BadTrace as e:
        raise BadTrace(str(e).replace(f"{path}:1:", f"{path}: metadata:")) from None
    for s in head["sources"]:
        if type(s.get("label")) is not str:
            raise BadTrace(f"{path}: metadata: a recording without a label")
    summaries = info.get("summaries") or []
    warnings = info.get("warnings") or []
    if not (
        isinstance(summaries, list)
        and all(isinstance(x, dict) for x in summaries)
        and isinstance(warnings, list)
        and all(isinstance(x, str) for x in warnings)
    ):
        raise BadTrace(f"{path}: metadata: summaries or warnings of the wrong type")
    return {"sources": head["sources"], "summaries": summaries, "warnings": warnings}


def _flat_columns(path: Path, table, what: str) -> None:
    """Exported tables are flat: nested columns are refused before pandas sees them."""
    import pyarrow as pa

    for f in table.schema:
        t = f.type.value_type if pa.types.is_dictionary(f.type) else f.type
        if pa.types.is_nested(t):
            raise BadTrace(f"{path}: {what} column {f.name!r} is nested ({t}); not an rsttrace export")


def _read_parquet(path: Path, acc: _Acc) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if not path.name.endswith(".parquet") and path.exists():
        raise BadTrace(
            f"{path}: Parquet data in a file not named *.events.parquet (rsttrace exports "
            "come in pairs: NAME.events.parquet and NAME.incidents.parquet)"
        )
    ev_path, inc_path = _parquet_pair(path)
    _check_regular(ev_path)
    _check_regular(inc_path)
    try:
        ev = pq.read_table(
            ev_path,
            columns=None
            if acc.event_columns is None
            else ["trace", "ts_ns", *[c for c in acc.event_columns if c != "ts_ns"]],
        )
        inc = pq.read_table(inc_path)
    except (OSError, pa.ArrowException, ValueError, KeyError, TypeError) as e:
        raise BadTrace(f"{path}: not a readable rsttrace Parquet pair ({e})") from None
    info = _parquet_meta(ev_path, (ev.schema.metadata or {}).get(PARQUET_META))
    _flat_columns(ev_path, ev, "events")
    _flat_columns(inc_path, inc, "incidents")
    # Columns of the types rsttrace writes, or the file is not one of its exports.
    types = {"ts_ns": pa.int64(), "trace": pa.string(), "kind": pa.string()}
    types.update({k: getattr(pa, t)() for k, t in EVENT_INTS.items()})
    for i, f in enumerate(ev.schema):
        want = types.get(f.name)
        if pa.types.is_dictionary(f.type):
            ev = ev.set_column(i, f.name, ev.column(i).cast(f.type.value_type))
        if want is not None:
            try:
                ev = ev.set_column(i, f.name, ev.column(i).cast(want))
            except (pa.ArrowException, ValueError) as e:
                raise BadTrace(f"{ev_path}: events column {f.name!r} is not {want} ({e})") from None
    if "trace" not in ev.column_names:
        raise BadTrace(f"{ev_path}: no trace column: not an rsttrace export")
    for i, f in enumerate(inc.schema):
        if pa.types.is_dictionary(f.type):
            inc = inc.set_column(i, f.name, inc.column(i).cast(f.type.value_type))
        if f.name in INCIDENT_INTS or f.name in ("lport", "rport"):
            try:
                inc = inc.set_column(i, f.name, inc.column(i).cast(pa.int64()))
            except (pa.ArrowException, ValueError) as e:
                raise BadTrace(f"{inc_path}: incidents column {f.name!r} is not an integer ({e})") from None
        elif f.name in ("trace", "victim_trace", "kind") and not pa.types.is_string(inc.schema.field(i).type):
            try:
                inc = inc.set_column(i, f.name, inc.column(i).cast(pa.string()))
            except (pa.ArrowException, ValueError) as e:
                raise BadTrace(f"{inc_path}: incidents column {f.name!r} is not text ({e})") from None
    acc.files.append(ev_path)
    local = {}
    for s in info["sources"]:
        if s["label"] not in local:
            local[s["label"]] = acc.add_source(s)
    names = list(local)
    index = pa.array(list(local.values()), pa.int32())
    # Rows that name no recording of the pair, or lack a time or kind, are bad rows: skipped.
    src = pc.take(index, pc.index_in(ev.column("trace"), value_set=pa.array(names, pa.string())))
    ok = pc.is_valid(src)
    for need in ("ts_ns", "kind"):
        if need in ev.column_names:
            ok = pc.and_(ok, pc.is_valid(ev.column(need)))
    bad = ev.num_rows - pc.sum(ok.cast(pa.int64())).as_py() if ev.num_rows else 0
    if bad:
        if acc.strict:
            raise BadTrace(f"{ev_path}: {bad} event row(s) without time, kind or recording")
        acc.warnings.append(f"{ev_path}: {bad} event row(s) without time, kind or recording (skipped)")
        ev, src = ev.filter(ok), src.filter(ok)
    ev = ev.drop_columns([c for c in ("trace", "host", "time") if c in ev.column_names])
    ev = ev.add_column(0, "src", src)
    acc.event_tables.append(ev.replace_schema_metadata(None))
    src = {}
    for col, target in (("trace", "src"), ("victim_trace", "victim_src")):
        if col in inc.column_names:
            src[target] = pc.take(index, pc.index_in(inc.column(col), value_set=pa.array(names, pa.string())))
    if "src" not in src:
        raise BadTrace(f"{inc_path}: no trace column: not an rsttrace export")
    ok = pc.is_valid(src["src"])
    bad = inc.num_rows - pc.sum(ok.cast(pa.int64())).as_py() if inc.num_rows else 0
    if bad:
        if acc.strict:
            raise BadTrace(f"{inc_path}: {bad} incident row(s) naming no recording")
        acc.warnings.append(f"{inc_path}: {bad} incident row(s) naming no recording (skipped)")
        inc = inc.filter(ok)
        src = {k: v.filter(ok) for k, v in src.items()}
    inc = inc.drop_columns([c for c in DERIVED if c in inc.column_names])
    for target, col in src.items():
        inc = inc.append_column(target, col)
    if "victim_src" not in inc.column_names:
        inc = inc.append_column("victim_src", pa.nulls(inc.num_rows, pa.int32()))
    acc.incident_tables.append(inc.replace_schema_metadata(None))
    acc.summaries.extend(info["summaries"])
    acc.warnings.extend(info["warnings"])


def _expand(what) -> list[Path]:
    if isinstance(what, (str, os.PathLike)):
        what = [what]
    out: list[Path] = []
    for item in what:
        try:
            p = Path(item)
        except TypeError:
            raise BadTrace(f"not a path: {item!r}") from None
        if p.is_dir():
            found = sorted(p.glob("*.jsonl")) + sorted(p.glob("*.events.parquet"))
            if not found:
                raise BadTrace(f"{p}: no traces in this folder (*.jsonl, *.events.parquet)")
            out.extend(found)
        else:
            out.append(p)
    if not out:
        raise BadTrace("no trace files given")
    return out


def _is_parquet(p: Path) -> bool:
    try:
        if p.name.endswith(".parquet") or (not p.exists() and _parquet_pair(p)[0].exists()):
            return True
        if not stat.S_ISREG(os.stat(p).st_mode):
            return False  # refused by the reader, never opened (a FIFO would block)
        with open(p, "rb") as f:
            return f.read(4) == b"PAR1"
    except (OSError, ValueError):
        return False


# -- assembling the tables --------------------------------------------------------------------


def _events_frame(acc: _Acc):
    import pyarrow as pa
    import pyarrow.compute as pc

    tables = acc.event_tables or [
        _finish_events_table(pa.Table.from_pylist([], schema=_event_schema(acc.event_columns)), [0])
    ]
    table = pa.concat_tables(tables, promote_options="permissive")
    src = table.column("src")
    offsets = pa.array([s.get("wall_offset_ns") for s in acc.sources] or [None], pa.int64())
    cols: dict = {
        "trace": _dict_of(src, [s["label"] for s in acc.sources]),
        "host": _dict_of(src, [s.get("host") or "" for s in acc.sources]),
    }
    if "ts_ns" in table.column_names:
        wall = pc.add(table.column("ts_ns"), pc.take(offsets, src))
        cols["time"] = wall.cast(pa.timestamp("ns"))
    names = [c for c in EVENT_ORDER if c in table.column_names]
    names += [c for c in table.column_names if c not in names and c != "src"]
    for name in names:
        col = table.column(name)
        if name in EVENT_INTS:
            col = col.fill_null(0).cast(getattr(pa, EVENT_INTS[name])())
        elif pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            col = col.dictionary_encode()
        cols[name] = col
    df = pa.table(cols).to_pandas()
    _sort_categories(df, keep=("trace",))
    return df


def _dict_of(src, labels: list[str]):
    """Per-source labels for each row, as a dictionary (categorical) column."""
    import pyarrow as pa
    import pyarrow.compute as pc

    unique = list(dict.fromkeys(labels or [""]))
    index = pa.array([unique.index(x) for x in labels or [""]], pa.int32())
    codes = pc.take(index, src)
    dict_type = pa.dictionary(pa.int32(), pa.string())
    return pa.chunked_array(
        [pa.DictionaryArray.from_arrays(c, pa.array(unique, pa.string())) for c in codes.chunks], type=dict_type
    )


def _concat(tables: list):
    """Tables with the union of their columns; a column typed differently in two becomes text."""
    import pyarrow as pa

    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowException, ValueError):
        types: dict[str, set] = {}
        for t in tables:
            for f in t.schema:
                if not pa.types.is_null(f.type):
                    types.setdefault(f.name, set()).add(f.type)
        mixed = {n for n, ts in types.items() if len(ts) > 1}
        fixed = []
        for t in tables:
            for i, f in enumerate(t.schema):
                if f.name in mixed:
                    vals = [
                        None if v is None else v if isinstance(v, str) else json.dumps(v, default=str)
                        for v in t.column(i).to_pylist()
                    ]
                    t = t.set_column(i, f.name, pa.array(vals, pa.string()))
            fixed.append(t)
        return pa.concat_tables(fixed, promote_options="permissive")


def _incidents_frame(acc: _Acc):
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    parts = [t for t in acc.incident_tables if t.num_rows]
    table = (
        _concat(parts) if parts else pa.table({"src": pa.array([], pa.int32()), "victim_src": pa.array([], pa.int32())})
    )
    n = table.num_rows
    src = table.column("src")
    vsrc = pc.coalesce(table.column("victim_src"), src)
    labels = [s["label"] for s in acc.sources] or [""]
    offsets = pa.array([s.get("wall_offset_ns") for s in acc.sources] or [None], pa.int64())
    hosts = [s.get("host") or "" for s in acc.sources] or [""]
    cols: dict = {
        "trace": _dict_of(src, labels),
        "host": _dict_of(src, hosts),
        "victim_trace": _dict_of(vsrc, labels),
        "victim_host": _dict_of(vsrc, hosts),
    }
    for name in INCIDENT_INTS:
        col = table.column(name) if name in table.column_names else pa.nulls(n, pa.int64())
        cols[name] = col.cast(pa.int64())
    cols["bytes_discarded"] = cols["bytes_discarded"].fill_null(0)
    off = pc.take(offsets, src)
    for name, base in (("time", "first_ns"), ("close_time", "close_ns"), ("reset_time", "reset_ns")):
        cols[name] = pc.add(cols[base], off).cast(pa.timestamp("ns"))
    for name in table.column_names:
        if name not in cols and name not in ("src", "victim_src", "type"):
            cols[name] = table.column(name)
    for name in INCIDENT_ORDER:
        if name not in cols:
            cols[name] = pa.nulls(n, pa.string())
    for name, col in cols.items():
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            cols[name] = col.dictionary_encode()
    order = [c for c in INCIDENT_ORDER if c in cols]
    order += sorted(c for c in cols if c not in order)  # newer fields: the same order from any reader
    mapper = {
        pa.int64(): pd.Int64Dtype(),
        pa.int32(): pd.Int64Dtype(),
        pa.bool_(): pd.BooleanDtype(),
        pa.float64(): pd.Float64Dtype(),
    }.get
    df = pa.table({c: cols[c] for c in order}).to_pandas(types_mapper=mapper)
    _sort_categories(df, keep=("trace",))
    return df


def _sort_categories(df, keep=()) -> None:
    import pandas as pd

    for name in df.columns:
        if isinstance(df[name].dtype, pd.CategoricalDtype) and name not in keep:
            df[name] = df[name].cat.reorder_categories(sorted(df[name].cat.categories))


def _trace(acc: _Acc) -> Trace:
    return Trace(
        events=_events_frame(acc),
        incidents=_incidents_frame(acc),
        sources=acc.sources,
        summaries=acc.summaries,
        warnings=acc.warnings,
        files=acc.files,
    )


def load(what, *, event_columns: Iterable[str] | None = None, strict: bool = False) -> Trace:
    """Load traces: a path, a list of paths, or a folder; JSON Lines or rsttrace Parquet.

    Every line is validated before it becomes a row. A bad line (or Parquet row) is skipped
    and named in `warnings` (FILE:LINE: why); a file that cannot be read at all (missing,
    not a regular file, not a trace) is skipped with a warning too, as long as another file
    could be read. BadTrace -- the only exception load() raises -- comes when nothing could be
    read, or with strict=True at the first bad line or file, naming it; its `.partial` is the
    Trace of everything read before. `event_columns` limits the event columns parsed.
    """
    _need()
    acc = _Acc(event_columns, strict=strict)
    try:
        paths = _expand(what)
    except BadTrace as e:
        e.partial = _safe_trace(acc)  # type: ignore[attr-defined]
        raise
    first_error: BadTrace | None = None
    read_any = False
    for path in paths:
        mark = (
            len(acc.event_tables),
            len(acc.incident_tables),
            len(acc.sources),
            len(acc.files),
            len(acc.summaries),
            len(acc.warnings),
        )
        try:
            try:
                if _is_parquet(path):
                    _read_parquet(path, acc)
                else:
                    _read_jsonl(path, acc)
            except BadTrace:
                raise
            except Exception as e:  # noqa: BLE001 - load() raises only BadTrace
                raise BadTrace(f"{path}: cannot read ({type(e).__name__}: {e})") from None
            read_any = True
        except BadTrace as e:
            if acc.strict:
                e.partial = _safe_trace(acc)  # type: ignore[attr-defined]
                raise
            # Not strict: this file's part is dropped whole, the others stay.
            del acc.event_tables[mark[0] :], acc.incident_tables[mark[1] :], acc.sources[mark[2] :]
            del acc.files[mark[3] :], acc.summaries[mark[4] :], acc.warnings[mark[5] :]
            acc.warnings.append(f"{e} (file skipped)")
            first_error = first_error or e
    if not read_any and first_error is not None:
        err = BadTrace(str(first_error))
        err.partial = _safe_trace(_Acc(event_columns))  # type: ignore[attr-defined]
        raise err
    try:
        return _trace(acc)
    except BadTrace:
        raise
    except Exception as e:  # noqa: BLE001
        raise BadTrace(f"cannot build tables from these traces ({type(e).__name__}: {e})") from None


def _safe_trace(acc: _Acc) -> Trace | None:
    try:
        return _trace(acc)
    except Exception:  # noqa: BLE001 - the partial result is a courtesy
        return None


def export(trace: Trace, prefix: Path, fmt: str, mode: int = 0o600) -> list[Path]:
    """Write PREFIX.events.FMT and PREFIX.incidents.FMT (fmt: parquet or csv), each under a
    temporary name in its folder (0600, never through a symlink) renamed into place when
    complete."""
    import pyarrow as pa

    from .tracefile import open_output

    out = []
    meta = json.dumps({"sources": trace.sources, "summaries": trace.summaries, "warnings": trace.warnings}).encode()
    for name, df in (("events", trace.events), ("incidents", trace.incidents)):
        path = Path(f"{prefix}.{name}.{fmt}")
        table = pa.Table.from_pandas(df, preserve_index=False)
        target = open_output(path, mode)
        try:
            if fmt == "parquet":
                import pyarrow.parquet as pq

                table = table.replace_schema_metadata({**(table.schema.metadata or {}), PARQUET_META: meta})
                pq.write_table(table, target.file)
            else:
                import pyarrow.csv as pcsv

                plain = [c.cast(c.type.value_type) if pa.types.is_dictionary(c.type) else c for c in table.columns]
                pcsv.write_csv(pa.table(plain, names=table.column_names), target.file)
        except (OSError, pa.ArrowException) as e:
            target.discard()
            raise OutputFailed(f"cannot write {path}: {getattr(e, 'strerror', None) or e}") from None
        except BaseException:
            target.discard()
            raise
        target.commit()
        out.append(path)
    return out
