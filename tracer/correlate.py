"""Turn an ordered stream of Events into incidents: who ended what, what it cost, who suffered."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Iterator

from .cgroups import describe
from .events import Event
from .kernel import Loss
from .kinds import CAUSE_KINDS, KINDS, REASON_KIND

NS = 1_000_000_000

TIMEOUT_ERRORS = ("ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH", "EHOSTDOWN", "ENETDOWN")
SIGPIPE_FATES = ("killed", "handled", "ignored", "none", "delivered")
# What the incident did to the process on the other end: the first question an operator asks.
IMPACTS = ("killed", "failed-call", "unaffected", "unknown")
# Sockets closed by killed processes, remembered to explain a later RST to their peers.
KILLED_MEMORY = 4096


@dataclass
class Victim:
    pid: int = 0
    comm: str = ""
    netns: int = 0
    laddr: str = ""
    lport: int = 0
    state: str = ""  # TCP state when the RST (or the timeout) hit the socket
    sk_err: str = ""
    errors: list[dict] = field(default_factory=list)
    sigpipe: str | None = None
    exit_signal: int | None = None
    closed: bool = False
    ino: int = 0  # socket inode, to find the owner when it made no call
    unread_at_reset: int | None = None  # bytes it had received but not read when the RST came
    unacked_at_reset: int | None = None  # bytes it had written that the peer never acknowledged
    unread_at_close: int | None = None  # bytes still unread when its socket was freed
    closed_before_reset: bool = False  # its owner had closed the socket before the RST came
    cgroup: int = 0  # its cgroup id (tracer/cgroups.py), when its own task was seen

    @property
    def impact(self) -> str:
        if self.exit_signal is not None:
            return "killed"
        if self.errors:
            return "failed-call"
        return "unaffected" if self.pid else "unknown"

    def to_dict(self) -> dict:
        return {
            "pid": self.pid or None,
            "comm": self.comm or None,
            "netns": self.netns,
            "addr": self.laddr,
            "port": self.lport,
            "state": self.state or None,
            "sk_err": self.sk_err or None,
            "errors": self.errors,
            "sigpipe": self.sigpipe,
            "exit_signal": self.exit_signal,
            "closed": self.closed,
            "unread_at_reset": self.unread_at_reset,
            "unacked_at_reset": self.unacked_at_reset,
            "unread_at_close": self.unread_at_close,
            "closed_before_reset": self.closed_before_reset,
        }


@dataclass
class Incident:
    id: int
    kind: str
    first_ns: int
    last_ns: int
    family: str = "ipv4"
    netns: int = 0
    laddr: str = ""
    lport: int = 0
    raddr: str = ""
    rport: int = 0
    reason: str | None = None
    cause: str | None = None  # what the close path showed: one of CAUSE_KINDS, "timeout", ...
    culprit_pid: int = 0
    culprit_comm: str = ""
    culprit_ctx: str = ""
    culprit_signal: int | None = None  # the signal the culprit died of (process-killed)
    culprit_cgroup: int = 0
    cgroup_paths: dict[int, str | None] = field(default_factory=dict)  # id -> path, at the report
    state: str = ""  # the ending socket's state before the end
    ended_with: str | None = None  # "RST" or "FIN" (process-killed)
    bytes_discarded: int = 0
    retransmissions: int | None = None
    probes: int | None = None
    unanswered_ms: int | None = None
    close_ns: int | None = None
    reset_ns: int | None = None
    reset_seen: bool = False
    reset_passive: bool = False
    reset_nosk: bool = False
    reset_state: str = ""
    victim: Victim | None = None
    victim_sk: tuple[int, int] | None = None
    owner: Victim | None = None  # the ending socket's owner, when someone else ended it
    close_wait: dict | None = None  # close-wait: {"age_ns", "closed", "preexisting"}
    fixed_kind: bool = False
    resets: int = 0  # RSTs of this connection joined into this incident
    unknown: dict[str, str] = field(default_factory=dict)  # field -> what the kernel lacked to know it
    closer_seen: bool = False  # the kernel named who closed the connection with FIN
    close_to_reset_ms: int | None = None  # from that FIN close to the (first) RST
    idle_before_close_ms: int | None = None  # how long the connection was idle when closed

    @property
    def impact(self) -> str:
        """Worst of what the incident did to the processes on the suffering side."""
        found = {s.impact for s in (self.victim, self.owner) if s is not None}
        for level in IMPACTS:
            if level in found:
                return level
        return "unknown"

    @property
    def pending_signal(self) -> bool:
        return self.victim is not None and self.victim.sigpipe == "delivered"

    def complete(self, socket_open: bool = False) -> bool:
        """Nothing more is expected: the reset was seen and the victim's story has ended.
        `socket_open`: the victim's socket is still tracked (its end, even in an exit, follows)."""
        if self.kind == "close-wait":
            return True
        if not self.reset_seen or self.victim is None or self.pending_signal:
            return False
        if self.owner is not None and not (self.owner.closed or self.owner.exit_signal is not None):
            return False
        return self.victim.closed or (self.victim.exit_signal is not None and not socket_open)

    def classify(self) -> str:
        """The kind, from everything seen; called when the incident is reported."""
        if self.fixed_kind:
            return self.kind
        if self.cause in CAUSE_KINDS:
            return self.cause
        if self.cause == "timeout":
            keepalive = (
                self.reason == "TCP_KEEPALIVE_TIMEOUT"
                or (self.reset_ns is not None and not self.reset_passive and self.reason is None)
                or (self.probes and not self.retransmissions)
            )
            return "keepalive-timeout" if keepalive else "retransmit-timeout"
        vstate = self.victim.state if self.victim else ""
        if vstate == "SYN_SENT":
            return "connection-refused"
        if self.closer_seen and self.reset_passive:
            # Data reached a connection this host had closed with FIN, whatever socket
            # answered it (orphan, TIME_WAIT, the listener, none).
            return "write-after-close"
        if self.reason in REASON_KIND:
            return REASON_KIND[self.reason]
        if self.reason == "TCP_STATE" and self.reset_state == "FIN_WAIT2" and not self.reset_passive:
            return "fin-wait2-timeout"
        if vstate == "CLOSE_WAIT" or (self.reset_passive and self.reset_state == "TIME_WAIT"):
            return "write-after-close"
        if self.reset_passive and self.reset_nosk and not self.reset_state:
            return "no-socket"
        if self.reset_seen and self.reset_state:
            return "passive-reset" if self.reset_passive else "active-reset"
        return self.kind

    def to_dict(self, wall_offset_ns: int = 0) -> dict:
        k = KINDS.get(self.kind)
        summary, explanation, advice = (k.summary, k.why, k.fix) if k else (self.kind, "", "")
        culprit = None
        if self.culprit_pid:
            culprit = {"pid": self.culprit_pid, "comm": self.culprit_comm}
            if self.culprit_signal:
                culprit["signal"] = self.culprit_signal
        cw = self.close_wait or {}
        return {
            "type": "incident",
            "id": self.id,
            "kind": self.kind,
            "reason": self.reason,
            "summary": summary,
            "explanation": explanation,
            "advice": advice,
            "culprit": culprit,
            "bytes_discarded": self.bytes_discarded,
            "family": self.family,
            "netns": self.netns,
            "local": {"addr": self.laddr, "port": self.lport},
            "remote": {"addr": self.raddr, "port": self.rport},
            "state": self.state or None,
            "ended_with": self.ended_with,
            "retransmissions": self.retransmissions,
            "probes": self.probes,
            "unanswered_ms": self.unanswered_ms,
            "close_wait_age_ns": cw.get("age_ns"),
            "close_wait_closed": cw.get("closed"),
            "close_wait_preexisting": cw.get("preexisting"),
            "close_wait_unread": cw.get("unread"),
            "resets": self.resets,
            "close_to_reset_ms": self.close_to_reset_ms,
            "idle_before_close_ms": self.idle_before_close_ms,
            "impact": self.impact,
            # field -> why this kernel (and plan) could not know it (Correlator `lacks`)
            "unknown": self.unknown or None,
            "cgroups": {
                "culprit": describe(self.culprit_cgroup, self.cgroup_paths.get(self.culprit_cgroup)),
                "victim": describe(self.victim.cgroup, self.cgroup_paths.get(self.victim.cgroup))
                if self.victim
                else None,
                "owner": describe(self.owner.cgroup, self.cgroup_paths.get(self.owner.cgroup)) if self.owner else None,
            },
            "victim": self.victim.to_dict() if self.victim else None,
            "owner": self.owner.to_dict() if self.owner else None,
            "timestamps": {
                "first_ns": self.first_ns,
                "close_ns": self.close_ns,
                "reset_ns": self.reset_ns,
                "last_ns": self.last_ns,
                "wall_ns": self.first_ns + wall_offset_ns if wall_offset_ns else None,
            },
        }


