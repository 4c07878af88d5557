"""tracer.load(): typed tables from JSON Lines and Parquet; clear errors that keep what was read."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")

import tracer  # noqa: E402
from tracer import frame  # noqa: E402
from tracer.errors import BadTrace, ExitStatus  # noqa: E402

# Traces recorded by the first release (format version 1): old files must keep loading.
DATA = Path(__file__).parent.parent / "data" / "v1"
DEFAULT = DATA / "unread_default.jsonl"
OFFSET = 1795245194104779516  # wall_offset_ns in the recorded header


def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines()


def write(path: Path, lines: list[str], newline_at_end: bool = True) -> Path:
    path.write_text("\n".join(lines) + ("\n" if newline_at_end else ""))
    return path


def test_event_columns_are_typed():
    ev = tracer.load(DEFAULT).events
    assert len(ev) == 10
    dt = ev.dtypes.astype(str).to_dict()
    assert dt["time"] == "datetime64[ns]"
    for col in ("ts_ns", "pid", "tid", "bytes", "netns"):
        assert dt[col] == "int64", col
    assert dt["sk"] == "uint64" and dt["lport"] == "int32"
    for col in ("trace", "host", "kind", "comm", "ctx", "family", "state", "err", "reason", "sigpipe", "flags"):
        assert dt[col] == "category", col
    close = ev.iloc[0]
    assert (close["kind"], close["pid"], close["bytes"], close["sk"]) == ("close", 16107, 1000, 18446612686436075840)
    # Wall clock = CLOCK_MONOTONIC timestamp + the offset measured when the recording started.
    assert (ev["time"].astype("int64") == ev["ts_ns"] + OFFSET).all()
    assert str(close["time"]) == "2026-11-21 07:22:19.340051135"
    assert list(ev["kind"].cat.categories) == sorted(set(ev["kind"]))  # from the data, not a list
    assert ev[ev["kind"] == "destroy"]["flags"].tolist() == ["orphan", "orphan"]


def test_incident_columns_are_typed_and_flat():
    inc = tracer.load(DEFAULT).incidents
    assert len(inc) == 1
    dt = inc.dtypes.astype(str).to_dict()
    for col in ("time", "close_time", "reset_time"):
        assert dt[col] == "datetime64[ns]", col
    for col in (
        "id",
        "culprit_pid",
        "bytes_discarded",
        "victim_pid",
        "victim_exit_signal",
        "first_ns",
        "close_wait_age_ns",
    ):
        assert dt[col] == "Int64", col
    for col in ("kind", "reason", "culprit_comm", "victim_sigpipe", "victim_errors", "trace", "host"):
        assert dt[col] == "category", col
    r = inc.iloc[0]
    assert (r["kind"], r["culprit_pid"], r["culprit_comm"], r["bytes_discarded"]) == (
        "abort-on-close",
        16107,
        "rst_server",
        1000,
    )
    assert (r["lport"], r["rport"], r["victim_pid"], r["victim_port"]) == (35317, 56894, 16109, 56894)
    assert (r["victim_errors"], r["victim_error_count"], r["victim_sigpipe"], r["victim_exit_signal"]) == (
        "write ECONNRESET, write EPIPE",
        2,
        "killed",
        13,
    )
    assert r["time"].value == 545235271619 + OFFSET and r["reset_time"].value == 545235305259 + OFFSET
    assert r["close_wait_age_ns"] is pd.NA  # none yet: nullable, not absent


def test_new_fields_are_kept_not_dropped(tmp_path):
    """A newer tracer's fields (e.g. CLOSE_WAIT ages, a new kind) come through typed."""
    lines = lines_of(DEFAULT)
    inc = json.loads(next(x for x in lines if '"type":"incident"' in x))
    inc.update(kind="close-wait", close_wait={"age_ns": 42_000_000_000, "owner": "app"}, victim=None)
    ev = json.loads(lines[1])
    ev["cpu"] = 3
    p = write(tmp_path / "new.jsonl", [lines[0], json.dumps(ev), json.dumps(inc)])
    t = tracer.load(p)
    assert t.events["cpu"].tolist() == [3]
    r = t.incidents.iloc[0]
    assert r["kind"] == "close-wait" and r["close_wait_age_ns"] == 42_000_000_000
    assert r["close_wait_owner"] == "app" and str(t.incidents.dtypes["close_wait_owner"]) == "category"


def test_several_files_and_folders(tmp_path):
    for name in ("unread_default.jsonl", "unread_nosignal.jsonl", "clean_lingering.jsonl"):
        shutil.copy(DATA / name, tmp_path / name)
    t = tracer.load(tmp_path)
    assert [s["label"] for s in t.sources] == ["clean_lingering.jsonl", "unread_default.jsonl", "unread_nosignal.jsonl"]
    assert len(t.events) == 20 and len(t.incidents) == 2
    assert t.incidents["trace"].tolist() == ["unread_default.jsonl", "unread_nosignal.jsonl"]
    assert t.incidents["victim_sigpipe"].tolist() == ["killed", "none"]
    assert t.events.groupby("trace", observed=False).size().to_dict() == {
        "clean_lingering.jsonl": 0,
        "unread_default.jsonl": 10,
        "unread_nosignal.jsonl": 10,
    }
    # The same file twice: two recordings, told apart.
    t = tracer.load([DEFAULT, DEFAULT])
    assert [s["label"] for s in t.sources] == ["unread_default.jsonl", "unread_default.jsonl#2"]
    assert len(t.incidents) == 2


