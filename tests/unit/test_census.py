"""Tests for tracer.census: walking glibc 2.36 (x86-64) malloc chunks.

Synthetic heap images are laid out by a tiny builder (chunks of chosen sizes,
in use or free, then a top chunk); the expected numbers are worked out by
hand in each test.  One real test (root only) censuses a live C program
through /proc/PID/mem and checks the trimmable estimate against what
malloc_trim(0) actually gives back.
"""
from __future__ import annotations

import ctypes
import errno
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracer.census import (
    HEAP_INFO_SIZE,
    HEAP_MAX_SIZE,
    MALLOC_STATE_SIZE,
    HeapCensus,
    census_process,
    first_chunk_of_arena_heap,
    first_chunk_of_main_heap,
    read_process_memory,
    walk_heap,
)
from tracer.procmaps import read_maps

PAGE = 4096
PREV_INUSE = 1
BASE = 0x5555_5555_9000          # page-aligned, like a [heap] start
ARENA = 0x7F00_0000_0000          # 64 MiB-aligned, like an arena heap


# -- a tiny heap image builder -------------------------------------------------

def build(chunks: list[tuple[int, bool]], top: int | None = None, *, base: int = BASE,
          lead: bytes = b"", close: bool = False) -> tuple[bytearray, list[int]]:
    """Lay out ``lead`` then ``chunks`` [(size, in_use)] from ``base``, then a
    top chunk of ``top`` bytes, or (``close``) glibc's closing fencepost pair.

    Each header's PREV_INUSE bit tells whether the chunk before it is in use
    (the first chunk's is always set); a free chunk's size is repeated as the
    next chunk's prev_size, as glibc does.  Returns the image and the chunk
    addresses (top or fencepost last).
    """
    img = bytearray(lead)
    addrs = []
    prev_in_use, prev_size = True, 0

    def header(size_field: int) -> None:
        addrs.append(base + len(img))
        img.extend(struct.pack("<QQ", 0 if prev_in_use else prev_size, size_field))

    for size, in_use in chunks:
        header(size | (PREV_INUSE if prev_in_use else 0))
        img.extend(bytes(size - 16))
        prev_in_use, prev_size = in_use, size
    if top is not None:
        header(top | (PREV_INUSE if prev_in_use else 0))
        img.extend(bytes(top - 16))
    if close:
        header(16 | (PREV_INUSE if prev_in_use else 0))
        img.extend(struct.pack("<QQ", 16, PREV_INUSE))
    return img, addrs


def poke_size(img: bytearray, addr: int, value: int, base: int = BASE) -> None:
    """Overwrite the size field of the chunk header at ``addr``."""
    struct.pack_into("<Q", img, addr - base + 8, value)


def main_walk(img: bytes, base: int = BASE) -> HeapCensus:
    return walk_heap(img, base, kind="main", first_chunk=base)


# -- layout --------------------------------------------------------------------

def test_glibc_2_36_struct_sizes() -> None:
    # heap_info: 5 words (ar_ptr, prev, size, mprotect_size, pagesize) + 8 pad.
    assert HEAP_INFO_SIZE == 48 and (HEAP_INFO_SIZE + 16) % 16 == 0
    assert MALLOC_STATE_SIZE == 2200
    assert HEAP_MAX_SIZE == 64 << 20


def test_first_chunk_of_main_heap_is_brk_start_aligned_to_16() -> None:
    assert first_chunk_of_main_heap(BASE) == BASE
    assert first_chunk_of_main_heap(BASE + 8) == BASE + 16
    assert first_chunk_of_main_heap(BASE + 16) == BASE + 16


def test_first_chunk_of_arena_heap() -> None:
    # Later heaps of an arena: right after heap_info.
    assert first_chunk_of_arena_heap(ARENA, False) == ARENA + 48
    # First heap: heap_info + malloc_state (48 + 2200 = 2248) aligned up to 16.
    assert first_chunk_of_arena_heap(ARENA, True) == ARENA + 2256


# -- walks of well-formed heaps --------------------------------------------------

