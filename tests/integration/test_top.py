"""`rsttrace top` for real, in an 80x24 tmux pane: the numbers of a known workload, then q."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from testbed import scenarios
from testbed.ready import wait_ready

from .service_proc import CLI, free_port, metric, poll

pytestmark = [pytest.mark.root, pytest.mark.skipif(not shutil.which("tmux"), reason="no tmux (apt-get install tmux)")]
REPO = Path(__file__).resolve().parents[2]


class Pane:
    """A private tmux server (-L) with one 80x24 pane running argv."""

    def __init__(self, argv: list[str]) -> None:
        self.sock = f"rsttrace-top-{os.getpid()}"
        self.argv = argv

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.sock, *args], check=True, capture_output=True, text=True).stdout

    def __enter__(self) -> "Pane":
        cmd = f"cd {shlex.quote(str(REPO))} && exec {shlex.join(self.argv)}"
        self.tmux("-f", "/dev/null", "new-session", "-d", "-s", "top", "-x", "80", "-y", "24", cmd)
        self.tmux("set-option", "-t", "top", "remain-on-exit", "on")
        return self

    def exit_status(self, pid: int) -> str | None:
        """As dead(), or, once the program has exited but the tmux server has not reaped it yet
        (a zombie: seen next to a busy VM for over 30 s), its status from /proc."""
        dead = self.dead()
        if dead:
            return dead
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None  # reaped: tmux says it next time
        if fields[0] != "Z":
            return None
        code = int(fields[49])  # field 52, exit_code, as waitpid(2) reports it
        return f"signal {code & 0x7F}" if code & 0x7F else str(code >> 8)

    def pid(self) -> int:
        return int(self.tmux("list-panes", "-t", "top", "-F", "#{pane_pid}").strip())

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "top")

    def dead(self) -> str | None:
        """The exit status once the program ended, else None."""
        out = (
            self.tmux("list-panes", "-t", "top", "-F", "#{pane_dead}|#{pane_dead_status}|#{pane_dead_signal}")
            .strip()
            .split("|")
        )
        if len(out) < 3 or out[0] != "1":
            return None
        if out[2]:
            return f"signal {out[2]}"
        return out[1] or None  # dead, status not filled in yet: ask again

    def __exit__(self, *exc) -> None:
        subprocess.run(["tmux", "-L", self.sock, "kill-server"], capture_output=True)


def where_stuck(pid: int) -> str:
    """Each thread's state and kernel wait channel (what a process that does not exit waits for)."""
    out = []
    for task in sorted(Path(f"/proc/{pid}/task").glob("*")):
        try:
            stat = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
            out.append(
                f"  thread {task.name} {(task / 'comm').read_text().strip()}: {stat} {(task / 'wchan').read_text()}"
            )
        except OSError as e:
            out.append(f"  thread {task.name}: {e}")
    return f"process {pid}:\n" + "\n".join(out)


def test_top_shows_a_known_workload_and_quits_on_q(ns):
    tmp = Path(tempfile.mkdtemp(prefix="rsttrace-top-"))
    ready = tmp / "ready"
    plan = os.environ.get("RSTTRACE_TEST_PLAN")
    port = free_port()
    argv = [
        *CLI,
        "top",
        "--netns",
        str(ns.inode),
        "--settle",
        "2",
        "--window",
        "60",
        "--metrics",
        f"127.0.0.1:{port}",
        "--ready-file",
        str(ready),
        *(["--plan", plan] if plan else []),
    ]
    with Pane(argv) as pane:
        wait_ready(ready, pane.pid(), pane.dead, pane.screen, what="rsttrace top")
        assert pane.dead() is None, pane.screen()
        killed = [scenarios.unread_close(ns, unread=n) for n in (1000, 2000, 3000)]
        lived = [scenarios.unread_close(ns, unread=500, nosignal=True) for _ in range(2)]
        screen = poll(
            "5 incidents on screen",
            lambda: (s := pane.screen()) and "5 incidents" in s and "rst_client" in s and s,
            timeout=30,
        )
        rows = screen.splitlines()
        assert len(rows) <= 24 and max(len(r) for r in rows) <= 80
        assert "bytes discarded 7000" in screen and "SIGPIPE deaths 3" in screen and "lost 0" in screen, screen
        # 5 in the last 60 s: 0.083/s, shown to one decimal
        assert any(r.split()[:3] == ["abort-on-close", "0.1", "5"] for r in rows), screen
        for res, nbytes, deaths in [(r, r.bytes_unread, 1) for r in killed] + [(r, 500, 0) for r in lived]:
            for who in (f"rst_server[{res.server_pid}]", f"rst_client[{res.client_pid}]"):
                line = next((r for r in rows if who in r), None)
                assert line is not None, (who, screen)
                cell = line[line.index(who) :].split()[:4]
                assert cell == [who, "1", str(nbytes), str(deaths)], (who, line)
        # --metrics works in top too (the same counters as the service's).
        assert metric(port, "rsttrace_incidents_total", kind="abort-on-close") == 5
        assert metric(port, "rsttrace_sigpipe_deaths_total") == 3
        pid = pane.pid()
        pane.tmux("send-keys", "-t", "top", "q")
        try:
            status = poll("top to quit on q", lambda: pane.exit_status(pid), timeout=30)
        except AssertionError as e:  # say where it is stuck, for the next person
            raise AssertionError(f"{e}\n{where_stuck(pid)}\n{pane.screen()}") from None
        assert status == "0", pane.screen()
        final = pane.screen()
        assert "5 incident(s); 0 event(s) lost" in final, final
