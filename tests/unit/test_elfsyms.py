"""Tests for tracer.elfsyms on tiny binaries compiled with gcc into tmp dirs."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from tracer.elfsyms import SLACK, ElfError, ElfFile, Symbol, strip_version

SOURCE = r"""
#include <stdlib.h>
static volatile int counter;

#define R4(x) x x x x
#define R64(x) R4(R4(R4(x)))

__attribute__((noinline)) void *leak_here(size_t n) { counter++; return malloc(n); }
extern void *leak_alias(size_t n) __attribute__((alias("leak_here")));

/* hidden_helper directly follows before_hidden and vanishes when stripped */
__attribute__((noinline)) int before_hidden(int x) { return x + counter; }
static __attribute__((noinline)) int hidden_helper(int x) { return x * 3 + counter; }
__attribute__((noinline)) int uses_hidden(int x) { return hidden_helper(x) + 1; }

int big_function(int x) { R64(counter += x;) return counter; }   /* > 256 bytes */

static int impl_a(void) { return 1; }
static void *pick_impl(void) { return (void *)impl_a; }
int picked(void) __attribute__((ifunc("pick_impl")));             /* STT_GNU_IFUNC */

#ifdef VERSIONS
int vfunc_old(void) { return 1; }
int vfunc_new(void) { return 2; }
__asm__(".symver vfunc_old, vfunc@VERS_1");
__asm__(".symver vfunc_new, vfunc@@VERS_2");
#endif

#ifdef WITH_MAIN
int main(int argc, char **argv) {
    (void)argv;
    free(leak_here(16));
    return uses_hidden(argc) + big_function(argc) + picked();
}
#endif
"""

VERSION_SCRIPT = """\
VERS_1 { global: leak_here; leak_alias; before_hidden; uses_hidden; big_function; picked; vfunc; local: *; };
VERS_2 { global: vfunc; } VERS_1;
"""

LIB = ["-fPIC", "-shared", "-DVERSIONS", "-Wl,--version-script=v.map"]
PIE = ["-fPIE", "-pie", "-DWITH_MAIN"]
EXE = ["-fno-pie", "-no-pie", "-DWITH_MAIN"]
VARIANTS = {
    "lib.so": LIB,
    "lib-stripped.so": LIB + ["-s"],
    "pie": PIE,
    "pie-stripped-rdynamic": PIE + ["-rdynamic", "-s"],
    "exe": EXE,
    "exe-stripped": EXE + ["-s"],
}
WITH_SYMTAB = ["lib.so", "pie", "exe"]
EXPORTED = {"leak_here", "leak_alias", "before_hidden", "uses_hidden", "big_function", "picked"}


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc not available")
    d = tmp_path_factory.mktemp("elf")
    (d / "t.c").write_text(SOURCE)
    (d / "v.map").write_text(VERSION_SCRIPT)
    return d


def build(build_dir: Path, variant: str) -> Path:
    out = build_dir / variant
    if not out.exists():
        cmd = ["gcc", "-O0", "-g0", *VARIANTS[variant], "-o", variant, "t.c"]
        r = subprocess.run(cmd, cwd=build_dir, capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot build {variant}: {r.stderr.strip()[:200]}")
    return out


@pytest.fixture(params=list(VARIANTS))
def variant(request: pytest.FixtureRequest, build_dir: Path) -> tuple[str, Path]:
    return request.param, build(build_dir, request.param)


@pytest.fixture(params=WITH_SYMTAB)
def unstripped(request: pytest.FixtureRequest, build_dir: Path) -> ElfFile:
    return ElfFile.open(str(build(build_dir, request.param)))


def symtab_values(path: Path) -> dict[str, int]:
    """Reference values straight from pyelftools' .symtab."""
    with open(path, "rb") as f:
        symtab = ELFFile(f).get_section_by_name(".symtab")
        assert isinstance(symtab, SymbolTableSection)
        return {s.name: s["st_value"] for s in symtab.iter_symbols()}


def load_segments(path: Path) -> list[tuple[int, int, int]]:
    with open(path, "rb") as f:
        return [
            (s["p_vaddr"], s["p_offset"], s["p_filesz"])
            for s in ELFFile(f).iter_segments()
            if s["p_type"] == "PT_LOAD"
        ]


# -- header ------------------------------------------------------------------


def test_elf_type(variant: tuple[str, Path]) -> None:
    name, path = variant
    elf = ElfFile.open(str(path))
    assert elf.is_pie_or_shared == (not name.startswith("exe"))
    assert elf.e_type == ("ET_EXEC" if name.startswith("exe") else "ET_DYN")


# -- defined functions -------------------------------------------------------


def test_defined_functions_unstripped(unstripped: ElfFile) -> None:
    funcs = unstripped.defined_functions()
    assert EXPORTED | {"hidden_helper"} <= funcs.keys()
    assert "malloc" not in funcs and "free" not in funcs  # undefined imports
    assert "counter" not in funcs  # data, not a function
    assert all("@" not in n for n in funcs)
    sym = funcs["leak_here"]
    assert sym == Symbol("leak_here", sym.value, sym.size) and sym.size > 0
    assert funcs["leak_alias"].value == sym.value


