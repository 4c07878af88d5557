"""One traced session per kernel and plan: every scenario the kernel can produce, each incident exact.

Under qemu TCG bcc's compile takes 100-170 s per tracer start, so the per-test tracers of
tests/integration cost hours per kernel. Here ONE tracer (host-wide, filtered to a list of
ports chosen for this session) is started for the module; the scenarios of testbed/scenarios.py
run one after another, each on its own port(s) and namespace(s); the tracer is stopped once and
its incidents are split per scenario by port. Each scenario is then one test, held to the same
assertions as the per-kind tests (tests/integration/expect.py, test_kinds.py, test_live.py):
kind, reason (or None before 6.10), culprit, bytes, victim, failing calls, SIGPIPE fate; clean
closes must leave no incident and no event at all.

Runs where RSTTRACE_MATRIX_RESULTS is set (`./run.sh test-kernels`, which also runs it on the
host first as a fast check; tests/vm/vng-run passes it into the guests):
    RSTTRACE_MATRIX_RESULTS=/tmp/m .venv/bin/python -m pytest -m root tests/matrix
Writes DIR/<kernel>/<plan>/: summary.json (per-scenario outcome, start-up and session time),
trace.jsonl (the whole session) and incidents/<scenario>.json (normalised, as
tests/integration/incident_dump writes them) for tests/matrix/test_matrix_compare.py.
RSTTRACE_MATRIX_KERNEL names the kernel (default "host").
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

pytest.register_assert_rewrite("tests.integration.expect")

from testbed import scenarios  # noqa: E402
from tracer.kernel import KernelFeatures  # noqa: E402

from tests.integration import expect, incident_dump  # noqa: E402
from tests.integration.expect import errors, lo  # noqa: E402
from tests.integration.tracer_proc import TIMEOUT_SCALE, Tracer, expected_plan  # noqa: E402

pytestmark = pytest.mark.root

RESULTS = os.environ.get("RSTTRACE_MATRIX_RESULTS")
if not RESULTS:
    pytest.skip(
        "the matrix session runs under ./run.sh test-kernels (set RSTTRACE_MATRIX_RESULTS)", allow_module_level=True
    )
KERNEL = os.environ.get("RSTTRACE_MATRIX_KERNEL", "host")
# CLOSE_WAIT threshold of the session: long enough that no other scenario's victim, briefly in
# CLOSE_WAIT between two steps, is reported (a step can take a second under TCG).
CLOSE_WAIT_S = 2.0 * min(TIMEOUT_SCALE, 4.0)
SESSION_INFO: dict = {}


def results_dir() -> Path | None:
    if not RESULTS:
        return None
    return Path(RESULTS, KERNEL, SESSION_INFO.get("plan") or expected_plan())


@dataclass
class Played:
    """What one scenario did: its ports (to find its incidents and events) and the check."""

    ports: set[int]
    check: Callable[[list[dict], list[dict]], object]
    error: str | None = None
    extra: dict = field(default_factory=dict)


# -- the scenarios: name -> play(tracer, port) -> Played ------------------------------------------


def _unread(fate: str):
    def play(t, port):
        client, *_ = expect.UNREAD_FATES[fate]
        with scenarios.Netns("rstm") as ns:
            res = scenarios.unread_close(ns, port=port, **client)
        return Played({res.server_port, res.client_port}, lambda incs, evs: expect.abort_on_close(incs, res, ns, fate))

    return play


def _unread_recv(t, port):
    with scenarios.Netns("rstm") as ns:
        res = scenarios.unread_close(ns, port=port, recv=True)

    def check(incs, evs):
        inc = expect.one(incs)
        assert inc["kind"] == "abort-on-close" and inc["bytes_discarded"] == 1000
        assert inc["culprit"] == {"pid": res.server_pid, "comm": "rst_server"}
        v = expect.victim(inc, res)
        assert errors(v) == [("read", "ECONNRESET")]
        assert v["sigpipe"] is None

    return Played({res.server_port, res.client_port}, check)


def _unread_ipv6(t, port):
    with scenarios.Netns("rstm") as ns:
        res = scenarios.unread_close(ns, port=port, server_addr="::1")

    def check(incs, evs):
        inc = expect.one(incs)
        assert inc["family"] == "ipv6" and inc["kind"] == "abort-on-close"
        assert inc["reason"] in ("TCP_ABORT_ON_CLOSE", None)
        assert inc["local"] == {"addr": "::1", "port": res.server_port}
        assert inc["remote"] == {"addr": "::1", "port": res.client_port}
        assert inc["culprit"] == {"pid": res.server_pid, "comm": "rst_server"}
        assert inc["bytes_discarded"] == 1000 and inc["netns"] == ns.inode
        v = expect.victim(inc, res)
        assert errors(v) == [("write", "ECONNRESET"), ("write", "EPIPE")]
        assert v["sigpipe"] == "killed"

    return Played({res.server_port, res.client_port}, check)


def _two_namespaces(t, port):
    """Server in namespace B, client in A, joined by veth: the RST crosses a link."""
    with scenarios.Hosts("rstm") as h:
        res = scenarios.unread_close(h.b, port=port, server_ns=h.b, client_ns=h.a, server_addr=h.addr_b)

    def check(incs, evs):
        inc = expect.one(incs)
        assert inc["kind"] == "abort-on-close" and inc["bytes_discarded"] == 1000
        assert inc["reason"] in ("TCP_ABORT_ON_CLOSE", None)
        assert inc["netns"] == h.b.inode
        assert inc["culprit"] == {"pid": res.server_pid, "comm": "rst_server"}
        assert inc["local"] == {"addr": h.addr_b, "port": res.server_port}
        assert inc["remote"] == {"addr": h.addr_a, "port": res.client_port}
        v = expect.victim(inc, res)
        assert v["netns"] == h.a.inode
        assert errors(v) == [("write", "ECONNRESET"), ("write", "EPIPE")]
        assert v["sigpipe"] == "killed"

    return Played({res.server_port, res.client_port}, check)


def _linger_zero(t, port):
    with scenarios.Netns("rstm") as ns:
        res = scenarios.linger_zero(ns, port=port)
    return Played({res.server_port, res.client_port}, lambda incs, evs: expect.linger_zero(incs, res))


def _killed_unread(sig):
    def play(t, port):
        with scenarios.Netns("rstm") as ns:
            res = scenarios.killed_server(ns, sig=sig, unread=True, port=port)
        return Played(
            {res.server_port, res.client_port}, lambda incs, evs: expect.killed_with_unread_data(incs, res, sig)
        )

    return play


def _killed_after_reading(t, port):
    with scenarios.Netns("rstm") as ns:
        res = scenarios.killed_server(ns, sig=signal.SIGKILL, unread=False, port=port)
    return Played({res.server_port, res.client_port}, lambda incs, evs: expect.killed_after_reading(incs, res))


def _destroyed(t, port):
    with scenarios.Netns("rstm") as ns:
        res, ss_pid = scenarios.destroyed(ns, port=port)
    return Played({res.server_port, res.client_port}, lambda incs, evs: expect.socket_destroyed(incs, res, ss_pid))


def _linger2(t, port):
    with scenarios.Netns("rstm") as ns:
        res = scenarios.linger2_abort(ns, port=port)
    return Played({res.server_port, res.client_port}, lambda incs, evs: expect.linger2_abort(incs, res))


def _refused(t, port):
    with scenarios.Netns("rstm") as ns:
        res = scenarios.refused(ns, port=port)
    return Played({port}, lambda incs, evs: expect.connection_refused(incs, res, port))


def _write_after_close(t, port):
    with scenarios.Netns("rstm") as ns:
        res = scenarios.write_after_close(ns, port=port)

    def check(incs, evs):
        # As test_kinds.py: the closer is remembered in the kernel (an LRU of closers).
        assert res.client_returncode == -13
        assert res.client_lines[2:] == ["write 100 OK"]
        inc = expect.one(incs)
        assert inc["kind"] == "write-after-close"
        assert inc["reason"] in ("TCP_TIMEWAIT_SOCKET", "TCP_ABORT_ON_DATA", None)
        assert inc["culprit"] == {"pid": res.server_pid, "comm": "rst_server"}
        assert inc["resets"] == 1
        assert inc["local"] == lo(res.server_port)
        v = expect.victim(inc, res)
        assert v["state"] == "CLOSE_WAIT"
        assert errors(v) == [("write", "EPIPE")]
        assert v["sigpipe"] == "killed"

    return Played({res.server_port, res.client_port}, check)


def _silent(run, **kw):
    def play(t, port):
        with scenarios.Netns("rstm") as ns:
            res = run(ns, port=port, **kw)

        def check(incs, evs):
            assert (res.client_returncode, res.server_returncode) == (0, 0)
            expect.silent(incs, evs)

        return Played({res.server_port, res.client_port}, check)

    return play


def _close_wait(t, port):
    with scenarios.Netns("rstm") as ns:
        with scenarios.close_wait(ns, port=port) as run:
            first = t.wait_for(
                lambda i: i["kind"] == "close-wait" and i["local"]["port"] == run.server_port,
                timeout=30 * TIMEOUT_SCALE,
            )
            run.server.send("close")
            run.server.expect("closed")
            second = t.wait_for(
                lambda i: (
                    i["kind"] == "close-wait" and i["local"]["port"] == run.server_port and i["id"] != first["id"]
                ),
                timeout=30 * TIMEOUT_SCALE,
            )
            run.server.send("exit")
            run.server.wait()

    def check(incs, evs):
        assert incs == [first, second]
        for inc in incs:
            assert inc["kind"] == "close-wait"
            assert inc["culprit"] == {"pid": run.server.pid, "comm": "rst_server"}
            assert (inc["local"], inc["remote"]) == (lo(run.server_port), lo(run.client_port))
            assert inc["close_wait_preexisting"] is False
        assert [i["close_wait_unread"] for i in incs] == [1000, 0]
        assert first["close_wait_closed"] is False and second["close_wait_closed"] is True
        assert CLOSE_WAIT_S * 1e9 <= first["close_wait_age_ns"] <= second["close_wait_age_ns"]

    return Played({run.server_port, run.client_port}, check)


def _peer_timeout(keepalive: bool):
    def play(t, port):
        with scenarios.Hosts("rstm") as h:
            # Once the client has ended, B is unplugged before its server exits: its FIN (and
            # A's answer from no socket) never travel, as if the tracer had stopped (test_kinds).
            unplug = lambda: scenarios._ip("-n", h.a.name, "link", "del", "veth-a")  # noqa: E731
            res = scenarios.peer_timeout(h, keepalive, port=port, before_cleanup=unplug)
        return Played(
            {res.server_port, res.client_port}, lambda incs, evs: expect.peer_went_silent(incs, res, h, port, keepalive)
        )

    return play


def _crash_reboot(t, port):
    with scenarios.Hosts("rstm") as h:
        old_b = h.b.inode
        res = scenarios.crash_reboot(h, port=port)
    return Played(
        {res.server_port, res.client_port},
        lambda incs, evs: expect.crash_and_reboot(incs, evs_with_header(evs), res, h, port, old_b),
    )


def evs_with_header(evs: list[dict]) -> list[dict]:
    """expect.crash_and_reboot reads the plan from the first record (the trace's header)."""
    return [SESSION_INFO["header"], *evs]


SCENARIOS: dict[str, Callable] = {
    "abort-on-close": _unread("default"),
    "abort-on-close-sigpipe-ignored": _unread("ignore"),
    "abort-on-close-msg-nosignal": _unread("nosignal"),
    "abort-on-close-sigpipe-handled": _unread("handle"),
    "abort-on-close-victim-in-recv": _unread_recv,
    "abort-on-close-ipv6": _unread_ipv6,
    "abort-on-close-two-namespaces": _two_namespaces,
    "linger-zero": _linger_zero,
    "process-killed-sigkill-unread": _killed_unread(signal.SIGKILL),
    "process-killed-sigterm-unread": _killed_unread(signal.SIGTERM),
    "process-killed-after-reading": _killed_after_reading,
    "socket-destroyed": _destroyed,
    "linger2-abort": _linger2,
    "connection-refused": _refused,
    "write-after-close": _write_after_close,
    "close-wait": _close_wait,
    "retransmit-timeout": _peer_timeout(False),
    "keepalive-timeout": _peer_timeout(True),
    "crash-and-reboot": _crash_reboot,
    "clean-close-readall": _silent(scenarios.clean_close, mode="readall"),
    "clean-close-lingering": _silent(scenarios.clean_close, mode="lingering"),
    "clean-half-close": _silent(scenarios.half_close),
}


class SessionTracer(Tracer):
    def wait_for(self, match: Callable[[dict], bool], timeout: float) -> dict:
        """The first incident printed so far or within timeout that matches (all stay in the
        session's output: other scenarios' incidents are not consumed)."""
        deadline = time.monotonic() + timeout
        while True:
            for line in list(self._out):
                inc = json.loads(line)
                if match(inc):
                    return inc
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"no matching incident within {timeout}s: {''.join(self._out)}")
            time.sleep(0.05)  # polling the tracer's output, not waiting for an effect