_UNSET = ("", "0.0.0.0", "::", 0)


def _sender_unseen(inc: Incident) -> tuple[str, ...]:
    """What the kernel's RST from a TIME_WAIT socket or from no socket would have told."""
    if inc.kind in ("reset-received", "no-socket"):
        return ("culprit", "state", "resets")  # only the receiver saw it
    if inc.kind in ("write-after-close", "connection-refused") or (
        inc.kind == "process-killed" and inc.ended_with == "FIN"
    ):
        return ("resets",)  # the closed side's RSTs: some may have come from TIME_WAIT or none
    return ()


def _nothing(_inc: Incident) -> tuple[str, ...]:
    return ()


# Loss key (KernelFeatures.losses) -> the fields of an incident it leaves unknown. Gaps that
# change only how something is seen (io_sys_exit) or that may misname (user_regs: doctor says
# so) are not here.
UNKNOWN: dict[str, Callable[[Incident], tuple[str, ...]]] = {
    "reason": lambda i: () if i.kind == "close-wait" else ("reason",),
    "minisock_resets": _sender_unseen,
    "v6_nosk_resets": lambda i: _sender_unseen(i) if i.family == "ipv6" else (),
    "io_calls": lambda i: ("victim.errors",) if i.victim is not None else (),
    "signal_deliver": lambda i: (
        ("victim.sigpipe",) if i.victim is not None and i.victim.sigpipe in ("delivered", "handled") else ()
    ),
    "error_report": lambda i: ("victim.errors",) if i.victim is not None and i.cause == "timeout" else (),
}


