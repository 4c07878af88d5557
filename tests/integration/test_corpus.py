"""A corpus of real software that no one here wrote (Debian and PyPI packages), each run in a
namespace of its own, made to reset a connection the way it does in production.

For each program the expectation comes first from the kernel (the namespace's nstat counters,
deltas recorded below) and from the program's own words (its log or error text); rsttrace's
incidents are then asserted exactly against them: kind, culprit pid and comm (from the program's
pid file or process list), bytes discarded (SIOCINQ taken from the program's socket where it
can be, the program's own accounting otherwise), victim pid and comm, the victim's failed calls
and SIGPIPE fate, and the number of incidents (one per reset connection).

Every program gets an explicit configuration (tests/integration/corpus/) bound to the
namespace's loopback (or to the test's veth pair), and everything started is killed at teardown
(the namespace too). A test skips, saying why, only when its program is not installed
(./run.sh setup installs them: Debian's curl haproxy memcached postgresql gunicorn nodejs lighttpd, and
PyPI's requests through the test extra).

    program (package)                 what it does                           kind
    memcached                         closes on an over-long line, unread    abort-on-close
    gunicorn sync worker (Debian)     413 before reading the upload, close   abort-on-close (victim unaffected)
    haproxy, option nolinger          403, then SO_LINGER {1, 0} close       linger-zero
    haproxy, backend down             connect to the dead server             connection-refused
    psql (libpq), SIGKILLed           killed mid-result, queue unread        process-killed
    Node.js http server, SIGKILLed    killed during curl's upload            process-killed
    PostgreSQL, pg_terminate_backend  FIN; psql's next query draws RST       write-after-close
    gunicorn gthread + requests pool  keep-alive close vs. pooled reuse      write-after-close
    requests pool (urllib3)           holds the closed connection            close-wait
    psql (libpq) keepalives           server host silent, idle client        keepalive-timeout
    psql (libpq) tcp_user_timeout     server host silent, query unacked      retransmit-timeout
    PostgreSQL host reboot            idle psql's next query, no socket      process-killed + no-socket
    lighttpd (the control)            413 early, then a lingering close      none: silent

Not here, for want of real software doing it: socket-destroyed (only `ss -K` itself, tested in
test_kinds.py), linger2-abort (TCP_LINGER2 < 0), orphan-abort and fin-wait2-timeout (host-wide).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

import pytest

from testbed import scenarios

from . import corpus as C
from .tracer_proc import Tracer

pytestmark = pytest.mark.root


@pytest.fixture
def ns():
    with scenarios.Netns("rstcorp") as n:
        yield n


def traced(ns):
    return Tracer("--netns", str(ns.inode))


# -- memcached: an over-long command line ---------------------------------------------------------


def _memcached_stat(port: int, ns, name: str) -> int:
    out = ns.run(C.PY, C.driver("mc_stats.py"), "127.0.0.1", str(port)).stdout
    for line in out.splitlines():
        if line.startswith(f"STAT {name} "):
            return int(line.split()[2])
    raise AssertionError(f"no {name} in memcached stats:\n{out}")


def test_memcached_closes_on_an_overlong_line(ns):
    """memcached 1.6 closes a connection whose command line passes 2048 bytes without a newline
    (proto_text.c: conn_closing, a plain close()), with the rest of the line unread: RST.

    Not the oversized *item* of the issue: `set` with a value over -I is answered
    "SERVER_ERROR object too large for cache" and the value is swallowed (read and dropped),
    so the connection survives; no reset comes of it."""
    [memcached] = C.need("memcached")
    port, payload = C.free_port(), 20000
    with C.Program(
        ns, [memcached, "-u", "memcache", "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-t", "1", "-c", "64", "-vv"]
    ) as mc:
        C.wait_for(lambda: C.find_conn(mc.pid, lport=port, state="LISTEN"), "memcached listening")
        read_before = _memcached_stat(port, ns, "bytes_read")
        counters = C.Counters(ns)
        with (
            traced(ns) as t,
            scenarios.Proc(ns, [C.PY, C.driver("raw_client.py"), "127.0.0.1", str(port), str(payload)]) as client,
        ):
            sport = int(client.expect("connected", C.TIMEOUT).split("sport=")[1].split()[0])
            client_comm = C.comm(client.pid)
            client.expect("sent", C.TIMEOUT)
            # The reset removes the client's connection from the table.
            C.wait_for(lambda: not C.find_conn(client.pid, lport=sport), "memcached's RST")
            client.send("go")
            assert client.wait(C.TIMEOUT) == 0
            delta = counters.delta()
            incs, err, rc = t.stop()
        # memcached's own accounting of what it read: the rest was discarded by close().
        # (The second stats command's own 7 bytes are counted too.)
        read = _memcached_stat(port, ns, "bytes_read") - read_before - len(b"stats\r\n")
        assert 0 < read < payload
        log = mc.output()
    assert rc == 0, err
    assert client.lines[2:] == ["write -1 ECONNRESET", "write -1 EPIPE", "write -1 EPIPE", "done"]
    # Its own words (-vv): the connection is opened and closed with no command logged, no error
    # text for the line (the two stats connections log "<N stats" in between).
    fd = log.split("new auto-negotiating client connection")[2].split("\n")[1].split(":")[0]
    assert (
        f"<{fd} new auto-negotiating client connection\n{fd}: Client using the ascii protocol\n"
        f"<{fd} connection closed.\n"
    ) in log
    assert delta == {
        "Tcp.OutRsts": 1,
        "Tcp.EstabResets": 2,
        "Tcp.AttemptFails": 0,
        "TcpExt.TCPAbortOnClose": 1,
        "TcpExt.TCPAbortOnData": 0,
        "TcpExt.TCPAbortOnLinger": 0,
        "TcpExt.TCPAbortOnTimeout": 0,
    }
    inc = C.one(incs)
    assert inc["kind"] == "abort-on-close"
    assert inc["reason"] in ("TCP_ABORT_ON_CLOSE", None)
    # The close is done by a worker thread, which memcached names "mc-worker": comm is the thread's.
    assert inc["culprit"] == {"pid": mc.pid, "comm": "mc-worker"}
    assert inc["bytes_discarded"] == payload - read
    assert (inc["local"], inc["remote"]) == (C.lo(port), C.lo(sport))
    v = inc["victim"]
    assert (v["pid"], v["comm"]) == (client.pid, client_comm)
    assert C.errors(v) == [("write", "ECONNRESET"), ("write", "EPIPE"), ("write", "EPIPE")]
    assert v["sigpipe"] == "ignored"


class _settled:
    """A predicate for wait_for: true once read() gives the same value twice running (and also());
    what it saw goes in the failure message."""

    def __init__(self, read, also=lambda: True) -> None:
        self.read, self.also, self.seen = read, also, []

    def __call__(self) -> bool:
        now = self.read()
        also = self.also()
        done = bool(self.seen) and now == self.seen[-1][0] and also
        self.seen.append((now, also))
        return done

    def __bool__(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"seen {self.seen[-10:]}"


# -- PostgreSQL ----------------------------------------------------------------------------------


def _pg_bin(name: str) -> str:
    import glob

    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        pytest.skip(f"PostgreSQL's {name} not installed (./run.sh setup installs postgresql)")
    return found[-1]


@pytest.fixture(scope="module")
def pg_datadir():
    """One cluster (initdb once), started afresh by each test inside its own namespace.
    Not under pytest's tmp_path: its parents are root's alone, and postgres runs as postgres."""
    import shutil
    import tempfile
    from pathlib import Path

    initdb = _pg_bin("initdb")
    C.need("psql")
    d = Path(tempfile.mkdtemp(prefix="rsttrace-pg-"))
    os.chmod(d, 0o755)
    data = d / "data"
    data.mkdir(mode=0o700)
    os.chown(data, *_uid_gid("postgres"))
    subprocess.run(
        [
            "setpriv",
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            initdb,
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        ],
        check=True,
        capture_output=True,
        cwd="/",
    )
    shutil.copy(C.HERE / "pg_hba.conf", data / "pg_hba.conf")
    yield data
    shutil.rmtree(d, ignore_errors=True)


def _uid_gid(user: str) -> tuple[int, int]:
    import pwd

    pw = pwd.getpwnam(user)
    return pw.pw_uid, pw.pw_gid


@contextlib.contextmanager
def postgres(ns, data, addr: str = "127.0.0.1"):
    """The postmaster on addr:port of ns (its socket directory is the data directory)."""
    port = C.free_port()
    with C.Program(
        ns,
        [
            _pg_bin("postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-c",
            f"listen_addresses={addr}",
            "-c",
            f"unix_socket_directories={data}",
            "-c",
            "fsync=off",
            "-c",
            "logging_collector=off",
            "-c",
            "log_connections=on",
            "-c",
            "log_disconnections=on",
        ],
        user="postgres",
        cwd="/",
    ) as pg:
        pg.wait_output("database system is ready to accept connections")
        # Its own pid file: the first line is the postmaster's pid.
        assert int((data / "postmaster.pid").read_text().split()[0]) == pg.pid
        yield pg, port


def _psql(*args: str, host: str = "127.0.0.1", conninfo: str = "") -> list[str]:
    return [C.need("psql")[0], "-X", "-h", host, "-U", "postgres", "-d", f"dbname=postgres {conninfo}".strip(), *args]


def _server_side(pg_pid: int, port: int, client_port: int) -> tuple[int, int]:
    """The backend holding the server side of the client's connection: (pid, fd)."""
    _, pid, fd = C.held_socket(
        lambda: C.children(pg_pid), pg_pid, "the backend's socket", lport=port, rport=client_port
    )
    return pid, fd


