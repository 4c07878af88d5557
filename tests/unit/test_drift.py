"""Cheap checks that fail when one side of a seam moves without the other: every macro the BPF
code reads is one the build can pass, every switch is documented in compat.h, every event kind
the header defines has a correlator handler."""

from __future__ import annotations

import re
from pathlib import Path

from tracer import build as kernel  # the tables the build passes
from tracer import cgroups
from tracer.correlate import Correlator
from tracer.events import KINDS

BPF = Path(__file__).resolve().parents[2] / "bpf"


def bpf_text() -> str:
    return "\n".join(p.read_text() for p in sorted(BPF.rglob("*")) if p.suffix in (".c", ".h"))


def test_every_offset_the_bpf_code_reads_is_one_the_build_passes():
    used = set(re.findall(r"\b((?:OFF|SHIFT|MASK)_[A-Z0-9_]+)", bpf_text()))
    passed = {f"OFF_{m}" for m, _s, _p in kernel.OFFSETS + kernel.SYSEXIT_OFFSETS}
    for m, _s, _p in kernel.FIELDS + kernel.OPTIONAL_FIELDS:
        passed |= {f"OFF_{m}", f"SHIFT_{m}", f"MASK_{m}"}
    passed |= {"OFF_REGS_ORIG_AX", "OFF_REGS_CS"}  # KernelFeatures._context_defs
    passed |= {f"OFF_{m}" for m, _s, _p in cgroups.CGROUP_OFFSETS} | {"OFF_KERNFS_NODE_PARENT"}  # cgroups.cflags
    assert used - passed == set(), "read in bpf/ but never passed by tracer/build.py"


def switches_used() -> set[str]:
    return set(re.findall(r"#\s*if(?:n?def)?\s+(RST_[A-Z0-9_]+)", bpf_text())) - {"RST_COMPAT_H", "RSTTRACE_H"}


def test_every_switch_is_documented_in_compat_h():
    compat = (BPF / "compat.h").read_text()
    head = compat[: compat.index("#ifndef RST_COMPAT_H")]
    missing = {s for s in switches_used() if s not in head}
    assert missing == set(), "switches used in bpf/ but not listed (with their reason) in compat.h"


def test_every_optional_field_has_its_switch():
    used = switches_used()
    for m, _s, _p in kernel.OPTIONAL_FIELDS:
        assert f"RST_HAVE_{m}" in used, f"OPTIONAL_FIELDS {m} is passed but no #ifdef reads it"


def test_every_event_kind_has_a_correlator_handler():
    c = Correlator()
    missing = [k for k in KINDS.values() if not callable(getattr(c, f"_on_{k}", None))]
    assert missing == []


def test_every_kind_the_correlator_can_name_has_its_table_entry():
    """classify() and the handlers name kinds by string: each must be in tracer/kinds.py."""
    import inspect

    from tracer import correlate
    from tracer.kinds import KINDS

    named = set(re.findall(r'"([a-z0-9]+(?:-[a-z0-9]+)+)"', inspect.getsource(correlate)))
    named -= {"failed-call"}  # an impact, not a kind
    assert named - set(KINDS) == set()


def test_every_event_field_is_a_typed_column_and_a_checked_field():
    """The decoded Event is the one schema: the tables type every field of it, the reader's
    checks know every field, and a loaded trace has every column with its type."""
    import dataclasses

    pytest = __import__("pytest")
    pytest.importorskip("pandas")
    import tracer
    from tracer import frame, tracefile
    from tracer.events import Event

    names = [f.name for f in dataclasses.fields(Event)]
    assert list(frame.EVENT_ORDER) == names
    typed = set(frame.EVENT_INTS) | set(frame.EVENT_STRS) | {"flags"}
    assert typed == set(names)
    assert set(tracefile.EVENT_INT_RANGES) - {"src"} | set(tracefile.EVENT_STR_FIELDS) | {"flags"} == set(names)
    ev = tracer.load(BPF.parent / "tests" / "data" / "write_after_close.jsonl").events
    for name in names:
        assert name in ev.columns, name
    for name in ("signal", "retrans", "probes", "span_ms", "unacked", "ago_ms", "cgroup"):
        assert str(ev[name].dtype) in ("int64", "Int64", "uint64", "UInt64"), (name, ev[name].dtype)
