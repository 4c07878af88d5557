"""`rsttrace report`: incidents and summary of recorded traces, for people and for scripts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pandas")

from tracer.errors import ExitStatus  # noqa: E402

# Traces recorded by the first release (format version 1): old files must keep loading.
DATA = Path(__file__).parent.parent / "data" / "v1"
FILES = [str(DATA / n) for n in ("unread_default.jsonl", "unread_nosignal.jsonl", "clean_lingering.jsonl")]


def report(*args):
    return subprocess.run(
        [sys.executable, "-m", "tracer", "report", *args], capture_output=True, text=True, timeout=120
    )


def test_text_report():
    r = report(*FILES)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert r.stdout.splitlines() == [
        "trace unread_default.jsonl: host vm, kernel 6.18.44-fc-v669",
        "trace unread_nosignal.jsonl: host vm, kernel 6.18.44-fc-v669",
        "trace clean_lingering.jsonl: host vm, kernel 6.18.44-fc-v669",
        "2 incident(s), 20 event(s), 2026-11-21 07:22:19.340 .. 2026-11-21 07:22:20.387 UTC",
        "  2026-11-21 07:22:19.340 abort-on-close: rst_server[16107] closed 127.0.0.1:35317<-127.0.0.1:56894 "
        "with 1000 unread bytes -> RST (abort on close) -> rst_client[16109] write: ECONNRESET, write: EPIPE, "
        "SIGPIPE: killed",
        "  2026-11-21 07:22:20.387 abort-on-close: rst_server[16116] closed 127.0.0.1:41893<-127.0.0.1:43862 "
        "with 1000 unread bytes -> RST (abort on close) -> rst_client[16118] write: ECONNRESET, "
        "write: EPIPE (x2), SIGPIPE: none",
        "by kind: abort-on-close 2",
        "by culprit (bytes discarded, incidents, processes):",
        "  rst_server: 2000 bytes, 2 incident(s), 2 pid(s)",
        "by victim (incidents, fates):",
        "  rst_client: 2 incident(s): killed 1, none 1",
        "bytes discarded: 2000",
        "signal fates: killed 1, none 1",
        "CLOSE_WAIT ages: none in this trace",
        "recorder: 20 events received, 0 lost, 0 filtered in kernel",
    ]


def test_limit_shows_the_last_incidents():
    r = report("--limit", "1", *FILES)
    lines = r.stdout.splitlines()
    assert "  (1 earlier incident(s) not shown; --limit 0 shows all)" in lines
    assert sum("abort-on-close: rst_server" in x for x in lines) == 1 and "rst_server[16116]" in r.stdout


def test_json_report():
    r = report("--json", *FILES)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert (s["events"], s["incidents"], s["bytes_discarded"]) == (20, 2, 2000)
    assert s["events_by_kind"] == {
        "io_error": 5,
        "close": 4,
        "destroy": 4,
        "recv_reset": 2,
        "send_reset": 2,
        "sk_error": 2,
        "exit": 1,
    }
    assert s["by_kind"] == {"abort-on-close": 2}
    assert s["by_culprit"] == [{"comm": "rst_server", "incidents": 2, "bytes_discarded": 2000, "pids": 2}]
    assert s["by_victim"] == [{"comm": "rst_client", "incidents": 2, "pids": 2, "fates": {"killed": 1, "none": 1}}]
    assert s["signal_fates"] == {"killed": 1, "none": 1}
    assert s["close_wait_ages_ns"] is None and s["recorder"]["lost"] == 0
    first = s["incidents_list"][0]
    assert (first["culprit_pid"], first["victim_pid"], first["time"]) == (
        16107,
        16109,
        "2026-11-21T07:22:19.340051135",
    )  # UTC


def test_close_wait_ages_and_kinds_from_the_data(tmp_path):
    """Kinds are whatever the trace holds; CLOSE_WAIT ages are summarised when present."""
    head = (DATA / "unread_default.jsonl").read_text().splitlines()[0]
    incs = []
    for n, age in enumerate((3, 60, 7200), 1):
        incs.append(
            {
                "type": "incident",
                "id": n,
                "kind": "close-wait",
                "culprit": {"pid": 50 + n, "comm": "leaky"},
                "bytes_discarded": 0,
                "local": {"addr": "10.0.0.1", "port": 80},
                "remote": {"addr": "10.0.0.2", "port": 4000 + n},
                "victim": None,
                "close_wait_age_ns": age * 10**9,
                "timestamps": {
                    "first_ns": n * 10**9,
                    "close_ns": None,
                    "reset_ns": None,
                    "last_ns": n * 10**9,
                    "wall_ns": None,
                },
            }
        )
    p = tmp_path / "cw.jsonl"
    p.write_text("\n".join([head] + [json.dumps(i) for i in incs]) + "\n")
    r = report(str(p))
    assert r.returncode == 0
    assert "no summary line" in r.stderr
    assert "by kind: close-wait 3" in r.stdout
    assert "CLOSE_WAIT ages: 3 socket(s), min 3.000 s, median 60.000 s, max 2.0 h" in r.stdout
    assert "close-wait: leaky[52] has not closed 10.0.0.1:80<-10.0.0.2:4002: CLOSE_WAIT 1m00s\n" in r.stdout
    assert "signal fates: victim not traced 3" in r.stdout
    s = json.loads(report("--json", str(p)).stdout)
    assert s["close_wait_ages_ns"] == {"count": 3, "min": 3 * 10**9, "median": 60 * 10**9, "max": 7200 * 10**9}


def test_bad_trace_is_one_line_and_exit_10(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text((DATA / "unread_default.jsonl").read_text()[:-30])
    r = report("--strict", str(p))
    assert r.returncode == ExitStatus.BAD_TRACE
    assert "Traceback" not in r.stderr
    assert r.stderr.strip() == f"rsttrace: error: {p}:13: truncated last line"
    (tmp_path / "empty").mkdir()
    r = report(str(tmp_path / "empty"))
    assert r.returncode == ExitStatus.BAD_TRACE
    assert r.stderr.strip().endswith("no traces in this folder (*.jsonl, *.events.parquet)")


def test_impact_and_cgroups_reach_the_report_and_the_tables():
    """A recorded 0.2 trace: the summary counts incidents by impact; each side's cgroup and
    container are columns of their own, in both readers (arrow's and the precise one)."""
    pytest.importorskip("pandas")
    import tracer
    from tracer import report as rep

    path = Path(__file__).parent.parent / "data" / "early_reply.jsonl"
    t = tracer.load(path)
    summary = rep.summarize(t)
    assert summary["by_impact"] == {"unaffected": 1}
    assert "by impact on the other side: unaffected 1" in rep.text(summary, [])
    [row] = t.incidents.to_dict("records")
    assert row["impact"] == "unaffected" and row["resets"] == 1
    assert row["culprit_cgroup_id"] == row["victim_cgroup_id"] > 0
    assert isinstance(row["culprit_cgroup_path"], str) and row["culprit_cgroup_path"].startswith("/")


def test_report_lines_are_the_live_chains():
    """One renderer: every recorded incident's report line is its live chain on one line."""
    from tracer import frame, render, tracefile
    from tracer.report import incident_line

    data = Path(__file__).parent.parent / "data"
    names = sorted(p.name for p in data.glob("*.jsonl"))
    assert len(names) >= 15
    for name in names:
        incs = [r for r in tracefile.read(data / name) if r["type"] == "incident"]
        rows = frame.load(data / name).incidents.to_dict("records")
        assert len(rows) == len(incs), name
        for inc, row in zip(incs, rows):
            chain = render.chain_lines(inc)
            assert (
                incident_line(row).split(": ", 1)[1]
                == " ".join([chain[0]] + [x.strip() for x in chain[1:]]) + f" [{inc['impact']}]"
            ), name
