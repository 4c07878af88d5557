"""The attach plan: what to hook on this kernel, chosen by trying, then compile, load and attach."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field

from .errors import BpfLoadError, NoBcc, PlanUnavailable
from . import cgroups
from .hooks import HOOKS, KPROBES, OPTIONAL_TRACEPOINTS
from . import build
from .build import bpf_dir, scaffold_dir
from .kernel import NOSK_FUNCS, KernelFeatures

_KPROBE_TRIAL = "int kprobe__tcp_close(struct pt_regs *ctx) { return 0; }"
_FENTRY_TRIAL = "KFUNC_PROBE(tcp_close) { return 0; }"


def import_bcc():
    try:
        import bcc  # noqa: F401  (Debian: python3-bpfcc)
    except ImportError:
        raise NoBcc(
            "bcc's Python module is missing: apt-get install python3-bpfcc "
            "(and run rsttrace with a Python that sees it)"
        ) from None
    return bcc


@dataclass
class Trial:
    name: str
    ok: bool
    detail: str


@dataclass
class Plan:
    """What will be attached and why."""

    name: str  # "kprobe" | "tracepoint"
    trials: list[Trial] = field(default_factory=list)
    why: str = ""  # why this plan, in plain words
    hooks: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # optional tracepoints absent, with effect
    ringbuf: bool = True
    cflags: list[str] = field(default_factory=list)

    def describe(self) -> dict:
        return {
            "name": self.name,
            "why": self.why,
            "hooks": self.hooks,
            "ringbuf": self.ringbuf,
            "trials": [t.__dict__ for t in self.trials],
            "missing": self.missing,
        }


def _scaffold_env(feats: KernelFeatures) -> str:
    """Point bcc at our scaffold unless matching kernel headers exist."""
    build = f"/lib/modules/{feats.release}/build"
    if os.path.isdir(build) and "BCC_KERNEL_SOURCE" not in os.environ:
        return build
    if "BCC_KERNEL_SOURCE" not in os.environ or not os.path.isdir(os.environ["BCC_KERNEL_SOURCE"]):
        os.environ["BCC_KERNEL_SOURCE"] = str(scaffold_dir(feats.release))
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


PLANS = ("kprobe", "tracepoint")


def make_plan(feats: KernelFeatures, trials: list[Trial], force: str | None = None) -> Plan:
    """The plan for these features and trial results (no BPF here, so it can be tested
    against other kernels' features). force: None (automatic), "kprobe" or "tracepoint"."""
    kprobe_trial = next((t for t in trials if t.name == "kprobe"), None)
    kp_args = feats.kprobe_args()
    why_not = None
    if kprobe_trial is None or not kprobe_trial.ok:
        why_not = "the kernel refused the kprobe trial" if kprobe_trial else "kprobes were not tried"
    elif isinstance(kp_args, str):
        why_not = kp_args
    if force == "kprobe" and why_not:
        raise PlanUnavailable(f"--plan kprobe is not possible on this kernel: {why_not}")
    name = "kprobe" if force != "tracepoint" and not why_not else "tracepoint"
    plan = Plan(name=name, trials=list(trials))
    if force == "tracepoint":
        plan.why = "forced with --plan tracepoint"
    elif why_not:
        plan.why = why_not
    else:
        plan.why = "the kernel allows kprobes"
    tps = [h.name for h in HOOKS if h.is_tracepoint and not h.io and name in h.plans and feats.has(h.name)]
    io = feats.io_errors_from
    if io is not None:  # one source of the peer's failing calls: its tracepoints, or sys_exit
        tps += [h.name for h in HOOKS if h.io and (h.group == "raw_syscalls") == (io == "sys_exit")]
    plan.hooks = tps
    if name == "kprobe":
        assert isinstance(kp_args, dict)
        for func, _fn in KPROBES:
            if func in NOSK_FUNCS and (feats.send_reset_sees_nosk or NOSK_FUNCS[func] not in kp_args):
                continue
            plan.hooks.append(f"kprobe:{func}")
    plan.missing = [
        f"{tp}: no {what}"
        for tp, what in OPTIONAL_TRACEPOINTS.items()
        if not feats.has(tp) and not (tp.startswith("sock_") and io)
    ]
    if io is None:
        plan.missing.append("sock_send_length/sock_recv_length and sys_exit: no send/recv errors of the peer")
    if not feats.send_reset_sees_nosk and name == "tracepoint":
        plan.missing.append(
            "tcp_send_reset: no RSTs sent by TIME_WAIT sockets or for unknown "
            "connections (kernel before 6.10; the kprobe plan sees them)"
        )
    if name == "kprobe" and not feats.send_reset_sees_nosk and "kprobe:tcp_v6_send_reset" not in plan.hooks:
        plan.missing.append("tcp_v6_send_reset: not in BTF; no IPv6 RSTs without a socket")
    return plan


def choose_plan(feats: KernelFeatures, force: str | None = None, report_fentry: bool = False) -> Plan:
    """Try a kprobe, then build the plan from the result. fentry is tried only for `doctor`
    (report_fentry): no hook uses it, and each trial costs a compile at start-up."""
    bcc = import_bcc()
    _scaffold_env(feats)
    feats.require_tracepoints()
    trials: list[Trial] = []
    if force != "tracepoint":

        def kprobe():
            b = bcc.BPF(text=_KPROBE_TRIAL)
            b.cleanup()

        trials.append(_try("kprobe", kprobe))

    if report_fentry:

        def fentry():
            b = bcc.BPF(text=_FENTRY_TRIAL)
            b.cleanup()

        trials.append(_try("fentry", fentry))
    plan = make_plan(feats, trials, force)
    plan.cflags = build.cflags(feats, plan.name) + cgroups.cflags(feats.btf) + [f"-I{bpf_dir()}"]
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


def _attach_kprobes(bpf, plan: Plan) -> None:
    """bcc attaches the raw tracepoints by name; the kprobes are attached here, only those
    the plan lists (tcp_v6_send_reset may be absent, v4/v6 are not needed on 6.10+)."""
    for func, fn_name in KPROBES:
        if f"kprobe:{func}" in plan.hooks:
            _quiet(lambda: bpf.attach_kprobe(event=func, fn_name=fn_name))


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
        if os.environ.get("RSTTRACE_BENCH_NO_CLOSERS"):
            # bench/ only: without the closers LRU, to price it per connection.
            flags.append("-DRST_NO_CLOSERS")
        try:
            bpf = _quiet(lambda: bcc.BPF(src_file=src, cflags=flags))
        except _Captured as e:
            errs = [ln for ln in e.stderr.splitlines() if "error" in ln.lower()]
            errors.append(f"{e} {errs[-1] if errs else ''}".strip())
            continue
        try:
            _attach_kprobes(bpf, plan)
        except _Captured as e:
            bpf.cleanup()
            raise BpfLoadError(f"could not attach the kprobe plan's hooks: {e} (try --plan tracepoint)") from None
        plan.ringbuf = ringbuf
        return Loaded(bpf, plan)
    raise BpfLoadError(
        "could not load rsttrace's BPF programs: " + "; ".join(errors) + " (run `rsttrace doctor` for details)"
    )
