"""Heap census: walk a live process's glibc malloc chunks from the outside.

Groundwork for diagnosing *allocator retention* (memory a program freed but
glibc keeps): read a process's heaps through ``/proc/PID/mem`` without
stopping it, walk the malloc chunks, and say how much is in use, how much is
free inside the heap, how big the top chunk is, what pins the top, and how
much ``malloc_trim(0)`` would give back.

The layout is glibc 2.36 on x86-64 (``malloc/malloc.c``, ``malloc/arena.c``):

* A chunk starts with two 8-byte words, ``prev_size`` and ``size``; the low
  three bits of ``size`` are flags: ``PREV_INUSE`` (1), ``IS_MMAPPED`` (2),
  ``NON_MAIN_ARENA`` (4).  Chunk sizes are multiples of ``MALLOC_ALIGNMENT``
  (16) and at least ``MINSIZE`` (32).  The next chunk starts at
  ``chunk + size``.
* A chunk is in use iff the *next* chunk's ``PREV_INUSE`` bit is set.
* The top chunk is the last chunk of the heap: it ends exactly where the
  heap's memory ends.
* The main arena's heap is the ``[heap]`` (brk) mapping; its first chunk is
  at the brk start aligned to 16.
* Other arenas live in heaps of at most ``HEAP_MAX_SIZE`` (64 MiB), each
  mapped at a 64 MiB-aligned address, only the first ``mprotect_size`` bytes
  read-write (the rest of the reservation is ``PROT_NONE``).  Each starts
  with a ``heap_info``; the first heap of an arena holds the arena itself
  (``struct malloc_state``) right after it; chunks follow.
* A heap that is no longer its arena's current heap has no top chunk: glibc
  closed it with a 16-byte fencepost chunk and a size-0 header in its last
  16 bytes (``sysmalloc``).

What a walk cannot see: chunks in a tcache or a fastbin are free for the
program but glibc leaves the next chunk's ``PREV_INUSE`` bit set, so they
look (and are counted) *in use*.  The ``tcache_perthread_struct`` of each
thread is an ordinary in-use chunk too.  ``in_use_*`` is therefore an upper
bound on what the program holds, and ``free_*`` a lower bound on what the
allocator holds unused.

Reads are not atomic: the process keeps running, so a chunk may change while
it is read.  A walk never raises on garbage; it stops at the first header
that cannot be right, and says so (``complete=False``, ``note``); its numbers
then cover the chunks walked so far (a lower bound).
"""
from __future__ import annotations

import dataclasses
import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = [
    "HEAP_INFO_SIZE",
    "HEAP_MAX_SIZE",
    "MALLOC_STATE_SIZE",
    "HeapCensus",
    "census_process",
    "mmapped_chunks",
    "first_chunk_of_arena_heap",
    "first_chunk_of_main_heap",
    "read_process_memory",
    "walk_heap",
]

# -- glibc 2.36, x86-64 constants ---------------------------------------------

SIZE_SZ = 8                     # sizeof (INTERNAL_SIZE_T) == sizeof (size_t)
MALLOC_ALIGNMENT = 16           # 2 * SIZE_SZ (and __alignof__ (long double))
CHUNK_HDR_SZ = 2 * SIZE_SZ      # prev_size + size
MINSIZE = 32                    # offsetof (struct malloc_chunk, fd_nextsize)
MALLOC_CHUNK_SIZE = 6 * SIZE_SZ  # sizeof (struct malloc_chunk): prev_size, size,
#                                 fd, bk, fd_nextsize, bk_nextsize
PAGE_SIZE = 4096                # GLRO (dl_pagesize) on x86-64

PREV_INUSE = 0x1
IS_MMAPPED = 0x2
NON_MAIN_ARENA = 0x4
SIZE_BITS = PREV_INUSE | IS_MMAPPED | NON_MAIN_ARENA