def test_defined_functions_match_symtab(unstripped: ElfFile) -> None:
    ref = symtab_values(Path(unstripped.path))
    for name, sym in unstripped.defined_functions().items():
        if name in ref:
            assert sym.value == ref[name], name


def test_ifunc_is_a_function(variant: tuple[str, Path]) -> None:
    name, path = variant
    funcs = ElfFile.open(str(path)).defined_functions()
    assert ("picked" in funcs) == (name != "exe-stripped")


def test_stripped_library_keeps_exports_only(build_dir: Path) -> None:
    full = ElfFile.open(str(build(build_dir, "lib.so"))).defined_functions()
    stripped = ElfFile.open(str(build(build_dir, "lib-stripped.so"))).defined_functions()
    assert EXPORTED | {"vfunc"} == stripped.keys()
    for n in stripped:
        assert stripped[n] == full[n]


def test_stripped_pie_with_rdynamic_exports(build_dir: Path) -> None:
    funcs = ElfFile.open(str(build(build_dir, "pie-stripped-rdynamic"))).defined_functions()
    assert EXPORTED | {"main"} <= funcs.keys()
    assert "hidden_helper" not in funcs


def test_stripped_exe_has_no_functions(build_dir: Path) -> None:
    elf = ElfFile.open(str(build(build_dir, "exe-stripped")))
    assert elf.defined_functions() == {}
    assert elf.lookup(0x401000) is None


@pytest.mark.parametrize("variant_name", ["lib.so", "lib-stripped.so"])
def test_default_symbol_version_wins(build_dir: Path, variant_name: str) -> None:
    ref = symtab_values(build(build_dir, "lib.so"))
    assert ref["vfunc@@VERS_2"] == ref["vfunc_new"] != ref["vfunc_old"]
    funcs = ElfFile.open(str(build(build_dir, variant_name))).defined_functions()
    assert funcs["vfunc"].value == ref["vfunc_new"]


@pytest.mark.parametrize(
    "raw, name",
    [("malloc@@GLIBC_2.2.5", "malloc"), ("memcpy@GLIBC_2.2.5", "memcpy"), ("plain", "plain"), ("", "")],
)
def test_strip_version(raw: str, name: str) -> None:
    assert strip_version(raw) == name


# -- aliases -----------------------------------------------------------------


def test_aliases(unstripped: ElfFile) -> None:
    funcs = unstripped.defined_functions()
    assert sorted(unstripped.aliases(funcs["leak_here"].value)) == ["leak_alias", "leak_here"]
    assert unstripped.aliases(funcs["big_function"].value) == ["big_function"]
    assert unstripped.aliases(funcs["big_function"].value + 1) == []


def test_aliases_versioned_names_are_stripped(build_dir: Path) -> None:
    elf = ElfFile.open(str(build(build_dir, "lib.so")))
    ref = symtab_values(Path(elf.path))
    assert sorted(elf.aliases(ref["vfunc_old"])) == ["vfunc", "vfunc_old"]


# -- address translation -----------------------------------------------------


def test_file_offset_roundtrip(variant: tuple[str, Path]) -> None:
    _, path = variant
    elf = ElfFile.open(str(path))
    for sym in elf.defined_functions().values():
        off = elf.file_offset(sym.value)
        assert elf.vaddr_of_offset(off) == sym.value


