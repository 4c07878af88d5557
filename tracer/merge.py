"""`rsttrace merge`: join traces from several hosts, pairing each RST's sender with its victim."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BadTrace, OutputFailed
from .tracefile import FORMAT, VERSION, TraceWriter, read, recordings

# Clocks of hosts kept by NTP agree to milliseconds; two seconds also covers hosts whose clocks
# drift a little, while a connection 4-tuple is practically never reused within it.
DEFAULT_TOLERANCE_NS = 2_000_000_000


@dataclass
class Input:
    path: Path
    sources: list[dict]  # one per recording (a merged file holds several)
    incidents: list[dict] = field(default_factory=list)
    summaries: list[dict] = field(default_factory=list)


def _scan(path: Path, strict: bool = True, warnings: list[str] | None = None) -> Input:
    it = read(path, strict=strict, warnings=warnings)
    head = next(it, None)
    if head is None:
        raise BadTrace(f"{path}:1: not an rsttrace trace (empty file)")
    inp = Input(path, recordings(head, path))
    n = len(inp.sources)
    for rec in it:
        if rec["type"] == "incident":
            victim = rec.get("victim") or {}
            if (rec.get("src") or 0) >= n or (victim.get("src") or 0) >= n:
                why = f"{path}: incident {rec['id']} names no recording of this trace"
                if strict:
                    raise BadTrace(why)
                if warnings is not None:
                    warnings.append(why + " (skipped)")
                continue
            inp.incidents.append(rec)
        elif rec["type"] == "summary":
            inp.summaries.append(rec)
    return inp


def _tuple(inc: dict) -> tuple:
    return (inc["local"]["addr"], inc["local"]["port"], inc["remote"]["addr"], inc["remote"]["port"])


def is_sender_half(inc: dict) -> bool:
    """This host sent the RST (or closed) but the peer that suffered is not in this trace."""
    return inc.get("victim") is None


def is_receiver_half(inc: dict) -> bool:
    """A victim whose reset's sender is not in this trace."""
    ts = inc.get("timestamps") or {}
    return inc.get("victim") is not None and inc.get("culprit") is None and ts.get("reset_ns") is None


def _wall(inc: dict, offset: int, *keys: str) -> int:
    """The earliest of these timestamps, on the wall clock."""
    ts = inc["timestamps"]
    found = [ts[k] for k in keys if ts.get(k) is not None]
    return min(found) + offset


def _has_time(inc: dict) -> bool:
    ts = inc["timestamps"]
    return ts.get("close_ns") is not None or ts.get("reset_ns") is not None


def pair(
    halves_s: list[tuple[int, dict]], halves_r: list[tuple[int, dict]], offsets: list[int], tolerance_ns: int
) -> list[tuple[int, int, int]]:
    """(sender index, receiver index, skew ns) for each match: same 4-tuple, different
    recordings, wall-clock times within tolerance_ns; the closest pairs win, each half once."""
    by_tuple: dict[tuple, list[int]] = {}
    for j, (_src, inc) in enumerate(halves_r):
        by_tuple.setdefault(_tuple(inc), []).append(j)
    candidates = []
    for i, (src_s, inc_s) in enumerate(halves_s):
        # The close (or the RST) on the sender; the receiver's first event can carry an
        # earlier timestamp than tcp_send_reset's, which fires after the segment left.
        t_s = (
            _wall(inc_s, offsets[src_s], "close_ns", "reset_ns")
            if _has_time(inc_s)
            else _wall(inc_s, offsets[src_s], "first_ns")
        )
        for j in by_tuple.get(_tuple(inc_s), ()):
            src_r, inc_r = halves_r[j]
            if src_r == src_s:
                continue
            skew = _wall(inc_r, offsets[src_r], "first_ns") - t_s
            if abs(skew) <= tolerance_ns:
                candidates.append((abs(skew), i, j, skew))
    used_s, used_r, out = set(), set(), []
    for _, i, j, skew in sorted(candidates):
        if i in used_s or j in used_r:
            continue
        used_s.add(i)
        used_r.add(j)
        out.append((i, j, skew))
    return out


