"""The three commonest real-life resets told whole: a victim whose calls all succeed, a burst of
RSTs answered partly by the listener, and the closer of a write-after-close named by the kernel.
Each asserts exact pids, bytes and errors, and one incident per connection."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from tracer import render, scenarios

from .tracer_proc import Tracer

pytestmark = pytest.mark.root

DRIVER = Path(__file__).parent / "drivers" / "early_reply.py"


def comm_of(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


def test_victim_whose_calls_all_succeed_is_named(ns):
    """The server answers early and closes with the body unread; the client reads the answer
    and closes. No call of the client fails, yet it is the victim, named from its own close."""
    head, body, reply = 100, 5000, 200
    sizes = ["--head", str(head), "--body", str(body), "--reply", str(reply)]
    with Tracer("--netns", str(ns.inode)) as t:
        before = ns.counters()
        with scenarios.Proc(ns, [sys.executable, DRIVER, "server", *sizes]) as server:
            port = int(server.expect("listening").split()[1])
            with scenarios.Proc(ns, [sys.executable, DRIVER, "client", str(port), *sizes]) as client:
                client.expect("connected")
                server.expect("accepted")
                client.expect("sent")
                server.send("reply")
                server.expect("replied")
                server_comm, client_comm = comm_of(server.pid), comm_of(client.pid)
                server.send("close")
                unread = int(server.expect("closing").split("=")[1])
                server.expect("closed")
                client_port = int(client.lines[0].split("sport=")[1])
                run = scenarios._Run(server, client, port, client_port, ns)
                run.wait_reset_received()
                client.send("go")
                assert client.expect("read") == f"read {reply}"
                client.expect("closed")
                assert client.wait() == 0
                server.send("exit")
                assert server.wait() == 0
        after = ns.counters()
        incidents, err, rc = t.stop()
    assert rc == 0, err
    # The kernel's own account: one abort on close, one RST, the body it threw away.
    assert unread == body
    assert after["TcpExt.TCPAbortOnClose"] - before.get("TcpExt.TCPAbortOnClose", 0) == 1
    assert after["Tcp.OutRsts"] - before.get("Tcp.OutRsts", 0) == 1
    [inc] = incidents
    assert inc["kind"] == "abort-on-close"
    assert inc["culprit"] == {"pid": server.pid, "comm": server_comm}
    assert inc["bytes_discarded"] == body
    assert inc["resets"] == 1
    v = inc["victim"]
    assert (v["pid"], v["comm"]) == (client.pid, client_comm)
    assert v["errors"] == [] and v["sigpipe"] is None and v["exit_signal"] is None
    assert (v["unread_at_reset"], v["unacked_at_reset"], v["unread_at_close"]) == (reply, 0, 0)
    assert v["closed"] is True
    assert inc["impact"] == "unaffected"
    lines = render.chain_lines(inc)
    assert lines[1] == (f"  -> {client_comm}[{client.pid}] got the RST with {reply} bytes unread; "
                        "read them and closed (no call failed)")


def _write_after_close(ns, send: int):
    """The server reads everything and closes (FIN); the client writes `send` bytes anyway."""
    before = ns.counters()
    with Tracer("--netns", str(ns.inode)) as t:
        with scenarios._connected(ns, ns, "127.0.0.1", None, ["--mode", "readall", "--expect", 1000],
                                  ["--send", 1000, "--writes", 3, "--chunk", send]) as run:
            run.server.send("close")
            run.server.expect("closed")
            closed_at = time.monotonic()
            scenarios._wait_state(run.client.pid, run.client_port, run.server_port, scenarios.TCP_CLOSE_WAIT)
            run.client.send("go")
            res = run.finish("write_after_close", 0)
            elapsed_ms = (time.monotonic() - closed_at) * 1000
        after = ns.counters()
        incidents, err, rc = t.stop()
    assert rc == 0, err
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in ("Tcp.OutRsts", "TcpExt.TCPAbortOnData")}
    return res, incidents, delta, elapsed_ms


@pytest.mark.parametrize("burst", [1000, 65536], ids=["one-segment", "burst"])
def test_write_after_close_names_the_closer_and_joins_every_rst(ns, burst):
    res, incidents, delta, elapsed_ms = _write_after_close(ns, burst)
    assert res.client_returncode == -13
    [inc] = incidents  # one connection, one incident, however many RSTs
    assert inc["kind"] == "write-after-close"
    # Found in the kernel at the close: the server, its close, how idle the connection was.
    assert inc["culprit"] == {"pid": res.server_pid, "comm": "rst_server"}
    assert 0 <= inc["close_to_reset_ms"] <= elapsed_ms
    assert 0 <= inc["idle_before_close_ms"] <= elapsed_ms
    # Every RST the server's kernel sent answered this connection's segments.
    assert inc["resets"] == delta["Tcp.OutRsts"]
    if burst == 1000:
        assert inc["resets"] == 1
    else:
        assert inc["resets"] >= 2  # the TIME_WAIT socket's, then the listener's
    assert inc["local"] == {"addr": "127.0.0.1", "port": res.server_port}
    assert inc["remote"] == {"addr": "127.0.0.1", "port": res.client_port}
    v = inc["victim"]
    assert (v["pid"], v["comm"], v["state"]) == (res.client_pid, "rst_client", "CLOSE_WAIT")
    assert [(e["call"], e["errno"]) for e in v["errors"]] == [("write", "EPIPE")]
    assert v["sigpipe"] == "killed"
    assert inc["impact"] == "killed"
    head = render.chain_lines(inc)[0]
    assert head.startswith(f"rst_server[{res.server_pid}] closed 127.0.0.1:{res.server_port}"
                           f"<-127.0.0.1:{res.client_port} (FIN) after ")
    assert f"later rst_client[{res.client_pid}] wrote -> RST" in head
