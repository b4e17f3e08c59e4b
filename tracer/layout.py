"""The kernel/user contract: constants and struct layouts from bpf/heaptrace.h.

The header is the single source of truth. This module reads its ``#define``
lines and mirrors its structs with :mod:`struct` formats; the decoders turn
the raw bytes of map keys and values into plain tuples. A test checks the
sizes against what bcc compiled, so a field added on one side only fails.
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

BPF_DIR = Path(__file__).resolve().parent.parent / "bpf"
HEADER = BPF_DIR / "heaptrace.h"
PROGRAM = BPF_DIR / "heaptrace.c"
LIFECYCLE_PROGRAM = BPF_DIR / "lifecycle.c"  # compiled after PROGRAM, in one unit
VM_PROGRAM = BPF_DIR / "vmevents.c"  # compiled after LIFECYCLE_PROGRAM


@lru_cache(maxsize=None)
def constants(header: str = str(HEADER)) -> dict[str, int]:
    """Every ``#define NAME <integer>`` of the header (first definition wins)."""
    out: dict[str, int] = {}
    for m in re.finditer(r"^\s*#define\s+(\w+)\s+\(?\s*(\d+)(?:ULL|UL|U|LL)?\s*(?:<<\s*(\d+)\s*)?\)?",
                         Path(header).read_text(), re.M):
        name, val, shift = m.group(1), int(m.group(2)), m.group(3)
        out.setdefault(name, val << int(shift) if shift else val)
    return out


C = constants()
MAX_DEPTH_DEFAULT = C["MAX_DEPTH"]

# struct alloc_key / site_key: {u32 tgid; u32 gen; u64 addr-or-stack}
KEY = struct.Struct("<IIQ")
# struct alloc_info: {u64 size; u32 slot; u32 weight; u64 ts}
ALLOC_INFO = struct.Struct("<QIIQ")
# struct site_val: {s64 live_bytes; u64 alloc_bytes; u64 allocs; u64 frees}
SITE_VAL = struct.Struct("<qQQQ")


# struct vm_event: {u32 tgid; u32 kind; u64 a0..a4; s64 ret; u64 stack; u64 caller}
VM_EVENT = struct.Struct("<II5QqQQ")


@dataclass(frozen=True)
class VmEvent:
    tgid: int
    kind: int
    args: tuple[int, int, int, int, int]
    ret: int
    stack: int
    caller: int


def event_comm(ev: VmEvent) -> str:
    """The process name a VM_EXEC or VM_EXIT event carries (its a0, a1)."""
    raw = struct.pack("<QQ", ev.args[0], ev.args[1]).split(b"\0", 1)[0]
    return raw.decode("utf-8", "surrogateescape")


def decode_vm_event(raw: bytes) -> VmEvent:
    tgid, kind, a0, a1, a2, a3, a4, ret, stack, caller = VM_EVENT.unpack_from(raw)
    return VmEvent(tgid, kind, (a0, a1, a2, a3, a4), ret, stack, caller)


def stack_val(depth: int = MAX_DEPTH_DEFAULT) -> struct.Struct:
    """struct stack_val: {u32 depth; u32 pad; u64 ip[MAX_DEPTH]}."""
    return struct.Struct(f"<II{depth}Q")


LOST_STATS = {
    C["STAT_LOST_ALLOC_MAP_FULL"]: "blocks not tracked (allocation map full: raise --max-allocs)",
    C["STAT_LOST_SITE_MAP_FULL"]: "blocks not charged (site map full: raise --max-sites)",
    C["STAT_LOST_STACK_MAP_FULL"]: "stacks not stored (stack map full: raise --max-sites)",
    C["STAT_LOST_INFLIGHT_FULL"]: "calls not seen (no thread-local storage)",
    C["STAT_LOST_VM_EVENT"]: "mmap/munmap/... events not seen (ring buffer full)",
}


@dataclass(frozen=True)
class SiteCounts:
    live_bytes: int
    live_allocs: int
    alloc_bytes: int
    allocs: int
    frees: int

    def __add__(self, o: "SiteCounts") -> "SiteCounts":
        return SiteCounts(self.live_bytes + o.live_bytes, self.live_allocs + o.live_allocs,
                          self.alloc_bytes + o.alloc_bytes, self.allocs + o.allocs,
                          self.frees + o.frees)


ZERO = SiteCounts(0, 0, 0, 0, 0)


def decode_key(raw: bytes) -> tuple[int, int]:
    """(tgid, addr-or-stack) from an alloc_key or site_key."""
    tgid, _gen, v = KEY.unpack(raw)
    return tgid, v


def decode_owned_key(raw: bytes) -> tuple[int, int, int]:
    """(tgid, gen, addr-or-stack): gen tells a process's incarnations apart
    (a new one after exec, or when its PID is used again)."""
    return KEY.unpack(raw)


def decode_site(raw: bytes) -> SiteCounts:
    live_bytes, alloc_bytes, allocs, frees = SITE_VAL.unpack(raw)
    return SiteCounts(live_bytes, allocs - frees, alloc_bytes, allocs, frees)


def decode_alloc(raw: bytes) -> tuple[int, int, int]:
    """(size, slot, ts_ns) of an alloc_info."""
    size, slot, _pad, ts = ALLOC_INFO.unpack(raw)
    return size, slot, ts


def decode_stack(raw: bytes, depth: int = MAX_DEPTH_DEFAULT) -> tuple[int, ...]:
    """The frames of a stack_val, innermost (the allocator's caller) first."""
    fields = stack_val(depth).unpack(raw)
    n = max(0, min(fields[0], depth))
    return tuple(fields[2:2 + n])