def merge(
    paths: list[Path], tolerance_ns: int = DEFAULT_TOLERANCE_NS, strict: bool = True, warnings: list[str] | None = None
) -> tuple[list[dict], list[dict], dict]:
    """Read the traces and pair their halves: (sources, incidents, stats). With strict=False a
    bad line is skipped and named in `warnings`; a trace that cannot be read at all is an error."""
    inputs = [_scan(Path(p), strict, warnings) for p in paths]
    sources: list[dict] = []
    tagged: list[tuple[int, dict]] = []
    for inp in inputs:
        base = len(sources)
        for s in inp.sources:
            if not s.get("wall_offset_ns"):
                raise BadTrace(
                    f"{inp.path}: no wall-clock offset in the header: cannot place its times against another host's"
                )
            sources.append(dict(s))
        for inc in inp.incidents:
            inc = dict(inc)
            src = base + (inc.pop("src", 0) or 0)
            if inc.get("victim") and inc["victim"].get("src") is not None:
                inc["victim"] = dict(inc["victim"], src=base + int(inc["victim"]["src"]))
            tagged.append((src, inc))
    labels: dict[str, int] = {}
    for s in sources:  # unique labels, so that tables can name each recording
        n = labels.get(s["label"], 0)
        labels[s["label"]] = n + 1
        if n:
            s["label"] = f"{s['label']}#{n + 1}"
    offsets = [s["wall_offset_ns"] for s in sources]
    senders = [(k, x) for k, x in enumerate(tagged) if is_sender_half(x[1])]
    receivers = [(k, x) for k, x in enumerate(tagged) if is_receiver_half(x[1])]
    matches = pair([x for _, x in senders], [x for _, x in receivers], offsets, tolerance_ns)
    merged: dict[int, dict] = {}
    absorbed: set[int] = set()
    for i, j, skew in matches:
        ks, (src_s, inc_s) = senders[i]
        kr, (src_r, inc_r) = receivers[j]
        inc = dict(inc_s)
        inc["victim"] = dict(inc_r["victim"], src=src_r)
        inc["clock_skew_ns"] = skew  # receiver's first event minus sender's RST, wall clock
        inc["victim_incident"] = {"trace": sources[src_r]["label"], "id": inc_r["id"], "kind": inc_r["kind"]}
        ts = dict(inc["timestamps"])
        ts["victim_first_ns"] = inc_r["timestamps"]["first_ns"]  # in the victim host's clock
        inc["timestamps"] = ts
        merged[ks] = inc
        absorbed.add(kr)
    out = []
    for k, (src, inc) in enumerate(tagged):
        if k in absorbed:
            continue
        inc = merged.get(k, inc)
        inc = dict(inc, src=src, source_id=inc["id"])
        out.append(inc)
    out.sort(key=lambda inc: (_wall(inc, offsets[inc["src"]], "first_ns"), inc["src"], inc["source_id"]))
    for n, inc in enumerate(out, 1):
        inc["id"] = n
    stats = {
        "inputs": len(inputs),
        "recordings": len(sources),
        "incidents": len(out),
        "cross_host": len(matches),
        "tolerance_ns": tolerance_ns,
        "unmatched_senders": len(senders) - len(matches),
        "unmatched_receivers": len(receivers) - len(matches),
    }
    return sources, out, stats


def write(
    paths: list[Path], out: Path, sources: list[dict], incidents: list[dict], stats: dict, strict: bool = True
) -> None:
    """A merged trace: every input's events (tagged with `src`), the joined incidents, summaries.

    Written under a temporary name in the same folder (0600, O_NOFOLLOW) and renamed into
    place when complete: `out` is never truncated before the inputs are read, and a failure
    leaves whatever was there before."""
    out = Path(out)
    head = {
        "type": "header",
        "format": FORMAT,
        "version": VERSION,
        "merged": stats,
        "sources": sources,
        "host": None,
        "wall_offset_ns": None,
    }
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        os.unlink(tmp)
    except OSError:
        pass
    w = TraceWriter(tmp, head)
    done = False
    try:
        base = 0
        for p in paths:
            it = read(Path(p), strict=strict, warnings=[])  # warned about while merging
            head_in = next(it)
            n = len(head_in.get("sources") or [None])
            batch = []
            for rec in it:
                if rec["type"] in ("event", "summary") and (rec.get("src") or 0) < n:
                    batch.append(dict(rec, src=base + (rec.get("src") or 0)))
                if len(batch) >= 4096:
                    w.write(batch)
                    batch = []
            w.write(batch)
            base += n
        w.write(incidents)
        w.close()
        try:
            os.replace(tmp, out)
        except OSError as e:
            raise OutputFailed(f"cannot write {out}: {e.strerror}") from None
        done = True
    finally:
        w.close()
        if not done:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def to_json(inc: dict) -> str:
    return json.dumps(inc, separators=(",", ":"))
