"""Live tracing of real sockets in private network namespaces, through the real CLI."""

from __future__ import annotations

import pytest

from testbed import scenarios

from .tracer_proc import TIMEOUT_SCALE, Tracer, expected_plan, kernel_has_kprobes

pytestmark = pytest.mark.root


def trace_scenario(ns, run, *args):
    with Tracer("--netns", str(ns.inode), *args) as t:
        res = run()
        incidents, err, rc = t.stop()
        records = t.records()
    assert rc == 0, err
    return res, incidents, records, err


def assert_unread_incident(inc, res, ns, errors, sigpipe):
    assert inc["kind"] == "abort-on-close"
    assert inc["reason"] in ("TCP_ABORT_ON_CLOSE", None)
    assert inc["culprit"] == {"pid": res.server_pid, "comm": "rst_server"}
    assert inc["bytes_discarded"] == 1000
    assert inc["state"] == "ESTABLISHED"
    assert inc["local"] == {"addr": "127.0.0.1", "port": res.server_port}
    assert inc["remote"] == {"addr": "127.0.0.1", "port": res.client_port}
    assert inc["netns"] == ns.inode
    v = inc["victim"]
    assert (v["pid"], v["comm"], v["port"]) == (res.client_pid, "rst_client", res.client_port)
    assert [(e["call"], e["errno"]) for e in v["errors"]] == errors
    assert v["sigpipe"] == sigpipe


def test_unread_close_default_sigpipe_kills_client(ns):
    res, incidents, records, _ = trace_scenario(ns, lambda: scenarios.unread_close(ns, unread=1000))
    assert res.client_returncode == -13  # really died of SIGPIPE
    assert len(incidents) == 1
    assert_unread_incident(incidents[0], res, ns, [("write", "ECONNRESET"), ("write", "EPIPE")], "killed")
    assert incidents[0]["victim"]["exit_signal"] == 13
    # The trace file has the header, the events and the same incident.
    assert records[0]["type"] == "header" and records[0]["plan"]["name"] == expected_plan()
    assert [r for r in records if r["type"] == "incident"] == incidents
    assert records[-1]["type"] == "summary" and records[-1]["stats"]["lost"] == 0


@pytest.mark.parametrize(
    "client, fate",
    [
        ({"sigpipe": "ignore"}, "ignored"),
        ({"nosignal": True}, "none"),  # MSG_NOSIGNAL: EPIPE and no signal at all
        ({"sigpipe": "handle"}, "handled"),
    ],
)
def test_unread_close_client_survives(ns, client, fate):
    res, incidents, _, _ = trace_scenario(ns, lambda: scenarios.unread_close(ns, **client))
    assert res.client_returncode == 0
    assert len(incidents) == 1
    assert_unread_incident(
        incidents[0], res, ns, [("write", "ECONNRESET"), ("write", "EPIPE"), ("write", "EPIPE")], fate
    )


def test_perf_buffer_gives_the_same_incident(ns):
    res, incidents, records, _ = trace_scenario(ns, lambda: scenarios.unread_close(ns), "--buffer", "perf")
    assert records[0]["plan"]["ringbuf"] is False
    [inc] = incidents
    assert_unread_incident(inc, res, ns, [("write", "ECONNRESET"), ("write", "EPIPE")], "killed")
    assert records[-1]["stats"]["lost"] == 0


def test_unread_close_client_in_recv(ns):
    res, incidents, _, _ = trace_scenario(ns, lambda: scenarios.unread_close(ns, recv=True))
    assert len(incidents) == 1
    v = incidents[0]["victim"]
    assert v["pid"] == res.client_pid
    assert [(e["call"], e["errno"]) for e in v["errors"]] == [("read", "ECONNRESET")]
    assert v["sigpipe"] is None


@pytest.mark.parametrize("mode", ["readall", "lingering"])
def test_clean_close_is_silent(ns, mode):
    res, incidents, records, _ = trace_scenario(ns, lambda: scenarios.clean_close(ns, mode=mode))
    assert (res.client_returncode, res.server_returncode) == (0, 0)
    assert incidents == []
    # Nothing of a normal lifecycle left the kernel at all.
    assert [r for r in records if r["type"] == "event"] == []
    assert records[-1]["stats"]["emitted"] == 0


def test_host_wide_port_filter_sees_only_the_reset(ns):
    """Unfiltered by namespace: the seed scenario elsewhere on the host, found by its port."""
    port = 23456
    with Tracer("-P", str(port)) as t:
        clean = scenarios.clean_close(ns, mode="readall", port=port + 1)
        res = scenarios.unread_close(ns, port=port)
        incidents, err, rc = t.stop()
    assert rc == 0, err
    assert clean.client_returncode == 0
    assert len(incidents) == 1
    assert_unread_incident(incidents[0], res, ns, [("write", "ECONNRESET"), ("write", "EPIPE")], "killed")


