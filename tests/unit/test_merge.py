"""Merging traces of two hosts: halves of a recorded incident, with synthetic clock offsets."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from tracer import merge, tracefile
from tracer.correlate import Correlator
from tracer.errors import BadTrace, ExitStatus
from tracer.events import Event

# Traces recorded by the first release (format version 1): old files must keep loading.
DATA = Path(__file__).parent.parent / "data" / "v1"
WALL = 1_763_700_000 * 10**9  # the sender's wall-clock offset (CLOCK_MONOTONIC -> wall)


def recorded() -> tuple[dict, list[Event]]:
    recs = list(tracefile.read(DATA / "unread_default.jsonl"))
    return recs[0], [Event.from_dict(r) for r in recs if r["type"] == "event"]


def write_host(path: Path, events: list[Event], wall_offset: int, host: str) -> dict:
    incs = [i.to_dict(wall_offset) for i in Correlator().run(events)]
    head = dict(tracefile.header({"name": "tracepoint"}, {}), host=host, wall_offset_ns=wall_offset)
    w = tracefile.TraceWriter(path, head)
    w.write([e.to_dict() for e in events] + incs + [{"type": "summary", "stats": {"lost": 0}}])
    w.close()
    return incs


def two_hosts(tmp_path, clock_error_ns: int, boot_shift_ns: int = 7 * 10**12, repeat_after_ns: int | None = None):
    """The recorded incident split by socket: server side on host S, client side on host C,
    whose monotonic clock started boot_shift_ns earlier and whose wall clock is off by
    clock_error_ns. With repeat_after_ns, the same 4-tuple is reset again that much later."""
    _, evs = recorded()
    server_port = next(e.lport for e in evs if e.kind == "close")
    runs = [evs]
    if repeat_after_ns is not None:
        runs.append(
            [
                replace(
                    e, ts_ns=e.ts_ns + repeat_after_ns, pid=e.pid + 1 if e.pid else 0, tid=e.tid + 1 if e.tid else 0
                )
                for e in evs
            ]
        )
    srv = [e for run in runs for e in run if e.lport == server_port]
    cli = [replace(e, ts_ns=e.ts_ns + boot_shift_ns) for run in runs for e in run if e.lport != server_port]
    s_incs = write_host(tmp_path / "server.jsonl", srv, WALL, "server-host")
    c_incs = write_host(tmp_path / "client.jsonl", cli, WALL - boot_shift_ns + clock_error_ns, "client-host")
    return s_incs, c_incs


def test_each_host_alone_has_half_an_incident(tmp_path):
    s_incs, c_incs = two_hosts(tmp_path, 0)
    [s], [c] = s_incs, c_incs
    assert merge.is_sender_half(s) and not merge.is_receiver_half(s)
    assert merge.is_receiver_half(c) and not merge.is_sender_half(c)
    assert s["kind"] == "abort-on-close" and s["bytes_discarded"] == 1000 and s["victim"] is None
    assert c["kind"] == "reset-received" and c["culprit"] is None and c["victim"]["pid"] == 16109


@pytest.mark.parametrize("error_ns", [0, 1_500_000_000, -1_900_000_000])
def test_halves_join_despite_clock_offset(tmp_path, error_ns):
    two_hosts(tmp_path, error_ns)
    sources, incs, stats = merge.merge([tmp_path / "client.jsonl", tmp_path / "server.jsonl"])
    assert stats["cross_host"] == 1 and stats["incidents"] == 1
    [inc] = incs
    assert inc["kind"] == "abort-on-close" and inc["culprit"] == {"pid": 16107, "comm": "rst_server"}
    assert inc["bytes_discarded"] == 1000
    v = inc["victim"]
    assert (v["pid"], v["comm"], v["sigpipe"], v["exit_signal"]) == (16109, "rst_client", "killed", 13)
    assert [(e["call"], e["errno"]) for e in v["errors"]] == [("write", "ECONNRESET"), ("write", "EPIPE")]
    assert sources[inc["src"]]["host"] == "server-host" and sources[v["src"]]["host"] == "client-host"
    # The skew is the clock error plus the RST's flight (24477 ns from close to the peer's
    # receive_reset in the recording).
    assert inc["clock_skew_ns"] == error_ns + 24_477


def test_offset_beyond_tolerance_does_not_join(tmp_path):
    two_hosts(tmp_path, 2_100_000_000)
    _, incs, stats = merge.merge([tmp_path / "client.jsonl", tmp_path / "server.jsonl"])
    assert stats["cross_host"] == 0 and stats["unmatched_senders"] == 1 and stats["unmatched_receivers"] == 1
    assert len(incs) == 2
    # A wider tolerance joins them.
    _, incs, stats = merge.merge([tmp_path / "client.jsonl", tmp_path / "server.jsonl"], 3 * 10**9)
    assert stats["cross_host"] == 1 and len(incs) == 1


def test_reused_four_tuple_joins_the_nearest_pair(tmp_path):
    """The same connection 4-tuple reset twice, 1.2 s apart, with 0.5 s of clock error:
    both resets are within tolerance of both victims; the nearest pairs win."""
    two_hosts(tmp_path, 500_000_000, repeat_after_ns=1_200_000_000)
    _, incs, stats = merge.merge([tmp_path / "server.jsonl", tmp_path / "client.jsonl"])
    assert stats["cross_host"] == 2 and len(incs) == 2
    assert [(i["culprit"]["pid"], i["victim"]["pid"]) for i in incs] == [(16107, 16109), (16108, 16110)]
    assert [i["clock_skew_ns"] for i in incs] == [500_024_477, 500_024_477]
    assert [i["id"] for i in incs] == [1, 2]


def test_merge_cli_writes_a_trace_that_loads(tmp_path, monkeypatch):
    pd = pytest.importorskip("pandas")
    import tracer
    from tracer import frame

    two_hosts(tmp_path, -300_000_000)
    out = tmp_path / "merged.jsonl"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "tracer",
            "merge",
            str(tmp_path / "server.jsonl"),
            str(tmp_path / "client.jsonl"),
            "-o",
            str(out),
            "--tolerance",
            "0.5",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip().endswith(
        "1 joined across hosts (tolerance 0.5 s); unmatched: 0 sender(s) without victim, 0 victim(s) without sender"
    )
    assert "abort-on-close: rst_server[16107]" in r.stdout and "-> rst_client[16109] on client-host" in r.stdout
    t = tracer.load(out)

    def refuse(lines):
        raise ValueError("forced")

    monkeypatch.setattr(frame, "_incidents_fast", refuse)  # the precise reader agrees
    pd.testing.assert_frame_equal(tracer.load(out).incidents, t.incidents)
    [row] = t.incidents.to_dict("records")
    assert (row["host"], row["victim_host"], row["clock_skew_ns"]) == ("server-host", "client-host", -299_975_523)
    assert (row["trace"], row["victim_trace"]) == ("server.jsonl", "client.jsonl")
    assert (row["victim_incident_trace"], row["victim_incident_kind"]) == ("client.jsonl", "reset-received")
    assert (row["culprit_pid"], row["victim_pid"], row["bytes_discarded"]) == (16107, 16109, 1000)
    # Each host's events keep their own clock: wall time = ts_ns + that host's offset.
    ev = t.events
    assert len(ev) == 10 and set(ev["host"]) == {"server-host", "client-host"}
    close = ev[ev["kind"] == "close"].iloc[0]
    assert close["time"].value == close["ts_ns"] + WALL
    recv = ev[ev["kind"] == "recv_reset"].iloc[0]
    assert recv["time"].value - close["time"].value == 24_477 - 300_000_000


def test_merge_needs_wall_clock_offsets(tmp_path):
    two_hosts(tmp_path, 0)
    p = tmp_path / "server.jsonl"
    lines = p.read_text().splitlines()
    head = json.loads(lines[0])
    head["wall_offset_ns"] = 0
    p.write_text("\n".join([json.dumps(head), *lines[1:]]) + "\n")
    with pytest.raises(BadTrace, match="server.jsonl: no wall-clock offset"):
        merge.merge([tmp_path / "client.jsonl", p])
    r = subprocess.run(
        [sys.executable, "-m", "tracer", "merge", str(tmp_path / "client.jsonl")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == ExitStatus.USAGE and "at least two traces" in r.stderr
