"""Building blocks of the benchmarks: the C load generators, tracers as real subprocesses, machine facts."""

from __future__ import annotations

import atexit
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tracer.build import build_scaffold
from tracer.layout import layout
from testbed.ready import NotReady, wait_ready
from testbed.scenarios import Netns

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
CACHE = Path("/var/cache/rsttrace/bench")
TCPSTATES = Path("/usr/sbin/tcpstates-bpfcc")
START_TIMEOUT = 60.0
STOP_TIMEOUT = 120.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
SYNTH_EVENTS_PER_INCIDENT = 7  # bpf/hooks/bench.h


class BenchError(RuntimeError):
    """A benchmark step failed; the message says which and why."""


# -- building ---------------------------------------------------------------------


def build(name: str) -> Path:
    """Compile bench/<name>.c into the cache unless up to date; return the binary."""
    src = BENCH_DIR / f"{name}.c"
    CACHE.mkdir(parents=True, exist_ok=True)
    binary = CACHE / name
    if binary.exists() and binary.stat().st_mtime_ns >= src.stat().st_mtime_ns:
        return binary
    cc = shutil.which(os.environ.get("CC", "gcc"))
    if cc is None:
        raise BenchError("no C compiler: install gcc")
    tmp = CACHE / f".{name}.{os.getpid()}.tmp"
    proc = subprocess.run(
        [cc, "-std=gnu11", "-O2", "-Wall", "-Wextra", "-o", str(tmp), str(src)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise BenchError(f"compiling {src} failed:\n{proc.stderr}")
    os.replace(tmp, binary)
    return binary


# -- the load generator -------------------------------------------------------------


def churn_netns(prefix: str = "rstbench") -> Netns:
    return Netns(prefix)


def prepare_netns(ns: Netns) -> None:
    # A wide port range: tens of thousands of connections per second cycle through it.
    ns.run("sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65535")


def run_churn(
    ns: Netns,
    *,
    seconds: float | None = None,
    count: int | None = None,
    unread_bp: int = 0,
    linger_bp: int = 0,
    rate: float | None = None,
    inflight: int = 32,
) -> dict:
    """Run bench/churn.c inside ns to completion and return its report plus the netns counters."""
    argv = [str(build("churn")), "-u", str(unread_bp), "-l", str(linger_bp), "-c", str(inflight)]
    if seconds:
        argv += ["-d", str(seconds)]
    if count:
        argv += ["-n", str(count)]
    if rate:
        argv += ["-r", str(rate)]
    before = ns.counters()
    out = ns.run(*argv).stdout
    after = ns.counters()
    rep = json.loads(out)
    rep["counters"] = {
        k: after.get(k, 0) - before.get(k, 0)
        for k in ("TcpExt.TCPAbortOnClose", "TcpExt.TCPAbortOnData", "Tcp.OutRsts")
    }
    return rep


def expected_mix(count: int, unread_bp: int, linger_bp: int) -> tuple[int, int]:
    """(unread, linger0) resets in a run of `count` connections: churn.c's deterministic mix."""
    resets = count * (unread_bp + linger_bp) // 10000
    unread = resets * unread_bp // (unread_bp + linger_bp) if resets else 0
    return unread, resets - unread


def run_synth(groups: int, rate: float, seconds: float, netns: Netns | None = None) -> dict:
    """Drive the synthetic source (rsttrace must run with RSTTRACE_BENCH_SYNTH=1)."""
    option = layout().constants["RST_BENCH_PRCTL"]
    argv = [str(build("synth")), hex(option), str(groups), str(rate), str(seconds)]
    if netns is not None:
        argv = ["ip", "netns", "exec", netns.name, *argv]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BenchError(f"synth failed: {proc.stderr.strip()}")
    return json.loads(proc.stdout)


# -- processes --------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of all of a process's threads so far."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _wait(pid: int, timeout: float) -> tuple[int, object] | None:
    deadline = time.monotonic() + timeout
    while True:
        got, status, usage = os.wait4(pid, os.WNOHANG)
        if got == pid:
            return status, usage
        if time.monotonic() > deadline:
            return None
        time.sleep(0.02)


@dataclass
class Stopped:
    """What a tracer left behind."""

    returncode: int
    cpu_s: float  # whole life, from wait4's rusage
    stderr: str
    lost: int
    received: int | None = None
    outfile: Path | None = None
    lines: int = 0
    alive_until_stop: bool = True


class TracerProc:
    """rsttrace (`python -m tracer`) or bcc's tcpstates as a real subprocess."""

    def __init__(self, kind: str, workdir: Path, args: tuple[str, ...] = (), env: dict | None = None):
        self.kind = kind
        self.dir = workdir
        self.args = args
        self.env = dict(os.environ, **(env or {}))
        self.ready = workdir / f"{kind}.ready"
        self.out = workdir / f"{kind}.out"
        self.err = workdir / f"{kind}.err"
        self.proc: subprocess.Popen | None = None
        self._lines = 0
        self._ready_evt = threading.Event()

    def argv(self) -> list[str]:
        if self.kind == "rsttrace":
            return [sys.executable, "-m", "tracer", "--json", "--ready-file", str(self.ready), *self.args]
        # -u: line by line, as on a terminal (and so the header tells us it is attached).
        return ["/usr/bin/python3", "-u", str(TCPSTATES), *self.args]

    def start(self) -> float:
        """Start and wait until it traces; return the seconds that took."""
        self.ready.unlink(missing_ok=True)
        t0 = time.monotonic()
        err = open(self.err, "wb")
        if self.kind == "rsttrace":
            out = open(self.out, "wb")
            self.proc = subprocess.Popen(self.argv(), stdout=out, stderr=err, env=self.env, cwd=REPO)
            out.close()
        else:
            self.env["BCC_KERNEL_SOURCE"] = str(tcpstates_scaffold())
            self.proc = subprocess.Popen(self.argv(), stdout=subprocess.PIPE, stderr=err, env=self.env)
            threading.Thread(target=self._count_lines, daemon=True).start()
        err.close()
        try:
            wait_ready(
                self._is_ready,
                self.proc.pid,
                self.proc.poll,
                lambda: self.err.read_text()[-2000:],
                self.proc.kill,
                what=self.kind,
                budget=START_TIMEOUT,
            )
        except NotReady as e:
            raise BenchError(str(e)) from None
        return time.monotonic() - t0

    def _is_ready(self) -> bool:
        return self.ready.exists() if self.kind == "rsttrace" else self._ready_evt.is_set()

    def _count_lines(self) -> None:
        # tcpstates prints its header once attached; the rest is counted and dropped.
        fd = self.proc.stdout.fileno()
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return
            self._lines += chunk.count(b"\n")
            if self._lines:
                self._ready_evt.set()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def rss(self) -> int:
        return rss_kb(self.proc.pid)

    def stop(self) -> Stopped:
        alive = self.proc.poll() is None
        waited = None
        if alive:
            # SIGINT first for tcpstates (its normal stop); explicit, since a process started
            # from a background shell inherits SIGINT ignored.
            self.proc.send_signal(signal.SIGTERM if self.kind == "rsttrace" else signal.SIGINT)
            waited = _wait(self.proc.pid, STOP_TIMEOUT if self.kind == "rsttrace" else 10)
            if waited is None and self.kind != "rsttrace":
                self.proc.send_signal(signal.SIGTERM)
                waited = _wait(self.proc.pid, 10)
            if waited is None:
                self.proc.kill()
                waited = _wait(self.proc.pid, 10)
        status, usage = waited if waited else (0, None)
        rc = os.waitstatus_to_exitcode(status) if waited else (self.proc.returncode or 0)
        self.proc.returncode = rc
        cpu = (usage.ru_utime + usage.ru_stime) if usage else 0.0
        stderr = self.err.read_text(errors="replace")
        if self.kind == "rsttrace":
            m = re.search(r"events: (\d+) received, (\d+) lost", stderr)
            if not m:
                raise BenchError(f"rsttrace printed no summary (exit {rc}): {stderr[-2000:]}")
            return Stopped(rc, cpu, stderr, int(m.group(2)), int(m.group(1)), self.out, alive_until_stop=alive)
        lost = sum(int(n) for n in re.findall(r"Possibly lost (\d+) samples", stderr))
        return Stopped(rc, cpu, stderr, lost, None, None, self._lines, alive)


_scaffold: Path | None = None


def tcpstates_scaffold() -> Path:
    """BCC_KERNEL_SOURCE for tcpstates on a host without kernel headers: rsttrace's scaffold plus
    the few headers tcpstates includes. Its tracepoint program reads only the tracepoint's
    fields (from tracefs), so these need just the constants it names."""
    global _scaffold
    if _scaffold is not None:
        return _scaffold
    dest = build_scaffold(platform.release())
    atexit.register(shutil.rmtree, dest, True)
    inc = dest / "include"
    (inc / "net").mkdir(exist_ok=True)
    (inc / "net" / "sock.h").write_text(
        "/* bench: what tcpstates' tracepoint program uses from kernel headers. */\n"
        "#define TASK_COMM_LEN 16\n#define IPPROTO_TCP 6\n#define AF_INET 2\n#define AF_INET6 10\n"
        "#define TCP_CLOSE 7\nstruct sock;\n"
    )
    (inc / "linux" / "tcp.h").write_text("/* bench: see net/sock.h */\n")
    (inc / "uapi" / "linux" / "ptrace.h").write_text("/* bench: see net/sock.h */\n")
    src = Path("/usr/include/linux/if_ether.h")  # bcc's proto.h wants it (linux-libc-dev)
    if not src.is_file():
        raise BenchError(f"{src} is missing: install linux-libc-dev")
    shutil.copy(src, inc / "uapi" / "linux" / "if_ether.h")
    _scaffold = dest
    return dest


def ensure_tcpstates() -> None:
    """Install Debian's bpfcc-tools (tcpstates) if missing."""
    if TCPSTATES.exists():
        return
    print("bench: installing bpfcc-tools (tcpstates)", file=sys.stderr)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "-o", "DPkg::Lock::Timeout=600", "install", "-y", "-qq", "--no-install-recommends", "bpfcc-tools"],
    ):
        if subprocess.run(cmd, env=env).returncode != 0:
            raise BenchError(f"{' '.join(cmd)} failed")
    if not TCPSTATES.exists():
        raise BenchError(f"bpfcc-tools installed but {TCPSTATES} is missing")


