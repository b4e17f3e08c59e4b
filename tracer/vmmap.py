"""An exact, pure model of one process's anonymous memory mappings.

User space receives a stream of rare VM syscall events (``mmap``, ``munmap``,
``mremap``, ``mprotect``, ``madvise``) for one process, from BPF syscall
tracepoints.  :class:`VmMap` replays them and keeps the exact set of
anonymous mappings, each remembering who created it (``owner``) and from where
(``site``, an opaque call-site / stack id).

Rules, mirroring the kernel:

* Every event carries the syscall's return value; a failed call changes
  nothing.  ``mmap``/``mremap`` fail with a value in ``[-4095, -1]`` (as a
  signed 64-bit int, or the same bits as an unsigned one, e.g. ``2**64 - 12``);
  ``munmap``/``mprotect`` fail with any non-zero value.
* Lengths are rounded up to a whole page; a zero length changes nothing.
* Any successful new mapping replaces whatever was mapped in its range
  (``MAP_FIXED`` semantics), file mappings included; only anonymous ones
  (``MAP_ANONYMOUS``, private or shared) are then recorded.
* Partial ``munmap``/``mprotect`` split regions; adjacent regions with the same
  ``(prot, owner, site)`` are merged, so :meth:`VmMap.regions` is canonical.

Storage is a sorted list of non-overlapping regions searched with ``bisect``:
each operation carves ``[a, b)`` out of the regions it overlaps (splitting at
the edges) and splices the replacement in, O(log n + k) comparisons for k
touched regions.  Nothing here reads ``/proc`` or needs privileges.
"""
from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, replace

__all__ = [
    "MAP_ANONYMOUS",
    "MREMAP_DONTUNMAP",
    "MREMAP_FIXED",
    "MREMAP_MAYMOVE",
    "OWNERS",
    "PROT_EXEC",
    "PROT_NONE",
    "PROT_READ",
    "PROT_WRITE",
    "Region",
    "VmMap",
    "is_error",
]

PROT_NONE, PROT_READ, PROT_WRITE, PROT_EXEC = 0, 1, 2, 4
MAP_ANONYMOUS = 0x20
MREMAP_MAYMOVE, MREMAP_FIXED, MREMAP_DONTUNMAP = 1, 2, 4

# "program": made by the program's own code; "allocator": malloc's own (arena
# heaps, mmap-served large chunks); "unknown": existed before tracing began.
OWNERS = frozenset({"program", "allocator", "unknown"})

_MASK64 = (1 << 64) - 1
_MAX_ERRNO = 4095  # the kernel's MAX_ERRNO: returns in [-4095, -1] are errors


def is_error(result: int) -> bool:
    """True if a pointer-returning syscall's ``result`` is ``-errno``.

    Accepts the value signed or as the unsigned 64-bit register contents.
    """
    return (result & _MASK64) > _MASK64 - _MAX_ERRNO


@dataclass(frozen=True)
class Region:
    """One anonymous mapping ``[start, end)`` and who created it."""

    start: int
    end: int
    prot: int
    owner: str = "unknown"
    site: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end:
            raise ValueError(f"bad region bounds [{self.start:#x}, {self.end:#x})")
        if self.owner not in OWNERS:
            raise ValueError(f"unknown owner {self.owner!r}; expected one of {sorted(OWNERS)}")
        if self.prot < 0:
            raise ValueError(f"bad prot {self.prot}")

    @property
    def size(self) -> int:
        return self.end - self.start

    @property
    def writable(self) -> bool:
        return bool(self.prot & PROT_WRITE)

    def _key(self) -> tuple[int, str, int]:
        return (self.prot, self.owner, self.site)


def _coalesce(regions: list[Region]) -> list[Region]:
    """Merge touching neighbours with equal ``(prot, owner, site)``."""
    out: list[Region] = []
    for r in regions:
        if out and out[-1].end == r.start and out[-1]._key() == r._key():
            out[-1] = replace(out[-1], end=r.end)
        else:
            out.append(r)
    return out