def test_all_in_use() -> None:
    img, (a, b, c, top) = build([(0x290, True), (0x30, True), (0x410, True)], top=0x1000 - 0x6D0)
    assert len(img) == PAGE
    r = main_walk(img)
    assert r == HeapCensus(
        kind="main", start=BASE, end=BASE + PAGE,
        in_use_bytes=0x290 + 0x30 + 0x410, in_use_chunks=3,
        free_bytes=0, free_chunks=0,
        top_bytes=0x930, largest_free=0,
        pinned_by=c,
        # systrim: align_down(0x930 - 33, 4096) = 0: a top under a page keeps all.
        trimmable_bytes=0,
        complete=True, note="",
    )
    assert top == c + 0x410


def test_free_chunk_in_the_middle() -> None:
    img, (a, b, c, _top) = build([(0x40, True), (0x200, False), (0x40, True)], top=0x2000)
    r = main_walk(img)
    assert r.complete and r.note == ""
    assert (r.in_use_bytes, r.in_use_chunks) == (0x80, 2)
    assert (r.free_bytes, r.free_chunks, r.largest_free) == (0x200, 1, 0x200)
    assert r.top_bytes == 0x2000
    assert r.pinned_by == c
    # The free chunk holds no whole page; the 8 KiB top gives back
    # align_down(0x2000 - 33, 4096) = 4096 (one page is always kept).
    assert r.trimmable_bytes == PAGE


def test_pinned_top_with_lots_free_below() -> None:
    # A (0x290, in use) at BASE; B (100 pages, free) at BASE+0x290;
    # C (0x20, in use) at BASE+0x64290; top from BASE+0x642b0 to BASE+0x85000.
    img, (a, b, c, top) = build([(0x290, True), (100 * PAGE, False), (0x20, True)],
                                top=0x85000 - 0x642B0)
    r = main_walk(img)
    assert r.complete
    assert r.pinned_by == c == BASE + 0x64290 and top == c + 0x20
    assert (r.in_use_bytes, r.in_use_chunks) == (0x2B0, 2)
    assert (r.free_bytes, r.free_chunks, r.largest_free) == (100 * PAGE, 1, 100 * PAGE)
    assert r.top_bytes == 0x20D50 == 134480
    # Free chunk B at p = BASE+0x290, size 0x64000: mtrim madvises
    #   [align_up(p + 48), align_down(p + size)) = [BASE+0x1000, BASE+0x64000) = 99 pages.
    # Top: systrim(0) releases align_down(134480 - 33, 4096) = 32 pages (131072);
    # "align_down(top) - one page" would say 31: 134480 % 4096 = 3408 >= 33.
    assert r.trimmable_bytes == 99 * PAGE + 32 * PAGE == 536576


def test_same_image_as_arena_heap_does_not_count_the_top() -> None:
    # malloc_trim calls systrim for the main arena only; an arena's top is
    # trimmed by heap_trim on free, never by malloc_trim.
    img, _ = build([(0x290, True), (100 * PAGE, False), (0x20, True)], top=0x85000 - 0x642B0)
    r = walk_heap(img, BASE, kind="arena", first_chunk=BASE)
    assert r.kind == "arena" and r.top_bytes == 134480
    assert r.trimmable_bytes == 99 * PAGE


@pytest.mark.parametrize(
    ("offset", "size", "pages"),
    [
        (0, 0x1000 + 0x20, 0),          # p+48 rounds up to p+4096; chunk ends at p+4128
        (0, 0x2000, 1),                 # [p+4096, p+8192)
        (PAGE - 48, 48 + PAGE, 1),      # body after the 48 bytes is exactly one page
        (PAGE - 48, 48 + PAGE - 16, 0),  # one 16-byte step short of it
        (PAGE - 32, 48 + PAGE, 0),      # the 48 bytes cross into the page
    ],
)
def test_free_chunk_trimmable_pages_are_strictly_inside_its_body(offset: int, size: int, pages: int) -> None:
    chunks = [(offset, True)] if offset else []
    chunks.append((size, False))
    img, _ = build(chunks + [(0x20, True)], top=0x20)   # top of 32: trims nothing
    r = main_walk(img)
    assert r.complete and r.free_bytes == size
    assert r.trimmable_bytes == pages * PAGE


