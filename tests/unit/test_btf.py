"""The BTF reader: a synthetic blob with known layouts, and the running kernel's when present."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from tracer.btf import Btf, BtfError


def _blob() -> bytes:
    strings = b"\0int\0outer\0a\0b\0inner\0x\0flag\0e_t\0ONE\0TWO\0"
    off = {
        s: strings.index(b"\0" + s.encode() + b"\0") + 1
        for s in ["int", "outer", "a", "b", "inner", "x", "flag", "e_t", "ONE", "TWO"]
    }
    t = b""
    t += struct.pack("<IIII", off["int"], 1 << 24, 4, 32)  # 1: int
    # 2: struct inner { int x; unsigned flag:3 } (kind_flag set: bitfield offsets)
    t += struct.pack("<III", off["inner"], (4 << 24) | (1 << 31) | 2, 8)
    t += struct.pack("<III", off["x"], 1, 0)
    t += struct.pack("<III", off["flag"], 1, (3 << 24) | 37)
    # 3: struct outer { int a; union/struct (anonymous) { struct inner b; } }
    t += struct.pack("<III", off["outer"], (4 << 24) | 2, 16)
    t += struct.pack("<III", off["a"], 1, 0)
    t += struct.pack("<III", 0, 4, 64)  # anonymous member of type 4 at byte 8
    t += struct.pack("<III", 0, (4 << 24) | 1, 8)  # 4: anonymous struct { struct inner b; }
    t += struct.pack("<III", off["b"], 2, 0)
    t += struct.pack("<III", off["e_t"], (6 << 24) | 2, 4)  # 5: enum e_t
    t += struct.pack("<Ii", off["ONE"], 1) + struct.pack("<Ii", off["TWO"], 7)
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(t), len(t), len(strings))
    return hdr + t + strings


def test_offsets_through_anonymous_members_and_bitfields():
    b = Btf(_blob())
    assert b.offsetof("outer", "a") == 0
    assert b.offsetof("outer", "b.x") == 8
    m = b.member("outer", "b.flag")
    assert (m.bit_offset, m.bitfield_size) == (64 + 37, 3)
    assert b.struct_size("outer") == 16
    assert b.enum("e_t") == {"ONE": 1, "TWO": 7}


def test_errors_name_what_is_missing():
    b = Btf(_blob())
    with pytest.raises(BtfError, match="outer has no member nope"):
        b.member("outer", "nope")
    with pytest.raises(BtfError, match="struct missing not found"):
        b.member("missing", "x")
    with pytest.raises(BtfError, match="not a BTF blob"):
        Btf(b"\0" * 32)
    with pytest.raises(BtfError, match="truncated"):
        Btf(_blob()[:40])


@pytest.mark.skipif(not Path("/sys/kernel/btf/vmlinux").exists(), reason="kernel has no BTF")
def test_running_kernel_layouts_are_sane():
    b = Btf.load()
    # tcp_sock begins with inet_connection_sock which begins with inet_sock and sock.
    assert b.offsetof("tcp_sock", "rcv_nxt") > b.struct_size("sock")
    assert b.member("sock", "sk_protocol").size == 2 or b.member("sock", "sk_protocol").bitfield_size
    assert "SOCK_LINGER" in b.enum("sock_flags")
    assert b.typedef_params("btf_trace_inet_sock_set_state") == 4
