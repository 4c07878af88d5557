"""`python -m tracer` is `rsttrace`."""

from .cli import run

run()
