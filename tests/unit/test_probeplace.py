"""Tests for tracer.probeplace: uprobe offset choice from raw function bytes.

The glibc byte strings below were copied from this machine's glibc 2.36
(/usr/lib/x86_64-linux-gnu/libc.so.6, `objdump -d`), so the tests are
hermetic; only test_installed_glibc_free reads the real file, and it skips
when that file is absent or differs.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracer.probeplace import Placement, _emulated, choose_offset, describe

# glibc 2.36 __libc_free, whole symbol (257 bytes):
#   0: test %rdi,%rdi   3: je +0xc8   9: push %rbp   ...
FREE = bytes.fromhex(
    "4885ff0f84bf00000055488d77f0534883ec18488b1dd69e1300488b47f8648b2ba802"
    "755b488b155c9e13006448833a000f8499000000488d3d32ad1300a8047426488b1537"
    "a41300488d04950000000048f7d84885d248c7c2000000fc480f44c24821f0488b3831"
    "d2e8c1d1ffff64892b4883c4185b5dc30f1f80000000008b1512a4130085d275264839"
    "05cfa31300731d483d0000000277154883e0f8488905baa313004801c0488905a0a313"
    "004889f7e808baffff64892b4883c4185b5dc3660f1f440000c30f1f8000000000488b"
    "15b99d130048893c2464803a000f8552ffffff4889742408e831f2ffff488b3c24488b"
    "742408488b47f8e936ffffff"
)
# __libc_memalign, whole symbol (52 bytes):
#   0: cmpb $0x0,..(%rip)   7: je +0x10   9: jmp __libc_malloc+0x320   ...
MEMALIGN = bytes.fromhex(
    "803d710e1400007407e932f6ffff66904883ec18488974240848893c24e8bebcffff48"
    "8b742408488b3c244883c418e90cf6ffff"
)
# posix_memalign, whole symbol (119 bytes):
#   0: cmpb $0x0,..(%rip)   7: push %r12   9: mov %rdx,%r12   ...
POSIX_MEMALIGN = bytes.fromhex(
    "803d010214000041544989d4554889fd534889f3745a4889da48c1ea03488d42ff4821"
    "d04889da83e2074809d075314885db742c4c89e64889dfe891e9ffff4889c2b80c0000"
    "004885d274064889550031c05b5d415cc3660f1f8400000000005bb8160000005d415c"
    "c3660f1f440000e8fbafffffeb9f"
)
# First 32 bytes only (the answer is offset 0, nothing further is read).
MALLOC_HEAD = bytes.fromhex("415455534889fb4883ec10803d461b1400000f84f80100004885db0f88fd0100")
REALLOC_HEAD = bytes.fromhex("4157415641554154554889f5534889fb4883ec28803d3d131400000f84570100")
CALLOC_HEAD = bytes.fromhex("41554889f8415455534883ec1848f7e64889c30f90c04885db0f88d90200000f")

RDI = frozenset({"rdi"})
RDI_RSI = frozenset({"rdi", "rsi"})
RDI_RSI_RDX = frozenset({"rdi", "rsi", "rdx"})


def h(s: str) -> bytes:
    return bytes.fromhex(s.replace(" ", ""))


# (id, code, needed_regs, null_noop_reg, expected offset, substring of reason)
CASES = [
    # --- real glibc 2.36 ---
    ("glibc-free", FREE, RDI, "rdi", 9, "push %rbp, emulated (skipped: test, je on NULL arg)"),
    ("glibc-free-no-null-rule", FREE, RDI, None, 3, "je to +200, emulated (skipped: test)"),
    ("glibc-malloc", MALLOC_HEAD, RDI, None, 0, "entry: push %r12, emulated"),
    ("glibc-realloc", REALLOC_HEAD, RDI_RSI, None, 0, "entry: push %r15, emulated"),
    ("glibc-calloc", CALLOC_HEAD, RDI_RSI, None, 0, "entry: push %r13, emulated"),
    ("glibc-posix_memalign", POSIX_MEMALIGN, RDI_RSI_RDX, None, 7, "push %r12, emulated (skipped: cmp)"),
    ("glibc-memalign", MEMALIGN, RDI_RSI, None, 7, "je to +16, emulated"),
    # --- synthetic: skippable prologue instructions ---
    ("endbr64-push", h("f30f1efa 55"), RDI, None, 4, "skipped: endbr64"),
    ("mov-to-other-reg", h("4889fb 55"), RDI, None, 3, "push %rbp"),            # mov %rdi,%rbx
    ("two-movs-realloc", h("4889fb 4889f5 55"), RDI_RSI, None, 6, "push %rbp"),  # mov %rsi,%rbp
    ("fs-canary-load", h("64488b042528000000 55"), RDI, None, 9, "push %rbp"),   # mov %fs:0x28,%rax
    ("pause-not-emulated", h("f390 55"), RDI, None, 2, "skipped: pause"),
    ("cs-nopw-unprobeable", h("662e0f1f840000000000 55"), RDI, None, 10, "skipped: nop"),
    ("nop-0f1f-reg1-not-nop", h("0f1f4800 55"), RDI, None, 4, "push %rbp"),
    # --- synthetic: emulated at entry ---
    ("nop1", h("90 4889f7"), RDI, None, 0, "entry: nop, emulated"),
    ("xchg-ax-ax", h("6690 4889f7"), RDI, None, 0, "entry: nop, emulated"),
    ("nop5", h("0f1f440000 4889f7"), RDI, None, 0, "entry: nop, emulated"),
    ("push-rbx", h("53"), RDI, None, 0, "entry: push %rbx"),
    ("call-rel32", h("e800000000"), RDI, None, 0, "entry: call to +5, emulated"),
    ("jmp-rel8", h("ebfe"), RDI, None, 0, "entry: jmp to +0, emulated"),
    ("jne-rel32", h("0f8500000000"), RDI, None, 0, "entry: jne to +6"),
    # --- synthetic: must stay at entry ---
    ("writes-needed-reg", h("4889f7 53"), RDI, None, 0, "entry: mov at +0 writes rdi"),  # mov %rsi,%rdi
    ("writes-sub-reg", h("31ff 55"), RDI, None, 0, "writes rdi"),                        # xor %edi,%edi
    ("writes-r8d", h("4189f0 55"), frozenset({"r8"}), None, 0, "writes r8"),             # mov %esi,%r8d
    ("sub-rsp", h("4883ec08 55"), RDI, None, 0, "entry: sub at +0 writes rsp"),
    ("store-at-rsp", h("48890424 55"), RDI, None, 0, "writes stack memory"),             # mov %rax,(%rsp)
    ("store-off-rsp", h("4889442408 55"), RDI, None, 0, "writes stack memory"),          # mov %rax,8(%rsp)
    ("rex40-push", h("4055"), RDI, None, 0, "push at +0 changes the stack"),
    ("push-ax-16bit", h("6650"), RDI, None, 0, "changes the stack"),
    ("push-imm", h("6a00 55"), RDI, None, 0, "changes the stack"),
    ("pop", h("5d 55"), RDI, None, 0, "changes the stack"),
    ("enter", h("c8000000 55"), RDI, None, 0, "enter at +0 changes the stack"),
    ("leave", h("c9 55"), RDI, None, 0, "leave at +0 changes the stack"),
    ("ret", h("c3"), RDI, None, 0, "ret at +0 transfers control"),
    ("ud2", h("0f0b 55"), RDI, None, 0, "ud2 at +0 transfers control"),
    ("int3", h("cc 55"), RDI, None, 0, "transfers control"),
    ("syscall", h("0f05 55"), RDI, None, 0, "transfers control"),
    ("jmp-indirect", h("ffe0 55"), RDI, None, 0, "transfers control"),
    ("jmp-66-prefix", h("4889fb 66e900000000"), RDI, None, 0, "jmp at +3 transfers control"),
    ("loop", h("4889fb e2fe 55"), RDI, None, 0, "loop at +3 transfers control"),
    # --- NULL early exit rule ---
    ("null-test-rdi", h("4885ff 7401 55"), RDI, "rdi", 5, "skipped: test, je on NULL arg"),
    ("null-cmp-rdi-0", h("4883ff00 7401 55"), RDI, "rdi", 6, "je on NULL arg"),
    ("null-test-edi-not-64bit", h("85ff 7401 55"), RDI, "rdi", 2, "je to +5"),
    ("null-test-other-reg", h("4885f6 7401 55"), RDI, "rdi", 3, "je to +6"),
    ("null-jne-is-not-exit", h("4885ff 7501 55"), RDI, "rdi", 3, "jne to +6"),
    ("null-no-rule", h("4885ff 7401 55"), RDI, None, 3, "je to +6, emulated (skipped: test)"),
    # --- branch targets inside the skipped prologue ---
    # mov %rdi,%rbx; push %rbp; pop %rbp; jmp +3  -> the push is re-entered by the loop
    ("jmp-back-to-probe", h("4889fb 55 5d ebfc"), RDI, None, 0, "entry: +3 is a branch target"),
    # ...; jmp +1 (mid-instruction of the skipped mov)
    ("jmp-into-prologue", h("4889fb 55 5d ebfa"), RDI, None, 0, "entry: +1 is a branch target"),
    # ...; jmp +0 (a loop to the entry is fine: the probe at +3 fires once per pass)
    ("jmp-to-entry-ok", h("4889fb 55 5d ebf9"), RDI, None, 3, "push %rbp"),
    # a branch *forward* of the probe does not matter
    ("jmp-past-probe-ok", h("4889fb 55 5d eb00 c3"), RDI, None, 3, "push %rbp"),
    # --- garbage, truncation, limits ---
    ("empty", b"", RDI, None, 0, "entry: no code"),
    ("garbage", h("ffffff"), RDI, None, 0, "entry: undecodable bytes at +0"),
    ("invalid-in-64bit", h("06"), RDI, None, 0, "undecodable"),
    ("truncated-insn", h("4885"), RDI, None, 0, "undecodable"),
    ("truncated-free-5", FREE[:5], RDI, "rdi", 0, "entry: undecodable bytes at +3"),
    ("truncated-free-9", FREE[:9], RDI, "rdi", 0, "entry: no emulated instruction in first 2"),
    ("garbage-after-skip", h("4889fb ffff"), RDI, None, 0, "undecodable bytes at +3"),
    ("max-insns", h("4889fb" * 12 + "55"), RDI, None, 0, "entry: no emulated instruction in first 12"),
]


@pytest.mark.parametrize(
    "code,needed,null_reg,offset,reason", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_choose_offset(code: bytes, needed: frozenset, null_reg, offset: int, reason: str) -> None:
    p = choose_offset(code, needed_regs=needed, null_noop_reg=null_reg)
    assert p.offset == offset, p
    assert reason in p.reason, p


def test_max_insns_is_respected_both_ways() -> None:
    code = h("4889fb" * 12 + "55")
    assert choose_offset(code, needed_regs=RDI, max_insns=13).offset == 36
    assert choose_offset(code, needed_regs=RDI, max_insns=12).offset == 0
    assert choose_offset(h("4889fb 55"), needed_regs=RDI, max_insns=1).offset == 0


def test_rsp_is_always_needed_even_if_not_listed() -> None:
    assert choose_offset(h("4883ec08 55"), needed_regs=frozenset()).offset == 0


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("55", True), ("4154", True), ("4155", True), ("4055", False), ("4855", False), ("6650", False),
        ("90", True), ("6690", True), ("666690", True), ("4190", False), ("f390", False),
        ("0f1f00", True), ("0f1f4000", True), ("0f1f440000", True), ("660f1f440000", True),
        ("0f1f840000000000", True), ("0f1f4800", False), ("662e0f1f840000000000", False),
        ("eb00", True), ("e900000000", True), ("e800000000", True), ("7400", True), ("7f00", True),
        ("0f8400000000", True), ("0f8f00000000", True), ("66e900000000", False), ("3e7400", False),
        ("f2e900000000", True), ("f30f1efa", False), ("ffe0", False), ("c3", False), ("", False),
    ],
)
def test_emulated_opcode_table(raw: str, expected: bool) -> None:
    assert _emulated(bytes.fromhex(raw)) is expected


def test_placement_is_frozen() -> None:
    p = Placement(9, "x")
    with pytest.raises(Exception):
        p.offset = 0  # type: ignore[misc]


def test_describe() -> None:
    free = choose_offset(FREE, needed_regs=RDI, null_noop_reg="rdi")
    assert describe("free", free) == "free+9 (push %rbp, emulated)"
    malloc = choose_offset(MALLOC_HEAD, needed_regs=RDI)
    assert describe("malloc", malloc) == "malloc+0 (push %r12, emulated)"
    bad = choose_offset(h("4889f7 53"), needed_regs=RDI)
    assert describe("f", bad) == "f+0 (mov at +0 writes rdi)"


@settings(max_examples=300, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
@given(code=st.binary(max_size=64), null=st.sampled_from([None, "rdi"]))
def test_never_raises_and_lands_on_an_emulated_boundary(code: bytes, null) -> None:
    p = choose_offset(code, needed_regs=RDI_RSI, null_noop_reg=null)
    assert isinstance(p.reason, str) and p.reason
    assert 0 <= p.offset < max(len(code), 1)
    if p.offset:
        import capstone

        md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
        starts = {i.address: bytes(i.bytes) for i in md.disasm(code, 0)}
        assert p.offset in starts and _emulated(starts[p.offset])


LIBC = "/usr/lib/x86_64-linux-gnu/libc.so.6"


def test_installed_glibc_free() -> None:
    """Same rule against the installed glibc, when it still has the known prologue."""
    if not os.path.exists(LIBC):
        pytest.skip(f"{LIBC} not present")
    from elftools.elf.elffile import ELFFile

    with open(LIBC, "rb") as f:
        elf = ELFFile(f)
        dynsym = elf.get_section_by_name(".dynsym")
        syms = dynsym.get_symbol_by_name("free") if dynsym is not None else None
        if not syms:
            pytest.skip("no dynamic symbol free")
        sym = syms[0]
        offsets = list(elf.address_offsets(sym["st_value"], sym["st_size"]))
        if not offsets:
            pytest.skip("free not mapped by a PT_LOAD segment")
        f.seek(offsets[0])
        code = f.read(sym["st_size"])
    if not code.startswith(h("4885ff 0f84")) or code[9:10] != b"\x55":
        pytest.skip("installed glibc free has a different prologue")
    p = choose_offset(code, needed_regs=RDI, null_noop_reg="rdi")
    assert p.offset == 9, p