def test_postgres_client_killed_mid_result(ns, pg_datadir):
    """psql is SIGKILLed while a large result streams in (stopped first, so that its receive
    queue stops moving and can be measured): its close discards the queue, RST; the backend,
    blocked sending, gets ECONNRESET and says so in its log."""
    with postgres(ns, pg_datadir) as (pg, port):
        counters = C.Counters(ns)
        with traced(ns) as t:
            psql = C.Program(
                ns, _psql("-p", str(port), "-c", "select repeat('x', 1000) from generate_series(1, 1000000)")
            )
            try:
                conn = C.wait_for(
                    lambda: [c for c in C.conns(psql.pid) if c.rport == port and c.state == "ESTABLISHED"],
                    "psql connected",
                )[0]
                backend, _ = _server_side(pg.pid, port, conn.lport)
                psql_fd = C.wait_for(lambda: C.socket_fd(psql.pid, conn.inode), "psql's socket fd")
                # Wait until the result streams, then freeze psql; the queue fills to the window.
                # (Its first bytes are the start-up messages: wait for megabytes of result.)
                C.wait_for(lambda: C.bytes_received(psql.pid, psql_fd) > 4 << 20, "result streaming to psql")
                os.kill(psql.pid, signal.SIGSTOP)
                settled = _settled(
                    lambda: C.fionread(psql.pid, psql_fd), lambda: _send_queue(pg.pid, port, conn.lport) > 0
                )
                C.wait_for(settled, "psql's receive queue full", interval=0.05)
                unread = C.fionread(psql.pid, psql_fd)
                os.kill(psql.pid, signal.SIGKILL)
                assert psql.popen.wait(C.TIMEOUT) == -signal.SIGKILL
                log = pg.wait_output("connection to client lost")
                delta = counters.delta()
            finally:
                psql.stop()
            incs, err, rc = t.stop()
    assert rc == 0, err
    # Its own words: the backend's failed send, then its end.
    assert "LOG:  could not send data to client: Connection reset by peer" in log
    assert "FATAL:  connection to client lost" in log
    assert delta == {
        "Tcp.OutRsts": 1,
        "Tcp.EstabResets": 2,
        "Tcp.AttemptFails": 0,
        "TcpExt.TCPAbortOnClose": 1,
        "TcpExt.TCPAbortOnData": 0,
        "TcpExt.TCPAbortOnLinger": 0,
        "TcpExt.TCPAbortOnTimeout": 0,
    }
    assert unread > 0
    inc = C.one(incs)
    assert inc["kind"] == "process-killed"
    assert inc["culprit"] == {"pid": psql.pid, "comm": "psql", "signal": 9}
    assert inc["ended_with"] == "RST" and inc["bytes_discarded"] == unread
    assert (inc["local"], inc["remote"]) == (C.lo(conn.lport), C.lo(port))
    v = inc["victim"]
    assert (v["pid"], v["comm"]) == (backend, "postgres")
    assert C.errors(v) == [("write", "ECONNRESET")]
    assert v["sigpipe"] is None  # ECONNRESET raises no SIGPIPE, and the backend stops there