def test_top_trim_keeps_minsize_plus_one() -> None:
    # A whole number of pages: one page is kept (the top must stay >= MINSIZE).
    img, _ = build([(0x20, True)], top=3 * PAGE)
    assert main_walk(img).trimmable_bytes == 2 * PAGE
    # 3 pages + 48: top_area = 3 pages + 15 > 3 pages: all three go.
    img, _ = build([(0x20, True)], top=3 * PAGE + 48)
    assert main_walk(img).trimmable_bytes == 3 * PAGE
    # 3 pages + 32: top_area = 3 pages - 1: two pages.
    img, _ = build([(0x20, True)], top=3 * PAGE + 32)
    assert main_walk(img).trimmable_bytes == 2 * PAGE


def test_heap_that_is_only_a_top_chunk() -> None:
    img, _ = build([], top=0x21000)
    r = main_walk(img)
    assert r.complete and r.top_bytes == 0x21000
    assert r.pinned_by is None and r.in_use_chunks == 0 and r.free_chunks == 0
    assert r.trimmable_bytes == 0x20000


def test_free_chunk_right_below_top_is_free_not_pinning() -> None:
    # glibc merges such a chunk into the top, but the walk must still follow
    # the bits: the last *in-use* chunk is the pin.
    img, (a, b, _top) = build([(0x40, True), (0x100, False)], top=0x1000)
    r = main_walk(img)
    assert r.pinned_by == a and r.free_bytes == 0x100


def test_arena_first_heap_walk_from_its_first_chunk() -> None:
    lead = bytes(first_chunk_of_arena_heap(0, True))
    img, (a, top) = build([(0x290, True)], top=0x21000 - 2256 - 0x290, base=ARENA, lead=lead)
    assert a == ARENA + 2256 and len(img) == 0x21000
    r = walk_heap(img, ARENA, kind="arena", first_chunk=a)
    assert r.complete and r.in_use_bytes == 0x290 and r.pinned_by == a
    assert r.top_bytes == 0x21000 - 2256 - 0x290
    assert (r.start, r.end) == (ARENA, ARENA + 0x21000)


def test_closed_arena_heap_ends_with_fenceposts() -> None:
    # A heap its arena moved on from: the old top was cut down and freed,
    # then a 16-byte fencepost and a size-0 header fill the last 32 bytes.
    lead = bytes(HEAP_INFO_SIZE)
    img, (a, b, fence) = build([(0x100, True), (0x2000, False)], base=ARENA, lead=lead, close=True)
    r = walk_heap(img, ARENA, kind="arena", first_chunk=ARENA + 48)
    assert r.complete and r.note == ""
    assert fence == ARENA + len(img) - 32
    assert (r.in_use_bytes, r.in_use_chunks) == (0x100, 1)          # fencepost not counted
    assert (r.free_bytes, r.free_chunks, r.largest_free) == (0x2000, 1, 0x2000)
    assert r.top_bytes == 0 and r.pinned_by is None
    # free chunk at ARENA+0x130: [ARENA+0x1000, ARENA+0x2000) = one page
    assert r.trimmable_bytes == PAGE


def test_fencepost_not_at_the_end_is_corrupt() -> None:
    img, (a, fence) = build([(0x100, True)], close=True)
    img.extend(bytes(0x100))                        # the pair is no longer last
    r = main_walk(img)
    assert not r.complete and "below MINSIZE" in r.note


# -- walks that must stop --------------------------------------------------------

