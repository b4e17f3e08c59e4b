"""The per-process memory breakdown: what the program holds, what the
allocator keeps, what the program mapped itself.

Pure: the session gathers the raw facts (``/proc/PID/smaps`` resident bytes,
``RssAnon``, the heap census, the probes' live bytes, the mapping tracker)
and :func:`breakdown` combines them. Definitions (also in the README):

* ``heap_live``: bytes the program holds through the malloc family. With a
  census: what the census found in use (every heap chunk in use, and glibc's
  mmap-served large chunks) plus what the probes saw change since that
  census; without one, what the probes saw since attach.
* ``retained``: resident bytes of the allocator's memory (the brk heap, the
  arena heaps, its mmap-served chunks) beyond ``heap_live``: what glibc keeps
  after ``free``.
* ``mmap_live``: direct anonymous mappings the program made itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from .census import HEAP_MAX_SIZE, HeapCensus


@dataclass(frozen=True)
class HeapReport:
    """One census of one process, summed over its heaps."""

    in_use: int             # chunks in use in every heap (upper bound) + mmapped chunks
    arena_in_use: int       # of which in the non-main arenas' heaps
    free: int               # free chunks inside the heaps (bins), tops excluded
    free_chunks: int
    largest_free: int
    top: int                # all top chunks
    main_top: int
    main_free: int          # free chunks in the brk heap
    main_pinned_by: int | None   # header of the last in-use chunk below the main top
    trimmable: int          # estimate of what malloc_trim(0) gives back
    arenas: int             # main arena (if it has a heap) + one per first arena heap
    heaps: int
    mmapped: int            # bytes of glibc's mmap-served chunks
    mmapped_starts: frozenset[int]
    arena_starts: frozenset[int]
    complete: bool
    note: str = ""
    seconds: float = 0.0


def summarize(heaps: Sequence[HeapCensus], mmapped: Iterable[tuple[int, int]] = (),
              seconds: float = 0.0) -> HeapReport:
    mm = list(mmapped)
    main = [h for h in heaps if h.kind == "main"]
    arena = [h for h in heaps if h.kind == "arena"]
    notes = [h.note for h in heaps if not h.complete and h.note]
    return HeapReport(
        in_use=sum(h.in_use_bytes for h in heaps) + sum(s for _, s in mm),
        arena_in_use=sum(h.in_use_bytes for h in arena),
        free=sum(h.free_bytes for h in heaps),
        free_chunks=sum(h.free_chunks for h in heaps),
        largest_free=max((h.largest_free for h in heaps), default=0),
        top=sum(h.top_bytes for h in heaps),
        main_top=sum(h.top_bytes for h in main),
        main_free=sum(h.free_bytes for h in main),
        main_pinned_by=main[0].pinned_by if main else None,
        trimmable=sum(h.trimmable_bytes for h in heaps),
        arenas=len(main) + sum(1 for h in arena if h.first_of_arena),
        heaps=len(heaps),
        mmapped=sum(s for _, s in mm),
        mmapped_starts=frozenset(a for a, _ in mm),
        arena_starts=frozenset(h.start for h in arena),
        complete=all(h.complete for h in heaps),
        note="; ".join(notes[:2]),
        seconds=seconds,
    )


@dataclass(frozen=True)
class HeapRss:
    """Resident bytes of the allocator's mappings, from smaps."""

    brk_size: int = 0       # size of [heap] (the program break minus its start)
    brk_rss: int = 0
    arena_rss: int = 0      # arena heaps (their read-write part)
    mmapped_rss: int = 0    # mappings that start with a glibc mmapped chunk

    @property
    def total(self) -> int:
        return self.brk_rss + self.arena_rss + self.mmapped_rss


def heap_rss(smaps: Iterable[tuple[int, int, str, str, int]], census: HeapReport | None = None) -> HeapRss:
    """Sum the allocator's resident memory from ``(start, end, perms, path,
    rss)`` rows: ``[heap]``, the arena heaps (read-write part) and the
    mappings that start with an mmapped chunk, as the census found them;
    without a census, 64 MiB-aligned read-write anonymous mappings are taken
    for arena heaps."""
    brk_size = brk_rss = arena = mm = 0
    for start, end, perms, path, rss in smaps:
        if path == "[heap]":
            brk_size += end - start
            brk_rss += rss
        elif path == "" and perms.startswith("rw"):
            if census is not None:
                if start in census.arena_starts:
                    arena += rss
                elif start in census.mmapped_starts:
                    mm += rss
            elif start % HEAP_MAX_SIZE == 0 and end - start <= HEAP_MAX_SIZE:
                arena += rss
    return HeapRss(brk_size, brk_rss, arena, mm)


@dataclass(frozen=True)
class Memory:
    """One row of the processes CSV (before its findings)."""

    rss_anon: int | None
    heap_live: int
    retained: int
    mmap_live: int
    brk_size: int
    arenas: int | None        # None: no census
    given_back: int | None    # None: VM events not traced (--no-mappings)
    trimmable: int | None
    rss: HeapRss
    census: HeapReport | None


def breakdown(*, rss_anon: int | None, rss: HeapRss, probe_live: int, census: HeapReport | None,
              probe_live_at_census: int = 0, mmap_live: int = 0,
              given_back: int | None = None) -> Memory:
    if census is not None:
        heap_live = max(0, census.in_use + probe_live - probe_live_at_census)
    else:
        heap_live = max(0, probe_live)
    return Memory(
        rss_anon=rss_anon,
        heap_live=heap_live,
        retained=max(0, rss.total - heap_live),
        mmap_live=mmap_live,
        brk_size=rss.brk_size,
        arenas=census.arenas if census else None,
        given_back=given_back,
        trimmable=census.trimmable if census else None,
        rss=rss,
        census=census,
    )