def test_file_offset_matches_program_headers(variant: tuple[str, Path]) -> None:
    _, path = variant
    elf = ElfFile.open(str(path))
    for vaddr, offset, filesz in load_segments(path):
        for delta in (0, filesz // 2, filesz - 1):
            assert elf.file_offset(vaddr + delta) == offset + delta
            assert elf.vaddr_of_offset(offset + delta) == vaddr + delta


def test_exe_offsets_differ_from_vaddrs(build_dir: Path) -> None:
    elf = ElfFile.open(str(build(build_dir, "exe")))
    sym = elf.defined_functions()["leak_here"]
    assert sym.value >= 0x400000
    assert elf.file_offset(sym.value) < 0x400000


def test_file_offset_outside_segments(variant: tuple[str, Path]) -> None:
    _, path = variant
    elf = ElfFile.open(str(path))
    with pytest.raises(ElfError):
        elf.file_offset(1 << 60)
    assert elf.vaddr_of_offset(1 << 40) is None
    assert elf.vaddr_of_offset(path.stat().st_size + 4096) is None


# -- lookup ------------------------------------------------------------------


def test_lookup_exact_and_offsets(unstripped: ElfFile) -> None:
    funcs = unstripped.defined_functions()
    big = funcs["big_function"]
    assert unstripped.lookup(big.value) == ("big_function", 0)
    assert unstripped.lookup(big.value + 0x1A) == ("big_function", 0x1A)
    assert unstripped.lookup(big.value + big.size - 1) == ("big_function", big.size - 1)
    leak = funcs["leak_here"]
    hit = unstripped.lookup(leak.value + 4)
    assert hit is not None
    name, off = hit
    assert name in {"leak_here", "leak_alias"} and off == 4


def test_lookup_every_function_start(unstripped: ElfFile) -> None:
    for name, sym in unstripped.defined_functions().items():
        hit = unstripped.lookup(sym.value)
        assert hit is not None
        found, off = hit
        assert off == 0 and name in unstripped.aliases(sym.value) and found in unstripped.aliases(sym.value)


def test_lookup_before_first_symbol(variant: tuple[str, Path]) -> None:
    _, path = variant
    elf = ElfFile.open(str(path))
    first = min((s.value for s in elf.defined_functions().values()), default=None)
    assert elf.lookup(0) is None
    if first is not None:
        assert elf.lookup(first - 1) is None


def test_lookup_stripped_local_function_falls_back(build_dir: Path) -> None:
    full = ElfFile.open(str(build(build_dir, "lib.so")))
    stripped = ElfFile.open(str(build(build_dir, "lib-stripped.so")))
    funcs = full.defined_functions()
    hidden, before = funcs["hidden_helper"], funcs["before_hidden"]
    assert hidden.value >= before.value + before.size  # placed right after
    assert full.lookup(hidden.value + 2) == ("hidden_helper", 2)
    assert stripped.lookup(hidden.value + 2) == ("before_hidden", hidden.value + 2 - before.value)


def test_lookup_slack_limit(unstripped: ElfFile) -> None:
    last = max(unstripped.defined_functions().values(), key=lambda s: s.value)
    end = last.value + last.size
    assert unstripped.lookup(end + SLACK - 1) == (unstripped.aliases(last.value)[0], end + SLACK - 1 - last.value)
    assert unstripped.lookup(end + SLACK) is None


# -- code --------------------------------------------------------------------


def test_read_code(unstripped: ElfFile) -> None:
    raw = Path(unstripped.path).read_bytes()
    funcs = unstripped.defined_functions()
    for name in ("leak_here", "big_function", "hidden_helper"):
        sym = funcs[name]
        code = unstripped.read_code(sym)
        assert len(code) == min(sym.size, 256)
        off = unstripped.file_offset(sym.value)
        assert code == raw[off : off + len(code)]
    assert funcs["big_function"].size > 256
    assert unstripped.read_code(Symbol("empty", funcs["leak_here"].value, 0)) == b""


def test_read_code_outside_segments(unstripped: ElfFile) -> None:
    with pytest.raises(ElfError):
        unstripped.read_code(Symbol("nowhere", 1 << 60, 16))


# -- errors and resource use -------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ElfError, match="cannot open"):
        ElfFile.open(str(tmp_path / "nope"))


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(ElfError):
        ElfFile.open(str(tmp_path))


@pytest.mark.parametrize("content", [b"", b"#!/bin/sh\necho hi\n", b"\x7fEL", bytes(range(256)) * 4])
def test_not_elf(tmp_path: Path, content: bytes) -> None:
    p = tmp_path / "f"
    p.write_bytes(content)
    with pytest.raises(ElfError, match="not an ELF"):
        ElfFile.open(str(p))


@pytest.mark.parametrize("keep", [16, 64, 200, 3000])
def test_truncated_elf(build_dir: Path, tmp_path: Path, keep: int) -> None:
    p = tmp_path / "trunc"
    p.write_bytes(build(build_dir, "lib.so").read_bytes()[:keep])
    with pytest.raises(ElfError):
        ElfFile.open(str(p)).defined_functions()


def test_symbols_load_lazily_and_detect_replacement(build_dir: Path, tmp_path: Path) -> None:
    p = tmp_path / "lib.so"
    shutil.copy(build(build_dir, "lib.so"), p)
    elf = ElfFile.open(str(p))
    p.unlink()
    shutil.copy(build(build_dir, "pie"), p)  # a different file at the same path
    with pytest.raises(ElfError, match="changed"):
        elf.defined_functions()


def test_no_file_descriptors_kept(build_dir: Path) -> None:
    before = len(os.listdir("/proc/self/fd"))
    elfs = [ElfFile.open(str(build(build_dir, v))) for v in WITH_SYMTAB]
    for elf in elfs:
        elf.read_code(elf.defined_functions()["leak_here"])
        elf.lookup(0x1234)
    assert len(os.listdir("/proc/self/fd")) == before


def test_system_libc() -> None:
    with open("/proc/self/maps") as f:
        libc = next((line.split()[-1] for line in f if "/libc.so" in line or "/libc-" in line), None)
    if libc is None:
        pytest.skip("no libc mapped (static python?)")
    elf = ElfFile.open(libc)
    malloc = elf.defined_functions()["malloc"]
    assert elf.lookup(malloc.value) == ("malloc", 0)
    assert 0 < len(elf.read_code(malloc)) <= 256
