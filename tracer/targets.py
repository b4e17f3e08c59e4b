"""Which files to probe, where, for which processes.

The allocator is found from what a process really maps (``/proc/PID/maps``),
or, for a program heaptrace starts, from what the dynamic linker will map
(``ld.so --list``). Each probe's offset inside its function is chosen by
decoding the function's first instructions (``tracer.probeplace``).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field

from . import probeplace
from .elfsyms import ElfError, ElfFile
from .errors import TargetError
from .kernel import Probe
from .procmaps import ProcessGone, host_path, read_maps


@dataclass(frozen=True)
class Entry:
    """One function of the malloc family and how the BPF side reads it."""

    symbol: str
    fn: str                       # BPF entry function
    regs: frozenset[str]          # argument registers the entry program reads
    ret: bool = True              # needs a return probe (to see the address)
    null_noop: str | None = None  # a NULL in this register makes the call a no-op


def _e(symbol: str, fn: str, regs: str, ret: bool = True, null_noop: str | None = None) -> Entry:
    return Entry(symbol, fn, frozenset(regs.split()), ret, null_noop)


# Order matters where symbols alias one address: the first name wins. free
# comes first so that no block allocated during attach misses its free.
MALLOC_FAMILY = (
    _e("free", "free_enter", "rdi", ret=False, null_noop="rdi"),
    _e("malloc", "malloc_enter", "rdi"),
    _e("calloc", "calloc_enter", "rdi rsi"),
    _e("realloc", "realloc_enter", "rdi rsi"),
    _e("reallocarray", "reallocarray_enter", "rdi rsi rdx"),
    _e("posix_memalign", "posix_memalign_enter", "rdi rsi rdx"),
    _e("aligned_alloc", "memalign_enter", "rdi rsi"),
    _e("memalign", "memalign_enter", "rdi rsi"),
    _e("valloc", "malloc_enter", "rdi"),
    _e("pvalloc", "pvalloc_enter", "rdi"),
)

# C++ operator new in all its forms: the malloc they make is charged to
# their caller, not to libstdc++.
OPERATOR_NEW = tuple(
    _e(s, "new_enter", "", ret=False) for s in (
        "_Znwm", "_Znam", "_ZnwmRKSt9nothrow_t", "_ZnamRKSt9nothrow_t",
        "_ZnwmSt11align_val_t", "_ZnamSt11align_val_t",
        "_ZnwmSt11align_val_tRKSt9nothrow_t", "_ZnamSt11align_val_tRKSt9nothrow_t"))


@dataclass
class PlannedProbe:
    probe: Probe
    symbol: str
    offset: int
    reason: str
    aliases: tuple[str, ...] = ()


@dataclass
class Library:
    """A file that defines allocator entry points, as one process sees it."""

    path: str        # path inside the process (for display)
    open_path: str   # path heaptrace opens (through /proc/PID/root)
    identity: tuple[int, int] | None  # (dev, inode) when known
    allocator: bool
    operator_new: bool


@dataclass
class Plan:
    pid: int
    libraries: list[Library] = field(default_factory=list)
    probes: list[PlannedProbe] = field(default_factory=list)


_ELF_CACHE: dict[str, ElfFile] = {}


def _elf(path: str) -> ElfFile:
    # Resolve /proc/PID/root now: the cached file must outlive that process.
    try:
        path = os.path.realpath(path)
    except OSError:
        pass
    st = os.stat(path)
    key = f"{st.st_dev}:{st.st_ino}:{st.st_mtime_ns}"
    if key not in _ELF_CACHE:
        _ELF_CACHE[key] = ElfFile.open(path)
    return _ELF_CACHE[key]


def classify(open_path: str, display: str, identity=None) -> Library | None:
    try:
        funcs = _elf(open_path).defined_functions()
    except (ElfError, OSError):
        return None
    alloc = "malloc" in funcs and "free" in funcs
    new = any(e.symbol in funcs for e in OPERATOR_NEW)
    if not (alloc or new):
        return None
    return Library(display, open_path, identity, alloc, new)


def libraries_of_pid(pid: int, proc: str = "/proc") -> list[Library]:
    """Allocator libraries a running process maps, each file once."""
    try:
        maps = read_maps(pid, proc)
    except ProcessGone:
        raise TargetError(f"process {pid} does not exist (or has exited): check the PID with ps")
    seen: set = set()
    out = []
    for m in maps:
        if not m.executable or m.anonymous or not m.path.startswith("/"):
            continue
        ident = (m.dev, m.inode)
        if ident in seen:
            continue
        seen.add(ident)
        lib = classify(host_path(pid, m.path, proc, ident), m.path, ident)
        if lib:
            out.append(lib)
    return out


_LIST_LINE = re.compile(r"=>\s+(/\S+)\s+\(0x|^\s*(/\S+)\s+\(0x")


def libraries_of_command(argv0: str) -> list[Library]:
    """Allocator libraries a program will map, before it runs (ld.so --list)."""
    exe = shutil.which(argv0) or argv0
    if not os.path.exists(exe):
        raise TargetError(f"command not found: {argv0!r}: give a path or a program on PATH")
    exe = os.path.realpath(exe)
    files = [exe]
    interp = _interpreter(exe)
    if interp:
        try:
            out = subprocess.run([interp, "--list", exe], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        for line in out.splitlines():
            m = _LIST_LINE.search(line)
            if m:
                files.append(m.group(1) or m.group(2))
    out_libs = []
    for f in files:
        lib = classify(f, f)
        if lib:
            out_libs.append(lib)
    return out_libs


def _interpreter(exe: str) -> str | None:
    try:
        return ElfFile.open(exe).interpreter()
    except (ElfError, OSError, AttributeError):
        return None


def plan_library(lib: Library, pid: int) -> list[PlannedProbe]:
    """Probes for one library in one process: each address probed once."""
    elf = _elf(lib.open_path)
    funcs = elf.defined_functions()
    entries = (MALLOC_FAMILY if lib.allocator else ()) + (OPERATOR_NEW if lib.operator_new else ())
    seen: dict[int, PlannedProbe] = {}
    out: list[PlannedProbe] = []
    for e in entries:
        sym = funcs.get(e.symbol)
        if sym is None:
            continue
        if sym.value in seen:  # an alias of a function already probed
            seen[sym.value].aliases += (e.symbol,)
            continue
        place = probeplace.choose_offset(elf.read_code(sym), needed_regs=e.regs, null_noop_reg=e.null_noop)
        vaddr = sym.value + place.offset
        first = None
        for ret in ((False, True) if e.ret else (False,)):
            pp = PlannedProbe(Probe(lib.open_path, vaddr, "alloc_return" if ret else e.fn, pid, ret),
                              e.symbol, place.offset, probeplace.describe(e.symbol, place))
            out.append(pp)
            first = first or pp
        seen[sym.value] = first
    return out


def _is_go(pid: int) -> bool:
    """Does the process run a Go binary (a .go.buildinfo section or a Go build note)?"""
    try:
        with open(f"/proc/{pid}/exe", "rb") as f:
            from elftools.elf.elffile import ELFFile
            elf = ELFFile(f)
            return any(elf.get_section_by_name(n) is not None
                       for n in (".go.buildinfo", ".note.go.buildid", ".gopclntab"))
    except Exception:  # unreadable, not ELF, gone: not known to be Go
        return False


def plan(pid: int, libraries: list[Library]) -> Plan:
    p = Plan(pid, libraries)
    if not any(lib.allocator for lib in libraries):
        if _is_go(pid):
            raise TargetError(
                f"process {pid} is a Go program: Go allocates through its own runtime, not malloc, "
                "so heaptrace's uprobes see nothing there; use Go's heap profile "
                "(net/http/pprof /debug/pprof/heap, or runtime/pprof) instead")
        raise TargetError(
            f"process {pid}: no allocator found (no mapped file defines malloc and free). "
            "A statically linked program can be traced only if it is not stripped (its malloc "
            "and free are then in the executable); a program with its own allocator cannot")
    for lib in libraries:
        p.probes.extend(plan_library(lib, pid))
    return p
