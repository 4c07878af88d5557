"""The fleet notebook runs headless over a generated fleet dataset; its figures are rendered and
its numbers equal those computed independently, by tracer/merge.py over the hosts' JSON Lines traces."""

from __future__ import annotations

import json
import struct
from collections import Counter
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("matplotlib")
pytest.importorskip("duckdb")

NOTEBOOKS = Path(__file__).resolve().parent.parent.parent / "notebooks"
HOSTS, EVENTS, SEED = 20, 50_000, 1
BUCKET_NS = 250_000_000  # the notebook's SIGPIPE deaths are counted per 250 ms


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    from bench import fleet_gen

    d = tmp_path_factory.mktemp("fleet")
    made = fleet_gen.generate(d / "dataset", HOSTS, EVENTS, SEED, work=d / "traces", keep_traces=True)
    return d / "dataset", made


@pytest.fixture(scope="module")
def executed(fleet):
    nb = nbformat.read(NOTEBOOKS / "fleet.ipynb", as_version=4)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RSTTRACE_FLEET", str(fleet[0]))  # the kernel inherits it
        nbclient.NotebookClient(
            nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
        ).execute()
    return {tag: cell for cell in nb.cells if cell.cell_type == "code" for tag in cell.metadata.get("tags", [])}


def _png_size(data: str) -> tuple[int, int]:
    import base64

    raw = base64.b64decode(data)
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", raw[16:24])


@pytest.mark.parametrize("tag, min_height", [("fig-culprits", 400), ("fig-victims", 400), ("fig-sigpipe", 250)])
def test_figures_are_rendered(executed, tag, min_height):
    outputs = executed[tag].outputs
    assert [o for o in outputs if o.output_type == "error"] == []
    assert [o.text for o in outputs if o.get("name") == "stderr"] == []  # no warnings either
    pngs = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.data]
    assert len(pngs) == 1
    # Ten bars of a horizontal chart get at least 40 pixels each (labels never overlap).
    width, height = _png_size(pngs[0].data["image/png"])
    assert height >= min_height and width >= 800


def _independent(made: dict) -> dict:
    """The notebook's numbers from the pandas path (tracer/merge.py, the `rsttrace merge A B ...`
    join) over the same hosts' traces, counted in plain Python."""
    from tracer.merge import merge
    from tracer.report import NO_SIGPIPE, NO_VICTIM

    sources, incidents, stats = merge([Path(t) for t in made["traces"]], 2_000_000_000)
    host = [s["host"] for s in sources]
    nbytes, count, victims, fates = Counter(), Counter(), {}, {}
    deaths = Counter()
    for i in incidents:
        victim = i.get("victim") or {}
        wall = i["timestamps"]["first_ns"] + sources[i["src"]]["wall_offset_ns"]
        if victim.get("sigpipe") == "killed":
            deaths[wall // BUCKET_NS * BUCKET_NS] += 1
        comm = (i.get("culprit") or {}).get("comm")
        if comm is None:
            continue
        name = f"{comm} on {host[i['src']]}"
        nbytes[name] += i["bytes_discarded"]
        count[name] += 1
        fate = NO_VICTIM if victim.get("addr") is None else (victim.get("sigpipe") or NO_SIGPIPE)
        fates.setdefault(name, Counter())[fate] += 1
        if victim.get("addr") is not None:
            vhost = host[victim["src"]] if "src" in victim else host[i["src"]]
            victims.setdefault(name, set()).add((vhost, victim["pid"]))
    by_bytes = sorted(nbytes, key=lambda n: (-nbytes[n], -count[n], n))
    by_count = sorted(count, key=lambda n: (-count[n], -nbytes[n], n))
    top = by_bytes[0]
    peak = min(deaths, key=lambda b: (-deaths[b], b))
    return {
        "hosts": len(sources),
        "incidents": stats["incidents"],
        "joined_across_hosts": stats["cross_host"],
        "victims_without_culprit": sum((i.get("culprit") or {}).get("comm") is None for i in incidents),
        "culprits": len(nbytes),
        "top_culprit_by_bytes": {"name": top, "bytes": nbytes[top], "incidents": count[top]},
        "top_culprit_by_incidents": {"name": by_count[0], "incidents": count[by_count[0]]},
        "top_culprit_victims": {"processes": len(victims[top]), "fates": dict(fates[top])},
        "sigpipe_deaths": sum(deaths.values()),
        "sigpipe_peak": {"bucket_ns": peak, "deaths": deaths[peak]},
    }


def test_numbers_are_those_of_the_pandas_path(executed, fleet):
    [line] = [
        ln
        for o in executed["results"].outputs
        if o.get("name") == "stdout"
        for ln in o.text.splitlines()
        if ln.startswith("RESULTS ")
    ]
    res = json.loads(line.removeprefix("RESULTS "))
    made = fleet[1]
    assert res == _independent(made)
    # And what the generator planted: each joinable pair joined once, every other half alone;
    # half the 5,000 connections replay the recording whose victim SIGPIPE kills.
    assert (made["hosts"], made["connections"], made["local"], made["split"]) == (20, 5000, 500, 4500)
    assert res["joined_across_hosts"] == made["planted"] == 3242
    assert res["incidents"] == made["local"] + 2 * made["split"] - made["planted"] == 6258
    assert res["victims_without_culprit"] == made["split"] - made["planted"] == 1258
    assert res["sigpipe_deaths"] == 2500 and res["culprits"] == 20
    # Every culprit incident discards the recording's 1,000 bytes.
    assert res["top_culprit_by_bytes"] == {"name": "rst_server on host0012", "bytes": 302_000, "incidents": 302}
    assert res["top_culprit_by_incidents"] == {"name": "rst_server on host0012", "incidents": 302}
    assert sum(res["top_culprit_victims"]["fates"].values()) == 302
