"""Filters are validated in Python, as numbers, before anything reaches the kernel."""

from __future__ import annotations

import os

import pytest

from tracer.config import build_filters
from tracer.errors import BadFilter


def test_valid_filters_become_numbers():
    f = build_filters(pids=[str(os.getpid())], comm="nginx", ports=["80", 443], netns=str(12345))
    assert f.pids == {os.getpid()} and f.ports == {80, 443} and f.netns == 12345 and f.comm == "nginx"


@pytest.mark.parametrize("kw, message", [
    ({"pids": ["abc"]}, "invalid pid 'abc'"),
    ({"pids": ["-3"]}, "invalid pid '-3'"),
    ({"pids": ["4194304999"]}, "no process with pid 4194304999"),
    ({"ports": ["0"]}, "invalid port '0'"),
    ({"ports": ["80; rm -rf /"]}, "invalid port"),
    ({"comm": "a" * 16}, "invalid comm"),
    ({"netns": "no-such-namespace"}, "unknown network namespace"),
])
def test_invalid_filters_are_refused(kw, message):
    with pytest.raises(BadFilter, match=message):
        build_filters(**kw)
