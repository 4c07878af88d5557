"""Turn an ordered stream of Events into incidents: who reset what, what it cost, who suffered."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from .events import Event

NS = 1_000_000_000

# What a kernel reset reason means, as incident kind + words for people. The reason names
# come from the running kernel's BTF; the kind is derived from the close path where the
# kernel has no reason field (before 6.10).
KIND_TEXT = {
    "abort-on-close": (
        "closed with unread data -> RST (abort on close)",
        "the server closed while the peer's bytes sat unread in its receive queue, so Linux sent "
        "RST instead of FIN and the bytes were discarded",
        "read (drain) what the peer sent before close(), or shutdown(SHUT_WR) and drain until EOF "
        "(lingering close, as nginx does)",
    ),
    "linger-zero": (
        "closed with SO_LINGER {1, 0} -> RST (linger-zero abort)",
        "SO_LINGER with a zero timeout turns close() into an abort: RST, no FIN",
        "drop SO_LINGER {1, 0} unless an abortive close is really wanted",
    ),
    "reset-received": (
        "received RST",
        "the peer (not traced on this host) reset the connection",
        "trace the peer host too, or handle ECONNRESET/EPIPE (MSG_NOSIGNAL or SIGPIPE ignored)",
    ),
    "active-reset": (
        "sent RST",
        "this host reset the connection",
        "see the reason",
    ),
    "passive-reset": (
        "answered a segment with RST",
        "a segment arrived for a connection this host no longer has",
        "make the peer stop writing after close (close the socket when read returns 0)",
    ),
    "connection-error": (
        "connection error",
        "a TCP call failed with a connection error whose cause was not seen",
        "start rsttrace before the failure to see its cause",
    ),
}
REASON_KIND = {
    "TCP_ABORT_ON_CLOSE": "abort-on-close",
}
SIGPIPE_FATES = ("killed", "handled", "ignored", "none", "delivered")


@dataclass
class Victim:
    pid: int = 0
    comm: str = ""
    netns: int = 0
    laddr: str = ""
    lport: int = 0
    state: str = ""  # TCP state when the RST arrived
    sk_err: str = ""
    errors: list[dict] = field(default_factory=list)
    sigpipe: str | None = None
    exit_signal: int | None = None
    closed: bool = False
    ino: int = 0  # socket inode, to find the owner when it made no call

    def to_dict(self) -> dict:
        return {
            "pid": self.pid or None, "comm": self.comm or None, "netns": self.netns,
            "addr": self.laddr, "port": self.lport, "state": self.state or None,
            "sk_err": self.sk_err or None,
            "errors": self.errors, "sigpipe": self.sigpipe, "exit_signal": self.exit_signal,
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
    culprit_pid: int = 0
    culprit_comm: str = ""
    culprit_ctx: str = ""
    state: str = ""  # culprit socket's state before the reset
    bytes_discarded: int = 0
    close_ns: int | None = None
    reset_ns: int | None = None
    reset_seen: bool = False
    victim: Victim | None = None
    victim_sk: tuple[int, int] | None = None

    @property
    def pending_signal(self) -> bool:
        return self.victim is not None and self.victim.sigpipe == "delivered"

    def complete(self) -> bool:
        """Nothing more is expected: the reset was seen and the victim's story has ended."""
        if not self.reset_seen or self.victim is None or self.pending_signal:
            return False
        return self.victim.closed or self.victim.exit_signal is not None

    def to_dict(self, wall_offset_ns: int = 0) -> dict:
        summary, explanation, advice = KIND_TEXT.get(self.kind, (self.kind, "", ""))
        return {
            "type": "incident",
            "id": self.id,
            "kind": self.kind,
            "reason": self.reason,
            "summary": summary,
            "explanation": explanation,
            "advice": advice,
            "culprit": (
                {"pid": self.culprit_pid, "comm": self.culprit_comm}
                if self.culprit_pid else None
            ),
            "bytes_discarded": self.bytes_discarded,
            "family": self.family,
            "netns": self.netns,
            "local": {"addr": self.laddr, "port": self.lport},
            "remote": {"addr": self.raddr, "port": self.rport},
            "state": self.state or None,
            "victim": self.victim.to_dict() if self.victim else None,
            "timestamps": {
                "first_ns": self.first_ns,
                "close_ns": self.close_ns,
                "reset_ns": self.reset_ns,
                "last_ns": self.last_ns,
                "wall_ns": self.first_ns + wall_offset_ns if wall_offset_ns else None,
            },
        }


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


