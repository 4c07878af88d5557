"""Read struct layouts, enums and function prototypes from a kernel's BTF blob."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")

BTF_MAGIC = 0xEB9F
# BTF kinds (include/uapi/linux/btf.h).
INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT = range(1, 12)
FUNC, FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = range(12, 20)
_MODIFIERS = (TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG)


class BtfError(Exception):
    """The BTF blob is missing, malformed, or lacks what was asked for."""


@dataclass(frozen=True)
class Member:
    """Where a (possibly nested) member lives, in bits from the start of the outer struct."""

    name: str
    bit_offset: int
    bitfield_size: int  # 0 unless the member is a bitfield
    type_id: int
    size: int  # bytes of the member's type (after typedefs); for bitfields, the storage unit

    @property
    def offset(self) -> int:
        if self.bit_offset % 8:
            raise BtfError(f"member {self.name} is not byte aligned")
        return self.bit_offset // 8


class Btf:
    """A parsed BTF blob. Only the types are decoded eagerly; names are indexed on demand."""

    def __init__(self, data: bytes, origin: str = "<bytes>") -> None:
        self.origin = origin
        if len(data) < 24:
            raise BtfError(f"{origin}: too short to be BTF")
        magic, _ver, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
        if magic != BTF_MAGIC:
            raise BtfError(f"{origin}: not a BTF blob (magic {magic:#x})")
        type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", data, 8)
        self._data = data
        self._types_start = hdr_len + type_off
        self._types_end = self._types_start + type_len
        self._str_start = hdr_len + str_off
        self._str_end = self._str_start + str_len
        if self._types_end > len(data) or self._str_end > len(data):
            raise BtfError(f"{origin}: truncated BTF blob")
        # _offs[i] is the byte offset of type id i (id 0 is void).
        self._offs: list[int] = [0]
        self._index: dict[tuple[int, str], list[int]] | None = None
        self._scan()

    @classmethod
    def load(cls, path: Path | str = VMLINUX_BTF) -> "Btf":
        p = Path(path)
        try:
            return cls(p.read_bytes(), str(p))
        except OSError as e:
            raise BtfError(f"cannot read BTF at {p}: {e.strerror}") from None

    # -- raw access -------------------------------------------------------
    def _scan(self) -> None:
        data, pos, end = self._data, self._types_start, self._types_end
        unpack = struct.unpack_from
        offs = self._offs
        while pos < end:
            offs.append(pos)
            info = unpack("<I", data, pos + 4)[0]
            kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
            pos += 12
            if kind in (INT, VAR, DECL_TAG):
                pos += 4
            elif kind == ARRAY:
                pos += 12
            elif kind in (STRUCT, UNION, DATASEC, ENUM64):
                pos += 12 * vlen
            elif kind in (ENUM, FUNC_PROTO):
                pos += 8 * vlen
            elif kind not in (PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG):
                raise BtfError(f"{self.origin}: unknown BTF kind {kind} at type {len(offs) - 1}")

    def _str(self, off: int) -> str:
        start = self._str_start + off
        end = self._data.index(b"\0", start, self._str_end)
        return self._data[start:end].decode()

    def _head(self, tid: int) -> tuple[str, int, int, bool, int]:
        """(name, kind, vlen, kind_flag, size_or_type) of type id."""
        pos = self._offs[tid]
        name_off, info, st = struct.unpack_from("<III", self._data, pos)
        return self._str(name_off), (info >> 24) & 0x1F, info & 0xFFFF, bool(info >> 31), st

    def _build_index(self) -> dict[tuple[int, str], list[int]]:
        index: dict[tuple[int, str], list[int]] = {}
        data, unpack = self._data, struct.unpack_from
        for tid in range(1, len(self._offs)):
            name_off, info = unpack("<II", data, self._offs[tid])
            if name_off:
                kind = (info >> 24) & 0x1F
                if kind in (STRUCT, UNION, ENUM, ENUM64, FUNC, TYPEDEF, FUNC_PROTO, INT):
                    index.setdefault((kind, self._str(name_off)), []).append(tid)
        return index

    def find(self, kind: int, name: str) -> int | None:
        if self._index is None:
            self._index = self._build_index()
        ids = self._index.get((kind, name))
        if not ids:
            return None
        # Prefer a complete definition (non-zero size or members) when several exist.
        for tid in ids:
            _n, _k, vlen, _f, size = self._head(tid)
            if kind not in (STRUCT, UNION) or size or vlen:
                return tid
        return ids[0]

    def _resolve(self, tid: int) -> int:
        while tid:
            _n, kind, _v, _f, st = self._head(tid)
            if kind not in _MODIFIERS:
                return tid
            tid = st
        return tid

    def type_size(self, tid: int) -> int:
        tid = self._resolve(tid)
        if tid == 0:
            return 0
        _n, kind, _v, _f, st = self._head(tid)
        if kind == PTR:
            return 8
        if kind == ARRAY:
            elem, _idx, nelems = struct.unpack_from("<III", self._data, self._offs[tid] + 12)
            return self.type_size(elem) * nelems
        if kind in (INT, STRUCT, UNION, ENUM, ENUM64, FLOAT, DATASEC):
            return st
        return 0

    def type_name(self, tid: int) -> str:
        return self._head(tid)[0] if tid else "void"

    def kind_of(self, tid: int) -> int:
        return self._head(tid)[1] if tid else 0

    def _members(self, tid: int):
        name, kind, vlen, kflag, _st = self._head(tid)
        if kind not in (STRUCT, UNION):
            raise BtfError(f"type {name or tid} is not a struct or union")
        base = self._offs[tid] + 12
        for i in range(vlen):
            name_off, mtype, moff = struct.unpack_from("<III", self._data, base + 12 * i)
            bsize = (moff >> 24) if kflag else 0
            boff = (moff & 0xFFFFFF) if kflag else moff
            yield self._str(name_off), mtype, boff, bsize

    # -- queries --------------------------------------------------------------
    def struct_id(self, name: str) -> int:
        tid = self.find(STRUCT, name) or self.find(UNION, name)
        if tid is None:
            raise BtfError(f"struct {name} not found in {self.origin}")
        return tid

    def struct_size(self, name: str) -> int:
        return self.type_size(self.struct_id(name))

    def _find_member(self, tid: int, name: str, base: int) -> Member | None:
        # Direct members first, then anonymous struct/union members (depth first).
        anon = []
        for mname, mtype, boff, bsize in self._members(tid):
            if mname == name:
                size = self.type_size(mtype)
                return Member(name, base + boff, bsize, mtype, size)
            if not mname:
                rt = self._resolve(mtype)
                if self.kind_of(rt) in (STRUCT, UNION):
                    anon.append((rt, base + boff))
        for rt, off in anon:
            found = self._find_member(rt, name, off)
            if found:
                return found
        return None

    def member(self, struct_name: str, path: str) -> Member:
        """Member at dotted `path` in `struct_name`, looking through anonymous members."""
        tid = self.struct_id(struct_name)
        bit = 0
        found: Member | None = None
        for part in path.split("."):
            if found is not None:
                tid = self._resolve(found.type_id)
                if self.kind_of(tid) not in (STRUCT, UNION):
                    raise BtfError(f"{struct_name}.{path}: {found.name} is not a struct")
            found = self._find_member(tid, part, bit)
            if found is None:
                raise BtfError(f"{struct_name} has no member {path}")
            bit = found.bit_offset
        assert found is not None
        return found

    def has_member(self, struct_name: str, path: str) -> bool:
        try:
            self.member(struct_name, path)
            return True
        except BtfError:
            return False

    def offsetof(self, struct_name: str, path: str) -> int:
        return self.member(struct_name, path).offset

    def enum(self, name: str) -> dict[str, int]:
        tid = self.find(ENUM, name) or self.find(ENUM64, name)
        if tid is None:
            raise BtfError(f"enum {name} not found in {self.origin}")
        _n, kind, vlen, kflag, _st = self._head(tid)
        base = self._offs[tid] + 12
        out: dict[str, int] = {}
        for i in range(vlen):
            if kind == ENUM:
                name_off, val = struct.unpack_from("<Ii" if kflag else "<II", self._data, base + 8 * i)
            else:
                name_off, lo, hi = struct.unpack_from("<III", self._data, base + 12 * i)
                val = (hi << 32) | lo
            out[self._str(name_off)] = val
        return out

    def func_params(self, name: str) -> list[tuple[str, str]]:
        """[(param name, type name)] of a kernel function; the type name resolves pointers as 'T *'."""
        tid = self.find(FUNC, name)
        if tid is None:
            raise BtfError(f"function {name} not found in {self.origin}")
        proto = self._head(tid)[4]
        _n, _k, vlen, _f, _ret = self._head(proto)
        base = self._offs[proto] + 12
        params = []
        for i in range(vlen):
            name_off, ptype = struct.unpack_from("<II", self._data, base + 8 * i)
            params.append((self._str(name_off), self.describe(ptype)))
        return params

    def describe(self, tid: int) -> str:
        rt = self._resolve(tid)
        if rt == 0:
            return "void"
        name, kind, _v, _f, st = self._head(rt)
        if kind == PTR:
            return self.describe(st) + " *"
        prefix = {STRUCT: "struct ", UNION: "union ", ENUM: "enum ", ENUM64: "enum "}.get(kind, "")
        return prefix + (name or "<anon>")

    def typedef_params(self, name: str) -> int | None:
        """Parameter count of the function prototype a typedef points to (btf_trace_*
        typedefs describe each tracepoint's raw arguments); None if there is no such typedef."""
        tid = self.find(TYPEDEF, name)
        if tid is None:
            return None
        ptr = self._resolve(self._head(tid)[4])
        if self.kind_of(ptr) != PTR:
            return None
        proto = self._resolve(self._head(ptr)[4])
        if self.kind_of(proto) != FUNC_PROTO:
            return None
        return self._head(proto)[2]
