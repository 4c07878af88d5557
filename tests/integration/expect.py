"""What each scenario must produce, exactly, as assertion functions any root test can call.

The same expectations as the per-kind tests (test_kinds.py, test_live.py) on a quiet machine:
one incident of the right kind, the culprit's pid and comm, the bytes discarded, the victim's
pid and comm, its failing calls in order and its SIGPIPE fate. test_under_load.py runs the
scenarios with every CPU busy and holds them to these same functions; none of them allows
for a slow machine (a late victim is a tracer bug, not a looser expectation). tests/matrix
uses them too. When an assertion in test_kinds.py or test_live.py changes, change it here.
"""

from __future__ import annotations

import signal

from tracer.kernel import KernelFeatures


def minisock_resets_seen() -> bool:
    """Every RST is reported here: tcp_send_reset sees minisocks (6.10+) or the kprobe plan runs."""
    from tracer.kernel import KernelFeatures

    from .tracer_proc import expected_plan

    return KernelFeatures.probe().send_reset_sees_nosk or expected_plan() == "kprobe"


def resets_counted(inc: dict, sent: int) -> None:
    """The incident's count of RSTs against the kernel's (Tcp.OutRsts): exact where every RST is
    traced; before 6.10 the tracepoint plan sees none sent by a TIME_WAIT socket or by no
    socket (which answered depends on timing: whether the server's listener was still open),
    and the incident must say that its count is not known."""
    unknown = inc.get("unknown") or {}
    if minisock_resets_seen():
        assert inc["resets"] == sent and "resets" not in unknown
    else:
        assert 0 <= inc["resets"] <= sent
        assert unknown.get("resets", "").startswith("this kernel lacks tcp:tcp_send_reset")


def errors(side: dict) -> list[tuple[str, str]]:
    return [(e["call"], e["errno"]) for e in side["errors"]]


def lo(port: int) -> dict:
    return {"addr": "127.0.0.1", "port": port}


def one(incidents: list[dict]) -> dict:
    assert len(incidents) == 1, f"expected exactly one incident, got {len(incidents)}: {incidents}"
    return incidents[0]


def victim(inc: dict, res, comm: str = "rst_client") -> dict:
    v = inc["victim"]
    assert v is not None, f"{inc['kind']}: victim not named (client pid {res.client_pid})"
    assert (v["pid"], v["comm"]) == (res.client_pid, comm)
    return v


# -- abort on close: the server closes with unread bytes ----------------------------------

# The client's fate for each of unread_close's SIGPIPE settings, and the calls that fail.
UNREAD_FATES = {
    "default": ({"sigpipe": "default"}, "killed", -13, [("write", "ECONNRESET"), ("write", "EPIPE")]),
    "ignore": ({"sigpipe": "ignore"}, "ignored", 0, [("write", "ECONNRESET"), ("write", "EPIPE"), ("write", "EPIPE")]),
    "nosignal": ({"nosignal": True}, "none", 0, [("write", "ECONNRESET"), ("write", "EPIPE"), ("write", "EPIPE")]),
    "handle": ({"sigpipe": "handle"}, "handled", 0, [("write", "ECONNRESET"), ("write", "EPIPE"), ("write", "EPIPE")]),
}


def abort_on_close(incidents: list[dict], res, ns, fate: str) -> dict:
    _, sigpipe, rc, calls = UNREAD_FATES[fate]
    assert res.client_returncode == rc
    inc = one(incidents)
    assert inc["kind"] == "abort-on-close"
    assert inc["reason"] in ("TCP_ABORT_ON_CLOSE", None)
    assert inc["culprit"] == {"pid": res.server_pid, "comm": "rst_server"}
    assert inc["bytes_discarded"] == 1000
    assert inc["state"] == "ESTABLISHED"
    assert (inc["local"], inc["remote"]) == (lo(res.server_port), lo(res.client_port))
    assert inc["netns"] == ns.inode
    v = victim(inc, res)
    assert v["port"] == res.client_port
    assert errors(v) == calls
    assert v["sigpipe"] == sigpipe
    if sigpipe == "killed":
        assert v["exit_signal"] == 13
    return inc


# -- the other kinds (test_kinds.py) ---------------------------------------------------------


