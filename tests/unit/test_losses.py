"""What a kernel lacks and what the user loses because of it (KernelFeatures.losses), per version."""

from __future__ import annotations

import pytest

from .test_kernels import VERSIONS, feats


def lacks(version: str, plan: str) -> list[str]:
    return [loss.what for loss in feats(version).losses(plan)]


def test_5_10_names_every_gap():
    tp = lacks("5.10", "tracepoint")
    assert any(w.startswith("sock:inet_sk_error_report") for w in tp)
    assert any(w.startswith("sock:sock_send_length/sock_recv_length") for w in tp)
    assert any(w.startswith("enum sk_rst_reason") for w in tp)
    assert any(w.startswith("tcp:tcp_send_reset") for w in tp)
    # The kprobe plan sees resets without a socket itself.
    assert not any(w.startswith("tcp:tcp_send_reset") for w in lacks("5.10", "kprobe"))


def test_newest_kernels_lose_nothing():
    assert lacks("6.18", "tracepoint") == [] and lacks("6.12", "kprobe") == []


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("plan", ["kprobe", "tracepoint"])
def test_every_loss_says_what_is_lost(version, plan):
    for key, what, lost in feats(version).losses(plan):
        assert what and len(lost) > 20, (what, lost)


def test_reasons_missing_exactly_before_6_10():
    for version in VERSIONS:
        missing = any(w.startswith("enum sk_rst_reason") for w in lacks(version, "kprobe"))
        assert missing is (version in ("5.4", "5.10", "5.15", "6.1", "6.6")), version


def _replayed(name: str, version: str, plan: str) -> dict:
    from .test_correlate import events_of, incidents

    [inc] = incidents(events_of(name), lacks=feats(version).losses(plan))
    return inc


def test_incidents_name_what_their_kernel_could_not_know():
    """A recorded write-after-close, correlated as on 6.1's tracepoint plan: its reason and its
    count of RSTs (a TIME_WAIT socket's RST is not traced there) are marked unknown, and why."""
    inc = _replayed("write_after_close.jsonl", "6.1", "tracepoint")
    assert inc["unknown"] == {
        "reason": "this kernel lacks enum sk_rst_reason (6.10)",
        "resets": "this kernel lacks tcp:tcp_send_reset for RSTs without a full socket (6.10)",
    }
    # 5.10 has no error report: a timed-out victim's error is inferred, not seen.
    assert set(_replayed("rto_timeout.jsonl", "5.10", "tracepoint")["unknown"]) == {"reason", "victim.errors"}
    assert set(_replayed("rto_timeout.jsonl", "6.1", "tracepoint")["unknown"]) == {"reason"}
    # The kprobe plan sees RSTs without a socket itself: only the reason is missing on 6.1.
    assert _replayed("write_after_close.jsonl", "6.1", "kprobe")["unknown"] == {
        "reason": "this kernel lacks enum sk_rst_reason (6.10)"
    }
    # An abort on close is sent by a full socket: its count is known everywhere.
    assert set(_replayed("unread_default.jsonl", "6.1", "tracepoint")["unknown"]) == {"reason"}
    # On the newest kernels nothing is unknown, and the field is null.
    assert _replayed("write_after_close.jsonl", "6.18", "tracepoint")["unknown"] is None


def test_the_explained_chain_says_what_is_unknown():
    from tracer.render import chain_lines

    lines = chain_lines(_replayed("write_after_close.jsonl", "6.1", "tracepoint"), explain=True)
    assert lines[-1] == (
        "     unknown here: this kernel lacks enum sk_rst_reason (6.10): reason; this kernel "
        "lacks tcp:tcp_send_reset for RSTs without a full socket (6.10): resets"
    )
    assert chain_lines(_replayed("write_after_close.jsonl", "6.18", "tracepoint"), explain=True)[-1].startswith(
        "     fix: "
    )
