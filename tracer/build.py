"""How the running kernel's facts (tracer/kernel.py) become a BPF build: the struct offsets and
switches handed to the C side as -D flags, where bpf/ is, and the scaffold bcc compiles against."""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from .btf import FUNC, Btf, BtfError
from .errors import NoBtf
from .kernel import KernelFeatures

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


def cflags(feats: KernelFeatures, plan: str = "tracepoint") -> list[str]:
    """-D flags carrying every struct offset and flag bit the BPF code uses."""
    assert feats.btf is not None
    defs: dict[str, int] = {}
    try:
        for macro, struct_name, path in OFFSETS:
            defs[f"OFF_{macro}"] = feats.btf.offsetof(struct_name, path)
        for macro, struct_name, path in FIELDS:
            defs.update(_field_macros(feats.btf, macro, struct_name, path))
        for macro, struct_name, path in OPTIONAL_FIELDS:
            if feats.btf.has_member(struct_name, path):
                defs.update(_field_macros(feats.btf, macro, struct_name, path))
                defs[f"RST_HAVE_{macro}"] = 1
        flags = feats.btf.enum("sock_flags")
        for name in SOCK_FLAGS:
            defs[f"RST_{name}"] = flags[name]
    except (BtfError, KeyError) as e:
        raise NoBtf(f"the kernel's BTF lacks a layout rsttrace needs: {e}") from None
    defs.update(_context_defs(feats))
    if feats.io_errors_from == "sys_exit":
        try:
            for macro, struct_name, path in SYSEXIT_OFFSETS:
                defs[f"OFF_{macro}"] = feats.btf.offsetof(struct_name, path)
        except BtfError as e:
            raise NoBtf(f"the kernel's BTF lacks a layout rsttrace needs: {e}") from None
    return [f"-D{k}={v}" for k, v in defs.items()] + switches(feats, plan)


def _has_func(feats: KernelFeatures, name: str) -> bool:
    assert feats.btf is not None
    return feats.btf.find(FUNC, name) is not None


def _context_defs(feats: KernelFeatures) -> dict[str, int]:
    """What rst_context() (bpf/rsttrace.bpf.c) needs to tell a task's own doing from a
    softirq's: the task stack's size (THREAD_SIZE: 16 KiB on x86-64, doubled under KASAN)
    and, on x86-64, where the user registers sit at its top (below 16 bytes of padding
    with FRED) and the pt_regs fields read there."""
    assert feats.btf is not None
    size = 32768 if _has_func(feats, "kasan_check_range") else 16384
    defs = {"RST_THREAD_SIZE": size}
    if feats.arch == "x86_64":
        try:
            padding = 16 if _has_func(feats, "fred_entry_from_user") else 0
            defs["RST_TASK_REGS"] = size - padding - feats.btf.type_size(feats.btf.struct_id("pt_regs"))
            defs["OFF_REGS_ORIG_AX"] = feats.btf.offsetof("pt_regs", "orig_ax")
            defs["OFF_REGS_CS"] = feats.btf.offsetof("pt_regs", "cs")
        except BtfError:
            return {"RST_THREAD_SIZE": size}  # without it, a softirq over user mode looks like the task
    return defs


def switches(feats: KernelFeatures, plan: str = "tracepoint") -> list[str]:
    """The -D switches (not offsets) that adapt the C to this kernel and plan."""
    out = []
    if feats.send_reset_has_reason:
        out.append("-DRST_HAVE_REASON")
    if feats.has("inet_sk_error_report"):
        out.append("-DRST_HAVE_ERROR_REPORT")
    if feats.io_errors_from == "tracepoint":
        out.append("-DRST_HAVE_IO_TP")
    elif feats.io_errors_from == "sys_exit":
        out.append("-DRST_SYSEXIT_IO")
    if plan == "kprobe":
        args = feats.kprobe_args()
        assert isinstance(args, dict), args
        out.append("-DRST_PLAN_KPROBE")
        if not feats.send_reset_sees_nosk:
            out.append("-DRST_KP_NOSK")
        for macro, off in args.items():
            out.append(f"-DRST_KP_{macro}_OFF={off}")
    return out


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
