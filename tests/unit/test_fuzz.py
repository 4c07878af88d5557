"""Property-based fuzzing (Hypothesis) of the trace readers, the CLI's option parsing and the
ring-buffer record decoder. Fixed seed and budget, so every run tries the same inputs and the
whole file stays well under a minute; `RSTTRACE_FUZZ_SCALE=10` multiplies the budget.

Properties: no exception but the documented one (BadTrace from load(), SystemExit with a
documented code from the CLI), never a traceback, every valid line kept, one line on stderr
for an error, and anything the decoder produces can be recorded and read back.
"""

from __future__ import annotations

import json
import os
import struct
import sys
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
pytest.importorskip("pandas")
pytest.importorskip("pyarrow")

from hypothesis import HealthCheck, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import tracer  # noqa: E402
from tracer import cli, frame, tracefile  # noqa: E402
from tracer.errors import BadTrace, ExitStatus  # noqa: E402
from tracer.events import Decoder, Event  # noqa: E402

SEED = 20261206
SCALE = float(os.environ.get("RSTTRACE_FUZZ_SCALE", "1"))
DATA = Path(__file__).parent.parent / "data" / "v1"
RECORDED = (DATA / "unread_default.jsonl").read_text().splitlines()
HEADER, BODY = RECORDED[0], RECORDED[1:]
DOCUMENTED = {int(s) for s in ExitStatus}

# How many examples each target tried in the last run (the report quotes them).
TRIED: dict[str, int] = {}


def budget(n: int, **kw):
    """Hypothesis settings: n examples (times RSTTRACE_FUZZ_SCALE), no deadline (the first
    pandas import is slow), no example database (the same inputs every run)."""
    return settings(
        max_examples=max(1, int(n * SCALE)),
        deadline=None,
        database=None,
        derandomize=False,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
        **kw,
    )


def count(name: str) -> None:
    TRIED[name] = TRIED.get(name, 0) + 1


# -- generated lines -------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(1 << 70), max_value=1 << 70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20,
)

FIELDS = [
    "ts_ns",
    "kind",
    "pid",
    "tid",
    "comm",
    "sk",
    "ino",
    "netns",
    "lport",
    "rport",
    "bytes",
    "flags",
    "src",
    "id",
    "local",
    "remote",
    "timestamps",
    "victim",
    "culprit",
    "stats",
    "type",
]


@st.composite
def mutated_record(draw) -> str:
    """A recorded line with one field replaced by anything (the wrong type, out of range, ...)."""
    rec = json.loads(draw(st.sampled_from(BODY)))
    key = draw(st.sampled_from(FIELDS))
    rec[key] = draw(json_values)
    return json.dumps(rec)


@st.composite
def raw_hostile(draw) -> str:
    """Shapes that broke readers before: cuts, NaN, deep nesting, junk, huge numbers."""
    base = draw(st.sampled_from(BODY))
    kind = draw(st.sampled_from(["cut", "nan", "inf", "deep", "bigint", "junk", "flip", "json", "dup_header"]))
    if kind == "cut":
        return base[: draw(st.integers(0, len(base) - 1))]
    if kind == "nan":
        return base.replace('"bytes":', '"bytes":NaN,"x":', 1)
    if kind == "inf":
        return base.replace('"ts_ns":', '"ts_ns":1e999,"y":', 1)
    if kind == "deep":
        n = draw(st.integers(10, 3000))
        return base[:-1] + ',"deep":' + "[" * n + "]" * n + "}"
    if kind == "bigint":
        return base.replace('"pid":', f'"pid":{draw(st.integers(1 << 63, 1 << 80))},"z":', 1)
    if kind == "junk":
        return draw(st.text(max_size=40)).replace("\n", " ")
    if kind == "flip":
        i = draw(st.integers(0, len(base) - 1))
        return base[:i] + draw(st.characters(codec="utf-8", exclude_characters="\n\r")) + base[i + 1 :]
    if kind == "dup_header":
        return HEADER
    return json.dumps(draw(json_values))


line_strategy = st.one_of(
    st.sampled_from(BODY).map(lambda x: ("valid", x)),
    mutated_record().map(lambda x: ("any", x)),
    raw_hostile().map(lambda x: ("any", x)),
)


