"""The incident dumps and the cross-kernel comparison rules, on hand-made incidents."""

from __future__ import annotations

import copy

from tests.integration import incident_dump
from tests.vm.test_compare import REASON_SINCE, comparable, differences, kernel_version


def incident(pid=812, cpid=4242, port=8000, cport=51234, reason="TCP_ABORT_ON_CLOSE", calls=("write", "write")):
    errors = [
        {"call": c, "errno": e, "ts_ns": 10 + i, "pid": cpid, "tid": cpid}
        for i, (c, e) in enumerate(zip(calls, ["ECONNRESET", "EPIPE", "EPIPE"]))
    ]
    return {
        "kind": "abort-on-close",
        "reason": reason,
        "culprit": {"pid": pid, "comm": "server"},
        "bytes_discarded": 1000,
        "netns": 4026531833,
        "state": "ESTABLISHED",
        "local": {"addr": "10.0.0.1", "port": port},
        "remote": {"addr": "10.0.0.2", "port": cport},
        "victim": {
            "pid": cpid,
            "comm": "client",
            "netns": 4026531833,
            "addr": "10.0.0.2",
            "port": cport,
            "errors": errors,
            "sigpipe": "killed",
            "exit_signal": 13,
        },
        "timestamps": {"first_ns": 5, "close_ns": 6, "reset_ns": None, "wall_ns": 7},
    }


NO_REASON = {"reason": "this kernel lacks enum sk_rst_reason (6.10)"}


def run(incidents, kernel="6.18.44", plan="tracepoint", missing=(), says_unknown=True):
    """As the tracer records a test: before 6.10 each incident says its reason is unknown."""
    if says_unknown and kernel_version(kernel) < REASON_SINCE:
        incidents = [dict(i, unknown=NO_REASON) for i in incidents]
    return {"kernel": kernel, "plan": plan, "missing": list(missing), "incidents": incident_dump.normalise(incidents)}


def test_normalise_keeps_the_story_and_numbers_equal_values_alike():
    [n] = incident_dump.normalise([incident()])
    assert n["culprit"] == {"pid": "<pid1>", "comm": "server"}
    assert n["victim"]["pid"] == "<pid2>"
    assert {(e["pid"], e["tid"]) for e in n["victim"]["errors"]} == {("<pid2>", "<pid2>")}
    assert (n["local"], n["remote"]) == ({"addr": "<addr1>", "port": "<port1>"}, {"addr": "<addr2>", "port": "<port2>"})
    assert (n["victim"]["addr"], n["victim"]["port"]) == ("<addr2>", "<port2>")
    assert n["netns"] == n["victim"]["netns"] == "<netns1>"
    assert n["timestamps"] == {"first_ns": "<time>", "close_ns": "<time>", "reset_ns": None, "wall_ns": "<time>"}
    assert [e["ts_ns"] for e in n["victim"]["errors"]] == ["<time>", "<time>"]
    kept = {k: n[k] for k in ("kind", "reason", "bytes_discarded", "state")}
    assert kept == {
        "kind": "abort-on-close",
        "reason": "TCP_ABORT_ON_CLOSE",
        "bytes_discarded": 1000,
        "state": "ESTABLISHED",
    }
    assert (n["victim"]["sigpipe"], n["victim"]["exit_signal"]) == ("killed", 13)
    # Other pids and ports, same story: the same normal form.
    assert incident_dump.normalise([incident(pid=1, cpid=2, port=3, cport=4)]) == [n]


def test_dump_appends_runs_of_one_test(tmp_path, monkeypatch):
    monkeypatch.setenv(incident_dump.ENV, str(tmp_path))
    monkeypatch.setenv("PYTEST_CURRENT_TEST", "tests/x.py::test_y[a b] (call)")
    head = {"type": "header", "kernel": "6.1.0-50-amd64", "plan": {"name": "tracepoint", "missing": ["m: no x"]}}
    incident_dump.dump([incident()], head)
    incident_dump.dump([], head)
    [doc] = incident_dump.load(tmp_path).values()
    assert doc["test"] == "tests/x.py::test_y[a b]"
    assert [(r["kernel"], r["plan"], r["missing"], len(r["incidents"])) for r in doc["runs"]] == [
        ("6.1.0-50-amd64", "tracepoint", ["m: no x"], 1),
        ("6.1.0-50-amd64", "tracepoint", ["m: no x"], 0),
    ]
    assert incident_dump.plans_report(tmp_path) == [
        "plan tracepoint, tracepoint: tests/x.py::test_y[a b]",
        "plans used by 1 traced test(s): tracepoint",
    ]


