"""Which cgroup, container and pod a side of an incident ran in: cgroup v2 ids from the kernel
(bpf_get_current_cgroup_id), their paths from the cgroup2 file system, and the container id,
runtime and Kubernetes pod UID that the path names (docker, containerd/CRI, CRI-O, podman)."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

# A container's cgroup, as each runtime names it (cgroup v2 with the systemd driver, or the
# cgroupfs driver / cgroup v1 layouts). 64 hex digits: the container id.
_CID = r"(?P<id>[0-9a-f]{64})"
_PATTERNS = (
    ("docker", re.compile(rf"/docker-{_CID}\.scope$")),
    ("docker", re.compile(rf"/docker/{_CID}$")),
    ("containerd", re.compile(rf"/cri-containerd-{_CID}\.scope$")),
    ("cri-o", re.compile(rf"/crio-{_CID}\.scope$")),
    ("podman", re.compile(rf"/libpod-{_CID}\.scope(?:/container)?$")),
    ("podman", re.compile(rf"/libpod_parent/libpod-{_CID}$")),
    # cgroupfs driver under Kubernetes: /kubepods/<qos>/pod<uid>/<id>
    ("containerd", re.compile(rf"/kubepods(?:/[a-z]+)?/pod[0-9a-f-]{{36}}/{_CID}$")),
)
_POD = re.compile(r"pod(?P<uid>[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})")


def container_of(path: str | None) -> dict | None:
    """{"id", "runtime", "pod_uid"} for a container's cgroup path, else None."""
    if not path:
        return None
    for runtime, pattern in _PATTERNS:
        m = pattern.search(path)
        if m:
            pod = _POD.search(path)
            return {
                "id": m.group("id"),
                "runtime": runtime,
                "pod_uid": pod.group("uid").replace("_", "-") if pod else None,
            }
    return None


def cgroup2_root(mountinfo: str = "/proc/self/mountinfo") -> Path | None:
    """Where the cgroup v2 (unified) hierarchy is mounted, or None."""
    try:
        with open(mountinfo) as f:
            for line in f:
                pre, _, post = line.partition(" - ")
                if post.split(" ", 1)[0] == "cgroup2":
                    return Path(pre.split()[4])
    except OSError:
        pass
    return None


class CgroupPaths:
    """cgroup id -> path relative to the cgroup2 root ("/" for the root), from a walk of the
    hierarchy (a cgroup's id is its directory's inode number), repeated when an id is unknown,
    at most every `rescan_s`."""

    def __init__(self, root: Path | None = None, rescan_s: float = 0.5) -> None:
        self.root = root if root is not None else hierarchy()[0]
        self.rescan_s = rescan_s
        self._map: dict[int, str] = {}
        self._at = float("-inf")

    def _walk(self) -> None:
        found: dict[int, str] = {}
        if self.root is not None:
            for top, dirs, _files in os.walk(self.root):
                try:
                    found[os.stat(top).st_ino] = "/" + os.path.relpath(top, self.root).removeprefix(".")
                except OSError:
                    continue
        self._map.update(found)
        self._at = time.monotonic()

    def __call__(self, cgid: int) -> str | None:
        if not cgid:
            return None
        path = self._map.get(cgid)
        if path is None and time.monotonic() - self._at >= self.rescan_s:
            self._walk()
            path = self._map.get(cgid)
        return path

    def ids_of(self, path: str) -> int | None:
        """The id of the cgroup at `path` (relative to the root, or absolute under it)."""
        if self.root is None:
            return None
        p = Path(path)
        full = p if p.is_absolute() and str(p).startswith(str(self.root)) else self.root / str(p).lstrip("/")
        try:
            return os.stat(full).st_ino
        except OSError:
            return None


def describe(cgid: int, path: str | None) -> dict | None:
    """An incident side's cgroup as JSON carries it."""
    if not cgid:
        return None
    c = container_of(path)
    return {
        "id": cgid,
        "path": path,
        "container": c["id"] if c else None,
        "runtime": c["runtime"] if c else None,
        "pod_uid": c["pod_uid"] if c else None,
    }


