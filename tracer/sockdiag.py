"""TCP sockets in chosen states from the kernel's sock_diag netlink interface (what `ss` uses).

The kernel filters by state and returns only those sockets, with tcp_info: on a host with a
hundred thousand TIME_WAIT sockets a sweep for CLOSE_WAIT costs a walk of the hash table in the
kernel, not the formatting and parsing of every line of /proc/net/tcp. Sockets are per network
namespace: the netlink socket is opened from inside the namespace (setns in a short-lived
thread; the socket keeps the namespace it was made in) and closed after the dump, so rsttrace
never keeps a namespace alive.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import os
import socket
import struct
import threading
from dataclasses import dataclass

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x01
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
INET_DIAG_INFO = 2
CLONE_NEWNET = 0x40000000
IPPROTO_TCP = 6

_NLMSGHDR = struct.Struct("=IHHII")
# struct inet_diag_req_v2: family, protocol, ext, pad, states, then a zeroed inet_diag_sockid.
_REQ = struct.Struct("=BBBxI48x")
# struct inet_diag_msg: family, state, timer, retrans; sockid (ports and addresses in network
# order, interface, cookie); expires, rqueue, wqueue, uid, inode.
_MSG = struct.Struct("=BBBB")
_SOCKID = struct.Struct("!HH16s16s")
_MSG_TAIL = struct.Struct("=12xIIIII")  # interface, cookie skipped
_RTATTR = struct.Struct("=HH")
# struct tcp_info: tcpi_last_data_sent, _last_ack_sent (always 0), _last_data_recv,
# _last_ack_recv, in ms ago, at offset 44 (uapi/linux/tcp.h; unchanged since 2.6).
_TCPI_TIMES = struct.Struct("=IIII")
_TCPI_TIMES_AT = 44


class DiagUnavailable(Exception):
    """sock_diag cannot answer here (no module, no permission, unknown namespace)."""


@dataclass(frozen=True)
class TcpRow:
    """A TCP socket as sock_diag (or a line of /proc/PID/net/tcp, without idle_ms) shows it."""

    family: str  # "ipv4" / "ipv6"
    laddr: str
    lport: int
    raddr: str
    rport: int
    state: int  # TCP_* (CLOSE_WAIT = 8)
    rx_queue: int  # rcv_nxt - copied_seq: unread bytes, +1 once a FIN has arrived
    ino: int
    idle_ms: int | None = None  # since the last segment sent or received (None: unknown)


def _addr(raw: bytes, af: int) -> str:
    if af == socket.AF_INET:
        return str(ipaddress.IPv4Address(raw[:4]))
    return str(ipaddress.IPv6Address(raw))


def request(af: int, states: int, seq: int = 1) -> bytes:
    body = _REQ.pack(af, IPPROTO_TCP, 1 << (INET_DIAG_INFO - 1), states)
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


def parse_msg(payload: bytes) -> TcpRow:
    """One inet_diag_msg with its attributes."""
    af, state, _timer, _retrans = _MSG.unpack_from(payload, 0)
    sport, dport, src, dst = _SOCKID.unpack_from(payload, _MSG.size)
    _expires, rqueue, _wqueue, _uid, ino = _MSG_TAIL.unpack_from(payload, _MSG.size + _SOCKID.size)
    idle = None
    off = _MSG.size + _SOCKID.size + _MSG_TAIL.size
    while off + _RTATTR.size <= len(payload):
        alen, atype = _RTATTR.unpack_from(payload, off)
        if alen < _RTATTR.size:
            break
        data = payload[off + _RTATTR.size : off + alen]
        if atype == INET_DIAG_INFO and len(data) >= _TCPI_TIMES_AT + _TCPI_TIMES.size:
            data_sent, _ack_sent, data_recv, ack_recv = _TCPI_TIMES.unpack_from(data, _TCPI_TIMES_AT)
            idle = min(data_sent, data_recv, ack_recv)
        off += (alen + 3) & ~3
    return TcpRow(
        "ipv4" if af == socket.AF_INET else "ipv6",
        _addr(src, af),
        sport,
        _addr(dst, af),
        dport,
        state,
        rqueue,
        ino,
        idle,
    )


def parse_dump(chunks: list[bytes]) -> tuple[list[TcpRow], bool]:
    """Netlink messages -> (sockets, done). Raises DiagUnavailable on an error message."""
    out: list[TcpRow] = []
    for buf in chunks:
        off = 0
        while off + _NLMSGHDR.size <= len(buf):
            length, mtype, _flags, _seq, _pid = _NLMSGHDR.unpack_from(buf, off)
            if length < _NLMSGHDR.size or off + length > len(buf):
                raise DiagUnavailable("sock_diag: truncated reply")
            payload = buf[off + _NLMSGHDR.size : off + length]
            if mtype == NLMSG_DONE:
                return out, True
            if mtype == NLMSG_ERROR:
                code = -struct.unpack_from("=i", payload, 0)[0]
                if code:
                    raise DiagUnavailable(f"sock_diag: {os.strerror(code)}")
            elif mtype == SOCK_DIAG_BY_FAMILY:
                out.append(parse_msg(payload))
            off += (length + 3) & ~3
    return out, False


def dump(sock: socket.socket, states: int) -> list[TcpRow]:
    """Every TCP socket (IPv4 and IPv6) of sock's namespace in one of the states (a bitmask)."""
    found: list[TcpRow] = []
    for seq, af in enumerate((socket.AF_INET, socket.AF_INET6), 1):
        sock.send(request(af, states, seq))
        while True:
            try:
                chunk = sock.recv(1 << 16)
            except OSError as e:
                raise DiagUnavailable(f"sock_diag: {e.strerror}") from None
            if not chunk:
                raise DiagUnavailable("sock_diag: no reply")
            got, done = parse_dump([chunk])
            found += got
            if done:
                break
    return found


_libc = ctypes.CDLL(None, use_errno=True)


def _open_here() -> socket.socket:
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG)
    s.settimeout(2.0)
    return s


def open_in(netns_path: str | None) -> socket.socket:
    """A sock_diag socket in the namespace of netns_path (/proc/PID/ns/net); None: our own."""
    if netns_path is None:
        try:
            return _open_here()
        except OSError as e:
            raise DiagUnavailable(f"sock_diag: {e.strerror}") from None
    result: dict = {}

    def inside() -> None:
        try:
            fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, os.strerror(err))
            finally:
                os.close(fd)
            result["sock"] = _open_here()
        except OSError as e:
            result["error"] = e

    # setns changes only the calling thread: a thread of its own, gone after.
    t = threading.Thread(target=inside, name="rsttrace-setns", daemon=True)
    t.start()
    t.join()
    if "sock" not in result:
        e = result.get("error")
        code = errno.errorcode.get(getattr(e, "errno", 0) or 0, "?")
        raise DiagUnavailable(f"sock_diag in {netns_path}: {getattr(e, 'strerror', e) or code}")
    return result["sock"]


def sockets_in(netns_path: str | None, states: int) -> list[TcpRow]:
    sock = open_in(netns_path)
    try:
        return dump(sock, states)
    finally:
        sock.close()
