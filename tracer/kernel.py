"""What the running kernel offers: its tracepoints and their fields, BTF, tracefs, what it lacks.
How that becomes a BPF build (offsets, switches, the bcc scaffold) is tracer/build.py."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from . import tpformat
from .hooks import REQUIRED_TRACEPOINTS, TRACEPOINTS
from .btf import VMLINUX_BTF, Btf, BtfError
from .errors import NoBtf, NoTracefs, NoTracepoint

SYSEXIT_ARCHES = ("x86_64",)

# Kernel functions the kprobe plan hooks, and the arguments it reads: (macro, C type).
# Positions differ between kernels (tcp_send_active_reset: (sk, gfp) before 6.10, then
# (sk, gfp, reason), and (sk, reason) in some stables), so they are looked up in BTF.
KPROBE_FUNCS = {
    "tcp_close": (("CLOSE_SK", "struct sock *"),),
    "tcp_send_active_reset": (("AR_SK", "struct sock *"), ("AR_REASON?", "enum sk_rst_reason")),
    "tcp_v4_send_reset": (
        ("V4_SK", "struct sock *"),
        ("V4_SKB", "struct sk_buff *"),
        ("V4_REASON?", "enum sk_rst_reason"),
    ),
    "tcp_v6_send_reset": (
        ("V6_SK", "struct sock *"),
        ("V6_SKB", "struct sk_buff *"),
        ("V6_REASON?", "enum sk_rst_reason"),
    ),
}
# Passive resets without a full socket (kprobe plan, before 6.10): function -> its sk macro.
NOSK_FUNCS = {"tcp_v4_send_reset": "V4_SK", "tcp_v6_send_reset": "V6_SK"}
# Registers carrying the first six arguments (x86_64 System V calling convention).
ARG_REGS = {"x86_64": ("di", "si", "dx", "cx", "r8", "r9")}


class Loss(NamedTuple):
    """A gap of one kernel (and plan): `key` names it to the correlator (tracer/correlate.py
    UNKNOWN says which incidents' fields it leaves unknown), `what` the kernel lacks (and since
    which version it exists), `lost` what the user loses, in words."""

    key: str
    what: str
    lost: str


@dataclass
class KernelFeatures:
    """Facts about the running kernel, gathered once, each with the reason it is what it is."""

    release: str
    btf_path: Path
    btf: Btf | None = None
    tracefs: Path | None = None
    # name -> raw tracepoint argument count (None: known from tracefs only, e.g. 5.4 has
    # no btf_trace_* typedefs)
    tracepoints: dict[str, int | None] = field(default_factory=dict)
    formats: dict[str, tpformat.TpFormat] = field(default_factory=dict)
    # kprobe targets: name -> [(param name, type)] from BTF; absent when not in BTF
    funcs: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    arch: str = field(default_factory=platform.machine)
    notes: list[str] = field(default_factory=list)

    @classmethod
    def probe(cls, btf_path: Path = VMLINUX_BTF, tracefs: Path | None = None) -> "KernelFeatures":
        feats = cls(release=platform.release(), btf_path=btf_path)
        if not btf_path.exists():
            raise NoBtf(f"no BTF at {btf_path}: rsttrace needs a kernel built with CONFIG_DEBUG_INFO_BTF=y")
        try:
            feats.btf = Btf.load(btf_path)
        except BtfError as e:
            raise NoBtf(str(e)) from None
        for name in TRACEPOINTS:
            n = feats.btf.typedef_params(f"btf_trace_{name}")
            if n is not None:
                feats.tracepoints[name] = n - 1  # the first parameter is the probe's data pointer
        for name in KPROBE_FUNCS:
            try:
                feats.funcs[name] = feats.btf.func_params(name)
            except BtfError:
                pass
        feats.read_tracefs(tracefs or find_tracefs())
        return feats

    @classmethod
    def from_tree(
        cls, release: str, tracefs: Path, funcs: dict[str, list[tuple[str, str]]], arch: str = "x86_64"
    ) -> "KernelFeatures":
        """Features of another kernel from a copy of its format files and function
        prototypes (tests/data/formats): tracepoints known from tracefs only."""
        feats = cls(release=release, btf_path=Path("/nonexistent"), funcs=dict(funcs), arch=arch)
        feats.read_tracefs(tracefs)
        return feats

    def read_tracefs(self, root: Path | None) -> None:
        """Format files complete what BTF says: a tracepoint with a format is present even
        without a btf_trace_* typedef (before 5.5), and its fields tell versions apart."""
        if root is None:
            return
        self.tracefs = Path(root)
        for name in TRACEPOINTS:
            fmt = tpformat.load(self.tracefs, name)
            if fmt is not None:
                self.formats[name] = fmt
                self.tracepoints.setdefault(name, None)

    def has(self, tracepoint: str) -> bool:
        return tracepoint in self.tracepoints

    @property
    def send_reset_has_reason(self) -> bool:
        """tcp_send_reset carries `enum sk_rst_reason` (6.10)."""
        fmt = self.formats.get("tcp_send_reset")
        if fmt is not None:
            return fmt.has("reason")
        return (self.tracepoints.get("tcp_send_reset") or 0) >= 3

    @property
    def send_reset_sees_nosk(self) -> bool:
        """tcp_send_reset also fires for RSTs without a full socket (TIME_WAIT minisock,
        no socket). Both came in 6.10 ("fully support trace_tcp_send_reset" and the
        rstreason series), so the reason argument marks it."""
        return self.send_reset_has_reason

    @property
    def has_io_tracepoints(self) -> bool:
        return self.has("sock_send_length") and self.has("sock_recv_length")

    @property
    def io_errors_from(self) -> str | None:
        """Where the peer's send/recv errors come from: 'tracepoint' (6.3+), 'sys_exit'
        (older x86_64), or None (not available)."""
        if self.has_io_tracepoints:
            return "tracepoint"
        if self.has("sys_exit") and self.arch in SYSEXIT_ARCHES:
            return "sys_exit"
        return None

    def kprobe_args(self) -> dict[str, int] | str:
        """-D macros RST_KP_<X>_OFF: the pt_regs offset of the register holding each
        argument the kprobe hooks read; or a sentence saying why the kprobe plan cannot
        be built on this kernel."""
        regs = ARG_REGS.get(self.arch)
        if regs is None:
            return f"no kprobe argument registers known for {self.arch}"
        out: dict[str, int] = {}
        for func, wanted in KPROBE_FUNCS.items():
            if func in NOSK_FUNCS and self.send_reset_sees_nosk:
                continue  # tcp:tcp_send_reset reports those resets itself
            params = self.funcs.get(func)
            if params is None:
                if func == "tcp_v6_send_reset":
                    continue  # IPv6 built as a module or absent: IPv4 only
                return f"{func} is not in the kernel's BTF"
            for macro, ctype in wanted:
                optional = macro.endswith("?")
                macro = macro.rstrip("?")
                pos = next((i for i, (_n, t) in enumerate(params) if t == ctype), None)
                if pos is None:
                    if optional:
                        continue
                    return f"{func} has no {ctype} argument"
                if pos >= len(regs):
                    return f"{func}: argument {pos + 1} is not passed in a register"
                out[macro] = self._reg_offset(regs[pos], pos)
        return out

    def _reg_offset(self, reg: str, pos: int) -> int:
        if self.btf is None:
            return pos  # from_tree(): no BTF, the position stands in for the offset
        return self.btf.offsetof("pt_regs", reg)

    def require_tracepoints(self) -> None:
        missing = [t for t in REQUIRED_TRACEPOINTS if t not in self.tracepoints]
        if missing:
            raise NoTracepoint(
                f"this kernel ({self.release}) lacks tracepoint(s) {', '.join(missing)}; "
                "rsttrace needs kernel 4.16 or later"
            )

    def rst_reasons(self) -> dict[int, str]:
        """enum sk_rst_reason as {value: short name}, read from BTF; empty before 6.10."""
        assert self.btf is not None
        try:
            enum = self.btf.enum("sk_rst_reason")
        except BtfError:
            return {}
        return {v: k.removeprefix("SK_RST_REASON_") for k, v in enum.items()}

    def context_method(self) -> str:
        """How rst_context() (bpf/rsttrace.bpf.c) tells a task's own doing from a softirq's on
        this kernel, in words for `doctor`."""
        rt = self.btf is not None and self.btf.has_member("task_struct", "softirq_disable_cnt")
        if rt:
            return (
                "PREEMPT_RT: softirqs run in the task that raised them or in ksoftirqd, on its "
                "own stack; the task's softirq_disable_cnt (SOFTIRQ_OFFSET) says it serves one"
            )
        how = "a softirq runs on the IRQ stack (the hook's stack is not the task's)"
        if self.arch == "x86_64":
            how += ", or over user mode (the task's saved user registers show no system call)"
        return how

    def losses(self, plan: str = "tracepoint") -> list[Loss]:
        """What this kernel lacks on this plan, for each gap rsttrace knows of: `doctor` prints
        what the user loses, and each incident it touches names the fields it leaves unknown."""
        out: list[Loss] = []
        if not self.has("inet_sk_error_report"):
            out.append(
                Loss(
                    "error_report",
                    "sock:inet_sk_error_report (5.14)",
                    "errors the kernel reports on a socket that stays open are not seen: a "
                    "victim's sk_err is inferred from the reset and its state, and a timeout "
                    "is told only from the socket's move to CLOSE",
                )
            )
        io = self.io_errors_from
        if io == "sys_exit":
            out.append(
                Loss(
                    "io_sys_exit",
                    "sock:sock_send_length/sock_recv_length (6.3)",
                    "the peer's failing send/recv calls come from raw_syscalls:sys_exit instead "
                    "(every system call's exit is hooked: more overhead; x86_64 only)",
                )
            )
        elif io is None:
            out.append(
                Loss(
                    "io_calls",
                    "sock:sock_send_length/sock_recv_length (6.3) and a usable sys_exit",
                    "the victim's failing calls (ECONNRESET, EPIPE) are not listed; only its "
                    "socket state and signals are",
                )
            )
        if not self.send_reset_has_reason:
            out.append(
                Loss(
                    "reason",
                    "enum sk_rst_reason (6.10)",
                    "incidents have no kernel reason (reason is null); the kind comes from the "
                    "close path rsttrace saw, and RSTs answering a segment are not told apart",
                )
            )
        if not self.send_reset_sees_nosk:
            if plan == "tracepoint":
                out.append(
                    Loss(
                        "minisock_resets",
                        "tcp:tcp_send_reset for RSTs without a full socket (6.10)",
                        "RSTs sent by TIME_WAIT sockets or for unknown connections are seen only "
                        "at the receiver: a crash-and-reboot reset is 'reset-received' (sender "
                        "unknown), and a write-after-close may count fewer resets than were sent",
                    )
                )
            elif "tcp_v6_send_reset" not in self.funcs:
                out.append(
                    Loss(
                        "v6_nosk_resets",
                        "tcp_v6_send_reset in BTF",
                        "IPv6 RSTs sent without a socket are not seen at the sender",
                    )
                )
        if not self.has("signal_deliver"):
            out.append(
                Loss(
                    "signal_deliver",
                    "signal:signal_deliver",
                    "a SIGPIPE caught by a handler is not told from one still pending",
                )
            )
        if self.btf is not None and self.arch != "x86_64":
            out.append(
                Loss(
                    "user_regs",
                    f"user registers at the top of the task stack ({self.arch})",
                    "a softirq that interrupted user mode looks like the task itself: an RST "
                    "received then may name the interrupted process",
                )
            )
        return out


def find_tracefs() -> Path | None:
    for cand in (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing")):
        if (cand / "events").is_dir():
            return cand
    return None


def ensure_tracefs() -> Path:
    """Mount tracefs if it is not mounted (bcc reads event formats and attaches through it)."""
    found = find_tracefs()
    if found:
        return found
    target = Path("/sys/kernel/tracing")
    rc = os.system(f"mount -t tracefs nodev {target} >/dev/null 2>&1")
    found = find_tracefs()
    if rc != 0 or not found:
        raise NoTracefs(
            "tracefs is not mounted and mounting it failed; run: mount -t tracefs nodev /sys/kernel/tracing"
        )
    return found