@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (0x58 | PREV_INUSE, "not a multiple of 16"),
        (0x0, "below MINSIZE"),
        (0x10 | PREV_INUSE, "below MINSIZE"),
        (0x100 | 2 | PREV_INUSE, "IS_MMAPPED"),
    ],
)
def test_corrupt_size_mid_heap_stops_with_numbers_up_to_there(bad: int, why: str) -> None:
    img, (a, b, c, d, _top) = build([(0x40, True), (0x80, False), (0x40, True), (0x40, True)],
                                    top=0x1000)
    poke_size(img, d, bad)
    r = main_walk(img)
    assert not r.complete
    assert why in r.note and f"{d:#x}" in r.note
    # a and b are counted (the headers after them are sane); c is not: the
    # bit that would classify it sits in the corrupt header.
    assert (r.in_use_bytes, r.in_use_chunks) == (0x40, 1)
    assert (r.free_bytes, r.free_chunks, r.largest_free) == (0x80, 1, 0x80)
    assert r.top_bytes == 0 and r.pinned_by is None and r.trimmable_bytes == 0


def test_size_running_past_the_end_mid_heap() -> None:
    img, (a, b, _top) = build([(0x40, True), (0x40, True)], top=0x1000)
    poke_size(img, b, 0x7FFF_FFFF_FFF0 | PREV_INUSE)
    r = main_walk(img)
    assert not r.complete and "runs past the end" in r.note and f"{b:#x}" in r.note
    # a is counted: b's header is well-formed, so its PREV_INUSE bit is a's.
    assert (r.in_use_chunks, r.in_use_bytes, r.top_bytes) == (1, 0x40, 0)
    assert r.pinned_by is None


def test_top_running_past_the_end() -> None:
    # As if the read came back short, or the top grew between reads.
    img, (a, top) = build([(0x40, True)], top=0x2000)
    r = main_walk(img[:0x1000])
    assert not r.complete and "runs past the end" in r.note
    assert r.in_use_chunks == 1 and r.top_bytes == 0 and r.pinned_by is None
    assert r.end == BASE + 0x1000


def test_zero_length_heap() -> None:
    r = walk_heap(b"", BASE, kind="main", first_chunk=BASE)
    assert r == HeapCensus("main", BASE, BASE, 0, 0, 0, 0, 0, 0, None, 0, False, r.note)
    assert "no room for a chunk header" in r.note


def test_no_room_for_the_next_header() -> None:
    img, _ = build([(0x40, True)], top=0x1000)
    r = main_walk(img[:0x48])                       # 8 bytes of the next header
    assert not r.complete and "no room for a chunk header" in r.note
    assert r.in_use_chunks == 0                     # its PREV_INUSE bit was not read


@pytest.mark.parametrize("first", [BASE - 16, BASE + 8, BASE + 0x10000])
def test_bad_first_chunk_never_raises(first: int) -> None:
    img, _ = build([(0x40, True)], top=0x1000)
    r = walk_heap(img, BASE, kind="main", first_chunk=first)
    assert not r.complete and r.note and r.in_use_chunks == 0


def test_unknown_kind_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        walk_heap(b"", BASE, kind="mmap", first_chunk=BASE)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=512), skip=st.integers(0, 40))
def test_garbage_never_raises(data: bytes, skip: int) -> None:
    first = BASE + 16 * skip
    r = walk_heap(data, BASE, kind="main", first_chunk=first)
    assert r.end == BASE + len(data)
    accounted = r.in_use_bytes + r.free_bytes + r.top_bytes
    assert accounted <= max(0, len(data) - 16 * skip)
    if r.complete:
        closing = 0 if r.top_bytes else 32            # closed heap: fencepost pair
        assert accounted + closing == len(data) - 16 * skip
    else:
        assert r.note


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(2, 300).map(lambda n: 16 * n), st.booleans()), max_size=30),
       st.integers(2, 600).map(lambda n: 16 * n))
def test_random_well_formed_heaps_are_counted_exactly(chunks: list[tuple[int, bool]], top: int) -> None:
    img, addrs = build(chunks, top=top)
    r = main_walk(img)
    assert r.complete
    used = [s for s, u in chunks if u]
    free = [s for s, u in chunks if not u]
    assert (r.in_use_bytes, r.in_use_chunks) == (sum(used), len(used))
    assert (r.free_bytes, r.free_chunks) == (sum(free), len(free))
    assert r.largest_free == max(free, default=0)
    assert r.top_bytes == top
    in_use_addrs = [a for a, (_, u) in zip(addrs, chunks) if u]
    assert r.pinned_by == (in_use_addrs[-1] if in_use_addrs else None)


