"""Function symbols and address translation for one ELF file (via pyelftools).

:meth:`ElfFile.open` reads only the ELF and program headers.  The symbol
tables are read on first use into compact sorted arrays (addresses, sizes,
names); no pyelftools objects are kept and the file is closed after each read.
Create one ``ElfFile`` per file identity and cache it (see ``symbolize``).
"""
from __future__ import annotations

import os
import stat
import struct
from array import array
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from typing import Any, BinaryIO, NamedTuple

from elftools.elf.elffile import ELFFile
from elftools.elf.gnuversions import GNUVerSymSection
from elftools.elf.sections import SymbolTableSection

__all__ = ["ElfError", "ElfFile", "Symbol"]

#: How far past the end of a symbol :meth:`ElfFile.lookup` still attributes
#: an address to it (covers static functions removed by stripping).
SLACK = 4096
#: Upper bound on :meth:`ElfFile.read_code`.
MAX_CODE = 256
#: A symbol table (or version table) with more entries is not read (the
#: others still are): pyelftools reads ~20,000 a second, and a hostile file
#: can declare billions in a sparse region of zeros.
MAX_SYMBOLS = 1 << 21

# pyelftools names STT_GNU_IFUNC (10) 'STT_LOOS' and STB_GNU_UNIQUE 'STB_LOOS'.
_FUNC_TYPES = frozenset({"STT_FUNC", "STT_GNU_IFUNC", "STT_LOOS", 2, 10})
_BIND_RANK = {"STB_GLOBAL": 3, "STB_LOOS": 3, "STB_WEAK": 2, "STB_LOCAL": 1}


class ElfError(Exception):
    """The file is missing, unreadable, not ELF, corrupt, or changed under us."""


@dataclass(frozen=True)
class Symbol:
    name: str
    value: int  # st_value: a virtual address in the file's own address space
    size: int


class _Segment(NamedTuple):
    vaddr: int
    offset: int
    filesz: int
    executable: bool


class _Tables(NamedTuple):
    addrs: array[int]  # sorted st_value
    sizes: array[int]
    names: list[str]
    ranks: bytes  # preference of each entry when the same name occurs twice


