"""What the running kernel offers: BTF offsets, tracepoints, tracefs, and the bcc build scaffold."""

from __future__ import annotations

import atexit
import hashlib
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from . import tpformat
from .hooks import OPTIONAL_TRACEPOINTS, REQUIRED_TRACEPOINTS, TRACEPOINTS  # noqa: F401 (re-exported)
from .btf import FUNC, VMLINUX_BTF, Btf, BtfError
from .errors import NoBtf, NoTracefs, NoTracepoint

BPF_DIR_CANDIDATES = (
    Path(__file__).resolve().parent / "bpf",  # installed wheel (hatch force-include)
    Path(__file__).resolve().parent.parent / "bpf",  # source checkout
)

# (macro, struct, member path): byte offsets handed to the C side as -DOFF_<macro>.
OFFSETS = (
    ("TASK_STACK", "task_struct", "stack"),
    ("TASK_FLAGS", "task_struct", "flags"),
    ("TASK_PID", "task_struct", "pid"),
    ("TASK_EXIT_CODE", "task_struct", "exit_code"),
    ("TASK_NSPROXY", "task_struct", "nsproxy"),
    ("NSPROXY_NET", "nsproxy", "net_ns"),
    ("NET_INUM", "net", "ns.inum"),
    ("SK_NET", "sock_common", "skc_net"),
    ("SKC_DPORT", "sock_common", "skc_dport"),
    ("SKC_NUM", "sock_common", "skc_num"),
    ("SKC_DADDR", "sock_common", "skc_daddr"),
    ("SKC_RCV_SADDR", "sock_common", "skc_rcv_saddr"),
    ("SKC_V6_DADDR", "sock_common", "skc_v6_daddr"),
    ("SKC_V6_RCV_SADDR", "sock_common", "skc_v6_rcv_saddr"),
    ("SKC_FLAGS", "sock_common", "skc_flags"),
    ("SK_LINGERTIME", "sock", "sk_lingertime"),
    ("SK_ERR", "sock", "sk_err"),
    ("SK_SOCKET", "sock", "sk_socket"),
    ("SK_RCVQ_LEN", "sock", "sk_receive_queue.qlen"),
    ("INET_SPORT", "inet_sock", "inet_sport"),
    ("TCP_RCV_NXT", "tcp_sock", "rcv_nxt"),
    ("TCP_COPIED_SEQ", "tcp_sock", "copied_seq"),
    ("TCP_WRITE_SEQ", "tcp_sock", "write_seq"),
    ("TCP_SND_UNA", "tcp_sock", "snd_una"),
    ("TCP_RETRANS_STAMP", "tcp_sock", "retrans_stamp"),
    ("TCP_MSTAMP", "tcp_sock", "tcp_mstamp"),
    ("TCP_LINGER2", "tcp_sock", "linger2"),
    ("SOCKET_ALLOC_SOCKET", "socket_alloc", "socket"),
    ("SOCKET_ALLOC_INODE", "socket_alloc", "vfs_inode"),
    ("INODE_INO", "inode", "i_ino"),
    ("KSIGACTION_HANDLER", "k_sigaction", "sa.sa_handler"),
    ("SKB_HEAD", "sk_buff", "head"),
    ("SKB_NETWORK_HEADER", "sk_buff", "network_header"),
    ("SKB_TRANSPORT_HEADER", "sk_buff", "transport_header"),
    ("SKB_DEV", "sk_buff", "dev"),
    ("NETDEV_NET", "net_device", "nd_net"),
)

# Small or bit fields: -DOFF_/SHIFT_/MASK_<macro> to extract them from an aligned u32.
FIELDS = (
    ("SKC_FAMILY", "sock_common", "skc_family"),
    ("SKC_STATE", "sock_common", "skc_state"),
    ("SK_PROTOCOL", "sock", "sk_protocol"),
    ("SK_TYPE", "sock", "sk_type"),
    ("ICSK_RETRANSMITS", "inet_connection_sock", "icsk_retransmits"),
    ("ICSK_PROBES_OUT", "inet_connection_sock", "icsk_probes_out"),
)

