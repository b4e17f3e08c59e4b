"""The one door to bcc: load the BPF programs, attach probes, read maps.

Nothing else in heaptrace imports bcc. What comes out of here is raw bytes
and integers; ``tracer.layout`` decodes them and the pipeline is pure.
"""
from __future__ import annotations

import ctypes
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator

from . import layout
from .errors import MissingFeature


@dataclass(frozen=True)
class Limits:
    max_depth: int = layout.C["MAX_DEPTH"]
    max_allocs: int = layout.C["MAX_ALLOCS"]
    max_sites: int = layout.C["MAX_SITES"]
    min_size: int | None = None
    max_size: int | None = None

    def cflags(self) -> list[str]:
        flags = [
            f"-I{layout.BPF_DIR}",
            f"-DMAX_DEPTH={self.max_depth}",
            f"-DMAX_ALLOCS={self.max_allocs}",
            f"-DMAX_SITES={self.max_sites}",
            f"-DHT_PAGE_SIZE={os.sysconf('SC_PAGE_SIZE')}",
            "-Wno-macro-redefined",
        ]
        if self.min_size is not None:
            flags.append(f"-DMIN_SIZE={self.min_size}ULL")
        if self.max_size is not None:
            flags.append(f"-DMAX_SIZE={self.max_size}ULL")
        return flags


@dataclass(frozen=True)
class Probe:
    """One uprobe: a BPF function at an ELF virtual address of a file."""

    path: str          # the file as heaptrace can open it (host view)
    vaddr: int         # ELF virtual address (symbol value + offset)
    fn: str            # BPF function name in bpf/heaptrace.c
    pid: int           # -1: every process mapping the file
    ret: bool = False  # a return probe


def _quietly(fn, *args) -> None:
    try:
        fn(*args)
    except Exception:
        pass  # bpf.cleanup() retries what is left


def _import_bcc():
    try:
        import bcc  # noqa: F401  (the only import of bcc in heaptrace)
    except ImportError as e:  # pragma: no cover - depends on the host
        raise MissingFeature(
            "bcc's Python module is not importable: install python3-bpfcc and run heaptrace "
            "from a venv made with --system-site-packages (scripts/bootstrap does both)") from e
    return bcc


class Kernel:
    """The loaded BPF object. Use as a context manager: leaving detaches all."""

    def __init__(self, limits: Limits, program: str | os.PathLike = layout.PROGRAM):
        bcc = _import_bcc()
        self.limits = limits
        self._stack = layout.stack_val(limits.max_depth)
        try:
            self.bpf = bcc.BPF(src_file=str(program).encode(), cflags=limits.cflags())
        except Exception as e:
            raise MissingFeature(
                f"could not compile heaptrace's BPF programs ({e}). Most often the kernel "
                f"headers are missing: run scripts/bootstrap, or install "
                f"linux-headers-{os.uname().release}") from e
        self._attached: list[Probe] = []
        self.allocs = self.bpf["allocs"]
        self.sites = self.bpf["sites"]
        self.stacks = self.bpf["stacks"]
        self.stats_map = self.bpf["stats"]

    # -- probes ------------------------------------------------------------
    def attach(self, p: Probe) -> None:
        try:
            if p.ret:
                self.bpf.attach_uretprobe(name=p.path.encode(), addr=p.vaddr, fn_name=p.fn.encode(), pid=p.pid)
            else:
                self.bpf.attach_uprobe(name=p.path.encode(), addr=p.vaddr, fn_name=p.fn.encode(), pid=p.pid)
        except Exception as e:
            raise MissingFeature(f"could not attach a uprobe to {p.path} at {p.vaddr:#x} "
                                 f"for pid {p.pid}: {e}") from e
        self._attached.append(p)

    @property
    def attached(self) -> list[Probe]:
        return list(self._attached)

    def close(self) -> None:
        """Detach every probe and unload every program. Safe to call twice."""
        bpf = getattr(self, "bpf", None)
        if bpf is None:
            return
        self.bpf = None
        try:
            # Each uprobe's release waits for an RCU grace period (~0.1 s on
            # this kernel): release them side by side, not one after another.
            events = list(bpf.uprobe_fds)
            with ThreadPoolExecutor(max(1, min(32, len(events)))) as pool:
                list(pool.map(lambda ev: _quietly(bpf.detach_uprobe_event, ev), events))
        finally:
            bpf.cleanup()  # whatever is left, and the programs and maps

    def __enter__(self) -> "Kernel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- maps --------------------------------------------------------------
    @staticmethod
    def _items(table) -> Iterator[tuple[bytes, bytes]]:
        try:
            it = list(table.items_lookup_batch())
        except Exception:  # kernels without batch ops for this map type
            it = list(table.items())
        for k, v in it:
            yield bytes(k), bytes(v)

    def read_sites(self) -> list[tuple[bytes, bytes]]:
        """Every (site_key, site_val): O(sites), not O(live blocks)."""
        return list(self._items(self.sites))

    def read_allocs(self) -> Iterator[tuple[bytes, bytes]]:
        """Every live block: O(live blocks). Only --min-age needs this."""
        return self._items(self.allocs)

    def read_stack(self, tgid: int, stack: int) -> bytes | None:
        key = self.stacks.Key.from_buffer_copy(layout.KEY.pack(tgid, 0, stack))
        try:
            return bytes(self.stacks[key])
        except KeyError:
            return None

    def stats(self) -> list[int]:
        """Per-CPU counters summed, indexed by the STAT_* constants."""
        out = []
        for i in range(layout.C["STAT_NR"]):
            vals = self.stats_map[ctypes.c_int(i)]
            out.append(int(sum(vals)))
        return out

    def forget_process(self, tgid: int) -> int:
        """Drop a finished process's sites and stacks from the kernel maps."""
        n = 0
        for table in (self.sites, self.stacks):
            for k in [k for k in table.keys() if k.tgid == tgid]:
                try:
                    del table[k]
                    n += 1
                except KeyError:
                    pass
        return n
