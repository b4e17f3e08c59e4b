"""Tests for tracer.symbolize against a fake /proc whose maps point at a gcc-built PIE."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from tracer.elfsyms import ElfError, ElfFile
from tracer.symbolize import Symbolizer

SOURCE = r"""
#include <stdlib.h>
static volatile int counter;
__attribute__((noinline)) void *leak_here(size_t n) { counter++; return malloc(n + counter); }
__attribute__((noinline)) int other_function(int x) { return x * 7 + counter; }
int odd(void) __asm__("\"odd [name]+1\"");
int odd(void) { return 3; }
int main(void) { return leak_here(1) != 0 && other_function(2) + odd(); }
"""

BASE = 0x555555554000
LIB_BASE = 0x7F0000000000
JIT = (0x7E0000000000, 0x7E0000010000)
VDSO = (0x7FFFF7FC1000, 0x7FFFF7FC3000)
HEAP = (0x555555600000, 0x555555700000)


@pytest.fixture(scope="module")
def leaky(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc not available")
    d = tmp_path_factory.mktemp("bin")
    (d / "leaky.c").write_text(SOURCE)
    r = subprocess.run(
        ["gcc", "-O0", "-fPIE", "-pie", "-o", "leaky", "leaky.c"], cwd=d, capture_output=True, text=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot build test program: {r.stderr.strip()[:200]}")
    return d / "leaky"


@pytest.fixture(scope="module")
def syms(leaky: Path) -> dict[str, int]:
    return {n: s.value for n, s in ElfFile.open(str(leaky)).defined_functions().items()}


def map_lines(path: str, base: int, inode: int, elf_path: Path, dev: str = "08:01") -> list[str]:
    """maps lines like the kernel would show for ``elf_path`` loaded at ``base``."""
    lines = []
    with open(elf_path, "rb") as f:
        for seg in ELFFile(f).iter_segments():
            if seg["p_type"] != "PT_LOAD":
                continue
            start = base + (seg["p_vaddr"] & ~0xFFF)
            end = (base + seg["p_vaddr"] + seg["p_memsz"] + 0xFFF) & ~0xFFF
            flags = seg["p_flags"]
            perms = ("r" if flags & 4 else "-") + ("w" if flags & 2 else "-") + ("x" if flags & 1 else "-") + "p"
            lines.append(f"{start:x}-{end:x} {perms} {seg['p_offset'] & ~0xFFF:08x} {dev} {inode} {path}")
    return lines


def standard_maps(leaky: Path, exe_path: str | None = None) -> str:
    lines = map_lines(exe_path or str(leaky), BASE, 1001, leaky)
    lines.append(f"{HEAP[0]:x}-{HEAP[1]:x} rw-p 00000000 00:00 0 [heap]")
    lines.append(f"{JIT[0]:x}-{JIT[1]:x} rwxp 00000000 00:00 0 ")
    lines.append(f"{LIB_BASE:x}-{LIB_BASE + 0x2000:x} r-xp 00000000 08:01 2002 /opt/missing/libfoo.so")
    lines.append(f"{VDSO[0]:x}-{VDSO[1]:x} r-xp 00000000 00:00 0 [vdso]")
    return "\n".join(lines) + "\n"


class FakeProc:
    def __init__(self, root: Path) -> None:
        self.root = root / "proc"
        self.root.mkdir()

    def add(self, pid: int, maps: str) -> Path:
        d = self.root / str(pid)
        d.mkdir(exist_ok=True)
        (d / "maps").write_text(maps)
        return d

    def remove(self, pid: int) -> None:
        shutil.rmtree(self.root / str(pid))


class CountingOpen:
    """open_elf wrapper recording every path it was asked to open."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, path: str) -> ElfFile:
        self.calls.append(path)
        return ElfFile.open(path)


@pytest.fixture
def proc(tmp_path: Path) -> FakeProc:
    return FakeProc(tmp_path)


