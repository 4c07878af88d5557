"""`rsttrace top`: a live overview for reset storms, redrawn every second (q or Ctrl-C quits).

TopModel is the whole aggregation, pure (no terminal, no clock of its own: every call says
what time it is), so it is tested with exact numbers; render() turns a snapshot into a rich
renderable that fits 80x24; run_top() wires both to a live session.
"""

from __future__ import annotations

import os
import select
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

NS = 1_000_000_000
MAX_PROCS = 1000  # processes remembered per side; past it the least active half is forgotten
ROWS = 5  # rows per table: 80x24 holds two tables side by side, twice, with a title and a footer


@dataclass
class Proc:
    pid: int | None
    comm: str
    incidents: int = 0
    bytes: int = 0
    sigpipe_deaths: int = 0


def _key(side: dict | None) -> tuple[int | None, str] | None:
    if not side:
        return None
    return side.get("pid"), side.get("comm") or "?"


def _sock_key(inc: dict) -> tuple:
    loc, rem = inc.get("local") or {}, inc.get("remote") or {}
    return (inc.get("netns"), loc.get("addr"), loc.get("port"), rem.get("addr"), rem.get("port"))


@dataclass
class TopModel:
    """Incidents in, numbers out. Times are CLOCK_MONOTONIC ns (the clock of ts_ns)."""

    window_s: int = 5  # incidents per second: the mean over this many seconds
    started_ns: int = 0
    total: int = 0
    lost: int = 0
    kinds: Counter = field(default_factory=Counter)
    culprits: dict = field(default_factory=dict)
    victims: dict = field(default_factory=dict)
    bytes: int = 0
    sigpipe_deaths: int = 0

    def __post_init__(self) -> None:
        self._recent: deque[tuple[int, str]] = deque()  # (ns, kind) within the window
        self._cwait: dict[tuple, tuple[tuple[int | None, str], int]] = {}  # socket -> (owner, since)

    # -- input -----------------------------------------------------------------------------
    def incident(self, inc: dict, now_ns: int) -> None:
        kind = inc.get("kind") or "?"
        self.total += 1
        self.kinds[kind] += 1
        self._recent.append((now_ns, kind))
        self._prune(now_ns)
        nbytes = max(int(inc.get("bytes_discarded") or 0), 0)
        victim = inc.get("victim") or None
        died = bool(victim and victim.get("sigpipe") == "killed")
        self.bytes += nbytes
        self.sigpipe_deaths += died
        if kind == "close-wait":
            self._close_wait(inc)
            return  # a leak, not a reset: counted by kind and in the CLOSE_WAIT table
        for table, side in ((self.culprits, inc.get("culprit")), (self.victims, victim)):
            k = _key(side)
            if k is None:
                continue
            p = table.get(k)
            if p is None:
                p = table[k] = Proc(*k)
                if len(table) > MAX_PROCS:
                    self._forget(table)
            p.incidents += 1
            p.bytes += nbytes
            p.sigpipe_deaths += died

    def _close_wait(self, inc: dict) -> None:
        key = _sock_key(inc)
        if inc.get("close_wait_closed"):
            self._cwait.pop(key, None)
            return
        owner = _key(inc.get("culprit")) or (None, "?")
        ts = inc.get("timestamps") or {}
        age = inc.get("close_wait_age_ns")
        last = ts.get("last_ns")
        since = last - age if age is not None and last is not None else ts.get("first_ns") or 0
        self._cwait.setdefault(key, (owner, since))

    def lost_total(self, total: int) -> None:
        self.lost = max(self.lost, int(total))

    @staticmethod
    def _forget(table: dict) -> None:
        keep = sorted(table.items(), key=lambda kv: kv[1].incidents, reverse=True)[: MAX_PROCS // 2]
        table.clear()
        table.update(keep)

    def _prune(self, now_ns: int) -> None:
        horizon = now_ns - self.window_s * NS
        while self._recent and self._recent[0][0] <= horizon:
            self._recent.popleft()

    # -- output ----------------------------------------------------------------------------
    def rates(self, now_ns: int) -> dict[str, float]:
        """Incidents per second by kind over the last window_s seconds (up to now)."""
        self._prune(now_ns)
        c = Counter(kind for _t, kind in self._recent)
        return {k: n / self.window_s for k, n in c.items()}

    def close_wait_owners(self, now_ns: int) -> list[tuple[tuple[int | None, str], int, int]]:
        """[(owner, sockets, oldest age ns)], most sockets first."""
        by: dict = {}
        for owner, since in self._cwait.values():
            n, oldest = by.get(owner, (0, now_ns))
            by[owner] = (n + 1, min(oldest, since))
        rows = [(o, n, max(now_ns - since, 0)) for o, (n, since) in by.items()]
        return sorted(rows, key=lambda r: (-r[1], -r[2], str(r[0])))

    @staticmethod
    def top(table: dict, n: int = ROWS) -> list[Proc]:
        return sorted(table.values(), key=lambda p: (-p.incidents, -p.bytes, p.comm, p.pid or 0))[:n]

    def snapshot(self, now_ns: int) -> dict:
        rates = self.rates(now_ns)
        return {
            "up_s": max(now_ns - self.started_ns, 0) / NS if self.started_ns else 0.0,
            "total": self.total,
            "lost": self.lost,
            "bytes": self.bytes,
            "sigpipe_deaths": self.sigpipe_deaths,
            "window_s": self.window_s,
            "rate": sum(rates.values()),
            "kinds": sorted(
                ((k, rates.get(k, 0.0), n) for k, n in self.kinds.items()), key=lambda r: (-r[1], -r[2], r[0])
            ),
            "culprits": self.top(self.culprits),
            "victims": self.top(self.victims),
            "close_wait": self.close_wait_owners(now_ns),
        }


# -- drawing ---------------------------------------------------------------------------------


def _who(pid, comm: str, width: int = 18) -> str:
    text = f"{comm}[{pid}]" if pid is not None else comm
    return text if len(text) <= width else text[: width - 1] + "~"


def _bytes(n: int) -> str:
    for unit in ("", "K", "M", "G"):
        if n < 10_000 or unit == "G":
            return f"{n}{unit}"
        n //= 1000
    return str(n)  # pragma: no cover


def _age(ns: int) -> str:
    s = ns // NS
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    return f"{s // 3600}h"


def _table(title: str, columns: list[tuple[str, str]]) -> Table:
    t = Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        padding=(0, 1, 0, 0),
        pad_edge=False,
        show_edge=False,
        expand=True,
        title_style="bold",
    )
    for i, (name, justify) in enumerate(columns):
        # The first column (a name) takes what is left; the numbers get their header's width.
        if i == 0:
            t.add_column(name, justify=justify, no_wrap=True, overflow="ellipsis", ratio=1)
        else:
            t.add_column(
                name,
                justify=justify,
                no_wrap=True,
                overflow="ellipsis",
                ratio=None,
                min_width=max(len(name), 4),
                max_width=max(len(name), 4),
            )
    return t