def linger_zero(incidents: list[dict], res) -> dict:
    assert res.client_returncode == -13
    inc = one(incidents)
    assert inc["kind"] == "linger-zero"
    assert inc["reason"] in ("TCP_STATE", None)
    assert inc["culprit"] == {"pid": res.server_pid, "comm": "rst_server"}
    assert inc["bytes_discarded"] == 0
    assert inc["state"] == "ESTABLISHED"
    assert (inc["local"], inc["remote"]) == (lo(res.server_port), lo(res.client_port))
    v = victim(inc, res)
    assert errors(v) == [("write", "ECONNRESET"), ("write", "EPIPE")]
    assert v["sigpipe"] == "killed" and v["exit_signal"] == 13
    assert "SO_LINGER" in inc["summary"] and inc["advice"]
    return inc


def killed_with_unread_data(incidents: list[dict], res, sig: int) -> dict:
    assert res.server_returncode == -sig and res.client_returncode == -13
    inc = one(incidents)
    assert inc["kind"] == "process-killed"
    assert inc["culprit"] == {"pid": res.server_pid, "comm": "rst_server", "signal": int(sig)}
    assert inc["ended_with"] == "RST" and inc["bytes_discarded"] == 1000
    assert inc["reason"] in ("TCP_ABORT_ON_CLOSE", None)
    assert (inc["local"], inc["remote"]) == (lo(res.server_port), lo(res.client_port))
    v = victim(inc, res)
    assert errors(v) == [("write", "ECONNRESET"), ("write", "EPIPE")]
    assert v["sigpipe"] == "killed"
    return inc


def killed_after_reading(incidents: list[dict], res) -> dict:
    assert res.server_returncode == -9 and res.client_returncode == -13
    # The first write went out (the FIN had only closed the other direction); the RST it
    # drew arrived in CLOSE_WAIT, so the next write got EPIPE, and SIGPIPE, at once.
    assert res.client_lines[2:] == ["write 100 OK"]
    inc = one(incidents)
    assert inc["kind"] == "process-killed"
    assert inc["culprit"] == {"pid": res.server_pid, "comm": "rst_server", "signal": 9}
    assert inc["ended_with"] == "FIN" and inc["bytes_discarded"] == 0
    assert inc["state"] == "ESTABLISHED"
    assert inc["reason"] in ("TCP_TIMEWAIT_SOCKET", "TCP_ABORT_ON_DATA", None)
    v = victim(inc, res)
    assert v["state"] == "CLOSE_WAIT"
    assert errors(v) == [("write", "EPIPE")]
    assert v["sigpipe"] == "killed"
    return inc


def socket_destroyed(incidents: list[dict], res, ss_pid: int) -> dict:
    assert "recv -1 errno=103" in res.server_lines
    inc = one(incidents)
    assert inc["kind"] == "socket-destroyed"
    assert inc["reason"] in ("TCP_STATE", None)
    assert inc["culprit"] == {"pid": ss_pid, "comm": "ss"}
    assert (inc["local"], inc["remote"]) == (lo(res.server_port), lo(res.client_port))
    v = victim(inc, res)
    assert errors(v) == [("write", "ECONNRESET"), ("write", "EPIPE")]
    assert v["sigpipe"] == "killed"
    owner = inc["owner"]
    assert owner is not None, "socket-destroyed: owner not named"
    assert (owner["pid"], owner["comm"]) == (res.server_pid, "rst_server")
    assert errors(owner) == [("read", "ECONNABORTED")]
    return inc


def linger2_abort(incidents: list[dict], res) -> dict:
    inc = one(incidents)
    assert inc["kind"] == "linger2-abort"
    assert inc["culprit"] == {"pid": res.server_pid, "comm": "rst_server"}
    assert inc["reason"] in ("TCP_ABORT_ON_DATA", "TCP_ABORT_ON_LINGER", None)
    v = victim(inc, res)
    assert v["state"] == "CLOSE_WAIT"
    assert errors(v) == [("write", "EPIPE")]
    assert v["sigpipe"] == "killed"
    return inc


def connection_refused(incidents: list[dict], res, port: int) -> dict:
    assert res.client_lines[-1] == "connect -1 ECONNREFUSED"
    inc = one(incidents)
    assert inc["kind"] == "connection-refused"
    assert inc["reason"] in ("NO_SOCKET", None)
    assert inc["local"] == lo(port)
    v = victim(inc, res)
    assert v["state"] == "SYN_SENT"
    assert errors(v) == [("connect", "ECONNREFUSED")]
    return inc