@pytest.fixture
def opener() -> CountingOpen:
    return CountingOpen()


@pytest.fixture
def sym(proc: FakeProc, opener: CountingOpen) -> Symbolizer:
    return Symbolizer(proc=str(proc.root), open_elf=opener)


def test_frame_format(proc: FakeProc, sym: Symbolizer, leaky: Path, syms: dict[str, int]) -> None:
    proc.add(100, standard_maps(leaky))
    sym.refresh(100)
    assert sym.frame(100, BASE + syms["leak_here"] + 0x1A) == "leak_here+0x1a [leaky]"
    assert sym.frame(100, BASE + syms["other_function"]) == "other_function+0x0 [leaky]"
    assert sym.frame(100, BASE + syms["main"] + 5) == "main+0x5 [leaky]"


def test_raw_symbol_names_not_escaped(proc: FakeProc, sym: Symbolizer, leaky: Path, syms: dict[str, int]) -> None:
    proc.add(100, standard_maps(leaky))
    assert sym.frame(100, BASE + syms["odd [name]+1"] + 2) == "odd [name]+1+0x2 [leaky]"


def test_frame_without_symbol_or_mapping(proc: FakeProc, sym: Symbolizer, leaky: Path) -> None:
    proc.add(100, standard_maps(leaky))
    sym.refresh(100)
    assert sym.frame(100, LIB_BASE + 0x10) == "0x7f0000000010 [libfoo.so]"  # file not found
    assert sym.frame(100, 0x1234) == "0x1234"  # no mapping
    assert sym.frame(100, HEAP[0] + 8) == f"{HEAP[0] + 8:#x}"  # not executable
    assert sym.frame(100, JIT[0] + 8) == f"{JIT[0] + 8:#x}"  # anonymous executable
    assert sym.frame(100, VDSO[0] + 0x10) == f"{VDSO[0] + 0x10:#x} [vdso]"


def test_frame_in_non_elf_file(proc: FakeProc, sym: Symbolizer, tmp_path: Path) -> None:
    junk = tmp_path / "libjunk.so"
    junk.write_bytes(b"not an elf at all" * 100)
    proc.add(100, f"1000-3000 r-xp 00000000 08:01 77 {junk}\n")
    assert sym.frame(100, 0x1010) == "0x1010 [libjunk.so]"


def test_in_executable_mapping_and_module_of(proc: FakeProc, sym: Symbolizer, leaky: Path, syms: dict[str, int]) -> None:
    proc.add(100, standard_maps(leaky))
    sym.refresh(100)
    code = BASE + syms["leak_here"]
    assert sym.in_executable_mapping(100, code)
    assert sym.module_of(100, code) == str(leaky)
    assert sym.in_executable_mapping(100, JIT[0]) and sym.module_of(100, JIT[0]) is None
    assert sym.module_of(100, VDSO[0]) == "[vdso]"
    for addr in (0, 0x1234, HEAP[0], BASE, JIT[1], 1 << 63):  # BASE: first (read-only) segment
        assert not sym.in_executable_mapping(100, addr), hex(addr)
        assert sym.module_of(100, addr) is None


def test_elf_cached_by_inode_across_pids(proc: FakeProc, sym: Symbolizer, opener: CountingOpen, leaky: Path, syms: dict[str, int]) -> None:
    for pid in range(100, 110):
        proc.add(pid, standard_maps(leaky))
        sym.refresh(pid)
    for pid in range(100, 110):
        assert sym.frame(pid, BASE + syms["leak_here"] + 1) == "leak_here+0x1 [leaky]"
        assert sym.frame(pid, BASE + syms["other_function"] + 2) == "other_function+0x2 [leaky]"
    assert opener.calls.count(str(leaky)) == 1