def _procs(title: str, procs: list[Proc]) -> Table:
    t = _table(title, [("process", "left"), ("inc", "right"), ("bytes", "right"), ("SIGPIPE", "right")])
    for p in procs:
        t.add_row(_who(p.pid, p.comm), str(p.incidents), _bytes(p.bytes), str(p.sigpipe_deaths))
    return t


def render(snap: dict, note: str = "") -> Group:
    head = Text.assemble(
        ("rsttrace top", "bold"),
        f"  {snap['total']} incidents, {snap['rate']:.1f}/s  bytes discarded {_bytes(snap['bytes'])}"
        f"  SIGPIPE deaths {snap['sigpipe_deaths']}  lost ",
        (str(snap["lost"]), "bold red" if snap["lost"] else ""),
        no_wrap=True,
        overflow="ellipsis",
    )
    kinds = _table(f"incidents/s (last {snap['window_s']}s)", [("kind", "left"), ("/s", "right"), ("total", "right")])
    for k, rate, n in snap["kinds"][:ROWS]:
        kinds.add_row(k, f"{rate:.1f}", str(n))
    cw = _table("CLOSE_WAIT owners", [("owner", "left"), ("sockets", "right"), ("oldest", "right")])
    for (pid, comm), n, age in snap["close_wait"][:ROWS]:
        cw.add_row(_who(pid, comm), str(n), _age(age))
    grid1 = Table.grid(expand=True, padding=(0, 1))
    grid1.add_column(ratio=1)
    grid1.add_column(ratio=1)
    grid1.add_row(kinds, cw)
    grid2 = Table.grid(expand=True, padding=(0, 1))
    grid2.add_column(ratio=1)
    grid2.add_column(ratio=1)
    grid2.add_row(_procs("top culprits", snap["culprits"]), _procs("top victims", snap["victims"]))
    foot = Text(note or "q or Ctrl-C quits", style="dim", no_wrap=True, overflow="ellipsis")
    return Group(head, grid1, grid2, foot)


