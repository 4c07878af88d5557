"""How incidents look: one-line chains for people, JSON objects for scripts, and the summary."""

from __future__ import annotations

from collections import Counter

from .correlate import IMPACTS
from .kinds import head
from .textfmt import seconds, signame, who  # noqa: F401 (seconds: session's notes)
from .tracefile import dumps


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


def _untroubled(v: dict) -> str:
    """What a side that got the RST did, when none of its calls failed."""
    if v.get("closed_before_reset"):
        return "got the RST after it had closed its socket (no call failed)"
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
    lines = [head(inc)]
    kind = inc["kind"]
    v = inc.get("victim")
    if kind == "close-wait":
        pass
    elif v is None:
        lines.append("  -> peer not seen on this host")
    else:
        parts = _fate(v)
        lines.append(f"  -> {who(v)}{_where(inc, v)} " + (", ".join(parts) if parts else _untroubled(v)))
    owner = inc.get("owner")
    if owner is not None:
        parts = _fate(owner) or ["no call failed yet"]
        lines.append(f"  -> owner {who(owner)} " + ", ".join(parts))
    if explain:
        lines.append(f"     why: {inc['explanation']}")
        lines.append(f"     fix: {inc['advice']}")
        unknown = inc.get("unknown")
        if isinstance(unknown, dict) and unknown:
            lines.append(
                "     unknown here: "
                + "; ".join(
                    f"{why}: {', '.join(f for f, w in unknown.items() if w == why)}"
                    for why in dict.fromkeys(unknown.values())
                )
            )
    return lines


def _where(inc: dict, v: dict) -> str:
    """The victim's host, when traces of several hosts were merged and it is another one."""
    vhost, host = v.get("host"), inc.get("host")
    if not vhost or vhost == host:
        return ""
    skew = inc.get("clock_skew_ns")
    return f" on {vhost}" + (f" ({skew / 1e6:+.3f} ms)" if skew is not None else "")


def line(inc: dict) -> str:
    """The chain on one line (report, merge): the same words as chain_lines, and the impact."""
    lines = chain_lines(inc)
    impact = inc.get("impact")
    return " ".join([lines[0]] + [x.strip() for x in lines[1:]]) + (f" [{impact}]" if impact else "")


def to_json(inc: dict) -> str:
    return dumps(inc)


def summary(incidents: list[dict] | Counter, stats: dict, impacts: Counter | None = None) -> list[str]:
    """`incidents`: the incidents, or just their count by kind (and `impacts` by impact)."""
    if isinstance(incidents, Counter):
        kinds = incidents
    else:
        kinds = Counter(i["kind"] for i in incidents)
        impacts = Counter(i.get("impact", "unknown") for i in incidents)
    lines = [
        f"{sum(kinds.values())} incident(s)"
        + (": " + ", ".join(f"{k} {n}" for k, n in kinds.most_common()) if kinds else "")
    ]
    if impacts:
        lines.append("impact on the other side: " + ", ".join(f"{k} {impacts[k]}" for k in IMPACTS if impacts[k]))
    lines.append(
        f"events: {stats.get('emitted', 0)} received, {stats.get('lost', 0)} lost, "
        f"{stats.get('filtered', 0)} filtered in kernel, {stats.get('late', 0)} after their incident"
    )
    if stats.get("cwait_full"):
        lines.append(f"CLOSE_WAIT: the late close of {stats['cwait_full']} overdue socket(s) not followed (map full)")
    return lines