# What the BPF side reads for a task's cgroup: task -> css_set -> the cgroup (v2: dfl_cgrp; v1:
# subsys[controller] -> cgroup) -> its kernfs node: id (= the directory's inode number), name
# and parent, so that the names are kept even if the cgroup is gone when user space looks.
CGROUP_OFFSETS = (
    ("TASK_CGROUPS", "task_struct", "cgroups"),
    ("CSS_SET_SUBSYS", "css_set", "subsys"),
    ("CSS_SET_DFL_CGRP", "css_set", "dfl_cgrp"),
    ("CSS_CGROUP", "cgroup_subsys_state", "cgroup"),
    ("CGROUP_KN", "cgroup", "kn"),
    ("KERNFS_NODE_ID", "kernfs_node", "id"),
    ("KERNFS_NODE_NAME", "kernfs_node", "name"),
)
# kernfs_node.parent became __parent in 6.15 ("kernfs: Use RCU to access kernfs_node::parent").
KERNFS_PARENT = ("parent", "__parent")
# v1 controllers tried, in order, when the unified hierarchy is not where containers live.
V1_CONTROLLERS = ("memory", "pids", "cpu")


def hierarchy(mountinfo: str = "/proc/self/mountinfo") -> tuple[Path | None, str | None]:
    """The hierarchy whose cgroups name containers here: (mount point, v1 controller or None
    for cgroup v2). Pure v2 (the unified hierarchy at /sys/fs/cgroup) or no v1 controller
    mounted: v2. A hybrid or v1 host (containers' cgroups made per v1 controller, as podman
    and docker do with the cgroupfs driver there): the first of V1_CONTROLLERS mounted."""
    v1: dict[str, Path] = {}
    v2 = None
    try:
        with open(mountinfo) as f:
            for line in f:
                pre, _, post = line.partition(" - ")
                fields = post.split()
                if not fields:
                    continue
                where = Path(pre.split()[4])
                if fields[0] == "cgroup2":
                    v2 = where
                elif fields[0] == "cgroup" and len(fields) >= 3:
                    for opt in fields[2].split(","):
                        v1.setdefault(opt, where)
    except OSError:
        return None, None
    for ctl in V1_CONTROLLERS:
        if ctl in v1:
            return v1[ctl], ctl
    return v2, None


def cflags(btf, mountinfo: str = "/proc/self/mountinfo") -> list[str]:
    """-D flags for the BPF side's cgroup walk: the offsets, and for a v1 hierarchy the
    controller's index (enum cgroup_subsys_id). [] where the layout is not there (then the
    events carry bpf_get_current_cgroup_id(), and names come from the file system only)."""
    if btf is None:
        return []
    _root, controller = hierarchy(mountinfo)
    try:
        defs = {f"OFF_{m}": btf.offsetof(s, p) for m, s, p in CGROUP_OFFSETS}
        parent = next(p for p in KERNFS_PARENT if btf.has_member("kernfs_node", p))
        defs["OFF_KERNFS_NODE_PARENT"] = btf.offsetof("kernfs_node", parent)
        if controller is not None:
            defs["RST_CGROUP_SUBSYS"] = btf.enum("cgroup_subsys_id")[f"{controller}_cgrp_id"]
    except Exception:  # an unknown layout or controller: cgroup ids from the helper only
        return []
    return [f"-D{k}={v}" for k, v in sorted(defs.items())] + ["-DRST_HAVE_CGROUP_WALK"]


def path_from_names(names: list[str]) -> str | None:
    """A cgroup's path from its kernfs names as the kernel kept them (the cgroup's, then its
    parents', up to four; the root's is empty). "/…/a/b" when the kernel kept no more."""
    if not names or not names[0]:
        return "/" if names else None
    parts = []
    for name in names:
        if not name:  # the root
            return "/" + "/".join(reversed(parts))
        parts.append(name)
    return "/…/" + "/".join(reversed(parts))