# -- census_process with a fake /proc/PID/mem --------------------------------------

def heap_info(ar_ptr: int, prev: int, size: int, mprotect_size: int, pagesize: int = PAGE) -> bytes:
    return struct.pack("<5Q", ar_ptr, prev, size, mprotect_size, pagesize) + bytes(8)


class FakeMemory:
    """Regions of a fake process; reads outside them fail with EIO."""

    def __init__(self) -> None:
        self.regions: dict[int, bytes] = {}
        self.fail: set[int] = set()
        self.calls: list[tuple[int, int, int]] = []

    def read(self, pid: int, addr: int, size: int) -> bytes:
        self.calls.append((pid, addr, size))
        if addr in self.fail:
            raise OSError(errno.EIO, "Input/output error")
        if addr not in self.regions:
            raise OSError(errno.EIO, "Input/output error")
        return self.regions[addr][:size]          # may be short, like a real read


def test_census_process_finds_main_and_arena_heaps() -> None:
    mem = FakeMemory()
    # [heap]: tcache struct in use, 3 pages free, one pinning chunk, top.
    main, (_, _, pin, _top) = build([(0x290, True), (3 * PAGE, False), (0x20, True)], top=0x10000 - 0x32B0)
    mem.regions[BASE] = bytes(main)

    # First heap of an arena: heap_info, malloc_state, chunks; 0x21000 mapped.
    a1 = ARENA
    lead = heap_info(a1 + 48, 0, 0x21000, 0x21000) + bytes(2256 - 48)
    arena1, (t1, blk1, _) = build([(0x290, True), (0x1010, True)], top=0x21000 - 2256 - 0x12A0,
                                  base=a1, lead=lead)
    mem.regions[a1] = bytes(arena1)

    # Second heap of the same arena, shrunk: 0x20000 mapped rw, 0x10000 used.
    a2 = ARENA + HEAP_MAX_SIZE
    lead = heap_info(a1 + 48, a1, 0x10000, 0x20000)
    arena2, (f2, b2, _) = build([(0x2000, False), (0x40, True)], top=0x10000 - 48 - 0x2040,
                                base=a2, lead=lead)
    mem.regions[a2] = bytes(arena2) + b"\xAA" * 0x10000   # beyond heap_info.size: not walked

    # 64 MiB-aligned, rw then PROT_NONE, but no heap_info: not a glibc heap.
    decoy = ARENA + 2 * HEAP_MAX_SIZE
    mem.regions[decoy] = b"\x01" * 0x1000
    # A heap whose read fails (unmapped meanwhile): skipped.
    gone = ARENA + 3 * HEAP_MAX_SIZE
    mem.fail.add(gone)
    # File-backed and unaligned anonymous mappings are never read.
    lib = ARENA + 4 * HEAP_MAX_SIZE

    maps = [
        (0x5555_5555_4000, 0x5555_5555_5000, "r--p", "/usr/bin/app"),
        (BASE, BASE + 0x10000, "rw-p", "[heap]"),
        (a1, a1 + 0x21000, "rw-p", ""),
        (a1 + 0x21000, a1 + HEAP_MAX_SIZE, "---p", ""),
        (a2, a2 + 0x20000, "rw-p", ""),
        (a2 + 0x20000, a2 + HEAP_MAX_SIZE, "---p", ""),
        (decoy, decoy + 0x1000, "rw-p", ""),
        (decoy + 0x1000, decoy + HEAP_MAX_SIZE, "---p", ""),
        (gone, gone + 0x1000, "rw-p", ""),
        (gone + 0x1000, gone + HEAP_MAX_SIZE, "---p", ""),
        (lib, lib + 0x1000, "rw-p", "/usr/lib/libfoo.so"),
        (lib + 0x1000, lib + 0x2000, "---p", "/usr/lib/libfoo.so"),
        (ARENA - 0x21000, ARENA - 0x20000, "rw-p", ""),        # unaligned
        (0x7FFF_0000_0000, 0x7FFF_0002_1000, "rw-p", "[stack]"),
    ]
    out = census_process(42, list(reversed(maps)), read=mem.read)

    assert [c.kind for c in out] == ["main", "arena", "arena"]
    m, h1, h2 = out
    assert (m.start, m.end) == (BASE, BASE + 0x10000) and m.complete
    assert (m.free_bytes, m.in_use_chunks, m.pinned_by) == (3 * PAGE, 2, pin)

    assert (h1.start, h1.end) == (a1, a1 + 0x21000) and h1.complete
    assert (h1.in_use_bytes, h1.in_use_chunks, h1.pinned_by) == (0x12A0, 2, blk1)
    assert t1 == a1 + 2256

    assert (h2.start, h2.end) == (a2, a2 + 0x10000) and h2.complete
    assert (h2.free_bytes, h2.pinned_by, f2) == (0x2000, b2, a2 + 48)
    # free chunk at a2+48 of 0x2000: [a2+0x1000, a2+0x2000) is the only whole page
    assert h2.trimmable_bytes == PAGE

    read_at = {addr for _, addr, _ in mem.calls}
    assert read_at == {BASE, a1, a2, decoy, gone}
    assert all(pid == 42 for pid, _, _ in mem.calls)


