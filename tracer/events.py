"""Decoded events: one record per kernel event, with names instead of numbers, as stored in traces."""

from __future__ import annotations

import ctypes
import errno as _errno
import ipaddress
import operator
import socket
import struct as _struct
from dataclasses import dataclass, field, fields

from .layout import layout

_L = layout()
# Names for the numbers bpf/rsttrace.h defines (one definition, read from there).
TCP_STATES = {0: "UNKNOWN", **_L.prefixed("RST_TCP_")}
CONTEXTS = {v: name.lower() for v, name in _L.prefixed("RST_CTX_").items()}
AF_INET6 = _L.constants["RST_AF_INET6"]
# signal_generate's `result` (enum trace_sig_result in include/trace/events/signal.h, stable since 3.x).
SIG_RESULTS = {0: "delivered", 1: "ignored", 2: "already_pending", 3: "overflow_fail", 4: "lose_info"}

KINDS = {v: name.lower() for v, name in _L.prefixed("RST_EV_").items()}
FLAG_BITS = {v: name.lower() for v, name in _L.prefixed("RST_F_").items()}
REASON_NONE = _L.constants["RST_REASON_NONE"]
SIG_NONE = _L.constants["RST_SIG_NONE"]
_EXITING = _L.constants["RST_F_EXITING"]


def errno_name(num: int) -> str:
    return _errno.errorcode.get(num, str(num)) if num else ""


def _addr(raw: bytes, family: int) -> str:
    if family == AF_INET6:
        return str(ipaddress.IPv6Address(bytes(raw[:16])))
    return socket.inet_ntop(socket.AF_INET, bytes(raw[:4]))


_PACK = {
    ctypes.c_uint8: "B",
    ctypes.c_int8: "b",
    ctypes.c_uint16: "H",
    ctypes.c_int16: "h",
    ctypes.c_uint32: "I",
    ctypes.c_int32: "i",
    ctypes.c_uint64: "Q",
    ctypes.c_int64: "q",
}


def _unpacker(cls: type[ctypes.Structure]) -> tuple[_struct.Struct, dict[str, int]]:
    """A struct.Struct reading the ctypes layout in one call (byte arrays come out as bytes)."""
    fmt, pos, index = "<", 0, {}
    for name, ctype in cls._fields_:
        desc = getattr(cls, name)
        fmt += "x" * (desc.offset - pos)
        if issubclass(ctype, ctypes.Array):
            fmt += f"{desc.size}s"  # u8[] and char[] alike
        else:
            fmt += _PACK[ctype]
        index[name] = len(index)
        pos = desc.offset + desc.size
    fmt += "x" * (ctypes.sizeof(cls) - pos)
    return _struct.Struct(fmt), index


@dataclass(slots=True)
class Event:
    ts_ns: int = field(metadata={"min": 0})  # bpf_ktime_get_ns(): CLOCK_MONOTONIC
    kind: str = ""
    pid: int = 0
    tid: int = 0
    comm: str = ""
    ctx: str = "task"
    sk: int = field(default=0, metadata={"column": "uint64"})
    ino: int = field(default=0, metadata={"column": "uint64"})
    netns: int = 0
    family: str = "ipv4"
    laddr: str = ""
    lport: int = field(default=0, metadata={"column": "int32"})
    raddr: str = ""
    rport: int = field(default=0, metadata={"column": "int32"})
    oldstate: str = ""
    state: str = ""
    bytes: int = 0
    err: str = ""  # errno name; for exit events the raw exit code is in `code`
    code: int = field(default=0, metadata={"column": "int32"})
    reason: str | None = None
    sigpipe: str | None = None  # signal_generate result of this send, or None
    signal: int = 0  # exit: the fatal signal; close with flag exiting: the signal the closer died of
    retrans: int = 0  # close after an error: unanswered retransmissions
    probes: int = 0  # close after an error: unanswered keepalive/zero-window probes
    span_ms: int = 0  # close after a timeout: how long the oldest segment waited; cwait_end: age;
    # closer: how long the connection had been idle when it was closed
    unacked: int = 0  # recv_reset: bytes the victim had written that the peer never acknowledged
    ago_ms: int = 0  # closer: ms from that close to the RST
    cgroup: int = field(default=0, metadata={"column": "uint64"})  # the task's cgroup id (tracer/cgroups.py)
    flags: list[str] = field(default_factory=list)

    @property
    def tuple(self) -> tuple[str, int, str, int]:
        return (self.laddr, self.lport, self.raddr, self.rport)

    def has(self, flag: str) -> bool:
        return flag in self.flags

    def to_dict(self) -> dict:
        # Not dataclasses.asdict: it deep-copies field by field, and `record` writes every event.
        d = {name: getattr(self, name) for name in _EVENT_FIELDS}
        d["flags"] = list(self.flags)
        d["type"] = "event"
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Event":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names - {"type"}
        if unknown:
            raise ValueError(f"unknown event field(s): {', '.join(sorted(unknown))}")
        return cls(**{k: v for k, v in d.items() if k in names})


