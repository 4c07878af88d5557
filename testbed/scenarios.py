"""The reset scenarios that tests, benchmarks and the notebook play, with the C workloads inside
private network namespaces. Not shipped: the product package keeps only what `rsttrace demo`
needs (tracer/scenarios.py: namespaces, processes, the unread-data close), which this module
re-exports and extends (two hosts joined by veth, every other kind of reset, iptables)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator

from tracer.procfs import proc_tcp_rows

from tracer.scenarios import (  # noqa: F401 (re-exported: one module for every scenario)
    CFLAGS,
    LOCK_DIR,
    TIMEOUT,
    WORKLOAD_SRC,
    WORKLOADS,
    Netns,
    Proc,
    ScenarioResult,
    WorkloadError,
    _connected,
    _delete_netns,
    _field,
    _has_connection,
    _ip,
    _last_number,
    _Run,
    build_workloads,
    unread_close,
)


@contextlib.contextmanager
def _reserve_subnet() -> Iterator[int]:
    """Reserve X of 10.200.X.0/24, held by a lock file so concurrent Hosts never share one."""
    LOCK_DIR.mkdir(mode=0o700, exist_ok=True)
    for x in range(1, 255):
        fd = os.open(LOCK_DIR / f"hosts-{x}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            yield x
        finally:
            os.close(fd)
        return
    raise WorkloadError("all 254 Hosts subnets are in use")


class Hosts:
    """Namespaces A and B joined by a veth pair on 10.200.X.0/24 and fd00:200:X::/64."""

    def __init__(self, name_prefix: str = "rst") -> None:
        self.a = Netns(f"{name_prefix}a")
        self.b = Netns(f"{name_prefix}b")
        self.addr_a = self.addr_b = self.addr6_a = self.addr6_b = ""
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Hosts:
        with contextlib.ExitStack() as stack:
            x = stack.enter_context(_reserve_subnet())
            stack.enter_context(self.a)
            stack.enter_context(self.b)
            self.addr_a, self.addr_b = f"10.200.{x}.1", f"10.200.{x}.2"
            self.addr6_a, self.addr6_b = f"fd00:200:{x}::1", f"fd00:200:{x}::2"
            self._plug()
            self._stack = stack.pop_all()
        return self

    def _plug(self) -> None:
        # Created inside A with its peer born in B, so the interface names
        # never exist in (or clash within) the root namespace.
        _ip("-n", self.a.name, "link", "add", "veth-a", "type", "veth", "peer", "name", "veth-b", "netns", self.b.name)
        for ns, dev, addr, addr6 in (
            (self.a, "veth-a", self.addr_a, self.addr6_a),
            (self.b, "veth-b", self.addr_b, self.addr6_b),
        ):
            _ip("-n", ns.name, "addr", "add", f"{addr}/24", "dev", dev)
            # nodad: otherwise the address stays tentative (unbindable) for a while.
            _ip("-n", ns.name, "addr", "add", f"{addr6}/64", "dev", dev, "nodad")
            _ip("-n", ns.name, "link", "set", dev, "up")

    def reboot_b(self) -> None:
        """B crashes and comes back: unplugged first (nothing its dying processes send reaches
        A), its processes killed, a new namespace with the same addresses and no sockets."""
        _ip("-n", self.a.name, "link", "del", "veth-a")
        _delete_netns(self.b.name)
        self.b = self._stack.enter_context(Netns(self.b.prefix))
        self._plug()

    def __exit__(self, *exc: object) -> None:
        self._stack.close()


def clean_close(ns: Netns, mode: str = "readall", send: int = 1000, port: int | None = None) -> ScenarioResult:
    """The server reads everything ("readall") or does a lingering close; no reset at all.

    For "lingering" the client writes twice into the half-closed connection
    after the server's shutdown(SHUT_WR), then closes, which ends the drain.
    """
    if mode == "readall":
        server_args: list[object] = ["--mode", "readall", "--expect", send]
        writes = 0
    elif mode == "lingering":
        server_args = ["--mode", "lingering"]
        writes = 2
    else:
        raise ValueError(f"clean_close mode must be 'readall' or 'lingering', not {mode!r}")
    with _connected(ns, ns, "127.0.0.1", port, server_args, ["--send", send, "--writes", writes]) as run:
        run.server.send("close")
        if mode == "readall":
            run.server.expect("read")
            run.server.expect("closed")
            run.client.send("go")
        else:
            run.server.expect("shutdown")
            run.client.send("go")
            run.client.wait()
            run.server.expect("drained")
            run.server.expect("closed")
        return run.finish(f"clean_close_{mode}")


# -- the other ways a connection ends (issue 3) ----------------------------------------


def _wait_state(pid: int, local_port: int, remote_port: int, state: int, timeout: float = TIMEOUT) -> None:
    """Wait until PID's namespace has the connection in `state` (the /proc/net/tcp code)."""
    deadline = time.monotonic() + timeout
    while not any((r.lport, r.rport, r.state) == (local_port, remote_port, state) for r in proc_tcp_rows(pid)):
        if time.monotonic() > deadline:
            raise WorkloadError(f"connection :{local_port}->:{remote_port} never reached state {state:#x}")
        time.sleep(0.001)