def test_census_process_full_grown_heap_and_short_read() -> None:
    # A heap grown to the full 64 MiB has no PROT_NONE tail; the read comes
    # back short (the process unmapped part of it meanwhile): walked as far
    # as the headers can be read (the heap is read a window at a time).
    mem = FakeMemory()
    lead = heap_info(ARENA + 48, 0, HEAP_MAX_SIZE, HEAP_MAX_SIZE) + bytes(2256 - 48)
    img, (_, top) = build([(0x290, True)], top=0x4000 - 2256 - 0x290, base=ARENA, lead=lead)
    poke_size(img, top, 0x8000 | PREV_INUSE, base=ARENA)  # its next header is past what reads back
    mem.regions[ARENA] = bytes(img)
    maps = [(ARENA, ARENA + HEAP_MAX_SIZE, "rw-p", "")]
    (h,) = census_process(7, maps, read=mem.read)
    assert h.kind == "arena" and not h.complete and "cannot read" in h.note
    assert h.in_use_chunks == 1 and h.end == ARENA + HEAP_MAX_SIZE


@pytest.mark.parametrize(
    "info",
    [
        heap_info(ARENA + 48, 0, 0x21000, 0x21000, pagesize=0),      # no page size
        heap_info(ARENA + 64, 0, 0x21000, 0x21000),                   # arena not after a heap_info
        heap_info(ARENA + 48, ARENA + 8, 0x21000, 0x21000),           # prev not a heap
        heap_info(ARENA + 48, 0, 0x22000, 0x22000),                   # bigger than mapped
        heap_info(ARENA + 48, 0, 0x21000, 0x20000),                   # size > mprotect_size
        heap_info(ARENA + 48, 0, 16, 0x21000),                        # smaller than itself
        b"\0" * 40,                                                   # read too short
    ],
)
def test_census_process_rejects_inconsistent_heap_info(info: bytes) -> None:
    mem = FakeMemory()
    mem.regions[ARENA] = info
    maps = [(ARENA, ARENA + 0x21000, "rw-p", ""), (ARENA + 0x21000, ARENA + HEAP_MAX_SIZE, "---p", "")]
    assert census_process(1, maps, read=mem.read) == []


def test_census_process_of_a_gone_process_is_empty() -> None:
    def gone(pid: int, addr: int, size: int) -> bytes:
        raise FileNotFoundError(errno.ENOENT, "No such file or directory")

    maps = [(BASE, BASE + 0x21000, "rw-p", "[heap]"),
            (ARENA, ARENA + 0x21000, "rw-p", ""), (ARENA + 0x21000, ARENA + HEAP_MAX_SIZE, "---p", "")]
    assert census_process(1, maps, read=gone) == []