_EVENT_FIELDS = tuple(f.name for f in fields(Event))
# The one schema of a decoded event, for every table and check (tracer/frame.py, tracefile.py):
# name -> column type ("int64", "int32", "uint64", "string", or "list<string>" for flags), and
# the smallest value an integer field may hold.
EVENT_COLUMNS: dict[str, str] = {
    f.name: f.metadata.get("column", "int64")
    if f.type == "int"
    else "list<string>"
    if f.type.startswith("list")
    else "string"
    for f in fields(Event)
}
EVENT_MINIMUM: dict[str, int] = {f.name: f.metadata["min"] for f in fields(Event) if "min" in f.metadata}


class Decoder:
    """Turns raw rst_event records into Events; reason names come from the running kernel.

    This runs once per event at up to hundreds of thousands of events per second: one
    struct.unpack_from per record, and the few repeated strings (comm, flag lists) cached."""

    def __init__(self, reasons: dict[int, str] | None = None) -> None:
        self.reasons = reasons or {}
        self.struct = _L.ctypes_struct("rst_event")
        self.size = ctypes.sizeof(self.struct)
        self._unpack, ix = _unpacker(self.struct)
        self._pick = operator.itemgetter(
            *(
                ix[n]
                for n in (
                    "ts_ns",
                    "skaddr",
                    "ino",
                    "kind",
                    "netns",
                    "pid",
                    "tid",
                    "err",
                    "reason",
                    "bytes",
                    "family",
                    "sport",
                    "dport",
                    "oldstate",
                    "newstate",
                    "ctx",
                    "flags",
                    "sig_result",
                    "saddr",
                    "daddr",
                    "comm",
                    "aux",
                    "span_ms",
                    "retrans",
                    "probes",
                    "cgroup",
                )
            )
        )
        self._comms: dict[bytes, str] = {}
        self._flags: dict[int, tuple[str, ...]] = {}
        self._addrs: dict[bytes, str] = {}

    def _addr(self, raw: bytes, family: int) -> str:
        # A busy host talks to few addresses: formatting them is most of a decode otherwise.
        key = raw if family == AF_INET6 else raw[:4]
        text = self._addrs.get(key)
        if text is None:
            text = _addr(raw, family)
            if len(self._addrs) < 65536:
                self._addrs[key] = text
        return text

    def decode(self, raw) -> Event:
        """Decode a ctypes rst_event."""
        return self.decode_bytes(ctypes.string_at(ctypes.addressof(raw), self.size))

    def decode_bytes(self, buf) -> Event:
        """Decode one record from bytes (or any buffer) holding at least one rst_event."""
        v = self._unpack.unpack_from(buf)
        (
            ts_ns,
            skaddr,
            ino,
            kind_n,
            netns,
            pid,
            tid,
            err,
            reason,
            nbytes,
            family,
            sport,
            dport,
            oldstate,
            newstate,
            ctx,
            flags,
            sig_result,
            saddr,
            daddr,
            comm_raw,
            aux,
            span_ms,
            retrans,
            probes,
            cgroup,
        ) = self._pick(v)
        comm = self._comms.get(comm_raw)
        if comm is None:
            comm = comm_raw.split(b"\0", 1)[0].decode(errors="replace")
            if len(self._comms) < 4096:
                self._comms[comm_raw] = comm
        names = self._flags.get(flags)
        if names is None:
            names = self._flags[flags] = tuple(name for bit, name in FLAG_BITS.items() if flags & bit)
        kind = KINDS.get(kind_n, f"unknown_{kind_n}")
        ev = Event(
            ts_ns=ts_ns,
            kind=kind,
            pid=pid,
            tid=tid,
            comm=comm,
            ctx=CONTEXTS.get(ctx, str(ctx)),
            sk=skaddr,
            ino=ino,
            netns=netns,
            family="ipv6" if family == AF_INET6 else "ipv4",
            bytes=nbytes,
            flags=list(names),
            retrans=retrans,
            probes=probes,
            span_ms=span_ms,
            cgroup=cgroup,
        )
        if skaddr or family:
            ev.laddr, ev.lport = self._addr(saddr, family), sport
            ev.raddr, ev.rport = self._addr(daddr, family), dport
            ev.state = TCP_STATES.get(newstate, str(newstate))
        if kind in ("close", "cwait_end"):
            ev.oldstate = TCP_STATES.get(oldstate, str(oldstate))
        if kind == "exit":
            ev.code = err
            ev.err = ""
            ev.signal = aux
        else:
            ev.err = errno_name(err)
            if flags & _EXITING:
                ev.signal = aux
            elif kind == "recv_reset":
                ev.unacked = aux
            elif kind == "closer":
                ev.ago_ms = aux
        if reason != REASON_NONE:
            ev.reason = self.reasons.get(reason, str(reason))
        if sig_result != SIG_NONE:
            ev.sigpipe = SIG_RESULTS.get(sig_result, str(sig_result))
        return ev