def test_different_inode_opened_separately(proc: FakeProc, sym: Symbolizer, opener: CountingOpen, leaky: Path, syms: dict[str, int]) -> None:
    proc.add(100, "\n".join(map_lines(str(leaky), BASE, 1001, leaky)))
    proc.add(200, "\n".join(map_lines(str(leaky), BASE, 1002, leaky)))
    sym.frame(100, BASE + syms["leak_here"])
    sym.frame(200, BASE + syms["leak_here"])
    assert opener.calls.count(str(leaky)) == 2


def _distinct_files(proc: FakeProc, leaky: Path, n: int) -> None:
    """pids 100.. each mapping the program under its own inode: n files."""
    for i in range(n):
        proc.add(100 + i, "\n".join(map_lines(str(leaky), BASE, 5000 + i, leaky)) + "\n")


def test_symbol_cache_bounded_least_recently_used_dropped(proc: FakeProc, sym: Symbolizer, opener: CountingOpen,
                                                           leaky: Path, syms: dict[str, int], monkeypatch) -> None:
    """Past MAX_CACHED_SYMBOLS the least recently used file goes; the one
    used again stays; a dropped file is read again when needed, right."""
    import tracer.symbolize as symbolize
    per_file = ElfFile.open(str(leaky))
    per_file.lookup(syms["leak_here"])
    monkeypatch.setattr(symbolize, "MAX_CACHED_SYMBOLS", 3 * per_file.loaded_symbols)
    _distinct_files(proc, leaky, 5)
    addr = BASE + syms["leak_here"] + 1
    for pid in (100, 101, 102):
        assert sym.frame(pid, addr) == "leak_here+0x1 [leaky]"
    sym._frames.clear()                       # frame texts are cached per pid: go to the files
    assert sym.frame(100, addr) == "leak_here+0x1 [leaky]"   # 100 used again: 101 is now the oldest
    assert sym.frame(103, addr) == "leak_here+0x1 [leaky]"
    assert sym.cached_symbols() <= 3 * per_file.loaded_symbols
    assert len(opener.calls) == 4
    sym._frames.clear()
    assert sym.frame(100, addr) == "leak_here+0x1 [leaky]"   # kept
    assert len(opener.calls) == 4
    assert sym.frame(101, addr) == "leak_here+0x1 [leaky]"   # dropped: read again
    assert len(opener.calls) == 5


def test_file_count_bounded(proc: FakeProc, sym: Symbolizer, opener: CountingOpen, leaky: Path,
                            syms: dict[str, int], monkeypatch) -> None:
    import tracer.symbolize as symbolize
    monkeypatch.setattr(symbolize, "MAX_CACHED_FILES", 2)
    _distinct_files(proc, leaky, 6)
    for pid in range(100, 106):
        assert sym.frame(pid, BASE + syms["other_function"]) == "other_function+0x0 [leaky]"
    assert len(sym._elves) == 2


def test_one_file_larger_than_the_bound_is_kept(proc: FakeProc, sym: Symbolizer, opener: CountingOpen,
                                                leaky: Path, syms: dict[str, int], monkeypatch) -> None:
    import tracer.symbolize as symbolize
    monkeypatch.setattr(symbolize, "MAX_CACHED_SYMBOLS", 1)
    _distinct_files(proc, leaky, 1)
    addr = BASE + syms["leak_here"]
    assert sym.frame(100, addr) == "leak_here+0x0 [leaky]"
    sym._frames.clear()
    assert sym.frame(100, addr) == "leak_here+0x0 [leaky]"
    assert len(opener.calls) == 1


def test_frames_cached_per_pid_and_address(proc: FakeProc, sym: Symbolizer, leaky: Path, syms: dict[str, int]) -> None:
    proc.add(100, standard_maps(leaky))
    addr = BASE + syms["leak_here"] + 3
    assert sym.frame(100, addr) == "leak_here+0x3 [leaky]"
    (proc.root / "100" / "maps").write_text("")  # without refresh nothing is re-read
    assert sym.frame(100, addr) == "leak_here+0x3 [leaky]"