# HEAP_MAX_SIZE = 2 * DEFAULT_MMAP_THRESHOLD_MAX = 2 * (4 * 1024 * 1024 *
# sizeof (long)) = 64 MiB on 64-bit (malloc/arena.c).
HEAP_MAX_SIZE = 64 << 20

# sizeof (heap_info) (malloc/arena.c, glibc >= 2.35, which added `pagesize`):
#   mstate ar_ptr; heap_info *prev; size_t size; size_t mprotect_size;
#   size_t pagesize;                       -> 5 * 8 = 40 bytes
#   char pad[-3 * SIZE_SZ & MALLOC_ALIGN_MASK] = -24 & 15 = 8 bytes
# = 48, chosen so that sizeof (heap_info) + 2 * SIZE_SZ (64) is a multiple of
# MALLOC_ALIGNMENT: a chunk header right after it has 16-aligned user memory.
# (Before 2.35 there was no `pagesize` and it was 32 bytes.)
HEAP_INFO_SIZE = 48
_HEAP_INFO = struct.Struct("<5Q")   # ar_ptr, prev, size, mprotect_size, pagesize

# sizeof (struct malloc_state) (malloc/malloc.c, 2.36):
#   int mutex; int flags; int have_fastchunks;       12 bytes, +4 padding
#   mfastbinptr fastbinsY[NFASTBINS];                NFASTBINS = 10: 80
#     (fastbin_index (request2size (MAX_FAST_SIZE = 160)) + 1 = (176 >> 4) - 2 + 1)
#   mchunkptr top, last_remainder;                   16
#   mchunkptr bins[NBINS * 2 - 2];                   NBINS = 128: 254 * 8 = 2032
#   unsigned int binmap[BINMAPSIZE];                 NBINS / 32 = 4: 16
#   malloc_state *next, *next_free;                  16
#   INTERNAL_SIZE_T attached_threads, system_mem, max_system_mem;  24
# = 16 + 80 + 16 + 2032 + 16 + 16 + 24 = 2200 (already a multiple of 8).
MALLOC_STATE_SIZE = 2200

_U64 = struct.Struct("<Q")

WINDOW = 4 << 20   # a live process's heap is read this much at a time


class _Unreadable(Exception):
    pass


class PagedMemory:
    """``size`` bytes of a process from ``base``, read on demand one window
    at a time, so that walking a 10 GiB heap holds 4 MiB, not 10 GiB."""

    def __init__(self, read: "ReadFn", pid: int, base: int, size: int, window: int = WINDOW):
        self.read, self.pid, self.base, self.size, self.window = read, pid, base, size, window
        self._at, self._buf = 0, b""

    def __len__(self) -> int:
        return self.size

    def u64(self, off: int) -> int:
        if not self._at <= off <= self._at + len(self._buf) - 8:
            at = max(0, min(off - off % self.window, self.size - self.window))
            try:
                buf = self.read(self.pid, self.base + at, min(self.window, self.size - at))
            except OSError as e:
                raise _Unreadable(f"cannot read {self.base + off:#x}: {e.strerror or e}") from None
            if not at <= off <= at + len(buf) - 8:
                raise _Unreadable(f"cannot read {self.base + off:#x}: short read")
            self._at, self._buf = at, buf
        return _U64.unpack_from(self._buf, off - self._at)[0]


Buffer = bytes | bytearray | memoryview | PagedMemory   # what walk_heap reads chunks from

KINDS = ("main", "arena")


def _align_up(n: int, a: int) -> int:
    return (n + a - 1) & ~(a - 1)


def _align_down(n: int, a: int) -> int:
    return n & ~(a - 1)


# -- result -------------------------------------------------------------------