def _mine(record: dict, ports: set[int]) -> bool:
    if record.get("type") == "incident":
        ends = {(record.get("local") or {}).get("port"), (record.get("remote") or {}).get("port")}
    else:
        ends = {record.get("lport"), record.get("rport")}
    return bool(ends & ports)


@pytest.fixture(scope="module")
def session():
    scenarios.build_workloads()
    # Modules the scenarios load on first use (veth; tcp_diag for `ss -K`): loaded before the
    # session, where a guest under TCG took longer than the scenarios' 5 s to load them.
    for mod in ("veth", "inet_diag", "tcp_diag"):
        subprocess.run(["modprobe", "-q", mod], check=False)
    saved_timeout = scenarios.TIMEOUT
    scenarios.TIMEOUT = saved_timeout * min(TIMEOUT_SCALE, 4.0)  # the steps' own waits (ss -K, states)
    try:
        return _session()
    finally:
        scenarios.TIMEOUT = saved_timeout


def _session():
    base = random.randrange(20000, 60000 - len(SCENARIOS), 100)
    ports = {name: base + i for i, name in enumerate(SCENARIOS)}
    args = [a for p in ports.values() for a in ("-P", str(p))]
    args += ["--close-wait", str(CLOSE_WAIT_S), "--close-wait-every", "0.5"]
    began = time.monotonic()
    played: dict[str, Played] = {}
    with SessionTracer(*args, dump=False) as t:
        wall, cpu = Tracer.started[-1]
        SESSION_INFO.update(start_wall_s=round(wall, 1), start_cpu_s=round(cpu, 1))
        t0 = time.monotonic()
        for name, play in SCENARIOS.items():
            try:
                played[name] = play(t, ports[name])
            except Exception:  # one scenario's failure is its own test's failure, not the session's
                played[name] = Played({ports[name]}, lambda incs, evs: None, error=traceback.format_exc())
        incidents, err, rc = t.stop()
        records = t.records()
        SESSION_INFO["scenarios_wall_s"] = round(time.monotonic() - t0, 1)
    assert rc == 0, err
    header = records[0]
    SESSION_INFO.update(header=header, plan=header["plan"]["name"], total_s=round(time.monotonic() - began, 1))
    out = results_dir()
    if out is not None:
        shutil.rmtree(out / "incidents", ignore_errors=True)
        (out / "incidents").mkdir(parents=True, exist_ok=True)
        shutil.copy(t.trace, out / "trace.jsonl")
    per: dict[str, tuple[list[dict], list[dict]]] = {}
    for name, p in played.items():
        incs = [i for i in incidents if _mine(i, p.ports)]
        evs = [r for r in records if r.get("type") == "event" and _mine(r, p.ports)]
        per[name] = (incs, evs)
        if out is not None:
            doc = {
                "test": name,
                "runs": [
                    {
                        "kernel": header.get("kernel"),
                        "plan": header["plan"]["name"],
                        "missing": header["plan"].get("missing", []),
                        "incidents": incident_dump.normalise(incs),
                    }
                ],
            }
            (out / "incidents" / f"{name}.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    claimed = {id(i) for incs, _ in per.values() for i in incs}
    return {
        "played": played,
        "per": per,
        "stray": [i for i in incidents if id(i) not in claimed],
        "plan": header["plan"]["name"],
    }


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario(session, name):
    p = session["played"][name]
    if p.error:
        pytest.fail(f"scenario {name} did not play:\n{p.error}")
    incs, evs = session["per"][name]
    p.check(incs, evs)


def test_no_incident_outside_the_scenarios(session):
    """Every incident of the session belongs to one scenario's ports."""
    assert session["stray"] == []


def test_kernel_facts_match_the_plan(session):
    """The session ran on the plan this kernel and RSTTRACE_TEST_PLAN call for."""
    assert session["plan"] == expected_plan()
    assert KernelFeatures.probe().release
