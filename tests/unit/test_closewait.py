"""The CLOSE_WAIT sweep: sock_diag replies decoded, overdue sockets reported once, the /proc fallback."""

from __future__ import annotations

import socket
import struct

import pytest

from tracer import closewait, sockdiag
from tracer.closewait import CLOSE_WAIT, CloseWaitWatch
from tracer.sockdiag import TcpRow


def diag_msg(
    *,
    af=socket.AF_INET,
    state=CLOSE_WAIT,
    sport=8000,
    dport=51234,
    src="10.0.0.1",
    dst="10.0.0.2",
    rqueue=1001,
    ino=4242,
    times=(7000, 0, 5000, 3000),
) -> bytes:
    """One SOCK_DIAG_BY_FAMILY message as the kernel sends it (with INET_DIAG_INFO)."""

    def raw(a):
        return socket.inet_pton(af, a).ljust(16, b"\0")

    body = struct.pack("=BBBB", af, state, 0, 0)
    body += struct.pack("!HH16s16s", sport, dport, raw(src), raw(dst))
    body += struct.pack("=I8sIIIII", 1, b"\0" * 8, 0, rqueue, 0, 1000, ino)
    if times is not None:
        info = bytearray(104)  # struct tcp_info's first fields; only the times are read
        struct.pack_into("=IIII", info, 44, *times)
        body += struct.pack("=HH", 4 + len(info), sockdiag.INET_DIAG_INFO) + bytes(info)
    return struct.pack("=IHHII", 16 + len(body), sockdiag.SOCK_DIAG_BY_FAMILY, 2, 1, 0) + body


def nl(mtype: int, payload: bytes = b"") -> bytes:
    return struct.pack("=IHHII", 16 + len(payload), mtype, 2, 1, 0) + payload


def test_request_asks_for_tcp_in_the_states_with_tcp_info():
    req = sockdiag.request(socket.AF_INET6, 1 << CLOSE_WAIT, seq=7)
    length, mtype, flags, seq, _pid = struct.unpack_from("=IHHII", req)
    assert (length, len(req), mtype, flags, seq) == (72, 72, 20, 0x301, 7)
    af, proto, ext, states = struct.unpack_from("=BBBxI", req, 16)
    assert (af, proto, ext, states) == (socket.AF_INET6, 6, 1 << (sockdiag.INET_DIAG_INFO - 1), 0x100)


def test_reply_decoded_with_idle_time_from_tcp_info():
    rows, done = sockdiag.parse_dump([diag_msg() + nl(sockdiag.NLMSG_DONE, b"\0" * 4)])
    assert done
    # Idle: the least of last data sent (7 s), last data received (5 s), last ACK received (3 s).
    assert rows == [TcpRow("ipv4", "10.0.0.1", 8000, "10.0.0.2", 51234, CLOSE_WAIT, 1001, 4242, 3000)]


def test_reply_ipv6_without_tcp_info_and_split_over_reads():
    first = diag_msg(af=socket.AF_INET6, src="fd00::1", dst="fd00::2", ino=7, times=None)
    rows, done = sockdiag.parse_dump([first])
    assert not done  # no NLMSG_DONE yet: dump() reads on
    assert rows == [TcpRow("ipv6", "fd00::1", 8000, "fd00::2", 51234, CLOSE_WAIT, 1001, 7, None)]
    assert sockdiag.parse_dump([nl(sockdiag.NLMSG_DONE, b"\0" * 4)]) == ([], True)


def test_error_reply_is_one_clear_message():
    with pytest.raises(sockdiag.DiagUnavailable, match="sock_diag: No such file or directory"):
        sockdiag.parse_dump([nl(sockdiag.NLMSG_ERROR, struct.pack("=i", -2) + b"\0" * 16)])
    with pytest.raises(sockdiag.DiagUnavailable, match="truncated"):
        sockdiag.parse_dump([diag_msg()[:-8]])


def row(ino: int, idle_ms: int | None, rx_queue: int = 1001) -> TcpRow:
    return TcpRow("ipv4", "127.0.0.1", 8000, "127.0.0.1", 40000 + ino, CLOSE_WAIT, rx_queue, ino, idle_ms)


