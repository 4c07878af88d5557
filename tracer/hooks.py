"""Every kernel hook rsttrace attaches, in one table: plan choice (probes.make_plan), `doctor`,
the tracepoint-format checks (tpformat, kernel.KernelFeatures) and the README's hook table
(tests/unit/test_hooks.py holds it to this) all read it. A new hook is one entry here, its
handler in bpf/hooks/, and its tests."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Hook:
    name: str  # the tracepoint's name, or the kernel function a kprobe attaches to
    group: str  # tracefs group (events/<group>/<name>); "kprobe" for kprobes
    required: bool  # no plan without it
    plans: tuple[str, ...]  # the plans that attach it
    gives: str  # what rsttrace learns from it (doctor, README)
    since: str = ""  # the kernel release it arrived in, where that is later than 5.4
    io: bool = False  # one of the sources of the peer's failing calls (one is chosen)
    handler: str = ""  # the BPF function (kprobes: hooks/kprobe.h); tracepoints: RAW_TRACEPOINT_PROBE(name)

    @property
    def is_tracepoint(self) -> bool:
        return self.group != "kprobe"

    @property
    def label(self) -> str:
        return f"{self.group}:{self.name}"


BOTH = ("kprobe", "tracepoint")
HOOKS = (
    Hook(
        "inet_sock_set_state",
        "sock",
        True,
        BOTH,
        "every state change: the close with unread bytes or linger 0, killed owners, FIN closes (the closers cache)",
    ),
    Hook("tcp_destroy_sock", "tcp", True, BOTH, "the end of a followed socket's life (its owner's close or exit)"),
    Hook(
        "tcp_send_reset",
        "tcp",
        True,
        BOTH,
        "an RST sent (with its reason from 6.10; without a full socket only from 6.10)",
    ),
    Hook("tcp_receive_reset", "tcp", True, BOTH, "an RST received: the victim's socket and state"),
    Hook("signal_generate", "signal", True, BOTH, "SIGPIPE raised by a send, stashed per thread"),
    Hook("sched_process_exit", "sched", True, BOTH, "deaths by signal"),
    Hook("inet_sk_error_report", "sock", False, BOTH, "timeouts and error reports", since="5.14"),
    Hook("signal_deliver", "signal", False, BOTH, "SIGPIPE handled by a handler"),
    Hook("sock_send_length", "sock", False, BOTH, "the peer's send errors", since="6.3", io=True),
    Hook("sock_recv_length", "sock", False, BOTH, "the peer's recv errors", since="6.3", io=True),
    Hook("sys_exit", "raw_syscalls", False, BOTH, "the peer's failing send/recv calls before 6.3 (x86_64)", io=True),
    Hook(
        "tcp_close", "kprobe", True, ("kprobe",), "the close itself, with the unread bytes", handler="rst_kp_tcp_close"
    ),
    Hook(
        "tcp_send_active_reset",
        "kprobe",
        True,
        ("kprobe",),
        "an active RST and who sent it",
        handler="rst_kp_send_active_reset",
    ),
    Hook(
        "tcp_v4_send_reset",
        "kprobe",
        False,
        ("kprobe",),
        "IPv4 RSTs without a full socket, before 6.10",
        handler="rst_kp_v4_send_reset",
    ),
    Hook(
        "tcp_v6_send_reset",
        "kprobe",
        False,
        ("kprobe",),
        "IPv6 RSTs without a full socket, before 6.10",
        handler="rst_kp_v6_send_reset",
    ),
)

TRACEPOINTS = tuple(h.name for h in HOOKS if h.is_tracepoint)
REQUIRED_TRACEPOINTS = tuple(h.name for h in HOOKS if h.is_tracepoint and h.required)
# Optional tracepoints with a tracefs event of their own (not sys_exit, which is every call's).
OPTIONAL_TRACEPOINTS = {
    h.name: h.gives + (f" (kernel {h.since}+)" if h.since else "")
    for h in HOOKS
    if h.is_tracepoint and not h.required and h.group != "raw_syscalls"
}
TRACEPOINT_GROUPS = {h.name: h.group for h in HOOKS if h.is_tracepoint}
KPROBES = tuple((h.name, h.handler) for h in HOOKS if not h.is_tracepoint)


def by_name(name: str) -> Hook:
    return next(h for h in HOOKS if h.name == name)


def readme_table() -> list[str]:
    """The README's hook table (tests/unit/test_hooks.py keeps the README equal to it)."""
    rows = ["| hook | required | plans | since | gives |", "|---|---|---|---|---|"]
    for h in HOOKS:
        rows.append(
            f"| `{h.label}` | {'yes' if h.required else 'no'} | {', '.join(h.plans)} | {h.since or '-'} | {h.gives} |"
        )
    return rows
