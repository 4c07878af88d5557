"""rsttrace: explain TCP resets; `tracer.load()` reads recorded traces into pandas tables."""


def load(what, **kw):
    """Load traces (path, paths or folder; JSON Lines or Parquet): see tracer.frame.load."""
    from .frame import load as _load  # pandas only when asked for

    return _load(what, **kw)
