"""Recording survives kill -9 and Ctrl-C; traces of two hosts merge into one incident."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import pytest

import tracer
from testbed import scenarios
from testbed.ready import wait_ready

from .tracer_proc import Tracer

pytestmark = pytest.mark.root


@pytest.fixture(scope="module", autouse=True)
def workloads():
    scenarios.build_workloads()


def rsttrace(*args):
    return subprocess.run([sys.executable, "-m", "tracer", *args], capture_output=True, text=True, timeout=120)


def start_record(path, ready, *args):
    proc = subprocess.Popen(
        [sys.executable, "-m", "tracer", "record", str(path), "--settle", "0.3", "--ready-file", str(ready), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_ready(ready, proc.pid, proc.poll, lambda: proc.stderr.read(), proc.kill, what="rsttrace record")
    return proc


def wait_for_line(path, kind, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(json.loads(line)["type"] == kind for line in path.read_text().splitlines() if line.endswith("}")):
            return
        time.sleep(0.02)  # polling for the recorder's write
    raise AssertionError(f"no {kind} line in {path} within {timeout}s")


def test_record_survives_kill_9(tmp_path):
    path = tmp_path / "killed.jsonl"
    with scenarios.Netns("rsttrk") as ns:
        proc = start_record(path, tmp_path / "ready", "--netns", str(ns.inode), "-q")
        try:
            first = scenarios.unread_close(ns, unread=1000)
            wait_for_line(path, "incident")
            # Kill it while a second reset is being traced: its events are on their way.
            second = threading.Thread(target=lambda: scenarios.unread_close(ns, unread=777))
            second.start()
            wait_for_line(path, "event")
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            second.join(30)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    data = path.read_bytes()
    assert data.endswith(b"\n")  # no half-written line, not even the last
    records = [json.loads(line) for line in data.splitlines()]
    head = records[0]
    assert head["type"] == "header" and head["version"] == 2
    assert head["clock"] == "CLOCK_MONOTONIC" and head["filters"]["netns"] == ns.inode
    assert abs(head["wall_offset_ns"] + time.monotonic_ns() - time.time_ns()) < 10**9
    assert "summary" not in [r["type"] for r in records]  # it really died mid-run
    incs = [r for r in records if r["type"] == "incident"]
    assert incs[0]["culprit"]["pid"] == first.server_pid and incs[0]["bytes_discarded"] == 1000
    assert incs[0]["victim"]["pid"] == first.client_pid and incs[0]["victim"]["sigpipe"] == "killed"

    # The cut trace still loads and reports, with a warning saying why it ends early.
    t = tracer.load(path)
    assert len(t.events) == sum(r["type"] == "event" for r in records)
    assert t.incidents["culprit_pid"].iloc[0] == first.server_pid
    assert any("no summary line" in w for w in t.warnings)
    r = rsttrace("report", str(path))
    assert r.returncode == 0, r.stderr
    assert "no summary line" in r.stderr
    assert f"rst_server[{first.server_pid}] closed " in r.stdout and " with 1000 unread bytes -> RST" in r.stdout


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_record_completes_the_file_on_ctrl_c_and_sigterm(tmp_path, sig):
    path = tmp_path / "stopped.jsonl"
    with scenarios.Netns("rsttrs") as ns:
        proc = start_record(path, tmp_path / "ready", "--netns", str(ns.inode), "--json")
        try:
            res = scenarios.unread_close(ns, unread=1000, sigpipe="ignore")
        finally:
            proc.send_signal(sig)
            out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert records[-1]["type"] == "summary" and records[-1]["incidents"] == 1
    [inc] = [r for r in records if r["type"] == "incident"]
    assert json.loads(out) == inc  # what was printed is what was recorded
    assert inc["culprit"]["pid"] == res.server_pid and inc["victim"]["sigpipe"] == "ignored"


def test_two_hosts_two_tracers_merge_into_one_incident(tmp_path):
    """Server in namespace B, client in A; one tracer per namespace, as on two machines."""
    with scenarios.Hosts("rsttrm") as h:
        with Tracer("--netns", str(h.a.inode)) as ta, Tracer("--netns", str(h.b.inode)) as tb:
            res = scenarios.unread_close(h.b, unread=1000, server_ns=h.b, client_ns=h.a, server_addr=h.addr_b)
            inc_a, err_a, rc_a = ta.stop()
            inc_b, err_b, rc_b = tb.stop()
    assert (rc_a, rc_b) == (0, 0), err_a + err_b
    assert res.client_returncode == -13
    # Each host alone sees half the story.
    [sender] = inc_b
    assert sender["kind"] == "abort-on-close" and sender["victim"] is None
    assert sender["culprit"]["pid"] == res.server_pid and sender["bytes_discarded"] == 1000
    [receiver] = inc_a
    assert receiver["culprit"] is None and receiver["victim"]["pid"] == res.client_pid

    a, b, merged = tmp_path / "client-host.jsonl", tmp_path / "server-host.jsonl", tmp_path / "merged.jsonl"
    a.write_bytes(ta.trace.read_bytes())
    b.write_bytes(tb.trace.read_bytes())
    r = rsttrace("merge", str(a), str(b), "-o", str(merged), "--json")
    assert r.returncode == 0, r.stderr
    assert "1 joined across hosts" in r.stderr
    [inc] = [json.loads(line) for line in r.stdout.splitlines()]
    assert inc["kind"] == "abort-on-close" and inc["reason"] in ("TCP_ABORT_ON_CLOSE", None)
    assert inc["culprit"] == {"pid": res.server_pid, "comm": "rst_server"}
    assert inc["bytes_discarded"] == 1000 and inc["netns"] == h.b.inode
    assert inc["local"] == {"addr": h.addr_b, "port": res.server_port}
    assert inc["remote"] == {"addr": h.addr_a, "port": res.client_port}
    v = inc["victim"]
    assert (v["pid"], v["comm"], v["netns"], v["port"]) == (res.client_pid, "rst_client", h.a.inode, res.client_port)
    assert [(e["call"], e["errno"]) for e in v["errors"]] == [("write", "ECONNRESET"), ("write", "EPIPE")]
    assert v["sigpipe"] == "killed" and v["exit_signal"] == 13
    # One machine, one clock: the skew is the RST's flight plus the error of each recorder's
    # offset measurement, microseconds.
    assert abs(inc["clock_skew_ns"]) < 10**7
    assert inc["victim_incident"]["trace"] == "client-host.jsonl"

    t = tracer.load(merged)
    assert len(t.incidents) == 1
    row = t.incidents.iloc[0]
    assert row["trace"] == "server-host.jsonl" and row["victim_pid"] == res.client_pid
    assert row["victim_sigpipe"] == "killed" and row["bytes_discarded"] == 1000
    assert len(t.events) == sum(1 for p in (a, b) for line in p.read_text().splitlines() if '"type":"event"' in line)
    assert set(t.events["trace"]) == {"client-host.jsonl", "server-host.jsonl"}
    r = rsttrace("report", str(merged))
    assert r.returncode == 0, r.stderr
    assert "cross-host incidents (merged): 1" in r.stdout


CHURN = """
import socket, sys, time
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(64)
print("ready", flush=True)
end = time.monotonic() + float(sys.argv[1])  # a bound only: the test kills it once traced
while time.monotonic() < end:
    c = socket.create_connection(srv.getsockname()); c.sendall(b"x" * 64)
    s, _ = srv.accept(); s.close(); c.close()  # closed with 64 bytes unread: RST
"""


def test_namespace_filter_holds_from_the_first_event(tmp_path):
    """Resets churn in another namespace while the tracer starts: none may enter the trace,
    not even in the moment between attaching the programs and writing the filter."""
    with scenarios.Netns("rsttrn") as ns, scenarios.Netns("rsttro") as other:
        churn = subprocess.Popen(
            ["ip", "netns", "exec", other.name, sys.executable, "-c", CHURN, "600"], stdout=subprocess.PIPE, text=True
        )
        try:
            assert churn.stdout.readline() == "ready\n"
            with Tracer("--netns", str(ns.inode)) as t:
                res = scenarios.unread_close(ns, unread=1000)
                # Still churning, so the other namespace's resets overlap the whole trace.
                assert churn.poll() is None, churn.stdout.read()
                incidents, err, rc = t.stop()
                records = t.records()
        finally:
            churn.kill()
            churn.wait()
    assert rc == 0, err
    events = [r for r in records if r["type"] == "event"]
    assert {e["netns"] for e in events} == {ns.inode}
    assert [i["culprit"]["pid"] for i in incidents] == [res.server_pid]
    assert records[-1]["stats"]["filtered"] > 0  # the churn was there, and dropped in the kernel
