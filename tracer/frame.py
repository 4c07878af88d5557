"""pandas views of traces: load() reads JSON Lines or Parquet into typed events and incidents tables."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from .errors import BadTrace, RsttraceError
from .tracefile import check_header, line_error, recordings

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
EVENT_INTS = {"ts_ns": "int64", "pid": "int64", "tid": "int64", "sk": "uint64", "ino": "uint64",
              "netns": "int64", "lport": "int32", "rport": "int32", "bytes": "int64", "code": "int32"}
EVENT_STRS = ("kind", "comm", "ctx", "family", "laddr", "raddr", "oldstate", "state", "err",
              "reason", "sigpipe")
EVENT_ORDER = ("ts_ns", "kind", "pid", "tid", "comm", "ctx", "sk", "ino", "netns", "family", "laddr",
               "lport", "raddr", "rport", "oldstate", "state", "bytes", "err", "code", "reason",
               "sigpipe", "flags")
INCIDENT_INTS = ("id", "culprit_pid", "bytes_discarded", "netns", "lport", "rport", "victim_pid",
                 "victim_netns", "victim_port", "victim_exit_signal", "victim_error_count",
                 "first_ns", "close_ns", "reset_ns", "last_ns", "wall_ns", "close_wait_age_ns",
                 "clock_skew_ns")
INCIDENT_ORDER = ("trace", "host", "id", "time", "kind", "reason", "culprit_pid", "culprit_comm",
                  "bytes_discarded", "family", "netns", "laddr", "lport", "raddr", "rport", "state",
                  "victim_trace", "victim_host", "victim_pid", "victim_comm", "victim_netns", "victim_addr",
                  "victim_port", "victim_state", "victim_sk_err", "victim_errors",
                  "victim_error_count", "victim_sigpipe", "victim_exit_signal", "close_wait_age_ns",
                  "first_ns", "close_ns", "reset_ns", "last_ns", "close_time", "reset_time")
PARQUET_META = b"rsttrace"
# Incident columns computed from others (and from the recordings' headers) when loading.
DERIVED = ("trace", "host", "victim_host", "victim_trace", "time", "close_time", "reset_time")


def _need():
    try:
        import pandas  # noqa: F401
        import pyarrow  # noqa: F401
    except ImportError as e:
        raise RsttraceError(f"reading traces as tables needs pandas and pyarrow ({e.name} is missing): "
                            "pip install 'rsttrace[analysis]'") from None


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
        return (f"<Trace {len(self.events)} events, {len(self.incidents)} incidents from "
                f"{len(self.files)} file(s)>")


class _Acc:
    """What has been read so far, across files; turned into a Trace at the end or on error."""

    def __init__(self, event_columns: Iterable[str] | None) -> None:
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


def _check_event(rec: dict, schema, n_src: int) -> str | None:
    """Why a decoded event line cannot be a row (the slow path's precise check), or None."""
    import pyarrow as pa

    if rec.get("src") is not None and rec["src"] not in range(n_src):
        return f"event src {rec['src']!r} names no recording of this trace"
    for name in ("ts_ns", "kind"):
        if rec.get(name) is None:
            return f"event without {name}"
    for f in schema:
        v = rec.get(f.name)
        if v is None:
            continue
        if pa.types.is_integer(f.type) and (not isinstance(v, int) or isinstance(v, bool)):
            return f"event field {f.name} is not an integer ({v!r})"
        if pa.types.is_string(f.type) and not isinstance(v, str):
            return f"event field {f.name} is not a string ({v!r})"
        if pa.types.is_list(f.type) and not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
            return f"event field {f.name} is not a list of strings ({v!r})"
    return None


def _events_fast(lines: list[bytes], schema, extras: bool):
    import pyarrow as pa
    import pyarrow.json as pj

    if not lines:
        return pa.Table.from_pylist([], schema=schema)
    # Unknown fields are inferred, not dropped: a newer tracer's event fields stay visible.
    behaviour = "infer" if extras else "ignore"
    table = pj.read_json(io.BytesIO(b"\n".join(lines)),
                         read_options=pj.ReadOptions(block_size=16 << 20),
                         parse_options=pj.ParseOptions(explicit_schema=schema,
                                                       unexpected_field_behavior=behaviour))
    if table.num_rows != len(lines):
        raise ValueError("row count")
    for name in ("ts_ns", "kind"):
        if name in table.column_names and table.column(name).null_count:
            raise ValueError(f"null {name}")
    return table


def _events_slow(lines: list[bytes], schema, n_src: int, extras: bool) -> tuple[object, int | None, str | None]:
    """Rows up to the first bad event line; (table, index of the bad line, why)."""
    rows: list[dict] = []
    for i, line in enumerate(lines):
        try:
            rec = _loads(line)
        except ValueError as e:
            return _rows_table(rows, schema, extras), i, line_error(line + NL, e)
        why = _check_event(rec, schema, n_src) if isinstance(rec, dict) else "not a JSON object"
        if why:
            return _rows_table(rows, schema, extras), i, why
        rows.append(rec)
    return _rows_table(rows, schema, extras), None, None


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
            try:
                col = pa.array(vals)
            except (pa.ArrowException, OverflowError):
                col = pa.array([None if v is None else json.dumps(v) for v in vals], pa.string())
            table = table.append_column(name, col)
    return table


def _finish_events_table(table, local_src: list[int]):
    """Per-file table -> common shape: global src, flags as one string."""
    import pyarrow as pa
    import pyarrow.compute as pc

    src = table.column("src").fill_null(0) if "src" in table.column_names else \
        pa.array([0] * table.num_rows, pa.int32())
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


def _column_of(vals: list):
    """An arrow column for values of one field; mixed or odd values are kept as JSON text."""
    import pyarrow as pa

    try:
        return pa.array(vals)
    except (pa.ArrowException, OverflowError):
        return pa.array([None if v is None else v if isinstance(v, str) else json.dumps(v) for v in vals],
                        pa.string())


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
    import pyarrow as pa

    try:
        data = path.read_bytes()
    except OSError as e:
        raise BadTrace(f"{path}: {e.strerror}") from None
    lines = data.split(b"\n")
    tail = lines.pop()
    cut: tuple[int, str] | None = None  # (0-based line, why) of the first bad line
    if tail.strip():
        try:
            json.loads(tail)
            lines.append(tail)  # complete, only the final newline is missing
        except ValueError:
            cut = (len(lines), "truncated last line")
    if not lines or not lines[0].strip():
        raise BadTrace(f"{path}:1: not an rsttrace trace (no header line)")
    try:
        head = check_header(path, json.loads(lines[0]))
    except ValueError as e:
        raise BadTrace(f"{path}:1: {line_error(lines[0] + NL, e)}") from None
    acc.files.append(path)
    local_src = _sources_of(head, path, acc)

    others: list[tuple[int, dict]] = []
    odd_events: list[int] = []  # event lines spelt differently: only the precise reader takes them

    def earlier(new: tuple[int, str]) -> tuple[int, str]:
        return new if cut is None or new[0] < cut[0] else cut

    for i, line in enumerate(lines):
        if i == 0 or EVENT_MARK in line or INCIDENT_MARK in line or not line.strip():
            continue
        try:
            rec = _loads(line)
        except ValueError as e:
            cut = earlier((i, line_error(line + NL, e)))
            break
        if not isinstance(rec, dict) or not isinstance(rec.get("type"), str):
            cut = earlier((i, 'not a trace record (no "type")'))
            break
        if rec["type"] == "event":
            odd_events.append(i)
        else:
            others.append((i, rec))

    incidents = None
    if cut is None and not any(r["type"] == "incident" for _, r in others):
        try:
            incidents = _incidents_fast([x for x in lines if INCIDENT_MARK in x])
        except (ValueError, pa.ArrowException):
            incidents = None
    def python_incidents() -> None:
        """Precise path: every incident line (however spelt) in order, up to the first bad one."""
        nonlocal cut
        for i, line in enumerate(lines):
            if cut is not None and i >= cut[0]:
                break
            if INCIDENT_MARK not in line or EVENT_MARK in line:
                continue
            try:
                rec = _loads(line)
            except ValueError as e:
                cut = earlier((i, line_error(line + NL, e)))
                break
            if not isinstance(rec, dict) or rec.get("type") != "incident":
                cut = earlier((i, "not an incident record"))
                break
            others.append((i, rec))
        others.sort(key=lambda x: x[0])

    if incidents is None:
        python_incidents()

    schema = _event_schema(acc.event_columns)
    table = None
    if cut is None and not odd_events:
        try:
            table = _finish_events_table(_events_fast([x for x in lines if EVENT_MARK in x], schema,
                                                      acc.event_columns is None),
                                         local_src)
        except (ValueError, pa.ArrowException):
            table = None
    if table is None:
        # Precise path: which line is bad, and every row before it.
        ev_index = sorted([i for i, line in enumerate(lines) if EVENT_MARK in line] + odd_events)
        if cut is not None:
            ev_index = [i for i in ev_index if i < cut[0]]
        raw, bad, why = _events_slow([lines[i] for i in ev_index], schema, len(local_src),
                                     acc.event_columns is None)
        if bad is not None:
            cut = earlier((ev_index[bad], why))
        table = _finish_events_table(raw, local_src)
    if cut is not None:
        others = [(i, r) for i, r in others if i < cut[0]]
    acc.event_tables.append(table)
    if incidents is not None and cut is not None:
        python_incidents()  # the fast reader read them all; keep only those before the cut
        others = [(i, r) for i, r in others if i < cut[0]]
    if incidents is None or cut is not None:
        incidents = _incidents_slow([flatten_incident(r) for _, r in others if r["type"] == "incident"])
    try:
        acc.incident_tables.append(_finish_incidents_table(incidents, local_src))
    except BadTrace as e:
        raise BadTrace(f"{path}: {e}") from None
    acc.summaries.extend(dict(r, file=str(path)) for _, r in others if r["type"] == "summary")
    if cut is not None:
        raise BadTrace(f"{path}:{cut[0] + 1}: {cut[1]}")
    if not any(r["type"] == "summary" for _, r in others):
        acc.warnings.append(f"{path}: no summary line: the recording was cut short (killed?); "
                            "incidents still open at that moment are not in it")


def _parquet_pair(path: Path) -> tuple[Path, Path]:
    name = path.name
    for suffix in (".events.parquet", ".incidents.parquet"):
        if name.endswith(suffix):
            stem = name[: -len(suffix)]
            return path.with_name(stem + ".events.parquet"), path.with_name(stem + ".incidents.parquet")
    return path.with_name(name + ".events.parquet"), path.with_name(name + ".incidents.parquet")


def _read_parquet(path: Path, acc: _Acc) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    ev_path, inc_path = _parquet_pair(path)
    try:
        ev = pq.read_table(ev_path, columns=None if acc.event_columns is None
                           else ["trace", "ts_ns", *[c for c in acc.event_columns if c != "ts_ns"]])
        inc = pq.read_table(inc_path)
    except (OSError, pa.ArrowException) as e:
        raise BadTrace(f"{path}: not a readable rsttrace Parquet pair ({e})") from None
    meta = (ev.schema.metadata or {}).get(PARQUET_META)
    if meta is None:
        raise BadTrace(f"{ev_path}: Parquet file without rsttrace metadata (not written by rsttrace export)")
    info = json.loads(meta)
    acc.files.append(ev_path)
    local = {s["label"]: acc.add_source(s) for s in info["sources"]}
    labels = ev.column("trace").cast(pa.string())
    src = pc.take(pa.array(list(local.values()), pa.int32()),
                  pc.index_in(labels, value_set=pa.array(list(local), pa.string())))
    ev = ev.drop_columns([c for c in ("trace", "host", "time") if c in ev.column_names])
    ev = ev.add_column(0, "src", src)
    for i, f in enumerate(ev.schema):
        if pa.types.is_dictionary(f.type):
            ev = ev.set_column(i, f.name, ev.column(i).cast(pa.string()))
    acc.event_tables.append(ev.replace_schema_metadata(None))
    names = list(local)
    index = pa.array(list(local.values()), pa.int32())
    src = {}
    for col, target in (("trace", "src"), ("victim_trace", "victim_src")):
        if col in inc.column_names:
            labels = inc.column(col).cast(pa.string())
            src[target] = pc.take(index, pc.index_in(labels, value_set=pa.array(names, pa.string())))
    inc = inc.drop_columns([c for c in DERIVED if c in inc.column_names])
    for i, f in enumerate(inc.schema):
        if pa.types.is_dictionary(f.type):
            inc = inc.set_column(i, f.name, inc.column(i).cast(pa.string()))
    for target, col in src.items():
        inc = inc.append_column(target, col)
    acc.incident_tables.append(inc.replace_schema_metadata(None))
    acc.summaries.extend(info.get("summaries", []))
    acc.warnings.extend(info.get("warnings", []))


def _expand(what) -> list[Path]:
    if isinstance(what, (str, Path)):
        what = [what]
    out: list[Path] = []
    for item in what:
        p = Path(item)
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
    if p.name.endswith(".parquet") or (not p.exists() and _parquet_pair(p)[0].exists()):
        return True
    try:
        with open(p, "rb") as f:
            return f.read(4) == b"PAR1"
    except OSError:
        return False


# -- assembling the tables --------------------------------------------------------------------


def _events_frame(acc: _Acc):
    import pyarrow as pa
    import pyarrow.compute as pc

    tables = acc.event_tables or [_finish_events_table(
        pa.Table.from_pylist([], schema=_event_schema(acc.event_columns)), [0])]
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
    return pa.chunked_array([pa.DictionaryArray.from_arrays(c, pa.array(unique, pa.string()))
                             for c in codes.chunks], type=dict_type)


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
                    vals = [None if v is None else v if isinstance(v, str) else json.dumps(v, default=str)
                            for v in t.column(i).to_pylist()]
                    t = t.set_column(i, f.name, pa.array(vals, pa.string()))
            fixed.append(t)
        return pa.concat_tables(fixed, promote_options="permissive")


def _incidents_frame(acc: _Acc):
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    parts = [t for t in acc.incident_tables if t.num_rows]
    table = _concat(parts) if parts else pa.table({"src": pa.array([], pa.int32()),
                                                   "victim_src": pa.array([], pa.int32())})
    n = table.num_rows
    src = table.column("src")
    vsrc = pc.coalesce(table.column("victim_src"), src)
    labels = [s["label"] for s in acc.sources] or [""]
    offsets = pa.array([s.get("wall_offset_ns") for s in acc.sources] or [None], pa.int64())
    hosts = [s.get("host") or "" for s in acc.sources] or [""]
    cols: dict = {"trace": _dict_of(src, labels), "host": _dict_of(src, hosts),
                  "victim_trace": _dict_of(vsrc, labels), "victim_host": _dict_of(vsrc, hosts)}
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
    mapper = {pa.int64(): pd.Int64Dtype(), pa.int32(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype(),
              pa.float64(): pd.Float64Dtype()}.get
    df = pa.table({c: cols[c] for c in order}).to_pandas(types_mapper=mapper)
    _sort_categories(df, keep=("trace",))
    return df


def _sort_categories(df, keep=()) -> None:
    import pandas as pd

    for name in df.columns:
        if isinstance(df[name].dtype, pd.CategoricalDtype) and name not in keep:
            df[name] = df[name].cat.reorder_categories(sorted(df[name].cat.categories))


def _trace(acc: _Acc) -> Trace:
    return Trace(events=_events_frame(acc), incidents=_incidents_frame(acc), sources=acc.sources,
                 summaries=acc.summaries, warnings=acc.warnings, files=acc.files)


def load(what, *, event_columns: Iterable[str] | None = None) -> Trace:
    """Load traces: a path, a list of paths, or a folder; JSON Lines or rsttrace Parquet.

    A malformed or truncated file raises BadTrace naming the file and line; its `.partial`
    is the Trace of everything read before that line. `event_columns` limits the event
    columns parsed (faster when only a few are needed).
    """
    _need()
    acc = _Acc(event_columns)
    try:
        for path in _expand(what):
            if _is_parquet(path):
                _read_parquet(path, acc)
            else:
                _read_jsonl(path, acc)
    except BadTrace as e:
        e.partial = _trace(acc)  # type: ignore[attr-defined]
        raise
    return _trace(acc)


def export(trace: Trace, prefix: Path, fmt: str) -> list[Path]:
    """Write PREFIX.events.FMT and PREFIX.incidents.FMT (fmt: parquet or csv)."""
    import pyarrow as pa

    out = []
    meta = json.dumps({"sources": trace.sources, "summaries": trace.summaries,
                       "warnings": trace.warnings}).encode()
    for name, df in (("events", trace.events), ("incidents", trace.incidents)):
        path = Path(f"{prefix}.{name}.{fmt}")
        table = pa.Table.from_pandas(df, preserve_index=False)
        try:
            if fmt == "parquet":
                import pyarrow.parquet as pq

                table = table.replace_schema_metadata({**(table.schema.metadata or {}), PARQUET_META: meta})
                pq.write_table(table, path)
            else:
                import pyarrow.csv as pcsv

                plain = [c.cast(c.type.value_type) if pa.types.is_dictionary(c.type) else c
                         for c in table.columns]
                pcsv.write_csv(pa.table(plain, names=table.column_names), path)
        except OSError as e:
            raise RsttraceError(f"cannot write {path}: {e.strerror or e}") from None
        out.append(path)
    return out
