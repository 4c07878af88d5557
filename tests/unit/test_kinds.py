"""Each incident kind from recorded 6.18 streams, and the same kinds with what older kernels lack."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tracer import tracefile
from tracer.correlate import Correlator
from tracer import kinds as kind_table
from tracer.events import Event
from tracer.render import chain_lines

from .test_correlate import DATA, events_of, incidents, strip_wall

# recorded stream -> the kinds its incidents have (in report order)
KINDS = {
    "unread_default": ["abort-on-close"],
    "linger_zero": ["linger-zero"],
    "killed_unread": ["process-killed"],
    "killed_fin": ["process-killed"],
    "destroyed": ["socket-destroyed"],
    "linger2": ["linger2-abort"],
    "refused": ["connection-refused"],
    "close_wait": ["close-wait", "close-wait"],  # overdue (the sweep's event), then closed
    "rto_timeout": ["retransmit-timeout"],
    "keepalive_timeout": ["keepalive-timeout"],
    "crash_reboot": ["no-socket", "process-killed"],
    "write_after_close": ["write-after-close"],
    "early_reply": ["abort-on-close"],
}


def recorded(name: str) -> list[dict]:
    return [r for r in tracefile.read(DATA / f"{name}.jsonl") if r["type"] == "incident"]


@pytest.mark.parametrize("name", sorted(KINDS))
def test_replay_gives_the_live_incidents(name):
    replayed = incidents(events_of(f"{name}.jsonl"))
    assert sorted(i["kind"] for i in replayed) == sorted(KINDS[name])
    # Which of two settled incidents is reported first depends on when the settle clock ticked
    # (live: per drain; replay: per event): the same incidents, whatever the order.
    by_id = lambda incs: sorted(strip_wall(incs), key=lambda i: i["id"])  # noqa: E731
    assert by_id(replayed) == by_id(recorded(name))


def test_every_kind_has_words_and_a_chain_line():
    for name in KINDS:
        for inc in recorded(name):
            k = kind_table.KINDS[inc["kind"]]
            summary, explanation, advice = k.summary, k.why, k.fix
            assert (inc["summary"], inc["explanation"], inc["advice"]) == (summary, explanation, advice)
            assert explanation and advice
            lines = chain_lines(inc, explain=True)
            assert lines[-2] == f"     why: {explanation}" and lines[-1] == f"     fix: {advice}"


def test_chain_lines_name_what_happened():
    [killed] = recorded("killed_fin")
    assert chain_lines(killed)[0] == (
        f"rst_server[{killed['culprit']['pid']}] killed by SIGKILL: 127.0.0.1:{killed['local']['port']}"
        f"<-127.0.0.1:{killed['remote']['port']} ended with FIN, then RST [{killed['reason']}]"
    )
    assert chain_lines(killed)[1] == f"  -> rst_client[{killed['victim']['pid']}] write: EPIPE, SIGPIPE: killed"
    [rto] = recorded("rto_timeout")
    assert chain_lines(rto)[0] == (
        f"{rto['local']['addr']}:{rto['local']['port']}->{rto['remote']['addr']}:{rto['remote']['port']}: peer silent, "
        "4 retransmission(s) over 3.0 s -> ETIMEDOUT (no RST)"
    )
    [destroyed] = recorded("destroyed")
    assert chain_lines(destroyed)[2] == f"  -> owner rst_server[{destroyed['owner']['pid']}] read: ECONNABORTED"


def as_on_old_kernel(evs: list[Event]) -> list[Event]:
    """What kernels before 6.10 show: no reset reason, and no tcp_send_reset for resets sent
    without a full socket (TIME_WAIT minisock or none; a listener is a full socket), nor the
    closer that such a reset would have looked up."""

    def unseen(e: Event) -> bool:
        return e.kind in ("send_reset", "closer") and e.has("nosk") and e.has("passive") and e.state != "LISTEN"

    return [replace(e, reason=None) for e in evs if not unseen(e)]


# Without reasons the kinds come from the close path and from what the victim received.
OLD_KERNEL_KINDS = dict(KINDS, crash_reboot=["reset-received", "process-killed"])


@pytest.mark.parametrize("name", sorted(KINDS))
def test_kinds_without_reason_field(name):
    replayed = incidents(as_on_old_kernel(events_of(f"{name}.jsonl")))
    assert sorted(i["kind"] for i in replayed) == sorted(OLD_KERNEL_KINDS[name])
    assert all(i["reason"] is None for i in replayed)


def test_killed_fin_without_sender_event_still_names_the_killer():
    [inc] = incidents(as_on_old_kernel(events_of("killed_fin.jsonl")))
    [live] = recorded("killed_fin")
    assert inc["culprit"] == live["culprit"] and inc["victim"]["errors"] == live["victim"]["errors"]


def _reset(reason: str, state: str, **kw) -> Event:
    base = dict(
        ts_ns=10**9,
        kind="send_reset",
        ctx="irq",
        sk=0xFFFF0001,
        netns=1,
        laddr="10.0.0.1",
        lport=80,
        raddr="10.0.0.2",
        rport=5555,
        state=state,
        reason=reason,
    )
    base.update(kw)
    return Event(**base)


@pytest.mark.parametrize(
    "reason,state,flags,kind",
    [
        ("TCP_ABORT_ON_MEMORY", "CLOSE", ["orphan"], "orphan-abort"),
        ("TCP_ABORT_ON_LINGER", "CLOSE", ["orphan"], "linger2-abort"),
        ("TCP_STATE", "FIN_WAIT2", ["orphan"], "fin-wait2-timeout"),
        ("TCP_TIMEWAIT_SOCKET", "TIME_WAIT", ["passive", "nosk"], "write-after-close"),
        ("NO_SOCKET", "UNKNOWN", ["passive", "nosk"], "no-socket"),
        ("TCP_INVALID_ACK_SEQUENCE", "ESTABLISHED", ["passive"], "passive-reset"),
    ],
)
def test_kinds_decided_by_the_reason_alone(reason, state, flags, kind):
    [inc] = [i.to_dict() for i in Correlator(settle_ns=10**8).run([_reset(reason, state, flags=flags)])]
    assert (inc["kind"], inc["reason"]) == (kind, reason)
    assert inc["explanation"] == kind_table.KINDS[kind].why


def test_write_after_close_names_the_closer_on_every_kernel():
    """The kernel remembered who closed with FIN: found from the closed side's RST (6.10+) or,
    where no RST from TIME_WAIT is reported, from the peer's receipt of it."""
    [live] = recorded("write_after_close")
    evs = events_of("write_after_close.jsonl")
    # Where only the peer's receipt asked, the closer came from that (later) lookup.
    [peer_closer] = [e for e in evs if e.kind == "closer" and not e.has("passive")]
    for replay, ago in ((evs, live["close_to_reset_ms"]), (as_on_old_kernel(evs), peer_closer.ago_ms)):
        [inc] = incidents(replay)
        assert inc["kind"] == "write-after-close"
        assert inc["culprit"] == live["culprit"] and inc["culprit"]["comm"] == "rst_server"
        assert inc["close_to_reset_ms"] == ago
        assert inc["idle_before_close_ms"] == live["idle_before_close_ms"]
        assert inc["victim"]["pid"] == live["victim"]["pid"]
    assert chain_lines(live)[0].startswith(f"rst_server[{live['culprit']['pid']}] closed ")


