"""The hook table (tracer/hooks.py) against the BPF handlers and the README: no second list."""

from __future__ import annotations

import re
from pathlib import Path

from tracer.hooks import HOOKS, KPROBES, OPTIONAL_TRACEPOINTS, REQUIRED_TRACEPOINTS, TRACEPOINTS, readme_table

ROOT = Path(__file__).parent.parent.parent
HOOK_SOURCES = sorted((ROOT / "bpf" / "hooks").glob("*.h"))
BENCH_ONLY = {"task_prctl_unknown"}  # bpf/hooks/bench.h: the benchmarks' own trigger, never attached by a plan


def _handlers(pattern: str) -> set[str]:
    return {m for p in HOOK_SOURCES for m in re.findall(pattern, p.read_text(), re.M)}


def test_every_tracepoint_handler_is_in_the_table_and_back():
    assert _handlers(r"^RAW_TRACEPOINT_PROBE\((\w+)\)") - BENCH_ONLY == set(TRACEPOINTS)


def test_every_kprobe_handler_is_in_the_table_and_back():
    assert _handlers(r"^RST_KPROBE\((\w+)\)") == {fn for _func, fn in KPROBES}


def test_required_and_optional_split_the_tracepoints():
    assert set(REQUIRED_TRACEPOINTS) | set(OPTIONAL_TRACEPOINTS) | {"sys_exit"} == set(TRACEPOINTS)
    assert not set(REQUIRED_TRACEPOINTS) & set(OPTIONAL_TRACEPOINTS)
    assert len({h.name for h in HOOKS}) == len(HOOKS)


def test_the_readme_shows_the_table():
    readme = [line.strip() for line in (ROOT / "README.md").read_text().splitlines()]
    table = readme_table()
    start = readme.index(table[0])
    assert readme[start : start + len(table)] == table