# Fields only some kernels have: -DRST_HAVE_<macro> plus the field macros when present.
OPTIONAL_FIELDS = (
    # 6.7, "tcp: add support for usec resolution in TCP TS values": retrans_stamp may be in us.
    ("TCP_USEC_TS", "tcp_sock", "tcp_usec_ts"),
    # PREEMPT_RT (mainline 6.12): softirqs run in the task that raised them (or in ksoftirqd),
    # on its own stack; the task's softirq_disable_cnt says it is serving one.
    ("TASK_SOFTIRQ_CNT", "task_struct", "softirq_disable_cnt"),
)

# Bits of enum sock_flags the C side tests (values differ between kernels).
SOCK_FLAGS = ("SOCK_DEAD", "SOCK_DONE", "SOCK_LINGER")

# The peer's errors before 6.3 come from raw_syscalls:sys_exit (hooks/sysexit.h): the file
# table walk and the system call's registers. x86_64 only (system call numbers, pt_regs).
SYSEXIT_OFFSETS = (
    ("TASK_FILES", "task_struct", "files"),
    ("FILES_FDT", "files_struct", "fdt"),
    ("FDT_MAX_FDS", "fdtable", "max_fds"),
    ("FDT_FD", "fdtable", "fd"),
    ("FILE_INODE", "file", "f_inode"),
    ("FILE_PRIVATE_DATA", "file", "private_data"),
    ("INODE_MODE", "inode", "i_mode"),
    ("SOCKET_SK", "socket", "sk"),
    ("REGS_ORIG_AX", "pt_regs", "orig_ax"),
    ("REGS_DI", "pt_regs", "di"),
)
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


def bpf_dir() -> Path:
    for cand in BPF_DIR_CANDIDATES:
        if (cand / "rsttrace.h").is_file():
            return cand
    raise FileNotFoundError("rsttrace's BPF sources (bpf/rsttrace.h) are not installed")