def _closer(ts: int, **kw) -> Event:
    base = dict(
        ts_ns=ts,
        kind="closer",
        pid=812,
        tid=812,
        comm="server",
        netns=1,
        laddr="10.0.0.1",
        lport=8080,
        raddr="10.0.0.2",
        rport=51234,
        state="TIME_WAIT",
        flags=["nosk", "passive"],
        ago_ms=300,
        span_ms=300_000,
    )
    base.update(kw)
    return Event(**base)


def test_a_burst_of_rsts_is_one_incident_with_its_closer():
    """The TIME_WAIT socket answers the first segment, the listener the rest (addresses from
    the segments): one incident, every RST counted, the closer named, even when a late RST
    comes after the incident was reported."""
    common = dict(netns=1, laddr="10.0.0.1", lport=8080, raddr="10.0.0.2", rport=51234, ctx="irq")
    evs = [
        Event(
            ts_ns=10**9,
            kind="send_reset",
            state="TIME_WAIT",
            reason="TCP_TIMEWAIT_SOCKET",
            flags=["passive", "nosk"],
            **common,
        ),
        _closer(10**9 + 1),
        Event(
            ts_ns=10**9 + 2, kind="send_reset", state="LISTEN", reason="TCP_FLAGS", flags=["passive", "nosk"], **common
        ),
        _closer(10**9 + 3, state="LISTEN"),
        Event(
            ts_ns=10**9 + 4, kind="send_reset", state="LISTEN", reason="TCP_FLAGS", flags=["passive", "nosk"], **common
        ),
        # After the incident was reported (settle 0.1 s): counted with it, not a new incident.
        Event(
            ts_ns=10**9 + 5 * 10**8,
            kind="send_reset",
            state="LISTEN",
            reason="TCP_FLAGS",
            flags=["passive", "nosk"],
            **common,
        ),
    ]
    c = Correlator(settle_ns=10**8)
    [inc] = [i.to_dict() for i in c.run(evs)]
    assert inc["kind"] == "write-after-close" and inc["reason"] == "TCP_TIMEWAIT_SOCKET"
    assert inc["culprit"] == {"pid": 812, "comm": "server"}
    assert (inc["close_to_reset_ms"], inc["idle_before_close_ms"]) == (300, 300_000)
    assert inc["resets"] == 3 and c.stats["late"] == 1
    assert (inc["local"], inc["remote"]) == ({"addr": "10.0.0.1", "port": 8080}, {"addr": "10.0.0.2", "port": 51234})
    assert inc["impact"] == "unknown"
    assert chain_lines(inc)[0] == (
        "server[812] closed 10.0.0.1:8080<-10.0.0.2:51234 (FIN) after 5m00s idle; "
        "300 ms later the peer wrote -> RST x3 [TCP_TIMEWAIT_SOCKET]"
    )


