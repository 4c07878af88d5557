"""The event record and constants, read from bpf/rsttrace.h so C and Python share one definition."""

from __future__ import annotations

import ctypes
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .build import bpf_dir

_CTYPES = {
    "__u8": ctypes.c_uint8,
    "__s8": ctypes.c_int8,
    "char": ctypes.c_char,
    "__u16": ctypes.c_uint16,
    "__s16": ctypes.c_int16,
    "__u32": ctypes.c_uint32,
    "__s32": ctypes.c_int32,
    "__u64": ctypes.c_uint64,
    "__s64": ctypes.c_int64,
}
_DEFINE = re.compile(r"^#define\s+(RST_\w+)\s+(0x[0-9a-fA-F]+|\d+)\b", re.M)
_FIELD = re.compile(r"^\s*(\w+)\s+(\w+)(?:\[(\d+)\])?;")


class LayoutError(Exception):
    """bpf/rsttrace.h uses syntax the parser does not understand."""


@dataclass(frozen=True)
class Field:
    name: str
    ctype: str
    count: int  # 0 for a scalar, N for an array


@dataclass(frozen=True)
class Layout:
    constants: dict[str, int]
    structs: dict[str, tuple[Field, ...]]

    def ctypes_struct(self, name: str) -> type[ctypes.Structure]:
        fields = []
        for f in self.structs[name]:
            base = _CTYPES[f.ctype]
            fields.append((f.name, base * f.count if f.count else base))
        return type(name, (ctypes.Structure,), {"_fields_": fields})

    def prefixed(self, prefix: str) -> dict[int, str]:
        """{value: NAME-without-prefix} for constants like RST_EV_*."""
        return {v: k[len(prefix) :] for k, v in self.constants.items() if k.startswith(prefix)}


def parse_header(text: str) -> Layout:
    constants = {m.group(1): int(m.group(2), 0) for m in _DEFINE.finditer(text)}
    structs: dict[str, tuple[Field, ...]] = {}
    for m in re.finditer(r"^struct\s+(\w+)\s*\{(.*?)^\};", text, re.M | re.S):
        fields = []
        for line in m.group(2).splitlines():
            line = re.sub(r"/\*.*?\*/", "", line).strip()
            if not line:
                continue
            fm = _FIELD.match(line)
            if not fm or fm.group(1) not in _CTYPES:
                raise LayoutError(f"struct {m.group(1)}: cannot parse field line {line!r}")
            fields.append(Field(fm.group(2), fm.group(1), int(fm.group(3) or 0)))
        structs[m.group(1)] = tuple(fields)
    if "rst_event" not in structs:
        raise LayoutError("struct rst_event not found")
    return Layout(constants, structs)


@lru_cache(maxsize=1)
def layout(path: Path | None = None) -> Layout:
    return parse_header(Path(path or bpf_dir() / "rsttrace.h").read_text())
