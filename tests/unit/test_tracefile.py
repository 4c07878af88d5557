"""Trace files: header, whole lines, clear errors naming file and line."""

from __future__ import annotations

import pytest

from tracer import tracefile
from tracer.errors import BadTrace


def write(tmp_path, text):
    p = tmp_path / "t.jsonl"
    p.write_text(text)
    return p


def test_roundtrip(tmp_path):
    p = tmp_path / "t.jsonl"
    w = tracefile.TraceWriter(p, tracefile.header({"name": "tracepoint"}, {}, 5))
    w.write([{"type": "event", "kind": "close", "ts_ns": 7}])
    w.close()
    recs = list(tracefile.read(p))
    assert [r["type"] for r in recs] == ["header", "event"]
    assert recs[0]["version"] == tracefile.VERSION and recs[0]["wall_offset_ns"] == 5


def test_truncated_last_line_keeps_what_came_before(tmp_path):
    p = write(
        tmp_path,
        '{"type":"header","format":"rsttrace","version":1}\n{"type":"event","ts_ns":1,"kind":"close"}\n{"type":"ev',
    )
    got = []
    with pytest.raises(BadTrace, match=r"t.jsonl:3: truncated last line"):
        for r in tracefile.read(p):
            got.append(r)
    assert [r["type"] for r in got] == ["header", "event"]


def test_not_a_trace(tmp_path):
    with pytest.raises(BadTrace, match=r":1: not an rsttrace trace"):
        list(tracefile.read(write(tmp_path, '{"a": 1}\n')))
    with pytest.raises(BadTrace, match="No such file"):
        list(tracefile.read(tmp_path / "missing.jsonl"))