@pytest.mark.parametrize(
    "victim,impact",
    [
        (dict(exit_signal=13, errors=[{"call": "write", "errno": "EPIPE"}]), "killed"),
        (dict(errors=[{"call": "read", "errno": "ECONNRESET"}]), "failed-call"),
        (dict(pid=42), "unaffected"),
        (dict(), "unknown"),
    ],
)
def test_impact_is_what_the_other_side_suffered(victim, impact):
    from tracer.correlate import Incident, Victim

    inc = Incident(id=1, kind="abort-on-close", first_ns=0, last_ns=0, victim=Victim(**victim))
    assert inc.to_dict()["impact"] == impact
    assert Incident(id=2, kind="reset-received", first_ns=0, last_ns=0).to_dict()["impact"] == "unknown"


def test_a_victim_that_made_no_failing_call_is_named_from_its_close():
    """Its socket was freed by its own close(): that event names it, and it stays named however
    late the events are read (no /proc lookup: the replay has no owner resolver)."""
    [live] = recorded("early_reply")
    [inc] = incidents(events_of("early_reply.jsonl"))
    v = inc["victim"]
    assert v["pid"] == live["victim"]["pid"] and v["comm"] == live["victim"]["comm"]
    assert v["errors"] == [] and inc["impact"] == "unaffected"
    assert chain_lines(inc)[1] == (
        f"  -> {v['comm']}[{v['pid']}] got the RST with 200 bytes unread; read them and closed (no call failed)"
    )


def test_an_orphan_that_aborts_on_data_is_the_sender_not_a_victim():
    """gunicorn (tests/integration/test_corpus.py) closed an idle keep-alive connection; the
    pooled client wrote on it. tcp_reset() on gunicorn's orphan fires tcp_receive_reset although
    no RST arrived, then the orphan sends one (TCP_ABORT_ON_DATA): one incident, one RST."""
    c = Correlator(settle_ns=10**8)
    evs = events_of("gunicorn_keepalive_race.jsonl")
    incs = [i.to_dict() for i in c.run(evs)]
    [live] = recorded("gunicorn_keepalive_race")
    [inc] = incs
    assert (inc["kind"], inc["reason"], inc["resets"]) == ("write-after-close", "TCP_ABORT_ON_DATA", 1)
    assert inc["culprit"] == live["culprit"] and inc["culprit"]["comm"] == "gunicorn"
    assert inc["victim"]["pid"] == live["victim"]["pid"] and inc["impact"] == "failed-call"
    assert c.stats["not_received"] == 1


def test_a_victim_that_had_closed_is_named_by_its_own_close():
    """haproxy `option nolinger` reset a connection curl had already closed and left: the
    closers cache names curl from its close (its orphan got the RST)."""
    [inc] = incidents(events_of("haproxy_nolinger.jsonl"))
    [live] = recorded("haproxy_nolinger")
    assert (inc["kind"], inc["culprit"]["comm"]) == ("linger-zero", "haproxy")
    v = inc["victim"]
    assert (v["pid"], v["comm"], v["closed_before_reset"]) == (live["victim"]["pid"], "curl", True)
    assert v["errors"] == [] and inc["impact"] == "unaffected"
    assert chain_lines(inc)[1] == f"  -> curl[{v['pid']}] got the RST after it had closed its socket (no call failed)"