def test_read_process_memory_reads_our_own_memory() -> None:
    data = bytes(range(256)) * 40                   # crosses page boundaries
    buf = ctypes.create_string_buffer(data, len(data))
    assert read_process_memory(os.getpid(), ctypes.addressof(buf), len(data)) == data
    with pytest.raises(OSError):
        read_process_memory(os.getpid(), 0, 16)     # nothing mapped at 0: EIO


# -- the real thing --------------------------------------------------------------

PROGRAM = Path(__file__).resolve().parents[1] / "programs" / "census_target.c"
BLOCK_CHUNK = 4112                # malloc(4096): request2size = (4096 + 8 + 15) & ~15


def _smaps_sizes(pid: int) -> dict[int, tuple[int, int]]:
    """{mapping start: (Size, Rss) in bytes} from /proc/PID/smaps."""
    out: dict[int, tuple[int, int]] = {}
    start = None
    size = 0
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        m = re.match(r"^([0-9a-f]+)-[0-9a-f]+ ", line)
        if m:
            start = int(m.group(1), 16)
        elif line.startswith("Size:"):
            size = int(line.split()[1]) * 1024
        elif line.startswith("Rss:") and start is not None:
            out[start] = (size, int(line.split()[1]) * 1024)
    return out


def _mtrim_pages(p: int, size: int) -> int:
    """Bytes glibc's mtrim madvises inside a free chunk (written out again
    here, independently of the module)."""
    lo = (p + 48 + PAGE - 1) // PAGE * PAGE
    hi = (p + size) // PAGE * PAGE
    return max(0, hi - lo)