def _same_connection(known: tuple, seen: tuple) -> bool:
    """A socket's 4-tuple as recorded vs as an event shows it. A failed connect() or a
    disconnect clears the remote end and an auto-assigned local address (inet_reset_saddr), so
    a cleared field matches anything; any other difference is another connection."""
    return all(b in _UNSET or a == b for a, b in zip(known, seen))


class _Socks:
    """(netns, socket address) -> incident, checked against the connection each socket had.

    The kernel recycles socket addresses: when the event that marked a socket's end (its
    destroy) was lost, a later connection at the same address must not be taken for the old
    one (under loss, that pinned new closes on old incidents: wrong byte counts, missing
    culprits). A socket keeps its 4-tuple for life (but for what a failed connect clears), so
    an event whose tuple differs from the one recorded is a new socket: the stale entry goes."""

    def __init__(self, stats: dict) -> None:
        self._map: dict[tuple[int, int], tuple[Incident, tuple]] = {}
        self._stats = stats

    def __len__(self) -> int:
        return len(self._map)

    def __contains__(self, key) -> bool:
        return key in self._map

    def get(self, ev: Event) -> Incident | None:
        key = (ev.netns, ev.sk)
        found = self._map.get(key)
        if found is None:
            return None
        if ev.laddr and not _same_connection(found[1], ev.tuple):
            del self._map[key]
            self._stats["stale"] += 1
            return None
        return found[0]

    def put(self, ev: Event, inc: Incident) -> None:
        self._map[(ev.netns, ev.sk)] = (inc, ev.tuple)

    def forget(self, key: tuple[int, int]) -> None:
        self._map.pop(key, None)

    def pop(self, ev: Event) -> Incident | None:
        inc = self.get(ev)
        self._map.pop((ev.netns, ev.sk), None)
        return inc


class _Index(dict):
    """key -> Incident that can forget all of one incident's keys without scanning the table
    (a scan per finished incident made correlation quadratic when many were open at once)."""

    def __init__(self) -> None:
        super().__init__()
        self._keys: dict[int, set] = {}  # incident id -> its keys here

    def __setitem__(self, key, inc) -> None:
        old = dict.get(self, key)
        if old is not None and old is not inc:
            self._keys.get(old.id, set()).discard(key)
        dict.__setitem__(self, key, inc)
        self._keys.setdefault(inc.id, set()).add(key)

    def __delitem__(self, key) -> None:
        inc = dict.pop(self, key)
        self._keys.get(inc.id, set()).discard(key)

    def pop(self, key, *default):
        if dict.__contains__(self, key):
            inc = dict.__getitem__(self, key)
            del self[key]
            return inc
        if default:
            return default[0]
        raise KeyError(key)

    def drop(self, inc: "Incident") -> None:
        for key in self._keys.pop(inc.id, ()):
            if dict.get(self, key) is inc:
                dict.__delitem__(self, key)


def _reverse(t: tuple[str, int, str, int]) -> tuple[str, int, str, int]:
    return (t[2], t[3], t[0], t[1])


def _close_cause(ev: Event) -> str | None:
    """What a CLOSE event on a socket nobody reported yet says about how the connection ended."""
    if ev.err == "ECONNREFUSED" or (ev.err and ev.oldstate == "SYN_SENT"):
        return "refused" if ev.err == "ECONNREFUSED" else "timeout"
    if ev.err in TIMEOUT_ERRORS:
        return "timeout"
    if ev.err == "ECONNABORTED":
        return "socket-destroyed"
    if ev.err:
        return "reset"  # ECONNRESET/EPIPE: an RST arrived that was not seen (started too late)
    if ev.ctx != "task":
        return None
    if ev.has("exiting"):
        return "process-killed"
    if ev.bytes:
        return "abort-on-close"
    if ev.has("linger0"):
        return "linger-zero"
    if ev.has("linger2") and ev.state == "FIN_WAIT1":
        return "linger2-abort"
    return None