def _send_queue(pid: int, lport: int, rport: int) -> int:
    with open(f"/proc/{pid}/net/tcp") as f:
        for row in list(f)[1:]:
            cols = row.split()
            if int(cols[1].split(":")[1], 16) == lport and int(cols[2].split(":")[1], 16) == rport:
                return int(cols[4].split(":")[0], 16)
    return 0


# -- haproxy ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def haproxy(ns, tmp_path):
    [binary] = C.need("haproxy")
    ports = {"DOWN_PORT": C.free_port(), "GONE_PORT": C.free_port(), "DENY_PORT": C.free_port()}
    cfg = (C.HERE / "haproxy.cfg").read_text()
    for name, port in ports.items():
        cfg = cfg.replace(f"@{name}@", str(port))
    (tmp_path / "haproxy.cfg").write_text(cfg)
    # -db: foreground, no daemon, no master: the pid started is the one process that serves.
    with C.Program(ns, [binary, "-db", "-f", str(tmp_path / "haproxy.cfg")]) as h:
        C.wait_for(lambda: C.find_conn(h.pid, lport=ports["DENY_PORT"], state="LISTEN"), "haproxy listening")
        assert C.comm(h.pid) == "haproxy"
        yield h, ports


def _curl(ns, url: str, *args: str) -> tuple[C.Program, int]:
    [curl] = C.need("curl")
    p = C.Program(ns, [curl, "-sS", "-o", "/dev/null", "-w", "%{http_code} %{local_port}\\n", *args, url])
    rc = p.popen.wait(C.TIMEOUT)
    return p, rc


def test_haproxy_backend_refused(ns, tmp_path):
    """haproxy connects to a backend server that is down: RST to its SYN, ECONNREFUSED to
    haproxy (retries 0: one connection, one incident); the client gets haproxy's 503."""
    with haproxy(ns, tmp_path) as (h, ports):
        counters = C.Counters(ns)
        with traced(ns) as t:
            curl, rc = _curl(ns, f"http://127.0.0.1:{ports['DOWN_PORT']}/")
            out = curl.output()
            curl.stop()
            log = h.wait_output("SC--")
            delta = counters.delta()
            incs, err, rc_t = t.stop()
    assert rc_t == 0, err
    assert rc == 0 and out.split()[0] == "503"
    # Its own words: server "gone" of backend "nobody", termination state SC-- (the server
    # refused the connection), status 503.
    [line] = [ln for ln in log.splitlines() if " down nobody/gone " in ln]
    assert " 503 " in line and " SC-- " in line
    assert delta == {
        "Tcp.OutRsts": 1,
        "Tcp.EstabResets": 0,
        "Tcp.AttemptFails": 1,
        "TcpExt.TCPAbortOnClose": 0,
        "TcpExt.TCPAbortOnData": 0,
        "TcpExt.TCPAbortOnLinger": 0,
        "TcpExt.TCPAbortOnTimeout": 0,
    }
    inc = C.one(incs)
    assert inc["kind"] == "connection-refused"
    assert inc["reason"] in ("NO_SOCKET", None)
    assert inc["culprit"] is None
    assert inc["bytes_discarded"] == 0
    assert inc["local"] == C.lo(ports["GONE_PORT"])
    v = inc["victim"]
    assert (v["pid"], v["comm"], v["state"]) == (h.pid, "haproxy", "SYN_SENT")
    assert C.errors(v) == [("connect", "ECONNREFUSED")]
    assert v["sigpipe"] is None
    assert inc["impact"] == "failed-call"


def test_haproxy_nolinger_resets_instead_of_fin(ns, tmp_path):
    """`option nolinger` (documented: "immediate session resource cleaning after close"):
    haproxy answers a denied request with 403, waits (keep-alive) for the client to close,
    then closes with SO_LINGER {1, 0}: RST instead of FIN, counted as TCPAbortOnData.

    The client, curl, already has its whole response and has closed and exited: the RST
    only cuts its orphan's FIN_WAIT short. The victim is named (curl) and unaffected."""
    with haproxy(ns, tmp_path) as (h, ports):
        counters = C.Counters(ns)
        with traced(ns) as t:
            curl, rc = _curl(ns, f"http://127.0.0.1:{ports['DENY_PORT']}/")
            out = curl.output()
            curl.stop()
            log = h.wait_output("PR--")
            C.wait_for(lambda: counters.delta()["Tcp.OutRsts"] == 1, "haproxy's RST")
            delta = counters.delta()
            incs, err, rc_t = t.stop()
    assert rc_t == 0, err
    code, client_port = out.split()
    assert rc == 0 and code == "403"
    # Its own words: denied by the proxy (PR--: the proxy blocked the request), no server.
    [line] = [ln for ln in log.splitlines() if " deny deny/<NOSRV> " in ln]
    assert " 403 " in line and " PR-- " in line
    assert delta == {
        "Tcp.OutRsts": 1,
        "Tcp.EstabResets": 1,
        "Tcp.AttemptFails": 0,
        "TcpExt.TCPAbortOnClose": 0,
        "TcpExt.TCPAbortOnData": 1,
        "TcpExt.TCPAbortOnLinger": 0,
        "TcpExt.TCPAbortOnTimeout": 0,
    }
    inc = C.one(incs)
    assert inc["kind"] == "linger-zero"
    assert inc["reason"] in ("TCP_STATE", None)
    assert inc["culprit"] == {"pid": h.pid, "comm": "haproxy"}
    assert inc["bytes_discarded"] == 0
    assert inc["state"] == "CLOSE_WAIT"  # curl's FIN came first
    assert (inc["local"], inc["remote"]) == (C.lo(ports["DENY_PORT"]), C.lo(int(client_port)))
    v = inc["victim"]
    assert (v["pid"], v["comm"]) == (curl.pid, "curl")
    assert C.errors(v) == [] and v["sigpipe"] is None
    assert inc["impact"] == "unaffected"


# -- gunicorn, with requests (urllib3) as the client -------------------------------------------------


