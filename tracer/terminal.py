"""The terminal output boundary: every human-readable line leaves rsttrace through here.

Process names, addresses, reasons and file contents come from the kernel or from files any
user can write. Before a line reaches a terminal (or a pipe read by one), every control
character in it is shown escaped, as `ps` and `ss` do: `\\x1b` for ESC, `\\n` for a newline,
`\\u202e` for a bidi override. JSON output (`data`) is not touched: it keeps the exact
characters, escaped the way JSON escapes them.

Where stdout is a pipe or a file, a record is one line, never folded. On a terminal a long
line is folded at the terminal's width, between words (never inside one); `wide` turns
folding off.
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
import unicodedata

from .errors import OutputFailed

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Characters that move the cursor, change the terminal's state or reorder what is shown.
_UNSAFE_CATEGORIES = ("Cc", "Cf", "Cs", "Zl", "Zp", "Co", "Cn")


def _escape_char(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    n = ord(ch)
    if 0xDC80 <= n <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape): show the byte
        return f"\\x{n - 0xDC00:02x}"
    if n <= 0xFF:
        return f"\\x{n:02x}"
    if n <= 0xFFFF:
        return f"\\u{n:04x}"
    return f"\\U{n:08x}"


def _build_table() -> dict[int, str]:
    table = {}
    for n in list(range(0x20)) + list(range(0x7F, 0xA0)) + [0xAD]:
        table[n] = _escape_char(chr(n))
    return table


_ASCII_TABLE = _build_table()


def safe(text: object) -> str:
    """`text` with every control, format and unassigned character escaped (printable text,
    including any language's letters, is left alone). The result holds no ESC, no newline."""
    s = text if isinstance(text, str) else str(text)
    if s.isascii():
        if s.isprintable():
            return s
        return s.translate(_ASCII_TABLE)
    out = []
    for ch in s:
        if ch.isprintable() and ch != "\xad":
            out.append(ch)
        elif ch == " ":
            out.append(ch)
        elif unicodedata.category(ch) in _UNSAFE_CATEGORIES or ord(ch) < 0x20 or ch == "\xad":
            out.append(_escape_char(ch))
        else:  # other separators (e.g. NO-BREAK SPACE) are harmless
            out.append(ch)
    return "".join(out)


def columns(text: str) -> int:
    """Terminal columns `text` takes: wide (East Asian) characters two, combining marks none."""
    if text.isascii():
        return len(text)
    n = 0
    for ch in text:
        if unicodedata.combining(ch):
            continue
        n += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return n


def fold(line: str, width: int | None, indent: str = "    ") -> list[str]:
    """`line` cut into pieces of at most `width` columns, only at spaces; a word longer than
    the width stays whole on its own piece. Pieces after the first are indented."""
    if width is None or columns(line) <= width:
        return [line]
    lead = len(line) - len(line.lstrip(" "))
    words = line[lead:].split(" ")
    out: list[str] = []
    cur = line[:lead]
    fresh = True  # nothing but indentation on the current piece
    for w in words:
        if fresh:
            cur += w
            fresh = False
        elif columns(cur) + 1 + columns(w) <= width:
            cur += " " + w
        else:
            out.append(cur)
            cur = " " * lead + indent + w
    out.append(cur)
    return out


def _is_tty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


_STYLE = {"bold": "\x1b[1m", "dim": "\x1b[2m", "red": "\x1b[31m", "bold red": "\x1b[1;31m"}
_RESET = "\x1b[0m"


class Terminal:
    """stdout for data (incidents, reports), stderr for messages. `width`: fold at this many
    columns on a terminal (tests); by default the terminal's own width."""

    def __init__(self, wide: bool = False, width: int | None = None) -> None:
        self.wide = wide
        self._width = width
        self.closed = False  # stdout went away (EPIPE); further output is dropped

    # -- helpers --------------------------------------------------------------------------
    def width(self) -> int | None:
        """Columns to fold at, or None (pipe, file, or --wide)."""
        if self.wide or not _is_tty(sys.stdout):
            return None
        if self._width:
            return self._width
        try:
            return os.get_terminal_size(sys.stdout.fileno()).columns or 80
        except (OSError, ValueError, AttributeError):
            return shutil.get_terminal_size((80, 24)).columns

    def _write_out(self, text: str) -> None:
        if self.closed:
            return
        try:
            sys.stdout.write(text)
        except BrokenPipeError:
            self._stdout_gone()
        except OSError as e:
            if e.errno == errno.EPIPE:
                self._stdout_gone()
            raise OutputFailed(f"cannot write to stdout: {e.strerror or e}") from None

    def _stdout_gone(self) -> None:
        self.closed = True
        # Later writes and the interpreter's final flush go nowhere instead of failing again.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass
        raise OutputFailed("stdout was closed (EPIPE): stopping", stdout_closed=True)

    def _styled(self, line: str, style: str, stream) -> str:
        if style and _is_tty(stream) and os.environ.get("NO_COLOR") is None:
            return _STYLE[style] + line + _RESET
        return line

    # -- data on stdout -------------------------------------------------------------------
    def chain(self, lines: list[str]) -> None:
        """One incident: its first line bold, the victim's errors red, why/fix dim."""
        width = self.width()
        parts = []
        for i, line in enumerate(lines):
            line = safe(line)
            if i == 0:
                style = "bold"
            elif line.lstrip().startswith(("why:", "fix:")):
                style = "dim"
            elif "ECONN" in line or "EPIPE" in line or "ETIMEDOUT" in line:
                style = "red"
            else:
                style = ""
            for piece in fold(line, width):
                parts.append(self._styled(piece, style, sys.stdout) + "\n")
        self._write_out("".join(parts))
        self.flush()

    def lines(self, lines) -> None:
        """Plain text lines (reports): escaped, folded only on a terminal."""
        width = self.width()
        out = []
        for line in lines:
            out.extend(piece + "\n" for piece in fold(safe(line), width))
        self._write_out("".join(out))
        self.flush()

    def data(self, text: str) -> None:
        """A JSON document (kept exactly); flushed by flush(), once per drained batch."""
        self._write_out(text + "\n")

    def flush(self) -> None:
        if self.closed:
            return
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            self._stdout_gone()
        except OSError as e:
            raise OutputFailed(f"cannot write to stdout: {e.strerror or e}") from None

    # -- messages on stderr ---------------------------------------------------------------
    def _write_err(self, text: str) -> None:
        try:
            sys.stderr.write(text)
            sys.stderr.flush()
        except (OSError, ValueError):
            pass  # nowhere left to say it

    def note(self, text: str) -> None:
        self._write_err(safe(text) + "\n")

    def warning(self, text: str) -> None:
        self._write_err("rsttrace: warning: " + safe(text) + "\n")

    def error(self, text: str) -> None:
        prefix = self._styled("rsttrace: error:", "bold red", sys.stderr)
        self._write_err(prefix + " " + safe(text) + "\n")
