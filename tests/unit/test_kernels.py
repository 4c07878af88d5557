"""Plan choice and decoding for kernels 5.4 to 6.18, from their format files (no root, no BPF)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from tracer import build, tpformat
from tracer.errors import PlanUnavailable
from tracer.events import Decoder
from tracer.kernel import KernelFeatures
from tracer.layout import layout
from tracer.probes import Trial, make_plan

FORMATS = Path(__file__).resolve().parent.parent / "data" / "formats"
VERSIONS = ("5.4", "5.10", "5.15", "6.1", "6.6", "6.12", "6.18")
KPROBE_OK = [Trial("kprobe", True, "loaded and attached")]
KPROBE_REFUSED = [Trial("kprobe", False, "not traceable")]


def functions(version: str) -> dict[str, list[tuple[str, str]]]:
    """C prototypes -> [(name, type)] the way tracer/btf.py describes them (no const)."""
    out = {}
    for line in (FORMATS / version / "functions").read_text().splitlines():
        name, args = re.match(r"(\w+)\((.*)\)", line).groups()
        params = []
        for arg in args.split(","):
            arg = arg.strip().replace("const ", "")
            m = re.match(r"(.*?)(\w+)$", arg)
            ctype = m.group(1).strip().replace("gfp_t", "unsigned int")
            params.append((m.group(2), ctype.replace(" *", " *")))
        out[name] = params
    return out


def feats(version: str) -> KernelFeatures:
    return KernelFeatures.from_tree(version, FORMATS / version, functions(version))


# version: (reason field, sock_*_length, inet_sk_error_report, tcp_send_reset sees no-socket RSTs)
FACTS = {
    "5.4": (False, False, False, False),
    "5.10": (False, False, False, False),
    "5.15": (False, False, True, False),
    "6.1": (False, False, True, False),
    "6.6": (False, True, True, False),
    "6.12": (True, True, True, True),
    "6.18": (True, True, True, True),
}


@pytest.mark.parametrize("version", VERSIONS)
def test_features_per_version(version):
    f = feats(version)
    reason, io_tp, err_report, nosk = FACTS[version]
    assert f.send_reset_has_reason is reason
    assert f.has_io_tracepoints is io_tp
    assert f.has("inet_sk_error_report") is err_report
    assert f.send_reset_sees_nosk is nosk
    assert f.io_errors_from == ("tracepoint" if io_tp else "sys_exit")
    f.require_tracepoints()  # every version has what rsttrace cannot do without


@pytest.mark.parametrize("version", VERSIONS)
def test_tracepoint_plan_switches_and_hooks(version):
    f = feats(version)
    reason, io_tp, err_report, nosk = FACTS[version]
    plan = make_plan(f, KPROBE_REFUSED)
    assert plan.name == "tracepoint" and plan.why == "the kernel refused the kprobe trial"
    sw = build.switches(f, "tracepoint")
    assert ("-DRST_HAVE_REASON" in sw) is reason
    assert ("-DRST_HAVE_IO_TP" in sw) is io_tp
    assert ("-DRST_SYSEXIT_IO" in sw) is (not io_tp)
    assert ("-DRST_HAVE_ERROR_REPORT" in sw) is err_report
    assert not [s for s in sw if "KP" in s]
    assert ("sys_exit" in plan.hooks) is (not io_tp)
    assert ("sock_send_length" in plan.hooks) is io_tp
    assert ("inet_sk_error_report" in plan.hooks) is err_report
    assert not [h for h in plan.hooks if h.startswith("kprobe:")]
    # The tracepoint plan says what it cannot see on kernels before 6.10.
    assert any("TIME_WAIT" in m for m in plan.missing) is (not nosk)
    assert any("inet_sk_error_report" in m for m in plan.missing) is (not err_report)


@pytest.mark.parametrize("version", VERSIONS)
def test_kprobe_plan_argument_positions_from_prototypes(version):
    f = feats(version)
    reason, _io, _err, nosk = FACTS[version]
    plan = make_plan(f, KPROBE_OK)
    assert plan.name == "kprobe"
    sw = build.switches(f, "kprobe")
    # from_tree() has no BTF: the argument position stands in for the pt_regs offset.
    assert "-DRST_PLAN_KPROBE" in sw and "-DRST_KP_CLOSE_SK_OFF=0" in sw and "-DRST_KP_AR_SK_OFF=0" in sw
    reason_pos = {"6.12": 1, "6.18": 2}.get(version)
    assert [s for s in sw if s.startswith("-DRST_KP_AR_REASON_OFF")] == (
        [f"-DRST_KP_AR_REASON_OFF={reason_pos}"] if reason_pos else []
    )
    kprobes = [h for h in plan.hooks if h.startswith("kprobe:")]
    if nosk:
        # tcp:tcp_send_reset reports every RST since 6.10: no v4/v6 kprobes, no double events.
        assert kprobes == ["kprobe:tcp_close", "kprobe:tcp_send_active_reset"]
        assert "-DRST_KP_NOSK" not in sw and not [s for s in sw if "_V4_" in s or "_V6_" in s]
    else:
        assert kprobes == [
            "kprobe:tcp_close",
            "kprobe:tcp_send_active_reset",
            "kprobe:tcp_v4_send_reset",
            "kprobe:tcp_v6_send_reset",
        ]
        assert {
            "-DRST_KP_NOSK",
            "-DRST_KP_V4_SK_OFF=0",
            "-DRST_KP_V4_SKB_OFF=1",
            "-DRST_KP_V6_SK_OFF=0",
            "-DRST_KP_V6_SKB_OFF=1",
        } <= set(sw)
        assert not plan.missing or not any("TIME_WAIT" in m for m in plan.missing)


def test_forced_plans():
    f = feats("6.1")
    assert make_plan(f, KPROBE_OK, force="tracepoint").name == "tracepoint"
    assert make_plan(f, [], force="tracepoint").why == "forced with --plan tracepoint"
    with pytest.raises(
        PlanUnavailable, match="^--plan kprobe is not possible on this kernel: the kernel refused the kprobe trial$"
    ):
        make_plan(f, KPROBE_REFUSED, force="kprobe")


def test_kprobe_plan_needs_the_functions_in_btf():
    f = feats("6.1")
    del f.funcs["tcp_send_active_reset"]
    plan = make_plan(f, KPROBE_OK)
    assert (plan.name, plan.why) == ("tracepoint", "tcp_send_active_reset is not in the kernel's BTF")
    f = feats("6.1")
    del f.funcs["tcp_v6_send_reset"]  # IPv6 as a module: its BTF is not in vmlinux
    plan = make_plan(f, KPROBE_OK)
    assert plan.name == "kprobe" and "kprobe:tcp_v6_send_reset" not in plan.hooks
    assert plan.missing == ["tcp_v6_send_reset: not in BTF; no IPv6 RSTs without a socket"]


def test_other_architectures_keep_tracepoints():
    f = KernelFeatures.from_tree("6.1", FORMATS / "6.1", functions("6.1"), arch="aarch64")
    assert make_plan(f, KPROBE_OK).why == "no kprobe argument registers known for aarch64"
    assert f.io_errors_from is None
    assert "-DRST_SYSEXIT_IO" not in build.switches(f)


@pytest.mark.parametrize("version", VERSIONS)
def test_formats_parse_and_name_the_fields_rsttrace_relies_on(version):
    sr = tpformat.load(FORMATS / version, "tcp_send_reset")
    assert sr.names[:3] == ["skbaddr", "skaddr", "state"]
    assert sr.field("skaddr").size == 8
    iss = tpformat.load(FORMATS / version, "inet_sock_set_state")
    assert iss.names[:3] == ["skaddr", "oldstate", "newstate"]
    assert iss.symbols("newstate")["7"] == "TCP_CLOSE"
    sg = tpformat.load(FORMATS / version, "signal_generate")
    assert sg.names == ["sig", "errno", "code", "comm", "pid", "group", "result"]
    assert sg.field("comm").signed is (version in ("5.4", "5.10", "5.15", "6.1"))
    assert tpformat.load(FORMATS / version, "sys_exit").names == ["id", "ret"]


def test_reason_names_of_the_format_match_the_decoder():
    """6.12/6.18 print the reason with __print_symbolic: the decoder names a raw reason
    value the same way, given the kernel's enum (from BTF on a live kernel)."""
    for version in ("6.12", "6.18"):
        symbols = tpformat.load(FORMATS / version, "tcp_send_reset").symbols("reason")
        assert symbols["11"] == "TCP_ABORT_ON_CLOSE" and symbols["1"] == "NO_SOCKET"
        dec = Decoder({int(k): v for k, v in symbols.items()})
        raw = dec.struct()
        raw.kind, raw.reason, raw.family = 2, 11, 2
        assert dec.decode(raw).reason == "TCP_ABORT_ON_CLOSE"
    # Before 6.10 there is no reason: the C side sends RST_REASON_NONE, decoded as None.
    dec = Decoder({})
    raw = dec.struct()
    raw.kind, raw.reason = 2, layout().constants["RST_REASON_NONE"]
    assert dec.decode(raw).reason is None


def test_derived_layout_reproduces_captured_files():
    spec = importlib.util.spec_from_file_location("derive", FORMATS / "derive.py")
    derive = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(derive)
    with_family = list(derive.TCP_SK_SKB_NOFAMILY)
    with_family.insert(5, ("__u16", "family", 0))
    captured = (FORMATS / "6.1" / "tcp" / "tcp_send_reset").read_text()
    assert derive.layout(with_family, 1) == derive.fields_of(captured)


def test_scaffold_built_once_per_content_and_nothing_left_in_tmp(tmp_path, monkeypatch):
    """Every start used to leave a copy of the scaffold in /tmp."""
    monkeypatch.setattr(build, "CACHE_DIR", tmp_path / "cache")
    first = build.scaffold_dir("6.18.4-test")
    assert first.parent == tmp_path / "cache" and (first / ".complete").is_file()
    assert "LINUX_VERSION_CODE 397828" in (first / "include" / "linux" / "version.h").read_text()
    assert build.scaffold_dir("6.18.4-test") == first
    other = build.scaffold_dir("6.1.0-50-amd64")
    assert other != first
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted([first.name, other.name])