# -- incidents ---------------------------------------------------------------------------


def read_incidents(path: Path, netns: int | None = None) -> list[dict]:
    out = []
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            inc = json.loads(line)
            if netns is None or inc.get("netns") == netns:
                out.append(inc)
    return out


def check_incidents(incs: list[dict], unread: int, linger0: int, out_rsts: int | None = None) -> dict:
    """Compare rsttrace's incidents with the resets the generator made. out_rsts: the RSTs the
    namespace's kernel counted (Tcp.OutRsts). Under heavy churn the kernel sends a few the
    generator did not ask for (a SYN meeting a connection still closing on a recycled port):
    rsttrace must report those too, at most two incidents per RST (sender and receiver side),
    and nothing else."""
    kinds: dict[str, int] = {}
    for i in incs:
        kinds[i["kind"]] = kinds.get(i["kind"], 0) + 1
    aoc = [i for i in incs if i["kind"] == "abort-on-close"]
    made = [i for i in incs if i["kind"] in ("abort-on-close", "linger-zero")]
    bad_bytes = sum(1 for i in aoc if i["bytes_discarded"] != 64)
    victims_reset = sum(
        1
        for i in made
        if i.get("victim") and any(e["errno"] == "ECONNRESET" and e["call"] == "read" for e in i["victim"]["errors"])
    )
    stray = len(incs) - len(made)
    extra_rsts = max((out_rsts if out_rsts is not None else unread + linger0) - unread - linger0, 0)
    ok = (
        kinds.get("abort-on-close", 0) == unread
        and kinds.get("linger-zero", 0) == linger0
        and bad_bytes == 0
        and victims_reset == len(made)
        and (stray == 0 if not extra_rsts else 0 < stray <= 2 * extra_rsts)
    )
    return {
        "kinds": kinds,
        "expected": {"abort-on-close": unread, "linger-zero": linger0},
        "bytes_not_64": bad_bytes,
        "victims_read_econnreset": victims_reset,
        "other_incidents": stray,
        "kernel_rsts_not_asked_for": extra_rsts,
        "exact": ok,
    }


