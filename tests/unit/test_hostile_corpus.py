"""The hostile regression corpus (tests/data/hostile): every shape that once crashed, hung or
lost lines gives exactly the result in expected.json, through load(), report, export and merge:
no traceback, no signal, no hang, no valid line lost."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("pandas")
pytest.importorskip("pyarrow")

import tracer  # noqa: E402
from tracer import cli, tracefile  # noqa: E402
from tracer.errors import BadTrace  # noqa: E402

HOSTILE = Path(__file__).parent.parent / "data" / "hostile"
EXPECTED = json.loads((HOSTILE / "expected.json").read_text())
GOOD = Path(__file__).parent.parent / "data" / "v1" / "unread_default.jsonl"


def matches(text: str, expected: str) -> bool:
    return text.startswith(expected[:-1]) if expected.endswith("…") else text == expected


def test_the_corpus_is_complete():
    names = sorted(
        p.name
        for p in HOSTILE.iterdir()
        if p.name not in ("make.py", "expected.json") and not p.name.endswith(".incidents.parquet")
    )
    assert names == sorted(EXPECTED)
    assert len(names) == 24


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_load(name):
    path = HOSTILE / name
    exp = EXPECTED[name]
    if "error" in exp:
        with pytest.raises(BadTrace) as e:
            tracer.load(path)
        assert matches(str(e.value).replace(str(path), "FILE"), exp["error"]), str(e.value)
        return
    t = tracer.load(path)
    assert (len(t.events), len(t.incidents)) == (exp["events"], exp["incidents"])
    assert [w.replace(str(path), "FILE") for w in t.warnings] == exp["warnings"]
    skipped = [w for w in exp["warnings"] if w.endswith("(line skipped)")]
    if skipped:
        with pytest.raises(BadTrace) as e:
            tracer.load(path, strict=True)
        assert str(e.value).replace(str(path), "FILE") == skipped[0].removesuffix(" (line skipped)")


def run(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli.run([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "rsttrace: error: unexpected" not in err
    assert "\x1b" not in out and "\x1b" not in err
    return e.value.code, out, err


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_report_export_merge(name, tmp_path, capsys):
    src = HOSTILE / name
    path = tmp_path / name
    shutil.copy(src, path)
    if name.endswith(".events.parquet"):
        shutil.copy(HOSTILE / name.replace(".events.", ".incidents."), tmp_path)
    exp = EXPECTED[name]
    ok = "error" not in exp
    code, out, err = run(["report", path], capsys)
    assert code == (0 if ok else 10)
    if ok:
        assert f"{exp['incidents']} incident(s), {exp['events']} event(s)" in out
    else:
        assert err.count("\n") == 1 and matches(
            err.strip().replace(str(path), "FILE"), "rsttrace: error: " + exp["error"]
        )
    code, out, err = run(["export", path, "-o", tmp_path / "x", "--to", "csv"], capsys)
    assert code == (0 if ok else 10)
    # merge reads JSON Lines only, with the same validation.
    jsonl_ok = ok and name.endswith(".jsonl")
    code, out, err = run(["merge", path, GOOD, "-o", tmp_path / "m.jsonl"], capsys)
    assert code == (0 if jsonl_ok else 10)
    if jsonl_ok:
        merged = tracer.load(tmp_path / "m.jsonl", strict=True)
        assert len(merged.events) == exp["events"] + 10


@pytest.mark.parametrize("make", ["fifo", "dev_zero", "symlink_to_dev_zero", "directory", "huge_line"])
def test_files_that_would_hang_or_eat_memory(tmp_path, capsys, make):
    path = tmp_path / "t.jsonl"
    if make == "fifo":
        os.mkfifo(path)
    elif make == "dev_zero":
        path = Path("/dev/zero")
    elif make == "symlink_to_dev_zero":
        path.symlink_to("/dev/zero")
    elif make == "directory":
        path.mkdir()
        (path / "a.jsonl").symlink_to("/dev/zero")
    else:
        lines = GOOD.read_text().splitlines()
        with open(path, "w") as f:
            f.write(lines[0] + "\n" + '{"type":"event","ts_ns":1,"kind":"' + "x" * (100 << 20) + '"}\n')
            f.write("\n".join(lines[1:]) + "\n")
    if make == "huge_line":
        t = tracer.load(path)
        assert len(t.events) == 10
        assert t.warnings[0] == f"{path}:2: line longer than {tracefile.MAX_LINE} bytes (line skipped)"
        code, out, err = run(["export", path, "--to", "csv"], capsys)
        assert code == 0
        return
    with pytest.raises(BadTrace):
        tracer.load(path)
    for argv in (["report", path], ["export", path], ["merge", path, GOOD]):
        code, out, err = run(argv, capsys)
        if make == "directory" and argv[0] == "merge":  # merge takes files only: a usage error
            assert code == 2 and "is a directory" in err
            continue
        assert code == 10
        assert (
            err == f"rsttrace: error: {path if make != 'directory' else path / 'a.jsonl'}: not a regular "
            "file (a FIFO, device or socket is not a trace)\n"
        )
