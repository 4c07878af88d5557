"""Normalised incidents of each test, written where RSTTRACE_INCIDENT_DUMP points, to compare kernels."""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import sys
from pathlib import Path

ENV = "RSTTRACE_INCIDENT_DUMP"

# Values that differ from run to run and kernel to kernel for the same story. Each becomes a
# placeholder numbered by first appearance, so equal values stay equal (the victim's pid and
# the pid of its errors) and distinct ones stay distinct.
_PLACEHOLDERS = {"id": "id", "pid": "pid", "tid": "pid", "port": "port", "netns": "netns", "addr": "addr"}
# Instants: only whether the kernel gave one matters.
# Times and durations (ns, ms), and counts that depend on timing (how many retransmissions fit
# in a timeout): measured, not decided by the kernel's logic.
_TIME = re.compile(r"(^|_)(ns|ms)$|^retransmissions$")
_written: set[str] = set()


def normalise(incidents: list[dict]) -> list[dict]:
    seen: dict[tuple[str, object], str] = {}

    def placeholder(kind: str, value) -> str:
        key = (kind, value)
        if key not in seen:
            seen[key] = f"<{kind}{sum(1 for k in seen if k[0] == kind) + 1}>"
        return seen[key]

    def walk(value, key: str = ""):
        if isinstance(value, dict):
            return {k: walk(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, key) for v in value]
        if value is None:
            return None
        if key in _PLACEHOLDERS:
            return placeholder(_PLACEHOLDERS[key], value)
        if _TIME.search(key):
            return "<time>"
        return value

    return [walk(inc) for inc in incidents]


_PLACEHOLDER = re.compile(r"<([a-z_]+)(\d+)>")


def renumber(value, seen: dict | None = None):
    """Placeholders (`<netns2>`, `<pid1>`) numbered again by first appearance: what is compared
    is which values are the same, not their numbers."""
    seen = {} if seen is None else seen
    if isinstance(value, dict):
        return {k: renumber(v, seen) for k, v in value.items()}
    if isinstance(value, list):
        return [renumber(v, seen) for v in value]
    if isinstance(value, str):
        m = _PLACEHOLDER.fullmatch(value)
        if m:
            key = (m[1], value)
            if key not in seen:
                seen[key] = f"<{m[1]}{sum(1 for k in seen if k[0] == m[1]) + 1}>"
            return seen[key]
    return value


def _erased(inc) -> str:
    """The incident with its placeholders' numbers taken out: a sort key that does not depend on
    the order the incidents came in (the numbers do, being given by first appearance)."""
    return _PLACEHOLDER.sub(r"<\1>", json.dumps(inc, sort_keys=True))


# Incidents alike but for which placeholder is which are tried in every order up to this many
# arrangements (a scenario has one or two); beyond, their arrival order stands.
_MAX_ARRANGEMENTS = 720


def canonical(incidents: list[dict]) -> list[dict]:
    """Normalised incidents in an order of their own, placeholders renumbered in it: two lists
    of the same incidents in any order give the same list, and different incidents do not.

    Sorted by content; incidents equal but for placeholders (two resets told alike, say) are
    placed in the arrangement whose renumbered form sorts first, so how their values relate
    (this victim is that culprit) decides, not which came first."""
    ordered = sorted(incidents, key=_erased)
    groups = [list(g) for _, g in itertools.groupby(ordered, key=_erased)]
    if math.prod(math.factorial(len(g)) for g in groups) > _MAX_ARRANGEMENTS:
        return renumber(ordered)
    best = None
    for arrangement in itertools.product(*(itertools.permutations(g) for g in groups)):
        candidate = renumber([inc for group in arrangement for inc in group])
        text = json.dumps(candidate, sort_keys=True)
        if best is None or text < best[0]:
            best = (text, candidate)
    return best[1] if best else []


def same_incidents(a: list[dict], b: list[dict]) -> bool:
    """The same incidents, as multisets: order and pids, ports and the like do not matter, how
    they relate does."""
    return canonical(normalise(a)) == canonical(normalise(b))


def test_id() -> str | None:
    current = os.environ.get("PYTEST_CURRENT_TEST")  # "path::name[params] (call)"
    return current.rsplit(" ", 1)[0] if current else None


def file_name(nodeid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\[\]-]+", "_", nodeid) + ".json"


def dump(incidents: list[dict], header: dict | None) -> Path | None:
    """Add one tracer run of the current test to its file (a test's first run replaces the
    file a previous session left)."""
    where = os.environ.get(ENV)
    nodeid = test_id()
    if not where or not nodeid:
        return None
    path = Path(where) / file_name(nodeid)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"test": nodeid, "runs": []}
    if nodeid in _written and path.exists():
        doc = json.loads(path.read_text())
    plan = (header or {}).get("plan") or {}
    doc["runs"].append(
        {
            "kernel": (header or {}).get("kernel"),
            "plan": plan.get("name"),
            "missing": plan.get("missing", []),
            "incidents": normalise(incidents),
        }
    )
    path.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    _written.add(nodeid)
    return path


def load(directory: Path) -> dict[str, dict]:
    """Test id -> dump document."""
    docs = (json.loads(p.read_text()) for p in sorted(Path(directory).glob("*.json")))
    return {d["test"]: d for d in docs}


def plans_report(directory: Path) -> list[str]:
    """One line per test: the plan each of its tracers attached with."""
    docs = load(directory)
    lines = [f"plan {', '.join(str(r['plan']) for r in doc['runs'])}: {nodeid}" for nodeid, doc in docs.items()]
    used = sorted({str(r["plan"]) for d in docs.values() for r in d["runs"]})
    lines.append(f"plans used by {len(docs)} traced test(s): {', '.join(used) or 'none'}")
    return lines


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "plans":
        sys.exit("usage: python -m tests.integration.incident_dump plans DIR")
    print("\n".join(plans_report(Path(sys.argv[2]))))
