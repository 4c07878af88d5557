"""Fixtures of the root tests: the C workloads built once, a fresh namespace or two per test."""

from __future__ import annotations

import pytest

from testbed import scenarios


@pytest.fixture(scope="session", autouse=True)
def workloads():
    scenarios.build_workloads()


@pytest.fixture
def ns():
    with scenarios.Netns("rsttest") as n:
        yield n


@pytest.fixture
def hosts():
    with scenarios.Hosts("rsth") as h:
        yield h
