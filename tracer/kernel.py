"""The one door to bcc: load the BPF programs, attach probes, read maps.

Nothing else in heaptrace imports bcc. What comes out of here is raw bytes
and integers; ``tracer.layout`` decodes them and the pipeline is pure.
"""
from __future__ import annotations

import ctypes
import errno
import itertools
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator

from . import layout
from .errors import MissingFeature


@dataclass(frozen=True)
class Limits:
    max_depth: int = layout.C["MAX_DEPTH"]
    max_allocs: int = layout.C["MAX_ALLOCS"]
    max_sites: int = layout.C["MAX_SITES"]
    min_size: int | None = None
    max_size: int | None = None
    track_age: bool = False  # stamp each block with its time (--min-age)
    mappings: bool = True    # VM syscall tracepoints (--no-mappings: off)
    all_processes: bool = False  # --all: uprobes for every process, the targets map says which
    default_mode: int = layout.C["MODE_OFF"]  # of a process the front end set no mode for

    def cflags(self) -> list[str]:
        flags = [
            f"-I{layout.BPF_DIR}",
            f"-DMAX_DEPTH={self.max_depth}",
            f"-DMAX_ALLOCS={self.max_allocs}",
            f"-DMAX_SITES={self.max_sites}",
            f"-DHT_PAGE_SIZE={os.sysconf('SC_PAGE_SIZE')}",
            f"-DHT_NR_CPUS={len(_possible_cpus())}",
            "-Wno-macro-redefined",
        ]
        if self.min_size is not None:
            flags.append(f"-DMIN_SIZE={self.min_size}ULL")
        if self.max_size is not None:
            flags.append(f"-DMAX_SIZE={self.max_size}ULL")
        if self.track_age:
            flags.append("-DTRACK_AGE")
        if self.all_processes:
            flags.append("-DALL_PROCESSES")
        flags.append(f"-DDEFAULT_MODE={int(self.default_mode)}")
        return flags

    def sources(self) -> tuple:
        """The BPF sources compiled after heaptrace.c, in one unit."""
        return (layout.LIFECYCLE_PROGRAM, layout.VM_PROGRAM) if self.mappings else (layout.LIFECYCLE_PROGRAM,)


@dataclass(frozen=True)
class Probe:
    """One uprobe: a BPF function at an ELF virtual address of a file."""

    path: str          # the file as heaptrace can open it (host view)
    vaddr: int         # ELF virtual address (symbol value + offset)
    fn: str            # BPF function name in bpf/heaptrace.c
    pid: int           # -1: every process mapping the file
    ret: bool = False  # a return probe


def _possible_cpus() -> list[int]:
    """CPU ids from /sys/devices/system/cpu/possible ("0-1", "0,2-5")."""
    try:
        with open("/sys/devices/system/cpu/possible") as f:
            text = f.read().strip()
    except OSError:
        return list(range(os.cpu_count() or 1))
    cpus: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus


