"""Tests for tracer.vmmap: exact anonymous-mapping bookkeeping from VM syscalls."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracer.vmmap import (
    MAP_ANONYMOUS,
    MREMAP_DONTUNMAP,
    MREMAP_FIXED,
    MREMAP_MAYMOVE,
    PROT_NONE,
    PROT_READ,
    PROT_WRITE,
    Region,
    VmMap,
    is_error,
)

P = 4096
RW = PROT_READ | PROT_WRITE
ANON = MAP_ANONYMOUS | 0x02  # MAP_PRIVATE | MAP_ANONYMOUS
FILE = 0x02  # MAP_PRIVATE, file backed
BASE = 0x7F00_0000_0000


def pg(n: int) -> int:
    return BASE + n * P


def R(a: int, b: int, prot: int = RW, owner: str = "program", site: int = 1) -> Region:
    """Region over pages [a, b) from BASE."""
    return Region(pg(a), pg(b), prot, owner, site)


def mapped(pages: int, at: int = 0, *, prot: int = RW, owner: str = "program", site: int = 1,
           vm: VmMap | None = None) -> VmMap:
    vm = VmMap() if vm is None else vm  # an empty VmMap is falsy
    vm.mmap(0, pages * P, prot, ANON, owner=owner, site=site, result=pg(at))
    return vm


# --------------------------------------------------------------------- mmap

def test_mmap_then_munmap_whole() -> None:
    vm = mapped(13, site=7)
    assert vm.regions() == [R(0, 13, site=7)]
    assert vm.bytes_by() == vm.bytes_by(owner="program") == 13 * P
    assert vm.by_site() == {7: 13 * P}
    vm.munmap(pg(0), 13 * P, result=0)
    assert vm.regions() == [] and vm.bytes_by() == 0 and vm.by_site() == {}


@pytest.mark.parametrize("result", [-1, -12, -4095, 2**64 - 1, 2**64 - 12, 2**64 - 4095])
def test_mmap_failed_is_ignored(result: int) -> None:
    vm = mapped(3)
    vm.mmap(0, 5 * P, RW, ANON, owner="program", site=2, result=result)
    vm.mmap(pg(0), 5 * P, RW, ANON | 0x10, owner="program", site=2, result=result)  # MAP_FIXED
    assert vm.regions() == [R(0, 3)]


def test_is_error_boundaries() -> None:
    assert is_error(-1) and is_error(-4095) and is_error(2**64 - 4095)
    assert not is_error(0) and not is_error(-4096) and not is_error(2**64 - 4096) and not is_error(BASE)


@pytest.mark.parametrize("length,pages", [(1, 1), (P - 1, 1), (P, 1), (P + 1, 2), (7 * P - 5, 7)])
def test_lengths_round_up_to_pages(length: int, pages: int) -> None:
    vm = VmMap()
    vm.mmap(0, length, RW, ANON, owner="program", site=1, result=pg(0))
    assert vm.bytes_by() == pages * P


def test_other_page_size() -> None:
    vm = VmMap(page_size=16384)
    vm.mmap(0, 1, RW, ANON, owner="program", site=1, result=BASE)
    assert vm.bytes_by() == 16384
    with pytest.raises(ValueError):
        VmMap(page_size=3000)


def test_zero_length_is_noop() -> None:
    vm = mapped(5)
    before = vm.regions()
    vm.mmap(0, 0, RW, ANON, owner="program", site=9, result=pg(10))
    vm.munmap(pg(0), 0, result=0)
    vm.mprotect(pg(0), 0, PROT_NONE, result=0)
    vm.mremap(pg(0), 5 * P, 0, MREMAP_MAYMOVE, result=pg(20))
    assert vm.madvise_free(pg(0), 0) == 0
    assert vm.regions() == before


def test_file_mappings_are_not_tracked() -> None:
    vm = VmMap()
    vm.mmap(0, 11 * P, PROT_READ, FILE, owner="program", site=1, result=pg(0))
    assert vm.regions() == []


def test_adjacent_same_site_merge_different_sites_do_not() -> None:
    vm = mapped(3, 0, site=1)
    mapped(5, 3, site=1, vm=vm)
    mapped(2, 8, site=2, vm=vm)
    mapped(2, 10, site=2, owner="allocator", vm=vm)
    assert vm.regions() == [R(0, 8), R(8, 10, site=2), R(10, 12, site=2, owner="allocator")]
    assert len(vm) == 3
    assert vm.by_site() == {1: 8 * P, 2: 2 * P}
    assert vm.by_site("allocator") == {2: 2 * P}
    assert vm.bytes_by(owner="allocator") == 2 * P
    assert vm.region_at(pg(9) + 5) == R(8, 10, site=2)
    assert vm.region_at(pg(12)) is None


# ------------------------------------------------------------------- munmap

@pytest.mark.parametrize("first,count,expected", [
    (0, 3, [(3, 11)]),                # start
    (4, 2, [(0, 4), (6, 11)]),        # middle: one region becomes two
    (8, 3, [(0, 8)]),                 # end
    (8, 5, [(0, 8)]),                 # end, past the region
])
def test_partial_munmap(first: int, count: int, expected: list[tuple[int, int]]) -> None:
    vm = mapped(11)
    vm.munmap(pg(first), count * P, result=0)
    assert vm.regions() == [R(a, b) for a, b in expected]
    assert vm.bytes_by() == sum(b - a for a, b in expected) * P


def test_munmap_spanning_regions_and_holes() -> None:
    vm = VmMap()
    for at, n, site in [(0, 3, 1), (5, 7, 2), (13, 2, 3), (17, 5, 4)]:
        mapped(n, at, site=site, vm=vm)
    vm.munmap(pg(1), 18 * P, result=0)  # pages [1, 19)
    assert vm.regions() == [R(0, 1, site=1), R(19, 22, site=4)]
    assert vm.by_site() == {1: P, 4: 3 * P}


def test_failed_munmap_is_ignored() -> None:
    vm = mapped(7)
    vm.munmap(pg(0), 7 * P, result=-22)
    assert vm.regions() == [R(0, 7)]


# ---------------------------------------------------------------- MAP_FIXED

def test_map_fixed_over_middle_replaces_that_part() -> None:
    vm = mapped(17, site=1)
    vm.mmap(pg(5), 3 * P, PROT_READ, ANON | 0x10, owner="allocator", site=9, result=pg(5))
    assert vm.regions() == [R(0, 5), R(5, 8, PROT_READ, "allocator", 9), R(8, 17)]
    assert vm.bytes_by(owner="program") == 14 * P
    assert vm.bytes_by(writable_only=True) == 14 * P


def test_file_mapping_over_anon_removes_that_part() -> None:
    vm = mapped(17)
    vm.mmap(pg(5), 3 * P, PROT_READ, FILE | 0x10, owner="program", site=9, result=pg(5))
    assert vm.regions() == [R(0, 5), R(8, 17)]
    assert vm.bytes_by() == 14 * P


# ------------------------------------------------------------------- mremap

def test_mremap_grow_in_place() -> None:
    vm = mapped(5, site=3)
    vm.mremap(pg(0), 5 * P, 13 * P, 0, result=pg(0))
    assert vm.regions() == [R(0, 13, site=3)]


def test_mremap_shrink() -> None:
    vm = mapped(13, site=3)
    vm.mremap(pg(0), 13 * P, 5 * P, 0, result=pg(0))
    assert vm.regions() == [R(0, 5, site=3)]


def test_mremap_move_keeps_owner_site_prot() -> None:
    vm = mapped(7, prot=PROT_READ, owner="allocator", site=42)
    vm.mremap(pg(0), 7 * P, 11 * P, MREMAP_MAYMOVE, result=pg(100))
    assert vm.regions() == [R(100, 111, PROT_READ, "allocator", 42)]
    assert vm.by_site("allocator") == {42: 11 * P}


def test_mremap_fixed_overwrites_target() -> None:
    vm = mapped(3, 0, site=1)
    mapped(10, 20, site=2, vm=vm)
    vm.mremap(pg(0), 3 * P, 3 * P, MREMAP_MAYMOVE | MREMAP_FIXED, result=pg(23), new_addr=pg(23))
    assert vm.regions() == [R(20, 23, site=2), R(23, 26, site=1), R(26, 30, site=2)]


def test_mremap_dontunmap_keeps_both() -> None:
    vm = mapped(7, site=5)
    vm.mremap(pg(0), 7 * P, 7 * P, MREMAP_MAYMOVE | MREMAP_DONTUNMAP, result=pg(50))
    assert vm.regions() == [R(0, 7, site=5), R(50, 57, site=5)]
    assert vm.by_site() == {5: 14 * P}


@pytest.mark.parametrize("result", [-1, -12, 2**64 - 12])
def test_mremap_failure_is_ignored(result: int) -> None:
    vm = mapped(7)
    vm.mremap(pg(0), 7 * P, 13 * P, MREMAP_MAYMOVE, result=result)
    assert vm.regions() == [R(0, 7)]


def test_mremap_of_untracked_range_stays_untracked_and_clears_target() -> None:
    vm = mapped(5, 30)
    vm.mremap(pg(0), 2 * P, 3 * P, MREMAP_MAYMOVE | MREMAP_FIXED, result=pg(31))
    assert vm.regions() == [R(30, 31), R(34, 35)]


def test_mremap_move_of_split_region_keeps_each_piece() -> None:
    vm = mapped(6, site=1)
    vm.mprotect(pg(0), 2 * P, PROT_READ, result=0)
    vm.mremap(pg(0), 6 * P, 8 * P, MREMAP_MAYMOVE, result=pg(40))
    assert vm.regions() == [R(40, 42, PROT_READ), R(42, 48)]


# ----------------------------------------------------------------- mprotect

def test_mprotect_arena_reservation() -> None:
    """glibc reserves an arena heap PROT_NONE, then opens it up as it grows."""
    vm = mapped(31, prot=PROT_NONE, owner="allocator", site=8)
    assert vm.bytes_by(writable_only=True) == 0
    vm.mprotect(pg(0), 3 * P, RW, result=0)
    assert vm.regions() == [R(0, 3, RW, "allocator", 8), R(3, 31, PROT_NONE, "allocator", 8)]
    assert vm.bytes_by(owner="allocator", writable_only=True) == 3 * P
    assert vm.bytes_by(owner="allocator") == 31 * P
    vm.mprotect(pg(3), 4 * P - 100, RW, result=0)  # rounds up to 4 pages
    assert vm.bytes_by(writable_only=True) == 7 * P
    vm.mprotect(pg(0), 7 * P, PROT_NONE, result=0)  # back: merges again
    assert vm.regions() == [R(0, 31, PROT_NONE, "allocator", 8)]
    assert vm.by_site("allocator") == {8: 31 * P}  # by_site counts PROT_NONE bytes too


def test_mprotect_middle_splits_in_three_and_skips_holes() -> None:
    vm = mapped(11)
    mapped(2, 13, vm=vm)
    vm.mprotect(pg(4), 10 * P, PROT_READ, result=0)
    assert vm.regions() == [R(0, 4), R(4, 11, PROT_READ), R(13, 14, PROT_READ), R(14, 15)]


def test_failed_mprotect_is_ignored() -> None:
    vm = mapped(11)
    vm.mprotect(pg(4), 2 * P, PROT_READ, result=-13)
    assert vm.regions() == [R(0, 11)]


# ------------------------------------------------------------------ madvise

def test_madvise_free_counts_only_tracked_bytes() -> None:
    vm = mapped(5, 0)
    mapped(3, 10, vm=vm)
    vm.mmap(0, 2 * P, PROT_READ, FILE, owner="program", site=1, result=pg(6))
    assert vm.madvise_free(pg(2), 9 * P) == (3 + 1) * P  # pages 2-4 and 10, not the file
    assert vm.madvise_free(pg(0), 1) == P
    assert vm.madvise_free(pg(20), 7 * P) == 0
    assert vm.bytes_by() == 8 * P  # mappings stay


# --------------------------------------------------------------------- seed

def test_seed_replaces_everything() -> None:
    vm = mapped(5)
    vm.seed([R(20, 23, owner="unknown", site=0), Region(pg(10), pg(12), RW)])
    assert vm.regions() == [Region(pg(10), pg(12), RW), R(20, 23, owner="unknown", site=0)]
    assert vm.bytes_by(owner="unknown") == 5 * P and vm.bytes_by(owner="program") == 0


def test_seed_merges_and_validates() -> None:
    vm = VmMap()
    vm.seed([R(3, 5), R(0, 3)])
    assert vm.regions() == [R(0, 5)]
    with pytest.raises(ValueError):
        vm.seed([R(0, 3), R(2, 4)])
    with pytest.raises(ValueError):
        vm.seed([Region(BASE, BASE + 100, RW)])


def test_region_validation() -> None:
    assert R(0, 3).size == 3 * P
    with pytest.raises(ValueError):
        Region(10, 10, RW)
    with pytest.raises(ValueError):
        Region(0, P, RW, owner="kernel")


# ------------------------------------------- property test vs a page model

NPAGES = 64
OWNER_LIST = ["program", "allocator", "unknown"]
Attrs = tuple[int, str, int]


class PageModel:
    """Brute force: one dict entry per mapped page."""

    def __init__(self) -> None:
        self.pages: dict[int, Attrs] = {}

    def mmap(self, at: int, n: int, attrs: Attrs, anon: bool) -> None:
        for p in range(at, at + n):
            self.pages.pop(p, None)
            if anon:
                self.pages[p] = attrs

    def munmap(self, at: int, n: int) -> None:
        for p in range(at, at + n):
            self.pages.pop(p, None)

    def mremap(self, old: int, on: int, nn: int, dst: int, dontunmap: bool) -> None:
        src = {i: self.pages[old + i] for i in range(min(on, nn)) if old + i in self.pages}
        tail = self.pages.get(old + on - 1 if on else old)
        if on and not dontunmap:
            self.munmap(old, on)
        self.munmap(dst, nn)
        for i, a in src.items():
            self.pages[dst + i] = a
        if tail is not None:
            for i in range(on, nn):
                self.pages[dst + i] = tail

    def mprotect(self, at: int, n: int, prot: int) -> None:
        for p in range(at, at + n):
            if p in self.pages:
                self.pages[p] = (prot, *self.pages[p][1:])

    def regions(self) -> list[Region]:
        out: list[Region] = []
        for p in sorted(self.pages):
            prot, owner, site = self.pages[p]
            if out and out[-1].end == pg(p) and (out[-1].prot, out[-1].owner, out[-1].site) == self.pages[p]:
                out[-1] = Region(out[-1].start, pg(p + 1), prot, owner, site)
            else:
                out.append(Region(pg(p), pg(p + 1), prot, owner, site))
        return out


page = st.integers(0, NPAGES - 1)
count = st.integers(1, 12)
attrs = st.tuples(st.sampled_from([PROT_NONE, PROT_READ, RW]), st.sampled_from(OWNER_LIST[:2]),
                  st.integers(1, 3))
op = st.one_of(
    st.tuples(st.just("mmap"), page, count, attrs, st.booleans(), st.integers(0, P - 1)),
    st.tuples(st.just("munmap"), page, count, st.integers(0, P - 1)),
    st.tuples(st.just("mremap"), page, st.integers(0, 8), count, page, st.booleans()),
    st.tuples(st.just("mprotect"), page, count, st.sampled_from([PROT_NONE, PROT_READ, RW])),
    st.tuples(st.just("madvise"), page, count),
    st.tuples(st.just("fail"), page, count),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(page, count, st.integers(0, 2)), max_size=4), st.lists(op, max_size=40))
def test_matches_page_model(seed: list[tuple[int, int, int]], ops: list[tuple]) -> None:
    vm, model = VmMap(), PageModel()
    for at, n, o in seed:  # seed with what fits without overlap
        if all(p not in model.pages for p in range(at, at + n)):
            model.mmap(at, n, (RW, OWNER_LIST[o], 0), True)
    vm.seed(model.regions())
    expected = model.regions()
    for o in ops:
        kind = o[0]
        if kind == "mmap":
            _, at, n, (prot, owner, site), anon, trim = o
            vm.mmap(0, n * P - trim, prot, ANON if anon else FILE, owner=owner, site=site, result=pg(at))
            model.mmap(at, n, (prot, owner, site), anon)
        elif kind == "munmap":
            _, at, n, trim = o
            vm.munmap(pg(at), n * P - trim, result=0)
            model.munmap(at, n)
        elif kind == "mremap":
            _, old, on, nn, dst, dontunmap = o
            flags = MREMAP_MAYMOVE | (MREMAP_DONTUNMAP if dontunmap else 0)
            vm.mremap(pg(old), on * P, nn * P, flags, result=pg(dst))
            model.mremap(old, on, nn, dst, dontunmap)
        elif kind == "mprotect":
            _, at, n, prot = o
            vm.mprotect(pg(at), n * P, prot, result=0)
            model.mprotect(at, n, prot)
        elif kind == "madvise":
            _, at, n = o
            assert vm.madvise_free(pg(at), n * P) == P * sum(p in model.pages for p in range(at, at + n))
        else:  # failures of every kind change nothing
            _, at, n = o
            vm.mmap(0, n * P, RW, ANON, owner="program", site=9, result=-12)
            vm.munmap(pg(at), n * P, result=-22)
            vm.mremap(pg(at), n * P, 2 * n * P, MREMAP_MAYMOVE, result=2**64 - 12)
            vm.mprotect(pg(at), n * P, PROT_NONE, result=-13)
        expected = model.regions()
        assert vm.regions() == expected
    for owner in [None, *OWNER_LIST]:
        for w in (False, True):
            assert vm.bytes_by(owner=owner, writable_only=w) == sum(
                r.size for r in expected if (owner is None or r.owner == owner) and (r.prot & PROT_WRITE or not w))
    sites: dict[int, int] = {}
    for r in expected:
        if r.owner == "program":
            sites[r.site] = sites.get(r.site, 0) + r.size
    assert vm.by_site() == sites
