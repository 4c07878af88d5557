"""Words and numbers as people read them: endpoints, signal names, spans of time, who."""

from __future__ import annotations

import signal as _signal


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


def ms(ms: int | None) -> str:
    """A span in ms as people read it: '12 ms' below a second, else as seconds()."""
    return f"{ms} ms" if ms is not None and ms < 1000 else seconds(ms, 1000)


def who(side: dict | None, default: str = "?") -> str:
    if not side or not side.get("pid"):
        return default
    return f"{side.get('comm') or '?'}[{side['pid']}]"
