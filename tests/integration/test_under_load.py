"""Attribution that does not depend on timing: every kind's core scenario, with every CPU busy.

A CI run next to other VMs (load 7-11 on 2 cores) left victims unnamed, gave a SIGPIPE fate
`none` to a client that was killed and missed the tracer's start-up deadline. Here stress-ng
keeps every CPU busy (RSTTRACE_LOAD_PER_CPU CPU hogs per CPU, 4 unless told: a load of about
8 on 2 cores, like that CI run; plus one small disk writer), started once for the module and
checked running (every worker alive, CPUs under 10% idle) before any scenario.

Each test runs its scenario twice, each time under its own tracer: once with the load paused
(SIGSTOP to its process group: a quiet machine) and once under it. The loaded run must give
exactly the expected incidents (expect.py, the per-kind tests' assertions; nothing loosened for
a slow machine) and the same incidents as the quiet run, compared as multisets of what must not
depend on timing (kind, culprit, bytes, victim and owner with their failing calls and SIGPIPE
fate). The loaded run must really have been loaded (CPUs under 10% idle over it), so a pass
cannot come from a load generator that died. A miss prints the loaded run's raw events and
whether the quiet run met the expectation (if not, the expectation or the tracer changed, not
the load's doing).

Fairly shared busy CPUs do not hold a victim back for long (the scheduler favours a task that
wakes after sleeping); a CPU quota does. RSTTRACE_LOAD_STARVE=1 adds test_victim_starved_of_cpu,
the victim side in a busy cgroup at its CPU limit (see there).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

# The expectations' bare asserts explain themselves (pytest rewrites them as in a test module).
pytest.register_assert_rewrite("tests.integration.expect")

from testbed import scenarios  # noqa: E402

from tests.vm.test_compare import differences  # noqa: E402

from . import expect, incident_dump  # noqa: E402
from .tracer_proc import TIMEOUT_SCALE, Tracer  # noqa: E402

pytestmark = pytest.mark.root

LOAD_PER_CPU = int(os.environ.get("RSTTRACE_LOAD_PER_CPU", "4"))
# A CPU that is idle this much of a test's time was not kept busy.
MAX_IDLE = 0.10
# Rounds of the whole set (RSTTRACE_LOAD_ROUNDS=5 to hunt a rare miss).
ROUNDS = range(int(os.environ.get("RSTTRACE_LOAD_ROUNDS", "1")))


def cpu_times() -> tuple[int, int]:
    """(idle + iowait, total) jiffies of all CPUs together, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is already in user)
    return fields[3] + fields[4], sum(fields[:8])


def idle_fraction(before: tuple[int, int], after: tuple[int, int]) -> float:
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total else 1.0