@dataclass(frozen=True)
class HeapCensus:
    """What one walk of one heap found.

    ``start``/``end``: the address range walked (for an arena heap, the part
    glibc uses: ``heap_info.size`` bytes from the heap's start).

    ``in_use_bytes``/``in_use_chunks``: chunks whose next chunk has
    ``PREV_INUSE`` set.  Includes tcache and fastbin chunks (free for the
    program, but indistinguishable from in use by their headers) and each
    thread's tcache struct.  Chunk sizes, headers included.

    ``free_bytes``/``free_chunks``: free chunks inside the heap (in glibc's
    unsorted, small or large bins), *excluding* the top chunk.

    ``top_bytes``: size of the top chunk; 0 if the heap has none (an arena
    heap glibc closed with fenceposts when it moved on to a new heap).

    ``largest_free``: size of the largest free chunk, top excluded (0: none).

    ``pinned_by``: address of the chunk *header* (user pointer minus 16) of
    the last in-use chunk below the top: nothing above it can be returned
    by trimming the top.  ``None`` if no in-use chunk precedes the top, or no
    top was found (closed heap, incomplete walk).

    ``trimmable_bytes``: estimate of what ``malloc_trim(0)`` gives back
    (glibc 2.36 ``mtrim``), the sum of

    * for each free chunk at ``p`` of size ``s``: the whole pages strictly
      inside its body, after its header and its fd/bk/fd_nextsize/bk_nextsize
      words (``sizeof (struct malloc_chunk)`` = 48 bytes), which ``mtrim``
      hands to ``madvise(MADV_DONTNEED)``:
      ``max(0, align_down(p + s, page) - align_up(p + 48, page))``;
    * for the main heap only, the top trimmed by ``systrim(pad=0)``, which
      shrinks brk: ``align_down(top - MINSIZE - 1, page)`` if positive, i.e.
      the top rounded down to whole pages, keeping at least ``MINSIZE + 1``
      bytes (one page less than ``align_down(top, page)`` whenever
      ``top % page < 33``, e.g. a top that is a whole number of pages).
      ``mtrim`` trims the top only for the main arena: arena tops are left
      to ``heap_trim`` on ``free``, so they count 0 here.

    It is an estimate: fastbin chunks that ``malloc_consolidate`` would merge
    first are missed (they look in use), and pages already not resident
    (never touched, or dropped by an earlier trim) are counted although
    giving them back lowers RSS by nothing.

    ``complete``: the walk reached the top chunk (or a closed heap's
    fencepost).  If False, ``note`` says where and why it stopped and every
    number covers only the chunks walked before that point.
    """

    kind: str
    start: int
    end: int
    in_use_bytes: int
    in_use_chunks: int
    free_bytes: int
    free_chunks: int
    top_bytes: int
    largest_free: int
    pinned_by: int | None
    trimmable_bytes: int
    complete: bool
    note: str = ""
    first_of_arena: bool = False   # an arena heap holding its malloc_state


# -- layout -------------------------------------------------------------------

def first_chunk_of_main_heap(heap_start: int) -> int:
    """Address of the first chunk header of the main arena's heap.

    ``sysmalloc`` takes brk's start and, if ``chunk2mem`` of it is not
    16-aligned, moves it up (``front_misalign`` correction); since the header
    is 16 bytes, that is the brk start aligned up to ``MALLOC_ALIGNMENT``.
    The kernel's brk start is page-aligned, so normally this is
    ``heap_start`` itself.
    """
    return _align_up(heap_start, MALLOC_ALIGNMENT)


def first_chunk_of_arena_heap(heap_start: int, first_of_arena: bool) -> int:
    """Address of the first chunk header of a non-main arena heap.

    Every heap starts with its ``heap_info`` (48 bytes, already a multiple of
    16).  A later heap of an arena has its first chunk right after it
    (``sysmalloc``: ``top (av) = chunk_at_offset (heap, sizeof (*heap))``).
    The first heap of an arena holds the ``malloc_state`` (2200 bytes) next,
    and ``_int_new_arena`` puts the first chunk at the next address whose
    ``chunk2mem`` is 16-aligned, i.e. ``align_up(48 + 2200, 16) = 2256``.
    """
    offset = HEAP_INFO_SIZE
    if first_of_arena:
        offset = _align_up(offset + MALLOC_STATE_SIZE, MALLOC_ALIGNMENT)
    return heap_start + offset


