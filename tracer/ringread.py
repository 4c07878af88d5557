"""The BPF ring buffer read in place, without a callback per record.

bcc's reader (libbpf's ring_buffer__consume) calls back into Python through ctypes for every
record; at tens of thousands of events per second that call cost as much as decoding the event.
This maps the ring the way libbpf does and hands out the records of one drain at once:

    page 0               consumer position (written here)
    page 1               producer position (written by the kernel)
    page 2 ...           the data area, mapped twice in a row, so no record wraps

Each record is an 8-byte header (length, with a busy bit while the kernel still writes it and a
discard bit) and the payload, padded to 8 bytes. x86-64 keeps stores and loads in order, so
plain reads and one plain write of the consumer position are the barriers libbpf's C needs.
"""

from __future__ import annotations

import mmap
import struct

BUSY = 1 << 31
DISCARD = 1 << 30
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")


class RingReader:
    def __init__(self, map_fd: int, data_size: int) -> None:
        if data_size <= 0 or data_size & (data_size - 1):
            raise ValueError(f"ring size {data_size} is not a power of two")
        page = mmap.PAGESIZE
        self._cons = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._ring = mmap.mmap(map_fd, page + 2 * data_size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        self._page = page
        self._mask = data_size - 1

    def read(self, handle, limit: int) -> int:
        """Pass up to `limit` records to handle(buffer, offset) in order; return how many."""
        cons = _U64.unpack_from(self._cons, 0)[0]
        prod = _U64.unpack_from(self._ring, 0)[0]
        ring, base, mask = self._ring, self._page, self._mask
        n = 0
        start = cons
        while cons < prod and n < limit:
            at = base + (cons & mask)
            head = _U32.unpack_from(ring, at)[0]
            if head & BUSY:
                break  # the kernel is still writing it: the next drain takes it
            length = head & ~(BUSY | DISCARD)
            if not head & DISCARD:
                handle(ring, at + 8)
                n += 1
            cons += (length + 8 + 7) & ~7
        if cons != start:
            _U64.pack_into(self._cons, 0, cons)
        return n

    def pending(self) -> bool:
        return _U64.unpack_from(self._cons, 0)[0] < _U64.unpack_from(self._ring, 0)[0]

    def close(self) -> None:
        self._cons.close()
        self._ring.close()