def test_truncated_last_line_keeps_what_came_before(tmp_path):
    lines = lines_of(DEFAULT)
    p = write(tmp_path / "cut.jsonl", lines[:6] + [lines[6][:40]], newline_at_end=False)
    with pytest.raises(BadTrace, match=r"^.*cut\.jsonl:7: truncated last line$") as e:
        tracer.load(p, strict=True)
    part = e.value.partial
    assert len(part.events) == sum('"type":"event"' in x for x in lines[1:6])
    assert part.events["ts_ns"].tolist() == [json.loads(x)["ts_ns"] for x in lines[1:6] if '"event"' in x]


def test_bad_line_in_the_middle_names_file_and_line(tmp_path):
    lines = lines_of(DEFAULT)
    bad = lines[:4] + ['{"type":"event","ts_ns":1,"kind":"close",'] + lines[4:]
    p = write(tmp_path / "bad.jsonl", bad)
    with pytest.raises(BadTrace, match=r"bad\.jsonl:5: invalid JSON") as e:
        tracer.load([DEFAULT, p], strict=True)
    part = e.value.partial
    # The first file whole, the second up to line 4.
    assert part.events.groupby("trace", observed=True).size().to_dict() == {"unread_default.jsonl": 10, "bad.jsonl": 3}
    assert len(part.incidents) == 1


@pytest.mark.parametrize(
    "line, why",
    [
        ('{"type":"event","ts_ns":"soon","kind":"close"}', "event field ts_ns is not an integer ('soon')"),
        ('{"type":"event","pid":4}', "event without ts_ns"),
        ("[1, 2]", 'not a trace record (no "type")'),
    ],
)
def test_wrong_records_are_errors(tmp_path, line, why):
    lines = lines_of(DEFAULT)
    p = write(tmp_path / "w.jsonl", lines[:3] + [line] + lines[3:])
    with pytest.raises(BadTrace) as e:
        tracer.load(p, strict=True)
    assert str(e.value) == f"{p}:4: {why}"
    assert len(e.value.partial.events) == 2


@pytest.mark.parametrize(
    "head, why",
    [
        ('{"type":"header","format":"rsttrace","version":3}', "trace format version 3 is newer than this"),
        ('{"type":"header","format":"rsttrace"}', "trace header has no valid format version (None)"),
        ('{"type":"event","ts_ns":1}', "not an rsttrace trace (no header line)"),
        ("PAR2", "invalid JSON"),
    ],
)
def test_bad_headers(tmp_path, head, why):
    p = write(tmp_path / "h.jsonl", [head])
    with pytest.raises(BadTrace, match=re.escape(f"h.jsonl:1: {why}")):
        tracer.load(p)


def test_version_1_files_still_load():
    head = json.loads(lines_of(DEFAULT)[0])
    assert head["version"] == 1 and "boot_id" not in head
    t = tracer.load(DEFAULT)
    assert t.sources[0]["version"] == 1 and t.sources[0]["wall_offset_ns"] == OFFSET


@pytest.mark.parametrize("which", ["_events_fast", "_incidents_fast"])
def test_fast_and_precise_readers_agree(tmp_path, monkeypatch, which):
    sample = Path(__file__).parent.parent.parent / "notebooks" / "sample_trace.jsonl"
    fast = tracer.load([DEFAULT, sample])

    def refuse(*a, **k):
        raise ValueError("forced")

    monkeypatch.setattr(frame, which, refuse)
    slow = tracer.load([DEFAULT, sample])
    pd.testing.assert_frame_equal(fast.events, slow.events)
    pd.testing.assert_frame_equal(fast.incidents, slow.incidents)
    assert len(slow.incidents) == 14


def test_parquet_round_trip_and_csv(tmp_path):
    t = tracer.load([DATA / "unread_default.jsonl", DATA / "unread_nosignal.jsonl"])
    paths = frame.export(t, tmp_path / "x", "parquet")
    assert [p.name for p in paths] == ["x.events.parquet", "x.incidents.parquet"]
    for name in ("x.events.parquet", "x.incidents.parquet", "x"):
        back = tracer.load(tmp_path / name)
        pd.testing.assert_frame_equal(back.events, t.events)
        pd.testing.assert_frame_equal(back.incidents, t.incidents)
        assert back.sources == t.sources and back.summaries == t.summaries
    frame.export(t, tmp_path / "x", "csv")
    csv_ev = pd.read_csv(tmp_path / "x.events.csv")
    assert len(csv_ev) == 20 and csv_ev["time"][0] == "2026-11-21 07:22:19.340051135"
    csv_inc = pd.read_csv(tmp_path / "x.incidents.csv")
    assert csv_inc["bytes_discarded"].tolist() == [1000, 1000]
    assert csv_inc["victim_sigpipe"].tolist() == ["killed", "none"]


def test_export_cli(tmp_path):
    src = shutil.copy(DEFAULT, tmp_path / "rec.jsonl")
    r = subprocess.run(
        [sys.executable, "-m", "tracer", "export", str(src), "--to", "parquet"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(tmp_path / "rec.events.parquet"), str(tmp_path / "rec.incidents.parquet")]
    ev = pd.read_parquet(tmp_path / "rec.events.parquet")
    assert str(ev.dtypes["time"]) == "datetime64[ns]" and str(ev.dtypes["kind"]) == "category"
    r = subprocess.run(
        [sys.executable, "-m", "tracer", "export", str(tmp_path / "missing.jsonl")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == ExitStatus.BAD_TRACE and "Traceback" not in r.stderr
    assert r.stderr.strip() == f"rsttrace: error: {tmp_path / 'missing.jsonl'}: No such file or directory"


def test_importing_tracer_does_not_import_pandas():
    code = "import sys, tracer, tracer.cli, tracer.session; print('pandas' in sys.modules, 'pyarrow' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.split() == ["False", "False"], r.stderr