UPROBE_EVENTS = ("/sys/kernel/tracing/uprobe_events", "/sys/kernel/debug/tracing/uprobe_events")
# A uprobe event bcc made in tracefs: "p:uprobes/p__lib_libc.so.6_0x9a0f0_1234_bcc_5678 /lib/libc.so.6:0x..."
# (bcc's event name, then "_bcc_" and the PID of the process that made it).
_BCC_UPROBE = re.compile(r"^[pr]:(?P<event>[^/\s]+/[pr]_\S*_bcc_(?P<pid>\d+))\s")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def remove_stale_uprobe_events(files: tuple[str, ...] = UPROBE_EVENTS) -> list[str]:
    """Remove the uprobe events a bcc process left in tracefs when it died
    without detaching (SIGKILL); return their names.

    bcc attaches uprobes with perf_event_open (the kernel's uprobe PMU):
    those die with the process and never show here. Only on a kernel
    without the PMU (before 4.17) does bcc fall back to creating named
    events in uprobe_events, and those outlive a process killed with
    SIGKILL. An event named by bcc whose creator PID no longer runs is left
    over; the kernel refuses (EBUSY) to remove one that is in use."""
    for path in files:
        try:
            with open(path) as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        stale = [m.group("event") for m in map(_BCC_UPROBE.match, lines)
                 if m and not _alive(int(m.group("pid")))]
        removed = []
        for event in stale:
            try:
                # Never O_TRUNC: opening uprobe_events with it removes every
                # uprobe event on the host. (Python's "a" seeks, which tracefs
                # refuses: os.open.)
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
                try:
                    os.write(fd, f"-:{event}\n".encode())
                finally:
                    os.close(fd)
                removed.append(event)
            except OSError:
                pass  # in use, or already gone
        return removed
    return []


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

    def __init__(self, limits: Limits, program: str | os.PathLike = layout.PROGRAM,
                 extra: tuple[str | os.PathLike, ...] | None = None):
        """Compile ``program`` followed by ``extra`` sources as one unit (bcc
        generates tracepoint argument structs only for the text it is given,
        not for included files)."""
        bcc = _import_bcc()
        self.limits = limits
        if extra is None:
            extra = limits.sources()
        text = "\n".join(open(p).read() for p in (program, *extra))
        try:
            self.bpf = bcc.BPF(text=text.encode(), cflags=limits.cflags())
        except Exception as e:
            raise MissingFeature(
                f"could not compile heaptrace's BPF programs ({e}). Most often the kernel "
                f"headers are missing: run scripts/bootstrap, or install "
                f"linux-headers-{os.uname().release}") from e
        self._attached: list[Probe] = []
        self._ncpus = len(_possible_cpus())

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
            # Each uprobe's release waits for an RCU tasks-trace grace period
            # (~0.1 s on this kernel). The kernel mostly serialises them;
            # releasing from several threads still saves ~20% (1.9 -> 1.5 s
            # for 17 probes, measured).
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
    def _map(self, name: str):
        return self.bpf[name.encode()]

    #: Entries read per batch syscall: bounded buffers (bcc's own batch
    #: reader allocates max_entries of each: 160 MiB for allocs).
    BATCH = 16384

    @classmethod
    def _batches(cls, table) -> Iterator[tuple[bytes, bytes, int]]:
        """The map's (keys, values, n) as raw bytes, BATCH entries a time,
        in reused buffers: memory bounded whatever the map holds. Raises
        OSError if the kernel refuses the first batch (no batch ops for
        this map type); the map may change between batches, as with any
        walk of a live map."""
        from bcc.libbcc import lib
        ks, vs = ctypes.sizeof(table.Key), ctypes.sizeof(table.Leaf)
        chunk = max(1, min(cls.BATCH, table.max_entries))
        keys = (ctypes.c_char * (ks * chunk))()
        vals = (ctypes.c_char * (vs * chunk))()
        # Where the kernel left off: a hash bucket (u32), room for more.
        token = ctypes.cast((ctypes.c_uint32 * 4)(), ctypes.POINTER(ctypes.c_uint32))
        first = True
        while True:
            count = ctypes.c_uint32(chunk)
            res = lib.bpf_lookup_batch(table.map_fd, None if first else token, token,
                                       ctypes.byref(keys), ctypes.byref(vals), ctypes.byref(count))
            err = ctypes.get_errno()
            if res != 0 and err != errno.ENOENT:
                raise OSError(err, f"BPF_MAP_LOOKUP_BATCH: {os.strerror(err)}")
            n = count.value
            if n:
                yield keys.raw[:n * ks], vals.raw[:n * vs], n
            if res != 0 or n == 0:   # ENOENT: the last batch
                return
            first = False

    @classmethod
    def _items(cls, table) -> Iterator[tuple[bytes, bytes]]:
        ksize, vsize = ctypes.sizeof(table.Key), ctypes.sizeof(table.Leaf)
        batches = cls._batches(table)
        try:
            first = next(batches, None)
        except OSError:  # kernels without batch ops for this map type
            for k, v in list(table.items()):
                # bcc hands scalar keys and values over as Python ints
                yield (k.to_bytes(ksize, "little") if isinstance(k, int) else bytes(k),
                       v.to_bytes(vsize, "little") if isinstance(v, int) else bytes(v))
            return
        if first is None:
            return
        for keys, vals, n in itertools.chain([first], batches):
            for i in range(n):
                yield keys[i * ksize:(i + 1) * ksize], vals[i * vsize:(i + 1) * vsize]

    def _slots_used(self) -> int:
        """One past the highest counters slot handed out (per-CPU counters)."""
        nexts = self._map("slot_next")[ctypes.c_int(0)]
        top = 0
        for cpu, n in enumerate(nexts):
            if n:
                top = max(top, (n - 1) * self._ncpus + cpu + 1)
        return top

    def _read_counts(self, n: int) -> bytes:
        """The first n slots of the counts array, in one batch syscall."""
        from bcc.libbcc import lib
        table = self._map("counts")
        size = ctypes.sizeof(table.Leaf)
        if n == 0:
            return b""
        keys = (ctypes.c_uint32 * n)()
        vals = (ctypes.c_char * (size * n))()
        count = ctypes.c_uint32(n)
        out = ctypes.c_uint32(0)
        res = lib.bpf_lookup_batch(table.map_fd, None, ctypes.byref(out), ctypes.byref(keys),
                                   ctypes.byref(vals), ctypes.byref(count))
        if res != 0 and ctypes.get_errno() not in (0, errno.ENOENT):
            # No batch support: one lookup per slot.
            return b"".join(bytes(table[ctypes.c_int(i)]) for i in range(n))
        return bytes(vals)[: count.value * size]

    def read_sites(self) -> list[tuple[bytes, int, bytes]]:
        """Every (site_key, slot, site_val): O(sites), not O(live blocks)."""
        index = [(k, int.from_bytes(v, "little")) for k, v in self._items(self._map("sites"))]
        raw = self._read_counts(self._slots_used())
        size = layout.SITE_VAL.size
        return [(k, slot, raw[slot * size:(slot + 1) * size]) for k, slot in index
                if (slot + 1) * size <= len(raw)]

    def read_allocs(self) -> Iterator[tuple[bytes, bytes]]:
        """Every live block: O(live blocks). Only --min-age needs this."""
        return self._items(self._map("allocs"))

    def read_stack(self, tgid: int, stack: int) -> bytes | None:
        stacks = self._map("stacks")
        key = stacks.Key.from_buffer_copy(layout.KEY.pack(tgid, 0, stack))
        try:
            return bytes(stacks[key])
        except KeyError:
            return None

    def forget_stacks(self, keys: list[tuple[int, int]]) -> None:
        """Delete stored stacks, by (tgid, stack hash): those of processes
        that ended (the stacks map would fill with them otherwise)."""
        stacks = self._map("stacks")
        for tgid, stack in keys:
            try:
                del stacks[stacks.Key.from_buffer_copy(layout.KEY.pack(tgid, 0, stack))]
            except KeyError:
                pass

    def add_target(self, tgid: int, mode: int = layout.C["MODE_FULL"]) -> None:
        """Set what is traced of this process (MODE_*): with -p/-c, let the
        VM tracepoints see it; with --all, also the uprobes."""
        targets = self._map("targets")
        targets[targets.Key(tgid)] = targets.Leaf(mode)

    def gens(self) -> dict[int, int]:
        """Each process's current incarnation (tgid -> gen), for the
        processes forked or exec'd since the session began; the others
        are incarnation 0."""
        return {int.from_bytes(k, "little"): int.from_bytes(v, "little")
                for k, v in self._items(self._map("gens"))}

    def retire(self, sites: list[tuple[bytes, int]]) -> None:
        """Forget sites of processes that ended (exited, or exec'd another
        program): their (site_key, slot) pairs. With --all each slot is
        zeroed and handed back to the kernel to be used again."""
        table, counts, free = self._map("sites"), self._map("counts"), self._map("free_slots")
        zero = counts.Leaf()
        for key, slot in sites:
            try:
                del table[table.Key.from_buffer_copy(key)]
            except KeyError:
                continue  # already gone: its slot too
            if not self.limits.all_processes:
                continue  # -p/-c: a stale block may still charge it (see BLOCK_GEN): never used again
            counts[ctypes.c_int(slot)] = zero
            try:
                free.push(ctypes.c_uint32(slot))
            except Exception:
                pass  # the queue is full: the slot stays unused

    def sweep_allocs(self, dead: set[tuple[int, int]]) -> int:
        """Delete the block records of processes that ended, by (tgid, gen):
        blocks they never freed, which no free can match any more. O(live
        blocks), in batches of raw keys (no object per block): done now and
        then, not every interval. The number deleted."""
        from bcc.libbcc import lib
        table = self._map("allocs")
        owners = {tgid | gen << 32 for tgid, gen in dead}   # a key's first 8 bytes
        ks = ctypes.sizeof(table.Key)   # layout.KEY: tgid, gen, addr
        step = ks // 8
        doomed = bytearray()
        for keys, _vals, n in self._batches(table):
            words = memoryview(keys).cast("Q")
            for i in range(0, n * step, step):
                if words[i] in owners:
                    doomed += keys[i * 8:i * 8 + ks]
        total = len(doomed) // ks
        chunk = self.BATCH
        for i in range(0, total, chunk):
            part = bytes(doomed[i * ks:(i + chunk) * ks])
            count = ctypes.c_uint32(len(part) // ks)
            buf = ctypes.create_string_buffer(part, len(part))
            if lib.bpf_delete_batch(table.map_fd, ctypes.byref(buf), ctypes.byref(count)) == 0:
                continue
            # No batch deletion, or a key already gone (freed meanwhile):
            # the rest one at a time.
            for j in range(count.value * ks, len(part), ks):
                try:
                    del table[table.Key.from_buffer_copy(part, j)]
                except KeyError:
                    pass
        return total

    def open_vm_events(self, callback: Callable[[bytes], None]) -> None:
        """Each VM syscall event, as raw struct vm_event bytes, to callback."""
        def on_event(_ctx, data, size):
            callback(ctypes.string_at(data, size))
            return 0
        self._vm_callback = on_event  # keep alive: bcc holds only a C pointer
        self._map("vm_events").open_ring_buffer(on_event)

    def poll_vm_events(self) -> None:
        """Hand every pending VM syscall event to the callback, now."""
        if getattr(self, "_vm_callback", None) is not None:
            self.bpf.ring_buffer_consume()

    def stats(self) -> list[int]:
        """Per-CPU counters summed, indexed by the STAT_* constants."""
        stats = self._map("stats")
        return [int(sum(stats[ctypes.c_int(i)])) for i in range(layout.C["STAT_NR"])]
