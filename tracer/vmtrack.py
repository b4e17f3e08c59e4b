"""Direct anonymous mappings per process, from the VM syscall event stream.

Pure: ``MappingTracker.apply`` takes decoded events (``layout.VmEvent``) and
who owns each one (the caller classified by the session: the program's own
code, the allocator, or the system such as the dynamic linker); ``rows``
gives, per stack, what the program holds in mappings it made itself -- the
``mmap`` rows of the sites CSV. The allocator's own mappings (large chunks,
arena heaps) are kept apart so nothing is counted twice with the malloc view.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from . import layout
from .layout import SiteCounts
from .vmmap import MAP_ANONYMOUS, Region, VmMap, is_error

MADV_DONTNEED, MADV_FREE = 4, 8


@dataclass
class _Totals:
    allocs: int = 0
    alloc_bytes: int = 0
    frees: int = 0


@dataclass
class MappingTracker:
    page_size: int = 4096
    maps: dict[int, VmMap] = field(default_factory=dict)
    totals: dict[tuple[int, int], _Totals] = field(default_factory=dict)
    # pid -> bytes the allocator gave back to the OS since attach: madvise
    # DONTNEED/FREE, brk shrink, munmap (and MAP_FIXED over its own memory).
    given_back: dict[int, int] = field(default_factory=dict)
    brk: dict[int, int] = field(default_factory=dict)         # pid -> program break
    events: dict[int, int] = field(default_factory=dict)      # pid -> allocator/brk events seen

    def seed(self, pid: int, regions: list[Region], brk: int | None = None) -> None:
        """What a process had mapped before tracing; ``brk``: its program
        break (the end of ``[heap]``), if it has one."""
        vm = self.maps.setdefault(pid, VmMap(self.page_size))
        vm.seed(regions)
        if brk is not None:
            self.brk[pid] = brk

    def _give_back(self, pid: int, n: int) -> None:
        if n > 0:
            self.given_back[pid] = self.given_back.get(pid, 0) + n

    def exec(self, pid: int, regions: list[Region], brk: int | None) -> None:
        """The process exec'd: its old mappings are gone; start again from
        what it has now (the totals of its old mappings stay)."""
        self.maps[pid] = VmMap(self.page_size)
        self.maps[pid].seed(regions)
        self.brk.pop(pid, None)
        if brk is not None:
            self.brk[pid] = brk

    def forget(self, pid: int) -> None:
        """Everything about a process that ended (``--all`` keeps a bounded
        number of them)."""
        for d in (self.maps, self.given_back, self.brk, self.events):
            d.pop(pid, None)
        for key in [k for k in self.totals if k[0] == pid]:
            del self.totals[key]

    def apply(self, ev: layout.VmEvent, owner: str) -> None:
        vm = self.maps.setdefault(ev.tgid, VmMap(self.page_size))
        a0, a1, a2, a3, a4 = ev.args
        kind, C = ev.kind, layout.C
        if owner == "allocator" or kind == C["VM_BRK"]:
            self.events[ev.tgid] = self.events.get(ev.tgid, 0) + 1
        if kind == C["VM_MMAP"]:
            if owner == "allocator" and not is_error(ev.ret) and a1:
                # MAP_FIXED over its own memory: how glibc shrinks an arena heap.
                a, b = ev.ret, ev.ret + -(-a1 // self.page_size) * self.page_size
                self._give_back(ev.tgid, sum(min(r.end, b) - max(r.start, a) for r in vm.regions()
                                             if r.start < b and r.end > a and r.prot))
            vm.mmap(a0, a1, a2, a3, owner=owner, site=ev.stack, result=ev.ret)
            if owner == "program" and a3 & MAP_ANONYMOUS and not is_error(ev.ret) and a1:
                t = self.totals.setdefault((ev.tgid, ev.stack), _Totals())
                t.allocs += 1
                t.alloc_bytes += -(-a1 // self.page_size) * self.page_size
        elif kind == C["VM_MUNMAP"]:
            if ev.ret == 0:
                gone = vm.overlapping(a0, a1)
                if owner == "allocator":
                    self._give_back(ev.tgid, sum(r.size for r in gone))
                for site in {r.site for r in gone if r.owner == "program"}:
                    self.totals.setdefault((ev.tgid, site), _Totals()).frees += 1
            vm.munmap(a0, a1, result=ev.ret)
        elif kind == C["VM_MREMAP"]:
            vm.mremap(a0, a1, a2, a3, result=ev.ret, new_addr=a4)
        elif kind == C["VM_MPROTECT"]:
            vm.mprotect(a0, a1, a2, result=ev.ret)
        elif kind == C["VM_MADVISE"] and a2 in (MADV_DONTNEED, MADV_FREE) and ev.ret == 0:
            if owner == "allocator":
                self._give_back(ev.tgid, vm.madvise_free(a0, a1))
        elif kind == C["VM_BRK"] and not is_error(ev.ret):
            # brk returns the new break (the old one when it refuses).
            # The heap's pages end at the break rounded up to a page.
            new, old = ev.ret, self.brk.get(ev.tgid)
            up = lambda x: -(-x // self.page_size) * self.page_size  # noqa: E731
            if old is not None and up(new) < up(old):
                self._give_back(ev.tgid, up(old) - up(new))
                vm.munmap(up(new), up(old) - up(new), result=0)
            elif old is not None and up(new) > up(old):
                vm.mmap(up(old), up(new) - up(old), 3, MAP_ANONYMOUS, owner="allocator", site=0,
                        result=up(old))
            self.brk[ev.tgid] = new

    def rows(self, pid: int) -> list[tuple[int, SiteCounts]]:
        """(stack, counts) of the mappings the program made itself: live
        bytes and regions now; mappings made and unmapped since attach."""
        vm = self.maps.get(pid)
        if vm is None:
            return []
        live = vm.by_site("program")
        regions: dict[int, int] = {}
        for r in vm.regions():
            if r.owner == "program":
                regions[r.site] = regions.get(r.site, 0) + 1
        out = []
        for (p, site), t in self.totals.items():
            if p != pid:
                continue
            n = regions.get(site, 0)
            out.append((site, SiteCounts(live.get(site, 0), n, t.alloc_bytes, t.allocs, t.frees)))
        return out
