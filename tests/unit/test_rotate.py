"""The rotating trace writer: the exact size rule, age, the total cap, reopen, whole lines."""

from __future__ import annotations

import json
import os

import pytest

from tracer import tracefile
from tracer.rotate import NAME, Limits, RotatingWriter
from tracer.tracefile import dumps


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def head() -> dict:
    return tracefile.header({"name": "tracepoint"}, {}, 5)


def rec(i: int, pad: int = 100) -> dict:
    return {"type": "event", "kind": "close", "ts_ns": i, "comm": "x" * pad}


def line(r: dict) -> int:
    return len(dumps(r).encode()) + 1


def writer(tmp_path, clock=None, **kw) -> RotatingWriter:
    clock = clock or Clock()
    return RotatingWriter(tmp_path, head, Limits(**kw), clock=clock, monotonic=clock)


def lines_of(p):
    text = p.read_bytes()
    assert text.endswith(b"\n")
    return [json.loads(x) for x in text.decode().splitlines()]


def test_size_rule_is_exact(tmp_path):
    w = writer(tmp_path, max_file_size=4096, max_age_s=0, max_total_size=0)
    records = [rec(i, pad=50 + (i * 37) % 400) for i in range(60)]
    for i in range(0, 60, 7):  # batches of several records
        w.write(records[i : i + 7])
    w.close({"type": "summary", "stats": {}, "incidents": 0})
    files = w.files()
    got = []
    for f in files:
        assert f.stat().st_size <= 4096
        recs = lines_of(f)
        assert recs[0]["type"] == "header"
        got.append(recs[1:])
    flat = [r for part in got for r in part]
    assert flat[:-1] == records and flat[-1]["type"] == "summary"
    # Exact: every file but the last was closed only because the next line would not fit.
    for f, nxt in zip(files, got[1:]):
        assert f.stat().st_size + line(nxt[0]) > 4096
    # And the count follows from the rule, replayed here.
    expect, size, hsize = 1, None, None
    for r in records + [{"type": "summary", "stats": {}, "incidents": 0}]:
        if size is None:
            size = hsize = os.path.getsize(files[0]) - sum(line(x) for x in got[0])
        if size + line(r) > 4096 and size > hsize:
            expect += 1
            size = hsize
        size += line(r)
    assert len(files) == expect


def test_one_line_larger_than_a_file_gets_a_file_of_its_own(tmp_path):
    w = writer(tmp_path, max_file_size=4096, max_age_s=0, max_total_size=0)
    w.write([rec(1), rec(2, pad=5000), rec(3)])
    w.close()
    parts = [lines_of(f)[1:] for f in w.files()]
    assert [[r["ts_ns"] for r in p] for p in parts] == [[1], [2], [3]]


def test_total_cap_removes_oldest_never_the_current(tmp_path):
    w = writer(tmp_path, max_file_size=4096, max_age_s=0, max_total_size=3 * 4096)
    for i in range(200):
        w.write([rec(i, pad=300)])
        assert sum(f.stat().st_size for f in w.files()) <= 3 * 4096
        assert w.path.exists()
    w.close()
    files = w.files()
    seqs = [int(NAME.match(f.name)["seq"]) for f in files]
    assert seqs == list(range(seqs[0], seqs[0] + len(files)))  # the newest ones, in order
    assert w.removed == w.seq - len(files) > 0
    assert lines_of(files[-1])[-1]["ts_ns"] == 199


def test_total_cap_holds_at_every_write_even_within_one_batch(tmp_path, monkeypatch):
    w = writer(tmp_path, max_file_size=4096, max_age_s=0, max_total_size=2 * 4096)
    real = os.write
    worst = []

    def spy(fd, data):
        n = real(fd, data)
        worst.append(sum(f.stat().st_size for f in w.files()))
        return n

    monkeypatch.setattr(os, "write", spy)
    for i in range(0, 300, 50):  # batches spanning several files each
        w.write([rec(j, pad=200) for j in range(i, i + 50)])
    w.close({"type": "summary", "stats": {}, "incidents": 0})
    assert worst and max(worst) <= 2 * 4096


def test_age_rotation(tmp_path):
    clock = Clock()
    w = writer(tmp_path, clock, max_file_size=1 << 20, max_age_s=60, max_total_size=0)
    w.write([rec(1)])
    clock.t += 59
    w.tick()
    assert len(w.files()) == 1
    clock.t += 1
    w.tick()
    assert len(w.files()) == 2
    clock.t += 600
    w.tick()  # nothing written since: no empty file
    assert len(w.files()) == 2
    w.write([rec(2)])
    w.close()
    assert [[r["ts_ns"] for r in lines_of(f)[1:]] for f in w.files()] == [[1], [2]]


def test_reopen_starts_a_new_file_and_rescans(tmp_path):
    w = writer(tmp_path, max_file_size=4096, max_age_s=0, max_total_size=4 * 4096)
    w.write([rec(1)])
    first = w.path
    moved = tmp_path / "moved.jsonl.1"  # logrotate renamed it
    os.rename(first, moved)
    new = w.reopen()
    assert new != first and new.exists()
    w.write([rec(2)])
    w.close()
    assert lines_of(moved)[1]["ts_ns"] == 1
    assert [lines_of(f)[1]["ts_ns"] for f in w.files()] == [2]


def test_files_of_an_earlier_run_count_and_go_first(tmp_path):
    old = tmp_path / "rsttrace-20200101T000000Z-000007.jsonl"
    old.write_text("x" * 10000)
    other = tmp_path / "unrelated.log"
    other.write_text("y" * 10000)
    w = writer(tmp_path, max_file_size=4096, max_age_s=0, max_total_size=8192)
    assert NAME.match(w.path.name)["seq"] == "000008"
    assert not old.exists() and other.exists()
    w.close()


def test_limits_are_checked():
    with pytest.raises(ValueError, match="at least twice"):
        Limits(max_file_size=8192, max_total_size=10000).check()
    with pytest.raises(ValueError, match="4096"):
        Limits(max_file_size=100).check()