def write_trace(path: Path, lines: list[tuple[str, str]], end_newline: bool) -> list[str]:
    text = "\n".join([HEADER] + [x for _, x in lines]) + ("\n" if end_newline else "")
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    return [x for how, x in lines if how == "valid"]


def accepted(line: str) -> dict | None:
    try:
        return tracefile.parse_record(line.encode("utf-8", "surrogatepass"))
    except tracefile.LineError:
        return None


# -- readers ------------------------------------------------------------------------------------


@seed(SEED)
@budget(200)
@given(lines=st.lists(line_strategy, max_size=12), end_newline=st.booleans())
def test_fuzz_load_jsonl(tmp_path_factory, lines, end_newline):
    """load(): only BadTrace; every recorded line inserted unmodified comes out as a row."""
    count("load() JSON Lines")
    p = tmp_path_factory.mktemp("fz") / "t.jsonl"
    valid = write_trace(p, lines, end_newline)
    try:
        t = tracer.load(p)
    except BadTrace as e:
        raise AssertionError(f"a file with a good header must load (bad lines are skipped): {e}") from None
    if not end_newline and lines:
        valid = valid[:-1] if lines[-1][0] == "valid" else valid  # a last line may be cut: checked below
    ts = t.events["ts_ns"].tolist()
    for line in valid:
        rec = json.loads(line)
        if rec["type"] == "event":
            assert rec["ts_ns"] in ts
    # Nothing the validator accepts is lost on the way to the tables.
    good = [r for r in (accepted(x) for _, x in lines) if r is not None]
    if end_newline:
        assert len(t.events) == sum(r["type"] == "event" and (r.get("src") or 0) == 0 for r in good)
        assert len(t.incidents) == sum(
            r["type"] == "incident" and (r.get("src") or 0) == 0 and ((r.get("victim") or {}).get("src") or 0) == 0
            for r in good
        )
    strict_ok = True
    try:
        tracer.load(p, strict=True)
    except BadTrace as e:
        strict_ok = False
        assert str(e).startswith(f"{p}:")
    bad = [w for w in t.warnings if "(line skipped)" in w or "bad line(s) skipped" in w]
    assert strict_ok == (not bad)


@seed(SEED)
@budget(200)
@given(data=st.binary(max_size=300), prefix=st.booleans())
def test_fuzz_load_any_bytes(tmp_path_factory, data, prefix):
    """Arbitrary bytes, with or without a good header first: a Trace or BadTrace, nothing else."""
    count("load() arbitrary bytes")
    p = tmp_path_factory.mktemp("fz") / "b.jsonl"
    p.write_bytes((HEADER.encode() + b"\n" if prefix else b"") + data)
    try:
        t = tracer.load(p)
        assert prefix or data.startswith(b"{")
        assert len(t.sources) == 1
    except BadTrace:
        assert not prefix


@seed(SEED)
@budget(60)
@given(cut=st.integers(0, 4000), junk=st.binary(max_size=64), which=st.sampled_from(["events", "incidents"]))
def test_fuzz_load_parquet(tmp_path_factory, cut, junk, which):
    """An exported pair with one file cut or overwritten: a Trace or BadTrace, nothing else."""
    count("load() Parquet")
    d = tmp_path_factory.mktemp("pq")
    frame.export(tracer.load(DATA / "unread_default.jsonl"), d / "x", "parquet")
    f = d / f"x.{which}.parquet"
    raw = f.read_bytes()
    cut = min(cut, len(raw))
    f.write_bytes(raw[:cut] + junk + raw[cut + len(junk) :])
    try:
        t = tracer.load(d / "x.events.parquet")
        assert len(t.sources) == 1
    except BadTrace as e:
        assert "x." in str(e)


@seed(SEED)
@budget(200)
@given(lines=st.lists(line_strategy, max_size=12))
def test_fuzz_tracefile_read(tmp_path_factory, lines):
    """The reader merge uses: validated records only; strict raises BadTrace naming FILE:LINE."""
    count("tracefile.read (merge's reader)")
    p = tmp_path_factory.mktemp("fz") / "r.jsonl"
    write_trace(p, lines, True)
    warnings: list[str] = []
    recs = list(tracefile.read(p, strict=False, warnings=warnings))
    good = [r for r in (accepted(x) for _, x in lines) if r is not None]
    assert recs[1:] == good
    assert len(recs) - 1 + sum("(line skipped)" in w for w in warnings) + sum(
        int(w.split(": ")[1].split()[0]) - tracefile.MAX_BAD_SHOWN for w in warnings if "in all" in w
    ) == len([x for _, x in lines if x.strip()])