def write_after_close(incidents: list[dict], res) -> dict:
    assert res.client_returncode == -13
    assert res.client_lines[2:] == ["write 100 OK"]  # the RST it drew made the next one EPIPE
    inc = one(incidents)
    assert inc["kind"] == "write-after-close"
    assert inc["reason"] in ("TCP_TIMEWAIT_SOCKET", "TCP_ABORT_ON_DATA", None)
    # A normal close is remembered in the kernel (a cache of closers), so the RST names it.
    assert inc["culprit"] == {"pid": res.server_pid, "comm": "rst_server"}
    resets_counted(inc, 1)
    assert inc["local"] == lo(res.server_port)
    v = victim(inc, res)
    assert v["state"] == "CLOSE_WAIT"
    assert errors(v) == [("write", "EPIPE")]
    assert v["sigpipe"] == "killed"
    return inc


def silent(incidents: list[dict], records: list[dict]) -> None:
    """A connection that ends cleanly: no incident, and no event left the kernel."""
    assert incidents == []
    assert [r for r in records if r["type"] == "event"] == []


def peer_went_silent(incidents: list[dict], res, hosts, port: int, keepalive: bool) -> dict:
    inc = one(incidents)
    assert inc["culprit"] is None
    assert inc["local"] == {"addr": hosts.addr_a, "port": res.client_port}
    assert inc["remote"] == {"addr": hosts.addr_b, "port": port}
    v = victim(inc, res)
    assert v["port"] == res.client_port
    if keepalive:
        assert res.client_lines[-1] == "recv -1 ETIMEDOUT"
        assert inc["kind"] == "keepalive-timeout"
        assert inc["reason"] in ("TCP_KEEPALIVE_TIMEOUT", None)
        assert inc["probes"] == 3
        assert errors(v) == [("read", "ETIMEDOUT")]
    else:
        assert res.client_returncode == -13
        assert inc["kind"] == "retransmit-timeout"
        assert inc["reason"] is None  # the kernel gives up without sending anything
        assert inc["retransmissions"] >= 3
        assert 3000 <= inc["unanswered_ms"] <= 6000  # TCP_USER_TIMEOUT 3000 ms, checked per RTO
        assert errors(v) == [("write", "ETIMEDOUT"), ("write", "EPIPE")]
        assert v["sigpipe"] == "killed"
    return inc


def crash_and_reboot(incidents: list[dict], records: list[dict], res, hosts, port: int, old_b: int) -> None:
    # Before 6.10 tcp:tcp_send_reset is silent for a reset without a socket; the kprobe plan
    # (tcp_v4_send_reset) and later kernels see it.
    sender_seen = any(r["type"] == "event" and r["kind"] == "send_reset" and "nosk" in r["flags"] for r in records)
    assert sender_seen == (records[0]["plan"]["name"] == "kprobe" or KernelFeatures.probe().send_reset_sees_nosk)
    assert res.client_returncode == -13
    assert res.client_lines[2:] == ["write 100 OK", "write -1 ECONNRESET"]  # then SIGPIPE
    assert len(incidents) == 2, incidents
    [killed] = [i for i in incidents if i["kind"] == "process-killed"]
    [rst] = [i for i in incidents if i is not killed]
    assert killed["netns"] == old_b
    assert killed["culprit"] == {"pid": res.server_pid, "comm": "rst_server", "signal": 9}
    assert killed["ended_with"] == "FIN" and killed["victim"] is None
    assert rst["reason"] in ("NO_SOCKET", None)
    assert rst["kind"] == ("no-socket" if sender_seen else "reset-received")
    assert rst["netns"] == (hosts.b.inode if sender_seen else hosts.a.inode)
    assert rst["local"] == {"addr": hosts.addr_b, "port": port}
    assert rst["remote"] == {"addr": hosts.addr_a, "port": res.client_port}
    v = victim(rst, res)
    assert v["netns"] == hosts.a.inode
    assert errors(v) == [("write", "ECONNRESET"), ("write", "EPIPE")]
    assert v["sigpipe"] == "killed"


def close_wait_leak(incidents: list[dict], first: dict, second: dict, run, preexisting: bool) -> None:
    assert incidents == [first, second]
    for inc in incidents:
        assert inc["kind"] == "close-wait"
        assert inc["culprit"] == {"pid": run.server.pid, "comm": "rst_server"}
        assert (inc["local"], inc["remote"]) == (lo(run.server_port), lo(run.client_port))
        assert inc["close_wait_preexisting"] is preexisting
    # Unread while overdue; the late close read them first (so it ended with FIN).
    assert [i["close_wait_unread"] for i in incidents] == [1000, 0]
    assert first["close_wait_closed"] is False and second["close_wait_closed"] is True
    assert 1_000_000_000 <= first["close_wait_age_ns"] <= second["close_wait_age_ns"]


KILL_SIGNALS = {"SIGKILL": signal.SIGKILL, "SIGTERM": signal.SIGTERM}
