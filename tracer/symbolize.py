"""Turn runtime user-space addresses into ``function+0xoff [module]`` strings.

Per pid we remember the executable mappings from ``/proc/PID/maps``; per
file identity ``(dev, inode)`` we keep one :class:`~tracer.elfsyms.ElfFile`,
so a library shared by hundreds of processes is parsed once.  The files are
kept least recently used first and dropped past :data:`MAX_CACHED_SYMBOLS`
symbols or :data:`MAX_CACHED_FILES` files, so a long ``--all`` session on a
host that runs ever new binaries stays bounded (a dropped file is read again
if it is needed again).  Nothing here raises on unreadable processes or
files: the result just has less detail.
"""
from __future__ import annotations

import os
from bisect import bisect_right
from collections import OrderedDict
from typing import Callable, Hashable

from .demangle import demangle
from .elfsyms import ElfError, ElfFile
from .procmaps import Mapping, ProcessGone, read_maps, real_host_path

__all__ = ["Symbolizer"]

#: Per-pid frame cache bound; the cache is dropped when it grows past this.
MAX_FRAMES_PER_PID = 100_000
#: Symbols kept in parsed ELF files (about 170 bytes each: ~85 MiB).
MAX_CACHED_SYMBOLS = 500_000
#: Files kept (their headers: segments, identity) whatever their symbols.
MAX_CACHED_FILES = 2_000


class _PidMaps:
    """Executable mappings of one process, sorted by start address."""

    def __init__(self, mappings: list[Mapping]) -> None:
        self.mappings = sorted((m for m in mappings if m.executable), key=lambda m: m.start)
        self.starts = [m.start for m in self.mappings]

    def find(self, addr: int) -> Mapping | None:
        i = bisect_right(self.starts, addr) - 1
        if i >= 0 and addr < self.mappings[i].end:
            return self.mappings[i]
        return None


def _module_name(path: str) -> str:
    """``/usr/lib/libc.so.6`` -> ``libc.so.6``; ``[vdso]`` -> ``vdso``."""
    if path.startswith("[") and path.endswith("]"):
        return path[1:-1]
    return os.path.basename(path) or path


class Symbolizer:
    """Symbolize addresses of many processes, sharing parsed ELF files."""

    def __init__(self, proc: str = "/proc", open_elf: Callable[[str], ElfFile] = ElfFile.open) -> None:
        self._proc = proc
        self._open_elf = open_elf
        self._maps: dict[int, _PidMaps] = {}
        self._frames: dict[int, dict[int, str]] = {}
        self._elves: OrderedDict[Hashable, ElfFile] = OrderedDict()  # by file identity, LRU first
        self._failed: set[tuple[Hashable, int]] = set()  # (file, pid) that could not be opened

    def refresh(self, pid: int, maps: list[Mapping] | None = None) -> None:
        """(Re)read the executable mappings of ``pid`` (or take ``maps``, just
        read by the caller).

        If the process is gone or unreadable (or a zombie with an empty map),
        the last known mappings are kept so its stacks still symbolize.
        Cached frames of ``pid`` are dropped when its mappings changed.
        """
        try:
            new = _PidMaps(read_maps(pid, self._proc) if maps is None else maps)
        except (ProcessGone, OSError):
            self._maps.setdefault(pid, _PidMaps([]))
            return
        old = self._maps.get(pid)
        if old is not None and not new.mappings:
            return
        if old is None or old.mappings != new.mappings:
            self._maps[pid] = new
            self._frames.pop(pid, None)

    def forget(self, pid: int) -> None:
        """Drop everything known about ``pid`` (ELF files stay cached)."""
        self._maps.pop(pid, None)
        self._frames.pop(pid, None)
        self._failed = {f for f in self._failed if f[1] != pid}

    def _pid_maps(self, pid: int) -> _PidMaps:
        if pid not in self._maps:
            self.refresh(pid)
        return self._maps[pid]

    def _mapping(self, pid: int, addr: int) -> Mapping | None:
        return self._pid_maps(pid).find(addr)

    def in_executable_mapping(self, pid: int, addr: int) -> bool:
        """Whether ``addr`` lies in an executable mapping (file-backed or not, e.g. JIT)."""
        return self._mapping(pid, addr) is not None

    def module_of(self, pid: int, addr: int) -> str | None:
        """Path of the executable mapping containing ``addr`` (``None`` if none or anonymous)."""
        m = self._mapping(pid, addr)
        return m.path if m is not None and m.path else None

    def frame(self, pid: int, addr: int) -> str:
        """``"name+0x1a [module]"``, ``"0x7f12345678 [module]"`` or ``"0x7f12345678"``.

        Symbol names are returned raw (not escaped). Never raises.
        """
        frames = self._frames.setdefault(pid, {})
        text = frames.get(addr)
        if text is None:
            text = self._symbolize(pid, addr)
            if len(frames) >= MAX_FRAMES_PER_PID:
                frames.clear()
            frames[addr] = text
        return text

    def _symbolize(self, pid: int, addr: int) -> str:
        m = self._mapping(pid, addr)
        if m is None or not m.path:
            return f"{addr:#x}"
        module = _module_name(m.path)
        if not m.anonymous:
            key: Hashable = (m.dev, m.inode) if m.inode else (m.dev, pid, m.path)
            elf = self._elf(key, pid, m)
            if elf is not None:
                vaddr = elf.vaddr_of_offset(addr - m.start + m.offset)
                loaded = elf.loaded_symbols
                try:
                    hit = elf.lookup(vaddr) if vaddr is not None else None
                except ElfError:  # symbol tables unreadable, or file changed
                    self._elves.pop(key, None)
                    self._failed.add((key, pid))
                    hit = None
                if elf.loaded_symbols != loaded:
                    self._trim()
                if hit is not None:
                    return f"{demangle(hit[0])}+{hit[1]:#x} [{module}]"
        return f"{addr:#x} [{module}]"

    def cached_symbols(self) -> int:
        """Symbols held by the cached ELF files."""
        return sum(e.loaded_symbols for e in self._elves.values())

    def _trim(self) -> None:
        """Drop the least recently used files past the bounds (never the
        most recent one, however large)."""
        total = self.cached_symbols()
        while len(self._elves) > 1 and (total > MAX_CACHED_SYMBOLS or len(self._elves) > MAX_CACHED_FILES):
            _, old = self._elves.popitem(last=False)
            total -= old.loaded_symbols

    def _elf(self, key: Hashable, pid: int, m: Mapping) -> ElfFile | None:
        elf = self._elves.get(key)
        if elf is not None:
            self._elves.move_to_end(key)
            return elf
        if (key, pid) in self._failed:
            return None
        if m.deleted:
            # The path now names another file (or nothing); the kernel still
            # exposes the mapped one here (needs CAP_SYS_ADMIN).
            candidates = [f"{self._proc}/{pid}/map_files/{m.start:x}-{m.end:x}"]
        else:
            # realpath: the /proc/PID/root link resolved now, so the file stays
            # reachable after this process exits (other processes share it).
            candidates = list(dict.fromkeys([real_host_path(pid, m.path, self._proc, (m.dev, m.inode)), m.path]))
        for path in candidates:
            try:
                elf = self._open_elf(path)
            except ElfError:
                continue
            self._elves[key] = elf
            if len(self._elves) > MAX_CACHED_FILES:
                self._trim()
            return elf
        # Not visible to this pid (e.g. exited container); another pid may succeed.
        self._failed.add((key, pid))
        return None

