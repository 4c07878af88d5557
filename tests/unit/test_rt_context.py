"""PREEMPT_RT: who acted, when softirqs run in tasks (issue 13).

On PREEMPT_RT a softirq runs on the stack of the task that raised it (at local_bh_enable) or in
ksoftirqd, never on an IRQ stack: the RST a server's close() sends is received by the client's
socket inside the server's own system call, on the server's stack. Told by the stack alone, that
reception looked like the server's own doing and the demo named the server as its own victim.
rst_context() (bpf/rsttrace.bpf.c) reads task_struct.softirq_disable_cnt on such kernels; these
tests keep the switch, its BTF source and the correlation over a stream recorded on 6.12-rt.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from tracer import tracefile
from tracer.btf import BtfError, Member
from tracer.correlate import Correlator
from tracer.events import Event
from tracer.build import FIELDS, OFFSETS, OPTIONAL_FIELDS, SOCK_FLAGS, cflags
from tracer.kernel import KernelFeatures

DATA = Path(__file__).parent.parent / "data"
RT_TRACE = DATA / "rt" / "unread_default_6.12-rt.jsonl"
BPF_C = Path(__file__).parent.parent.parent / "bpf" / "rsttrace.bpf.c"


class FakeBtf:
    """Just enough of tracer.btf.Btf for build.cflags(): every member the tables name
    exists at a distinct offset; task_struct.softirq_disable_cnt only on the RT kernel."""

    def __init__(self, rt: bool) -> None:
        self.members = {(s, p) for _m, s, p in OFFSETS + FIELDS} | {("tcp_sock", "tcp_usec_ts")}
        if rt:
            self.members.add(("task_struct", "softirq_disable_cnt"))
        self.offsets = {k: 8 * i for i, k in enumerate(sorted(self.members))}

    def member(self, struct_name: str, path: str) -> Member:
        if (struct_name, path) not in self.members:
            raise BtfError(f"{struct_name} has no member {path}")
        return Member(path, self.offsets[(struct_name, path)] * 8, 0, 1, 4)

    def has_member(self, struct_name: str, path: str) -> bool:
        return (struct_name, path) in self.members

    def offsetof(self, struct_name: str, path: str) -> int:
        return self.member(struct_name, path).bit_offset // 8

    def enum(self, name: str) -> dict[str, int]:
        if name == "sock_flags":
            return {f: i for i, f in enumerate(SOCK_FLAGS)}
        raise BtfError(f"enum {name} not found")

    def find(self, kind: int, name: str) -> int | None:
        return None

    def struct_id(self, name: str) -> int:
        return 1

    def type_size(self, tid: int) -> int:
        return 168  # struct pt_regs on x86_64


def features(rt: bool) -> KernelFeatures:
    release = "6.12.117+deb13-rt-amd64" if rt else "6.12.117+deb13-amd64"
    return KernelFeatures(release=release, btf_path=Path("/nonexistent"), btf=FakeBtf(rt), arch="x86_64")


def test_rt_kernel_compiles_the_softirq_count_check():
    flags = cflags(features(rt=True))
    assert "-DRST_HAVE_TASK_SOFTIRQ_CNT=1" in flags
    off = [f for f in flags if f.startswith("-DOFF_TASK_SOFTIRQ_CNT=")]
    assert len(off) == 1
    # softirq_disable_cnt is an int: the whole word, so SOFTIRQ_OFFSET (bit 8) is in the mask.
    assert "-DSHIFT_TASK_SOFTIRQ_CNT=0" in flags and "-DMASK_TASK_SOFTIRQ_CNT=4294967295" in flags
    assert "PREEMPT_RT" in features(rt=True).context_method()


def test_other_kernels_do_not():
    flags = cflags(features(rt=False))
    assert not [f for f in flags if "SOFTIRQ" in f]
    assert "IRQ stack" in features(rt=False).context_method()


def test_the_switch_is_in_the_table_and_guards_the_c():
    assert ("TASK_SOFTIRQ_CNT", "task_struct", "softirq_disable_cnt") in OPTIONAL_FIELDS
    src = BPF_C.read_text()
    body = src[src.index("static __always_inline u8 rst_context(") :]
    body = body[: body.index("\n}\n")]
    # Checked before the stack test: on RT the softirq's stack IS the task's stack.
    rt = body.index("#ifdef RST_HAVE_TASK_SOFTIRQ_CNT")
    assert rt < body.index("at - stack >= RST_THREAD_SIZE")
    assert re.search(r"RD_FIELD\(task, TASK_SOFTIRQ_CNT\) & RST_SOFTIRQ_OFFSET\)\s*return RST_CTX_IRQ;", body[rt:])
    assert re.search(r"#define RST_SOFTIRQ_OFFSET\s+\(1U << 8\)", src)


# -- the stream recorded on Debian's 6.12.117+deb13-rt-amd64 (kprobe plan) -----------------------


def rt_events() -> list[Event]:
    return [Event.from_dict(r) for r in tracefile.read(RT_TRACE) if r["type"] == "event"]


def rt_pids(evs: list[Event]) -> tuple[int, int]:
    server = next(e.pid for e in evs if e.kind == "close" and e.comm == "rst_server")
    client = next(e.pid for e in evs if e.kind == "io_error")
    return server, client


def incidents(evs: list[Event]) -> list[dict]:
    return [i.to_dict() for i in Correlator().run(evs)]


@pytest.mark.skipif(not RT_TRACE.exists(), reason="no 6.12-rt recording")
def test_rt_recording_shows_the_softirq_on_the_senders_stack():
    """What made the stack test fail on RT: the client's socket received the RST while the
    server's task ran (its pid, its comm), and the recorded ctx says it was a softirq."""
    header = next(tracefile.read(RT_TRACE))
    assert "rt" in header["kernel"]
    evs = rt_events()
    server, _client = rt_pids(evs)
    recv = [e for e in evs if e.kind == "recv_reset"]
    assert recv and all(e.ctx == "irq" for e in recv)
    assert any(e.pid == server for e in recv)


@pytest.mark.skipif(not RT_TRACE.exists(), reason="no 6.12-rt recording")
def test_rt_victim_is_the_client_not_the_sender():
    evs = rt_events()
    server, client = rt_pids(evs)
    [inc] = incidents(evs)
    assert inc["kind"] == "abort-on-close"
    assert inc["culprit"]["pid"] == server
    v = inc["victim"]
    assert v is not None and (v["pid"], v["comm"]) == (client, "rst_client")
    assert v["pid"] != inc["culprit"]["pid"]
    assert [(e["call"], e["errno"]) for e in v["errors"]] == [("write", "ECONNRESET"), ("write", "EPIPE")]
    assert v["sigpipe"] == "killed"


@pytest.mark.skipif(not RT_TRACE.exists(), reason="no 6.12-rt recording")
def test_rt_stream_told_as_task_context_names_the_sender():
    """The same stream with the softirq's reception marked as the task's own, as the stack test
    alone recorded it on RT: the victim becomes the sender. The check above is what catches it."""
    evs = rt_events()
    server, client = rt_pids(evs)
    wrong = [replace(e, ctx="task") if e.kind == "recv_reset" else e for e in evs]
    [inc] = incidents(wrong)
    v = inc["victim"]
    # Issue 13's demo on 6.12-rt: "-> rst_server[229] write: ECONNRESET, write: EPIPE, SIGPIPE:
    # delivered" (the server as its own victim, the client's calls under its name).
    assert (v["pid"], v["comm"]) == (server, "rst_server") != (client, "rst_client")
    assert v["sigpipe"] == "delivered"
