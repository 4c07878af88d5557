"""One stdout console for data and one stderr console for messages."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.text import Text


class Terminal:
    def __init__(self, wide: bool = False) -> None:
        width = None if wide else 80
        self.out = Console(file=sys.stdout, width=width if sys.stdout.isatty() or not wide else 10_000,
                           highlight=False, soft_wrap=wide)
        self.err = Console(file=sys.stderr, highlight=False, soft_wrap=True)

    def chain(self, lines: list[str]) -> None:
        head, *rest = lines
        self.out.print(Text(head, style="bold"), overflow="fold")
        for line in rest:
            style = "dim" if line.lstrip().startswith(("why:", "fix:")) else (
                "red" if "ECONN" in line or "EPIPE" in line or "ETIMEDOUT" in line else "")
            self.out.print(Text(line, style=style), overflow="fold")
        sys.stdout.flush()

    def data(self, text: str) -> None:
        # Flushed by flush(), once per drained batch (the session calls it).
        sys.stdout.write(text + "\n")

    def flush(self) -> None:
        sys.stdout.flush()

    def note(self, text: str) -> None:
        self.err.print(text, markup=False)

    def error(self, text: str) -> None:
        self.err.print(Text("rsttrace: error: ", style="bold red") + Text(text))