def worker_states(pid: int) -> dict[int, tuple[str, str]]:
    """pid -> (comm, state letter) of pid's children."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
        if int(rest[1]) == pid and rest[0] != "Z":
            out[int(entry.name)] = (comm, rest[0])
    return out


@dataclass
class Load:
    proc: subprocess.Popen
    cpus: int
    hogs: int

    def hog_states(self) -> list[str]:
        return [st for comm, st in worker_states(self.proc.pid).values() if comm == "stress-ng-cpu"]

    def check_running(self) -> None:
        assert self.proc.poll() is None, f"stress-ng exited ({self.proc.returncode})"
        states = self.hog_states()
        assert len(states) == self.hogs, f"{len(states)} of {self.hogs} stress-ng CPU workers alive"
        assert "T" not in states, "stress-ng CPU workers still stopped"

    def _poll(self, done, what: str) -> None:
        deadline = time.monotonic() + 20 * TIMEOUT_SCALE
        while not done():
            if self.proc.poll() is not None:
                pytest.fail(f"stress-ng exited ({self.proc.returncode}): {self.proc.stderr.read()}")
            if time.monotonic() > deadline:
                pytest.fail(f"stress-ng: {what} not within {20 * TIMEOUT_SCALE}s: {worker_states(self.proc.pid)}")
            time.sleep(0.02)  # polling the workers' state, not waiting for an effect

    def wait_busy(self) -> None:
        """Every worker exists and runs, and the CPUs are measurably busy."""
        last = [cpu_times()]

        def busy() -> bool:
            time.sleep(0.25)  # a measuring window for the CPU counters, not waiting for an effect
            now, before = cpu_times(), last[0]
            last[0] = now
            states = self.hog_states()
            return len(states) == self.hogs and "T" not in states and idle_fraction(before, now) < MAX_IDLE

        self._poll(busy, f"{self.cpus} CPU(s) kept busy by {self.hogs} workers")

    @contextlib.contextmanager
    def paused(self):
        """A quiet machine for a while: every worker stopped (SIGSTOP to the load's own process
        group), then let go again."""
        os.killpg(self.proc.pid, signal.SIGSTOP)
        try:
            self._poll(
                lambda: set(st for _, st in worker_states(self.proc.pid).values()) <= {"T"}, "every worker stopped"
            )
            yield
        finally:
            os.killpg(self.proc.pid, signal.SIGCONT)
        self.wait_busy()

    @contextlib.contextmanager
    def running(self):
        """The load runs as this starts, still runs as it ends, and kept the CPUs busy between."""
        self.check_running()
        before = cpu_times()
        started = len(Tracer.started)
        yield
        STARTS.extend(Tracer.started[started:])
        idle = idle_fraction(before, cpu_times())
        self.check_running()
        assert idle < MAX_IDLE, f"CPUs {idle:.0%} idle: this did not run under load"


# (wall s, CPU s) of each loaded tracer start-up, reported when the load ends.
STARTS: list[tuple[float, float]] = []


@pytest.fixture(scope="module")
def load(request):
    if shutil.which("stress-ng") is None:
        pytest.fail("stress-ng is not installed (./run.sh installs it; apt-get install stress-ng)")
    cpus = os.cpu_count() or 1
    hogs = cpus * LOAD_PER_CPU
    tmp = tempfile.mkdtemp(prefix="rsttrace-load-")
    # Its own session and process group: paused, resumed and ended as a group, nobody else's.
    proc = subprocess.Popen(
        [
            "stress-ng",
            "--cpu",
            str(hogs),
            "--cpu-load",
            "100",
            "--hdd",
            "1",
            "--hdd-bytes",
            "16m",
            "--temp-path",
            tmp,
            "--timeout",
            "0",
            "--quiet",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    gen = Load(proc, cpus, hogs)
    try:
        gen.wait_busy()
        yield gen
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGCONT)  # a stopped group does not act on SIGTERM
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10 * TIMEOUT_SCALE)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
        capture = request.config.pluginmanager.get_plugin("capturemanager")
        if STARTS and capture is not None:
            with capture.global_and_fixture_disabled():
                walls, cpu = [w for w, _ in STARTS], [c for _, c in STARTS]
                print(
                    f"\nunder load ({hogs} CPU hogs on {cpus} CPUs): {len(STARTS)} tracer start-ups took "
                    f"{min(walls):.1f}-{max(walls):.1f}s wall for {min(cpu):.1f}-{max(cpu):.1f}s of CPU"
                )


@pytest.fixture(params=ROUNDS, ids=lambda r: f"round{r}")
def loaded_ns(request, load):
    with scenarios.Netns("rstload") as n:
        yield n


def free_port() -> int:
    return random.randint(20000, 60000)


def cmp_form(incidents: list[dict]) -> list[dict]:
    """What must not change with the machine's load: who ended the connection, what it cost,
    who suffered and how. Not the reset's reason or the ending socket's state, which tell
    which of two kernel paths answered (TIME_WAIT or the orphan: a question of timing), nor
    times and counts of retransmissions."""

    def side(s):
        if s is None:
            return None
        return {
            "pid": s["pid"],
            "comm": s["comm"],
            "state": s.get("state"),
            "sigpipe": s.get("sigpipe"),
            "exit_signal": s.get("exit_signal"),
            "errors": [{"call": e["call"], "errno": e["errno"], "pid": e["pid"]} for e in s["errors"]],
        }

    return [
        {
            "kind": i["kind"],
            "culprit": i["culprit"],
            "bytes_discarded": i.get("bytes_discarded"),
            "ended_with": i.get("ended_with"),
            "local": i["local"],
            "remote": i["remote"],
            "victim": side(i["victim"]),
            "owner": side(i.get("owner")),
        }
        for i in incidents
    ]


@contextlib.contextmanager
def shown(t: Tracer, label: str = ""):
    """A failed expectation shows the incidents and the raw events they were made from
    (the trace file, kept, is named too)."""
    try:
        yield
    except AssertionError as e:
        records = t.records() if t.trace.exists() else []
        lines = [json.dumps(r, sort_keys=True) for r in records if r.get("type") in ("event", "incident")]
        raise AssertionError(f"{e}\n{label}trace {t.trace}:\n  " + "\n  ".join(lines)) from e


def quiet_vs_loaded(quiet: list[dict], loaded: list[dict]) -> list[str]:
    """What differs between the two runs' incidents, as multisets (incident_dump.canonical)."""
    q, l = (incident_dump.canonical(incident_dump.normalise(cmp_form(x))) for x in (quiet, loaded))
    return [d.replace(": host ", ": quiet ", 1).replace(", guest ", ", loaded ", 1) for d in differences(q, l)]


