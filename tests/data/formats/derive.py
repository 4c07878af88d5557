"""Rebuild the format files of kernels we could not boot from the two captured ones (see README)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Layout rules of the trace event ring record (x86_64): the common header, then the
# TP_STRUCT__entry fields in order, each aligned to its own size (arrays to their element).
SIZES = {"const void *": 8, "void *": 8, "int": 4, "__u16": 2, "__u8": 1, "__u64": 8, "char": 1}
SIGNED = {"int": 1, "char": None}

TCP_SK_SKB_NOFAMILY = [
    ("const void *", "skbaddr", 0),
    ("const void *", "skaddr", 0),
    ("int", "state", 0),
    ("__u16", "sport", 0),
    ("__u16", "dport", 0),
    ("__u8", "saddr", 4),
    ("__u8", "daddr", 4),
    ("__u8", "saddr_v6", 16),
    ("__u8", "daddr_v6", 16),
]
TCP_SK_NOFAMILY = [
    ("const void *", "skaddr", 0),
    ("__u16", "sport", 0),
    ("__u16", "dport", 0),
    ("__u8", "saddr", 4),
    ("__u8", "daddr", 4),
    ("__u8", "saddr_v6", 16),
    ("__u8", "daddr_v6", 16),
    ("__u64", "sock_cookie", 0),
]


def layout(fields: list[tuple[str, str, int]], char_signed: int) -> list[str]:
    out, off = [], 8
    for ctype, name, n in fields:
        size = SIZES[ctype]
        off = (off + size - 1) // size * size
        total = size * (n or 1)
        signed = SIGNED.get(ctype, 0)
        if signed is None:
            signed = char_signed
        decl = f"{ctype} {name}" + (f"[{n}]" if n else "")
        out.append(f"\tfield:{decl};\toffset:{off};\tsize:{total};\tsigned:{signed};")
        off += total
    return out


def header_of(text: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index("format:")
    return lines[start + 1 : start + 5]


def build(name: str, common: list[str], fields: list[str], fmt: str) -> str:
    return "\n".join([f"name: {name}", "ID: 0", "format:", *common, "", *fields, "", f"print fmt: {fmt}", ""])


def fields_of(text: str) -> list[str]:
    lines = text.splitlines()
    blank = lines.index("", lines.index("format:"))
    end = lines.index("", blank + 1)
    return lines[blank + 1 : end]


def fmt_of(text: str) -> str:
    return next(ln for ln in text.splitlines() if ln.startswith("print fmt: "))[len("print fmt: ") :]


def with_id0(text: str) -> str:
    return re.sub(r"^ID: \d+$", "ID: 0", text, flags=re.M)


def unsigned_char(text: str) -> str:
    """x86 builds with -funsigned-char since 6.2: char arrays print signed:0."""
    return re.sub(r"(field:char [^\n]*signed:)1;", r"\g<1>0;", text)


def no_dccp(fmt: str) -> str:
    return fmt.replace(' { 33, "IPPROTO_DCCP" },', "")


def with_dccp(fmt: str) -> str:
    return fmt.replace('{ 6, "IPPROTO_TCP" }, { 132', '{ 6, "IPPROTO_TCP" }, { 33, "IPPROTO_DCCP" }, { 132')


def no_mptcp(fmt: str) -> str:
    return fmt.replace(', { 262, "IPPROTO_MPTCP" }', "")


def reasons_612(rstreason_h: Path) -> str:
    """The __print_symbolic list of enum sk_rst_reason, in the order of include/net/rstreason.h."""
    text = rstreason_h.read_text()
    body = text[text.index("enum sk_rst_reason {") :]
    body = body[: body.index("};")]
    names = re.findall(r"^\s*SK_RST_REASON_(\w+),", body, flags=re.M)
    return ", ".join(f'{{ {i}, "{n}" }}' for i, n in enumerate(names))


def main(src612: Path | None) -> None:
    v61, v618 = HERE / "6.1", HERE / "6.18"
    read = lambda base, rel: (base / rel).read_text()  # noqa: E731
    common = header_of(read(v61, "tcp/tcp_send_reset"))
    state_sym = re.search(r"__print_symbolic\(REC->state, .*?\}\)", fmt_of(read(v61, "tcp/tcp_send_reset"))).group(0)
    out: dict[str, dict[str, str]] = {v: {} for v in ("5.4", "5.10", "5.15", "6.6", "6.12")}

    # tcp: tcp_event_sk_skb without `family` until 5.11 ("tcp: add family to tcp tracepoints"
    # is in 5.12); tcp_event_sk likewise; 6.10 gave tcp_send_reset its own event with `reason`.
    old_skb_fmt = (
        '"sport=%hu dport=%hu saddr=%pI4 daddr=%pI4 saddrv6=%pI6c daddrv6=%pI6c state=%s", '
        "REC->sport, REC->dport, REC->saddr, REC->daddr, REC->saddr_v6, REC->daddr_v6, " + state_sym
    )
    old_sk_fmt = (
        '"sport=%hu dport=%hu saddr=%pI4 daddr=%pI4 saddrv6=%pI6c daddrv6=%pI6c sock_cookie=%llx", '
        "REC->sport, REC->dport, REC->saddr, REC->daddr, REC->saddr_v6, REC->daddr_v6, REC->sock_cookie"
    )
    for v in ("5.4", "5.10"):
        out[v]["tcp/tcp_send_reset"] = build("tcp_send_reset", common, layout(TCP_SK_SKB_NOFAMILY, 1), old_skb_fmt)
        for tp in ("tcp_receive_reset", "tcp_destroy_sock"):
            out[v][f"tcp/{tp}"] = build(tp, common, layout(TCP_SK_NOFAMILY, 1), old_sk_fmt)
    for v in ("5.15", "6.6", "6.12"):
        for tp in ("tcp_receive_reset", "tcp_destroy_sock", "tcp_send_reset"):
            out[v][f"tcp/{tp}"] = with_id0(read(v61, f"tcp/{tp}"))
    sr = read(v618, "tcp/tcp_send_reset")
    if src612 is not None:
        fmt = fmt_of(sr)
        fmt = re.sub(
            r"__print_symbolic\(REC->reason, .*\)$",
            "__print_symbolic(REC->reason, " + reasons_612(src612 / "include/net/rstreason.h") + ")",
            fmt,
        )
        out["6.12"]["tcp/tcp_send_reset"] = build("tcp_send_reset", common, fields_of(sr), fmt)
    else:
        out["6.12"]["tcp/tcp_send_reset"] = with_id0(sr)

    # sock: inet_sock_set_state unchanged since 4.16 (MPTCP joined the protocol list with
    # IPPROTO_MPTCP in 5.6, DCCP left it in 6.16); inet_sk_error_report since 5.14;
    # sock_send_length/sock_recv_length since 6.3.
    iss = read(v61, "sock/inet_sock_set_state")
    for v in out:
        text = with_id0(iss)
        if v == "5.4":
            text = text.replace(fmt_of(iss), no_mptcp(fmt_of(iss)))
        out[v]["sock/inet_sock_set_state"] = text
    for v in ("5.15", "6.6", "6.12"):
        out[v]["sock/inet_sk_error_report"] = with_id0(read(v61, "sock/inet_sk_error_report"))
    for v in ("6.6", "6.12"):
        for tp in ("sock_send_length", "sock_recv_length"):
            text = with_id0(read(v618, f"sock/{tp}"))
            out[v][f"sock/{tp}"] = text.replace(fmt_of(text), with_dccp(fmt_of(text)))

    # signal, sched, irq, raw_syscalls: unchanged fields in this range, except that
    # sched_process_exit gained group_dead in 6.16 and char became unsigned on x86 in 6.2.
    for v in out:
        for rel in (
            "signal/signal_generate",
            "signal/signal_deliver",
            "sched/sched_process_exit",
            "irq/softirq_entry",
            "irq/softirq_exit",
            "raw_syscalls/sys_exit",
        ):
            text = with_id0(read(v61, rel))
            if v in ("6.6", "6.12"):
                text = unsigned_char(text)
            out[v][rel] = text

    for v, files in out.items():
        for rel, text in files.items():
            path = HERE / v / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else None)
