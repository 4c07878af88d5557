"""How incidents look: one-line chains for people, JSON objects for scripts, and the summary."""

from __future__ import annotations

import json
from collections import Counter

WHAT = {
    "abort-on-close": "with {bytes} unread bytes -> RST (abort on close)",
    "linger-zero": "with SO_LINGER {{1, 0}} -> RST (linger-zero abort)",
}


def endpoint(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def _who(side: dict | None) -> str:
    if not side or not side.get("pid"):
        return "?"
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


def chain_lines(inc: dict) -> list[str]:
    """The incident as text: culprit line, then the victim's line."""
    local = endpoint(inc["local"]["addr"], inc["local"]["port"])
    remote = endpoint(inc["remote"]["addr"], inc["remote"]["port"])
    kind = inc["kind"]
    if kind in WHAT:
        head = f"{_who(inc['culprit'])} closed {local}<-{remote} " + WHAT[kind].format(
            bytes=inc["bytes_discarded"])
    elif kind == "reset-received":
        head = f"{remote} reset {local}"
    else:
        head = f"{_who(inc['culprit'])} {local}<-{remote} {inc['summary']}"
    if inc.get("reason") and kind not in WHAT:
        head += f" [{inc['reason']}]"
    v = inc.get("victim")
    if v is None:
        tail = "  -> peer not seen on this host"
    else:
        parts = _errors(v["errors"])
        if v.get("sigpipe"):
            parts.append(f"SIGPIPE: {v['sigpipe']}")
        elif v.get("exit_signal"):
            parts.append(f"killed by signal {v['exit_signal']}")
        if not parts:
            parts.append("no call failed yet")
        tail = f"  -> {_who(v)} " + ", ".join(parts)
    return [head, tail]


def to_json(inc: dict) -> str:
    return json.dumps(inc, separators=(",", ":"), sort_keys=False)


def summary(incidents: list[dict] | Counter, stats: dict) -> list[str]:
    """`incidents`: the incidents, or just their count by kind."""
    kinds = incidents if isinstance(incidents, Counter) else Counter(i["kind"] for i in incidents)
    lines = [f"{sum(kinds.values())} incident(s)" + (": " + ", ".join(f"{k} {n}" for k, n in kinds.most_common())
                                                 if kinds else "")]
    lines.append(
        f"events: {stats.get('emitted', 0)} received, {stats.get('lost', 0)} lost, "
        f"{stats.get('filtered', 0)} filtered in kernel, {stats.get('late', 0)} after their incident"
    )
    return lines