def strip_version(name: str) -> str:
    """``'malloc@@GLIBC_2.2.5'`` -> ``'malloc'``."""
    return name.partition("@")[0]


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _open(path: str) -> BinaryIO:
    """``path`` opened for reading if it is a regular file. Non-blocking, so
    that a FIFO put in place of a mapped library never hangs heaptrace;
    anything but a regular file (FIFO, device, directory) is an ElfError."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ElfError(f"{path}: not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


class ElfFile:
    """Loaded once per file identity, cached by the caller."""

    def __init__(
        self,
        path: str,
        e_type: str,
        segments: tuple[_Segment, ...],
        identity: tuple[int, int, int, int],
        interp: str | None = None,
    ) -> None:
        self.interp = interp
        self.path = path
        self.e_type = e_type
        self._segments = segments
        self._identity = identity
        self._tables: _Tables | None = None

    # -- loading -----------------------------------------------------------

    @classmethod
    def open(cls, path: str) -> "ElfFile":
        """Read the headers of ``path``; raise :class:`ElfError` if unusable."""
        try:
            with _open(path) as f:
                identity = _identity(os.fstat(f.fileno()))
                if f.read(4) != b"\x7fELF":
                    raise ElfError(f"{path}: not an ELF file")
                f.seek(0)
                elf = _parse(f, path)
                try:
                    e_type = elf.header["e_type"]
                    segments = tuple(
                        _Segment(
                            seg["p_vaddr"],
                            seg["p_offset"],
                            seg["p_filesz"],
                            bool(seg["p_flags"] & 1),  # PF_X
                        )
                        for seg in elf.iter_segments()
                        if seg["p_type"] == "PT_LOAD"
                    )
                    interp = next((seg.get_interp_name() for seg in elf.iter_segments()
                                   if seg["p_type"] == "PT_INTERP"), None)
                except Exception as e:  # pyelftools raises many types on corrupt input
                    raise ElfError(f"{path}: corrupt ELF: {e}") from e
        except OSError as e:
            raise ElfError(f"{path}: cannot open: {e.strerror or e}") from e
        return cls(path, str(e_type), segments, identity, interp)

    @property
    def loaded_symbols(self) -> int:
        """Functions held in memory (0 until a lookup loads the tables): the
        caller's measure of what this file costs to keep (~170 bytes each)."""
        return len(self._tables.names) if self._tables is not None else 0

    def interpreter(self) -> str | None:
        """The program interpreter (PT_INTERP), e.g. the dynamic linker."""
        return self.interp

    def _load(self) -> _Tables:
        if self._tables is None:
            try:
                with _open(self.path) as f:
                    if _identity(os.fstat(f.fileno())) != self._identity:
                        raise ElfError(f"{self.path}: file changed since it was opened")
                    self._tables = _read_tables(_parse(f, self.path), self.path)
            except OSError as e:
                raise ElfError(f"{self.path}: cannot open: {e.strerror or e}") from e
        return self._tables

    # -- symbols -----------------------------------------------------------

    def defined_functions(self) -> dict[str, Symbol]:
        """Functions (incl. IFUNCs) defined in this file, by unversioned name.

        Merges ``.dynsym`` and ``.symtab``.  When one name has several
        definitions the preferred one is: from ``.symtab``, then the default
        version (``@@`` or unversioned), then global over weak over local.
        Builds a new dict on each call.
        """
        t = self._load()
        best: dict[str, int] = {}
        for i, name in enumerate(t.names):
            j = best.get(name)
            if j is None or t.ranks[i] > t.ranks[j]:
                best[name] = i
        return {n: Symbol(n, t.addrs[i], t.sizes[i]) for n, i in best.items()}

    def aliases(self, value: int) -> list[str]:
        """All function names whose address is ``value`` (preferred first)."""
        t = self._load()
        lo, hi = bisect_left(t.addrs, value), bisect_right(t.addrs, value)
        return list(dict.fromkeys(t.names[lo:hi]))

    def lookup(self, vaddr: int) -> tuple[str, int] | None:
        """``(name, offset)`` of the function containing ``vaddr``.

        An address past the end of the closest preceding function (but before
        the next one) is still attributed to it if it is less than
        :data:`SLACK` bytes past its end: stripped binaries lose their static
        functions, and "nearest exported function + offset" beats nothing.
        Returns ``None`` before the first function or further away.
        """
        t = self._load()
        hi = bisect_right(t.addrs, vaddr)
        if hi == 0:
            return None
        start = t.addrs[hi - 1]
        lo = bisect_left(t.addrs, start, 0, hi)
        size = max(t.sizes[lo:hi])
        if vaddr - start >= size + SLACK:
            return None
        return t.names[lo], vaddr - start

    def read_code(self, sym: Symbol) -> bytes:
        """The first ``min(sym.size, 256)`` bytes of the function, from the file."""
        seg = self._segment_of_vaddr(sym.value)
        off = sym.value - seg.vaddr
        n = max(0, min(sym.size, MAX_CODE, seg.filesz - off))
        try:
            with _open(self.path) as f:
                if _identity(os.fstat(f.fileno())) != self._identity:
                    raise ElfError(f"{self.path}: file changed since it was opened")
                f.seek(seg.offset + off)
                return f.read(n)
        except OSError as e:
            raise ElfError(f"{self.path}: cannot read: {e.strerror or e}") from e
        except (ValueError, OverflowError) as e:  # an offset beyond any file (a corrupt header)
            raise ElfError(f"{self.path}: a segment lies beyond the file ({e})") from e

    # -- address translation ----------------------------------------------

    @property
    def is_pie_or_shared(self) -> bool:
        return self.e_type == "ET_DYN"

    def _segment_of_vaddr(self, vaddr: int) -> _Segment:
        for seg in self._segments:
            if seg.vaddr <= vaddr < seg.vaddr + seg.filesz:
                return seg
        raise ElfError(f"{self.path}: address {vaddr:#x} is not in a loaded segment")

    def file_offset(self, vaddr: int) -> int:
        """File offset of ``vaddr`` (``vaddr - p_vaddr + p_offset`` of its PT_LOAD)."""
        seg = self._segment_of_vaddr(vaddr)
        return vaddr - seg.vaddr + seg.offset

    def vaddr_of_offset(self, off: int) -> int | None:
        """Virtual address of file offset ``off``, or ``None`` if it is not loaded.

        Executable segments win if two PT_LOADs cover the same file bytes.
        """
        found = None
        for seg in self._segments:
            if seg.offset <= off < seg.offset + seg.filesz:
                if seg.executable:
                    return off - seg.offset + seg.vaddr
                if found is None:
                    found = off - seg.offset + seg.vaddr
        return found


