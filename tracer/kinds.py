"""Everything rsttrace knows per incident kind, in one table: its words (summary, why, what to
do), how its first line reads, and what decides it (the kernel reset reasons that name it, whether
the close path decides it). Adding a kind is one entry here plus its tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .textfmt import endpoint, ms, seconds, signame, who


@dataclass(frozen=True)
class Parts:
    """What most first lines are made of, formatted once."""

    local: str
    remote: str
    conn: str
    culprit: str
    reason: str
    resets: str

    @classmethod
    def of(cls, inc: dict) -> "Parts":
        local = endpoint(inc["local"]["addr"], inc["local"]["port"])
        remote = endpoint(inc["remote"]["addr"], inc["remote"]["port"])
        n = inc.get("resets") or 0
        return cls(
            local,
            remote,
            f"{local}<-{remote}",
            who(inc.get("culprit")),
            f" [{inc['reason']}]" if inc.get("reason") else "",
            f" x{n}" if n > 1 else "",
        )


@dataclass(frozen=True)
class Kind:
    name: str
    summary: str
    why: str
    fix: str
    head: Callable[[dict, Parts], str]
    reasons: tuple[str, ...] = ()  # kernel reset reasons (enum sk_rst_reason) that decide it
    from_close: bool = False  # decided by the close path whatever the reset's reason says


def _abort_on_close(inc, p):
    return f"{p.culprit} closed {p.conn} with {inc['bytes_discarded']} unread bytes -> RST (abort on close)"


def _linger_zero(inc, p):
    return f"{p.culprit} closed {p.conn} with SO_LINGER {{1, 0}} -> RST (linger-zero abort)"


def _process_killed(inc, p):
    sig = signame((inc.get("culprit") or {}).get("signal"))
    if inc.get("ended_with") == "RST" or inc["bytes_discarded"]:
        end = f"RST, {inc['bytes_discarded']} unread bytes discarded"
    else:
        end = "FIN" + (f", then RST{p.reason}" if inc.get("reason") else "")
    return f"{p.culprit} killed by {sig}: {p.conn} ended with {end}"


def _socket_destroyed(inc, p):
    return f"{p.culprit} destroyed {p.conn} (tcp_abort, e.g. ss -K) -> RST"


def _write_after_close(inc, p):
    if inc.get("close_to_reset_ms") is not None:
        # The kernel remembered the close: who, how idle the connection was, how long ago.
        idle, later = ms(inc.get("idle_before_close_ms")), ms(inc["close_to_reset_ms"])
        writer = who(inc.get("victim"), "the peer")
        return f"{p.culprit} closed {p.conn} (FIN) after {idle} idle; {later} later {writer} wrote -> RST{p.resets}{p.reason}"
    closer = p.culprit if inc.get("culprit") else p.local
    return f"{closer} had closed {p.conn}; the peer kept writing -> RST{p.resets}{p.reason}"


def _no_socket(inc, p):
    return f"{p.local} has no socket for the connection from {p.remote} (restarted?) -> RST{p.reason}"


def _connection_refused(inc, p):
    return f"{p.local} refused {p.remote}: nothing listening -> RST"


def _retransmit_timeout(inc, p):
    n, span = inc.get("retransmissions"), inc.get("unanswered_ms")
    took = f" over {seconds(span, 1000)}" if span else ""
    return (
        f"{p.local}->{p.remote}: peer silent, {n if n is not None else '?'} retransmission(s){took} "
        "-> ETIMEDOUT (no RST)"
    )


def _keepalive_timeout(inc, p):
    probes = inc.get("probes")
    what = f"{probes} keepalive probe(s) unanswered" if probes else "keepalive unanswered"
    return f"{p.local}->{p.remote}: {what} -> RST (keepalive timeout), ETIMEDOUT"


def _linger2_abort(inc, p):
    return f"{p.culprit} closed {p.conn} with TCP_LINGER2 < 0 -> RST (no FIN_WAIT2){p.reason}"


def _fin_wait2_timeout(inc, p):
    return f"{p.culprit} {p.conn} {inc['summary']}{p.reason}"


def _orphan_abort(inc, p):
    return f"{p.culprit} {p.conn} {inc['summary']}{p.reason}"


def _close_wait(inc, p):
    age = inc.get("close_wait_age_ns")
    age = "since before tracing started" if age is None else seconds(age)
    unread = inc.get("close_wait_unread")
    extra = f", {unread} unread bytes" if unread else ""
    if inc.get("close_wait_closed"):
        return f"{p.culprit} finally closed {p.conn} after {age} in CLOSE_WAIT{extra}"
    return f"{p.culprit} has not closed {p.conn}: CLOSE_WAIT {age}{extra}"


def _reset_received(inc, p):
    return f"{p.local} reset {p.remote}{p.reason}"


def _active_reset(inc, p):
    return f"{p.culprit} {p.conn} {inc['summary']}{p.reason}"


def _passive_reset(inc, p):
    return f"{p.culprit} {p.conn} {inc['summary']}{p.reason}"


def _connection_error(inc, p):
    return f"{p.culprit} {p.conn} {inc['summary']}{p.reason}"


_TABLE = (
    Kind(
        "abort-on-close",
        "closed with unread data -> RST (abort on close)",
        "the process closed while the peer's bytes sat unread in its receive queue, so Linux sent RST instead of FIN and the bytes were discarded",
        "read (drain) what the peer sent before close(), or shutdown(SHUT_WR) and drain until EOF (lingering close, as nginx does)",
        _abort_on_close,
        reasons=("TCP_ABORT_ON_CLOSE",),
        from_close=True,
    ),
    Kind(
        "linger-zero",
        "closed with SO_LINGER {1, 0} -> RST (linger-zero abort)",
        "SO_LINGER with a zero timeout turns close() into an abort: RST, no FIN, and whatever was in flight either way is lost",
        "drop SO_LINGER {1, 0} unless an abortive close is really wanted; close normally instead",
        _linger_zero,
        from_close=True,
    ),
    Kind(
        "process-killed",
        "process killed while holding the connection",
        "the process died of a signal; the kernel closed its sockets for it (FIN, or RST where data was unread), and the peer learns of it only when it next reads or writes",
        "find out who sent the signal (OOM killer, supervisor, operator); shut down gracefully on SIGTERM; make peers handle ECONNRESET/EPIPE and reconnect",
        _process_killed,
        from_close=True,
    ),
    Kind(
        "socket-destroyed",
        "socket destroyed from outside (tcp_abort) -> RST",
        "another process (ss -K / SOCK_DESTROY, or a BPF program) aborted the socket: the peer got an RST and the owner gets ECONNABORTED",
        "check who runs `ss -K` or socket-destroying tools on this host",
        _socket_destroyed,
        from_close=True,
    ),
    Kind(
        "write-after-close",
        "peer wrote after the other side had closed -> RST",
        "one side closed the connection (FIN), typically a server closing an idle keep-alive connection; the other side wrote on it anyway (a pooled client reusing it), and the closed side's kernel (orphaned, TIME_WAIT or listening socket) answered with RST",
        "mismatched idle timeouts: a client pool must drop idle connections before the server's keep-alive timeout does (pool idle timeout < server keep-alive timeout), and retry idempotent requests on ECONNRESET; a peer that read EOF must close instead of writing",
        _write_after_close,
        reasons=("TCP_TIMEWAIT_SOCKET", "TCP_ABORT_ON_DATA"),
    ),
    Kind(
        "no-socket",
        "RST: no socket for this connection (peer restarted or forgot it)",
        "a segment arrived at a host that has no socket for its connection, typically because the peer crashed and came back, or dropped the connection without telling",
        "reconnect on ECONNRESET; use keepalive or TCP_USER_TIMEOUT to notice dead peers earlier",
        _no_socket,
        reasons=("NO_SOCKET",),
    ),
    Kind(
        "connection-refused",
        "connection refused -> RST to SYN",
        "nothing listened on that address and port, so the SYN was answered with RST and connect() failed with ECONNREFUSED",
        "check that the service is up and listening on the address and port the client uses",
        _connection_refused,
    ),
    Kind(
        "retransmit-timeout",
        "peer stopped answering: retransmissions timed out (ETIMEDOUT, no RST)",
        "the peer (or the path to it) went silent; the kernel retransmitted until tcp_retries2 or TCP_USER_TIMEOUT ran out, then dropped the connection without sending anything",
        "check the peer host and the network; bound the wait with TCP_USER_TIMEOUT; reconnect on ETIMEDOUT",
        _retransmit_timeout,
    ),
    Kind(
        "keepalive-timeout",
        "keepalive probes unanswered -> RST (keepalive timeout)",
        "the connection was idle and the peer did not answer the keepalive probes, so the kernel reset it and reported ETIMEDOUT to the owner",
        "check the peer host and the network; tune TCP_KEEPIDLE/KEEPINTVL/KEEPCNT to the failure detection time you need",
        _keepalive_timeout,
        reasons=("TCP_KEEPALIVE_TIMEOUT",),
    ),
    Kind(
        "linger2-abort",
        "closed with TCP_LINGER2 < 0 -> RST (no FIN_WAIT2)",
        "the socket was closed with TCP_LINGER2 set negative, so instead of waiting for the peer's FIN the kernel reset the connection",
        "drop the negative TCP_LINGER2 unless abortive closes are wanted",
        _linger2_abort,
        reasons=("TCP_ABORT_ON_LINGER",),
        from_close=True,
    ),
    Kind(
        "fin-wait2-timeout",
        "orphan in FIN_WAIT2 timed out -> RST",
        "the peer never closed its side within tcp_fin_timeout after this side closed",
        "make the peer close when it reads EOF; raise tcp_fin_timeout if it is slow on purpose",
        _fin_wait2_timeout,
    ),
    Kind(
        "orphan-abort",
        "orphaned socket aborted (too many orphans or TCP memory pressure) -> RST",
        "the host ran over tcp_max_orphans or TCP memory limits, so the kernel reset closed connections that still had data to deliver",
        "raise net.ipv4.tcp_max_orphans / tcp_mem, or close fewer connections with data pending",
        _orphan_abort,
        reasons=("TCP_ABORT_ON_MEMORY",),
    ),
    Kind(
        "close-wait",
        "socket left in CLOSE_WAIT",
        "the peer closed its side, but the owner never closed its socket (a CLOSE_WAIT leak): the socket and its file descriptor stay until the process closes them or exits",
        "close the socket when read returns 0 (EOF); look for code paths that forget to close",
        _close_wait,
    ),
    Kind(
        "reset-received",
        "received RST",
        "the peer (not traced on this host) reset the connection",
        "trace the peer host too, or handle ECONNRESET/EPIPE (MSG_NOSIGNAL or SIGPIPE ignored)",
        _reset_received,
    ),
    Kind(
        "active-reset",
        "sent RST",
        "this host reset the connection",
        "see the reason",
        _active_reset,
    ),
    Kind(
        "passive-reset",
        "answered a segment with RST",
        "a segment arrived that the receiving socket could not accept",
        "see the reason",
        _passive_reset,
    ),
    Kind(
        "connection-error",
        "connection error",
        "a TCP call failed with a connection error whose cause was not seen",
        "start rsttrace before the failure to see its cause",
        _connection_error,
    ),
)
KINDS: dict[str, Kind] = {k.name: k for k in _TABLE}
# Kernel reset reasons that decide a kind, and the kinds the close path decides (in precedence order).
REASON_KIND = {r: k.name for k in _TABLE for r in k.reasons}
CAUSE_KINDS = ("process-killed", "abort-on-close", "linger-zero", "socket-destroyed", "linger2-abort")
assert set(CAUSE_KINDS) == {k.name for k in _TABLE if k.from_close}


def head(inc: dict) -> str:
    """The incident's first line."""
    kind = KINDS.get(inc["kind"])
    return (kind.head if kind else _generic)(inc, Parts.of(inc))


def _generic(inc, p):
    return f"{p.culprit} {p.conn} {inc['summary']}{p.reason}"
