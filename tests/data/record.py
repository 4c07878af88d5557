"""Re-record the event streams the unit tests replay (root; run from the project root):

    sudo .venv/bin/python -m tests.data.record [NAME ...]

Each runs a scenario from testbed/scenarios.py under the real tracer and keeps its trace file
(header, events, incidents, summary) as tests/data/NAME.jsonl.
"""

from __future__ import annotations

import random
import shutil
import signal
import sys
from pathlib import Path

from tests.integration.tracer_proc import Tracer
from tests.integration.test_stories import early_reply
from testbed import scenarios

DATA = Path(__file__).parent


def _in_ns(fn, *args):
    def run(name):
        with scenarios.Netns("rstrec") as ns, Tracer("--netns", str(ns.inode), *args) as t:
            fn(ns) if not args else fn(ns, t)
            t.stop()
            shutil.copy(t.trace, DATA / f"{name}.jsonl")

    return run


def _hosts(fn):
    def run(name):
        port = random.randint(20000, 60000)
        with scenarios.Hosts("rstrec") as h, Tracer("-P", str(port)) as t:
            fn(h, port, t)
            t.stop()
            shutil.copy(t.trace, DATA / f"{name}.jsonl")

    return run


def _close_wait(ns, t):
    with scenarios.close_wait(ns) as run:
        t.wait_incident()
        run.server.send("close")
        run.server.expect("closed")


SCENARIOS = {
    "unread_default": _in_ns(lambda ns: scenarios.unread_close(ns)),
    "unread_nosignal": _in_ns(lambda ns: scenarios.unread_close(ns, nosignal=True)),
    "clean_lingering": _in_ns(lambda ns: scenarios.clean_close(ns, mode="lingering")),
    "linger_zero": _in_ns(lambda ns: scenarios.linger_zero(ns)),
    "killed_unread": _in_ns(lambda ns: scenarios.killed_server(ns, sig=signal.SIGTERM, unread=True)),
    "killed_fin": _in_ns(lambda ns: scenarios.killed_server(ns, sig=signal.SIGKILL)),
    "destroyed": _in_ns(lambda ns: scenarios.destroyed(ns)),
    "linger2": _in_ns(lambda ns: scenarios.linger2_abort(ns)),
    "refused": _in_ns(lambda ns: scenarios.refused(ns, port=7)),
    "close_wait": _in_ns(_close_wait, "--close-wait", "1"),
    "write_after_close": _in_ns(lambda ns: scenarios.write_after_close(ns)),
    "early_reply": _in_ns(lambda ns: early_reply(ns)),
    "rto_timeout": _hosts(lambda h, port, t: scenarios.peer_timeout(h, False, port=port, before_cleanup=t.stop)),
    "keepalive_timeout": _hosts(lambda h, port, t: scenarios.peer_timeout(h, True, port=port, before_cleanup=t.stop)),
    "crash_reboot": _hosts(lambda h, port, t: scenarios.crash_reboot(h, port=port)),
}


def main(names: list[str]) -> None:
    scenarios.build_workloads()
    for name in names or list(SCENARIOS):
        SCENARIOS[name](name)
        print(f"recorded {DATA / name}.jsonl")


if __name__ == "__main__":
    main(sys.argv[1:])
