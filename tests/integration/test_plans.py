"""What differs between kernels and plans, asserted per detected feature (root, real sockets)."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from testbed import scenarios
from tracer.kernel import KernelFeatures
from testbed.scenarios import Proc

from .tracer_proc import Tracer, expected_plan

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def bins():
    return scenarios.build_workloads()


@pytest.fixture
def ns():
    with scenarios.Netns("rstplan") as n:
        yield n


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_refused_connection_reset_without_socket(ns, bins):
    """connect() to a port nobody listens on: the RST has no socket behind it. Kernels
    before 6.10 do not report it at tcp:tcp_send_reset, so the tracepoint plan only sees
    the client receive it; the kprobe plan (tcp_v4_send_reset) and 6.10+ see who sent it."""
    feats = KernelFeatures.probe()
    port = free_port()
    with Tracer("--netns", str(ns.inode)) as t:
        with Proc(ns, [bins / "rst_client", "127.0.0.1", str(port)]) as client:
            assert client.wait() != 0
        incidents, err, rc = t.stop()
        records = t.records()
    assert rc == 0, err
    plan = records[0]["plan"]["name"]
    assert plan == expected_plan()
    sees_sender = plan == "kprobe" or feats.send_reset_sees_nosk
    sent = [r for r in records if r["type"] == "event" and r["kind"] == "send_reset"]
    if sees_sender:
        assert len(sent) == 1
        ev = sent[0]
        assert sorted(ev["flags"]) == ["nosk", "passive"]
        assert (ev["laddr"], ev["lport"], ev["raddr"]) == ("127.0.0.1", port, "127.0.0.1")
        assert ev["netns"] == ns.inode
        assert ev["reason"] == ("NO_SOCKET" if feats.send_reset_has_reason else None)
    else:
        assert sent == []
    assert len(incidents) == 1
    inc = incidents[0]
    # The kind does not depend on seeing the sender: the victim was in SYN_SENT.
    assert inc["kind"] == "connection-refused"
    assert inc["local"] == {"addr": "127.0.0.1", "port": port}
    assert inc["netns"] == ns.inode
    v = inc["victim"]
    assert (v["addr"], v["state"], v["sk_err"]) == ("127.0.0.1", "SYN_SENT", "ECONNREFUSED")
    assert v["port"] == inc["remote"]["port"] and v["port"] > 0


def test_forced_kprobe_plan_where_kprobes_are_refused():
    import subprocess
    import sys

    from tracer.errors import ExitStatus

    from .tracer_proc import kernel_has_kprobes

    if kernel_has_kprobes():
        pytest.skip("this kernel allows kprobes (the suite runs on the kprobe plan here)")
    r = subprocess.run(
        [sys.executable, "-m", "tracer", "--plan", "kprobe", "--duration", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == ExitStatus.NO_PLAN
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        "rsttrace: error: --plan kprobe is not possible on this kernel: the kernel refused the kprobe trial"
    ]


def test_kprobe_plan_compiles_and_passes_the_verifier_here():
    """Where kprobes cannot attach (this CI host) the kprobe plan's programs still compile
    against this kernel's BTF offsets and load; the VM suite attaches them for real."""
    import bcc

    from tracer.build import bpf_dir, cflags
    from tracer.probes import Trial, _scaffold_env, make_plan

    feats = KernelFeatures.probe()
    _scaffold_env(feats)
    plan = make_plan(feats, [Trial("kprobe", True, "assumed for this test")], None)
    assert plan.name == "kprobe"
    b = bcc.BPF(
        src_file=str(bpf_dir() / "rsttrace.bpf.c"),
        cflags=cflags(feats, plan.name) + [f"-I{bpf_dir()}", "-DRST_USE_RINGBUF"],
    )
    try:
        for fn in ("rst_kp_tcp_close", "rst_kp_send_active_reset"):
            assert b.load_func(fn, bcc.BPF.KPROBE).fd >= 0
    finally:
        b.cleanup()


def test_doctor_says_how_context_is_told_and_what_this_kernel_lacks():
    """doctor names how a task's own doing is told from a softirq's here (PREEMPT_RT or the IRQ
    stack), and every gap of this kernel with what the user loses."""
    feats = KernelFeatures.probe()
    r = subprocess.run([sys.executable, "-m", "tracer", "doctor"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert f"who acted (task or softirq): {feats.context_method()}" in out
    plan = "kprobe" if any(line.startswith("chosen plan: kprobe") for line in out) else "tracepoint"
    for loss in feats.losses(plan):
        assert f"this kernel lacks {loss.what}: {loss.lost}" in out