def run_cli(argv, capsys) -> tuple[int, str, str]:
    try:
        cli.run([str(a) for a in argv])
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_clean_exit(code, err, allowed):
    assert code in allowed, (code, err)
    assert "Traceback" not in err
    errors = [ln for ln in err.splitlines() if ln.startswith("rsttrace: error:")]
    assert len(errors) == (0 if code == 0 else 1), err
    if code != 0:
        assert err.splitlines()[-1].startswith("rsttrace: error:")
    assert "rsttrace: error: unexpected" not in err  # the last-resort handler never fired


@seed(SEED)
@budget(60)
@given(lines=st.lists(line_strategy, max_size=8), as_json=st.booleans(), strict=st.booleans())
def test_fuzz_report_cli(tmp_path_factory, capsys, lines, as_json, strict):
    count("rsttrace report")
    p = tmp_path_factory.mktemp("fz") / "r.jsonl"
    write_trace(p, lines, True)
    args = ["report", p] + (["--json"] if as_json else []) + (["--strict"] if strict else [])
    code, out, err = run_cli(args, capsys)
    assert_clean_exit(code, err, {0, 10})
    assert "\x1b" not in err and (as_json or "\x1b" not in out)
    if as_json and code == 0:
        json.loads(out)


@seed(SEED)
@budget(40)
@given(lines=st.lists(line_strategy, max_size=8), fmt=st.sampled_from(["parquet", "csv"]))
def test_fuzz_export_cli(tmp_path_factory, capsys, lines, fmt):
    count("rsttrace export")
    d = tmp_path_factory.mktemp("fz")
    p = d / "e.jsonl"
    write_trace(p, lines, True)
    code, out, err = run_cli(["export", p, "--to", fmt], capsys)
    assert_clean_exit(code, err, {0})
    assert out.split() == [str(d / f"e.events.{fmt}"), str(d / f"e.incidents.{fmt}")]
    if fmt == "parquet":
        back = tracer.load(d / "e.events.parquet", strict=True)
        assert len(back.events) == len(tracer.load(p).events)


@seed(SEED)
@budget(40)
@given(a=st.lists(line_strategy, max_size=8), b=st.lists(line_strategy, max_size=8))
def test_fuzz_merge_cli(tmp_path_factory, capsys, a, b):
    count("rsttrace merge")
    d = tmp_path_factory.mktemp("fz")
    write_trace(d / "a.jsonl", a, True)
    write_trace(d / "b.jsonl", b, True)
    code, out, err = run_cli(["merge", d / "a.jsonl", d / "b.jsonl", "-o", d / "m.jsonl"], capsys)
    assert_clean_exit(code, err, {0})
    merged = tracer.load(d / "m.jsonl", strict=True)
    assert len(merged.events) == len(tracer.load(d / "a.jsonl").events) + len(tracer.load(d / "b.jsonl").events)


# -- the CLI's options ---------------------------------------------------------------------------

odd_text = st.one_of(
    st.sampled_from(
        [
            "",
            "0",
            "-1",
            "nan",
            "NaN",
            "inf",
            "-inf",
            "1e309",
            "0x10",
            "1_000",
            " 5",
            "99999",
            "4294967296",
            "65535",
            "65536",
            "0.05",
            "0.049",
            "60",
            "60.0001",
            "1e-400",
            "\x1b[2J",
            "\udcff",
            "abc",
            "/etc/passwd",
            "/proc/self/ns/net",
            "1" * 30,
        ]
    ),
    st.text(max_size=12),
    st.floats().map(repr),
    st.integers(-(1 << 40), 1 << 40).map(str),
)
OPTS = [
    "-p",
    "-c",
    "-P",
    "--netns",
    "--settle",
    "--duration",
    "--close-wait",
    "--close-wait-every",
    "--plan",
    "--buffer",
    "-o",
]


