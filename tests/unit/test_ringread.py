"""The in-place ring buffer reader, on a ring laid out as the kernel maps it."""

from __future__ import annotations

import struct

from tracer.ringread import BUSY, DISCARD, RingReader

PAGE = 16  # small pages for the test: only the layout matters


def fake_ring(data_size: int, cons: int, prod: int, records: list[tuple[int, bytes, int]]):
    """records: (logical position, payload, header flags). The data area appears twice in a row."""
    data = bytearray(data_size)
    for pos, payload, flags in records:
        blob = struct.pack("<II", len(payload) | flags, 0) + payload
        for i, b in enumerate(blob):
            data[(pos + i) % data_size] = b
    r = RingReader.__new__(RingReader)
    r._cons = bytearray(struct.pack("<Q", cons))
    r._ring = bytearray(struct.pack("<Q", prod).ljust(PAGE, b"\0")) + data + data
    r._page, r._mask = PAGE, data_size - 1
    return r


def read_all(r: RingReader, limit: int = 100) -> list[bytes]:
    got = []
    r.read(lambda buf, off: got.append(bytes(buf[off:off + 4])), limit)
    return got


def test_records_in_order_across_the_wrap_skipping_discarded():
    # 64-byte ring; consumer at 40: a record at 40..52, a discarded one at 56, one wrapping at 72 (8).
    r = fake_ring(64, 40, 88, [(40, b"AAAA", 0), (56, b"XXXX", DISCARD), (72, b"BBBB", 0)])
    assert read_all(r) == [b"AAAA", b"BBBB"]
    assert struct.unpack("<Q", r._cons)[0] == 88
    assert not r.pending()


def test_stops_at_a_record_still_being_written_and_at_the_limit():
    r = fake_ring(64, 0, 48, [(0, b"AAAA", 0), (16, b"BBBB", 0), (32, b"CCCC", BUSY)])
    assert read_all(r, limit=1) == [b"AAAA"]
    assert struct.unpack("<Q", r._cons)[0] == 16
    assert read_all(r) == [b"BBBB"]
    assert struct.unpack("<Q", r._cons)[0] == 32 and r.pending()  # C waits for the kernel