# -- the live command ------------------------------------------------------------------------


class _Keys:
    """q from a terminal's stdin, read in cbreak mode by a thread; restored on stop."""

    def __init__(self, on_quit: Callable[[], None]) -> None:
        self.on_quit = on_quit
        self.fd = sys.stdin.fileno() if sys.stdin and sys.stdin.isatty() else None
        self.saved = None
        self.stopping = threading.Event()

    def start(self) -> None:
        if self.fd is None:
            return
        import termios
        import tty

        self.saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while not self.stopping.is_set():
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if ready:
                ch = os.read(self.fd, 1)
                if ch in (b"q", b"Q") or not ch:
                    self.on_quit()
                    return

    def stop(self) -> None:
        self.stopping.set()
        if self.saved is not None:
            import termios

            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)


def run_top(cfg, refresh_s: float = 1.0, window_s: int = 5, metrics=None, metrics_addr=None) -> int:
    from rich.console import Console
    from rich.live import Live

    from .errors import RsttraceError
    from .session import Session, Sinks

    model = TopModel(window_s=window_s, started_ns=time.monotonic_ns())
    notes: deque[str] = deque(maxlen=1)  # the latest line for people, shown at the bottom
    session = Session(cfg)
    console = Console()

    def on_incident(inc: dict) -> None:
        model.incident(inc, time.monotonic_ns())
        if metrics is not None:
            metrics.incident(inc)

    def on_lost(total: int) -> None:
        model.lost_total(total)
        if metrics is not None:
            metrics.lost_total(total)

    state = {"next": 0.0}
    # On a terminal a full-screen redraw every second; elsewhere (a pipe, a file) only the last
    # screen, at the end.
    live = Live(console=console, auto_refresh=False, screen=True, transient=True) if console.is_terminal else None

    def on_flush() -> None:
        now = time.monotonic()
        if live is not None and now >= state["next"]:
            state["next"] = now + refresh_s
            live.update(render(model.snapshot(time.monotonic_ns()), notes[-1] if notes else ""), refresh=True)

    session.sinks = Sinks(on_incident=on_incident, on_lost=on_lost, on_note=notes.append, on_flush=on_flush)
    session.install_signal_handlers()
    session.start()
    if metrics is not None:
        from .metrics import BpfProgStats

        metrics.bpf = BpfProgStats.from_bcc(session.loaded.bpf)
        try:
            metrics.serve(*metrics_addr)
        except OSError as e:
            session.stop()
            raise RsttraceError(f"cannot serve metrics on {metrics_addr[0]}:{metrics_addr[1]}: {e.strerror}") from None
    keys = _Keys(lambda: setattr(session, "exiting", True))
    try:
        keys.start()
        if live is None:
            session.run()
        else:
            with live:
                live.update(render(model.snapshot(time.monotonic_ns()), "starting"), refresh=True)
                session.run()
    finally:
        keys.stop()
        session.stop()
        if metrics is not None:
            metrics.shutdown()
    # What was on screen, left on the terminal (the alternate screen is gone).
    console.print(
        render(
            model.snapshot(time.monotonic_ns()),
            f"{model.total} incident(s); {getattr(session, 'final_stats', {}).get('lost', model.lost)} event(s) lost",
        )
    )
    return 0