def judge(quiet_t: Tracer, t: Tracer, quiet: tuple, loaded: tuple, expectation) -> None:
    """Exactly the expected incidents under load, and the same as the quiet run's. A miss shows
    the loaded run's raw events and says whether the quiet run meets the expectation (if it does
    not either, the expectation or the tracer changed, not the load's doing); a difference
    between the runs shows both runs' events."""
    try:
        expectation(*quiet)
        verdict = "the quiet run meets the expectation"
    except AssertionError as e:
        verdict = f"the quiet run fails it too ({(str(e).splitlines() or ['assert'])[0]}): not the load"
    with shown(t, f"{verdict}\nloaded run's "):
        expectation(*loaded)
    with shown(quiet_t, "quiet run's "), shown(t, "loaded run's "):
        diffs = quiet_vs_loaded(quiet[1], loaded[1])
        assert diffs == [], "quiet and loaded runs differ:\n  " + "\n  ".join(diffs)


def traced_run(ns, scenario, *args):
    with Tracer("--netns", str(ns.inode), *args) as t:
        res = scenario()
        incidents, err, rc = t.stop()
        records = t.records()
    assert rc == 0, err
    return t, res, incidents, records


def traced(load, ns, scenario, expectation, *args):
    """The scenario once with the load paused, once under it (each under a tracer confined to
    ns): the same incidents both times, and exactly the expected ones under load. A miss shows
    the raw events of the loaded run, and says whether the quiet run passes."""
    with load.paused():
        quiet_t, quiet_res, quiet, quiet_records = traced_run(ns, scenario, *args)
    with load.running():
        t, res, loaded, records = traced_run(ns, scenario, *args)
    judge(quiet_t, t, (quiet_res, quiet, quiet_records), (res, loaded, records), expectation)


# -- the kinds ----------------------------------------------------------------------------


@pytest.mark.parametrize("fate", list(expect.UNREAD_FATES))
def test_abort_on_close(load, loaded_ns, fate):
    client = expect.UNREAD_FATES[fate][0]
    traced(
        load,
        loaded_ns,
        lambda: scenarios.unread_close(loaded_ns, **client),
        lambda res, incs, _: expect.abort_on_close(incs, res, loaded_ns, fate),
    )