# -- the machine -------------------------------------------------------------------------


def cpu_jiffies() -> dict[str, int]:
    parts = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    return {n: int(v) for n, v in zip(names, parts)}


@dataclass
class LoadProbe:
    """/proc/loadavg and CPU steal over a stretch of time."""

    loadavg_before: str = ""
    loadavg_after: str = ""
    steal_pct: float = 0.0
    busy_pct: float = 0.0  # whole-machine CPU use, all cores, in percent of all cores
    _j0: dict = field(default_factory=dict)

    def begin(self) -> "LoadProbe":
        self.loadavg_before = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        self._j0 = cpu_jiffies()
        return self

    def end(self) -> "LoadProbe":
        j1 = cpu_jiffies()
        d = {k: j1[k] - self._j0.get(k, 0) for k in j1}
        total = sum(d.values()) or 1
        self.steal_pct = 100.0 * d.get("steal", 0) / total
        self.busy_pct = 100.0 * (total - d["idle"] - d["iowait"]) / total
        self.loadavg_after = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        return self

    def describe(self) -> dict:
        return {
            "loadavg_before": self.loadavg_before,
            "loadavg_after": self.loadavg_after,
            "steal_pct": round(self.steal_pct, 2),
            "busy_pct": round(self.busy_pct, 1),
        }