def test_comm_filter_keeps_the_peer(ns):
    """-c names the culprit; the victim's events still pass the in-kernel filter."""
    res, incidents, _, _ = trace_scenario(ns, lambda: scenarios.unread_close(ns), "-c", "rst_server")
    assert len(incidents) == 1
    assert_unread_incident(incidents[0], res, ns, [("write", "ECONNRESET"), ("write", "EPIPE")], "killed")


def test_comm_filter_drops_other_processes(ns):
    res, incidents, records, _ = trace_scenario(ns, lambda: scenarios.unread_close(ns), "-c", "nginx")
    assert incidents == []
    events = [r for r in records if r["type"] == "event"]
    # Task-context events are judged in the kernel; only interrupt-context ones (the RST
    # arriving at the client inside the server's close()) cannot be, and pass to user space.
    assert sorted((e["ctx"], e["kind"]) for e in events) == [("irq", "recv_reset")]
    assert records[-1]["stats"]["filtered"] > 0


def test_unread_close_ipv6(ns):
    res, incidents, _, _ = trace_scenario(ns, lambda: scenarios.unread_close(ns, server_addr="::1"))
    assert len(incidents) == 1
    inc = incidents[0]
    assert inc["family"] == "ipv6" and inc["kind"] == "abort-on-close"
    assert inc["local"] == {"addr": "::1", "port": res.server_port}
    assert inc["remote"] == {"addr": "::1", "port": res.client_port}
    assert inc["culprit"]["pid"] == res.server_pid and inc["bytes_discarded"] == 1000
    assert inc["victim"]["pid"] == res.client_pid and inc["victim"]["sigpipe"] == "killed"


def test_across_two_hosts():
    """Server in namespace B, client in A, joined by veth: the RST crosses a link."""
    with scenarios.Hosts("rsthost") as h:
        with Tracer(dump=False) as t:
            res = scenarios.unread_close(h.b, server_ns=h.b, client_ns=h.a, server_addr=h.addr_b)
            incidents, err, rc = t.stop()
    assert rc == 0, err
    mine = [i for i in incidents if i["local"]["port"] == res.server_port]
    t.dump(mine)
    assert len(mine) == 1
    inc = mine[0]
    assert inc["netns"] == h.b.inode and inc["culprit"]["pid"] == res.server_pid
    assert inc["local"]["addr"] == h.addr_b and inc["remote"]["addr"] == h.addr_a
    assert inc["victim"]["netns"] == h.a.inode and inc["victim"]["pid"] == res.client_pid
    assert inc["victim"]["sigpipe"] == "killed"


def test_doctor_explains_the_plan():
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "tracer", "doctor"], capture_output=True, text=True, timeout=300 * TIMEOUT_SCALE
    )
    assert r.returncode == 0, r.stderr
    auto = "kprobe" if kernel_has_kprobes() else "tracepoint"
    assert f"chosen plan: {auto} (" in r.stdout
    assert "trial kprobe:" in r.stdout and "trial fentry:" in r.stdout
    assert "tracepoint tcp:tcp_send_reset: present" in r.stdout


def demo_unknown_lines() -> int:
    """The demo's abort on close lacks only its reason, on kernels before 6.10."""
    from tracer.kernel import KernelFeatures

    return 0 if KernelFeatures.probe().send_reset_has_reason else 1


def test_live_view_shows_the_chain_and_why_and_what_to_do():
    import subprocess
    import sys

    from tracer.kinds import KINDS

    r = subprocess.run(
        [sys.executable, "-m", "tracer", "-w", "demo"], capture_output=True, text=True, timeout=120 * TIMEOUT_SCALE
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    explanation, advice = KINDS["abort-on-close"].why, KINDS["abort-on-close"].fix
    assert len(lines) == 4 + demo_unknown_lines()
    assert lines[0].startswith("rst_server[") and lines[0].endswith("with 1000 unread bytes -> RST (abort on close)")
    assert lines[1].startswith("  -> rst_client[") and lines[1].endswith(
        "write: ECONNRESET, write: EPIPE, SIGPIPE: killed"
    )
    assert lines[2:4] == [f"     why: {explanation}", f"     fix: {advice}"]
    if demo_unknown_lines():
        assert lines[4] == "     unknown here: this kernel lacks enum sk_rst_reason (6.10): reason"