def test_linger_zero(load, loaded_ns):
    traced(
        load, loaded_ns, lambda: scenarios.linger_zero(loaded_ns), lambda res, incs, _: expect.linger_zero(incs, res)
    )


@pytest.mark.parametrize("sig", list(expect.KILL_SIGNALS))
def test_process_killed_with_unread_data(load, loaded_ns, sig):
    signum = expect.KILL_SIGNALS[sig]
    traced(
        load,
        loaded_ns,
        lambda: scenarios.killed_server(loaded_ns, sig=signum, unread=True),
        lambda res, incs, _: expect.killed_with_unread_data(incs, res, signum),
    )


def test_process_killed_after_reading(load, loaded_ns):
    traced(
        load,
        loaded_ns,
        lambda: scenarios.killed_server(loaded_ns, sig=signal.SIGKILL, unread=False),
        lambda res, incs, _: expect.killed_after_reading(incs, res),
    )


def test_socket_destroyed(load, loaded_ns):
    traced(
        load,
        loaded_ns,
        lambda: scenarios.destroyed(loaded_ns),
        lambda res, incs, _: expect.socket_destroyed(incs, res[0], res[1]),
    )


def test_linger2_abort(load, loaded_ns):
    traced(
        load,
        loaded_ns,
        lambda: scenarios.linger2_abort(loaded_ns),
        lambda res, incs, _: expect.linger2_abort(incs, res),
    )


def test_connection_refused(load, loaded_ns):
    port = free_port()
    traced(
        load,
        loaded_ns,
        lambda: scenarios.refused(loaded_ns, port=port),
        lambda res, incs, _: expect.connection_refused(incs, res, port),
    )


def test_write_after_close(load, loaded_ns):
    traced(
        load,
        loaded_ns,
        lambda: scenarios.write_after_close(loaded_ns),
        lambda res, incs, _: expect.write_after_close(incs, res),
    )


def _clean(how):
    def check(res, incs, records):
        if how == "half-close":
            assert res.client_lines[-2:] == ["eof 4", "done"]
        else:
            assert (res.client_returncode, res.server_returncode) == (0, 0)
        expect.silent(incs, records)

    return check


@pytest.mark.parametrize("how", ["readall", "lingering", "half-close"])
def test_clean_endings_stay_silent(load, loaded_ns, how):
    scenario = (
        (lambda: scenarios.half_close(loaded_ns))
        if how == "half-close"
        else (lambda: scenarios.clean_close(loaded_ns, mode=how))
    )
    traced(load, loaded_ns, scenario, _clean(how))


def close_wait_run(ns):
    wait = 10 * TIMEOUT_SCALE
    with Tracer("--netns", str(ns.inode), "--close-wait", "1", "--close-wait-every", "0.5") as t:
        with scenarios.close_wait(ns) as run:
            first = t.wait_incident(timeout=wait)
            run.server.send("close")
            run.server.expect("closed")
            second = t.wait_incident(timeout=wait)
            run.server.send("exit")
            run.server.wait()
        incs, err, rc = t.stop()
    assert rc == 0, err
    return t, incs, first, second, run


def test_close_wait_leak(load, loaded_ns):
    with load.paused():
        quiet_t, quiet = close_wait_run(loaded_ns)[:2]
    with load.running():
        t, incs, first, second, run = close_wait_run(loaded_ns)
    with shown(t, "loaded run's "):
        expect.close_wait_leak(incs, first, second, run, preexisting=False)
    with shown(quiet_t, "quiet run's "), shown(t, "loaded run's "):
        diffs = quiet_vs_loaded(quiet, incs)
        assert diffs == [], "quiet and loaded runs differ:\n  " + "\n  ".join(diffs)


