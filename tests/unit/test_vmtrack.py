"""Direct mappings per call site, from raw VM events (no root, no bcc)."""
from tracer import layout
from tracer.layout import VmEvent
from tracer.vmmap import MAP_ANONYMOUS, Region
from tracer.vmtrack import MappingTracker

C = layout.C
P = 4096
PRIVATE = 0x02
RW = 3


def ev(kind, *args, ret=0, stack=0xA, tgid=7):
    args = tuple(args) + (0,) * (5 - len(args))
    return VmEvent(tgid, C[kind], args, ret, stack, 0x401000)


def test_event_layout_matches_the_header():
    raw = layout.VM_EVENT.pack(7, C["VM_MMAP"], 1, 2, 3, 4, 5, -12, 0xA, 0xB)
    assert layout.VM_EVENT.size == 72
    e = layout.decode_vm_event(raw)
    assert (e.tgid, e.kind, e.args, e.ret, e.stack, e.caller) == (7, C["VM_MMAP"], (1, 2, 3, 4, 5), -12, 0xA, 0xB)


def test_program_mappings_by_site_with_partial_unmap_and_failures():
    t = MappingTracker(P)
    base = 0x7F0000000000
    for i in range(7):  # 7 x 13 pages, adjacent: one region
        t.apply(ev("VM_MMAP", 0, 13 * P, RW, MAP_ANONYMOUS | PRIVATE, ret=base + i * 13 * P), "program")
    t.apply(ev("VM_MMAP", 0, 11 * P, RW, MAP_ANONYMOUS | PRIVATE, ret=0x7F1000000000, stack=0xB), "program")
    t.apply(ev("VM_MUNMAP", 0x7F1000000000 + 7 * P, 4 * P, stack=0xB), "program")
    t.apply(ev("VM_MMAP", 0, 1 << 62, 1, MAP_ANONYMOUS | PRIVATE, ret=-12, stack=0xC), "program")  # ENOMEM
    t.apply(ev("VM_MMAP", 0, 1 << 20, RW, MAP_ANONYMOUS | PRIVATE, ret=0x7F2000000000, stack=0xD), "allocator")
    rows = dict(t.rows(7))
    assert rows[0xA].live_bytes == 7 * 13 * P and rows[0xA].allocs == 7 and rows[0xA].live_allocs == 1
    assert (rows[0xB].live_bytes, rows[0xB].alloc_bytes, rows[0xB].frees) == (7 * P, 11 * P, 1)
    assert 0xC not in rows and 0xD not in rows  # failed; the allocator's own
    assert t.maps[7].bytes_by(owner="allocator") == 1 << 20


def test_seeded_mappings_are_not_the_programs_and_file_mappings_unmap():
    t = MappingTracker(P)
    t.seed(7, [Region(0x10000, 0x20000, RW)])
    assert t.rows(7) == []
    t.apply(ev("VM_MMAP", 0x10000, 4 * P, 1, PRIVATE | 0x10, ret=0x10000), "program")  # a file over it
    assert t.maps[7].bytes_by() == 0x10000 - 4 * P


def test_madvise_dontneed_counts_bytes_given_back():
    t = MappingTracker(P)
    t.apply(ev("VM_MMAP", 0, 8 * P, RW, MAP_ANONYMOUS | PRIVATE, ret=0x50000), "allocator")
    t.apply(ev("VM_MADVISE", 0x50000, 3 * P, 4), "allocator")
    t.apply(ev("VM_MADVISE", 0x50000, 3 * P, 4, ret=-22), "allocator")  # EINVAL: nothing
    assert t.given_back[7] == 3 * P


def test_mremap_moves_keep_the_site():
    t = MappingTracker(P)
    t.apply(ev("VM_MMAP", 0, 2 * P, RW, MAP_ANONYMOUS | PRIVATE, ret=0x60000), "program")
    t.apply(ev("VM_MREMAP", 0x60000, 2 * P, 5 * P, 1, ret=0x90000), "program")
    assert dict(t.rows(7))[0xA].live_bytes == 5 * P


def test_given_back_counts_only_the_allocators_returns():
    t = MappingTracker(P)
    t.seed(7, [Region(0x100000, 0x100000 + 4 * P, RW)], brk=0x100000 + 4 * P)
    t.apply(ev("VM_BRK", 0x100000 + 10 * P + 5, ret=0x100000 + 10 * P + 5), "allocator")  # grows
    assert t.given_back.get(7, 0) == 0
    t.apply(ev("VM_MADVISE", 0x100000 + 2 * P, 5 * P, 4), "allocator")  # mtrim: inside the grown heap
    assert t.given_back[7] == 5 * P
    t.apply(ev("VM_BRK", 0x100000 + 3 * P, ret=0x100000 + 3 * P), "allocator")   # systrim
    assert t.given_back[7] == 5 * P + 8 * P  # 11 pages (rounded up) -> 3 pages
    t.apply(ev("VM_BRK", 0, ret=0x100000 + 3 * P), "allocator")   # brk(0): a query
    t.apply(ev("VM_MMAP", 0, 8 * P, RW, MAP_ANONYMOUS | PRIVATE, ret=0x50000, stack=0xB), "program")
    t.apply(ev("VM_MADVISE", 0x50000, 8 * P, 4, stack=0xB), "program")       # the program's own
    t.apply(ev("VM_MUNMAP", 0x50000, 8 * P, stack=0xB), "program")
    assert t.given_back[7] == 13 * P
    t.apply(ev("VM_MMAP", 0, 32 * P, RW, MAP_ANONYMOUS | PRIVATE, ret=0x200000, stack=0xC), "allocator")
    t.apply(ev("VM_MUNMAP", 0x200000, 32 * P, stack=0xC), "allocator")       # free() of a large block
    assert t.given_back[7] == 45 * P
    # an arena heap shrunk by MAP_FIXED PROT_NONE over its tail
    t.apply(ev("VM_MMAP", 0, 16 * P, RW, MAP_ANONYMOUS | PRIVATE, ret=0x400000, stack=0xD), "allocator")
    t.apply(ev("VM_MMAP", 0x400000 + 12 * P, 4 * P, 0, MAP_ANONYMOUS | PRIVATE | 0x10, ret=0x400000 + 12 * P), "allocator")
    assert t.given_back[7] == 49 * P
    assert t.events[7] >= 6


def test_exec_starts_a_new_map_and_keeps_the_totals():
    t = MappingTracker(P)
    t.apply(ev("VM_MMAP", 0, 5 * P, RW, MAP_ANONYMOUS | PRIVATE, ret=0x70000), "program")
    t.exec(7, [Region(0x100000, 0x100000 + 2 * P, RW)], brk=0x100000 + 2 * P)
    rows = dict(t.rows(7))
    assert rows[0xA].live_bytes == 0 and rows[0xA].allocs == 1   # the old image's mapping is gone
    assert t.brk[7] == 0x100000 + 2 * P and t.maps[7].bytes_by() == 2 * P