def test_reason_is_excused_only_below_6_10():
    new, old = run([incident()]), run([incident(reason=None)], kernel="6.1.0-50-amd64")
    assert comparable(new, old)[0] == comparable(old, new)[0]
    # Two kernels that both have reasons must agree on them.
    newer = run([incident(reason="NOT_SPECIFIED")], kernel="6.12.0")
    assert comparable(new, newer)[0] != comparable(newer, new)[0]
    # An old kernel cannot name a reason.
    bogus = run([incident()], kernel="6.1.0-50-amd64")
    assert comparable(bogus, new)[1] == ["kernel 6.1.0-50-amd64 has no reset reasons, yet reason=TCP_ABORT_ON_CLOSE"]


def test_what_a_kernel_could_not_know_is_said_and_checked():
    """`unknown` differs by kernel by design: left out of the comparison, but an old kernel's
    incident must name its missing reason, and a new kernel's tracepoint plan lacks nothing."""
    new, old = run([incident()]), run([incident(reason=None)], kernel="6.1.0-50-amd64")
    assert comparable(old, new) == comparable(new, old) and comparable(old, new)[1] == []
    silent = run([incident(reason=None)], kernel="6.1.0-50-amd64", says_unknown=False)
    assert comparable(silent, new)[1] == [
        "kernel 6.1.0-50-amd64 has no reset reasons, yet the incident does not say so: {}"
    ]
    claims = run([dict(incident(), unknown=NO_REASON)])
    assert comparable(claims, new)[1] == [
        f"kernel 6.18.44 lacks nothing on the tracepoint plan, yet unknown={NO_REASON}"
    ]


def test_missing_send_tracepoint_excuses_only_the_writes_of_the_tracepoint_plan():
    missing = ["sock_send_length: no the peer's send errors (kernel 6.3+)"]
    host = run([incident(calls=("write", "write"))])
    blind = run([incident(calls=())], kernel="6.1.0", missing=missing)
    assert comparable(blind, host)[0] == comparable(host, blind)[0]
    # The kind, bytes and the victim's fate still count.
    worse = copy.deepcopy(blind)
    worse["incidents"][0]["victim"]["sigpipe"] = None
    assert comparable(worse, host)[0] != comparable(host, worse)[0]
    # Another plan that misses the same calls is not excused.
    kprobe = run([incident(calls=())], kernel="6.1.0", plan="kprobe", missing=missing)
    assert comparable(kprobe, host)[0] != comparable(host, kprobe)[0]


def test_differences_name_the_path():
    host = incident_dump.normalise([incident()])
    guest = incident_dump.normalise([incident(calls=("write",))])
    guest[0]["victim"]["sigpipe"] = None
    assert differences(host, guest) == [
        "[0].victim.errors[1]: host {'call': 'write', 'errno': 'EPIPE', 'ts_ns': '<time>', 'pid': '<pid2>', "
        "'tid': '<pid2>'}, guest '<absent>'",
        "[0].victim.sigpipe: host 'killed', guest None",
    ]
    assert differences([], host) == [f"[0]: host '<absent>', guest {host[0]!r}"]


def test_unseen_sender_excuses_only_what_came_from_it():
    sent = incident(reason=None)
    sent.update(kind="no-socket", state="UNKNOWN", netns=11)
    seen_by_victim = incident(reason=None)
    seen_by_victim.update(kind="reset-received", state=None, netns=22)
    host = run([sent], plan="tracepoint")
    blind = run([seen_by_victim], kernel="6.1.0-50-amd64")
    assert comparable(blind, host)[0] == comparable(host, blind)[0]
    # The kprobe plan sees the sender on 6.1: there the kinds must agree.
    kprobe = run([seen_by_victim], kernel="6.1.0-50-amd64", plan="kprobe")
    assert comparable(kprobe, host)[0] != comparable(host, kprobe)[0]


def test_run_decided_fields_excuse_only_that_test():
    """gunicorn's sync worker: which of requests' FIN and the RST came first is the run's timing."""
    from tests.vm.test_compare import RUN_DECIDED

    decided = RUN_DECIDED["tests/integration/test_corpus.py::test_gunicorn_sync_worker_closes_with_the_upload_unread"]
    one = incident()
    one.update(resets=1, state="CLOSE_WAIT")
    one["victim"]["closed_before_reset"] = True
    two = incident()
    two.update(resets=2, state="ESTABLISHED")
    two["victim"]["closed_before_reset"] = False
    host, guest = run([one]), run([two], kernel="6.1.0-50-amd64", plan="kprobe")
    assert comparable(host, guest, True, decided)[0] == comparable(guest, host, True, decided)[0]
    # Elsewhere they are compared, and so is everything else there.
    assert comparable(host, guest, True)[0] != comparable(guest, host, True)[0]
    two["bytes_discarded"], two["victim"]["sigpipe"] = 1000, None
    guest = run([two], kernel="6.1.0-50-amd64", plan="kprobe")
    assert comparable(host, guest, True, decided)[0] != comparable(guest, host, True, decided)[0]