class Sweeps:
    """A watch whose sweeps see the given rows (netns 1), recording what it reports and forgets."""

    def __init__(self, threshold_s: float = 1.0) -> None:
        self.reported: list[tuple[int, int | None, bool, int]] = []
        self.forgotten: list[int] = []
        self.rows: list[TcpRow] = []
        self.watch = CloseWaitWatch(
            threshold_ns=int(threshold_s * 1e9),
            report=lambda o, now: self.reported.append((o.ino, o.since_ns, o.preexisting, now)),
            forget=self.forgotten.append,
        )
        self.watch.rows = lambda: [(1, r) for r in self.rows]


S = 1_000_000_000


def test_overdue_by_idle_time_reported_once_then_forgotten(monkeypatch):
    monkeypatch.setattr(closewait, "inode_owners", lambda inos, proc: {i: (812, "server") for i in inos})
    sw = Sweeps()
    sw.watch.start(0)
    sw.rows = [row(5, 400)]
    assert sw.watch.sweep(10 * S) == []  # idle 0.4 s: not yet
    sw.rows = [row(5, 1400)]
    [o] = sw.watch.sweep(11 * S)
    assert (o.owner, o.row.rx_queue, o.preexisting) == ((812, "server"), 1001, False)
    assert sw.reported == [(5, 11 * S - 1400 * 1_000_000, False, 11 * S)]
    sw.rows = [row(5, 2400)]
    assert sw.watch.sweep(12 * S) == []  # once
    assert sw.watch.counts(12 * S) == [((812, "server"), 1, 2400 * 1_000_000)]
    sw.rows = []
    sw.watch.sweep(13 * S)
    assert sw.forgotten == [5] and sw.watch.counts(13 * S) == []


def test_found_at_start_is_preexisting_and_its_close_says_so(monkeypatch):
    monkeypatch.setattr(closewait, "inode_owners", lambda inos, proc: {})
    sw = Sweeps()
    sw.rows = [row(9, 5000)]
    sw.watch.start(0)
    [o] = sw.watch.sweep(0)
    assert (o.preexisting, o.since_ns, o.owner) == (True, -5 * S, None)
    assert sw.watch.closed(9) is True
    assert sw.watch.closed(9) is False  # told once
    assert sw.watch.closed(10) is False


def test_without_idle_times_ages_count_from_first_seen(monkeypatch):
    monkeypatch.setattr(closewait, "inode_owners", lambda inos, proc: {})
    sw = Sweeps()
    sw.rows = [row(1, None)]
    sw.watch.start(0)  # there before tracing: its age is unknown
    sw.rows = [row(1, None), row(2, None)]
    assert sw.watch.sweep(S // 2) == []
    got = sw.watch.sweep(S)
    assert [(o.ino, o.since_ns, o.preexisting) for o in got] == [(1, None, True)]
    got = sw.watch.sweep(S + S // 2)
    assert [(o.ino, o.since_ns, o.preexisting) for o in got] == [(2, S // 2, False)]


def test_proc_fallback_when_sock_diag_cannot_answer(tmp_path, monkeypatch):
    """A /proc tree whose namespace is a plain file: setns fails, /proc/PID/net/tcp answers."""
    monkeypatch.setattr(closewait, "inode_owners", lambda inos, proc: {i: (77, "leaky") for i in inos})
    pid = tmp_path / "77"
    (pid / "ns").mkdir(parents=True)
    (pid / "ns" / "net").write_text("")
    (pid / "net").mkdir()
    (pid / "net" / "tcp").write_text(
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        "   0: 0100007F:1F40 0100007F:9C40 08 00000000:000003E9 00:00000000 00000000  1000        0 5151 1\n"
        "   1: 0100007F:1F40 0100007F:9C41 01 00000000:00000000 00:00000000 00000000  1000        0 5152 1\n"
    )
    reported = []
    watch = CloseWaitWatch(threshold_ns=S, report=lambda o, now: reported.append(o), proc=str(tmp_path))
    watch.start(0)
    assert watch.diag_error and watch.diag_error.startswith("sock_diag in ")
    watch.sweep(2 * S)
    [o] = reported
    assert (o.ino, o.since_ns, o.preexisting, o.owner) == (5151, None, True, (77, "leaky"))
    assert (o.row.laddr, o.row.lport, o.row.raddr, o.row.rport, o.row.rx_queue) == (
        "127.0.0.1",
        8000,
        "127.0.0.1",
        40000,
        1001,
    )
