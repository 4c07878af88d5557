"""Record notebooks/sample_trace.jsonl with the real tracer over the real scenarios (as root, from
the project root: python -m notebooks.record_sample)."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from testbed import scenarios
from testbed.ready import wait_ready

HERE = Path(__file__).resolve().parent
# (scenario keyword arguments, bytes left unread): three bursts a second apart, so that the
# notebook's "incidents over time" has a shape. The notebook test checks these numbers.
BURSTS = [
    [({}, 1000), ({"sigpipe": "ignore"}, 500), ({"nosignal": True}, 800)],
    [({}, 2000), ({"sigpipe": "handle"}, 3000), ({"recv": True}, 600), ({"sigpipe": "ignore"}, 1500)],
    [({}, 4000), ({"nosignal": True}, 1200)],
]
CLEAN = ("readall", "lingering", "readall")  # silent: no event may leave the kernel for these
# Then other ways to end: bytes each one discards (a CLOSE_WAIT leak is reported twice: when it
# passes the 1 s threshold and when the server finally closes, and discards nothing).
OTHERS = {"linger-zero": [0], "process-killed": [1000], "close-wait": [0, 0]}


def _others(ns, tracer_proc) -> None:
    scenarios.linger_zero(ns)
    scenarios.killed_server(ns, sig=signal.SIGTERM, unread=True)
    with scenarios.close_wait(ns) as run:
        time.sleep(1.6)  # past the 1 s threshold and the next scan: the leak is reported
        run.server.send("close")
        run.server.expect("closed")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("-o", "--output", type=Path, default=HERE / "sample_trace.jsonl")
    args = ap.parse_args()
    scenarios.build_workloads()
    work = Path(tempfile.mkdtemp(prefix="rsttrace-sample-"))
    ready = work / "ready"
    with scenarios.Netns("rstsample") as ns:
        proc = subprocess.Popen([sys.executable, "-m", "tracer", "record", str(args.output), "-q",
                                 "--settle", "0.3", "--netns", str(ns.inode), "--close-wait", "1",
                                 "--ready-file", str(ready)])
        try:
            wait_ready(ready, proc.pid, proc.poll, kill=proc.kill, what="rsttrace record")
            for n, burst in enumerate(BURSTS):
                if n:
                    time.sleep(1.0)
                for kwargs, unread in burst:
                    scenarios.unread_close(ns, unread=unread, **kwargs)
                scenarios.clean_close(ns, mode=CLEAN[n])
            time.sleep(1.0)
            _others(ns, proc)
            time.sleep(0.5)  # the last incident settles
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(60)
    records = [json.loads(line) for line in args.output.read_text().splitlines()]
    incidents = [r for r in records if r["type"] == "incident"]
    want = sorted([unread for burst in BURSTS for _, unread in burst]
                  + [b for kind in OTHERS.values() for b in kind])
    got = sorted(i["bytes_discarded"] for i in incidents)
    if got != want or records[-1]["type"] != "summary" or records[-1]["stats"]["lost"]:
        sys.exit(f"unexpected recording: bytes discarded {got}, expected {want}")
    print(f"{args.output}: {len(records)} lines, {len(incidents)} incidents, "
          f"{args.output.stat().st_size} bytes")


if __name__ == "__main__":
    main()
