"""Every way a connection ends abnormally, each named exactly, from real sockets and processes."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys

import pytest

from testbed import scenarios
from tracer.kernel import KernelFeatures

from . import expect
from .tracer_proc import Tracer

pytestmark = pytest.mark.root


def free_port() -> int:
    # Each test has namespaces of its own: any port is free there; a random one keeps
    # host-wide port filters from matching other tests' connections.
    return random.randint(20000, 60000)


def run_traced(tracer_args, scenario):
    with Tracer(*tracer_args) as t:
        res = scenario()
        incidents, err, rc = t.stop()
    assert rc == 0, err
    return res, incidents, err


errors, lo = expect.errors, expect.lo


def test_linger_zero_is_not_unread_data(ns):
    res, incs, _ = run_traced(["--netns", str(ns.inode)], lambda: scenarios.linger_zero(ns))
    expect.linger_zero(incs, res)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_server_killed_with_unread_data(ns, sig):
    res, incs, _ = run_traced(["--netns", str(ns.inode)], lambda: scenarios.killed_server(ns, sig=sig, unread=True))
    expect.killed_with_unread_data(incs, res, sig)


def test_server_killed_after_reading_ends_with_fin_then_rst(ns):
    res, incs, _ = run_traced(
        ["--netns", str(ns.inode)], lambda: scenarios.killed_server(ns, sig=signal.SIGKILL, unread=False)
    )
    expect.killed_after_reading(incs, res)


def test_socket_destroyed_by_ss(ns):
    (res, ss_pid), incs, _ = run_traced(["--netns", str(ns.inode)], lambda: scenarios.destroyed(ns))
    expect.socket_destroyed(incs, res, ss_pid)


def test_linger2_abort(ns):
    res, incs, _ = run_traced(["--netns", str(ns.inode)], lambda: scenarios.linger2_abort(ns))
    # ABORT_ON_LINGER if close() itself saw the FIN acked (FIN_WAIT2); on loopback the ACK
    # usually comes after, and the orphan in FIN_WAIT1 resets (counted as TCPAbortOnData).
    expect.linger2_abort(incs, res)


def test_connection_refused(ns):
    port = free_port()
    res, incs, _ = run_traced(["--netns", str(ns.inode)], lambda: scenarios.refused(ns, port=port))
    expect.connection_refused(incs, res, port)


def test_clean_half_close_is_silent(ns):
    with Tracer("--netns", str(ns.inode)) as t:
        res = scenarios.half_close(ns)
        incs, err, rc = t.stop()
        records = t.records()
    assert rc == 0, err
    assert res.client_lines[-2:] == ["eof 4", "done"]
    assert incs == []
    assert [r for r in records if r["type"] == "event"] == []


def test_close_wait_leak_reported_with_owner_age_and_bytes(ns):
    with Tracer("--netns", str(ns.inode), "--close-wait", "1", "--close-wait-every", "0.5") as t:
        with scenarios.close_wait(ns) as run:
            first = t.wait_incident(timeout=10)
            t.wait_stderr(f"CLOSE_WAIT: rst_server[{run.server.pid}] holds 1 socket(s) past the threshold")
            run.server.send("close")
            run.server.expect("closed")
            second = t.wait_incident(timeout=10)
            run.server.send("exit")
            run.server.wait()
        incs, err, rc = t.stop()
    assert rc == 0, err
    assert incs == [first, second]
    for inc in incs:
        assert inc["kind"] == "close-wait"
        assert inc["culprit"] == {"pid": run.server.pid, "comm": "rst_server"}
        assert (inc["local"], inc["remote"]) == (lo(run.server_port), lo(run.client_port))
        assert inc["close_wait_preexisting"] is False
    # Unread while overdue; the late close read them first (so it ended with FIN).
    assert [i["close_wait_unread"] for i in incs] == [1000, 0]
    assert first["close_wait_closed"] is False and second["close_wait_closed"] is True
    assert 1_000_000_000 <= first["close_wait_age_ns"] <= second["close_wait_age_ns"]


def test_close_wait_found_at_start_up(ns):
    with scenarios.close_wait(ns) as run:
        with Tracer("--netns", str(ns.inode), "--close-wait", "1") as t:
            first = t.wait_incident(timeout=10)
            run.server.send("close")
            run.server.expect("closed")
            second = t.wait_incident(timeout=10)
            incs, err, rc = t.stop()
        run.server.send("exit")
    assert rc == 0, err
    assert incs == [first, second]
    assert [i["close_wait_preexisting"] for i in incs] == [True, True]
    assert [i["close_wait_closed"] for i in incs] == [False, True]
    # There before tracing began, yet aged: sock_diag's tcp_info says how long it has been idle.
    assert 1_000_000_000 <= first["close_wait_age_ns"] <= second["close_wait_age_ns"]
    assert [i["close_wait_unread"] for i in incs] == [1000, 0]
    for inc in incs:
        assert inc["kind"] == "close-wait"
        assert inc["culprit"] == {"pid": run.server.pid, "comm": "rst_server"}
        assert (inc["local"], inc["remote"]) == (lo(run.server_port), lo(run.client_port))


@contextlib.contextmanager
def cpus_busy_in_user_mode():
    """A spinning process per CPU: timer interrupts then land in user mode, and x86-64 runs the
    softirqs they raise (TCP's timers) on the interrupted task's own stack."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
    try:
        yield
    finally:
        for p in spinners:
            p.kill()
            p.wait()


@pytest.mark.parametrize(
    "keepalive,busy",
    [(False, False), (True, False), (True, True)],
    ids=["retransmit", "keepalive", "keepalive-cpus-busy"],
)
def test_peer_goes_silent(hosts, keepalive, busy):
    port = free_port()
    with Tracer("-P", str(port)) as t, cpus_busy_in_user_mode() if busy else contextlib.nullcontext():
        res = scenarios.peer_timeout(hosts, keepalive, port=port, before_cleanup=t.stop)
    incs, err, rc = t.incidents, t.stderr, t.returncode
    assert rc == 0, err
    expect.peer_went_silent(incs, res, hosts, port, keepalive)


def test_crash_and_reboot_draws_a_no_socket_reset(hosts):
    port = free_port()
    old_b = hosts.b.inode
    with Tracer("-P", str(port)) as t:
        res = scenarios.crash_reboot(hosts, port=port)
        incs, err, rc = t.stop()
        records = t.records()
    assert rc == 0, err
    # Before 6.10 tcp:tcp_send_reset is silent for a reset without a socket; the kprobe plan
    # (tcp_v4_send_reset) and later kernels see it.
    sender_seen = any(r["type"] == "event" and r["kind"] == "send_reset" and "nosk" in r["flags"] for r in records)
    assert sender_seen == (records[0]["plan"]["name"] == "kprobe" or KernelFeatures.probe().send_reset_sees_nosk)
    assert res.client_returncode == -13
    assert res.client_lines[2:] == ["write 100 OK", "write -1 ECONNRESET"]  # then SIGPIPE
    assert len(incs) == 2
    [killed] = [i for i in incs if i["kind"] == "process-killed"]
    [rst] = [i for i in incs if i is not killed]
    # Killing B's server is part of the simulated crash; its FIN never left the unplugged host.
    assert killed["kind"] == "process-killed" and killed["netns"] == old_b
    assert killed["culprit"] == {"pid": res.server_pid, "comm": "rst_server", "signal": 9}
    assert killed["ended_with"] == "FIN" and killed["victim"] is None
    assert rst["reason"] in ("NO_SOCKET", None)
    assert rst["kind"] == ("no-socket" if sender_seen else "reset-received")
    # The side that sent it, when seen; else the incident is told from the victim's side.
    assert rst["netns"] == (hosts.b.inode if sender_seen else hosts.a.inode)
    assert rst["local"] == {"addr": hosts.addr_b, "port": port}
    assert rst["remote"] == {"addr": hosts.addr_a, "port": res.client_port}
    v = rst["victim"]
    assert (v["pid"], v["comm"], v["netns"]) == (res.client_pid, "rst_client", hosts.a.inode)
    assert errors(v) == [("write", "ECONNRESET"), ("write", "EPIPE")]
    assert v["sigpipe"] == "killed"


def test_write_after_close(ns):
    res, incs, _ = run_traced(["--netns", str(ns.inode)], lambda: scenarios.write_after_close(ns))
    expect.write_after_close(incs, res)