@pytest.mark.skipif(os.geteuid() != 0, reason="reading another process's memory needs root")
@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is needed to build the target")
def test_census_of_a_live_process_matches_malloc_trim(tmp_path: Path) -> None:
    """Census tests/programs/census_target.c, then make it call malloc_trim(0)
    and check that the estimate is exactly what glibc gave back.

    Why the numbers are exact (glibc 2.36): malloc(4096) makes 4112-byte
    chunks, above the tcache limit (1032-byte requests) and the fastbin limit
    (128-byte chunks), so every free goes through _int_free's coalescing:
    the 1008 freed neighbours merge into ONE free chunk of 1008 * 4112 bytes
    (its lower neighbour, allocated earlier, is in use), which stays in the
    unsorted bin since nothing is malloc'ed afterwards.  The last block
    pins the top.  The same holds in the thread's arena with 13 blocks.
    Every byte of every block was written, so every page inside the freed
    run is resident and madvise(MADV_DONTNEED) drops it from RSS; the top's
    pages past its header were never touched, so sbrk(-n) shrinks the
    mapping by n without changing RSS.
    """
    exe = tmp_path / "census_target"
    subprocess.run(["gcc", "-O0", "-pthread", "-o", str(exe), str(PROGRAM)], check=True)
    proc = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        words = proc.stdout.readline().split()
        assert words[0] == "ready", words
        first, last, afirst, alast = (int(w, 16) for w in words[1:])

        maps = [(m.start, m.end, m.perms, m.path) for m in read_maps(proc.pid)]
        censuses = census_process(proc.pid, maps)
        main = [c for c in censuses if c.kind == "main"]
        arenas = [c for c in censuses if c.kind == "arena" and c.start <= alast < c.end]
        assert len(main) == 1 and len(arenas) == 1, censuses
        heap, arena = main[0], arenas[0]

        # -- main heap: 1009 blocks, all but the last freed --
        assert heap.complete, heap.note
        run = first - 16                                  # chunk of the first block
        assert heap.free_chunks == 1
        assert heap.free_bytes == heap.largest_free == 1008 * BLOCK_CHUNK
        assert heap.pinned_by == last - 16 == run + 1008 * BLOCK_CHUNK
        assert heap.in_use_bytes >= BLOCK_CHUNK           # + the tcache struct, the thread's DTV
        run_pages = _mtrim_pages(run, 1008 * BLOCK_CHUNK)
        assert run_pages >= 1010 * PAGE                   # 1008 * 4112 bytes hold 1010 or 1011 whole pages
        top_part = heap.trimmable_bytes - run_pages
        assert top_part == max(0, (heap.top_bytes - 33) // PAGE * PAGE)
        assert heap.trimmable_bytes >= 1000 * PAGE

        # -- arena heap: 13 blocks, all but the last freed --
        assert arena.complete, arena.note
        assert arena.free_chunks == 1
        assert arena.free_bytes == arena.largest_free == 12 * BLOCK_CHUNK
        assert arena.pinned_by == alast - 16 == afirst - 16 + 12 * BLOCK_CHUNK
        arun_pages = _mtrim_pages(afirst - 16, 12 * BLOCK_CHUNK)
        assert arena.trimmable_bytes == arun_pages > 0    # an arena top is not malloc_trim's

        before = _smaps_sizes(proc.pid)
        proc.stdin.write("t")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "trimmed"
        after = _smaps_sizes(proc.pid)

        (size0, rss0), (size1, rss1) = before[heap.start], after[heap.start]
        assert size0 - size1 == top_part                  # brk shrank by systrim's share
        assert rss0 - rss1 == run_pages                   # the run's pages were madvised
        (asize0, arss0), (asize1, arss1) = before[arena.start], after[arena.start]
        assert asize0 == asize1                           # arena top untouched
        assert arss0 - arss1 == arun_pages

        again = census_process(proc.pid, [(m.start, m.end, m.perms, m.path)
                                          for m in read_maps(proc.pid)])
        assert again[0].kind == "main" and again[0].top_bytes == heap.top_bytes - top_part
    finally:
        proc.kill()
        proc.wait()


def test_mmapped_chunks_found_by_their_headers_even_when_merged() -> None:
    import struct as _s
    from tracer.census import mmapped_chunks
    page = 4096
    mem = {}
    a = 0x7F0000000000
    mem[a] = _s.pack("<QQ", 0, 3 * page | 2)            # two chunks merged in one mapping
    mem[a + 3 * page] = _s.pack("<QQ", 0, 5 * page | 2)
    b = 0x7F1000000000
    mem[b] = _s.pack("<QQ", 0, 2 * page | 1)            # PREV_INUSE only: not an mmapped chunk
    c = 0x7F2000000000
    mem[c] = _s.pack("<QQ", 0, 9 * page | 2)            # claims more than the mapping: no

    def read(pid, addr, size):
        if addr not in mem:
            return bytes(size)
        return mem[addr][:size]

    maps = [(a, a + 8 * page, "rw-p", ""), (b, b + 2 * page, "rw-p", ""), (c, c + 4 * page, "rw-p", ""),
            (0x7F3000000000, 0x7F3000001000, "r--p", ""), (0x55000000, 0x55001000, "rw-p", "[heap]")]
    assert mmapped_chunks(1, maps, read) == [(a, 3 * page), (a + 3 * page, 5 * page)]


@pytest.mark.parametrize("window", [32, 48, 4096, 1 << 20])
def test_a_heap_read_window_by_window_walks_like_one_read(window) -> None:
    from tracer.census import PagedMemory
    img, _ = build([(0x290, True), (3 * PAGE, False), (0x20, True), (0x1000, False), (0x40, True)],
                   top=0x10000 - 0x290 - 3 * PAGE - 0x20 - 0x1000 - 0x40)
    data = bytes(img)

    def read(pid, addr, size):
        return data[addr - BASE: addr - BASE + size]

    whole = walk_heap(data, BASE, kind="main", first_chunk=BASE)
    paged = walk_heap(PagedMemory(read, 1, BASE, len(data), window=window), BASE, kind="main", first_chunk=BASE)
    assert paged == whole and whole.complete
