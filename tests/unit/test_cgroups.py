"""Containers named from cgroup paths, for each runtime and cgroup v1/v2 layout; the hierarchy
chosen from the mounts; paths from the names the kernel kept."""

from __future__ import annotations

import os

import pytest

from tracer.cgroups import CgroupPaths, container_of, describe, hierarchy, path_from_names

CID = "4f3c2b1a" * 8
UID = "0c3e4f5a-1b2c-4d5e-8f90-a1b2c3d4e5f6"


@pytest.mark.parametrize(
    "path,runtime,pod",
    [
        # cgroup v2, systemd driver
        (f"/system.slice/docker-{CID}.scope", "docker", None),
        (f"/machine.slice/libpod-{CID}.scope", "podman", None),
        (f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{CID}.scope/container", "podman", None),
        (
            f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID.replace('-', '_')}.slice/"
            f"cri-containerd-{CID}.scope",
            "containerd",
            UID,
        ),
        (f"/kubepods.slice/kubepods-pod{UID.replace('-', '_')}.slice/crio-{CID}.scope", "cri-o", UID),
        # cgroup v1 / cgroupfs driver
        (f"/docker/{CID}", "docker", None),
        (f"/libpod_parent/libpod-{CID}", "podman", None),
        (f"/kubepods/besteffort/pod{UID}/{CID}", "containerd", UID),
        (f"/kubepods/pod{UID}/{CID}", "containerd", UID),
    ],
)
def test_each_runtime_is_named_from_its_path(path, runtime, pod):
    assert container_of(path) == {"id": CID, "runtime": runtime, "pod_uid": pod}


@pytest.mark.parametrize(
    "path",
    [None, "", "/", "/system.slice/sshd.service", f"/docker/{CID[:12]}", "/user.slice/user-0.slice/session-3.scope"],
)
def test_no_container_where_the_path_names_none(path):
    assert container_of(path) is None


def test_describe_a_side():
    assert describe(0, None) is None
    assert describe(7, f"/docker/{CID}") == {
        "id": 7,
        "path": f"/docker/{CID}",
        "container": CID,
        "runtime": "docker",
        "pod_uid": None,
    }
    assert describe(7, None) == {"id": 7, "path": None, "container": None, "runtime": None, "pod_uid": None}


def test_path_from_the_names_the_kernel_kept():
    assert path_from_names([f"libpod-{CID}", "libpod_parent", "", ""]) == f"/libpod_parent/libpod-{CID}"
    assert path_from_names(["", "", "", ""]) == "/"
    assert path_from_names(["d", "c", "b", "a"]) == "/…/a/b/c/d"  # deeper than the kernel kept
    assert path_from_names([]) is None


def _mountinfo(tmp_path, lines):
    f = tmp_path / "mountinfo"
    f.write_text("".join(lines))
    return str(f)


V2 = "30 24 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
HYBRID = [
    "30 24 0:26 / /sys/fs/cgroup/unified rw shared:4 - cgroup2 cgroup2 rw\n",
    "31 24 0:27 / /sys/fs/cgroup/pids rw shared:5 - cgroup cgroup rw,pids\n",
    "32 24 0:28 / /sys/fs/cgroup/memory rw shared:6 - cgroup cgroup rw,memory\n",
]


def test_hierarchy_v2_and_hybrid(tmp_path):
    root, ctl = hierarchy(_mountinfo(tmp_path, [V2]))
    assert (str(root), ctl) == ("/sys/fs/cgroup", None)
    root, ctl = hierarchy(_mountinfo(tmp_path, HYBRID))
    assert (str(root), ctl) == ("/sys/fs/cgroup/memory", "memory")


def test_paths_by_id_from_a_walk(tmp_path):
    (tmp_path / "libpod_parent" / f"libpod-{CID}").mkdir(parents=True)
    paths = CgroupPaths(root=tmp_path, rescan_s=0)
    ino = os.stat(tmp_path / "libpod_parent" / f"libpod-{CID}").st_ino
    assert paths(ino) == f"/libpod_parent/libpod-{CID}"
    assert paths(os.stat(tmp_path).st_ino) == "/"
    assert paths(0) is None
