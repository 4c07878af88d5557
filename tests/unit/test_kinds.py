"""Each incident kind from recorded 6.18 streams, and the same kinds with what older kernels lack."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tracer import tracefile
from tracer.correlate import KIND_TEXT, Correlator
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
    "close_wait": ["close-wait"],
    "rto_timeout": ["retransmit-timeout"],
    "keepalive_timeout": ["keepalive-timeout"],
    "crash_reboot": ["no-socket", "process-killed"],
    "write_after_close": ["write-after-close"],
}


def recorded(name: str) -> list[dict]:
    # Overdue CLOSE_WAIT reports come from the periodic scan, not from the event stream.
    return [r for r in tracefile.read(DATA / f"{name}.jsonl")
            if r["type"] == "incident" and not (r["kind"] == "close-wait" and not r["close_wait_closed"])]


@pytest.mark.parametrize("name", sorted(KINDS))
def test_replay_gives_the_live_incidents(name):
    replayed = incidents(events_of(f"{name}.jsonl"))
    assert [i["kind"] for i in replayed] == KINDS[name]
    live = recorded(name)
    if name == "close_wait":  # the live scan's report took an id first
        for i in replayed + live:
            i["id"] = 0
    assert strip_wall(replayed) == strip_wall(live)


def test_every_kind_has_words_and_a_chain_line():
    for name in KINDS:
        for inc in recorded(name):
            summary, explanation, advice = KIND_TEXT[inc["kind"]]
            assert (inc["summary"], inc["explanation"], inc["advice"]) == (summary, explanation, advice)
            assert explanation and advice
            lines = chain_lines(inc, explain=True)
            assert lines[-2] == f"     why: {explanation}" and lines[-1] == f"     fix: {advice}"


def test_chain_lines_name_what_happened():
    [killed] = recorded("killed_fin")
    assert chain_lines(killed)[0] == (
        f"rst_server[{killed['culprit']['pid']}] killed by SIGKILL: 127.0.0.1:{killed['local']['port']}"
        f"<-127.0.0.1:{killed['remote']['port']} ended with FIN, then RST [{killed['reason']}]")
    assert chain_lines(killed)[1] == f"  -> rst_client[{killed['victim']['pid']}] write: EPIPE, SIGPIPE: killed"
    [rto] = recorded("rto_timeout")
    assert chain_lines(rto)[0] == (
        f"10.200.1.1:{rto['local']['port']}->10.200.1.2:{rto['remote']['port']}: peer silent, "
        "4 retransmission(s) over 3.0 s -> ETIMEDOUT (no RST)")
    [destroyed] = recorded("destroyed")
    assert chain_lines(destroyed)[2] == f"  -> owner rst_server[{destroyed['owner']['pid']}] read: ECONNABORTED"


def as_on_old_kernel(evs: list[Event]) -> list[Event]:
    """What kernels before 6.10 show: no reset reason, and no tcp_send_reset for resets sent
    without a full socket (TIME_WAIT minisock or none)."""
    return [replace(e, reason=None) for e in evs if not (e.kind == "send_reset" and e.has("nosk"))]


# Without reasons the kinds come from the close path and from what the victim received.
OLD_KERNEL_KINDS = dict(KINDS, crash_reboot=["reset-received", "process-killed"])


@pytest.mark.parametrize("name", sorted(KINDS))
def test_kinds_without_reason_field(name):
    replayed = incidents(as_on_old_kernel(events_of(f"{name}.jsonl")))
    assert [i["kind"] for i in replayed] == OLD_KERNEL_KINDS[name]
    assert all(i["reason"] is None for i in replayed)


def test_killed_fin_without_sender_event_still_names_the_killer():
    [inc] = incidents(as_on_old_kernel(events_of("killed_fin.jsonl")))
    [live] = recorded("killed_fin")
    assert inc["culprit"] == live["culprit"] and inc["victim"]["errors"] == live["victim"]["errors"]


def _reset(reason: str, state: str, **kw) -> Event:
    base = dict(ts_ns=10**9, kind="send_reset", ctx="irq", sk=0xffff0001, netns=1, laddr="10.0.0.1",
                lport=80, raddr="10.0.0.2", rport=5555, state=state, reason=reason)
    base.update(kw)
    return Event(**base)


@pytest.mark.parametrize("reason,state,flags,kind", [
    ("TCP_ABORT_ON_MEMORY", "CLOSE", ["orphan"], "orphan-abort"),
    ("TCP_ABORT_ON_LINGER", "CLOSE", ["orphan"], "linger2-abort"),
    ("TCP_STATE", "FIN_WAIT2", ["orphan"], "fin-wait2-timeout"),
    ("TCP_TIMEWAIT_SOCKET", "TIME_WAIT", ["passive", "nosk"], "write-after-close"),
    ("NO_SOCKET", "UNKNOWN", ["passive", "nosk"], "no-socket"),
    ("TCP_INVALID_ACK_SEQUENCE", "ESTABLISHED", ["passive"], "passive-reset"),
])
def test_kinds_decided_by_the_reason_alone(reason, state, flags, kind):
    [inc] = [i.to_dict() for i in Correlator(settle_ns=10**8).run([_reset(reason, state, flags=flags)])]
    assert (inc["kind"], inc["reason"]) == (kind, reason)
    assert inc["explanation"] == KIND_TEXT[kind][1]