@contextlib.contextmanager
def gunicorn(ns, tmp_path, *args: str):
    """Debian's gunicorn (20.1), /usr/bin/gunicorn on Debian's python3. Not PyPI's: from 23 or so
    its sync worker closes "gracefully" (gunicorn.util.close_graceful: shutdown(SHUT_WR), then
    drain up to 64 KiB for up to 2 s), which turns this test's RST into a FIN."""
    [binary] = C.need("gunicorn")
    C.need_module("requests")
    port = C.free_port()
    pidfile = tmp_path / "gunicorn.pid"
    with C.Program(
        ns,
        [
            binary,
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--pid",
            str(pidfile),
            "--chdir",
            str(C.HERE),
            "--log-level",
            "debug",
            "--error-logfile",
            "-",
            "--access-logfile",
            "-",
            *args,
            "wsgi_app:app",
        ],
    ) as g:
        C.wait_for(lambda: C.find_conn(g.pid, lport=port, state="LISTEN"), "gunicorn listening")
        arbiter = int(C.wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), "gunicorn's pid file"))
        assert arbiter == g.pid
        [worker] = C.wait_for(lambda: C.children(arbiter), "gunicorn's worker")
        C.wait_for(lambda: f"Booting worker with pid: {worker}" in g.output(), "worker booted")
        yield g, port, worker


def test_gunicorn_sync_worker_closes_with_the_upload_unread(ns, tmp_path):
    """gunicorn's sync worker answers (413 before reading the body) and closes the connection
    with a plain close(): the unread body is discarded, RST (abort on close). It neither drains
    the body nor does a lingering close.

    The client (requests) has sent the whole body and reads the whole answer: none of its calls
    fails. It is named as the victim, unaffected."""
    with gunicorn(ns, tmp_path, "--worker-class", "sync") as (g, port, worker):
        counters = C.Counters(ns)
        with (
            traced(ns) as t,
            scenarios.Proc(
                ns, [C.PY, C.driver("http_client.py"), "upload", f"http://127.0.0.1:{port}/upload", "65536"]
            ) as client,
        ):
            client.expect("pid=", C.TIMEOUT)
            client_comm = C.comm(client.pid)
            answer = client.expect("status", C.TIMEOUT)
            client.expect("done", C.TIMEOUT)
            assert client.wait(C.TIMEOUT) == 0
            C.wait_for(lambda: counters.delta()["Tcp.OutRsts"] >= 1, "gunicorn's RST")
            delta = counters.delta()
            incs, err, rc = t.stop()
    assert rc == 0, err
    # Its own words: the client got the 413 whole; gunicorn's access log has it.
    assert answer.startswith("status 413 unread=")
    unread = int(answer.split("unread=")[1])
    assert unread > 0
    assert '"POST /upload HTTP/1.1" 413' in g.output()
    established_resets = delta.pop("Tcp.EstabResets")
    out_rsts = delta.pop("Tcp.OutRsts")
    assert delta == {
        "Tcp.AttemptFails": 0,
        "TcpExt.TCPAbortOnClose": 1,
        "TcpExt.TCPAbortOnData": 0,
        "TcpExt.TCPAbortOnLinger": 0,
        "TcpExt.TCPAbortOnTimeout": 0,
    }
    inc = C.one(incs)
    assert inc["kind"] == "abort-on-close"
    assert inc["reason"] in ("TCP_ABORT_ON_CLOSE", None)
    assert inc["culprit"] == {"pid": worker, "comm": "gunicorn"}
    assert inc["bytes_discarded"] == unread
    assert inc["local"] == C.lo(port)
    v = inc["victim"]
    assert (v["pid"], v["comm"]) == (client.pid, client_comm)
    # requests may close its socket before gunicorn's RST reaches it (it had read the whole
    # answer): then the kernel does not count that socket as reset from ESTABLISHED, and the
    # incident says the victim had closed. Either way both agree.
    assert established_resets == (1 if v["closed_before_reset"] else 2)
    # When requests' FIN crosses the RST, the server's kernel answers it with a second RST: every
    # RST the kernel sent is one of this connection's, counted in its one incident.
    assert out_rsts in (1, 2) and inc["resets"] == out_rsts
    assert C.errors(v) == [] and v["sigpipe"] is None
    assert inc["impact"] == "unaffected"


def test_gunicorn_keepalive_race_with_a_requests_pool(ns, tmp_path):
    """The pooled keep-alive race. gunicorn's gthread worker closes a keep-alive connection idle
    past --keep-alive (1 s) with a plain close(): FIN. requests' pool reuses the connection
    before that FIN has arrived (urllib3 checks for it, and finds nothing: the FIN is held back
    here by an iptables rule, as a slow network would): the request reaches an orphan that
    already shut its read side, which answers RST (TCPAbortOnData), and requests fails with
    ECONNRESET, the classic "Connection aborted." of this race.

    One incident: write-after-close, the closer (the worker) named from the kernel, how long
    the connection was idle when closed, and how long after the close the RST came."""
    [iptables] = C.need("iptables")
    with gunicorn(ns, tmp_path, "--worker-class", "gthread", "--threads", "2", "--keep-alive", "1") as (
        g,
        port,
        worker,
    ):
        counters = C.Counters(ns)
        with (
            traced(ns) as t,
            scenarios.Proc(ns, [C.PY, C.driver("http_client.py"), "reuse", f"http://127.0.0.1:{port}/"]) as client,
        ):
            client.expect("pid=", C.TIMEOUT)
            client_comm = C.comm(client.pid)
            ns.run(
                iptables,
                "-w",
                "-A",
                "OUTPUT",
                "-p",
                "tcp",
                "--sport",
                str(port),
                "--tcp-flags",
                "FIN",
                "FIN",
                "-j",
                "DROP",
            )
            assert client.expect("status", C.TIMEOUT) == "status 200 ok"
            t_answer = time.monotonic()
            conn = C.wait_for(lambda: C.find_conn(client.pid, rport=port, state="ESTABLISHED"), "pooled connection")
            # gunicorn closes it (its side leaves ESTABLISHED; the FIN is held back).
            C.wait_for(
                lambda: C.find_conn(g.pid, lport=port, rport=conn.lport, state="FIN_WAIT1"),
                "gunicorn's keep-alive close",
            )
            t_closed = time.monotonic()
            assert C.find_conn(client.pid, lport=conn.lport, state="ESTABLISHED")  # no FIN seen
            client.send("go")
            second = client.expect("error", C.TIMEOUT)
            t_failed = time.monotonic()
            client.expect("done", C.TIMEOUT)
            assert client.wait(C.TIMEOUT) == 0
            delta = counters.delta()
            incs, err, rc = t.stop()
    assert rc == 0, err
    # Its own words: requests' error for the reused connection; gunicorn logs the first GET only.
    assert second == (
        "error ConnectionError: ('Connection aborted.', ConnectionResetError(104, 'Connection reset by peer'))"
    )
    assert g.output().count('"GET / HTTP/1.1" 200') == 1
    assert delta == {
        "Tcp.OutRsts": 1,
        "Tcp.EstabResets": 1,
        "Tcp.AttemptFails": 0,
        "TcpExt.TCPAbortOnClose": 0,
        "TcpExt.TCPAbortOnData": 1,
        "TcpExt.TCPAbortOnLinger": 0,
        "TcpExt.TCPAbortOnTimeout": 0,
    }
    inc = C.one(incs)
    assert inc["kind"] == "write-after-close"
    assert inc["reason"] in ("TCP_ABORT_ON_DATA", None)
    assert inc["culprit"] == {"pid": worker, "comm": "gunicorn"}
    assert inc["bytes_discarded"] == 0
    assert (inc["local"], inc["remote"]) == (C.lo(port), C.lo(conn.lport))
    assert inc["resets"] == 1
    # --keep-alive 1: closed once idle 1 s or more (gthread checks once per poll, at most 1 s
    # apart); the RST answered the reuse: after the close the test saw, before the error.
    assert 1000 <= inc["idle_before_close_ms"] <= (t_closed - t_answer) * 1000 + 1000
    assert 0 <= inc["close_to_reset_ms"] <= (t_failed - t_closed) * 1000 + 20
    v = inc["victim"]
    assert (v["pid"], v["comm"]) == (client.pid, client_comm)
    assert C.errors(v) == [("read", "ECONNRESET")]
    assert v["sigpipe"] is None
    assert inc["impact"] == "failed-call"