def two_hosts_run(load, scenario, expectation):
    """Like traced(), for the scenarios between two namespaces joined by a link (a fresh pair
    each run: the scenario unplugs or firewalls one), under a host-wide tracer with a port filter."""

    def once():
        port = free_port()
        with scenarios.Hosts("rstlh") as hosts, Tracer("-P", str(port)) as t:
            res = scenario(hosts, port, t)
            incs, err, rc = t.stop()
            records = t.records()
        assert rc == 0, err
        return t, (res, hosts, port), incs, records

    with load.paused():
        quiet_t, quiet_res, quiet, quiet_records = once()
    with load.running():
        t, res, loaded, records = once()
    judge(quiet_t, t, (quiet_res, quiet, quiet_records), (res, loaded, records), expectation)


@pytest.mark.parametrize("keepalive", [False, True], ids=["retransmit", "keepalive"])
def test_peer_goes_silent(load, keepalive):
    def scenario(hosts, port, t):
        return scenarios.peer_timeout(hosts, keepalive, port=port, before_cleanup=t.stop)

    def check(got, incs, _):
        res, hosts, port = got
        expect.peer_went_silent(incs, res, hosts, port, keepalive)

    two_hosts_run(load, scenario, check)


def test_crash_and_reboot(load):
    old = {}

    def scenario(hosts, port, t):
        old[port] = hosts.b.inode
        return scenarios.crash_reboot(hosts, port=port)

    def check(got, incs, records):
        res, hosts, port = got
        expect.crash_and_reboot(incs, records, res, hosts, port, old[port])

    two_hosts_run(load, scenario, check)


# -- victims starved of CPU --------------------------------------------------------------------
#
# Busy CPUs shared fairly do not delay a victim much: up to 192 hogs on 2 CPUs the victim's
# first failing call came at most ~0.2 s after the RST. A victim held to a CPU quota (a container
# with a CPU limit; a guest whose vCPU the host does not run) can come back to its socket later
# than the tracer's settle time while the tracer itself runs. These tests run the
# core scenarios with the test's own process and the workloads it starts in a cgroup limited to
# STARVE_QUOTA_US of CPU per STARVE_PERIOD_US, which a CPU hog of its own uses up early in each
# period: a busy container at its CPU limit. The tracer, started before, stays outside.

# On by default since the correlator holds an incident while its victim holds its socket
# (Correlator.hold_ns); RSTTRACE_LOAD_STARVE=0 leaves these out.
STARVE = os.environ.get("RSTTRACE_LOAD_STARVE", "1") == "1"
STARVE_PERIOD_US = 1_000_000
STARVE_QUOTA_US = int(os.environ.get("RSTTRACE_LOAD_STARVE_QUOTA_US", "10000"))


def _cpu_cgroup_root() -> tuple[str, Path] | None:
    """("v2", mount) where cgroup v2 offers the cpu controller, else ("v1", the cpu hierarchy)."""
    mounts = [line.split()[1:3] for line in Path("/proc/mounts").read_text().splitlines()]
    for where, fstype in mounts:
        controllers = Path(where, "cgroup.controllers")
        if fstype == "cgroup2" and controllers.exists() and "cpu" in controllers.read_text().split():
            return "v2", Path(where)
    for where, fstype in mounts:
        if fstype == "cgroup" and Path(where, "cpu.cfs_quota_us").exists():
            return "v1", Path(where)
    return None


