"""``--all``: every process on the host, the ones started later included.

The uprobes are attached once per allocator file (by device and inode, found
through every process's maps and opened through its ``/proc/PID/root``, so
a container's own libc is probed too) for every process mapping it: a
process started later is traced from its first instruction. Which processes
are traced is the BPF ``targets`` map's business (see MODE_* in
bpf/heaptrace.h): without a filter every process is, except heaptrace
itself; with ``--comm``/``--cgroup`` only the processes selected (at start,
and at exec: the kernel reports every exec, heaptrace selects within a poll
tick), and the processes they fork.

Only the allocator files matter here: libc (glibc's malloc), libstdc++
(operator new), and the allocators preloaded in place of glibc's, found by
name (``libjemalloc``, ``libtcmalloc``, ``libmimalloc``) and then checked by
their symbols. A statically linked program is not traced with ``--all``
(its malloc is in its own executable: use ``-p``).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from . import discover, layout, targets
from .procmaps import ProcessGone, host_path, read_comm, read_maps

#: Allocator files by name: only these are read (an ELF read per file costs
#: ~40 ms; a host maps thousands of files).
ALLOCATOR_NAME = re.compile(r"lib(c|stdc\+\+|jemalloc|tcmalloc\w*|mimalloc)([.-].*)?\.so(\.[\d.]+)?$")

MODE_OFF, MODE_FULL = layout.C["MODE_OFF"], layout.C["MODE_FULL"]


def candidate(path: str) -> bool:
    """Might this mapped file be an allocator (by its name)?"""
    return ALLOCATOR_NAME.search(os.path.basename(path)) is not None


def classify_candidate(open_path: str, display: str, identity) -> targets.Library | None:
    return targets.classify(open_path, display, identity) if candidate(display) else None


@dataclass
class Filters:
    comm: str | None = None
    cgroup: str | None = None
    exclude_pids: list[int] = field(default_factory=list)

    @property
    def selective(self) -> bool:
        """Only the processes selected are traced (the default is off)."""
        return self.comm is not None or self.cgroup is not None

    def selects(self, p: discover.ProcInfo) -> bool:
        return bool(discover.select([p], comm=self.comm, cgroup=self.cgroup, exclude_pids=self.exclude_pids))


class AllProcesses:
    """The processes and allocator files of an ``--all`` session."""

    def __init__(self, filters: Filters, own_pid: int, proc: str = "/proc"):
        self.filters = filters
        self.own = own_pid
        self.proc = proc
        self.files: dict[tuple[int, int], targets.Library] = {}   # attached, by identity
        self._not_allocator: set[tuple[int, int]] = set()
        self.cgroups: dict[int, str] = {}
        self.glibc: set[int] = set()        # processes mapping glibc's libc.so (heap census)

    def default_mode(self) -> int:
        return MODE_OFF if self.filters.selective else MODE_FULL

    def start(self) -> tuple[dict[int, int], list[int]]:
        """(explicit modes to set, pids traced now): every process now."""
        modes = {self.own: MODE_OFF}   # heaptrace, and what it forks (a helper)
        traced = []
        for p in discover.processes(self.proc, exclude=[self.own]):
            self.cgroups[p.pid] = p.cgroup
            if self.filters.selects(p):
                traced.append(p.pid)
                if self.filters.selective:
                    modes[p.pid] = MODE_FULL
            elif not self.filters.selective:
                modes[p.pid] = MODE_OFF   # excluded
        return modes, traced

    def new_files(self, pid: int, maps: list | None = None) -> list[targets.Library]:
        """Allocator files ``pid`` maps (``maps``, or read now) that no probe
        covers yet (each file read once, whoever maps it); marks the process
        glibc's if it is."""
        if maps is None:
            try:
                maps = read_maps(pid, self.proc)
            except (ProcessGone, PermissionError):
                return []
        out = []
        for m in maps:
            if not m.executable or not m.path.startswith("/"):
                continue
            ident = (m.dev, m.inode)
            if ident in self.files:
                if self.files[ident].allocator and os.path.basename(m.path).startswith(("libc.so", "libc-")):
                    self.glibc.add(pid)
                continue
            if ident in self._not_allocator or not candidate(m.path):
                continue
            lib = classify_candidate(host_path(pid, m.path, self.proc, ident), m.path, ident)
            if lib is None:
                self._not_allocator.add(ident)
                continue
            self.files[ident] = lib
            out.append(lib)
            if lib.allocator and os.path.basename(m.path).startswith(("libc.so", "libc-")):
                self.glibc.add(pid)
        return out

    def on_exec(self, pid: int) -> int | None:
        """A process exec'd: the mode to set for it now (a filter may select
        it under its new name), or None to leave it as it is."""
        comm = read_comm(pid, self.proc)
        cgroup = discover.read_cgroup(pid, self.proc)
        self.cgroups[pid] = cgroup
        if not self.filters.selective:
            return None
        return MODE_FULL if self.filters.selects(discover.ProcInfo(pid, comm or "?", cgroup)) else None

    def cgroup_of(self, pid: int) -> str:
        if pid not in self.cgroups:
            self.cgroups[pid] = discover.read_cgroup(pid, self.proc)
        return self.cgroups[pid]

    def forget(self, pid: int) -> None:
        self.cgroups.pop(pid, None)
        self.glibc.discard(pid)
