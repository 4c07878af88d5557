"""rsttrace: explain TCP resets; `tracer.load()` reads recorded traces into pandas tables."""


def load(what, **kw):
    """Load traces (path, paths or folder; JSON Lines or Parquet): see tracer.frame.load."""
    from .frame import load as _load  # pandas only when asked for

    return _load(what, **kw)


def dataset(root, table: str = "incidents", *, engine: str = "duckdb", tolerance: float = 2.0, **kw):
    """A fleet dataset's table (events, incidents, recordings, or merged: the incidents joined
    across hosts) as a DuckDB relation, or a Dask dataframe with engine="dask": see
    tracer.fleet.open_table."""
    from .fleet import open_table

    return open_table(root, table, engine=engine, tolerance=tolerance, **kw)