def test_postgres_backend_terminated_then_client_writes(ns, pg_datadir):
    """pg_terminate_backend() ends an idle session's backend: it sends FATAL and exits, a plain
    close (FIN). psql does not notice until its next query, which it writes into the closed
    connection: the backend's orphan answers RST (TCPAbortOnData) and psql reports the loss.

    One incident: write-after-close, the terminated backend named as the closer."""
    with postgres(ns, pg_datadir) as (pg, port):
        counters = C.Counters(ns)
        with traced(ns) as t, scenarios.Proc(ns, _psql("-p", str(port), "-A", "-t", "-v", "ON_ERROR_STOP=1")) as psql:
            psql.send("select 'backend ' || pg_backend_pid();")
            backend = int(psql.expect("backend ", C.TIMEOUT).split()[1])
            t_idle = time.monotonic()
            conn = C.wait_for(
                lambda: [c for c in C.conns(psql.pid) if c.rport == port and c.state == "ESTABLISHED"], "psql connected"
            )[0]
            assert _server_side(pg.pid, port, conn.lport)[0] == backend
            killer = C.Program(ns, _psql("-p", str(port), "-A", "-t", "-c", f"select pg_terminate_backend({backend})"))
            assert killer.popen.wait(C.TIMEOUT) == 0 and killer.output().strip() == "t"
            killer.stop()
            C.wait_for(lambda: not os.path.exists(f"/proc/{backend}"), "backend gone")
            C.wait_for(lambda: C.find_conn(psql.pid, lport=conn.lport, state="CLOSE_WAIT"), "psql's side in CLOSE_WAIT")
            t_closed = time.monotonic()
            psql.send("select 'after ' || 1;")
            rc = psql.wait(C.TIMEOUT)
            t_failed = time.monotonic()
            log = pg.wait_output("terminating connection due to administrator command")
            delta = counters.delta()
            incs, err, rc_t = t.stop()
    assert rc_t == 0, err
    # Its own words: the backend's FATAL (in its log, and sent to psql, which reads it only now).
    assert "FATAL:  terminating connection due to administrator command" in log
    assert psql.lines[1:] == [
        "FATAL:  terminating connection due to administrator command",
        "server closed the connection unexpectedly",
        "\tThis probably means the server terminated abnormally",
        "\tbefore or while processing the request.",
        "connection to server was lost",
    ]
    assert rc == 2  # psql: "the connection to the server went bad and the session was not interactive"
    # EstabResets: psql's side, reset in CLOSE_WAIT. Who answers psql's query is the kernel's
    # choice: the backend's orphan, once its FIN is acked, usually becomes a FIN_WAIT2 timewait
    # socket (tcp_fin_timeout <= TCP_TIMEWAIT_LEN), which answers RST [TCP_TIMEWAIT_SOCKET] and
    # counts nothing else; if the ACK found it owned, it stays a full FIN_WAIT2 socket, which
    # answers RST [TCP_ABORT_ON_DATA] and counts TCPAbortOnData. The counter tells which.
    on_data = delta["TcpExt.TCPAbortOnData"]
    assert delta == {
        "Tcp.OutRsts": 1,
        "Tcp.EstabResets": 1,
        "Tcp.AttemptFails": 0,
        "TcpExt.TCPAbortOnClose": 0,
        "TcpExt.TCPAbortOnData": on_data,
        "TcpExt.TCPAbortOnLinger": 0,
        "TcpExt.TCPAbortOnTimeout": 0,
    } and on_data in (0, 1)
    inc = C.one(incs)
    assert inc["kind"] == "write-after-close"
    assert inc["reason"] in (("TCP_ABORT_ON_DATA" if on_data else "TCP_TIMEWAIT_SOCKET"), None)
    assert inc["culprit"] == {"pid": backend, "comm": "postgres"}
    assert inc["bytes_discarded"] == 0
    assert (inc["local"], inc["remote"]) == (C.lo(port), C.lo(conn.lport))
    assert inc["resets"] == 1
    # Idle from its last answer until terminated; the RST came after the close, before psql's end.
    assert 0 <= inc["idle_before_close_ms"] <= (t_closed - t_idle) * 1000 + 20
    assert 0 <= inc["close_to_reset_ms"] <= (t_failed - t_idle) * 1000 + 20
    v = inc["victim"]
    assert (v["pid"], v["comm"]) == (psql.pid, "psql")
    assert C.errors(v) == []
    assert inc["impact"] == "unaffected"


# -- Node.js, killed under load -------------------------------------------------------------------------


