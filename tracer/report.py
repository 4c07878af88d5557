"""`rsttrace report`: the incidents of recorded traces and what they add up to, without root or bcc."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timezone

from . import render
from .frame import incident_of_row, value

NO_SIGPIPE = "no SIGPIPE (no write after the reset)"
NO_VICTIM = "victim not traced"


_v = value  # a flat-row value (NA, NaN, NaT as None)


def _clock(ns) -> str:
    if ns is None:
        return "?"
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _wall_ns(row: dict) -> int | None:
    t = _v(row.get("time"))
    if t is not None and hasattr(t, "value"):
        return int(t.value)
    return _v(row.get("wall_ns"))


def incident_line(row: dict) -> str:
    """One incident (a flat row: tracer.frame.flatten_incident or a row of load().incidents), in
    the live chain's words (tracer/render.py), after its time and kind."""
    return f"{_clock(_wall_ns(row))} {_v(row.get('kind')) or '?'}: {render.line(incident_of_row(row))}"


def _fate(row: dict) -> str:
    if _v(row.get("victim_addr")) is None:
        return NO_VICTIM
    return _v(row.get("victim_sigpipe")) or NO_SIGPIPE


def _fates(inc):
    import pandas as pd

    sig = inc["victim_sigpipe"].astype(object).where(inc["victim_sigpipe"].notna(), NO_SIGPIPE)
    return pd.Series(sig.where(inc["victim_addr"].notna(), NO_VICTIM), index=inc.index, dtype=object)


def _count(series) -> dict:
    return {str(k): int(n) for k, n in series.value_counts(sort=True).items() if n}


def summarize(trace) -> dict:
    """What a report says, as plain JSON-able data (`rsttrace report --json`)."""
    inc = trace.incidents
    ev = trace.events
    fates = _fates(inc)
    culprit = inc["culprit_comm"].astype(object).fillna("?")
    by_culprit = []
    for comm, g in inc.groupby(culprit, sort=False):
        by_culprit.append(
            {
                "comm": comm,
                "incidents": len(g),
                "bytes_discarded": int(g["bytes_discarded"].sum()),
                "pids": int(g["culprit_pid"].nunique()),
            }
        )
    by_culprit.sort(key=lambda d: (-d["bytes_discarded"], -d["incidents"], d["comm"]))
    seen = inc["victim_addr"].notna()
    by_victim = []
    victims = inc[seen]
    for comm, g in victims.groupby(victims["victim_comm"].astype(object).fillna("?"), sort=False):
        by_victim.append(
            {"comm": comm, "incidents": len(g), "pids": int(g["victim_pid"].nunique()), "fates": _count(fates[g.index])}
        )
    by_victim.sort(key=lambda d: (-d["incidents"], d["comm"]))
    ages = inc["close_wait_age_ns"].dropna().astype("int64").sort_values().tolist()
    times = inc["time"].dropna()
    stats: Counter = Counter()
    for s in trace.summaries:
        for k, v in (s.get("stats") or {}).items():
            if isinstance(v, int):
                stats[k] += v
    return {
        "files": [str(f) for f in trace.files],
        "sources": [{k: s.get(k) for k in ("label", "host", "kernel", "file")} for s in trace.sources],
        "events": len(ev),
        "events_by_kind": _count(ev["kind"]) if "kind" in ev else {},
        "incidents": len(inc),
        "first_incident": _clock(int(times.min().value)) if len(times) else None,
        "last_incident": _clock(int(times.max().value)) if len(times) else None,
        "by_kind": _count(inc["kind"]),
        "by_impact": _count(inc["impact"]) if "impact" in inc else {},
        "by_culprit": by_culprit,
        "by_victim": by_victim,
        "bytes_discarded": int(inc["bytes_discarded"].sum()),
        "signal_fates": _count(fates),
        "close_wait_ages_ns": {
            "count": len(ages),
            "min": ages[0],
            "median": ages[len(ages) // 2],
            "max": ages[-1],
        }
        if ages
        else None,
        "cross_host": int(inc["clock_skew_ns"].notna().sum()),
        "recorder": dict(stats),
        "warnings": list(trace.warnings),
    }


def _secs(ns: int) -> str:
    s = ns / 1e9
    return f"{s:.3f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def text(summary: dict, rows: list[dict]) -> list[str]:
    """The report for people: incidents (the last ones, in `rows`) first, then the summary."""
    out = []
    for s in summary["sources"]:
        out.append(f"trace {s['label']}: host {s.get('host') or '?'}, kernel {s.get('kernel') or '?'}")
    out.append(
        f"{summary['incidents']} incident(s), {summary['events']} event(s)"
        + (f", {summary['first_incident']} .. {summary['last_incident']} UTC" if summary["first_incident"] else "")
    )
    if len(rows) < summary["incidents"]:
        out.append(f"  ({summary['incidents'] - len(rows)} earlier incident(s) not shown; --limit 0 shows all)")
    out += ["  " + incident_line(r) for r in rows]
    out.append("by kind: " + (", ".join(f"{k} {n}" for k, n in summary["by_kind"].items()) or "none"))
    if summary.get("by_impact"):  # traces before 0.2 have no impact
        out.append("by impact on the other side: " + ", ".join(f"{k} {n}" for k, n in summary["by_impact"].items()))
    out.append("by culprit (bytes discarded, incidents, processes):")
    out += [
        f"  {d['comm']}: {d['bytes_discarded']} bytes, {d['incidents']} incident(s), {d['pids']} pid(s)"
        for d in summary["by_culprit"]
    ] or ["  none"]
    out.append("by victim (incidents, fates):")
    out += [
        f"  {d['comm']}: {d['incidents']} incident(s): " + ", ".join(f"{f} {n}" for f, n in d["fates"].items())
        for d in summary["by_victim"]
    ] or ["  none"]
    out.append(f"bytes discarded: {summary['bytes_discarded']}")
    out.append("signal fates: " + (", ".join(f"{f} {n}" for f, n in summary["signal_fates"].items()) or "none"))
    ages = summary["close_wait_ages_ns"]
    out.append(
        "CLOSE_WAIT ages: "
        + (
            f"{ages['count']} socket(s), min {_secs(ages['min'])}, median "
            f"{_secs(ages['median'])}, max {_secs(ages['max'])}"
            if ages
            else "none in this trace"
        )
    )
    if summary["cross_host"]:
        out.append(f"cross-host incidents (merged): {summary['cross_host']}")
    rec = summary["recorder"]
    if rec:
        out.append(
            f"recorder: {rec.get('emitted', 0)} events received, {rec.get('lost', 0)} lost, "
            f"{rec.get('filtered', 0)} filtered in kernel"
        )
    return out


def rows_in_order(trace, limit: int | None = None) -> tuple[list[dict], int]:
    """The incidents by time as flat rows (the last `limit` of them), and how many there are."""
    inc = trace.incidents
    order = inc.sort_values(["time", "trace", "id"], kind="stable", na_position="first")
    if limit:
        order = order.tail(limit)
    return order.to_dict("records"), len(inc)


def to_json(summary: dict, trace) -> str:
    """The summary and every incident (flat rows, by time) as one JSON object."""
    inc = trace.incidents.sort_values(["time", "trace", "id"], kind="stable", na_position="first")
    rows = inc.to_json(orient="records", date_format="iso", date_unit="ns")
    return json.dumps(summary)[:-1] + ',"incidents_list":' + rows + "}"
