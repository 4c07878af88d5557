"""Read tracefs event `format` files: the fields a tracepoint records on this kernel."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .hooks import TRACEPOINT_GROUPS  # where each lives under events/ (tracer/hooks.py)

_FIELD = re.compile(
    r"^\s*field:(?P<decl>[^;]+);\s*offset:(?P<off>\d+);\s*size:(?P<size>\d+);"
    r"\s*signed:(?P<signed>\d+);"
)
_SYMBOLIC = re.compile(r"__print_symbolic\(REC->(\w+),\s*((?:\{\s*[^{}]+\}\s*,?\s*)+)\)")
_PAIR = re.compile(r"\{\s*([^,{}]+?)\s*,\s*\"([^\"]*)\"\s*\}")


class FormatError(Exception):
    """A format file that does not parse."""


@dataclass(frozen=True)
class Field:
    name: str
    ctype: str
    offset: int
    size: int
    signed: bool
    common: bool


@dataclass
class TpFormat:
    name: str
    id: int
    fields: list[Field] = field(default_factory=list)
    print_fmt: str = ""

    @property
    def names(self) -> list[str]:
        """Field names of the event itself (without common_*)."""
        return [f.name for f in self.fields if not f.common]

    def has(self, name: str) -> bool:
        return name in self.names

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{self.name} has no field {name}")

    def symbols(self, name: str) -> dict[str, str]:
        """The __print_symbolic table of field `name` in print fmt: {value text: label}."""
        for m in _SYMBOLIC.finditer(self.print_fmt):
            if m.group(1) == name:
                return {k.strip(): v for k, v in _PAIR.findall(m.group(2))}
        return {}


def _split_decl(decl: str) -> tuple[str, str]:
    """'const void * skbaddr' -> ('const void *', 'skbaddr'); '__u8 saddr[4]' -> ('__u8 [4]', 'saddr')."""
    decl = decl.strip()
    m = re.match(r"^(?P<type>.*?)(?P<name>\w+)(?P<arr>\[[^\]]*\])?$", decl)
    if not m:
        raise FormatError(f"cannot read field declaration {decl!r}")
    ctype = m.group("type").strip()
    if m.group("arr"):
        ctype += " " + m.group("arr")
    return ctype, m.group("name")


def parse(text: str, origin: str = "<format>") -> TpFormat:
    name, ident, fields, fmt = None, None, [], ""
    common = True
    for line in text.splitlines():
        if line.startswith("name:"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("ID:"):
            ident = int(line.split(":", 1)[1])
        elif line.startswith("print fmt:"):
            fmt = line.split(":", 1)[1].strip()
        elif line.strip() == "" and fields:
            common = False  # a blank line separates common_* from the event's own fields
        else:
            m = _FIELD.match(line)
            if m:
                ctype, fname = _split_decl(m.group("decl"))
                fields.append(
                    Field(
                        fname,
                        ctype,
                        int(m.group("off")),
                        int(m.group("size")),
                        m.group("signed") == "1",
                        common and fname.startswith("common_"),
                    )
                )
    if name is None or ident is None or not fields:
        raise FormatError(f"{origin}: not a tracepoint format file")
    return TpFormat(name, ident, fields, fmt)


def load(root: Path, tracepoint: str) -> TpFormat | None:
    """The format of `tracepoint` under a tracefs root (or a copy of one), None if absent."""
    group = TRACEPOINT_GROUPS.get(tracepoint)
    if group is None:
        raise KeyError(f"unknown tracepoint {tracepoint}")
    path = Path(root) / "events" / group / tracepoint / "format"
    if not path.is_file():
        path = Path(root) / group / tracepoint  # the layout of tests/data/formats/<version>
        if not path.is_file():
            return None
    try:
        return parse(path.read_text(), str(path))
    except OSError:
        return None