def _parse(f: BinaryIO, path: str) -> ELFFile:
    try:
        return ELFFile(f)
    except Exception as e:  # ELFError, ELFParseError, struct/construct errors...
        raise ElfError(f"{path}: corrupt ELF: {e}") from e


def _rank(from_symtab: bool, default_version: bool, bind: Any) -> int:
    return from_symtab * 8 + default_version * 4 + _BIND_RANK.get(bind, 0)


def _fast(elf: ELFFile) -> bool:
    """ELF64 little-endian (x86-64): tables read as raw structs, about 100
    times faster than pyelftools' per-entry parsing (a libLLVM has 100,000
    symbols: seconds)."""
    return elf.elfclass == 64 and elf.little_endian


def _hidden_versions(elf: ELFFile) -> list[bool]:
    """Per .dynsym index: True for a non-default version (``name@VER``, not ``@@``)."""
    for section in elf.iter_sections():
        if isinstance(section, GNUVerSymSection) and section.num_symbols() <= MAX_SYMBOLS:
            if _fast(elf):
                data = section.data()
                return [bool(v & 0x8000) for v in array("H", data[: len(data) // 2 * 2])]
            return [isinstance(v["ndx"], int) and bool(v["ndx"] & 0x8000) for v in section.iter_symbols()]
    return []


_SYM64 = struct.Struct("<IBBHQQ")   # Elf64_Sym: name, info, other, shndx, value, size
_BIND_NAMES = {0: "STB_LOCAL", 1: "STB_GLOBAL", 2: "STB_WEAK", 10: "STB_LOOS"}


def _functions(elf: ELFFile, section: SymbolTableSection):
    """(index, raw name, bind, value, size) of each defined function symbol."""
    if _fast(elf):
        data = section.data()
        strtab = elf.get_section(section["sh_link"]).data()
        for i, (name, info, _other, shndx, value, size) in enumerate(
                _SYM64.iter_unpack(data[: len(data) // _SYM64.size * _SYM64.size])):
            if (info & 0xF) not in (2, 10) or shndx == 0:  # STT_FUNC, STT_GNU_IFUNC; SHN_UNDEF
                continue
            end = strtab.find(b"\0", name)
            raw = strtab[name:end if end >= 0 else len(strtab)].decode("utf-8", errors="replace")
            yield i, raw, _BIND_NAMES.get(info >> 4, info >> 4), value, size
        return
    for i, sym in enumerate(section.iter_symbols()):
        info = sym["st_info"]
        if info["type"] not in _FUNC_TYPES or sym["st_shndx"] == "SHN_UNDEF":
            continue
        yield i, sym.name, info["bind"], sym["st_value"], sym["st_size"]


def _read_tables(elf: ELFFile, path: str) -> _Tables:
    # (addr, name) -> (size, rank); a symbol in both tables is kept once.
    entries: dict[tuple[int, str], tuple[int, int]] = {}
    try:
        hidden = _hidden_versions(elf)
        for section in elf.iter_sections():
            if not isinstance(section, SymbolTableSection) or section.num_symbols() > MAX_SYMBOLS:
                continue
            from_symtab = section["sh_type"] == "SHT_SYMTAB"
            for i, raw, bind, value, size in _functions(elf, section):
                name = strip_version(raw)
                if not name:
                    continue
                if from_symtab:  # versions are spelled out in .symtab names
                    default = "@" not in raw or "@@" in raw
                else:  # and recorded in .gnu.version for .dynsym
                    default = not (i < len(hidden) and hidden[i])
                key = (value, name)
                new = (size, _rank(from_symtab, default, bind))
                old = entries.get(key)
                entries[key] = new if old is None else (max(old[0], new[0]), max(old[1], new[1]))
    except Exception as e:  # corrupt input: any pyelftools/struct error
        raise ElfError(f"{path}: corrupt symbol table: {e}") from e
    # Sort by address; at one address the most preferred name comes first, then
    # fewer leading underscores ('malloc' before '__libc_malloc'), then by name.
    order = sorted(
        entries.items(),
        key=lambda kv: (kv[0][0], -kv[1][1], len(kv[0][1]) - len(kv[0][1].lstrip("_")), kv[0][1]),
    )
    return _Tables(
        array("Q", (k[0] for k, _ in order)),
        array("Q", (v[0] for _, v in order)),
        [k[1] for k, _ in order],
        bytes(v[1] for _, v in order),
    )
