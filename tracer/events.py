"""Decoded events: one record per kernel event, with names instead of numbers, as stored in traces."""

from __future__ import annotations

import errno as _errno
import ipaddress
from dataclasses import asdict, dataclass, field, fields

from .layout import layout

TCP_STATES = {
    0: "UNKNOWN", 1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
    6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING",
    12: "NEW_SYN_RECV",
}
# signal_generate's `result` (enum trace_sig_result in include/trace/events/signal.h, stable since 3.x).
SIG_RESULTS = {0: "delivered", 1: "ignored", 2: "already_pending", 3: "overflow_fail", 4: "lose_info"}
CONTEXTS = {0: "task", 1: "irq", 2: "kthread"}

_L = layout()
KINDS = {v: name.lower() for v, name in _L.prefixed("RST_EV_").items()}
FLAG_BITS = {v: name.lower() for v, name in _L.prefixed("RST_F_").items()}
REASON_NONE = _L.constants["RST_REASON_NONE"]
SIG_NONE = _L.constants["RST_SIG_NONE"]
_EXITING = _L.constants["RST_F_EXITING"]


def errno_name(num: int) -> str:
    return _errno.errorcode.get(num, str(num)) if num else ""


def _addr(raw: bytes, family: int) -> str:
    if family == 10:
        return str(ipaddress.IPv6Address(bytes(raw[:16])))
    return str(ipaddress.IPv4Address(bytes(raw[:4])))


@dataclass(slots=True)
class Event:
    ts_ns: int
    kind: str
    pid: int = 0
    tid: int = 0
    comm: str = ""
    ctx: str = "task"
    sk: int = 0
    ino: int = 0
    netns: int = 0
    family: str = "ipv4"
    laddr: str = ""
    lport: int = 0
    raddr: str = ""
    rport: int = 0
    oldstate: str = ""
    state: str = ""
    bytes: int = 0
    err: str = ""  # errno name; for exit events the raw exit code is in `code`
    code: int = 0
    reason: str | None = None
    sigpipe: str | None = None  # signal_generate result of this send, or None
    signal: int = 0  # exit: the fatal signal; close with flag exiting: the signal the closer died of
    retrans: int = 0  # close after an error: unanswered retransmissions
    probes: int = 0  # close after an error: unanswered keepalive/zero-window probes
    span_ms: int = 0  # close after a timeout: how long the oldest segment waited; cwait_end: age
    flags: list[str] = field(default_factory=list)

    @property
    def tuple(self) -> tuple[str, int, str, int]:
        return (self.laddr, self.lport, self.raddr, self.rport)

    def has(self, flag: str) -> bool:
        return flag in self.flags

    def to_dict(self) -> dict:
        d = asdict(self)
        d["type"] = "event"
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Event":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names - {"type"}
        if unknown:
            raise ValueError(f"unknown event field(s): {', '.join(sorted(unknown))}")
        return cls(**{k: v for k, v in d.items() if k in names})


class Decoder:
    """Turns raw rst_event records into Events; reason names come from the running kernel."""

    def __init__(self, reasons: dict[int, str] | None = None) -> None:
        self.reasons = reasons or {}
        self.struct = _L.ctypes_struct("rst_event")

    def decode(self, raw) -> Event:
        e = raw
        fam = "ipv6" if e.family == 10 else "ipv4"
        kind = KINDS.get(e.kind, f"unknown_{e.kind}")
        ev = Event(
            ts_ns=e.ts_ns, kind=kind, pid=e.pid, tid=e.tid,
            comm=bytes(e.comm).split(b"\0", 1)[0].decode(errors="replace"),
            ctx=CONTEXTS.get(e.ctx, str(e.ctx)), sk=e.skaddr, ino=e.ino, netns=e.netns,
            family=fam, bytes=e.bytes,
            flags=[name for bit, name in FLAG_BITS.items() if e.flags & bit],
            retrans=e.retrans, probes=e.probes, span_ms=e.span_ms,
        )
        if e.skaddr or e.family:
            ev.laddr, ev.lport = _addr(e.saddr, e.family), e.sport
            ev.raddr, ev.rport = _addr(e.daddr, e.family), e.dport
            ev.state = TCP_STATES.get(e.newstate, str(e.newstate))
        if kind in ("close", "cwait_end"):
            ev.oldstate = TCP_STATES.get(e.oldstate, str(e.oldstate))
        if kind == "exit":
            ev.code = e.err
            ev.err = ""
            ev.signal = e.aux
        else:
            ev.err = errno_name(e.err)
            if e.flags & _EXITING:
                ev.signal = e.aux
        if e.reason != REASON_NONE:
            ev.reason = self.reasons.get(e.reason, str(e.reason))
        if e.sig_result != SIG_NONE:
            ev.sigpipe = SIG_RESULTS.get(e.sig_result, str(e.sig_result))
        return ev
