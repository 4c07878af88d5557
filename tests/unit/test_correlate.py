"""Correlation over recorded event streams (recorded on 6.18 by the live tests' scenarios)."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

from tracer import tracefile
from tracer.correlate import Correlator
from tracer.events import Event

DATA = Path(__file__).parent.parent / "data"


def events_of(name: str) -> list[Event]:
    return [Event.from_dict(r) for r in tracefile.read(DATA / name) if r["type"] == "event"]


def incidents(events, **kw) -> list[dict]:
    return [i.to_dict() for i in Correlator(**kw).run(events)]


def recorded_incidents(name: str) -> list[dict]:
    return [r for r in tracefile.read(DATA / name) if r["type"] == "incident"]


def strip_wall(incs):
    for i in incs:
        i["timestamps"]["wall_ns"] = None
    return incs


def live_pids() -> tuple[int, int]:
    """Server and client pids of the recorded seed scenario, from its processes' own events."""
    evs = events_of("unread_default.jsonl")
    server = next(e.pid for e in evs if e.kind == "close" and e.ctx == "task")
    client = next(e.pid for e in evs if e.kind == "io_error")
    return server, client


def test_replay_reproduces_the_live_incident():
    evs = events_of("unread_default.jsonl")
    server, client = live_pids()
    [inc] = incidents(evs)
    assert inc["kind"] == "abort-on-close" and inc["reason"] == "TCP_ABORT_ON_CLOSE"
    assert inc["culprit"] == {"pid": server, "comm": "rst_server"}
    assert inc["bytes_discarded"] == 1000
    close = next(e for e in evs if e.kind == "close")
    assert (inc["local"]["port"], inc["remote"]["port"]) == (close.lport, close.rport)
    v = inc["victim"]
    assert (v["pid"], v["comm"]) == (client, "rst_client")
    assert [(e["call"], e["errno"]) for e in v["errors"]] == [("write", "ECONNRESET"), ("write", "EPIPE")]
    assert v["sigpipe"] == "killed" and v["exit_signal"] == 13
    assert strip_wall([inc]) == strip_wall(recorded_incidents("unread_default.jsonl"))


def test_nosignal_fate_is_none():
    [inc] = incidents(events_of("unread_nosignal.jsonl"))
    assert inc["victim"]["sigpipe"] == "none"
    assert [e["errno"] for e in inc["victim"]["errors"]] == ["ECONNRESET", "EPIPE", "EPIPE"]


def test_out_of_order_delivery_gives_the_same_incident():
    evs = events_of("unread_default.jsonl")
    expected = incidents(evs)
    for seed in range(20):
        shuffled = evs[:]
        random.Random(seed).shuffle(shuffled)
        assert incidents(shuffled) == expected


def test_culprit_never_taken_from_interrupt_context():
    evs = events_of("unread_default.jsonl")
    # The client's RST handling ran inside the server's close(): current was the server.
    irq = [e for e in evs if e.ctx == "irq"]
    assert irq and all(e.comm == "rst_server" for e in irq)
    [inc] = incidents(evs)
    assert inc["victim"]["pid"] == live_pids()[1]  # not the server that happened to be running


def test_socket_address_reuse_starts_a_new_lifetime():
    """Two connections, the second reusing both sockets' kernel addresses after destroy."""
    evs = events_of("unread_default.jsonl")
    t_end = max(e.ts_ns for e in evs)
    second = [replace(e, ts_ns=e.ts_ns + t_end + 10**9, pid=e.pid + 1000 if e.pid else 0,
                      tid=e.tid + 1000 if e.tid else 0,
                      lport=e.lport + 1, rport=e.rport + 1) for e in evs]
    out = incidents(evs + second)
    assert len(out) == 2
    server, client = live_pids()
    assert [i["culprit"]["pid"] for i in out] == [server, server + 1000]
    assert [i["victim"]["pid"] for i in out] == [client, client + 1000]
    assert [len(i["victim"]["errors"]) for i in out] == [2, 2]


def test_clean_lingering_close_has_no_events_and_no_incident():
    assert events_of("clean_lingering.jsonl") == []
    assert incidents([]) == []


def test_remote_peer_incident_is_reported_after_settle():
    evs = [e for e in events_of("unread_default.jsonl") if e.comm == "rst_server" and e.ctx == "task"]
    [inc] = incidents(evs, settle_ns=10**8)
    assert inc["victim"] is None and inc["bytes_discarded"] == 1000
