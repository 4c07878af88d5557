"""Correlation over recorded event streams (recorded on 6.18 by the live tests' scenarios)."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

from tracer import tracefile
from tracer.correlate import Correlator
from tracer.events import Event

DATA = Path(__file__).parent.parent / "data"


class Recorded(list):
    """A recording's events, with the cgroup paths the live tracer resolved (its "cgroup"
    records), so that a replay names the same cgroups."""

    cgroups: dict[int, str | None] = {}


def events_of(name: str) -> Recorded:
    recs = list(tracefile.read(DATA / name))
    out = Recorded(Event.from_dict(r) for r in recs if r["type"] == "event")
    out.cgroups = {r["id"]: r["path"] for r in recs if r["type"] == "cgroup"}
    return out


def incidents(events, **kw) -> list[dict]:
    kw.setdefault("cgroup_path", getattr(events, "cgroups", {}).get)
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
        assert incidents(shuffled, cgroup_path=evs.cgroups.get) == expected


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
    second = [
        replace(
            e,
            ts_ns=e.ts_ns + t_end + 10**9,
            pid=e.pid + 1000 if e.pid else 0,
            tid=e.tid + 1000 if e.tid else 0,
            lport=e.lport + 1,
            rport=e.rport + 1,
        )
        for e in evs
    ]
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


def test_a_recycled_socket_address_is_a_new_socket_when_its_end_was_lost():
    """Under a reset storm the ring overflowed and the client socket's destroy was lost; the
    kernel then gave its address to the next connection's server socket. Its close (64 bytes
    unread) used to be pinned on the old incident: no culprit, 0 bytes (bench ingest: 21 such
    incidents; 481 in a 15 s run with the trace recorded). The 4-tuple tells the sockets apart."""
    X, S1, C2 = 0xFFFF8001, 0xFFFF8002, 0xFFFF8004
    ns = 7

    def ev(ts, kind, sk, laddr, lport, raddr, rport, **kw):
        base = dict(
            ts_ns=ts,
            kind=kind,
            pid=100,
            tid=100,
            comm="churn",
            ctx="task",
            sk=sk,
            netns=ns,
            laddr=laddr,
            lport=lport,
            raddr=raddr,
            rport=rport,
            state="CLOSE",
        )
        base.update(kw)
        return Event(**base)

    ms = 1_000_000
    evs = [
        # Connection A: the server closes with 64 bytes unread; client socket X gets the RST.
        ev(1 * ms, "close", S1, "127.0.0.2", 80, "127.0.0.1", 40000, oldstate="ESTABLISHED", bytes=64),
        ev(2 * ms, "recv_reset", X, "127.0.0.1", 40000, "127.0.0.2", 80, ctx="irq", state="ESTABLISHED"),
        ev(3 * ms, "send_reset", S1, "127.0.0.2", 80, "127.0.0.1", 40000, reason="TCP_ABORT_ON_CLOSE", bytes=64),
        ev(4 * ms, "destroy", S1, "127.0.0.2", 80, "127.0.0.1", 40000, flags=["orphan"]),
        ev(5 * ms, "io_error", X, "127.0.0.1", 40000, "127.0.0.2", 80, err="ECONNRESET", flags=["send"]),
        # (X's destroy was lost.) Connection B: its server socket has X's address.
        ev(9 * ms, "close", X, "127.0.0.2", 80, "127.0.0.1", 40002, pid=200, oldstate="ESTABLISHED", bytes=64),
        ev(10 * ms, "recv_reset", C2, "127.0.0.1", 40002, "127.0.0.2", 80, ctx="irq", state="ESTABLISHED"),
        ev(
            11 * ms,
            "send_reset",
            X,
            "127.0.0.2",
            80,
            "127.0.0.1",
            40002,
            pid=200,
            reason="TCP_ABORT_ON_CLOSE",
            bytes=64,
        ),
        ev(12 * ms, "destroy", X, "127.0.0.2", 80, "127.0.0.1", 40002, pid=200, flags=["orphan"]),
        ev(13 * ms, "io_error", C2, "127.0.0.1", 40002, "127.0.0.2", 80, pid=300, err="ECONNRESET", flags=["send"]),
        ev(14 * ms, "destroy", C2, "127.0.0.1", 40002, "127.0.0.2", 80, pid=300),
    ]
    c = Correlator(settle_ns=100 * ms)
    # A stays open (its victim's end was never seen) and is reported last.
    b, a = [i.to_dict() for i in c.run(evs)]
    assert (a["kind"], a["bytes_discarded"], a["culprit"]["pid"], a["remote"]["port"]) == (
        "abort-on-close",
        64,
        100,
        40000,
    )
    assert (b["kind"], b["bytes_discarded"], b["culprit"]["pid"], b["remote"]["port"]) == (
        "abort-on-close",
        64,
        200,
        40002,
    )
    assert b["victim"]["pid"] == 300 and b["victim"]["errors"][0]["errno"] == "ECONNRESET"
    assert c.stats["stale"] == 1