TCP_CLOSE_WAIT = 0x08


def _reset_then_write(ns: Netns, mode: str, name: str, send: int, port: int | None) -> ScenarioResult:
    """The server closes the `mode` way, which resets the connection; the client writes on."""
    with _connected(
        ns, ns, "127.0.0.1", port, ["--mode", mode, "--expect", send], ["--send", send, "--writes", 3]
    ) as run:
        run.server.send("close")
        run.server.expect("closed")
        run.wait_reset_received()
        run.client.send("go")
        return run.finish(name, 0)


def linger_zero(ns: Netns, send: int = 1000, port: int | None = None) -> ScenarioResult:
    """The server reads everything, sets SO_LINGER {1, 0} and closes (RST); the client writes on."""
    return _reset_then_write(ns, "linger0", "linger_zero", send, port)


def killed_server(
    ns: Netns, sig: int = signal.SIGKILL, unread: bool = False, send: int = 1000, port: int | None = None
) -> ScenarioResult:
    """The server is killed while holding the connection (data read, or left unread), then the
    client writes: RST from the orphan/TIME_WAIT socket (read) or the abort (unread)."""
    mode = "hold" if unread else "readhold"
    with _connected(
        ns, ns, "127.0.0.1", port, ["--mode", mode, "--expect", send], ["--send", send, "--writes", 3]
    ) as run:
        run.server.expect("holding")
        os.kill(run.server.pid, sig)
        server_rc = run.server.wait()
        if unread:
            run.wait_reset_received()
        else:
            _wait_state(run.client.pid, run.client_port, run.server_port, TCP_CLOSE_WAIT)
        run.client.send("go")
        client_rc = run.client.wait()
        return run.result("killed_server", client_rc, server_rc, send if unread else 0)


def linger2_abort(ns: Netns, send: int = 1000, port: int | None = None) -> ScenarioResult:
    """The server sets TCP_LINGER2 = -1 and closes: RST once its FIN is acked; the client writes."""
    return _reset_then_write(ns, "linger2", "linger2_abort", send, port)


def destroyed(ns: Netns, send: int = 1000, port: int | None = None) -> tuple[ScenarioResult, int]:
    """`ss -K` destroys the server's socket (tcp_abort): the client gets the RST, the server's
    next recv ECONNABORTED. Returns the result and the pid of `ss`."""
    with _connected(
        ns, ns, "127.0.0.1", port, ["--mode", "readhold", "--expect", send], ["--send", send, "--writes", 3]
    ) as run:
        run.server.expect("holding")
        ss = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                ns.name,
                "ss",
                "-K",
                "-t",
                "state",
                "established",
                f"( sport = :{run.server_port} and dport = :{run.client_port} )",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        out, _ = ss.communicate(timeout=TIMEOUT)
        if ss.returncode != 0:
            raise WorkloadError(f"ss -K failed ({ss.returncode}): {out}")
        run.wait_reset_received()
        run.client.send("go")
        run.client.wait()
        run.server.send("recv")
        run.server.expect("recv")
        return run.finish("destroyed", 0), ss.pid


def refused(ns: Netns, port: int = 9, server_addr: str = "127.0.0.1") -> ScenarioResult:
    """connect() to a port nobody listens on: RST answers the SYN, ECONNREFUSED."""
    bins = build_workloads()
    with Proc(ns, [bins / "rst_client", server_addr, str(port), "--may-fail"]) as client:
        client.expect("connect")
        rc = client.wait()
    return ScenarioResult("refused", 0, client.pid, port, 0, ns.inode, [], list(client.lines), rc, 0, None)


