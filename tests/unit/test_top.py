"""`rsttrace top`'s aggregation (pure, exact numbers) and its drawing in 80x24."""

from __future__ import annotations

from rich.console import Console

from tracer.top import NS, TopModel, render


def inc(kind="abort-on-close", cpid=10, ccomm="srv", vpid=20, vcomm="cli", nbytes=1000, sigpipe="killed", **kw):
    d = {
        "kind": kind,
        "culprit": {"pid": cpid, "comm": ccomm},
        "bytes_discarded": nbytes,
        "netns": 1,
        "local": {"addr": "127.0.0.1", "port": kw.pop("port", 1)},
        "remote": {"addr": "127.0.0.1", "port": 2},
        "victim": None if vcomm is None else {"pid": vpid, "comm": vcomm, "sigpipe": sigpipe},
    }
    d.update(kw)
    return d


def test_rates_totals_and_processes():
    m = TopModel(window_s=5, started_ns=0)
    t = 100 * NS
    for i in range(10):  # 10 in the first second
        m.incident(inc(), t + i * NS // 10)
    for i in range(4):
        m.incident(inc(kind="linger-zero", cpid=11, ccomm="proxy", nbytes=0, sigpipe="ignored"), t + NS + i)
    snap = m.snapshot(t + 2 * NS)
    assert snap["total"] == 14 and snap["bytes"] == 10_000 and snap["sigpipe_deaths"] == 10
    assert snap["kinds"] == [("abort-on-close", 2.0, 10), ("linger-zero", 0.8, 4)]
    assert snap["rate"] == 2.8
    [c1, c2] = snap["culprits"]
    assert (c1.pid, c1.comm, c1.incidents, c1.bytes, c1.sigpipe_deaths) == (10, "srv", 10, 10_000, 10)
    assert (c2.pid, c2.comm, c2.incidents, c2.bytes, c2.sigpipe_deaths) == (11, "proxy", 4, 0, 0)
    [v] = snap["victims"]
    assert (v.pid, v.comm, v.incidents, v.bytes, v.sigpipe_deaths) == (20, "cli", 14, 10_000, 10)
    # 5 s later the first second's incidents have left the window
    assert m.snapshot(t + 5 * NS)["kinds"] == [("abort-on-close", 1.8, 10), ("linger-zero", 0.8, 4)]
    later = m.snapshot(t + NS + 3 + 5 * NS)
    assert later["kinds"] == [("abort-on-close", 0.0, 10), ("linger-zero", 0.0, 4)]


def test_close_wait_owners_count_and_oldest():
    m = TopModel()
    cw = dict(kind="close-wait", vcomm=None, nbytes=0)
    m.incident(
        inc(
            port=1,
            close_wait_closed=False,
            close_wait_age_ns=30 * NS,
            timestamps={"first_ns": 70 * NS, "last_ns": 100 * NS},
            **cw,
        ),
        100 * NS,
    )
    m.incident(
        inc(
            port=2,
            close_wait_closed=False,
            close_wait_age_ns=31 * NS,
            timestamps={"first_ns": 80 * NS, "last_ns": 110 * NS},
            **cw,
        ),
        110 * NS,
    )
    m.incident(
        inc(
            port=3,
            cpid=12,
            ccomm="other",
            close_wait_closed=False,
            close_wait_age_ns=None,
            timestamps={"first_ns": 105 * NS, "last_ns": 105 * NS},
            **cw,
        ),
        110 * NS,
    )
    assert m.close_wait_owners(120 * NS) == [((10, "srv"), 2, 50 * NS), ((12, "other"), 1, 15 * NS)]
    m.incident(inc(port=1, close_wait_closed=True, timestamps={}, **cw), 121 * NS)
    assert m.close_wait_owners(130 * NS) == [((10, "srv"), 1, 51 * NS), ((12, "other"), 1, 25 * NS)]
    snap = m.snapshot(130 * NS)
    assert snap["culprits"] == [] and snap["kinds"][0][0] == "close-wait"


def test_memory_is_bounded():
    m = TopModel()
    for i in range(5000):
        m.incident(inc(cpid=i, vpid=100000 + i), i)
    assert len(m.culprits) <= 1000 and len(m.victims) <= 1000


def test_fits_80x24_and_shows_the_numbers():
    m = TopModel(window_s=5, started_ns=0)
    for i in range(7):
        m.incident(inc(cpid=4242, ccomm="nginx", vpid=77, vcomm="curl"), 10 * NS)
    m.incident(
        inc(
            kind="close-wait",
            vcomm=None,
            nbytes=0,
            port=9,
            close_wait_closed=False,
            close_wait_age_ns=40 * NS,
            timestamps={"last_ns": 10 * NS},
            cpid=5,
            ccomm="leaky",
        ),
        10 * NS,
    )
    m.lost_total(3)
    console = Console(width=80, height=24, record=True, force_terminal=False, color_system=None)
    console.print(render(m.snapshot(11 * NS)))
    text = console.export_text()
    rows = text.splitlines()
    assert len(rows) <= 24 and max(len(r) for r in rows) <= 80
    assert "8 incidents, 1.6/s" in text and "lost 3" in text and "SIGPIPE deaths 7" in text
    assert any("nginx[4242]" in r and " 7 " in r and "7000" in r for r in rows)
    assert any("curl[77]" in r and "7000" in r for r in rows)
    assert any("leaky[5]" in r and "41s" in r for r in rows)
    assert any("abort-on-close" in r and "1.4" in r for r in rows)
