"""No comment or document names a file that is not in the repository (issue 14: a newcomer
follows the names)."""

from __future__ import annotations

import pathlib
import re
import subprocess

ROOT = pathlib.Path(__file__).parent.parent.parent
# Names of what the code writes, or placeholders, not files of the tree.
NOT_FILES = {
    "bench/RESULTS-quick.md",  # bench/run --quick writes it
    "tracer/bpf",  # where the wheel puts bpf/ (pyproject: force-include)
    "tests/data/NAME.jsonl",  # record.py's placeholder
    "tests/x.py",  # a made-up test id in a unit test
}
_REF = re.compile(
    r"\b((?:tracer|tests|bpf|bench|testbed|vagrant|packaging|notebooks|corpus)/[A-Za-z0-9_./-]*[A-Za-z0-9_])"
)
SUFFIXES = (".py", ".h", ".c", ".sh", ".md", ".toml", ".yml", ".yaml", ".service")


def test_every_path_named_in_the_tree_exists():
    files = subprocess.run(["git", "ls-files"], capture_output=True, text=True, cwd=ROOT, check=True).stdout.split()
    known = set(files) | {str(p) for f in files for p in pathlib.PurePosixPath(f).parents}
    missing = []
    for f in files:
        if not f.endswith(SUFFIXES) and f not in ("run.sh", "bench/run"):
            continue
        text = (ROOT / f).read_text(errors="replace")
        for m in _REF.finditer(text):
            ref = m.group(1).rstrip(".")
            # a module named without .py (tests/integration/incident_dump) names its file too
            if ref in known or ref + ".py" in known or ref in NOT_FILES:
                continue
            missing.append(f"{f}: {ref}")
    assert missing == []