def test_node_server_killed_during_an_upload(ns, tmp_path):
    """A Node.js HTTP server is SIGKILLed while curl streams an upload to it (stopped first, so
    that its receive queue fills to the window and can be measured): the exit closes the
    socket with that queue unread, RST; curl's next read fails with ECONNRESET."""
    [node, curl] = C.need("node", "curl")
    port = C.free_port()
    body = tmp_path / "upload"
    with open(body, "wb") as f:
        f.truncate(1 << 30)  # sparse: read as fast as curl wants, never written
    with C.Program(ns, [node, str(C.HERE / "upload_server.js"), str(port)]) as srv:
        srv.wait_output(f"listening {port} pid={srv.pid}")
        counters = C.Counters(ns)
        with traced(ns) as t:
            up = C.Program(ns, [curl, "-sS", "-o", "/dev/null", "-T", str(body), f"http://127.0.0.1:{port}/up"])
            try:
                conn, _, fd = C.held_socket(
                    [srv.pid], srv.pid, "node holding the upload", lport=port, state="ESTABLISHED"
                )
                os.kill(srv.pid, signal.SIGSTOP)
                C.wait_for(
                    _settled(lambda: C.fionread(srv.pid, fd), lambda: _send_queue(up.pid, conn.rport, port) > 0),
                    "node's receive queue full",
                    interval=0.05,
                )
                unread = C.fionread(srv.pid, fd)
                os.kill(srv.pid, signal.SIGKILL)
                assert srv.popen.wait(C.TIMEOUT) == -signal.SIGKILL
                rc = up.popen.wait(C.TIMEOUT)
                curl_out = up.output()
            finally:
                up.stop()
            delta = counters.delta()
            incs, err, rc_t = t.stop()
    assert rc_t == 0, err
    # curl's own words and exit code 55 (CURLE_SEND_ERROR).
    # While it uploads curl also reads (an early answer would end the upload), and its read
    # comes first: exit code 56 (CURLE_RECV_ERROR), not 55 (CURLE_SEND_ERROR).
    assert rc == 56 and curl_out == "curl: (56) Recv failure: Connection reset by peer\n"
    assert delta == {
        "Tcp.OutRsts": 1,
        "Tcp.EstabResets": 2,
        "Tcp.AttemptFails": 0,
        "TcpExt.TCPAbortOnClose": 1,
        "TcpExt.TCPAbortOnData": 0,
        "TcpExt.TCPAbortOnLinger": 0,
        "TcpExt.TCPAbortOnTimeout": 0,
    }
    assert unread > 0
    inc = C.one(incs)
    assert inc["kind"] == "process-killed"
    assert inc["culprit"] == {"pid": srv.pid, "comm": "node", "signal": 9}
    assert inc["ended_with"] == "RST" and inc["bytes_discarded"] == unread
    assert (inc["local"], inc["remote"]) == (C.lo(port), C.lo(conn.rport))
    v = inc["victim"]
    assert (v["pid"], v["comm"]) == (up.pid, "curl")
    assert C.errors(v) == [("read", "ECONNRESET")]
    assert v["sigpipe"] is None
    assert inc["impact"] == "failed-call"


def test_requests_pool_holds_a_closed_connection_in_close_wait(ns, tmp_path):
    """The other face of the pooled keep-alive: gunicorn closes the idle connection (FIN, which
    arrives this time) and requests' pool does not look at it until the next request: the
    client's socket sits in CLOSE_WAIT, owned by the client. The next request finds it dropped,
    closes it ("Resetting dropped connection") and opens another; no reset at all.

    Two reports for the one connection, as for every CLOSE_WAIT: when it passes the threshold
    (1 s here), and when it is finally closed."""
    with gunicorn(ns, tmp_path, "--worker-class", "gthread", "--threads", "2", "--keep-alive", "1") as (
        g,
        port,
        _worker,
    ):
        counters = C.Counters(ns)
        with (
            Tracer("--netns", str(ns.inode), "--close-wait", "1", "--close-wait-every", "0.5") as t,
            scenarios.Proc(ns, [C.PY, C.driver("http_client.py"), "reuse", f"http://127.0.0.1:{port}/"]) as client,
        ):
            client.expect("pid=", C.TIMEOUT)
            client_comm = C.comm(client.pid)
            assert client.expect("status", C.TIMEOUT) == "status 200 ok"
            conn = C.wait_for(
                lambda: C.find_conn(client.pid, rport=port, state="CLOSE_WAIT"), "the pooled connection in CLOSE_WAIT"
            )
            first = t.wait_incident(timeout=C.TIMEOUT)
            client.send("go")
            assert client.expect("status", C.TIMEOUT) == "status 200 ok"
            second = t.wait_incident(timeout=C.TIMEOUT)
            client.expect("done", C.TIMEOUT)
            assert client.wait(C.TIMEOUT) == 0
            delta = counters.delta()
            incs, err, rc = t.stop()
    assert rc == 0, err
    # Its own words: urllib3 notices only at the second request.
    assert [ln for ln in client.lines if ln.startswith("urllib3 ") and "connection" in ln] == [
        f"urllib3 Starting new HTTP connection (1): 127.0.0.1:{port}",
        "urllib3 Resetting dropped connection: 127.0.0.1",
    ]
    assert g.output().count('"GET / HTTP/1.1" 200') == 2
    assert delta == {
        "Tcp.OutRsts": 0,
        "Tcp.EstabResets": 0,
        "Tcp.AttemptFails": 0,
        "TcpExt.TCPAbortOnClose": 0,
        "TcpExt.TCPAbortOnData": 0,
        "TcpExt.TCPAbortOnLinger": 0,
        "TcpExt.TCPAbortOnTimeout": 0,
    }
    assert incs == [first, second]
    for inc in incs:
        assert inc["kind"] == "close-wait"
        assert inc["culprit"] == {"pid": client.pid, "comm": client_comm}
        assert (inc["local"], inc["remote"]) == (C.lo(conn.lport), C.lo(port))
        assert inc["close_wait_preexisting"] is False
    assert [i["close_wait_closed"] for i in incs] == [False, True]
    assert [i["close_wait_unread"] for i in incs] == [0, 0]
    assert 1_000_000_000 <= first["close_wait_age_ns"] <= second["close_wait_age_ns"]


@pytest.fixture
def hosts():
    with scenarios.Hosts("rstcorph") as h:
        yield h