def other_load() -> list[str]:
    """The busiest processes that are not ours, to name the background load in the results."""
    proc = subprocess.run(["ps", "-eo", "pcpu,comm", "--sort=-pcpu", "--no-headers"], capture_output=True, text=True)
    return [" ".join(line.split()) for line in proc.stdout.splitlines()[:5]]


def machine() -> dict:
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    virt = (
        subprocess.run(["systemd-detect-virt"], capture_output=True, text=True).stdout.strip()
        if shutil.which("systemd-detect-virt")
        else "unknown"
    )
    try:
        import bcc

        bcc_version = getattr(bcc, "__version__", "?")
    except ImportError:
        bcc_version = "missing"
    return {
        "kernel": platform.release(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "mem_gb": round(mem_kb / 2**20, 1),
        "virt": virt or "none",
        "python": platform.python_version(),
        "bcc": bcc_version,
        "host": platform.node(),
    }


def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix=f"rstbench-{os.getpid()}-"))


# -- where the BPF time goes -------------------------------------------------------------

_libbpf = None


def _prog_name(prog_id: int) -> str:
    """The name of a loaded BPF program (bpf_prog_info.name, via libbpf)."""
    import ctypes

    global _libbpf
    if _libbpf is None:
        _libbpf = ctypes.CDLL("libbpf.so.1", use_errno=True)
    fd = _libbpf.bpf_prog_get_fd_by_id(ctypes.c_uint32(prog_id))
    if fd < 0:
        return f"prog {prog_id}"
    try:
        info = ctypes.create_string_buffer(256)  # a zeroed tail is accepted by the kernel
        size = ctypes.c_uint32(256)
        if _libbpf.bpf_obj_get_info_by_fd(fd, info, ctypes.byref(size)) != 0:
            return f"prog {prog_id}"
        return info.raw[64:80].split(b"\0", 1)[0].decode()  # offsetof(struct bpf_prog_info, name)
    finally:
        os.close(fd)


def bpf_prog_stats(pid: int) -> dict[str, tuple[int, int]]:
    """{program name: (run_cnt, run_time_ns)} for the BPF programs process `pid` holds
    (the counters advance while /proc/sys/kernel/bpf_stats_enabled is 1)."""
    out = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if "bpf-prog" not in os.readlink(f"/proc/{pid}/fd/{fd}"):
                continue
            text = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        info = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        name = _prog_name(int(info["prog_id"]))
        out[name] = (int(info.get("run_cnt", 0)), int(info.get("run_time_ns", 0)))
    return out


class BpfStats:
    """Turns kernel.bpf_stats_enabled on for a while (it costs a little on every run)."""

    PATH = Path("/proc/sys/kernel/bpf_stats_enabled")

    def __enter__(self) -> "BpfStats":
        self.old = self.PATH.read_text().strip()
        self.PATH.write_text("1")
        return self

    def __exit__(self, *exc) -> None:
        self.PATH.write_text(self.old)
