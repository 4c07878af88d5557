"""Normalised incidents of each test, written where RSTTRACE_INCIDENT_DUMP points, to compare kernels."""

from __future__ import annotations

import json
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
    doc["runs"].append({
        "kernel": (header or {}).get("kernel"),
        "plan": plan.get("name"),
        "missing": plan.get("missing", []),
        "incidents": normalise(incidents),
    })
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
