"""Smoke runs of the benchmark machinery (bench/): exact counts at tiny rates, no timing."""

from __future__ import annotations

import json

import pytest

from bench import harness as h


@pytest.mark.root
def test_churn_makes_the_exact_mix_and_rsttrace_reports_each_reset(tmp_path):
    unread_bp, linger_bp, count = 1000, 500, 2000
    with h.churn_netns("rstbt") as ns:
        h.prepare_netns(ns)
        tp = h.TracerProc("rsttrace", tmp_path)  # host-wide, as the bench runs it
        tp.start()
        rep = h.run_churn(ns, count=count, unread_bp=unread_bp, linger_bp=linger_bp, inflight=8)
        st = tp.stop()
        incs = h.read_incidents(st.outfile, ns.inode)
    assert h.expected_mix(count, unread_bp, linger_bp) == (200, 100)
    assert (rep["connections"], rep["normal"], rep["unread"], rep["linger0"]) == (2000, 1700, 200, 100)
    assert (rep["resets_seen"], rep["unexpected"], rep["connect_errors"]) == (300, 0, 0)
    assert rep["server"] == {"normal": 1700, "unread": 200, "linger0": 100, "bad": 0}
    assert rep["counters"]["TcpExt.TCPAbortOnClose"] == 200
    assert rep["counters"]["TcpExt.TCPAbortOnData"] == 100
    assert (st.returncode, st.lost) == (0, 0)
    assert rep["counters"]["Tcp.OutRsts"] == 300
    check = h.check_incidents(incs, 200, 100, rep["counters"]["Tcp.OutRsts"])
    assert check["exact"] and check["other_incidents"] == 0
    assert check["kinds"] == {"abort-on-close": 200, "linger-zero": 100}
    assert check["bytes_not_64"] == 0
    assert check["victims_read_econnreset"] == 300
    assert {i["culprit"]["pid"] for i in incs} == {rep["server_pid"]}
    assert {i["victim"]["pid"] for i in incs} == {rep["client_pid"]}


def _has_prctl_tracepoint() -> bool:
    from tracer.btf import Btf, BtfError

    try:
        return Btf.load().typedef_params("btf_trace_task_prctl_unknown") is not None
    except (OSError, BtfError):
        return False


@pytest.mark.root
@pytest.mark.skipif(
    not _has_prctl_tracepoint(),
    reason="task:task_prctl_unknown (the synthetic source's trigger) arrived in kernel 6.13",
)
def test_synthetic_source_goes_through_the_real_path(tmp_path):
    trace = tmp_path / "trace.jsonl"
    with h.churn_netns("rstbt") as ns:
        tp = h.TracerProc(
            "rsttrace", tmp_path, args=("--netns", str(ns.inode), "-o", str(trace)), env={"RSTTRACE_BENCH_SYNTH": "1"}
        )
        tp.start()
        rep = h.run_synth(4, 2000, 0.5, netns=ns)
        st = tp.stop()
        incs = [i for i in h.read_incidents(st.outfile) if (i["culprit"] or {}).get("comm") == "synth"]
    n = rep["incidents"]
    assert n > 0 and n % 4 == 0 and rep["events"] == 7 * n
    events = [e for e in h.read_incidents(trace) if e["type"] == "event"]
    # A just-deleted namespace's inode can be reused while its last sockets are torn down,
    # so a few foreign events may pass the netns filter: count the synthetic ones.
    assert (st.returncode, st.lost, st.received) == (0, 0, len(events))
    assert sum(e["comm"] == "synth" for e in events) == 7 * n
    assert len(incs) == n
    assert {(i["kind"], i["bytes_discarded"], i["culprit"]["comm"], i["victim"]["comm"]) for i in incs} == {
        ("abort-on-close", 64, "synth", "synth")
    }
    assert all([e["errno"] for e in i["victim"]["errors"]] == ["ECONNRESET"] for i in incs)