class Correlator:
    """Feed events in timestamp order; completed incidents come out of feed() and tick().

    `settle_ns`: an incident is reported once its victim's story has ended (socket freed or
    process gone, SIGPIPE fate known) or when nothing happened to it for this long; `hold_ns`
    (longer) when the victim still holds its socket, however slowly it gets to its next call.
    `owner_of`: optional inode -> (pid, comm) resolver for victims that made no call.
    """

    def __init__(
        self,
        settle_ns: int = NS,
        owner_of: Callable[[int], tuple[int, str] | None] | None = None,
        match_window_ns: int = 2 * NS,
        cgroup_path: Callable[[int], str | None] | None = None,
        hold_ns: int | None = None,
        lacks: Iterable[Loss] = (),
    ) -> None:
        self.cgroup_path = cgroup_path
        # What this kernel and plan cannot show (KernelFeatures.losses): each incident it touches
        # names the fields it leaves unknown, instead of being silently less exact.
        self.lacks = list(lacks)
        # How long an incident whose other side may still act waits for it (at least 5 s).
        self.hold_ns = hold_ns if hold_ns is not None else max(10 * settle_ns, 5 * NS)
        self.stats = {"events": 0, "incidents": 0, "unmatched": 0, "late": 0, "stale": 0, "not_received": 0}
        self.settle_ns = settle_ns
        self.match_window_ns = match_window_ns
        self.owner_of = owner_of
        self._next_id = 1
        self.open: dict[int, Incident] = {}
        self.socks = _Socks(self.stats)  # (netns, sk) -> incident, any side
        self.by_tuple: dict[tuple, Incident] = _Index()  # ending side's tuple -> incident awaiting its peer
        self.by_peer: dict[tuple, Incident] = _Index()  # victim-side tuple -> incident awaiting its sender
        self.sigpipe_tids: dict[int, Incident] = _Index()
        # tuple of a socket a killed process closed with FIN -> (pid, comm, signal, ts, netns)
        self.killed: OrderedDict[tuple, tuple[int, str, int, int, int]] = OrderedDict()
        # (netns, ending side's tuple) of incidents already reported -> incident, so that a
        # later RST of the same connection is counted with it, not reported again.
        self.recent: OrderedDict[tuple, Incident] = OrderedDict()
        self._handlers: dict = {}  # event kind -> bound _on_<kind> method, or False
        self._held: dict[tuple[int, int], list[Event]] = {}  # see ORPHAN_WAIT_NS

    # -- public ---------------------------------------------------------------
    def feed(self, ev: Event) -> list[Incident]:
        self.stats["events"] += 1
        out = self._release_held(ev.ts_ns) if self._held else []
        if self._hold(ev):
            return out
        return out + self._handle(ev)

    # tcp_reset() runs on an orphan in FIN_WAIT that gets data after shutting its read side
    # (the peer wrote after our close): tcp_receive_reset fires, the socket is destroyed, and
    # only then the RST it sends is reported (TCP_ABORT_ON_DATA). No RST arrived: such a
    # receipt, and what follows it on that socket, waits this long (kernel time) for its own
    # socket's send_reset, which drops it; otherwise it is an RST received after all.
    ORPHAN_WAIT_NS = 10_000_000

    def _hold(self, ev: Event) -> bool:
        if ev.kind == "recv_reset" and ev.has("orphan") and ev.state in ("FIN_WAIT1", "FIN_WAIT2"):
            self._held[(ev.netns, ev.sk)] = [ev]
            return True
        if not ev.sk and ev.kind == "closer" and ev.has("orphan"):
            key = next((k for k, evs in self._held.items() if evs[0].tuple == ev.tuple and k[0] == ev.netns), None)
        else:
            key = (ev.netns, ev.sk)
        held = self._held.get(key) if ev.sk or ev.kind == "closer" else None
        if held is None:
            return False
        if ev.kind == "send_reset" and ev.has("passive") and ev.tuple == held[0].tuple:
            del self._held[key]  # the abort on data: its receipt was not an RST received
            self.stats["not_received"] += 1
            return False
        held.append(ev)
        return True

    def _release_held(self, now_ns: int, everything: bool = False) -> list[Incident]:
        out: list[Incident] = []
        for key in [k for k, evs in self._held.items() if everything or now_ns - evs[0].ts_ns > self.ORPHAN_WAIT_NS]:
            for ev in self._held.pop(key):
                out += self._handle(ev)
        return out

    def _handle(self, ev: Event) -> list[Incident]:
        handler = self._handlers.get(ev.kind)
        if handler is None:
            handler = self._handlers[ev.kind] = getattr(self, "_on_" + ev.kind, False)
        touched = handler(ev) if handler else None
        if touched is None:
            return []
        out = []
        for inc in touched if isinstance(touched, list) else [touched]:
            if inc.id not in self.open:
                self.stats["late"] += 1  # after its report; counted, not reported again
                continue
            inc.last_ns = max(inc.last_ns, ev.ts_ns)
            if inc.complete(self._socket_open(inc)):
                out.append(self._finish(inc))
        return out

    def tick(self, now_ns: int) -> list[Incident]:
        """Report incidents nothing has happened to for settle_ns, or for hold_ns when the
        other side's story may still go on (it holds its socket, or it got a FIN and may write)."""
        released = self._release_held(now_ns) if self._held else []
        done = [i for i in self.open.values() if self._due(i, now_ns - i.last_ns)]
        return released + [self._finish(i) for i in sorted(done, key=lambda i: i.first_ns)]
        return [self._finish(i) for i in sorted(done, key=lambda i: i.first_ns)]

    def _due(self, inc: Incident, quiet_ns: int) -> bool:
        if quiet_ns < self.settle_ns:
            return False
        if quiet_ns >= self.hold_ns:
            return True
        # A busy or throttled host delays the victim's next call by seconds: reporting at the
        # settle time dropped its errors and SIGPIPE as late events (tests/integration/
        # test_under_load.py). Its story has ended when its socket is freed or it died.
        sides = [s for s in (inc.victim, inc.owner) if s is not None]
        if sides:
            if inc.victim is not None and not inc.victim.closed_before_reset and self._socket_open(inc):
                return False  # died, and its files are being closed: the socket's end follows
            return all(s.closed or s.closed_before_reset or s.exit_signal is not None for s in sides)
        return inc.ended_with != "FIN"  # a killed process's FIN: the peer may still write

    def _socket_open(self, inc: Incident) -> bool:
        """The victim's socket is still tracked: its end (its owner's close, or the exit's closing
        of files, which the kernel does after the exit event) has not been seen yet. Whether the
        report says the victim closed must not depend on when user space read the two events."""
        return (
            inc.victim_sk is not None
            and inc.victim is not None
            and not inc.victim.closed
            and inc.victim_sk in self.socks
        )

    def flush(self) -> list[Incident]:
        released = self._release_held(0, everything=True) if self._held else []
        return released + [self._finish(i) for i in sorted(self.open.values(), key=lambda i: i.first_ns)]

    def run(self, events: Iterable[Event]) -> Iterator[Incident]:
        """Replay a recorded stream (sorted here) and yield every incident."""
        for ev in sorted(events, key=lambda e: e.ts_ns):
            yield from self.tick(ev.ts_ns)
            yield from self.feed(ev)
        yield from self.flush()

    # -- incident bookkeeping ----------------------------------------------------
    def _take_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def _new(self, kind: str, ev: Event) -> Incident:
        inc = Incident(
            id=self._take_id(), kind=kind, first_ns=ev.ts_ns, last_ns=ev.ts_ns, family=ev.family, netns=ev.netns
        )
        self.open[inc.id] = inc
        return inc

    def _set_culprit_side(self, inc: Incident, ev: Event) -> None:
        inc.laddr, inc.lport, inc.raddr, inc.rport = ev.tuple
        inc.family, inc.netns = ev.family, ev.netns
        if ev.ctx == "task" and not inc.culprit_pid:
            inc.culprit_pid, inc.culprit_comm = ev.pid, ev.comm
            inc.culprit_cgroup = ev.cgroup
        inc.culprit_ctx = inc.culprit_ctx or ev.ctx
        self.socks.put(ev, inc)
        self.by_tuple[ev.tuple] = inc

    def _finish(self, inc: Incident) -> Incident:
        self.open.pop(inc.id, None)
        # socks keeps its entries until the sockets are freed, so that late events on
        # them are recognised (and counted) instead of opening new incidents.
        for table in (self.by_tuple, self.by_peer, self.sigpipe_tids):
            table.drop(inc)
        if inc.laddr:
            self.recent[(inc.netns, (inc.laddr, inc.lport, inc.raddr, inc.rport))] = inc
            while len(self.recent) > KILLED_MEMORY:
                self.recent.popitem(last=False)
        for who in (inc.victim, inc.owner):
            if who is not None and not who.pid and self.owner_of and who.ino:
                found = self.owner_of(who.ino)
                if found:
                    who.pid, who.comm = found
        if self.cgroup_path:
            for cg in (inc.culprit_cgroup, inc.victim and inc.victim.cgroup, inc.owner and inc.owner.cgroup):
                if cg and cg not in inc.cgroup_paths:
                    inc.cgroup_paths[cg] = self.cgroup_path(cg)
        inc.kind = inc.classify()
        inc.unknown = {
            f: f"this kernel lacks {loss.what}" for loss in self.lacks for f in UNKNOWN.get(loss.key, _nothing)(inc)
        }
        self.stats["incidents"] += 1
        return inc

    def _discard(self, inc: Incident) -> None:
        """Forget an incident that turned out not to be one (never reported)."""
        self.open.pop(inc.id, None)
        for table in (self.by_tuple, self.by_peer, self.sigpipe_tids):
            table.drop(inc)
        if inc.victim_sk is not None:
            self.socks.forget(inc.victim_sk)

    def _victim_of(self, ev: Event) -> Incident | None:
        inc = self.socks.get(ev)
        if inc is not None and inc.victim_sk == (ev.netns, ev.sk):
            return inc
        return None

    def _note_task(self, who: Victim, ev: Event) -> None:
        if ev.ctx == "task" and not who.pid:
            who.pid, who.comm, who.cgroup = ev.pid, ev.comm, ev.cgroup

    def _look_up_owner(self, who: Victim) -> None:
        """Name a suffering socket's owner from /proc as soon as its RST is seen, while the
        owner most likely still holds it (its own later events in task context name it too)."""
        if not who.pid and who.ino and self.owner_of:
            found = self.owner_of(who.ino)
            if found:
                who.pid, who.comm = found

    def _attach_victim(self, inc: Incident, ev: Event) -> None:
        inc.victim = Victim(netns=ev.netns, laddr=ev.laddr, lport=ev.lport, state=ev.state, ino=ev.ino)
        inc.victim_sk = (ev.netns, ev.sk)
        self.socks.put(ev, inc)
        self._note_task(inc.victim, ev)

    @staticmethod
    def _connect_failed(v: Victim, ev: Event) -> None:
        """connect() is not an I/O call the kernel reports: its error is the socket's sk_err."""
        if not any(e["call"] == "connect" for e in v.errors):
            v.errors.append({"call": "connect", "errno": ev.err, "ts_ns": ev.ts_ns, "pid": None, "tid": None})

    def _remembered_killer(self, inc: Incident, tup: tuple, netns: int | None = None) -> None:
        """A peer's RST from a socket that a killed process had closed with FIN: name it."""
        found = self.killed.get(tup)
        if found and not inc.culprit_pid and (netns is None or found[4] == netns):
            inc.culprit_pid, inc.culprit_comm, inc.culprit_signal = found[:3]
            inc.cause, inc.ended_with = "process-killed", "FIN"

    # -- event handlers -----------------------------------------------------------
    def _on_close(self, ev: Event) -> Incident | None:
        key = (ev.netns, ev.sk)
        inc = self.socks.get(ev)
        if inc is not None and inc.victim_sk == key:
            # The suffering socket closing (after the RST, or as the timeout's end).
            v = inc.victim
            assert v is not None
            self._note_task(v, ev)
            if ev.err and not v.sk_err:
                v.sk_err = ev.err
            if ev.err and ev.oldstate == "SYN_SENT":
                self._connect_failed(v, ev)
            return inc
        cause = _close_cause(ev)
        if inc is not None:
            # The ending side's socket again: a reset sent first (keepalive, tcp_abort), or the
            # later end of a socket a dying task closed with FIN.
            if cause in ("timeout", "socket-destroyed") and inc.cause is None:
                self._apply_cause(inc, cause, ev)
            return inc
        if cause is None:
            return None
        if cause in ("refused", "reset"):
            # The victim side of an RST we did not see arrive (or one sent from elsewhere).
            inc = self.by_tuple.get(_reverse(ev.tuple))
            if inc is None or inc.victim is not None:
                inc = self._new("reset-received" if cause == "reset" else "connection-refused", ev)
                inc.laddr, inc.lport, inc.raddr, inc.rport = _reverse(ev.tuple)
                inc.reset_seen = True
                self.by_peer[ev.tuple] = inc
            self._attach_victim(inc, ev)
            v = inc.victim
            assert v is not None
            v.state = v.state if v.state not in ("", "CLOSE") else ev.oldstate
            v.sk_err = ev.err
            if ev.oldstate == "SYN_SENT":
                self._connect_failed(v, ev)
            return inc
        inc = self._new(cause, ev)
        self._set_culprit_side(inc, ev)
        self._apply_cause(inc, cause, ev)
        return inc

    def _apply_cause(self, inc: Incident, cause: str, ev: Event) -> None:
        inc.cause = cause
        inc.state = inc.state or ev.oldstate
        inc.close_ns = ev.ts_ns
        if cause == "timeout":
            # Nobody here ended it: the peer went silent. The owner of this socket suffers.
            inc.culprit_pid, inc.culprit_comm = 0, ""
            inc.retransmissions, inc.probes = ev.retrans, ev.probes
            inc.unanswered_ms = ev.span_ms or None
            inc.reset_seen = True
            self._attach_victim(inc, ev)
            v = inc.victim
            assert v is not None
            v.state, v.sk_err = ev.oldstate, ev.err
            if ev.oldstate == "SYN_SENT":
                self._connect_failed(v, ev)
            return
        if cause == "socket-destroyed":
            if ev.ctx == "task":
                inc.culprit_pid, inc.culprit_comm = ev.pid, ev.comm
                inc.culprit_cgroup = ev.cgroup
            inc.owner = Victim(
                netns=ev.netns, laddr=ev.laddr, lport=ev.lport, state=ev.oldstate, sk_err=ev.err, ino=ev.ino
            )
            return
        inc.bytes_discarded = ev.bytes
        if cause == "process-killed":
            inc.culprit_signal = ev.signal
            inc.ended_with = "RST" if ev.bytes or ev.has("linger0") else "FIN"
            if inc.ended_with == "FIN":
                self.killed[ev.tuple] = (ev.pid, ev.comm, ev.signal, ev.ts_ns, ev.netns)
                while len(self.killed) > KILLED_MEMORY:
                    self.killed.popitem(last=False)

    def _on_send_reset(self, ev: Event) -> Incident | None:
        inc = self.socks.get(ev) if ev.sk and not ev.has("nosk") else None
        if inc is not None and inc.victim_sk == (ev.netns, ev.sk) and ev.has("passive") and not inc.victim.errors:
            # Data reached this socket after it shut its read side (an orphan in FIN_WAIT):
            # tcp_reset() on it fired tcp_receive_reset although no RST came, and now it
            # answers with one (TCP_ABORT_ON_DATA). It is the sender, not a victim.
            self._discard(inc)
            inc = None
        if inc is None:
            # A reset from the same host for a connection already reported (a killed process's
            # socket answering from TIME_WAIT): same tuple, same namespace.
            inc = self.by_tuple.get(ev.tuple)
            if inc is not None and (inc.netns != ev.netns or ev.ts_ns - inc.last_ns > self.match_window_ns):
                inc = None
            if inc is not None and inc.reset_seen and ev.has("passive"):
                # A later RST of the same connection (the rest of a burst, answered by the
                # TIME_WAIT socket and then by the listener): the same incident.
                inc.resets += 1
                return inc
            if inc is None:
                done = self.recent.get((ev.netns, ev.tuple))
                if done is not None and ev.ts_ns - done.last_ns <= self.match_window_ns:
                    done.resets += 1
                    return done  # already reported: counted as late
        if inc is None:
            peer = self.by_peer.get(_reverse(ev.tuple))
            if peer is not None and ev.ts_ns - peer.last_ns <= self.match_window_ns:
                inc = peer
            else:
                inc = self._new("passive-reset" if ev.has("passive") else "active-reset", ev)
            if not ev.has("nosk"):
                self._set_culprit_side(inc, ev)
            else:
                inc.laddr, inc.lport, inc.raddr, inc.rport = ev.tuple
                inc.netns = ev.netns
                self.by_tuple[ev.tuple] = inc
            inc.state = inc.state or ev.state
            inc.bytes_discarded = inc.bytes_discarded or ev.bytes
            self._remembered_killer(inc, ev.tuple, ev.netns)
        inc.reason = ev.reason
        inc.reset_ns = ev.ts_ns
        inc.reset_seen = True
        inc.resets += 1
        inc.reset_passive = ev.has("passive")
        inc.reset_nosk = ev.has("nosk")
        inc.reset_state = "" if ev.state in ("", "UNKNOWN") else ev.state
        return inc

    def _on_recv_reset(self, ev: Event) -> Incident | None:
        inc = self._victim_of(ev)
        if inc is not None:
            return inc
        inc = self.by_tuple.get(_reverse(ev.tuple))
        if (
            inc is None
            or inc.victim is not None
            or ev.ts_ns - inc.last_ns > self.match_window_ns
            # A FIN end shows at the peer as CLOSE_WAIT; still ESTABLISHED, it never got
            # that FIN, so this RST comes from elsewhere (the host rebooted, say).
            or (inc.ended_with == "FIN" and ev.state == "ESTABLISHED")
        ):
            inc = self._new("reset-received", ev)
            inc.laddr, inc.lport, inc.raddr, inc.rport = _reverse(ev.tuple)
            self.by_peer[ev.tuple] = inc
            # Nobody here sent it (or we cannot see the sender): do not wait for it.
            inc.reset_seen = True
            if ev.state != "ESTABLISHED":  # as above: a FIN reached this socket first
                self._remembered_killer(inc, _reverse(ev.tuple))
        self._attach_victim(inc, ev)
        # tcp_reset(): the error the socket's owner gets next (the kernel reports no separate
        # event for it); connect() gets it at once.
        v = inc.victim
        assert v is not None
        v.unread_at_reset, v.unacked_at_reset = ev.bytes, ev.unacked
        self._look_up_owner(v)
        v.sk_err = {"SYN_SENT": "ECONNREFUSED", "CLOSE_WAIT": "EPIPE"}.get(ev.state, "ECONNRESET")
        if ev.state == "SYN_SENT":
            self._connect_failed(v, replace(ev, err="ECONNREFUSED"))
        return inc

    def _on_sk_error(self, ev: Event) -> Incident | None:
        inc = self._victim_of(ev)
        if inc is not None:
            inc.victim.sk_err = inc.victim.sk_err or ev.err  # type: ignore[union-attr]
            self._note_task(inc.victim, ev)  # type: ignore[arg-type]
        return inc

    def _on_io_error(self, ev: Event) -> Incident | None:
        inc = self._victim_of(ev)
        who: Victim | None = inc.victim if inc is not None else None
        if inc is None:
            inc = self.socks.get(ev)
            if inc is not None:
                if inc.owner is None:
                    return inc  # the culprit's own socket: its owner already knows
                who = inc.owner  # someone else ended this socket: its owner suffers
            else:
                self.stats["unmatched"] += 1
                inc = self._new("connection-error", ev)
                inc.laddr, inc.lport, inc.raddr, inc.rport = _reverse(ev.tuple)
                inc.reset_seen = True
                self._attach_victim(inc, ev)
                who = inc.victim
        assert who is not None
        self._note_task(who, ev)
        call = "write" if ev.has("send") else "read"
        who.errors.append({"call": call, "errno": ev.err, "ts_ns": ev.ts_ns, "pid": ev.pid, "tid": ev.tid})
        if ev.has("send") and ev.err == "EPIPE" and who.sigpipe in (None, "none"):
            if ev.sigpipe is None:
                who.sigpipe = "none"
            elif ev.sigpipe == "delivered":
                who.sigpipe = "delivered"
                self.sigpipe_tids[ev.tid] = inc
            else:
                who.sigpipe = ev.sigpipe
        return inc

    def _on_sig_handled(self, ev: Event) -> Incident | None:
        inc = self.sigpipe_tids.pop(ev.tid, None)
        if inc is not None:
            for who in (inc.victim, inc.owner):
                if who is not None and who.sigpipe == "delivered":
                    who.sigpipe = "handled"
        return inc

    def _on_exit(self, ev: Event) -> list[Incident]:
        touched = []
        for inc in list(self.open.values()):
            for who in (inc.victim, inc.owner):
                if who is not None and who.pid == ev.pid:
                    who.exit_signal = ev.code & 0x7F
                    if who.sigpipe == "delivered" and who.exit_signal == 13:
                        who.sigpipe = "killed"
                    touched.append(inc)
        return touched

    def _on_destroy(self, ev: Event) -> Incident | None:
        key = (ev.netns, ev.sk)
        inc = self.socks.pop(ev)
        who = None
        if inc is not None and inc.victim_sk == key and inc.victim is not None:
            who = inc.victim
        elif inc is not None and inc.owner is not None:
            who = inc.owner
        if who is not None:
            # Freed by its owner's own close() (or exit): that names the owner even when
            # none of its calls failed.
            self._note_task(who, ev)
            who.closed = True
            who.unread_at_close = ev.bytes
        return inc

    def _on_closer(self, ev: Event) -> Incident | None:
        """The kernel remembered who closed this connection with FIN before the RST."""
        if ev.has("orphan"):
            # The side that got the RST had been closed by its owner, who may be gone: name it.
            for cand in (self.by_tuple.get(_reverse(ev.tuple)), self.by_peer.get(ev.tuple)):
                v = cand.victim if cand is not None else None
                if v is not None and (v.netns, v.laddr, v.lport) == (ev.netns, ev.laddr, ev.lport):
                    if not v.pid:
                        v.pid, v.comm, v.cgroup = ev.pid, ev.comm, ev.cgroup
                    v.closed_before_reset = True  # nothing it does can fail any more
                    return cand
            return None
        inc = self.by_tuple.get(ev.tuple)
        if inc is None or inc.netns != ev.netns:
            # No RST from the closed side seen (yet, or at all before 6.10): the peer's.
            inc = self.by_peer.get(_reverse(ev.tuple))
        if inc is None:
            inc = self.recent.get((ev.netns, ev.tuple))
        if inc is None or inc.closer_seen:
            return inc
        inc.closer_seen = True
        inc.close_to_reset_ms, inc.idle_before_close_ms = ev.ago_ms, ev.span_ms
        if not inc.culprit_pid:
            inc.culprit_pid, inc.culprit_comm, inc.culprit_ctx = ev.pid, ev.comm, "task"
        if inc.culprit_pid == ev.pid and not inc.culprit_cgroup:
            inc.culprit_cgroup = ev.cgroup
        if inc.close_ns is None:
            inc.close_ns = ev.ts_ns - ev.ago_ms * 1_000_000
        return inc

    def _on_cwait_overdue(self, ev: Event) -> Incident:
        """A socket the periodic sweep found in CLOSE_WAIT past the threshold: reported at once."""
        age_ns = None if ev.has("noage") else ev.span_ms * 1_000_000
        inc = Incident(
            id=self._take_id(),
            kind="close-wait",
            first_ns=ev.ts_ns - (age_ns or 0),
            last_ns=ev.ts_ns,
            family=ev.family,
            netns=ev.netns,
            fixed_kind=True,
            state="CLOSE_WAIT",
        )
        inc.laddr, inc.lport, inc.raddr, inc.rport = ev.tuple
        if ev.pid:
            inc.culprit_pid, inc.culprit_comm = ev.pid, ev.comm
            inc.culprit_cgroup = ev.cgroup
        inc.close_wait = {"age_ns": age_ns, "closed": False, "preexisting": ev.has("preexisting"), "unread": ev.bytes}
        self.open[inc.id] = inc
        return inc

    def _on_cwait_end(self, ev: Event) -> Incident:
        """A socket finally left CLOSE_WAIT after at least the threshold: reported at once."""
        inc = Incident(
            id=self._take_id(),
            kind="close-wait",
            first_ns=ev.ts_ns - ev.span_ms * 1_000_000,
            last_ns=ev.ts_ns,
            family=ev.family,
            netns=ev.netns,
            fixed_kind=True,
            state="CLOSE_WAIT",
            close_ns=ev.ts_ns,
        )
        inc.laddr, inc.lport, inc.raddr, inc.rport = ev.tuple
        if ev.ctx == "task":
            inc.culprit_pid, inc.culprit_comm = ev.pid, ev.comm
            inc.culprit_cgroup = ev.cgroup
        inc.close_wait = {
            "age_ns": ev.span_ms * 1_000_000,
            "closed": True,
            "preexisting": ev.has("preexisting"),
            "unread": ev.bytes,
        }
        self.open[inc.id] = inc
        return inc