def test_postgres_client_keepalives_time_out_a_silent_server(hosts, pg_datadir):
    """libpq's TCP keepalives (keepalives_idle/interval/count in the connection string) on a
    psql waiting for a long query, when the server's host goes silent (every packet to it
    dropped): three probes unanswered, the kernel ends the connection (its RST is dropped too)
    and psql's recv fails with ETIMEDOUT."""
    [iptables] = C.need("iptables")
    with postgres(hosts.b, pg_datadir, addr=hosts.addr_b) as (pg, port):
        counters = C.Counters(hosts.a)
        # The client's namespace: the keepalives, their timeout and the (dropped) RST are all A's.
        with traced(hosts.a) as t:
            psql = C.Program(
                hosts.a,
                _psql(
                    "-p",
                    str(port),
                    "-c",
                    "select pg_sleep(60)",
                    host=hosts.addr_b,
                    conninfo="keepalives=1 keepalives_idle=1 keepalives_interval=1 keepalives_count=3",
                ),
            )
            try:
                _, backend, _ = C.held_socket(
                    lambda: C.children(pg.pid), pg.pid, "the backend's socket", lport=port, state="ESTABLISHED"
                )
                conn = C.wait_for(lambda: C.find_conn(psql.pid, rport=port, state="ESTABLISHED"), "psql connected")
                C.wait_for(lambda: " SELECT" in _pg_activity(backend), f"the query running {psql.output()}")
                hosts.b.run(iptables, "-w", "-A", "INPUT", "-j", "DROP")
                t_silent = time.monotonic()
                rc = psql.popen.wait(2 * C.TIMEOUT)
                t_failed = time.monotonic()
                out = psql.output()
            finally:
                psql.stop()
            delta = counters.delta()
            incs, err, rc_t = t.stop()
    assert rc_t == 0, err
    # psql's own words, exit code 2 (connection lost).
    assert rc == 2
    assert out == "could not receive data from server: Connection timed out\nconnection to server was lost\n"
    assert delta == {
        "Tcp.OutRsts": 1,
        "Tcp.EstabResets": 1,
        "Tcp.AttemptFails": 0,
        "TcpExt.TCPAbortOnClose": 0,
        "TcpExt.TCPAbortOnData": 0,
        "TcpExt.TCPAbortOnLinger": 0,
        "TcpExt.TCPAbortOnTimeout": 1,
    }
    # idle 1 s, then 3 probes 1 s apart: about 4 s.
    assert 3.5 <= t_failed - t_silent <= 10 * C.SCALE
    inc = C.one(incs)
    assert inc["kind"] == "keepalive-timeout"
    assert inc["reason"] in ("TCP_KEEPALIVE_TIMEOUT", None)
    assert inc["culprit"] is None
    assert inc["probes"] == 3
    assert inc["local"] == {"addr": hosts.addr_a, "port": conn.lport}
    assert inc["remote"] == {"addr": hosts.addr_b, "port": port}
    v = inc["victim"]
    assert (v["pid"], v["comm"]) == (psql.pid, "psql"), f"{inc}, trace {t.trace}"
    assert C.errors(v) == [("read", "ETIMEDOUT")]
    assert v["sigpipe"] is None
    assert inc["impact"] == "failed-call"


def _pg_activity(pid: int) -> str:
    """A backend's process title (postgres sets it to what it is doing: ... SELECT, idle)."""
    return open(f"/proc/{pid}/cmdline").read().replace("\0", " ")


@contextlib.contextmanager
def _idle_psql(hosts, port, conninfo: str = ""):
    """psql in A, connected to B's server and idle, reading queries from its stdin."""
    with scenarios.Proc(
        hosts.a, _psql("-p", str(port), "-A", "-t", "-v", "ON_ERROR_STOP=1", host=hosts.addr_b, conninfo=conninfo)
    ) as psql:
        psql.send("select 'ready';")
        psql.expect("ready", C.TIMEOUT)
        conn = C.wait_for(lambda: C.find_conn(psql.pid, rport=port, state="ESTABLISHED"), "psql connected")
        yield psql, conn


def test_postgres_client_user_timeout_on_a_silent_server(hosts, pg_datadir):
    """libpq's tcp_user_timeout (TCP_USER_TIMEOUT, 3000 ms): the server's host goes silent, psql
    sends a query that is never acknowledged; retransmissions run out after 3 s, the kernel
    gives up without an RST, and psql's wait for the answer ends with ETIMEDOUT."""
    [iptables] = C.need("iptables")
    with (
        postgres(hosts.b, pg_datadir, addr=hosts.addr_b) as (_pg, port),
        traced(hosts.a) as t,
        _idle_psql(hosts, port, "tcp_user_timeout=3000") as (psql, conn),
    ):
        counters = C.Counters(hosts.a)
        hosts.b.run(iptables, "-w", "-A", "INPUT", "-j", "DROP")
        t_silent = time.monotonic()
        psql.send("select 'answer';")
        rc = psql.wait(2 * C.TIMEOUT)
        t_failed = time.monotonic()
        delta = counters.delta(C.COUNTERS + ("Tcp.RetransSegs", "TcpExt.TCPLossProbes"))
        incs, err, rc_t = t.stop()
    assert rc_t == 0, err
    # psql's own words, exit code 2 (connection lost).
    assert rc == 2
    assert psql.lines[1:] == [
        "could not receive data from server: Connection timed out",
        "connection to server was lost",
    ]
    # Retransmitted segments: a tail loss probe (if one went) and the timer's retransmissions.
    retrans = delta.pop("Tcp.RetransSegs") - delta.pop("TcpExt.TCPLossProbes")
    assert retrans >= 3
    assert delta == {
        "Tcp.OutRsts": 0,
        "Tcp.EstabResets": 1,
        "Tcp.AttemptFails": 0,
        "TcpExt.TCPAbortOnClose": 0,
        "TcpExt.TCPAbortOnData": 0,
        "TcpExt.TCPAbortOnLinger": 0,
        "TcpExt.TCPAbortOnTimeout": 1,
    }
    assert 3.0 <= t_failed - t_silent <= 10 * C.SCALE
    inc = C.one(incs)
    assert inc["kind"] == "retransmit-timeout"
    assert inc["reason"] is None  # the kernel gives up without sending anything
    assert inc["culprit"] is None
    assert inc["retransmissions"] == retrans
    assert 3000 <= inc["unanswered_ms"] <= 6000
    assert inc["local"] == {"addr": hosts.addr_a, "port": conn.lport}
    assert inc["remote"] == {"addr": hosts.addr_b, "port": port}
    v = inc["victim"]
    assert (v["pid"], v["comm"]) == (psql.pid, "psql"), f"{inc}, trace {t.trace}"
    assert C.errors(v) == [("read", "ETIMEDOUT")]
    assert v["sigpipe"] is None
    assert inc["impact"] == "failed-call"


