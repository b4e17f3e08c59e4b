"""Pick a cheap uprobe offset inside an allocator function.

Why this exists
---------------
A uprobe replaces one instruction with ``int3``.  When the trap fires, the
x86-64 kernel has to run the displaced instruction somehow.  For a few
instruction kinds it *emulates* the instruction in the trap handler
(arch/x86/kernel/uprobes.c: ``push reg``, ``nop``, ``jmp``/``call rel``,
``jcc rel``); for everything else it *single-steps* a copy in an
execute-out-of-line slot, which costs a second trap.  Measured on this
project's test kernel, a probe on glibc ``free+0`` (``test %rdi,%rdi``,
single-stepped) costs about 11.7 us per call, while ``free+9``
(``push %rbp``, emulated) costs about 0.6 us.  ``free`` is the hottest
function heaptrace traces, so the offset matters.

Moving the probe is only sound when the probe still sees what it would
have seen at the entry: the argument registers it reads, and the return
address at ``[rsp]`` (read by the entry probe, and overwritten by a
uretprobe attached at the same offset).  :func:`choose_offset` walks the
straight-line prologue and skips only instructions that leave those
untouched; when in doubt it answers offset 0, which is always correct,
merely slower.

Note on nops: this module treats ``0x90`` and ``0f 1f /0`` (with optional
``0x66`` prefixes) as emulated, as recent kernels do (``insn_is_nop``).
Older kernels only emulate the exact ``x86_nops[len]`` patterns; there a
probe on another nop form is single-stepped: slower, still correct.

This module is pure: bytes in, :class:`Placement` out.  Reading the ELF
symbol is the caller's job.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Iterable, Optional

import capstone
from capstone import x86 as cs_x86

__all__ = ["Placement", "choose_offset", "describe"]


@dataclass(frozen=True)
class Placement:
    """Where to put the probe and why."""

    offset: int  # bytes from the function start where the probe goes
    reason: str  # one short human line, "entry: ..." or "+N: ..."


# --- register aliasing ---------------------------------------------------

_GPR_ALIASES: dict[str, tuple[str, ...]] = {
    "rax": ("eax", "ax", "al", "ah"),
    "rbx": ("ebx", "bx", "bl", "bh"),
    "rcx": ("ecx", "cx", "cl", "ch"),
    "rdx": ("edx", "dx", "dl", "dh"),
    "rsi": ("esi", "si", "sil"),
    "rdi": ("edi", "di", "dil"),
    "rbp": ("ebp", "bp", "bpl"),
    "rsp": ("esp", "sp", "spl"),
    **{f"r{n}": (f"r{n}d", f"r{n}w", f"r{n}b") for n in range(8, 16)},
}
_TO_FULL: dict[str, str] = {
    alias: full for full, aliases in _GPR_ALIASES.items() for alias in (full, *aliases)
}


def _full(reg: str) -> str:
    """Map a sub-register name (``edi``, ``r8d``, ``sil``) to its 64-bit name."""
    return _TO_FULL.get(reg, reg)


# --- which instructions the kernel emulates --------------------------------

_LEGACY_PREFIXES = frozenset({0xF0, 0xF2, 0xF3, 0x2E, 0x36, 0x3E, 0x26, 0x64, 0x65, 0x66, 0x67})
# uprobe_init_insn()/is_prefix_bad() refuse es/cs/ds/ss/lock prefixes outright.
_BAD_PREFIXES = frozenset({0x26, 0x2E, 0x36, 0x3E, 0xF0})


def _emulated(raw: bytes) -> bool:
    """True if arch/x86/kernel/uprobes.c emulates this instruction (no single-step)."""
    if not raw:
        return False
    # push_setup_xol_ops: 0x50-0x57, length 1, or exactly REX 0x41 + 0x50-0x57.
    if len(raw) == 1 and 0x50 <= raw[0] <= 0x57:
        return True
    if len(raw) == 2 and raw[0] == 0x41 and 0x50 <= raw[1] <= 0x57:
        return True
    i = 0
    prefixes: list[int] = []
    while i < len(raw) and raw[i] in _LEGACY_PREFIXES:
        prefixes.append(raw[i])
        i += 1
    rex = i < len(raw) and 0x40 <= raw[i] <= 0x4F
    op = raw[i + 1 if rex else i:]
    if not op or any(p in _BAD_PREFIXES for p in prefixes):
        return False
    # nop: 0x90 or 0f 1f /0, optionally behind 0x66 prefixes only.
    if not rex and all(p == 0x66 for p in prefixes):
        if op == b"\x90":
            return True
        if len(op) >= 3 and op[0] == 0x0F and op[1] == 0x1F and (op[2] >> 3) & 7 == 0:
            return True
    # branch_setup_xol_ops: jmp/call rel, jcc rel8/rel32; any 0x66 prefix is refused.
    if 0x66 in prefixes:
        return False
    if op[0] in (0xEB, 0xE9, 0xE8) or 0x70 <= op[0] <= 0x7F:
        return True
    return len(op) >= 2 and op[0] == 0x0F and 0x80 <= op[1] <= 0x8F


# --- capstone helpers ------------------------------------------------------

_CONTROL_GROUPS = frozenset({
    capstone.CS_GRP_JUMP, capstone.CS_GRP_CALL, capstone.CS_GRP_RET,
    capstone.CS_GRP_INT, capstone.CS_GRP_IRET, capstone.CS_GRP_BRANCH_RELATIVE,
    capstone.CS_GRP_PRIVILEGE,
})
# Capstone leaves some of these without a group (ud2) or says too little.
_CONTROL_MNEMONICS = frozenset({
    "ud0", "ud1", "ud2", "hlt", "int3", "int1", "int", "into", "syscall",
    "sysenter", "sysexit", "sysret", "ret", "retf", "iret", "iretd", "iretq",
})
# Stack-frame instructions; capstone does not even report rsp as written by enter.
_STACK_MNEMONICS = frozenset({
    "leave", "enter", "pop", "popf", "popfq", "push", "pushf", "pushfq",
})


@functools.lru_cache(maxsize=1)
def _cs() -> capstone.Cs:
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    md.detail = True
    return md


def _branch_target(insn: capstone.CsInsn) -> Optional[int]:
    """Target of a direct relative branch/call, else None."""
    if capstone.CS_GRP_BRANCH_RELATIVE not in insn.groups:
        return None
    for op in insn.operands:
        if op.type == cs_x86.X86_OP_IMM:
            return int(op.imm)
    return None


def _written_regs(insn: capstone.CsInsn) -> Optional[set[str]]:
    """64-bit names of registers the insn writes (explicitly or implicitly); None if unknown."""
    try:
        _, written = insn.regs_access()
    except capstone.CsError:
        return None
    return {_full(insn.reg_name(r)) for r in written}


def _writes_stack_memory(insn: capstone.CsInsn) -> bool:
    """True if an explicit memory operand addressed through rsp is written."""
    for op in insn.operands:
        if op.type == cs_x86.X86_OP_MEM and op.access & capstone.CS_AC_WRITE:
            addr_regs = (op.mem.base, op.mem.index)
            if any(r and _full(insn.reg_name(r)) == "rsp" for r in addr_regs):
                return True
    return False


def _is_null_test(insn: capstone.CsInsn, reg: str) -> bool:
    """``test R,R`` or ``cmp R,0`` on the full 64-bit register R."""
    ops = insn.operands
    if len(ops) != 2:
        return False
    regs = [insn.reg_name(o.reg) for o in ops if o.type == cs_x86.X86_OP_REG]
    if insn.mnemonic == "test":
        return regs == [reg, reg]
    if insn.mnemonic == "cmp":
        imms = [o.imm for o in ops if o.type == cs_x86.X86_OP_IMM]
        return regs == [reg] and imms == [0]
    return False


def _show(insn: capstone.CsInsn) -> str:
    """Short AT&T-flavoured text for the chosen instruction."""
    ops = insn.operands
    if insn.mnemonic == "push" and len(ops) == 1 and ops[0].type == cs_x86.X86_OP_REG:
        return f"push %{insn.reg_name(ops[0].reg)}"
    target = _branch_target(insn)
    if target is not None:
        return f"{insn.mnemonic} to +{target}"
    return insn.mnemonic


def _branch_into(code: bytes, lo: int, hi: int) -> Optional[int]:
    """First direct-branch target in (lo, hi] found by a linear sweep of code."""
    for insn in _cs().disasm(code, 0):  # stops at the first undecodable byte
        target = _branch_target(insn)
        if target is not None and lo < target <= hi:
            return target
    return None


# --- public API --------------------------------------------------------------

def choose_offset(
    code: bytes,
    *,
    needed_regs: frozenset[str],
    null_noop_reg: str | None = None,
    max_insns: int = 12,
) -> Placement:
    """Choose the probe offset for the function whose bytes start at ``code``.

    ``needed_regs`` are the 64-bit registers the probe reads (``rsp`` is
    always added).  ``null_noop_reg`` names an argument whose NULL value makes
    the call a no-op (``"rdi"`` for free): a ``test R,R; je`` early exit on it
    may be stepped over.  Never raises on bad bytes; falls back to offset 0.
    """
    if not code:
        return Placement(0, "entry: no code")
    protected = {_full(r) for r in needed_regs} | {"rsp"}
    skipped: list[str] = []
    prev: Optional[capstone.CsInsn] = None
    walked = 0
    pc = 0
    for insn in _cs().disasm(code, 0, max_insns):
        walked += 1
        pc = insn.address + insn.size
        null_exit = (
            null_noop_reg is not None and prev is not None and insn.mnemonic == "je"
            and _is_null_test(prev, null_noop_reg)
        )
        if null_exit:
            skipped.append("je on NULL arg")
        elif _emulated(bytes(insn.bytes)):
            k = insn.address
            if k == 0:
                return Placement(0, f"entry: {_show(insn)}, emulated")
            target = _branch_into(code, 0, k)
            if target is not None:
                return Placement(0, f"entry: +{target} is a branch target")
            return Placement(k, f"+{k}: {_show(insn)}, emulated (skipped: {', '.join(skipped)})")
        else:
            why = _why_not_skippable(insn, protected)
            if why:
                return Placement(0, f"entry: {insn.mnemonic} at +{insn.address} {why}")
            skipped.append(insn.mnemonic)
        prev = insn
    if walked < max_insns and pc < len(code):
        return Placement(0, f"entry: undecodable bytes at +{pc}")
    return Placement(0, f"entry: no emulated instruction in first {walked}")


def _why_not_skippable(insn: capstone.CsInsn, protected: Iterable[str]) -> str:
    """Empty string if the single-stepped insn can be skipped, else the reason."""
    if insn.mnemonic in _CONTROL_MNEMONICS or _CONTROL_GROUPS.intersection(insn.groups):
        return "transfers control"
    if insn.mnemonic in _STACK_MNEMONICS:
        return "changes the stack"
    if _writes_stack_memory(insn):
        return "writes stack memory"
    written = _written_regs(insn)
    if written is None:
        return "has unknown register effects"
    hit = sorted(written.intersection(protected))
    if hit:
        return "writes " + ",".join(hit)
    return ""


def describe(name: str, p: Placement) -> str:
    """``"free+9 (push %rbp, emulated)"`` for logs and ``--verbose`` output."""
    detail = p.reason.split(": ", 1)[-1].split(" (skipped:", 1)[0]
    return f"{name}+{p.offset} ({detail})"
