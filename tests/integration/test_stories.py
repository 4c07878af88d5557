"""The three commonest real-life resets told whole: a victim whose calls all succeed, a burst of
RSTs answered partly by the listener, and the closer of a write-after-close named by the kernel.
Each asserts exact pids, bytes and errors, and one incident per connection."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from testbed import scenarios
from tracer import render

from . import expect
from .tracer_proc import Tracer

pytestmark = pytest.mark.root

DRIVER = Path(__file__).parent / "drivers" / "early_reply.py"


def comm_of(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


HEAD, BODY, REPLY = 100, 5000, 200


def early_reply(ns) -> dict:
    """The server answers early and closes with the body unread; the client reads the answer
    and closes. Returns pids, comms, what the server's kernel held unread, and the counters."""
    sizes = ["--head", str(HEAD), "--body", str(BODY), "--reply", str(REPLY)]
    before = ns.counters()
    with scenarios.Proc(ns, [sys.executable, DRIVER, "server", *sizes]) as server:
        port = int(server.expect("listening").split()[1])
        with scenarios.Proc(ns, [sys.executable, DRIVER, "client", str(port), *sizes]) as client:
            client.expect("connected")
            server.expect("accepted")
            client.expect("sent")
            server.send("reply")
            server.expect("replied")
            comms = comm_of(server.pid), comm_of(client.pid)
            server.send("close")
            unread = int(server.expect("closing").split("=")[1])
            server.expect("closed")
            client_port = int(client.lines[0].split("sport=")[1])
            scenarios._Run(server, client, port, client_port, ns).wait_reset_received()
            client.send("go")
            read = client.expect("read")
            client.expect("closed")
            client_rc = client.wait()
            server.send("exit")
            server_rc = server.wait()
    after = ns.counters()
    return {
        "server": (server.pid, comms[0]),
        "client": (client.pid, comms[1]),
        "unread": unread,
        "read": read,
        "rc": (server_rc, client_rc),
        "delta": {k: after.get(k, 0) - before.get(k, 0) for k in ("TcpExt.TCPAbortOnClose", "Tcp.OutRsts")},
    }


def test_victim_whose_calls_all_succeed_is_named(ns):
    """No call of the client fails, yet it is the victim: named from its own close."""
    with Tracer("--netns", str(ns.inode)) as t:
        res = early_reply(ns)
        incidents, err, rc = t.stop()
    assert rc == 0, err
    assert res["rc"] == (0, 0) and res["read"] == f"read {REPLY}"
    # The kernel's own account: one abort on close, one RST, the body it threw away.
    assert res["unread"] == BODY
    assert res["delta"] == {"TcpExt.TCPAbortOnClose": 1, "Tcp.OutRsts": 1}
    [inc] = incidents
    assert inc["kind"] == "abort-on-close"
    assert inc["culprit"] == {"pid": res["server"][0], "comm": res["server"][1]}
    assert inc["bytes_discarded"] == BODY
    assert inc["resets"] == 1
    v = inc["victim"]
    assert (v["pid"], v["comm"]) == res["client"]
    assert v["errors"] == [] and v["sigpipe"] is None and v["exit_signal"] is None
    assert (v["unread_at_reset"], v["unacked_at_reset"], v["unread_at_close"]) == (REPLY, 0, 0)
    assert v["closed"] is True
    assert inc["impact"] == "unaffected"
    lines = render.chain_lines(inc)
    assert lines[1] == (
        f"  -> {res['client'][1]}[{res['client'][0]}] got the RST with {REPLY} bytes unread; "
        "read them and closed (no call failed)"
    )


def _write_after_close(ns, send: int):
    """The server reads everything and closes (FIN); the client writes `send` bytes anyway."""
    before = ns.counters()
    with Tracer("--netns", str(ns.inode)) as t:
        started_at = time.monotonic()  # before the connection's last segment
        with scenarios._connected(
            ns,
            ns,
            "127.0.0.1",
            None,
            ["--mode", "readall", "--expect", 1000],
            ["--send", 1000, "--writes", 3, "--chunk", send],
        ) as run:
            closed_at = time.monotonic()  # before the close
            run.server.send("close")
            run.server.expect("closed")
            scenarios._wait_state(run.client.pid, run.client_port, run.server_port, scenarios.TCP_CLOSE_WAIT)
            run.client.send("go")
            res = run.finish("write_after_close", 0)
            now = time.monotonic()
            elapsed_ms = ((now - closed_at) * 1000, (now - started_at) * 1000)
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
    since_close, since_start = elapsed_ms
    assert 0 <= inc["close_to_reset_ms"] <= since_close
    assert 0 <= inc["idle_before_close_ms"] <= since_start
    # Every RST the server's kernel sent answered this connection's segments: the first by the
    # orphan (TCPAbortOnData) or the TIME_WAIT socket, the rest of a burst by the listener.
    sent = delta["Tcp.OutRsts"]
    assert sent == 1 if burst == 1000 else sent >= 2
    expect.resets_counted(inc, sent)
    assert inc["local"] == {"addr": "127.0.0.1", "port": res.server_port}
    assert inc["remote"] == {"addr": "127.0.0.1", "port": res.client_port}
    v = inc["victim"]
    assert (v["pid"], v["comm"], v["state"]) == (res.client_pid, "rst_client", "CLOSE_WAIT")
    assert [(e["call"], e["errno"]) for e in v["errors"]] == [("write", "EPIPE")]
    assert v["sigpipe"] == "killed"
    assert inc["impact"] == "killed"
    head = render.chain_lines(inc)[0]
    assert head.startswith(
        f"rst_server[{res.server_pid}] closed 127.0.0.1:{res.server_port}<-127.0.0.1:{res.client_port} (FIN) after "
    )
    assert f"later rst_client[{res.client_pid}] wrote -> RST" in head