def test_postgres_server_host_reboots_under_an_idle_client(hosts, pg_datadir):
    """The server's host crashes (unplugged, every process killed, the namespace gone) and comes
    back with the same address and no sockets; psql, idle on its old connection, sends its next
    query: the new host answers RST (no socket), psql's recv gets ECONNRESET.

    Two incidents, as for the workloads' crash: the backend's death (SIGKILL, its FIN never
    left the unplugged host; no victim), and the no-socket RST with psql its victim."""
    with (
        postgres(hosts.b, pg_datadir, addr=hosts.addr_b) as (pg, port),
        Tracer("-P", str(port)) as t,
        _idle_psql(hosts, port) as (psql, conn),
    ):
        _, backend, _ = C.held_socket(
            lambda: C.children(pg.pid), pg.pid, "the backend's socket", lport=port, rport=conn.lport
        )
        old_b = hosts.b.inode
        # Frozen first: a backend watches the postmaster (a pipe) and exits by itself, exit(1),
        # when the postmaster dies first; stopped, every process dies of the crash's SIGKILL.
        for pid in [pg.pid, *C.children(pg.pid)]:
            os.kill(pid, signal.SIGSTOP)
        hosts.reboot_b()
        counters_a, counters_b = C.Counters(hosts.a), C.Counters(hosts.b)
        psql.send("select 'answer';")
        rc = psql.wait(2 * C.TIMEOUT)
        delta_a, delta_b = counters_a.delta(), counters_b.delta()
        incs, err, rc_t = t.stop()
    assert rc_t == 0, err
    assert rc == 2
    # libpq words ECONNRESET (and EPIPE) so: pqsecure_raw_read().
    assert psql.lines[1:] == [
        "server closed the connection unexpectedly",
        "\tThis probably means the server terminated abnormally",
        "\tbefore or while processing the request.",
        "connection to server was lost",
    ]
    assert delta_a == {
        "Tcp.OutRsts": 0,
        "Tcp.EstabResets": 1,
        "Tcp.AttemptFails": 0,
        "TcpExt.TCPAbortOnClose": 0,
        "TcpExt.TCPAbortOnData": 0,
        "TcpExt.TCPAbortOnLinger": 0,
        "TcpExt.TCPAbortOnTimeout": 0,
    }
    assert delta_b == {
        "Tcp.OutRsts": 1,
        "Tcp.EstabResets": 0,
        "Tcp.AttemptFails": 0,
        "TcpExt.TCPAbortOnClose": 0,
        "TcpExt.TCPAbortOnData": 0,
        "TcpExt.TCPAbortOnLinger": 0,
        "TcpExt.TCPAbortOnTimeout": 0,
    }
    assert len(incs) == 2, incs
    [killed] = [i for i in incs if i["kind"] == "process-killed"]
    [rst] = [i for i in incs if i is not killed]
    assert killed["netns"] == old_b
    assert killed["culprit"] == {"pid": backend, "comm": "postgres", "signal": 9}
    assert killed["ended_with"] == "FIN" and killed["victim"] is None
    assert rst["kind"] == "no-socket"
    assert rst["reason"] in ("NO_SOCKET", None)
    assert rst["netns"] == hosts.b.inode
    assert rst["local"] == {"addr": hosts.addr_b, "port": port}
    assert rst["remote"] == {"addr": hosts.addr_a, "port": conn.lport}
    v = rst["victim"]
    assert (v["pid"], v["comm"], v["netns"]) == (psql.pid, "psql", hosts.a.inode)
    assert C.errors(v) == [("read", "ECONNRESET")]
    assert v["sigpipe"] is None
    assert rst["impact"] == "failed-call"


# -- lighttpd: the same early answer as gunicorn's, closed the careful way ------------------------------


def test_lighttpd_early_413_closes_without_a_reset(ns, tmp_path):
    """The control for gunicorn's sync worker: lighttpd also refuses the upload (413, over
    server.max-request-size) before reading it, but ends the connection with a lingering close
    (shutdown, then reading and dropping what still comes), so nothing is discarded: no RST,
    no counter moves, and rsttrace reports nothing and lets no event out of the kernel."""
    [lighttpd] = C.need("lighttpd")
    C.need_module("requests")
    port = C.free_port()
    cfg = (C.HERE / "lighttpd.conf").read_text().replace("@ROOT@", str(tmp_path)).replace("@PORT@", str(port))
    (tmp_path / "lighttpd.conf").write_text(cfg)
    with C.Program(ns, [lighttpd, "-D", "-f", str(tmp_path / "lighttpd.conf")]) as lt:
        C.wait_for(lambda: C.find_conn(lt.pid, lport=port, state="LISTEN"), "lighttpd listening")
        assert (
            int(
                C.wait_for(
                    lambda: (tmp_path / "lighttpd.pid").exists() and (tmp_path / "lighttpd.pid").read_text().strip(),
                    "lighttpd's pid file",
                )
            )
            == lt.pid
        )
        counters = C.Counters(ns)
        with (
            traced(ns) as t,
            scenarios.Proc(
                ns, [C.PY, C.driver("http_client.py"), "upload", f"http://127.0.0.1:{port}/upload", "300000"]
            ) as client,
        ):
            assert client.expect("status", C.TIMEOUT).startswith("status 413 ")
            client.expect("done", C.TIMEOUT)
            assert client.wait(C.TIMEOUT) == 0
            # lighttpd's side ends once the client's FIN has come: in TIME_WAIT if its FIN went
            # first, gone if the client's did. (The states seen are in the failure message.)
            states = _settled(
                lambda: sorted(c.state for c in C.conns(lt.pid) if c.lport == port and c.state != "LISTEN"),
                lambda: set(states.seen[-1][0]) <= {"TIME_WAIT"} if states.seen else False,
            )
            C.wait_for(states, "lighttpd's side of the connection closed")
            delta = counters.delta()
            incs, err, rc = t.stop()
            records = t.records()
        log = lt.output()
    assert rc == 0, err
    # Its own words.
    assert "(response.c.377) request-size too long: 300000 -> 413" in log
    assert delta == {
        "Tcp.OutRsts": 0,
        "Tcp.EstabResets": 0,
        "Tcp.AttemptFails": 0,
        "TcpExt.TCPAbortOnClose": 0,
        "TcpExt.TCPAbortOnData": 0,
        "TcpExt.TCPAbortOnLinger": 0,
        "TcpExt.TCPAbortOnTimeout": 0,
    }
    assert incs == []
    assert [r for r in records if r["type"] == "event"] == []