def test_host_path_preferred(proc: FakeProc, sym: Symbolizer, opener: CountingOpen, leaky: Path, syms: dict[str, int]) -> None:
    d = proc.add(300, standard_maps(leaky, exe_path="/opt/app/leaky"))
    (d / "root" / "opt" / "app").mkdir(parents=True)
    shutil.copy(leaky, d / "root" / "opt" / "app" / "leaky")
    assert sym.frame(300, BASE + syms["leak_here"] + 4) == "leak_here+0x4 [leaky]"
    assert opener.calls == [f"{proc.root}/300/root/opt/app/leaky"]


def test_falls_back_to_plain_path(proc: FakeProc, sym: Symbolizer, opener: CountingOpen, leaky: Path, syms: dict[str, int]) -> None:
    proc.add(100, standard_maps(leaky))
    assert sym.frame(100, BASE + syms["leak_here"]) == "leak_here+0x0 [leaky]"
    # /proc/100/root does not lead to the file: the plain path is tried, once
    assert opener.calls == [str(leaky)]


def test_unopenable_file_not_retried_for_same_pid(proc: FakeProc, sym: Symbolizer, opener: CountingOpen, leaky: Path) -> None:
    proc.add(100, standard_maps(leaky))
    assert sym.frame(100, LIB_BASE + 1) == "0x7f0000000001 [libfoo.so]"
    assert sym.frame(100, LIB_BASE + 2) == "0x7f0000000002 [libfoo.so]"
    assert opener.calls == ["/opt/missing/libfoo.so"]


def test_file_visible_only_to_another_pid(proc: FakeProc, sym: Symbolizer, leaky: Path, syms: dict[str, int]) -> None:
    maps = standard_maps(leaky, exe_path="/opt/app/leaky")
    proc.add(100, maps)
    d = proc.add(200, maps)
    (d / "root" / "opt" / "app").mkdir(parents=True)
    shutil.copy(leaky, d / "root" / "opt" / "app" / "leaky")
    addr = BASE + syms["leak_here"]
    assert sym.frame(100, addr) == f"{addr:#x} [leaky]"
    assert sym.frame(200, addr) == "leak_here+0x0 [leaky]"
    assert sym.frame(100, addr + 1) == "leak_here+0x1 [leaky]"  # same (dev, inode): now cached


def test_process_gone_keeps_last_maps(proc: FakeProc, sym: Symbolizer, leaky: Path, syms: dict[str, int]) -> None:
    proc.add(100, standard_maps(leaky))
    sym.refresh(100)
    proc.remove(100)
    sym.refresh(100)  # must not raise
    assert sym.frame(100, BASE + syms["leak_here"] + 1) == "leak_here+0x1 [leaky]"
    assert sym.in_executable_mapping(100, BASE + syms["leak_here"])


def test_zombie_keeps_last_maps(proc: FakeProc, sym: Symbolizer, leaky: Path, syms: dict[str, int]) -> None:
    proc.add(100, standard_maps(leaky))
    sym.refresh(100)
    (proc.root / "100" / "maps").write_text("")
    sym.refresh(100)
    assert sym.frame(100, BASE + syms["leak_here"]) == "leak_here+0x0 [leaky]"


def test_unknown_pid(sym: Symbolizer) -> None:
    sym.refresh(999)
    assert sym.frame(999, 0xDEADBEEF) == "0xdeadbeef"
    assert not sym.in_executable_mapping(999, 0xDEADBEEF)
    assert sym.module_of(999, 0xDEADBEEF) is None


def test_frame_refreshes_unseen_pid(proc: FakeProc, sym: Symbolizer, leaky: Path, syms: dict[str, int]) -> None:
    proc.add(100, standard_maps(leaky))
    assert sym.frame(100, BASE + syms["leak_here"]) == "leak_here+0x0 [leaky]"


