"""Readers never lose a valid line and never crash; writers never lose one either (issue 12)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")

import tracer  # noqa: E402
from tracer import frame, merge, tracefile  # noqa: E402
from tracer.errors import BadTrace, ExitStatus, OutputFailed  # noqa: E402

DATA = Path(__file__).parent.parent / "data" / "v1"
DEFAULT = DATA / "unread_default.jsonl"
ROOT = Path(__file__).parent.parent.parent
LINES = DEFAULT.read_text().splitlines()
EVENT_TS = [json.loads(x)["ts_ns"] for x in LINES if '"type":"event"' in x]


def write(path: Path, lines: list[str], newline_at_end: bool = True) -> Path:
    path.write_text("\n".join(lines) + ("\n" if newline_at_end else ""))
    return path


def rsttrace(*args, **kw):
    return subprocess.run(
        [sys.executable, "-m", "tracer", *map(str, args)], capture_output=True, text=True, timeout=120, cwd=ROOT, **kw
    )


BAD_LINES = [
    ('{"type":"event","ts_ns":1,"kind":"close",', "invalid JSON (unexpected end of data)"),
    ('{"type":"event","ts_ns":NaN,"kind":"close"}', "invalid JSON (unexpected character, expected a JSON value)"),
    ('{"type":"event","ts_ns":1e999,"kind":"close"}', "invalid JSON (number is infinity when parsed as double)"),
    ('{"type":"event","ts_ns":1.5,"kind":"close"}', "event field ts_ns is not an integer (1.5)"),
    ('{"type":"event","ts_ns":-1,"kind":"close"}', "event field ts_ns is out of range (-1)"),
    (
        '{"type":"event","ts_ns":1,"kind":"close","lport":99999999999}',
        "event field lport is out of range (99999999999)",
    ),
    ('{"type":"event","ts_ns":1,"kind":["close"]}', "event field kind is not a string (['close'])"),
    (
        '{"type":"event","ts_ns":1,"kind":"close","flags":"orphan"}',
        "event field flags is not a list of strings ('orphan')",
    ),
    ('{"type":"event","ts_ns":1,"kind":"close","x":' + "[" * 40 + "]" * 40 + "}", "nested deeper than 16 levels"),
    (
        '{"type":"event","ts_ns":1,"kind":"close","x":' + "[" * 5000 + "]" * 5000 + "}",
        "invalid JSON (recursion limit exceeded)",
    ),
    ('{"type":"event","ts_ns":1,"kind":"close","src":3}', "event src 3 names no recording of this trace"),
    ('{"type":"incident","id":"one","kind":"x"}', "incident field id is not an integer ('one')"),
    (
        '{"type":"incident","id":1,"kind":"x","local":{"addr":"a","port":1},"remote":{"addr":"b","port":2},'
        '"timestamps":{"first_ns":1},"victim":{"errors":[1]}}',
        "incident victim error entry is not {call, errno} (1)",
    ),
    ('{"type":"incident","id":1,"kind":"x","local":5}', "incident field local is not an object (5)"),
    ('{"type":"summary","stats":[1]}', "summary field stats is not an object"),
    # Fields flattened into the integer columns of the incidents table, however they are spelt.
    (
        '{"type":"incident","id":1,"kind":"x","local":{"addr":"a","port":1},"remote":{"addr":"b","port":2},'
        '"timestamps":{"first_ns":1},"victim":{"netns":""}}',
        "incident field victim_netns is not a 64-bit integer ('')",
    ),
    (
        '{"type":"incident","id":1,"kind":"x","local":{"addr":"a","port":1},"remote":{"addr":"b","port":2},'
        '"timestamps":{"first_ns":1},"close":{"wait_age_ns":18446744073709551615}}',
        "incident field close_wait_age_ns is not a 64-bit integer (18446744073709551615)",
    ),
    ('{"type":"header","format":"rsttrace","version":1}', "a second header line"),
    ("[1,2]", 'not a trace record (no "type")'),
]


@pytest.mark.parametrize("bad, why", BAD_LINES)
def test_a_bad_line_is_skipped_with_a_warning_naming_it(tmp_path, bad, why):
    p = write(tmp_path / "t.jsonl", LINES[:4] + [bad] + LINES[4:])
    t = tracer.load(p)
    # Every valid line is there: all 10 events and the incident.
    assert t.events["ts_ns"].tolist() == sorted(EVENT_TS) or t.events["ts_ns"].tolist() == EVENT_TS
    assert len(t.events) == 10 and len(t.incidents) == 1
    got = [w for w in t.warnings if ":5:" in w]
    if why.startswith("invalid JSON (recursion"):
        assert got[0].startswith(f"{p}:5: invalid JSON (") and got[0].endswith("(line skipped)")
    else:
        assert got == [f"{p}:5: {why} (line skipped)"]
    with pytest.raises(BadTrace) as e:
        tracer.load(p, strict=True)
    assert str(e.value).startswith(f"{p}:5: ")
    assert len(e.value.partial.events) == 3


def test_a_line_that_is_not_utf8_is_skipped(tmp_path):
    p = tmp_path / "u.jsonl"
    p.write_bytes(
        ("\n".join(LINES[:4]) + "\n").encode()
        + b'{"type":"event","ts_ns":1,"kind":"\xff"}\n'
        + ("\n".join(LINES[4:]) + "\n").encode()
    )
    t = tracer.load(p)
    assert len(t.events) == 10
    assert f"{p}:5: not UTF-8 text (line skipped)" in t.warnings


def test_truncated_last_line_report_shows_everything_before(tmp_path):
    p = write(tmp_path / "cut.jsonl", LINES[:-1] + [LINES[-1][:25]], newline_at_end=False)
    r = rsttrace("report", p)
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines() == [
        f"rsttrace: warning: {p}:{len(LINES)}: truncated last line (line skipped)",
        f"rsttrace: warning: {p}: no summary line: the recording was cut short (killed?); incidents still "
        "open at that moment are not in it",
    ]
    assert "1 incident(s), 10 event(s)" in r.stdout  # only the summary line was cut
    r = rsttrace("export", p, "--to", "csv")
    assert r.returncode == 0, r.stderr
    assert len(pd.read_csv(tmp_path / "cut.events.csv")) == 10
    r = rsttrace("report", "--strict", p)
    assert r.returncode == ExitStatus.BAD_TRACE
    assert r.stderr == f"rsttrace: error: {p}:{len(LINES)}: truncated last line\n"


def test_a_folder_with_a_bad_file_still_shows_the_good_ones(tmp_path):
    shutil.copy(DEFAULT, tmp_path / "a.jsonl")
    (tmp_path / "b.jsonl").write_bytes(b"\x00\x01garbage\n")
    os.mkfifo(tmp_path / "c.jsonl")
    t = tracer.load(tmp_path)
    assert [s["label"] for s in t.sources] == ["a.jsonl"]
    assert len(t.events) == 10 and len(t.incidents) == 1
    assert (
        f"{tmp_path / 'b.jsonl'}:1: invalid JSON (unexpected character, expected a JSON value) "
        "(file skipped)" in t.warnings
    )
    assert (
        f"{tmp_path / 'c.jsonl'}: not a regular file (a FIFO, device or socket is not a trace) (file skipped)"
    ) in t.warnings
    r = rsttrace("report", tmp_path)
    assert r.returncode == 0 and "1 incident(s), 10 event(s)" in r.stdout


@pytest.mark.parametrize("path", ["/dev/zero", "fifo"])
def test_non_regular_files_are_refused_in_one_line(tmp_path, path):
    if path == "fifo":
        path = tmp_path / "fifo"
        os.mkfifo(path)
    for cmd in (["report", path], ["export", path], ["merge", path, DEFAULT]):
        r = rsttrace(*cmd)
        assert r.returncode == ExitStatus.BAD_TRACE, cmd
        assert r.stderr == f"rsttrace: error: {path}: not a regular file (a FIFO, device or socket is not a trace)\n"
    with pytest.raises(BadTrace, match="not a regular file"):
        tracer.load(path)


def test_a_huge_line_is_skipped_without_holding_it(tmp_path):
    big = '{"type":"event","ts_ns":1,"kind":"close","comm":"' + "x" * (tracefile.MAX_LINE + 10) + '"}'
    p = write(tmp_path / "big.jsonl", LINES[:2] + [big] + LINES[2:])
    t = tracer.load(p)
    assert len(t.events) == 10
    assert f"{p}:3: line longer than {tracefile.MAX_LINE} bytes (line skipped)" in t.warnings


def test_many_bad_lines_are_counted(tmp_path):
    p = write(tmp_path / "many.jsonl", LINES[:1] + ["{"] * 25 + LINES[1:])
    t = tracer.load(p)
    assert len(t.events) == 10
    named = [w for w in t.warnings if w.endswith("(line skipped)")]
    assert len(named) == tracefile.MAX_BAD_SHOWN
    assert f"{p}: 25 bad line(s) skipped in all (15 more not named)" in t.warnings


def test_parquet_bad_files_are_one_line(tmp_path):
    t = tracer.load(DEFAULT)
    frame.export(t, tmp_path / "x", "parquet")
    assert stat.S_IMODE(os.stat(tmp_path / "x.events.parquet").st_mode) == 0o600
    (tmp_path / "x.incidents.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(BadTrace, match=r"x\.events\.parquet: not a readable rsttrace Parquet pair"):
        tracer.load(tmp_path / "x.events.parquet")
    # A Parquet file that is not an rsttrace export (nested column, no metadata).
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"trace": ["a"], "deep": [[{"a": [1]}]]}), tmp_path / "y.events.parquet")
    pq.write_table(pa.table({"trace": ["a"]}), tmp_path / "y.incidents.parquet")
    with pytest.raises(BadTrace, match="Parquet file without rsttrace metadata"):
        tracer.load(tmp_path / "y.events.parquet")


def test_load_raises_only_bad_trace_for_wrong_arguments(tmp_path):
    for what in ([], [tmp_path / "missing.jsonl"], [str(tmp_path)]):
        with pytest.raises(BadTrace):
            tracer.load(what)
    with pytest.raises(BadTrace, match="not a path"):
        tracer.load([42])


# -- writers ----------------------------------------------------------------------------------


def test_trace_writer_is_private_and_refuses_symlinks(tmp_path):
    p = tmp_path / "t.jsonl"
    w = tracefile.TraceWriter(p, {"type": "header"})
    w.close()
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    victim = tmp_path / "precious"
    victim.write_text("keep me")
    (tmp_path / "link.jsonl").symlink_to(victim)
    with pytest.raises(BadTrace, match="it is a symbolic link"):
        tracefile.TraceWriter(tmp_path / "link.jsonl", {"type": "header"})
    assert victim.read_text() == "keep me"
    r = rsttrace("record", tmp_path / "link.jsonl", "--duration", "1")
    assert r.returncode == ExitStatus.BAD_TRACE
    assert r.stderr == (
        f"rsttrace: error: cannot write {tmp_path / 'link.jsonl'}: it is a symbolic link "
        "(refused; name the file itself)\n"
    )
    assert victim.read_text() == "keep me"


def test_outputs_that_are_not_regular_files_are_refused(tmp_path):
    fifo = tmp_path / "fifo.jsonl"
    os.mkfifo(fifo)
    a = shutil.copy(DEFAULT, tmp_path / "a.jsonl")
    for cmd in (["merge", a, DEFAULT, "-o", fifo], ["record", fifo, "--duration", "1"]):
        r = rsttrace(*cmd)
        assert r.returncode == ExitStatus.BAD_TRACE, cmd
        assert r.stderr == f"rsttrace: error: cannot write {fifo}: not a regular file (a FIFO, device or socket)\n"
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_disk_full_cuts_back_to_whole_lines(tmp_path, monkeypatch):
    p = tmp_path / "t.jsonl"
    w = tracefile.TraceWriter(p, {"type": "header", "n": 0})
    w.write([{"type": "event", "n": 1}])
    real = os.write

    def half_then_full(fd, data):
        if fd == w.fd:
            real(fd, bytes(data[:7]))  # part of the batch reaches the disk
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(OutputFailed, match="No space left on device"):
        w.write([{"type": "event", "n": 2}, {"type": "event", "n": 3}])
    with pytest.raises(OutputFailed):
        w.write([{"type": "event", "n": 4}])
    monkeypatch.setattr(os, "write", real)
    assert w.write_final({"type": "summary", "error": "disk full"})
    w.close()
    assert p.read_text().splitlines() == [
        '{"type":"header","n":0}',
        '{"type":"event","n":1}',
        '{"type":"summary","error":"disk full"}',
    ]


def test_merge_never_writes_over_an_input(tmp_path):
    a, b = shutil.copy(DEFAULT, tmp_path / "a.jsonl"), shutil.copy(DEFAULT, tmp_path / "b.jsonl")
    before = Path(a).read_bytes()
    r = rsttrace("merge", a, b, "-o", a)
    assert r.returncode == ExitStatus.BAD_TRACE
    assert r.stderr == f"rsttrace: error: cannot write {a}: it is also an input (writing would destroy it)\n"
    assert Path(a).read_bytes() == before
    (tmp_path / "hard.jsonl").hardlink_to(a)
    r = rsttrace("merge", a, b, "-o", tmp_path / "hard.jsonl")
    assert r.returncode == ExitStatus.BAD_TRACE and Path(a).read_bytes() == before
    out = tmp_path / "m.jsonl"
    r = rsttrace("merge", a, b, "-o", out)
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_export_never_writes_over_an_input(tmp_path):
    t = tracer.load(DEFAULT)
    frame.export(t, tmp_path / "x", "parquet")
    before = (tmp_path / "x.events.parquet").read_bytes()
    r = rsttrace("export", tmp_path / "x.events.parquet", "-o", tmp_path / "x")
    assert r.returncode == ExitStatus.BAD_TRACE
    assert r.stderr.endswith(
        f"rsttrace: error: cannot write {tmp_path / 'x.events.parquet'}: it is also an "
        "input (writing would destroy it)\n"
    )
    assert (tmp_path / "x.events.parquet").read_bytes() == before


def test_merge_skips_bad_lines_with_warnings(tmp_path):
    a = write(tmp_path / "a.jsonl", LINES[:3] + ['{"type":"incident","id":"x"}'] + LINES[3:])
    b = shutil.copy(DEFAULT, tmp_path / "b.jsonl")
    warnings: list[str] = []
    sources, incs, stats = merge.merge([a, b], strict=False, warnings=warnings)
    assert stats["incidents"] == 2
    assert warnings == [f"{a}:4: incident field id is not an integer ('x') (line skipped)"]
    r = rsttrace("merge", a, b)
    assert r.returncode == 0
    assert (
        r.stderr.splitlines()[0]
        == f"rsttrace: warning: {a}:4: incident field id is not an integer ('x') (line skipped)"
    )
    r = rsttrace("merge", "--strict", a, b)
    assert r.returncode == ExitStatus.BAD_TRACE
    assert r.stderr == f"rsttrace: error: {a}:4: incident field id is not an integer ('x')\n"