class CpuLimit:
    """A cgroup of its own with a CPU quota; join() moves this process (its threads, and the
    children it starts from then on) in, leave() back where it was."""

    def __init__(self, period_us: int, quota_us: int) -> None:
        found = _cpu_cgroup_root()
        if found is None:
            pytest.skip("no cgroup cpu controller (v2 cpu.max or v1 cpu.cfs_quota_us) to limit the victims")
        self.version, root = found
        self.home = root / self._current(root)
        self.dir = root / f"rsttrace-starved-{os.getpid()}"
        self.dir.mkdir(exist_ok=True)
        if self.version == "v2":
            if "cpu" not in (root / "cgroup.subtree_control").read_text().split():
                (root / "cgroup.subtree_control").write_text("+cpu")
            (self.dir / "cpu.max").write_text(f"{quota_us} {period_us}")
        else:
            (self.dir / "cpu.cfs_period_us").write_text(str(period_us))
            (self.dir / "cpu.cfs_quota_us").write_text(str(quota_us))

    def _current(self, root: Path) -> str:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if (self.version == "v2" and controllers == "") or "cpu" in controllers.split(","):
                return path.lstrip("/")
        return ""

    def join(self) -> None:
        (self.dir / "cgroup.procs").write_text(str(os.getpid()))

    def leave(self) -> None:
        (self.home / "cgroup.procs").write_text(str(os.getpid()))

    def remove(self) -> None:
        deadline = time.monotonic() + 10 * TIMEOUT_SCALE
        while True:
            try:
                self.dir.rmdir()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)  # polling for the last workload to be reaped, not waiting for an effect

    def throttled(self) -> int:
        """How many times the quota ran out so far."""
        text = (self.dir / "cpu.stat").read_text()
        return int(dict(line.split() for line in text.splitlines()).get("nr_throttled", 0))


@pytest.fixture
def starved():
    if not STARVE:
        pytest.skip("RSTTRACE_LOAD_STARVE=0: the scenarios with the victims held to a CPU quota are off")
    if shutil.which("stress-ng") is None:
        pytest.fail("stress-ng is not installed (./run.sh installs it; apt-get install stress-ng)")
    limit = CpuLimit(STARVE_PERIOD_US, STARVE_QUOTA_US)
    hog = None
    try:
        limit.join()
        try:
            hog = subprocess.Popen(
                ["stress-ng", "--cpu", "1", "--timeout", "0", "--quiet"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            limit.leave()
        deadline = time.monotonic() + 20 * TIMEOUT_SCALE
        while limit.throttled() < 2:  # the hog runs the quota out, period after period
            if hog.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the CPU hog in {limit.dir} never ran the quota out (exit {hog.poll()})")
            time.sleep(0.05)  # polling the cgroup's counter, not waiting for an effect
        yield limit
    finally:
        limit.leave()
        if hog is not None and hog.poll() is None:
            os.killpg(hog.pid, signal.SIGTERM)
            try:
                hog.wait(10 * TIMEOUT_SCALE)
            except subprocess.TimeoutExpired:
                os.killpg(hog.pid, signal.SIGKILL)
                hog.wait()
        limit.remove()


STARVED = {
    "abort-on-close": (
        lambda ns: scenarios.unread_close(ns),
        lambda res, incs, ns: expect.abort_on_close(incs, res, ns, "default"),
    ),
    "abort-on-close-nosignal": (
        lambda ns: scenarios.unread_close(ns, nosignal=True),
        lambda res, incs, ns: expect.abort_on_close(incs, res, ns, "nosignal"),
    ),
    "linger-zero": (lambda ns: scenarios.linger_zero(ns), lambda res, incs, ns: expect.linger_zero(incs, res)),
    "process-killed": (
        lambda ns: scenarios.killed_server(ns, sig=signal.SIGKILL, unread=True),
        lambda res, incs, ns: expect.killed_with_unread_data(incs, res, signal.SIGKILL),
    ),
    "socket-destroyed": (
        lambda ns: scenarios.destroyed(ns),
        lambda res, incs, ns: expect.socket_destroyed(incs, res[0], res[1]),
    ),
}


@pytest.mark.parametrize("kind", list(STARVED))
def test_victim_starved_of_cpu(starved, kind):
    scenario, expectation = STARVED[kind]
    with scenarios.Netns("rststarve") as ns:
        with Tracer("--netns", str(ns.inode)) as t:
            throttled = starved.throttled()
            starved.join()
            try:
                res = scenario(ns)
            finally:
                starved.leave()
            assert starved.throttled() > throttled, "the CPU quota never held the scenario back"
            incs, err, rc = t.stop()
        assert rc == 0, err
        with shown(t, "victim side held to a CPU quota; "):
            expectation(res, incs, ns)
