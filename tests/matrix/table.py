"""The kernel matrix's results as a Markdown table (tests/vm/run-matrix writes them):

python -m tests.matrix.table DIR
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def _timings(path: Path) -> dict[str, float]:
    out = {}
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2:
                try:
                    out[parts[0]] = float(parts[1])
                except ValueError:
                    pass
    return out


def _junit(path: Path) -> str:
    if not path.exists():
        return "not run"
    suite = ET.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    total, failed = int(suite.get("tests", 0)), int(suite.get("failures", 0)) + int(suite.get("errors", 0))
    skipped = int(suite.get("skipped", 0))
    return f"{total - failed - skipped}/{total - skipped} passed" + (f", {skipped} skipped" if skipped else "")


def rows(results: Path) -> list[str]:
    out = [
        "| kernel | release | plan | matrix session: scenarios passed | root suite | boot s | "
        "tracer start s (CPU) | scenarios s | guest wall s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for summary in sorted(results.glob("*/*/summary.json"), key=lambda p: (p.parent.parent.name != "host", str(p))):
        s = json.loads(summary.read_text())
        run = summary.parent
        t = _timings(run / "vm-session" / "timings")
        total = s["passed"] + s["failed"]
        failed = [k for k, v in s["scenarios"].items() if v == "failed"]
        passed = f"{s['passed']}/{total}" + (f" (failed: {', '.join(failed)})" if failed else "")
        out.append(
            f"| {s['kernel']} | {s['release']} | {s['plan']} | {passed} | {_junit(run / 'root-junit.xml')} | "
            f"{t.get('boot', '-')} | {s.get('start_wall_s')} ({s.get('start_cpu_s')}) | "
            f"{s.get('scenarios_wall_s')} | {t.get('wall', '-')} |"
        )
    for rc in sorted(results.glob("*/*/session.rc")):
        if not (rc.parent / "summary.json").exists():
            out.append(
                f"| {rc.parent.parent.name} | ? | {rc.parent.name} | no result (exit {rc.read_text().strip()}; "
                f"see {rc.parent / 'vm-session'}) | | | | | |"
            )
    return out


if __name__ == "__main__":
    print("\n".join(rows(Path(sys.argv[1] if len(sys.argv) > 1 else ".vm-results/matrix"))))