class Correlator:
    """Feed events in timestamp order; completed incidents come out of feed() and tick().

    `settle_ns`: an incident is reported once its victim's story has ended (socket freed or
    process gone, SIGPIPE fate known) or when nothing happened to it for this long.
    `owner_of`: optional inode -> (pid, comm) resolver for victims that made no call.
    """

    def __init__(self, settle_ns: int = NS, owner_of: Callable[[int], tuple[int, str] | None] | None = None,
                 match_window_ns: int = 2 * NS) -> None:
        self.settle_ns = settle_ns
        self.match_window_ns = match_window_ns
        self.owner_of = owner_of
        self._next_id = 1
        self.open: dict[int, Incident] = {}
        self.socks: dict[tuple[int, int], Incident] = {}  # (netns, sk) -> incident, culprit or victim
        self.by_tuple: dict[tuple, Incident] = _Index()  # culprit-side tuple -> incident awaiting its peer
        self.by_peer: dict[tuple, Incident] = _Index()  # victim-side tuple -> incident awaiting its sender
        self.sigpipe_tids: dict[int, Incident] = _Index()
        self.stats = {"events": 0, "incidents": 0, "unmatched": 0, "late": 0}

    # -- public ---------------------------------------------------------------
    def feed(self, ev: Event) -> list[Incident]:
        self.stats["events"] += 1
        handler = getattr(self, "_on_" + ev.kind, None)
        touched = handler(ev) if handler else None
        if touched is None:
            return []
        out = []
        for inc in touched if isinstance(touched, list) else [touched]:
            if inc.id not in self.open:
                self.stats["late"] += 1  # after its report; counted, not reported again
                continue
            inc.last_ns = max(inc.last_ns, ev.ts_ns)
            if inc.complete():
                out.append(self._finish(inc))
        return out

    def tick(self, now_ns: int) -> list[Incident]:
        """Report incidents nothing has happened to for settle_ns."""
        done = [i for i in self.open.values() if now_ns - i.last_ns >= self.settle_ns]
        return [self._finish(i) for i in sorted(done, key=lambda i: i.first_ns)]

    def flush(self) -> list[Incident]:
        return [self._finish(i) for i in sorted(self.open.values(), key=lambda i: i.first_ns)]

    def run(self, events: Iterable[Event]) -> Iterator[Incident]:
        """Replay a recorded stream (sorted here) and yield every incident."""
        for ev in sorted(events, key=lambda e: e.ts_ns):
            yield from self.tick(ev.ts_ns)
            yield from self.feed(ev)
        yield from self.flush()

    # -- incident bookkeeping ----------------------------------------------------
    def _new(self, kind: str, ev: Event) -> Incident:
        inc = Incident(id=self._next_id, kind=kind, first_ns=ev.ts_ns, last_ns=ev.ts_ns,
                       family=ev.family, netns=ev.netns)
        self._next_id += 1
        self.open[inc.id] = inc
        return inc

    def _set_culprit_side(self, inc: Incident, ev: Event) -> None:
        inc.laddr, inc.lport, inc.raddr, inc.rport = ev.tuple
        inc.family, inc.netns = ev.family, ev.netns
        if ev.ctx == "task" and not inc.culprit_pid:
            inc.culprit_pid, inc.culprit_comm = ev.pid, ev.comm
        inc.culprit_ctx = inc.culprit_ctx or ev.ctx
        self.socks[(ev.netns, ev.sk)] = inc
        self.by_tuple[ev.tuple] = inc

    def _finish(self, inc: Incident) -> Incident:
        self.open.pop(inc.id, None)
        # socks keeps its entries until the sockets are freed, so that late events on
        # them are recognised (and counted) instead of opening new incidents.
        for table in (self.by_tuple, self.by_peer, self.sigpipe_tids):
            table.drop(inc)
        v = inc.victim
        if v is not None and not v.pid and self.owner_of and v.ino:
            owner = self.owner_of(v.ino)
            if owner:
                v.pid, v.comm = owner
        self.stats["incidents"] += 1
        return inc

    def _victim_of(self, ev: Event) -> Incident | None:
        inc = self.socks.get((ev.netns, ev.sk))
        if inc is not None and inc.victim_sk == (ev.netns, ev.sk):
            return inc
        return None

    def _note_victim_task(self, inc: Incident, ev: Event) -> None:
        assert inc.victim is not None
        if ev.ctx == "task" and not inc.victim.pid:
            inc.victim.pid, inc.victim.comm = ev.pid, ev.comm

    def _attach_victim(self, inc: Incident, ev: Event) -> None:
        inc.victim = Victim(netns=ev.netns, laddr=ev.laddr, lport=ev.lport, state=ev.state, ino=ev.ino)
        inc.victim_sk = (ev.netns, ev.sk)
        self.socks[(ev.netns, ev.sk)] = inc
        self._note_victim_task(inc, ev)

    # -- event handlers -----------------------------------------------------------
    def _on_close(self, ev: Event) -> Incident | None:
        inc = self.socks.get((ev.netns, ev.sk))
        if inc is not None and inc.victim_sk == (ev.netns, ev.sk):
            self._note_victim_task(inc, ev)
            return inc
        if ev.ctx != "task" or ev.err:
            return inc
        kind = "abort-on-close" if ev.bytes else "linger-zero" if ev.has("linger0") else None
        if kind is None:
            return inc
        if inc is None:
            inc = self._new(kind, ev)
        inc.kind = kind
        self._set_culprit_side(inc, ev)
        inc.state = ev.oldstate
        inc.bytes_discarded = ev.bytes
        inc.close_ns = ev.ts_ns
        return inc

    def _on_send_reset(self, ev: Event) -> Incident | None:
        inc = self.socks.get((ev.netns, ev.sk)) if ev.sk and not ev.has("nosk") else None
        if inc is None:
            peer = self.by_peer.get(_reverse(ev.tuple))
            if peer is not None and ev.ts_ns - peer.last_ns <= self.match_window_ns:
                inc = peer
                inc.kind = "passive-reset" if ev.has("passive") else "active-reset"
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
        if ev.reason and ev.reason in REASON_KIND and not ev.has("passive"):
            inc.kind = REASON_KIND[ev.reason]
        inc.reason = ev.reason
        inc.reset_ns = ev.ts_ns
        inc.reset_seen = True
        return inc

    def _on_recv_reset(self, ev: Event) -> Incident | None:
        inc = self._victim_of(ev)
        if inc is not None:
            return inc
        inc = self.by_tuple.get(_reverse(ev.tuple))
        if inc is None or inc.victim is not None or ev.ts_ns - inc.last_ns > self.match_window_ns:
            inc = self._new("reset-received", ev)
            inc.laddr, inc.lport, inc.raddr, inc.rport = _reverse(ev.tuple)
            self.by_peer[ev.tuple] = inc
            # Nobody here sent it (or we cannot see the sender): do not wait for it.
            inc.reset_seen = True
        self._attach_victim(inc, ev)
        return inc

    def _on_sk_error(self, ev: Event) -> Incident | None:
        inc = self._victim_of(ev)
        if inc is not None:
            inc.victim.sk_err = inc.victim.sk_err or ev.err  # type: ignore[union-attr]
            self._note_victim_task(inc, ev)
        return inc

    def _on_io_error(self, ev: Event) -> Incident | None:
        inc = self._victim_of(ev)
        if inc is None:
            inc = self.socks.get((ev.netns, ev.sk))
            if inc is not None:
                return inc  # the culprit's own socket: its owner already knows
            self.stats["unmatched"] += 1
            inc = self._new("connection-error", ev)
            inc.laddr, inc.lport, inc.raddr, inc.rport = _reverse(ev.tuple)
            inc.reset_seen = True
            self._attach_victim(inc, ev)
        v = inc.victim
        assert v is not None
        self._note_victim_task(inc, ev)
        call = "write" if ev.has("send") else "read"
        v.errors.append({"call": call, "errno": ev.err, "ts_ns": ev.ts_ns, "pid": ev.pid, "tid": ev.tid})
        if ev.has("send") and ev.err == "EPIPE" and v.sigpipe in (None, "none"):
            if ev.sigpipe is None:
                v.sigpipe = "none"
            elif ev.sigpipe == "delivered":
                v.sigpipe = "delivered"
                self.sigpipe_tids[ev.tid] = inc
            else:
                v.sigpipe = ev.sigpipe
        return inc

    def _on_sig_handled(self, ev: Event) -> Incident | None:
        inc = self.sigpipe_tids.pop(ev.tid, None)
        if inc is not None and inc.victim is not None:
            inc.victim.sigpipe = "handled"
        return inc

    def _on_exit(self, ev: Event) -> list[Incident]:
        touched = []
        for inc in list(self.open.values()):
            v = inc.victim
            if v is not None and v.pid == ev.pid:
                v.exit_signal = ev.code & 0x7F
                if v.sigpipe == "delivered" and v.exit_signal == 13:
                    v.sigpipe = "killed"
                touched.append(inc)
        return touched

    def _on_destroy(self, ev: Event) -> Incident | None:
        inc = self.socks.pop((ev.netns, ev.sk), None)
        if inc is not None and inc.victim_sk == (ev.netns, ev.sk) and inc.victim is not None:
            inc.victim.closed = True
        return inc
