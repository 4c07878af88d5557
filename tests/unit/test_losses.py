"""What a kernel lacks and what the user loses because of it (KernelFeatures.losses), per version."""

from __future__ import annotations

import pytest

from .test_kernels import VERSIONS, feats


def lacks(version: str, plan: str) -> list[str]:
    return [what for what, _lost in feats(version).losses(plan)]


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
    for what, lost in feats(version).losses(plan):
        assert what and len(lost) > 20, (what, lost)


def test_reasons_missing_exactly_before_6_10():
    for version in VERSIONS:
        missing = any(w.startswith("enum sk_rst_reason") for w in lacks(version, "kprobe"))
        assert missing is (version in ("5.4", "5.10", "5.15", "6.1", "6.6")), version