@seed(SEED)
@budget(400)
@given(
    pairs=st.lists(st.tuples(st.sampled_from(OPTS), odd_text), max_size=5),
    sub=st.sampled_from([None, "record", "doctor-parse"]),
)
def test_fuzz_cli_options(tmp_path_factory, capsys, monkeypatch, pairs, sub):
    """Whatever the option values: exit 0 with a valid Config, or one line and a documented
    code (2 usage, 9 filter, 10 output path), before anything is loaded."""
    count("CLI option parsing")
    seen = []
    monkeypatch.setattr(cli, "_run_session", lambda cfg, term, scenario=None: seen.append(cfg))
    monkeypatch.setattr(cli, "_require_root", lambda: None)
    monkeypatch.setattr(cli, "_btf_path", lambda: Path("/sys/kernel/btf/vmlinux"))
    d = tmp_path_factory.mktemp("cli")
    argv: list[str] = []
    for opt, val in pairs:
        if opt == "-o":
            val = str(d / "out.jsonl") if val == "" else str(d / val.replace("/", "_").replace("\0", "")[:20])
        argv += [opt, val]
    if sub == "record":
        argv = ["record", str(d / "rec.jsonl")] + argv
    elif sub == "doctor-parse":
        argv = argv + ["report", "--limit", "-1", str(d / "missing.jsonl")]
    code, out, err = run_cli(argv, capsys)
    assert_clean_exit(code, err, {0, 2, 9, 10})
    if code == 0:
        [cfg] = seen
        import math

        for v in (cfg.settle_s, cfg.close_wait_s, cfg.close_wait_every_s):
            assert math.isfinite(v)
        assert 0.05 <= cfg.settle_s <= 60
        assert cfg.duration is None or 0 < cfg.duration
        assert len(cfg.filters.pids) <= 1024 and len(cfg.filters.ports) <= 1024
        assert cfg.filters.comm is None or 1 <= len(cfg.filters.comm.encode()) <= 15
    else:
        assert seen == []


# -- the ring-buffer record decoder ----------------------------------------------------------------

DECODER = Decoder({1: "TCP_ABORT_ON_CLOSE"})


@seed(SEED)
@budget(3000)
@given(raw=st.binary(min_size=DECODER.size, max_size=DECODER.size + 16))
def test_fuzz_decoder(raw):
    """Any bytes the kernel could hand over decode to an Event that can be recorded, printed
    safely and read back by the trace reader unchanged."""
    count("Decoder.decode_bytes")
    ev = DECODER.decode_bytes(raw)
    assert isinstance(ev, Event) and "\0" not in ev.comm and len(ev.comm.encode()) <= 16 * 3
    line = tracefile.dumps(ev.to_dict())
    from tracer.terminal import safe

    assert "\x1b" not in safe(ev.comm)
    ts = struct.unpack_from("<Q", raw)[0]
    if ts < 1 << 63:  # CLOCK_MONOTONIC never reaches 2^63 ns (292 years)
        rec = tracefile.parse_record(line.encode())
        assert Event.from_dict(rec) == ev


@seed(SEED)
@budget(1000)
@given(text=st.text(alphabet=st.characters(codec=None), max_size=40), raw=st.binary(max_size=16))
def test_fuzz_terminal_safe(text, raw):
    """Whatever a name holds, what reaches the terminal has no control, format or separator
    character (so no escape sequence, no line break, no bidi override), and nothing printable
    is lost."""
    import unicodedata

    from tracer.terminal import fold, safe

    count("terminal.safe")
    for s in (text, raw.decode("utf-8", "surrogateescape")):
        shown = safe(s)
        assert not any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp", "Co", "Cn") for c in shown)
        assert all(c in shown for c in s if c.isprintable() and c != "\xad")
        words = [w for w in shown.split(" ") if w]
        for width in (1, 10, 80):
            assert [w for piece in fold(shown, width) for w in piece.split(" ") if w] == words


def test_fuzz_budget_report(capsys):
    """Says how many inputs each target tried (pytest -s shows it; the report quotes it)."""
    if not TRIED:
        pytest.skip("run with the fuzz targets")
    with capsys.disabled():
        sys.stderr.write("\nfuzz examples: " + ", ".join(f"{k} {v}" for k, v in TRIED.items()) + "\n")
    assert all(v >= 1 for v in TRIED.values())
