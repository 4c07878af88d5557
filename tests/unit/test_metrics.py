"""OpenMetrics: exact values per incident, the cardinality cap, the CLOSE_WAIT gauge."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client import generate_latest

from tracer.metrics import OTHER, UNKNOWN, BpfProgStats, Metrics, TopNames, parse_addr


def inc(
    kind="abort-on-close",
    culprit="srv",
    victim="cli",
    impact="killed",
    nbytes=1000,
    sigpipe="killed",
    port=1,
    closed=None,
):
    d = {
        "type": "incident",
        "kind": kind,
        "culprit": {"pid": 1, "comm": culprit},
        "bytes_discarded": nbytes,
        "impact": impact,
        "netns": 7,
        "local": {"addr": "127.0.0.1", "port": port},
        "remote": {"addr": "127.0.0.1", "port": 9},
        "close_wait_closed": closed,
        "victim": None if victim is None else {"pid": 2, "comm": victim, "sigpipe": sigpipe},
    }
    return d


def samples(m: Metrics) -> dict:
    out = {}
    for fam in text_string_to_metric_families(generate_latest(m.registry).decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_top_names_keeps_the_n_most_counted():
    evicted = []
    t = TopNames(2, on_evict=evicted.append, half_life_s=0)
    got = [t.label(n) for n in ["a", "b", "c", "a", "c", None, "", "c"]]
    # a, b take the two places; c needs a clear lead over the least (b: 1): > max(1.25, 2)
    assert got == ["a", "b", OTHER, "a", OTHER, UNKNOWN, UNKNOWN, "c"]
    assert evicted == ["b"] and set(t.names) == {"a", "c"}
    assert t.label("a") == "a" and t.label("b") == OTHER  # b: 2, the least (c: 3): not enough
    # "other" and "unknown" are never names of their own
    t2 = TopNames(5)
    assert t2.label("other") == OTHER and t2.label("unknown") == OTHER and not t2.names


def test_top_names_follow_a_storm_as_counts_halve():
    clock = Clock()
    t = TopNames(1, half_life_s=60, clock=clock)
    for _ in range(100):
        assert t.label("old") == "old"
    clock.t = 600  # ten half-lives: old's 100 is now about 0.1
    assert t.score("old") == pytest.approx(100 / 1024)
    assert [t.label("new") for _ in range(2)] == [OTHER, "new"]
    assert set(t.names) == {"new"}


def test_top_names_memory_is_bounded():
    t = TopNames(3, candidates=10)
    for i in range(10_000):
        t.label(f"p{i}")
    assert len(t.names) == 3 and len(t.others) <= 10


def test_cardinality_cap_in_the_exposition():
    m = Metrics(top_n=3)
    for i in range(50):
        m.incident(inc(culprit=f"c{i}", victim=f"v{i % 4}"))
    s = samples(m)
    culprits = {dict(k[1])["comm"]: v for k, v in s.items() if k[0] == "rsttrace_incidents_by_culprit_total"}
    victims = {dict(k[1])["comm"]: v for k, v in s.items() if k[0] == "rsttrace_incidents_by_victim_total"}
    assert culprits == {"c0": 1, "c1": 1, "c2": 1, OTHER: 47}  # no name ever had more than 1
    # v3's first incident went to other; its second (2 > v0..v2's 1) took v2's place, and so on:
    # every series only ever grew, and the total is kept.
    assert sum(victims.values()) == 50 and len(victims) == 4 and OTHER in victims


def test_series_stay_monotonic_and_bounded_while_the_top_changes():
    import random

    clock = Clock()
    m = Metrics(top_n=2)
    for t in (m.culprits, m.victims, m.owners):
        t.clock, t.half_life_s = clock, 30.0
    rnd = random.Random(7)
    names = [f"n{i}" for i in range(8)]
    prev: dict = {}
    total = 0
    for step in range(800):
        clock.t = step * 0.5  # 2 incidents/s; each storm lasts 100 s
        hot = names[(step // 200) * 2 : (step // 200) * 2 + 2]
        m.incident(inc(culprit=rnd.choice(hot) if rnd.random() < 0.8 else rnd.choice(names)))
        total += 1
        cur = {dict(k[1])["comm"]: v for k, v in samples(m).items() if k[0] == "rsttrace_incidents_by_culprit_total"}
        assert len(cur) <= 3 and sum(cur.values()) <= total
        for name, v in cur.items():  # a series only grows, or is new (started again from 0)
            assert v >= prev.get(name, 0) or (name != OTHER and v == 1), (step, name, v, prev)
        prev = cur
    assert set(m.culprits.names) == {"n6", "n7"}  # the last storm's two processes
    assert 0 < prev[OTHER] < total


def test_exact_values():
    m = Metrics(top_n=10)
    m.incident(inc())
    m.incident(inc(kind="linger-zero", impact="failed-call", nbytes=0, sigpipe="ignored"))
    m.incident(inc(kind="refused", victim=None, impact="unknown", nbytes=0))
    m.lost_total(3)
    m.lost_total(2)  # totals only grow
    s = samples(m)
    assert s[("rsttrace_incidents_total", (("kind", "abort-on-close"),))] == 1
    assert s[("rsttrace_incidents_total", (("kind", "linger-zero"),))] == 1
    assert s[("rsttrace_incidents_by_impact_total", (("impact", "killed"),))] == 1
    assert s[("rsttrace_incidents_by_impact_total", (("impact", "failed-call"),))] == 1
    assert s[("rsttrace_incidents_by_victim_total", (("comm", UNKNOWN),))] == 1
    assert s[("rsttrace_bytes_discarded_total", ())] == 1000
    assert s[("rsttrace_sigpipe_deaths_total", ())] == 1
    assert s[("rsttrace_events_lost_total", ())] == 3
    assert ("process_cpu_seconds_total", ()) in s
    assert not any(k[0].endswith("_created") for k in s)


def test_close_wait_gauge_by_owner():
    m = Metrics(top_n=1)
    cw = dict(kind="close-wait", victim=None, impact="unknown", nbytes=0)
    m.incident(inc(culprit="leaky", port=1, closed=False, **cw))
    m.incident(inc(culprit="leaky", port=2, closed=False, **cw))
    m.incident(inc(culprit="leaky", port=2, closed=False, **cw))  # the same socket again
    m.incident(inc(culprit="else", port=3, closed=False, **cw))
    m.incident(inc(culprit="leaky", port=1, closed=True, **cw))
    m.incident(inc(culprit="leaky", port=9, closed=True, **cw))  # never seen open: ignored
    s = samples(m)
    gauge = {dict(k[1])["owner"]: v for k, v in s.items() if k[0] == "rsttrace_close_wait_sockets"}
    assert gauge == {"leaky": 1, OTHER: 1}


def test_bpf_stats_from_fdinfo(tmp_path, monkeypatch):
    import os

    fd = os.open(tmp_path, os.O_RDONLY)  # any fd: its fdinfo has no run_cnt, so 0
    try:
        assert BpfProgStats({"p": fd}).read() == {"p": (0, 0)}
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    "text,want",
    [
        ("9464", ("127.0.0.1", 9464)),
        (":9464", ("127.0.0.1", 9464)),
        ("0.0.0.0:1", ("0.0.0.0", 1)),
        ("[::1]:80", ("::1", 80)),
    ],
)
def test_parse_addr(text, want):
    assert parse_addr(text) == want


@pytest.mark.parametrize("text", ["", "x", "1:0", "1:65536", "h:p"])
def test_parse_addr_refuses(text):
    with pytest.raises(ValueError):
        parse_addr(text)