class VmMap:
    """Exact interval map of one process's anonymous mappings."""

    def __init__(self, page_size: int = 4096) -> None:
        if page_size <= 0 or page_size & (page_size - 1):
            raise ValueError(f"page size must be a power of two, not {page_size}")
        self.page_size = page_size
        self._regions: list[Region] = []  # sorted, disjoint, coalesced
        self._starts: list[int] = []  # _regions[i].start, for bisect

    # ----------------------------------------------------------- internals
    def _pages(self, length: int) -> int:
        """``length`` rounded up to a whole number of pages (0 if <= 0)."""
        return -(-length // self.page_size) * self.page_size if length > 0 else 0

    def _span(self, a: int, b: int) -> tuple[int, int]:
        """Indices ``[i, j)`` of stored regions overlapping ``[a, b)``."""
        i = bisect_right(self._starts, a) - 1
        if i < 0 or self._regions[i].end <= a:
            i += 1
        return i, bisect_left(self._starts, b, lo=i)

    def _slice(self, a: int, b: int) -> list[Region]:
        """Stored regions clipped to ``[a, b)``."""
        if a >= b:
            return []
        i, j = self._span(a, b)
        return [replace(r, start=max(r.start, a), end=min(r.end, b)) for r in self._regions[i:j]]

    def _put(self, a: int, b: int, new: list[Region]) -> None:
        """Carve ``[a, b)`` out, put ``new`` (sorted, inside ``[a, b)``) there."""
        i, j = self._span(a, b)
        repl: list[Region] = []
        if i < j and self._regions[i].start < a:
            repl.append(replace(self._regions[i], end=a))
        repl.extend(new)
        if i < j and self._regions[j - 1].end > b:
            repl.append(replace(self._regions[j - 1], start=b))
        # Take in one neighbour on each side so the seams get merged too.
        lo, hi = max(i - 1, 0), min(j + 1, len(self._regions))
        merged = _coalesce(self._regions[lo:i] + repl + self._regions[j:hi])
        self._regions[lo:hi] = merged
        self._starts[lo:hi] = [r.start for r in merged]

    # ------------------------------------------------------------- events
    def seed(self, regions: Iterable[Region]) -> None:
        """Replace everything with ``regions`` (the state at attach time).

        Raises ``ValueError`` for unaligned or overlapping regions.
        """
        rs = sorted(regions, key=lambda r: r.start)
        for r in rs:
            if r.start % self.page_size or r.end % self.page_size:
                raise ValueError(f"region {r.start:#x}-{r.end:#x} is not page aligned")
        for prev, r in zip(rs, rs[1:]):
            if r.start < prev.end:
                raise ValueError(f"regions overlap at {r.start:#x}")
        self._regions = _coalesce(rs)
        self._starts = [r.start for r in self._regions]

    def mmap(self, addr: int, length: int, prot: int, flags: int, *,
             owner: str, site: int, result: int) -> None:
        """Replay ``mmap``; the mapping lands at ``result`` (``addr`` is a hint).

        Whatever was mapped in ``[result, result + length)`` is replaced; the
        new range is recorded only if ``flags`` has ``MAP_ANONYMOUS``.
        """
        size = self._pages(length)
        if is_error(result) or not size:
            return
        start = result & _MASK64
        new = [Region(start, start + size, prot, owner, site)] if flags & MAP_ANONYMOUS else []
        self._put(start, start + size, new)

    def munmap(self, addr: int, length: int, *, result: int) -> None:
        """Replay ``munmap``: forget ``[addr, addr + length)``, splitting edges."""
        size = self._pages(length)
        if result != 0 or not size:
            return
        self._put(addr, addr + size, [])

    def mremap(self, old: int, old_len: int, new_len: int, flags: int, *,
               result: int, new_addr: int | None = None) -> None:
        """Replay ``mremap``; the (possibly moved) mapping is at ``result``.

        Content of ``[old, old + min(old_len, new_len))`` keeps its
        prot/owner/site at the same offset from ``result``; a grown tail takes
        the attributes of the old range's last page (the kernel extends that
        VMA), or stays untracked if that page was not tracked.  The old range
        is removed unless ``MREMAP_DONTUNMAP``; the destination replaces what
        was there (``MREMAP_FIXED``).  ``old_len == 0`` duplicates a (shared)
        mapping, so the old one stays.  ``new_addr`` is accepted for symmetry
        with the syscall's arguments: the destination is always ``result``.
        """
        olen, nlen = self._pages(old_len), self._pages(new_len)
        if is_error(result) or not nlen:
            return
        dst = result & _MASK64
        keep = min(olen, nlen)
        moved = [replace(r, start=r.start - old + dst, end=r.end - old + dst)
                 for r in self._slice(old, old + keep)]
        if nlen > olen:
            last = self.region_at(old + olen - 1 if olen else old)
            if last is not None:
                moved.append(replace(last, start=dst + olen, end=dst + nlen))
        if olen and not flags & MREMAP_DONTUNMAP:
            self._put(old, old + olen, [])
        self._put(dst, dst + nlen, _coalesce(moved))

    def mprotect(self, addr: int, length: int, prot: int, *, result: int) -> None:
        """Replay ``mprotect``: set ``prot`` on tracked parts of the range."""
        size = self._pages(length)
        if result != 0 or not size:
            return
        pieces = [replace(r, prot=prot) for r in self._slice(addr, addr + size)]
        self._put(addr, addr + size, pieces)

    def madvise_free(self, addr: int, length: int) -> int:
        """``MADV_DONTNEED``/``MADV_FREE`` on a range: mappings stay.

        Returns the bytes of tracked anonymous mapping inside the range
        (whatever their prot), for the caller to count as given back.
        """
        size = self._pages(length)
        return sum(r.size for r in self._slice(addr, addr + size)) if size else 0

    # ------------------------------------------------------------ queries
    def overlapping(self, addr: int, length: int) -> list[Region]:
        """The parts of tracked regions inside ``[addr, addr + length)`` (page-rounded)."""
        size = self._pages(length)
        return self._slice(addr, addr + size) if size else []

    def region_at(self, addr: int) -> Region | None:
        """The tracked region containing ``addr``, if any."""
        i = bisect_right(self._starts, addr) - 1
        if i >= 0 and self._regions[i].end > addr:
            return self._regions[i]
        return None

    def regions(self) -> list[Region]:
        """All regions, sorted, adjacent same-(prot, owner, site) merged."""
        return list(self._regions)

    def __len__(self) -> int:
        return len(self._regions)

    def bytes_by(self, *, owner: str | None = None, writable_only: bool = False) -> int:
        """Mapped bytes, optionally of one owner and/or only ``PROT_WRITE`` ones."""
        return sum(r.size for r in self._regions
                   if (owner is None or r.owner == owner) and (r.writable or not writable_only))

    def by_site(self, owner: str = "program") -> dict[int, int]:
        """``site -> bytes`` for one owner, counting ALL mapped bytes.

        ``PROT_NONE`` reservations are included: the caller wants what each
        site holds mapped, not what it can touch (see :meth:`bytes_by`).
        """
        out: dict[int, int] = {}
        for r in self._regions:
            if r.owner == owner:
                out[r.site] = out.get(r.site, 0) + r.size
        return out
