"""Filters are validated in Python, as numbers, before anything reaches the kernel."""

from __future__ import annotations

import os

import pytest

from tracer.config import build_filters
from tracer.errors import BadFilter


def test_valid_filters_become_numbers():
    # The namespace must exist (issue 12): this process's own, by inode number.
    ino = os.stat("/proc/self/ns/net").st_ino
    f = build_filters(pids=[str(os.getpid())], comm="nginx", ports=["80", 443], netns=str(ino))
    assert f.pids == {os.getpid()} and f.ports == {80, 443} and f.netns == ino and f.comm == "nginx"


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"pids": ["abc"]}, "invalid pid 'abc'"),
        ({"pids": ["-3"]}, "invalid pid '-3'"),
        ({"pids": ["4194304999"]}, "no process with pid 4194304999"),
        ({"ports": ["0"]}, "invalid port '0'"),
        ({"ports": ["80; rm -rf /"]}, "invalid port"),
        ({"comm": "a" * 16}, "invalid comm"),
        ({"netns": "no-such-namespace"}, "unknown network namespace"),
    ],
)
def test_invalid_filters_are_refused(kw, message):
    with pytest.raises(BadFilter, match=message):
        build_filters(**kw)


def test_filter_maps_hold_1024_values(monkeypatch):
    from tracer import config

    class Exists(type(config.Path())):
        def exists(self):
            return True

    monkeypatch.setattr(config, "Path", Exists)
    assert len(build_filters(pids=[str(p) for p in range(1, 1025)]).pids) == 1024
    with pytest.raises(BadFilter, match=r"^too many pids: 1025 \(the kernel's filter holds 1024\)$"):
        build_filters(pids=[str(p) for p in range(1, 1026)])
    assert len(build_filters(ports=[str(p) for p in range(1, 1025)] * 2).ports) == 1024


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e999", "x", ""])
def test_finite_float_refuses_what_float_accepts(value):
    import click

    from tracer.config import FiniteFloat

    with pytest.raises(click.BadParameter):
        FiniteFloat(0, 60).convert(value, None, None)
    assert FiniteFloat(0, 60).convert("0.5", None, None) == 0.5
    with pytest.raises(click.BadParameter, match="not in the range 0 < x"):
        FiniteFloat(0, None, lo_open=True).convert("0", None, None)


def test_cgroup_filter_matches_any_side():
    from tracer.config import Filters

    def inc(culprit=None, victim=None, owner=None):
        side = lambda i: {"id": i} if i else None  # noqa: E731
        return {
            "culprit": None,
            "victim": None,
            "local": {"port": 1},
            "remote": {"port": 2},
            "cgroups": {"culprit": side(culprit), "victim": side(victim), "owner": side(owner)},
        }

    f = Filters(cgroups=frozenset({7, 8}))
    assert f.matches(inc(culprit=7)) and f.matches(inc(victim=8)) and f.matches(inc(owner=7))
    assert not f.matches(inc(culprit=1, victim=2)) and not f.matches(inc())


def test_container_id_must_be_hex_and_name_a_running_container():
    from tracer.config import BadFilter, parse_cgroups

    for bad in ("xyz", "abc", "0123456789ab!"):
        with pytest.raises(BadFilter):
            parse_cgroups(containers=[bad])
    with pytest.raises(BadFilter, match="no running container"):
        parse_cgroups(containers=["0123456789abcdef"])
    with pytest.raises(BadFilter, match="no cgroup"):
        parse_cgroups(paths=["/no/such/cgroup/here"])
    assert parse_cgroups() == frozenset()