def half_close(ns: Netns, send: int = 1000, port: int | None = None) -> ScenarioResult:
    """The client sends, shuts down its write side and reads to EOF; the server drains, replies
    and closes. No reset."""
    bins = build_workloads()
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(Proc(ns, [bins / "rst_server", str(port or 0), "--mode", "drain"]))
        server_port = int(server.expect("listening").split()[1])
        client = stack.enter_context(
            Proc(ns, [bins / "rst_client", "127.0.0.1", str(server_port), "--send", str(send), "--shutdown"])
        )
        connected = client.expect("connected")
        server.expect("accepted")
        server.send("close")
        server.expect("closed")
        client.expect("eof")
        client_rc = client.wait()
        server.send("exit")
        server_rc = server.wait()
        return ScenarioResult(
            "half_close",
            server.pid,
            client.pid,
            server_port,
            _field(connected, "sport"),
            ns.inode,
            list(server.lines),
            list(client.lines),
            client_rc,
            server_rc,
            0,
        )


@contextlib.contextmanager
def close_wait(ns: Netns, send: int = 1000, port: int | None = None) -> Iterator[_Run]:
    """The client sends and closes; the server never closes: its socket sits in CLOSE_WAIT with
    `send` unread bytes until the caller sends "close" to run.server."""
    with _connected(
        ns, ns, "127.0.0.1", port, ["--mode", "hold", "--expect", send], ["--send", send, "--writes", 0]
    ) as run:
        run.server.expect("holding")
        run.client.send("go")
        run.client.expect("done")
        _wait_state(run.server.pid, run.server_port, run.client_port, TCP_CLOSE_WAIT)
        yield run


def _iptables(ns: Netns, *rule: str) -> None:
    ns.run("iptables", "-w", *rule)


def peer_timeout(
    hosts: Hosts,
    keepalive: bool,
    send: int = 1000,
    port: int | None = None,
    before_cleanup: Callable[[], object] | None = None,
) -> ScenarioResult:
    """B goes silent (every packet to it dropped) while A's client holds the connection.

    keepalive: the idle client blocks in recv with keepalive 1 s/1 s/3 probes and gets ETIMEDOUT
    after the kernel's keepalive RST. Otherwise the client keeps writing every 250 ms with
    TCP_USER_TIMEOUT 3000 ms: retransmissions, ETIMEDOUT, then EPIPE and SIGPIPE.
    before_cleanup runs once the client has ended, while B's server still holds its socket.
    """
    if keepalive:
        client_args: list[object] = ["--send", send, "--recv", "--keepalive", "1,1,3"]
    else:
        client_args = ["--send", send, "--writes", 40, "--gap-ms", 250, "--user-timeout", 3000]
    with _connected(hosts.b, hosts.a, hosts.addr_b, port, ["--mode", "readhold", "--expect", send], client_args) as run:
        run.server.expect("holding")
        _iptables(hosts.b, "-A", "INPUT", "-j", "DROP")
        run.client.send("go")
        client_rc = run.client.wait(timeout=30)
        if before_cleanup is not None:
            before_cleanup()
        run.server.send("exit")
        server_rc = run.server.wait()
        return run.result("peer_timeout", client_rc, server_rc, 0)


def crash_reboot(hosts: Hosts, send: int = 1000, port: int | None = None) -> ScenarioResult:
    """B crashes (unplugged, its server killed, the namespace gone) and comes back with the same
    address and no socket; A's client writes on: RST from no socket, ECONNRESET, EPIPE."""
    # A gap between writes: the first one after the reboot waits for address resolution on
    # the new link, and the next must not be sent before the RST it draws has arrived.
    with _connected(
        hosts.b,
        hosts.a,
        hosts.addr_b,
        port,
        ["--mode", "readhold", "--expect", send],
        ["--send", send, "--writes", 3, "--gap-ms", 100],
    ) as run:
        run.server.expect("holding")
        hosts.reboot_b()
        server_rc = run.server.wait()
        run.client.send("go")
        client_rc = run.client.wait()
        run.server_ns = hosts.b  # the rebooted one
        return run.result("crash_reboot", client_rc, server_rc, 0)


def write_after_close(ns: Netns, send: int = 1000, port: int | None = None) -> ScenarioResult:
    """The server reads everything and closes normally (FIN); the client writes on anyway: the
    server's TIME_WAIT socket answers with RST, the client gets EPIPE and SIGPIPE."""
    with _connected(
        ns, ns, "127.0.0.1", port, ["--mode", "readall", "--expect", send], ["--send", send, "--writes", 3]
    ) as run:
        run.server.send("close")
        run.server.expect("closed")
        _wait_state(run.client.pid, run.client_port, run.server_port, TCP_CLOSE_WAIT)
        run.client.send("go")
        return run.finish("write_after_close", 0)
