"""Incidents name the containers their sides ran in: the culprit and the victim in two real
podman containers (a root file system made here: no registry is reachable), joined to one test
network namespace, each container's id asserted against podman's own."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from testbed import scenarios
from tracer.cgroups import hierarchy

from .tracer_proc import Tracer

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(shutil.which("podman") is None, reason="podman is not installed (./run.sh test installs it)"),
]

# This machine's limits, written down: no raising RLIMIT_NOFILE (no CAP_SYS_RESOURCE), cgroups
# in hybrid mode (crun refuses it, runc takes it), no systemd (cgroupfs manager).
CONTAINERS_CONF = """[containers]
default_ulimits = []
[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
events_logger = "file"
"""


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory):
    """busybox and statically linked copies of the workloads: a root file system for both."""
    root = tmp_path_factory.mktemp("rootfs")
    for d in ("bin", "proc", "sys", "dev", "tmp", "etc"):
        (root / d).mkdir()
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("busybox is not installed (./run.sh test installs busybox-static)")
    shutil.copy(busybox, root / "bin" / "busybox")
    (root / "bin" / "sh").symlink_to("busybox")
    for name in scenarios.WORKLOADS:
        subprocess.run(
            [
                os.environ.get("CC", "gcc"),
                *scenarios.CFLAGS,
                "-static",
                "-o",
                str(root / "bin" / name),
                str(scenarios.WORKLOAD_SRC / f"{name}.c"),
            ],
            check=True,
            capture_output=True,
        )
    return root


@pytest.fixture
def podman(tmp_path):
    conf = tmp_path / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    env = dict(os.environ, CONTAINERS_CONF=str(conf))
    made: list[str] = []

    def run(ns, name: str, rootfs: Path, *argv: str) -> tuple[scenarios.Proc, Path]:
        cidfile = tmp_path / f"{name}.cid"
        cmd = [
            "podman",
            "run",
            "-i",
            "--rm",
            "--name",
            f"rsttest-{name}-{os.getpid()}",
            "--cidfile",
            str(cidfile),
            "--pid",
            "host",
            "--network",
            f"ns:/run/netns/{ns.name}",
            "--rootfs",
            str(rootfs),
            *argv,
        ]
        made.append(f"rsttest-{name}-{os.getpid()}")
        # Not under `ip netns exec`: it mounts a sysfs of its own, without the cgroup mounts.
        proc = scenarios.Proc(None, ["env", f"CONTAINERS_CONF={conf}", *cmd])
        return proc, cidfile

    yield run
    for name in made:
        subprocess.run(["podman", "rm", "-f", "-i", name], env=env, capture_output=True)


def _wait_reset_received(pid: int, lport: int, rport: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while scenarios._has_connection(pid, lport, rport):
        assert time.monotonic() < deadline, "the client's connection never saw the RST"
        time.sleep(0.001)


def _cid(path: Path) -> str:
    return path.read_text().strip()


def test_culprit_and_victim_containers_are_named(ns, rootfs, podman):
    _root, controller = hierarchy()
    with Tracer("--netns", str(ns.inode)) as t:
        server, server_cid = podman(
            ns, "server", rootfs, "/bin/rst_server", "0", "--mode", "unread", "--expect", "1000"
        )
        with server:
            listening = server.expect("listening", timeout=120)
            port = listening.split()[1]
            client, client_cid = podman(
                ns, "client", rootfs, "/bin/rst_client", "127.0.0.1", port, "--send", "1000", "--writes", "3"
            )
            with client:
                connected = client.expect("connected", timeout=120)
                server.expect("accepted")
                client.expect("sent")
                server.send("close")
                server.expect("closed")
                client_port = int(connected.split("sport=")[1])
                _wait_reset_received(int(connected.split("pid=")[1].split()[0]), client_port, int(port))
                client.send("go")
                assert client.wait(timeout=120) != 0  # its runtime reports the SIGPIPE death
                server.send("exit")
                server.wait(timeout=120)
        incidents, err, rc = t.stop()
    assert rc == 0, err
    server_pid = int(listening.split("pid=")[1].split()[0])
    client_pid = int(connected.split("pid=")[1].split()[0])
    [inc] = incidents
    assert inc["kind"] == "abort-on-close" and inc["bytes_discarded"] == 1000
    assert inc["culprit"] == {"pid": server_pid, "comm": "rst_server"}
    assert (inc["victim"]["pid"], inc["victim"]["comm"]) == (client_pid, "rst_client")
    assert inc["victim"]["sigpipe"] == "killed"
    culprit, victim = inc["cgroups"]["culprit"], inc["cgroups"]["victim"]
    # The containers are gone by now: their names were kept by the kernel at the events.
    assert (culprit["container"], culprit["runtime"]) == (_cid(server_cid), "podman")
    assert (victim["container"], victim["runtime"]) == (_cid(client_cid), "podman")
    assert culprit["path"].endswith(f"libpod-{_cid(server_cid)}") or culprit["path"].endswith(
        f"libpod-{_cid(server_cid)}.scope"
    ), (controller, culprit)
    assert culprit["id"] != victim["id"]


def test_container_filter_keeps_only_that_containers_incidents(ns, rootfs, podman):
    """--container ID: the container's incidents pass, another connection's in the same
    namespace (plain processes, outside any container) does not."""
    server, server_cid = podman(ns, "fserver", rootfs, "/bin/rst_server", "0", "--mode", "unread", "--expect", "1000")
    with server:
        port = server.expect("listening", timeout=120).split()[1]
        deadline = time.monotonic() + 60
        while not server_cid.exists() or not server_cid.read_text().strip():
            assert time.monotonic() < deadline, "podman wrote no container id"
            time.sleep(0.01)
        with Tracer("--netns", str(ns.inode), "--container", _cid(server_cid)[:12]) as t:
            client, _ = podman(
                ns, "fclient", rootfs, "/bin/rst_client", "127.0.0.1", port, "--send", "1000", "--writes", "3"
            )
            with client:
                connected = client.expect("connected", timeout=120)
                server.expect("accepted")
                client.expect("sent")
                server.send("close")
                server.expect("closed")
                _wait_reset_received(
                    int(connected.split("pid=")[1].split()[0]), int(connected.split("sport=")[1]), int(port)
                )
                client.send("go")
                client.wait(timeout=120)
            other = scenarios.unread_close(ns)  # not in the container: filtered out
            server.send("exit")
            server.wait(timeout=120)
            incidents, err, rc = t.stop()
    assert rc == 0, err
    assert other.client_returncode == -13  # it did reset
    [inc] = incidents
    assert inc["cgroups"]["culprit"]["container"] == _cid(server_cid)
    assert inc["culprit"]["comm"] == "rst_server" and inc["bytes_discarded"] == 1000
