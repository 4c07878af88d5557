"""The same scenarios give the same incidents on the host's kernel and in the VM guest's, test by test."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.integration import incident_dump

RESULTS = os.environ.get("RSTTRACE_VM_RESULTS")  # vagrant/run-suite's results (host/ and guest/<plan>/)

# The only differences allowed between two kernels, each with the kernel fact behind it.
# 1. Reset reasons (enum sk_rst_reason) arrived in 6.10: before that `reason` is null, so
#    only the kind, which rsttrace derives from the close path, can be compared.
REASON_SINCE = (6, 10)
# 2. sock:sock_send_length / sock_recv_length arrived in 6.3. The tracepoint plan sees a
#    peer's failing write/read only through them; a plan that records them as missing
#    cannot list those calls among the victim's errors. (Other plans must, so this applies
#    to the tracepoint plan only.)
CALL_TRACEPOINT = {"write": "sock_send_length", "read": "sock_recv_length"}
# 3. Before 6.10 tcp:tcp_send_reset is silent for resets sent without a full socket (TIME_WAIT,
#    no socket); the tracepoint plan there knows only what the victim received. What comes
#    from the sender's reset event (its state and namespace, the reset time) cannot be
#    compared, and a reset from no socket is a plain "reset-received" (README: incident kinds).
#    Nor can the count of the connection's RSTs (`resets`: one fewer where TIME_WAIT answered),
#    nor when the closer's close came before the reset (`close_to_reset_ms`: from the peer's
#    receipt there, a little later).
SENDER_FIELDS = ("state", "netns", "resets", "close_to_reset_ms")
SENDER_TIMES = ("reset_ns",)
NO_SENDER_KIND = {"no-socket": "reset-received"}
# 4. A socket closed with FIN answers late data from TIME_WAIT, or, if the data comes before
#    the orphan in FIN_WAIT2 became a TIME_WAIT socket, from the orphan (then in CLOSE). Which
#    one is timing, not kernel: the sender's state is compared as "closed".
CLOSED_STATES = {"TIME_WAIT": "<closed>", "CLOSE": "<closed>", "FIN_WAIT2": "<closed>"}


def kernel_version(release: str | None) -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", release or "")
    return (int(m[1]), int(m[2])) if m else (0, 0)


def unseen_calls(run: dict) -> set[str]:
    if run["plan"] != "tracepoint":
        return set()
    missing = {m.split(":")[0] for m in run["missing"]}
    return {call for call, tp in CALL_TRACEPOINT.items() if tp in missing}


def sender_unseen(run: dict) -> bool:
    return run["plan"] == "tracepoint" and kernel_version(run["kernel"]) < REASON_SINCE


# Quantities a real program's run decides (how much of an upload had arrived, how long a pool
# waited): the corpus asserts each against that run's own kernel (SIOCINQ, the namespace's
# counters, times measured around it), so across kernels only the rest must be the same.
RUN_MEASURED = ("bytes_discarded", "close_to_reset_ms", "idle_before_close_ms", "retransmissions", "unanswered_ms")
RUN_MEASURED_VICTIM = ("unread_at_reset", "unacked_at_reset", "unread_at_close")
RUN_MEASURED_TESTS = ("tests/integration/test_corpus.py",)
# And what a real program's timing decides in one test, asserted there against that run's own
# counters: gunicorn's sync worker closes while requests' FIN may or may not have arrived
# (its socket's state at the reset: ESTABLISHED or CLOSE_WAIT), and when the FIN crosses the
# RST the kernel sends a second one (`resets` == Tcp.OutRsts, `closed_before_reset` against
# Tcp.EstabResets; requests' socket is then in FIN_WAIT1, not ESTABLISHED, when the RST comes).
RUN_DECIDED = {
    "tests/integration/test_corpus.py::test_gunicorn_sync_worker_closes_with_the_upload_unread": (
        ("state", "resets"),
        ("closed_before_reset", "state"),
    ),
}


def comparable(
    run: dict, other: dict, measured: bool = False, decided: tuple[tuple, tuple] = ((), ())
) -> tuple[list[dict], list[str]]:
    """The run's incidents with what the two kernels cannot both show taken out, in canonical
    order (incident_dump.canonical); and the problems found on the way (an old kernel that
    claims a reason). Cgroups say where the test ran (a sandbox's cgroup on the host, the ssh
    session's in the guest), not what the kernel did; `measured`: a run-measured test;
    `decided`: the incident's and the victim's fields that test's timing decides (RUN_DECIDED)."""
    problems = []
    no_reason = min(kernel_version(run["kernel"]), kernel_version(other["kernel"])) < REASON_SINCE
    unseen = unseen_calls(run) | unseen_calls(other)
    no_sender = sender_unseen(run) or sender_unseen(other)
    out = []
    for inc in run["incidents"]:
        inc = {
            k: v
            for k, v in inc.items()
            if k != "cgroups" and not (measured and k in RUN_MEASURED) and k not in decided[0]
        }
        if measured and inc.get("victim"):
            inc["victim"] = {
                k: v for k, v in inc["victim"].items() if k not in RUN_MEASURED_VICTIM and k not in decided[1]
            }
        if inc.get("kind") in ("write-after-close", "process-killed") and inc.get("state") in CLOSED_STATES:
            inc["state"] = CLOSED_STATES[inc["state"]]
        if no_sender:
            inc["kind"] = NO_SENDER_KIND.get(inc.get("kind"), inc.get("kind"))
            for words in ("summary", "explanation", "advice"):  # they follow the kind
                inc.pop(words, None)
            for name in SENDER_FIELDS:
                inc.pop(name, None)
            if isinstance(inc.get("timestamps"), dict):
                inc["timestamps"] = {k: v for k, v in inc["timestamps"].items() if k not in SENDER_TIMES}
        # What the kernel could not show is named by the incident itself (`unknown`, README:
        # Incident kinds): it differs by kernel by design. Checked here, then left out.
        unknown = inc.pop("unknown", None) or {}
        if kernel_version(run["kernel"]) < REASON_SINCE and inc.get("kind") != "close-wait" and "reason" not in unknown:
            problems.append(f"kernel {run['kernel']} has no reset reasons, yet the incident does not say so: {unknown}")
        if kernel_version(run["kernel"]) >= REASON_SINCE and run["plan"] == "tracepoint" and unknown:
            problems.append(f"kernel {run['kernel']} lacks nothing on the tracepoint plan, yet unknown={unknown}")
        if no_reason:
            if kernel_version(run["kernel"]) < REASON_SINCE and inc.get("reason") is not None:
                problems.append(f"kernel {run['kernel']} has no reset reasons, yet reason={inc['reason']}")
            inc.pop("reason", None)
        if unseen and inc.get("victim"):
            victim = dict(inc["victim"])
            victim["errors"] = [e for e in victim["errors"] if e["call"] not in unseen]
            inc["victim"] = victim
        out.append(times_out(inc))
    # The two kernels' tracers may report the incidents of one test in either order (their
    # settle clocks run on different machines): the comparison does not depend on it.
    return incident_dump.canonical(out), problems


def times_out(value, key: str = ""):
    """What the dump's rules call a time, made <time> again (dumps written before a rule was
    added still compare by today's rules)."""
    if isinstance(value, dict):
        return {k: times_out(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [times_out(v, key) for v in value]
    if value is not None and incident_dump._TIME.search(key):
        return "<time>"
    return value


# Placeholders numbered again once fields were taken out (kept here by its old name).
renumber = incident_dump.renumber


def differences(host, guest, path: str = "") -> list[str]:
    """Readable paths of what differs, e.g. `[0].victim.sigpipe: host 'killed', guest None`."""
    if isinstance(host, dict) and isinstance(guest, dict):
        return [
            d
            for k in sorted(set(host) | set(guest), key=str)
            for d in differences(host.get(k, "<absent>"), guest.get(k, "<absent>"), f"{path}.{k}")
        ]
    if isinstance(host, list) and isinstance(guest, list):
        pad = ["<absent>"] * abs(len(host) - len(guest))
        pairs = zip(host + pad[: len(guest) - len(host)], guest + pad[: len(host) - len(guest)])
        return [d for i, (h, g) in enumerate(pairs) for d in differences(h, g, f"{path}[{i}]")]
    return [] if host == guest else [f"{path or 'incidents'}: host {host!r}, guest {guest!r}"]


def guest_plans() -> list[str]:
    if not RESULTS:
        return []
    return sorted(p.parent.name for p in Path(RESULTS, "guest").glob("*/incidents"))


def cases():
    plans = guest_plans()
    if not plans:
        why = (
            "RSTTRACE_VM_RESULTS is not set (./run.sh test sets it after the VM suite)"
            if not RESULTS
            else f"no guest incident dumps under {RESULTS}/guest (run vagrant/run-suite)"
        )
        return [pytest.param(None, None, marks=pytest.mark.skip(reason=why), id="no-vm-results")]
    host = incident_dump.load(Path(RESULTS, "host", "incidents"))
    out = []
    for plan in plans:
        guest = incident_dump.load(Path(RESULTS, "guest", plan, "incidents"))
        for test in sorted(set(guest) | set(host)):
            out.append(pytest.param(plan, test, id=f"{plan}:{test}"))
    return out


def selection(plan: str) -> list[str]:
    return Path(RESULTS, "guest", plan, "args").read_text().split()


@pytest.mark.parametrize("plan, test", cases())
def test_same_incidents_on_both_kernels(plan, test):
    host = incident_dump.load(Path(RESULTS, "host", "incidents")).get(test)
    guest = incident_dump.load(Path(RESULTS, "guest", plan, "incidents")).get(test)
    if guest is None and selection(plan) != ["tests"]:
        pytest.skip(f"not in the guest's selection for plan {plan}: {' '.join(selection(plan))}")
    assert host is not None, f"{test} ran in the guest (plan {plan}) but left no incidents on the host"
    assert guest is not None, f"{test} left no incidents in the guest (plan {plan}): see guest/{plan}/pytest.log"
    assert len(guest["runs"]) == len(host["runs"]), "a different number of tracer runs"
    for h, g in zip(host["runs"], guest["runs"]):
        measured = test.startswith(RUN_MEASURED_TESTS)
        decided = RUN_DECIDED.get(test, ((), ()))
        want, problems_h = comparable(h, g, measured, decided)
        got, problems_g = comparable(g, h, measured, decided)
        assert problems_h + problems_g == []
        diffs = differences(want, got)
        assert diffs == [], (
            f"guest kernel {g['kernel']} (plan {g['plan']}) vs host kernel {h['kernel']} "
            f"(plan {h['plan']}):\n  " + "\n  ".join(diffs)
        )