def _field_macros(btf: Btf, macro: str, struct_name: str, path: str) -> dict[str, int]:
    m = btf.member(struct_name, path)
    if m.bitfield_size:
        bits = m.bitfield_size
    else:
        bits = m.size * 8
    word = (m.bit_offset // 32) * 4
    shift = m.bit_offset - word * 8
    if shift + bits > 32:
        raise BtfError(f"{struct_name}.{path} straddles a 32-bit word")
    return {f"OFF_{macro}": word, f"SHIFT_{macro}": shift, f"MASK_{macro}": (1 << bits) - 1}


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

    def cflags(self, plan: str = "tracepoint") -> list[str]:
        """-D flags carrying every struct offset and flag bit the BPF code uses."""
        assert self.btf is not None
        defs: dict[str, int] = {}
        try:
            for macro, struct_name, path in OFFSETS:
                defs[f"OFF_{macro}"] = self.btf.offsetof(struct_name, path)
            for macro, struct_name, path in FIELDS:
                defs.update(_field_macros(self.btf, macro, struct_name, path))
            for macro, struct_name, path in OPTIONAL_FIELDS:
                if self.btf.has_member(struct_name, path):
                    defs.update(_field_macros(self.btf, macro, struct_name, path))
                    defs[f"RST_HAVE_{macro}"] = 1
            flags = self.btf.enum("sock_flags")
            for name in SOCK_FLAGS:
                defs[f"RST_{name}"] = flags[name]
        except (BtfError, KeyError) as e:
            raise NoBtf(f"the kernel's BTF lacks a layout rsttrace needs: {e}") from None
        defs.update(self._context_defs())
        if self.io_errors_from == "sys_exit":
            try:
                for macro, struct_name, path in SYSEXIT_OFFSETS:
                    defs[f"OFF_{macro}"] = self.btf.offsetof(struct_name, path)
            except BtfError as e:
                raise NoBtf(f"the kernel's BTF lacks a layout rsttrace needs: {e}") from None
        return [f"-D{k}={v}" for k, v in defs.items()] + self.switches(plan)

    def _has_func(self, name: str) -> bool:
        assert self.btf is not None
        return self.btf.find(FUNC, name) is not None

    def _context_defs(self) -> dict[str, int]:
        """What rst_context() (bpf/rsttrace.bpf.c) needs to tell a task's own doing from a
        softirq's: the task stack's size (THREAD_SIZE: 16 KiB on x86-64, doubled under KASAN)
        and, on x86-64, where the user registers sit at its top (below 16 bytes of padding
        with FRED) and the pt_regs fields read there."""
        assert self.btf is not None
        size = 32768 if self._has_func("kasan_check_range") else 16384
        defs = {"RST_THREAD_SIZE": size}
        if self.arch == "x86_64":
            try:
                padding = 16 if self._has_func("fred_entry_from_user") else 0
                defs["RST_TASK_REGS"] = size - padding - self.btf.type_size(self.btf.struct_id("pt_regs"))
                defs["OFF_REGS_ORIG_AX"] = self.btf.offsetof("pt_regs", "orig_ax")
                defs["OFF_REGS_CS"] = self.btf.offsetof("pt_regs", "cs")
            except BtfError:
                return {"RST_THREAD_SIZE": size}  # without it, a softirq over user mode looks like the task
        return defs

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

    def switches(self, plan: str = "tracepoint") -> list[str]:
        """The -D switches (not offsets) that adapt the C to this kernel and plan."""
        out = []
        if self.send_reset_has_reason:
            out.append("-DRST_HAVE_REASON")
        if self.has("inet_sk_error_report"):
            out.append("-DRST_HAVE_ERROR_REPORT")
        if self.io_errors_from == "tracepoint":
            out.append("-DRST_HAVE_IO_TP")
        elif self.io_errors_from == "sys_exit":
            out.append("-DRST_SYSEXIT_IO")
        if plan == "kprobe":
            args = self.kprobe_args()
            assert isinstance(args, dict), args
            out.append("-DRST_PLAN_KPROBE")
            if not self.send_reset_sees_nosk:
                out.append("-DRST_KP_NOSK")
            for macro, off in args.items():
                out.append(f"-DRST_KP_{macro}_OFF={off}")
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


UAPI_FILES = ("linux/bpf_common.h",)


def build_scaffold(release: str, dest: Path | None = None) -> Path:
    """A directory bcc accepts as BCC_KERNEL_SOURCE: our shims, a generated version.h and
    a few uapi headers. No struct layout comes from here (they all come from BTF)."""
    dest = Path(dest or tempfile.mkdtemp(prefix="rsttrace-ksrc-"))
    shutil.copytree(bpf_dir() / "scaffold", dest, dirs_exist_ok=True)
    inc = dest / "include"
    for rel in UAPI_FILES:
        src = Path("/usr/include") / rel
        if not src.is_file():
            raise FileNotFoundError(f"{src} is missing: install linux-libc-dev")
        (inc / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, inc / rel)
    nums = [int("".join(ch for ch in part if ch.isdigit()) or 0) for part in release.split("-")[0].split(".")[:3]]
    nums += [0] * (3 - len(nums))
    code = (nums[0] << 16) + (nums[1] << 8) + min(nums[2], 255)
    (inc / "linux" / "version.h").write_text(
        f"#define LINUX_VERSION_CODE {code}\n"
        "#define KERNEL_VERSION(a, b, c) (((a) << 16) + ((b) << 8) + ((c) > 255 ? 255 : (c)))\n"
    )
    (dest / "arch" / "x86" / "include").mkdir(parents=True, exist_ok=True)
    return dest


CACHE_DIR = Path(os.environ.get("RSTTRACE_CACHE", "/var/cache/rsttrace"))


def scaffold_dir(release: str) -> Path:
    """The scaffold for this kernel, built once in the cache and named by a digest of what goes
    into it (building one per run left a directory in /tmp every time). Where the cache is not
    writable, a temporary one removed at exit."""
    h = hashlib.sha256(release.encode())
    root = bpf_dir() / "scaffold"
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes())
    for rel in UAPI_FILES:
        src = Path("/usr/include") / rel
        h.update(rel.encode() + b"\0" + (src.read_bytes() if src.is_file() else b""))
    dest = CACHE_DIR / f"ksrc-{h.hexdigest()[:16]}"
    if (dest / ".complete").is_file():
        return dest
    try:
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".ksrc-", dir=CACHE_DIR))
    except OSError:
        tmp = Path(tempfile.mkdtemp(prefix="rsttrace-ksrc-"))
        atexit.register(shutil.rmtree, tmp, True)
        return build_scaffold(release, tmp)
    try:
        build_scaffold(release, tmp)
        (tmp / ".complete").touch()
        os.rename(tmp, dest)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another run got there first (or a real error:
        if not (dest / ".complete").is_file():  # then say so)
            raise
    return dest
