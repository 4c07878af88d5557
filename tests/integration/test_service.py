"""`rsttrace service` for real: rotation by size, the total cap, SIGHUP, a clean stop; under
systemd where the host runs it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from testbed import scenarios
from tracer.rotate import NAME
from tracer.tracefile import dumps

from .service_proc import CLI, Service, free_port, poll
from .tracer_proc import kernel_has_kprobes

pytestmark = pytest.mark.root

FILE = 8192
CAP = 3 * FILE
UNIT = Path(__file__).resolve().parents[2] / "packaging" / "systemd" / "rsttrace.service"


def records(path: Path) -> list[dict]:
    data = path.read_bytes()
    assert data.endswith(b"\n"), f"{path} ends with half a line"
    return [json.loads(line) for line in data.decode().splitlines()]


def trace_files(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if NAME.match(p.name))


def seq(p: Path) -> int:
    return int(NAME.match(p.name)["seq"])


def check_rotation(files: list[Path]) -> None:
    """The exact size rule between consecutive files, whole lines, a header each."""
    for f in files:
        assert f.stat().st_size <= FILE
        assert records(f)[0]["type"] == "header"
    for f, nxt in zip(files, files[1:]):
        if seq(nxt) != seq(f) + 1:
            continue  # the file between them was renamed away (SIGHUP): the rule links neighbours
        first = records(nxt)[1]
        assert f.stat().st_size + len(dumps(first).encode()) + 1 > FILE, (f, nxt)


def systemd_reason() -> str | None:
    if not Path("/run/systemd/system").is_dir():
        return "systemd is not PID 1 on this host (no /run/systemd/system): the service runs as a plain subprocess"
    if not shutil.which("systemd-run"):
        return "no systemd-run"
    return None


def run_service_checks(svc: Service, ns) -> None:
    unread = [1000 + 100 * i for i in range(8)]
    for n in unread:
        scenarios.unread_close(ns, unread=n)
    svc.wait_incidents(len(unread))
    files = trace_files(svc.dir)
    check_rotation(files)
    # The cap: oldest removed first (what is left are the newest, in sequence), and no more
    # than needed (each removed file was over FILE minus a line: the rest is close to CAP).
    seqs = [seq(f) for f in files]
    assert seqs == list(range(seqs[0], seqs[-1] + 1)) and seqs[0] > 1, seqs
    total = sum(f.stat().st_size for f in files)
    assert CAP - FILE < total <= CAP, (total, seqs)
    incidents = [r for f in files for r in records(f) if r["type"] == "incident"]
    assert incidents and [i["bytes_discarded"] for i in incidents] == unread[-len(incidents) :]

    # SIGHUP: logrotate renames the file being written, then asks for a new one.
    current = files[-1]
    rotated = current.with_name(current.name + ".1")
    os.rename(current, rotated)
    svc.proc.send_signal(signal.SIGHUP)
    new = poll("a new file after SIGHUP", lambda: [f for f in trace_files(svc.dir) if seq(f) > seq(current)])
    size = rotated.stat().st_size
    scenarios.unread_close(ns, unread=4321)
    svc.wait_incidents(len(unread) + 1)
    assert rotated.stat().st_size == size  # nothing more went to the renamed file
    after = [f for f in trace_files(svc.dir) if seq(f) >= seq(new[0])]
    assert [r["bytes_discarded"] for f in after for r in records(f) if r["type"] == "incident"] == [4321]
    records(rotated)  # whole lines

    # A clean stop: the batch in flight written, every file whole lines, the summary last.
    assert svc.stop() == 0, svc.stderr
    files = trace_files(svc.dir)
    check_rotation(files)
    for f in files + [rotated]:
        records(f)
    last = records(files[-1])[-1]
    assert last["type"] == "summary" and last["incidents"] == len(unread) + 1, last
    assert last["stats"]["lost"] == 0
    assert sum(f.stat().st_size for f in files) <= CAP
    err = svc.stderr
    assert "SIGHUP: now writing" in err and "rsttrace service: stopped; 9 incident(s)" in err, err


def test_service_rotates_caps_reopens_and_stops_cleanly(ns):
    port = free_port()
    with Service(
        "--netns",
        str(ns.inode),
        "--settle",
        "0.3",
        "--max-file-size",
        str(FILE),
        "--max-total-size",
        str(CAP),
        "--max-age",
        "1h",
        metrics_port=port,
    ) as svc:
        run_service_checks(svc, ns)


@pytest.mark.skipif(systemd_reason() is not None, reason=str(systemd_reason()))
def test_service_under_systemd(ns):  # pragma: no cover - needs systemd as PID 1
    """The shipped unit's sandbox and capabilities, applied by systemd-run to a test instance
    (its own directory, port and namespace filter): it traces, rotates, reopens on
    `systemctl kill -s HUP`, and `systemctl stop` leaves whole files and the summary."""
    keep = {
        "CapabilityBoundingSet",
        "NoNewPrivileges",
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "RestrictNamespaces",
        "RestrictAddressFamilies",
        "LockPersonality",
        "LimitMEMLOCK",
        "SystemCallArchitectures",
        "RestrictSUIDSGID",
    }
    props = [
        line.strip()
        for line in UNIT.read_text().splitlines()
        if "=" in line and not line.startswith("#") and line.split("=")[0] in keep
    ]
    # Not under /tmp: the unit has its own (PrivateTmp=yes), as a real service's would be.
    work = Path(f"/var/lib/rsttrace-test-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(mode=0o700, parents=True)
    d = work / "traces"
    unit = f"rsttrace-test-{os.getpid()}"
    port = free_port()
    ready = work / "ready"
    repo = Path(__file__).resolve().parents[2]
    subprocess.run(
        [
            "systemd-run",
            "--unit",
            unit,
            "--collect",
            "-p",
            f"ReadWritePaths={work} -/var/cache/rsttrace",
            *[x for p in props for x in ("-p", p)],
            "-E",
            f"PYTHONPATH={repo}",
            "--working-directory",
            str(repo),
            *CLI,
            "service",
            "--dir",
            str(d),
            "--ready-file",
            str(ready),
            "--netns",
            str(ns.inode),
            "--settle",
            "0.3",
            "--max-file-size",
            str(FILE),
            "--max-total-size",
            str(CAP),
            "--metrics",
            f"127.0.0.1:{port}",
        ],
        check=True,
    )
    try:
        poll("the unit ready", ready.exists, timeout=120)
        svc = Service(metrics_port=port, directory=d)
        for n in range(6):
            scenarios.unread_close(ns, unread=1000 + n)
        svc.wait_incidents(6)
        before = trace_files(d)
        check_rotation(before)
        # As logrotate does: rename the file being written, then SIGHUP for a new one (the
        # renamed file was closed by the signal, not by the size rule check_rotation checks).
        os.rename(before[-1], before[-1].with_name(before[-1].name + ".1"))
        subprocess.run(["systemctl", "kill", "-s", "HUP", unit], check=True)
        poll("a new file after SIGHUP", lambda: (now := trace_files(d)) and seq(now[-1]) > seq(before[-1]))
    finally:
        subprocess.run(["systemctl", "stop", unit], capture_output=True)
    try:
        files = trace_files(d)
        check_rotation(files)
        last = records(files[-1])[-1]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert last["type"] == "summary" and last["incidents"] == 6, last
    journal = subprocess.run(["journalctl", "-u", unit, "-o", "cat"], capture_output=True, text=True).stdout
    assert "rsttrace service: stopped; 6 incident(s)" in journal, journal


def test_unit_file_is_valid():
    """systemd-analyze checks the shipped unit (it needs no running systemd for this)."""
    if not shutil.which("systemd-analyze"):
        pytest.skip("no systemd-analyze (apt-get install systemd)")
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", str(UNIT)], capture_output=True, text=True)
    # verify complains about an ExecStart binary missing on a host without rsttrace installed.
    problems = [
        line
        for line in (proc.stdout + proc.stderr).splitlines()
        if line.strip()
        and "rsttrace: command not found" not in line
        and "is not executable" not in line
        and "Failed to prepare filename" not in line
    ]
    assert not problems, problems


@pytest.mark.skipif(kernel_has_kprobes(), reason="the kernel offers kprobes: --plan kprobe would load")
def test_kernel_side_failure_exits_non_zero_with_one_line(tmp_path):
    """No restart of its own: when the kernel refuses what the service needs, one line and a
    non-zero exit, for systemd to act on (Restart=on-failure)."""
    began = time.monotonic()
    proc = subprocess.run(
        [*CLI, "service", "--dir", str(tmp_path / "t"), "--plan", "kprobe"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 12, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "kprobe" in proc.stderr, proc.stderr
    assert time.monotonic() - began < 300


def _has_prctl_tracepoint() -> bool:
    from tracer.btf import Btf, BtfError

    try:
        return Btf.load().typedef_params("btf_trace_task_prctl_unknown") is not None
    except (OSError, BtfError):
        return False


@pytest.mark.skipif(
    not _has_prctl_tracepoint(),
    reason="task:task_prctl_unknown (the synthetic source's trigger, bench/synth.c) arrived in kernel 6.13",
)
def test_lost_events_are_logged_counted_and_summed():
    """A storm the consumer cannot keep up with (the bench's synthetic in-kernel source at
    ~300k events/s): the loss is logged (rate-limited), exported, and in the summary; the
    service stays up and stops cleanly."""
    from bench import harness as h

    h.build("synth")
    with h.churn_netns("rstlost") as ns:
        port = free_port()
        with Service("--netns", str(ns.inode), metrics_port=port, env={"RSTTRACE_BENCH_SYNTH": "1"}) as svc:
            h.run_synth(4, 60000, 2, netns=ns)
            lost = poll("lost events in the metrics", lambda: svc.metric("rsttrace_events_lost_total"))
            assert svc.proc.poll() is None
            assert svc.stop() == 0, svc.stderr
    err = svc.stderr
    lines = [ln for ln in err.splitlines() if "lost so far (ring buffer full)" in ln]
    assert len(lines) in (1, 2), err  # rate-limited: one line per 10 s
    files = trace_files(svc.dir)
    summary = records(files[-1])[-1]
    assert summary["type"] == "summary" and summary["stats"]["lost"] >= lost > 0
    assert f"{summary['stats']['lost']} lost" in err


def test_age_rotation_starts_new_files_only_after_writing(ns):
    """--max-age: a file written to for that long is closed; an idle one is left alone (no
    stream of empty files on a quiet host)."""
    with Service("--netns", str(ns.inode), "--settle", "0.3", "--max-age", "1", metrics_port=free_port()) as svc:
        scenarios.unread_close(ns, unread=1234)
        svc.wait_incidents(1)
        files = poll("a file closed by age", lambda: len(trace_files(svc.dir)) >= 2 and trace_files(svc.dir))
        first = records(files[0])
        assert [r["bytes_discarded"] for r in first if r["type"] == "incident"] == [1234]
        # The file after it holds only its header while nothing happens: it is not rotated.
        newest = trace_files(svc.dir)[-1]
        assert [r["type"] for r in records(newest)] == ["header"]
        poll("the idle file to outlive --max-age", lambda: time.time() - newest.stat().st_mtime > 3, timeout=30)
        assert trace_files(svc.dir)[-1] == newest
        assert svc.stop() == 0, svc.stderr
    assert [r["type"] for r in records(newest)] == ["header", "summary"]