def test_forget(proc: FakeProc, sym: Symbolizer, leaky: Path, syms: dict[str, int]) -> None:
    proc.add(100, standard_maps(leaky))
    addr = BASE + syms["leak_here"]
    assert sym.frame(100, addr) == "leak_here+0x0 [leaky]"
    proc.remove(100)
    sym.forget(100)
    assert sym.frame(100, addr) == f"{addr:#x}"


def test_refresh_after_exec_invalidates_frames(proc: FakeProc, sym: Symbolizer, leaky: Path, syms: dict[str, int]) -> None:
    proc.add(100, standard_maps(leaky))
    addr = BASE + syms["leak_here"]
    assert sym.frame(100, addr) == "leak_here+0x0 [leaky]"
    # exec: another (unreadable) program now occupies the old address range
    proc.add(100, f"{BASE:x}-{BASE + 0x100000:x} r-xp 00000000 08:01 3003 /opt/other/prog\n")
    sym.refresh(100)
    assert sym.frame(100, addr) == f"{addr:#x} [prog]"
    assert sym.module_of(100, addr) == "/opt/other/prog"


def test_real_process_self() -> None:
    """Symbolize libc's malloc in this very process through the real /proc."""
    import ctypes
    import os
    import re

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        pytest.skip("no glibc")
    addr = ctypes.cast(libc.malloc, ctypes.c_void_p).value
    assert addr is not None
    sym = Symbolizer()
    assert re.fullmatch(r"malloc\+0x10 \[libc[-.\w]*\.so[.\d]*\]", sym.frame(os.getpid(), addr + 0x10))
    assert sym.in_executable_mapping(os.getpid(), addr)


def test_deleted_file_read_through_map_files(proc: FakeProc, sym: Symbolizer, opener: CountingOpen, leaky: Path, syms: dict[str, int]) -> None:
    lines = map_lines("/usr/bin/leaky (deleted)", BASE, 1001, leaky)
    d = proc.add(100, "\n".join(lines) + "\n")
    addr = BASE + syms["leak_here"]
    text = next(line for line in lines if " r-xp " in line)
    (d / "map_files").mkdir()
    shutil.copy(leaky, d / "map_files" / text.split()[0])
    assert sym.frame(100, addr) == "leak_here+0x0 [leaky]"
    assert opener.calls == [f"{proc.root}/100/map_files/{text.split()[0]}"]


def test_deleted_file_never_opened_by_name(proc: FakeProc, sym: Symbolizer, opener: CountingOpen, leaky: Path, syms: dict[str, int]) -> None:
    # the path now holds some other file: it must not be used for symbols
    proc.add(100, "\n".join(map_lines(f"{leaky} (deleted)", BASE, 1001, leaky)) + "\n")
    addr = BASE + syms["leak_here"]
    assert sym.frame(100, addr) == f"{addr:#x} [leaky]"
    assert str(leaky) not in opener.calls


def test_elf_errors_never_raise(proc: FakeProc, leaky: Path, syms: dict[str, int]) -> None:
    def broken(path: str) -> ElfFile:
        raise ElfError("boom")

    sym = Symbolizer(proc=str(proc.root), open_elf=broken)
    proc.add(100, standard_maps(leaky))
    addr = BASE + syms["leak_here"]
    assert sym.frame(100, addr) == f"{addr:#x} [leaky]"


def test_file_changed_after_open(proc: FakeProc, tmp_path: Path, leaky: Path, syms: dict[str, int]) -> None:
    copy = tmp_path / "leaky"
    shutil.copy(leaky, copy)
    elf = ElfFile.open(str(copy))  # headers read, symbols not yet
    copy.unlink()
    copy.write_bytes(b"gone")
    sym = Symbolizer(proc=str(proc.root), open_elf=lambda path: elf)
    proc.add(100, standard_maps(leaky, exe_path=str(copy)))
    addr = BASE + syms["leak_here"]
    assert sym.frame(100, addr) == f"{addr:#x} [leaky]"
