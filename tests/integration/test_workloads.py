"""Integration tests of the reset workloads and their namespace harness (needs root)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from testbed import scenarios
from testbed.scenarios import Hosts, Netns, Proc, WorkloadError

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="iproute2 (ip) is not installed"),
]

ABORT_ON_CLOSE = "TcpExt.TCPAbortOnClose"
OUT_RSTS = "Tcp.OutRsts"


@pytest.fixture
def ns():
    with Netns() as ns:
        yield ns


@pytest.fixture(scope="module")
def bins():
    return scenarios.build_workloads()


def delta(ns: Netns, before: dict[str, int], name: str) -> int:
    return ns.counters()[name] - before[name]


def netns_names() -> list[str]:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()


# -- build --------------------------------------------------------------------------


def test_build_caches_and_rebuilds_stale(tmp_path):
    out = scenarios.build_workloads(tmp_path)
    binary = out / "rst_server"
    built = binary.stat().st_mtime_ns
    assert scenarios.build_workloads(tmp_path) == out
    assert binary.stat().st_mtime_ns == built

    os.utime(binary, ns=(0, 0))  # older than its source
    scenarios.build_workloads(tmp_path)
    assert binary.stat().st_mtime_ns > 0


def test_build_names_missing_compiler(tmp_path, monkeypatch):
    monkeypatch.setenv("CC", "rsttrace-no-such-cc")
    with pytest.raises(RuntimeError, match="rsttrace-no-such-cc"):
        scenarios.build_workloads(tmp_path)


@pytest.mark.parametrize("name", scenarios.WORKLOADS)
def test_workload_sources_compile_without_warnings(name, tmp_path):
    src = scenarios.WORKLOAD_SRC / f"{name}.c"
    assert src.read_text().startswith("// SPDX-License-Identifier: MIT\n")
    proc = subprocess.run(
        ["gcc", *scenarios.CFLAGS, "-Werror", "-o", str(tmp_path / name), str(src)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""


# -- namespaces and processes ------------------------------------------------------------


def test_netns_lifecycle_kills_leftover_processes():
    with Netns() as ns:
        assert ns.name in netns_names()
        assert "UP" in ns.run("ip", "link", "show", "lo").stdout
        proc = Proc(ns, ["cat"])
        proc.send("ping")
        assert proc.expect("ping") == "ping"
        # The pid is the program's own, and lives in the namespace we report.
        assert Path(f"/proc/{proc.pid}/comm").read_text() == "cat\n"
        assert os.stat(f"/proc/{proc.pid}/ns/net").st_ino == ns.inode
    assert ns.name not in netns_names()
    assert proc.wait() == -9
    proc.close()


def test_netns_deletes_stale_leftovers():
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = f"rsttest-{dead.pid}-abcdef"
    subprocess.run(["ip", "netns", "add", stale], check=True)
    try:
        with Netns("rsttest") as ns:
            names = netns_names()
            assert stale not in names
            assert ns.name in names
    finally:
        subprocess.run(["ip", "netns", "del", stale], capture_output=True)


def test_proc_expect_reports_output_on_eof_and_timeout(ns):
    with Proc(ns, ["sh", "-c", "echo hello; echo world"]) as proc:
        assert proc.expect("wor") == "world"
        with pytest.raises(WorkloadError, match=r"(?s)output ended.*\| hello\n.*\| world"):
            proc.expect("nope")
        assert proc.wait() == 0
        assert proc.lines == ["hello", "world"]

    with Proc(ns, ["cat"]) as proc:
        proc.send("partial")
        with pytest.raises(WorkloadError, match=r"(?s)within 0.2s.*\| partial"):
            proc.expect("never", timeout=0.2)
    assert proc.returncode == -9


def test_hosts_veth_addresses():
    with Hosts() as hosts, Hosts() as other:
        assert hosts.addr_a.rsplit(".", 1)[0] == hosts.addr_b.rsplit(".", 1)[0]
        assert hosts.addr_a != other.addr_a
        shown = hosts.b.run("ip", "addr", "show", "veth-b").stdout
        assert f"{hosts.addr_b}/24" in shown
        [line6] = [line for line in shown.splitlines() if f"{hosts.addr6_b}/64" in line]
        assert "tentative" not in line6  # nodad: usable at once
        names = [hosts.a.name, hosts.b.name]
    assert not set(names) & set(netns_names())


# -- scenarios ------------------------------------------------------------------------

UNREAD_CASES = {
    "sigpipe-default": (dict(), ["write -1 ECONNRESET"], -13),
    "sigpipe-ignore": (
        dict(sigpipe="ignore"),
        ["write -1 ECONNRESET", "write -1 EPIPE", "write -1 EPIPE", "done"],
        0,
    ),
    # The handler runs as the write returns, so its line precedes the result.
    "sigpipe-handle": (
        dict(sigpipe="handle"),
        ["write -1 ECONNRESET", "sigpipe handled", "write -1 EPIPE", "sigpipe handled", "write -1 EPIPE", "done"],
        0,
    ),
    "nosignal": (
        dict(nosignal=True),
        ["write -1 ECONNRESET", "write -1 EPIPE", "write -1 EPIPE", "done"],
        0,
    ),
    "recv": (dict(recv=True), ["recv -1 ECONNRESET"], 0),
}


@pytest.mark.parametrize("kwargs,after_go,client_rc", UNREAD_CASES.values(), ids=UNREAD_CASES)
def test_unread_close(ns, kwargs, after_go, client_rc):
    before = ns.counters()
    r = scenarios.unread_close(ns, **kwargs)

    assert r.name == "unread_close"
    assert r.client_lines == [
        f"connected pid={r.client_pid} sport={r.client_port}",
        "sent 1000",
        *after_go,
    ]
    assert r.client_returncode == client_rc
    assert r.server_lines == [f"listening {r.server_port} pid={r.server_pid}", "accepted", "unread 1000", "closed"]
    assert r.server_returncode == 0
    assert r.bytes_unread == 1000
    assert r.netns_inode == ns.inode
    assert delta(ns, before, ABORT_ON_CLOSE) == 1
    assert delta(ns, before, OUT_RSTS) == 1


@pytest.mark.parametrize("mode", ["readall", "lingering"])
def test_clean_close_sends_no_reset(ns, mode):
    before = ns.counters()
    r = scenarios.clean_close(ns, mode)

    assert r.name == f"clean_close_{mode}"
    expected = {
        "readall": (["read 1000"], []),
        "lingering": (["shutdown", "drained 1200"], ["write 100 OK", "write 100 OK"]),
    }
    server_middle, client_writes = expected[mode]
    assert r.server_lines == [f"listening {r.server_port} pid={r.server_pid}", "accepted", *server_middle, "closed"]
    assert r.client_lines == [
        f"connected pid={r.client_pid} sport={r.client_port}",
        "sent 1000",
        *client_writes,
        "done",
    ]
    assert (r.client_returncode, r.server_returncode) == (0, 0)
    assert r.bytes_unread is None
    assert delta(ns, before, ABORT_ON_CLOSE) == 0
    assert delta(ns, before, OUT_RSTS) == 0


def test_linger0_aborts_after_reading_everything(ns, bins):
    before = ns.counters()
    with Proc(ns, [bins / "rst_server", "0", "--mode", "linger0", "--expect", "500"]) as server:
        port = server.expect("listening").split()[1]
        with Proc(ns, [bins / "rst_client", "127.0.0.1", port, "--send", "500", "--recv"]) as client:
            client.expect("sent")
            server.expect("accepted")
            server.send("close")
            assert server.expect("read") == "read 500"
            server.expect("closed")
            client.send("go")
            assert client.expect("recv") == "recv -1 ECONNRESET"
            assert client.wait() == 0
        server.send("exit")
        assert server.wait() == 0
    assert delta(ns, before, "TcpExt.TCPAbortOnData") == 1
    assert delta(ns, before, ABORT_ON_CLOSE) == 0


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_unread_close_across_hosts(family):
    with Hosts() as hosts:
        before_a, before_b = hosts.a.counters(), hosts.b.counters()
        addr = hosts.addr_b if family == "ipv4" else hosts.addr6_b
        r = scenarios.unread_close(hosts.a, server_ns=hosts.b, server_addr=addr)

        assert r.client_lines[1:] == ["sent 1000", "write -1 ECONNRESET"]
        assert r.client_returncode == -13
        assert r.server_lines[2:] == ["unread 1000", "closed"]
        assert r.netns_inode == hosts.b.inode
        assert delta(hosts.b, before_b, ABORT_ON_CLOSE) == 1
        assert delta(hosts.b, before_b, OUT_RSTS) == 1
        assert delta(hosts.a, before_a, ABORT_ON_CLOSE) == 0
        assert delta(hosts.a, before_a, OUT_RSTS) == 0
