"""Shared test plumbing: the root marker is checked once, with a reason."""

from __future__ import annotations

import os
import shutil

import pytest


def _root_missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (BPF, network namespaces)"
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        return "needs kernel BTF (/sys/kernel/btf/vmlinux)"
    try:
        import bcc  # noqa: F401
    except ImportError:
        return "needs bcc (apt-get install python3-bpfcc)"
    if not shutil.which("ip") or not shutil.which("gcc"):
        return "needs iproute2 and gcc"
    return None


def pytest_collection_modifyitems(config, items):
    reason = _root_missing()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)
