"""How incidents look: one-line chains for people, JSON objects for scripts, and the summary."""

from __future__ import annotations

import signal as _signal
from collections import Counter

from .correlate import IMPACTS
from .tracefile import dumps


def endpoint(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def signame(num: int | None) -> str:
    try:
        return _signal.Signals(num).name  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return f"signal {num}"


def seconds(ns_or_none: int | None, unit: int = 1_000_000_000) -> str:
    if ns_or_none is None:
        return "?"
    s = ns_or_none / unit
    if s < 60:
        return f"{s:.1f} s"
    m, s = divmod(int(s), 60)
    return f"{m}m{s:02d}s" if m < 60 else f"{m // 60}h{m % 60:02d}m"


def _ms(ms: int | None) -> str:
    """A span in ms as people read it: '12 ms' below a second, else as seconds()."""
    return f"{ms} ms" if ms is not None and ms < 1000 else seconds(ms, 1000)


def _who(side: dict | None, default: str = "?") -> str:
    if not side or not side.get("pid"):
        return default
    return f"{side.get('comm') or '?'}[{side['pid']}]"


def _errors(errors: list[dict]) -> list[str]:
    out: list[str] = []
    last, count = None, 0
    for e in errors + [None]:  # type: ignore[list-item]
        key = (e["call"], e["errno"]) if e else None
        if key == last:
            count += 1
            continue
        if last:
            out.append(f"{last[0]}: {last[1]}" + (f" (x{count})" if count > 1 else ""))
        last, count = key, 1
    return out


def _fate(v: dict) -> list[str]:
    parts = _errors(v.get("errors") or [])
    if v.get("sigpipe"):
        parts.append(f"SIGPIPE: {v['sigpipe']}")
    elif v.get("exit_signal"):
        parts.append(f"killed by {signame(v['exit_signal'])}")
    return parts


def _head(inc: dict) -> str:
    kind = inc["kind"]
    local = endpoint(inc["local"]["addr"], inc["local"]["port"])
    remote = endpoint(inc["remote"]["addr"], inc["remote"]["port"])
    conn = f"{local}<-{remote}"
    culprit = _who(inc.get("culprit"))
    reason = f" [{inc['reason']}]" if inc.get("reason") else ""
    if kind == "abort-on-close":
        return f"{culprit} closed {conn} with {inc['bytes_discarded']} unread bytes -> RST (abort on close)"
    if kind == "linger-zero":
        return f"{culprit} closed {conn} with SO_LINGER {{1, 0}} -> RST (linger-zero abort)"
    if kind == "process-killed":
        sig = signame((inc.get("culprit") or {}).get("signal"))
        if inc.get("ended_with") == "RST" or inc["bytes_discarded"]:
            end = f"RST, {inc['bytes_discarded']} unread bytes discarded"
        else:
            end = "FIN" + (f", then RST{reason}" if inc.get("reason") else "")
        return f"{culprit} killed by {sig}: {conn} ended with {end}"
    if kind == "linger2-abort":
        return f"{culprit} closed {conn} with TCP_LINGER2 < 0 -> RST (no FIN_WAIT2){reason}"
    if kind == "socket-destroyed":
        return f"{culprit} destroyed {conn} (tcp_abort, e.g. ss -K) -> RST"
    if kind == "write-after-close":
        resets = _resets(inc)
        if inc.get("close_to_reset_ms") is not None:
            # The kernel remembered the close: who, how idle the connection was, how long ago.
            idle = _ms(inc.get("idle_before_close_ms"))
            later = _ms(inc["close_to_reset_ms"])
            writer = _who(inc.get("victim"), "the peer")
            return (f"{culprit} closed {conn} (FIN) after {idle} idle; {later} later {writer} wrote "
                    f"-> RST{resets}{reason}")
        who = culprit if inc.get("culprit") else local
        return f"{who} had closed {conn}; the peer kept writing -> RST{resets}{reason}"
    if kind == "no-socket":
        return f"{local} has no socket for the connection from {remote} (restarted?) -> RST{reason}"
    if kind == "connection-refused":
        return f"{local} refused {remote}: nothing listening -> RST"
    if kind in ("retransmit-timeout", "keepalive-timeout"):
        conn = f"{local}->{remote}"
        if kind == "keepalive-timeout":
            probes = inc.get("probes")
            what = f"{probes} keepalive probe(s) unanswered" if probes else "keepalive unanswered"
            return f"{conn}: {what} -> RST (keepalive timeout), ETIMEDOUT"
        n = inc.get("retransmissions")
        span = inc.get("unanswered_ms")
        took = f" over {seconds(span, 1000)}" if span else ""
        return f"{conn}: peer silent, {n if n is not None else '?'} retransmission(s){took} -> ETIMEDOUT (no RST)"
    if kind == "close-wait":
        age = inc.get("close_wait_age_ns")
        age = "since before tracing started" if age is None else seconds(age)
        unread = inc.get("close_wait_unread")
        extra = f", {unread} unread bytes" if unread else ""
        if inc.get("close_wait_closed"):
            return f"{_who(inc.get('culprit'))} finally closed {conn} after {age} in CLOSE_WAIT{extra}"
        return f"{_who(inc.get('culprit'))} has not closed {conn}: CLOSE_WAIT {age}{extra}"
    if kind == "reset-received":
        return f"{local} reset {remote}{reason}"
    return f"{culprit} {conn} {inc['summary']}{reason}"


def _resets(inc: dict) -> str:
    n = inc.get("resets") or 0
    return f" x{n}" if n > 1 else ""


def _untroubled(v: dict) -> str:
    """What a side that got the RST did, when none of its calls failed."""
    got = "got the RST"
    if v.get("unacked_at_reset"):
        got += f" while sending ({v['unacked_at_reset']} bytes unacknowledged)"
    unread = v.get("unread_at_reset")
    if unread:
        got += f" with {unread} bytes unread"
    if v.get("closed"):
        left = v.get("unread_at_close")
        if unread and left == 0:
            done = "read them and closed"
        elif left:
            done = f"closed with {left} bytes unread"
        else:
            done = "closed"
    elif v.get("exit_signal"):
        done = f"was killed by {signame(v['exit_signal'])}"
    else:
        done = "still holds the socket"
    return f"{got}; {done} (no call failed)"


def chain_lines(inc: dict, explain: bool = False) -> list[str]:
    """The incident as text: the ending side, then who suffered (and, with explain, why/fix)."""
    lines = [_head(inc)]
    kind = inc["kind"]
    v = inc.get("victim")
    if kind == "close-wait":
        pass
    elif v is None:
        lines.append("  -> peer not seen on this host")
    else:
        parts = _fate(v)
        lines.append(f"  -> {_who(v)} " + (", ".join(parts) if parts else _untroubled(v)))
    owner = inc.get("owner")
    if owner is not None:
        parts = _fate(owner) or ["no call failed yet"]
        lines.append(f"  -> owner {_who(owner)} " + ", ".join(parts))
    if explain:
        lines.append(f"     why: {inc['explanation']}")
        lines.append(f"     fix: {inc['advice']}")
    return lines


def to_json(inc: dict) -> str:
    return dumps(inc)


def summary(incidents: list[dict] | Counter, stats: dict, impacts: Counter | None = None) -> list[str]:
    """`incidents`: the incidents, or just their count by kind (and `impacts` by impact)."""
    if isinstance(incidents, Counter):
        kinds = incidents
    else:
        kinds = Counter(i["kind"] for i in incidents)
        impacts = Counter(i.get("impact", "unknown") for i in incidents)
    lines = [f"{sum(kinds.values())} incident(s)" + (": " + ", ".join(f"{k} {n}" for k, n in kinds.most_common())
                                                 if kinds else "")]
    if impacts:
        lines.append("impact on the other side: " + ", ".join(
            f"{k} {impacts[k]}" for k in IMPACTS if impacts[k]))
    lines.append(
        f"events: {stats.get('emitted', 0)} received, {stats.get('lost', 0)} lost, "
        f"{stats.get('filtered', 0)} filtered in kernel, {stats.get('late', 0)} after their incident"
    )
    if stats.get("cwait_full"):
        lines.append(f"CLOSE_WAIT: the late close of {stats['cwait_full']} overdue socket(s) not followed (map full)")
    return lines