@pytest.mark.root
@pytest.mark.skipif(not h.TCPSTATES.exists(), reason="bcc's tcpstates not installed (bench/run installs it)")
def test_tcpstates_runs_here_and_stops(tmp_path):
    with h.churn_netns("rstbt") as ns:
        h.prepare_netns(ns)
        tp = h.TracerProc("tcpstates", tmp_path)
        tp.start()
        rep = h.run_churn(ns, count=100, inflight=4)
        st = tp.stop()
    assert rep["normal"] == 100
    assert (st.returncode, st.lost) == (0, 0)
    # The header plus at least the 100 server-side moves to CLOSE.
    assert st.lines > 100


def test_fleet_part_runs_without_root_and_every_engine_finds_the_planted_pairs(tmp_path, monkeypatch):
    """`bench/run --only fleet` at a tiny size, as a user without root: nothing is built, every
    engine's merge finds exactly what the generator planted, and the engines print the same."""
    pytest.importorskip("duckdb")
    pytest.importorskip("distributed")
    from bench import __main__ as bench

    def no_build(name):
        raise AssertionError(f"the fleet part built {name}")

    monkeypatch.setattr(bench.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(bench.h, "build", no_build)
    out = tmp_path / "R.md"
    # Another part still needs root: refused before anything runs.
    assert bench.main(["--only", "fleet,startup", "--out", str(out)]) == 3 and not out.exists()
    assert bench.main(["--only", "fleet", "--fleet-pair", "2x2000", "--fleet-whole", "4x4000", "--out", str(out)]) == 0
    f = json.loads(out.with_suffix(".json").read_text())["parts"]["fleet"]
    pair, whole = f["pair"], f["whole"]
    # fleet_gen: 10 events a connection, every tenth on one host; with seed 1 the pair's clock
    # errors are within 2 s of each other (every split connection must join), the four hosts' let
    # 239 of 360 join (fleet_gen's own count, which every engine's merge must reproduce).
    assert {k: pair["generated"][k] for k in ("hosts", "events", "connections", "split", "local", "planted")} == {
        "hosts": 2,
        "events": 2000,
        "connections": 200,
        "split": 180,
        "local": 20,
        "planted": 180,
    }
    assert {k: whole["generated"][k] for k in ("hosts", "events", "connections", "split", "local", "planted")} == {
        "hosts": 4,
        "events": 4000,
        "connections": 400,
        "split": 360,
        "local": 40,
        "planted": 239,
    }
    for scale, engines, expect in (
        (pair, ["pandas", "duckdb", "dask"], (2, 200, 180, 0, 0)),
        (whole, ["duckdb", "dask"], (4, 40 + 2 * 360 - 239, 239, 121, 121)),
    ):
        assert list(scale["engines"]) == engines
        keys = ("recordings", "incidents", "cross_host", "unmatched_senders", "unmatched_receivers")
        assert scale["expected"] == dict(zip(keys, expect))
        for eng, runs in scale["engines"].items():
            assert runs["merge"]["note"] == scale["expected"] and runs["merge"]["exact"]
            # One line per merged incident on stdout.
            assert runs["merge"]["stdout_lines"] == expect[1]
            for r in runs.values():
                assert r["returncode"] == 0
                # The client, its 2 workers (and at times a helper process), or one process.
                assert (r["processes"] >= 3) if eng == "dask" else (r["processes"] == 1)
                assert r["peak_rss_kb"] >= r["largest_rss_sum_kb"] > 0
        assert scale["same_merge_output"] and scale["same_report_output"]
        assert scale["all_exit_0"] and scale["all_exact"]
        assert scale["peak_rss_kb"] == {e: max(r["peak_rss_kb"] for r in scale["engines"][e].values()) for e in engines}
    assert pair["report_same_as_pandas"]
    assert list(pair["engines"]["pandas"]) == ["merge", "merge_to_file", "report"]
    assert f["ok"] and f["memory_met"] == {"duckdb": True, "dask": True}
    text = out.read_text()
    assert "## Fleet: merge and report by engine" in text
    assert "### Two hosts: 2 hosts, 2,000 events" in text and "### The whole fleet: 4 hosts, 4,000 events" in text
    assert "DuckDB vs pandas: merge" in text and "peak memory (target under 2 GB): duckdb" in text
