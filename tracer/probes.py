"""The attach plan: what to hook on this kernel, chosen by trying, then compile, load and attach."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field

from .errors import BpfLoadError, NoBcc
from .kernel import KernelFeatures, bpf_dir, build_scaffold

_KPROBE_TRIAL = "int kprobe__tcp_close(struct pt_regs *ctx) { return 0; }"
_FENTRY_TRIAL = "KFUNC_PROBE(tcp_close) { return 0; }"


def import_bcc():
    try:
        import bcc  # noqa: F401  (Debian: python3-bpfcc)
    except ImportError:
        raise NoBcc("bcc's Python module is missing: apt-get install python3-bpfcc "
                    "(and run rsttrace with a Python that sees it)") from None
    return bcc


@dataclass
class Trial:
    name: str
    ok: bool
    detail: str


@dataclass
class Plan:
    """What will be attached and why."""

    name: str  # "kprobe" | "fentry" | "tracepoint"
    trials: list[Trial] = field(default_factory=list)
    hooks: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # optional tracepoints absent, with effect
    ringbuf: bool = True
    cflags: list[str] = field(default_factory=list)

    def describe(self) -> dict:
        return {"name": self.name, "hooks": self.hooks, "ringbuf": self.ringbuf,
                "trials": [t.__dict__ for t in self.trials], "missing": self.missing}


def _scaffold_env(feats: KernelFeatures) -> str:
    """Point bcc at our scaffold unless matching kernel headers exist."""
    build = f"/lib/modules/{feats.release}/build"
    if os.path.isdir(build) and "BCC_KERNEL_SOURCE" not in os.environ:
        return build
    if "BCC_KERNEL_SOURCE" not in os.environ or not os.path.isdir(os.environ["BCC_KERNEL_SOURCE"]):
        os.environ["BCC_KERNEL_SOURCE"] = str(build_scaffold(feats.release))
    return os.environ["BCC_KERNEL_SOURCE"]


class _Captured(Exception):
    def __init__(self, error: Exception, stderr: str) -> None:
        super().__init__(str(error))
        self.stderr = stderr


def _quiet(fn):
    """Run fn with fd 2 captured (bcc prints compiler and verifier chatter); on failure the
    chatter travels with the exception so it can be shown where it helps."""
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            return fn()
        except Exception as e:
            os.dup2(saved, 2)
            tmp.seek(0)
            raise _Captured(e, tmp.read().decode(errors="replace")) from None
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _try(name: str, fn) -> Trial:
    try:
        _quiet(fn)
        return Trial(name, True, "loaded and attached")
    except Exception as e:  # bcc raises bare Exception for every failure
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        if "super-user" in msg:  # bcc's wording for any EPERM, even as root
            msg = "the kernel refused to load it (EPERM)"
        return Trial(name, False, msg)


def choose_plan(feats: KernelFeatures, force: str | None = None, trials: bool = True) -> Plan:
    """Try kprobes, then fentry, then settle on tracepoints (which the kernel must have).

    `trials=False` skips the trial loads: each costs a compile, a third of the start-up
    (bench/RESULTS.md), and no hook uses their result yet. Turn them back on for live
    tracing once kprobe/fentry hooks exist."""
    bcc = import_bcc()
    _scaffold_env(feats)
    feats.require_tracepoints()
    tried: list[Trial] = []
    chosen = "tracepoint"
    if force != "tracepoint" and trials:
        def kprobe():
            b = bcc.BPF(text=_KPROBE_TRIAL)
            b.cleanup()
        tried.append(_try("kprobe", kprobe))

        def fentry():
            b = bcc.BPF(text=_FENTRY_TRIAL)
            b.cleanup()
        tried.append(_try("fentry", fentry))
        # The kprobe hooks (tcp_close, tcp_send_active_reset, tcp_v4/v6_send_reset) are not
        # written yet: until they are, a kernel that allows kprobes still uses tracepoints.
    plan = Plan(name=chosen, trials=tried)
    plan.hooks = ["softirq_entry", "softirq_exit"] + [
        tp for tp in ("inet_sock_set_state", "tcp_destroy_sock", "tcp_send_reset", "tcp_receive_reset",
                      "inet_sk_error_report", "sock_send_length", "sock_recv_length",
                      "signal_generate", "signal_deliver", "sched_process_exit")
        if feats.has(tp)
    ]
    from .kernel import OPTIONAL_TRACEPOINTS
    plan.missing = [f"{tp}: no {what}" for tp, what in OPTIONAL_TRACEPOINTS.items() if not feats.has(tp)]
    plan.cflags = feats.cflags() + [f"-I{bpf_dir()}"]
    return plan


class Loaded:
    """The compiled, attached program and its maps."""

    def __init__(self, bpf, plan: Plan) -> None:
        self.bpf = bpf
        self.plan = plan

    def table(self, name: str):
        return self.bpf[name]

    def close(self) -> None:
        self.bpf.cleanup()


def load(plan: Plan, ring_pages: int = 2048, perf_only: bool = False) -> Loaded:
    """Compile rsttrace.bpf.c with the plan's flags; ring buffer first, perf buffer if refused
    (or if asked for: kernels before 5.8 have no ring buffer, and this is how it is tested)."""
    bcc = import_bcc()
    src = str(bpf_dir() / "rsttrace.bpf.c")
    errors = []
    for ringbuf in (False,) if perf_only else (True, False):
        flags = list(plan.cflags) + [f"-DRST_RING_PAGES={ring_pages}"]
        if ringbuf:
            flags.append("-DRST_USE_RINGBUF")
        if os.environ.get("RSTTRACE_BENCH_SYNTH"):
            # bench/ only: the synthetic event source of hooks/bench.h.
            flags.append("-DRST_BENCH_SYNTH")
        if not plan.hooks or "sock_send_length" not in plan.hooks:
            flags = [f for f in flags if f != "-DRST_HAVE_IO_TP"]
        try:
            bpf = _quiet(lambda: bcc.BPF(src_file=src, cflags=flags))
        except _Captured as e:
            errs = [ln for ln in e.stderr.splitlines() if "error" in ln.lower()]
            errors.append(f"{e} {errs[-1] if errs else ''}".strip())
            continue
        plan.ringbuf = ringbuf
        return Loaded(bpf, plan)
    raise BpfLoadError("could not load rsttrace's BPF programs: " + "; ".join(errors)
                       + " (run `rsttrace doctor` for details)")