# -- the walk -----------------------------------------------------------------

def _free_chunk_trimmable(p: int, size: int, page: int) -> int:
    """Bytes ``mtrim`` madvises inside the free chunk at ``p``."""
    return max(0, _align_down(p + size, page) - _align_up(p + MALLOC_CHUNK_SIZE, page))


def _top_trimmable(top: int, page: int) -> int:
    """Bytes ``systrim(0, main_arena)`` releases from a top of size ``top``."""
    top_area = top - MINSIZE - 1
    return _align_down(top_area, page) if top_area > 0 else 0


def _safe(fn, addr: int) -> int | None:
    try:
        return fn(addr)
    except _Unreadable:
        return None


def walk_heap(
    mem: Buffer,
    base: int,
    *,
    kind: str,
    first_chunk: int,
    page_size: int = PAGE_SIZE,
) -> HeapCensus:
    """Walk the chunks of one heap image and count them.

    ``mem`` holds the heap's memory starting at address ``base`` (any
    bytes-like object); ``first_chunk`` is the address of the first chunk
    header; ``kind`` is ``"main"`` or ``"arena"`` (only the trimmable estimate
    depends on it).  Pure: reads nothing but ``mem``.

    Each header is checked before use: readable, no ``IS_MMAPPED`` bit, size a
    multiple of 16 and at least ``MINSIZE`` (16 only for a closing
    fencepost).  A chunk is counted once the header after it has passed these
    checks (that header's ``PREV_INUSE`` bit says whether the chunk is in
    use).  The walk stops with ``complete=False`` at the first header that
    fails them, or whose chunk runs past the end of ``mem`` (counting the
    chunk before it first).  Never raises on garbage; raises ``ValueError`` only
    for an unknown ``kind``.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    end = base + len(mem)

    in_use_bytes = in_use_chunks = free_bytes = free_chunks = 0
    largest_free = trimmable = top_bytes = 0
    last_in_use: int | None = None
    pinned_by: int | None = None
    complete = False
    note = ""

    if isinstance(mem, PagedMemory):
        def size_field(addr: int) -> int:
            return mem.u64(addr - base + SIZE_SZ)
    else:
        def size_field(addr: int) -> int:
            return _U64.unpack_from(mem, addr - base + SIZE_SZ)[0]

    pending: tuple[int, int] | None = None   # (address, size) awaiting its next header
    addr = first_chunk
    if first_chunk < base or first_chunk % MALLOC_ALIGNMENT:
        note = f"first chunk {first_chunk:#x} is outside the heap or not 16-aligned"
    while not note:
        if addr + CHUNK_HDR_SZ > end:
            note = f"no room for a chunk header at {addr:#x} (heap ends at {end:#x})"
            break
        try:
            field = size_field(addr)
        except _Unreadable as e:
            note = str(e)
            break
        size = field & ~SIZE_BITS
        closed = False
        if field & IS_MMAPPED:
            note = f"chunk {addr:#x}: IS_MMAPPED set inside a heap (size field {field:#x})"
        elif size % MALLOC_ALIGNMENT:
            note = f"chunk {addr:#x}: size {size:#x} is not a multiple of 16"
        elif size < MINSIZE:
            # The only legal small chunk: the 16-byte fencepost followed by
            # the size-0 header that fills a closed heap's last 16 bytes.
            if (size == CHUNK_HDR_SZ and addr + 2 * CHUNK_HDR_SZ == end
                    and _safe(size_field, addr + CHUNK_HDR_SZ) == PREV_INUSE):
                closed = True
            else:
                note = f"chunk {addr:#x}: size {size:#x} is below MINSIZE ({MINSIZE})"
        if note:
            break

        # This header is well-formed: its PREV_INUSE bit classifies the chunk
        # before it (even if this chunk then runs past the end, as after a
        # short read: the bit is still the previous chunk's).
        if pending is not None:
            p, psize = pending
            if field & PREV_INUSE:
                in_use_bytes += psize
                in_use_chunks += 1
                last_in_use = p
            else:
                free_bytes += psize
                free_chunks += 1
                largest_free = max(largest_free, psize)
                trimmable += _free_chunk_trimmable(p, psize, page_size)
            pending = None

        if addr + size > end:
            note = f"chunk {addr:#x}: size {size:#x} runs past the end of the heap ({end:#x})"
            break
        if closed:
            complete = True
            break
        if addr + size == end:
            top_bytes = size
            pinned_by = last_in_use
            if kind == "main":
                trimmable += _top_trimmable(size, page_size)
            complete = True
            break
        pending = (addr, size)
        addr += size

    return HeapCensus(
        kind=kind,
        start=base,
        end=end,
        in_use_bytes=in_use_bytes,
        in_use_chunks=in_use_chunks,
        free_bytes=free_bytes,
        free_chunks=free_chunks,
        top_bytes=top_bytes,
        largest_free=largest_free,
        pinned_by=pinned_by,
        trimmable_bytes=trimmable,
        complete=complete,
        note=note,
    )


# -- a live process -----------------------------------------------------------

ReadFn = Callable[[int, int, int], bytes]
MapEntry = tuple[int, int, str, str]


def read_process_memory(pid: int, addr: int, size: int) -> bytes:
    """Read ``size`` bytes at ``addr`` of process ``pid`` via ``/proc/PID/mem``.

    The process is not stopped.  Needs ptrace-attach rights over it (root, or
    the same user under Yama ``ptrace_scope`` 0).  Returns fewer bytes if the
    range stops being readable part way; raises ``OSError`` (e.g.
    ``FileNotFoundError`` if the process is gone, ``EIO`` if nothing at
    ``addr`` is readable).
    """
    fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks: list[bytes] = []
        done = 0
        while done < size:
            try:
                got = os.pread(fd, size - done, addr + done)
            except OSError:
                if done:
                    break
                raise
            if not got:
                break
            chunks.append(got)
            done += len(got)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _anonymous(path: str) -> bool:
    return path == "" or path.startswith("[anon:")


def _arena_heap_candidates(maps: Sequence[MapEntry]) -> list[tuple[int, int]]:
    """Read-write anonymous mappings that look like glibc arena heaps.

    A heap is mapped at a 64 MiB-aligned address; its first ``mprotect_size``
    bytes are read-write and the rest of the 64 MiB reservation is
    ``PROT_NONE``, so it shows as an aligned ``rw-p`` mapping followed at once
    by a ``---p`` one, or as a whole 64 MiB ``rw-p`` mapping once fully grown.
    """
    ordered = sorted(maps)
    out = []
    for i, (start, end, perms, path) in enumerate(ordered):
        if start % HEAP_MAX_SIZE or not perms.startswith("rw") or not _anonymous(path):
            continue
        if end - start > HEAP_MAX_SIZE:
            continue
        follower = ordered[i + 1] if i + 1 < len(ordered) else None
        reserved_rest = (follower is not None and follower[0] == end
                         and follower[2].startswith("---") and _anonymous(follower[3]))
        if reserved_rest or end - start == HEAP_MAX_SIZE:
            out.append((start, end))
    return out


def _parse_heap_info(mem: Buffer, start: int, mapped: int) -> tuple[int, bool] | None:
    """``(used size, first of its arena)`` from the ``heap_info`` of a heap at
    ``start`` with ``mapped`` read-write bytes, or None if ``mem`` cannot
    start with a glibc heap_info."""
    if len(mem) < HEAP_INFO_SIZE:
        return None
    ar_ptr, prev, size, mprotect_size, pagesize = _HEAP_INFO.unpack_from(mem, 0)
    # Every non-main arena is the malloc_state right after the heap_info of
    # its first heap, so ar_ptr sits 48 bytes past a 64 MiB boundary.
    if ar_ptr % HEAP_MAX_SIZE != HEAP_INFO_SIZE:
        return None
    if prev % HEAP_MAX_SIZE:           # NULL, or another heap's start
        return None
    if pagesize == 0 or pagesize & (pagesize - 1):
        return None
    if not HEAP_INFO_SIZE < size <= min(mapped, mprotect_size, HEAP_MAX_SIZE):
        return None
    return size, ar_ptr == start + HEAP_INFO_SIZE


def census_process(
    pid: int,
    maps: Sequence[MapEntry],
    read: ReadFn = read_process_memory,
) -> list[HeapCensus]:
    """Census every glibc heap of a running process.

    ``maps`` lists the process's mappings as ``(start, end, perms, path)``
    (``path`` ``""`` for anonymous memory, ``"[heap]"`` for brk), e.g. from
    :func:`tracer.procmaps.read_maps`.  ``read(pid, addr, size)`` returns the
    process's memory (default: :func:`read_process_memory`).

    Returns the main heap first (the ``[heap]`` mapping, if any), then each
    arena heap in address order.  An arena heap candidate (see
    ``_arena_heap_candidates``) is kept only if its ``heap_info`` is
    consistent; it is walked over ``heap_info.size`` bytes, which can be less
    than its read-write part after ``shrink_heap``.  A heap whose read fails
    with ``OSError`` (process gone, ``EIO``, no permission) is skipped; a
    read failing part way is walked as far as it goes (``complete=False``).

    Each heap is read a window (``WINDOW``) at a time. Limits: ``[heap]`` is assumed to start at brk's start (true unless
    the kernel merged it with a neighbouring mapping); an arena heap merged
    by the kernel with an adjacent read-write mapping is not found.
    """
    out: list[HeapCensus] = []

    heap = [m for m in maps if m[3] == "[heap]"]
    if heap:
        start, end = min(m[0] for m in heap), max(m[1] for m in heap)
        try:
            read(pid, start, CHUNK_HDR_SZ)   # gone, or not ours to read: no census
        except OSError:
            pass
        else:
            out.append(walk_heap(PagedMemory(read, pid, start, end - start), start, kind="main",
                                 first_chunk=first_chunk_of_main_heap(start)))

    for start, end in _arena_heap_candidates(maps):
        try:
            head = read(pid, start, HEAP_INFO_SIZE)
        except OSError:
            continue
        info = _parse_heap_info(head, start, end - start)
        if info is None:
            continue
        size, first_of_arena = info
        walked = walk_heap(PagedMemory(read, pid, start, size), start, kind="arena",
                           first_chunk=first_chunk_of_arena_heap(start, first_of_arena))
        out.append(dataclasses.replace(walked, first_of_arena=first_of_arena))
    return out


def mmapped_chunks(pid: int, maps: Sequence[MapEntry], read: ReadFn = read_process_memory
                   ) -> list[tuple[int, int]]:
    """``(address, size)`` of glibc's mmap-served chunks (large blocks).

    Each is a mapping of its own whose first chunk header has ``IS_MMAPPED``
    set and a whole number of pages as size; the kernel may merge adjacent
    ones into one mapping, so each read-write anonymous mapping is walked
    header to header (16 bytes read per chunk). Arena heaps and ``[heap]``
    are skipped. A chunk mapped with an offset (``memalign``) has
    ``prev_size`` non-zero and starts later: such are missed (rare).
    """
    heaps = {s for s, _ in _arena_heap_candidates(maps)}
    out = []
    for start, end, perms, path in maps:
        if path != "" or not perms.startswith("rw") or start in heaps:
            continue
        addr = start
        while addr + CHUNK_HDR_SZ <= end:
            try:
                hdr = read(pid, addr, CHUNK_HDR_SZ)
            except OSError:
                break
            if len(hdr) < CHUNK_HDR_SZ:
                break
            prev_size, field = struct.unpack("<QQ", hdr)
            size = field & ~SIZE_BITS
            if (prev_size or field & SIZE_BITS != IS_MMAPPED or not size
                    or size % PAGE_SIZE or addr + size > end):
                break
            out.append((addr, size))
            addr += size
    return out
