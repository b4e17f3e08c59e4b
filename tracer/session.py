"""A tracing session: attach, drain every interval, show, write, detach.

The session owns the side effects (kernel, /proc, clock, signals, files);
everything between the drain and the output is the pure pipeline of
``tracer.model``. Detaching is unconditional: whatever ends the session (the
count, a signal, the targets' exit, a full disk, a bug), the CSVs are closed,
every probe is detached and a program started with -c is ended, each step
even when an earlier one failed, before heaptrace says why it stopped.
"""
from __future__ import annotations

import errno
import gc
import os
import re
import signal
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable

from . import budget, diagnose, launch, layout, release, targets
from .allprocs import AllProcesses, Filters
from .breakdown import HeapReport, Memory, breakdown, heap_rss, summarize
from .census import HEAP_MAX_SIZE, census_process, mmapped_chunks
from .elfsyms import ElfError
from .errors import MissingFeature, OutputError, TargetError
from .exporters import processes_csv
from .exporters.processes_csv import ProcessesCsv
from .exporters.sites_csv import SitesCsv
from .kernel import Kernel, Limits, remove_stale_uprobe_events
from .model import ResolvedStack, Snapshot, apply_min_age, build_snapshot, resolve_stack
from .procmaps import ProcessGone, read_comm, read_maps, read_rss_anon, read_smaps_rss, real_host_path
from .symbolize import Symbolizer
from .vmmap import Region, is_error
from .vmtrack import MappingTracker
from .views import plain
from .views.fmt import safe

_MIN_STEP = timedelta(milliseconds=2)
PROT_EXEC = 4
STAT_NAMES = {layout.C["STAT_UNKNOWN_FREE"]: "unknown_frees", layout.C["STAT_FAILED_ALLOC"]: "failed_allocs"}


@dataclass
class Options:
    pids: list[int] = field(default_factory=list)
    command: list[str] | None = None
    interval: float = 1.0
    count: int | None = None
    duration: float | None = None
    top: int = 10
    min_age: float | None = None
    csv: str | None = None
    plain: bool = False
    verbose: bool = False
    limits: Limits = field(default_factory=Limits)
    all_processes: bool = False   # --all
    filters: Filters = field(default_factory=Filters)
    kernel_only: bool = False     # --kernel-only: no uprobes
    budget: float = 0.05          # --all: share of a process's CPU its probes may take (0: no limit)


#: --all: exited processes kept with their final numbers (the oldest beyond
#: are forgotten, in the kernel too: their sites' slots are used again).
MAX_EXITED = 100
#: --all: per-process breakdowns (smaps, census) made per interval at most;
#: the others keep their last one. They take at most BREAKDOWN_SHARE of a
#: core; one whose live bytes did not change is made again after
#: REFRESH_INTERVALS.
BREAKDOWNS_PER_INTERVAL = 8
BREAKDOWN_SHARE = 0.01
REFRESH_INTERVALS = 300
#: Ended incarnations whose unfreed blocks wait in the ``allocs`` map to be
#: swept: a sweep (O(live blocks)) is due once SWEEP_DEAD of them are known
#: and SWEEP_SPACING times the last sweep's duration has passed since it
#: ended; at once when SWEEP_DEAD_MAX are known or their blocks fill a tenth
#: of the map. Bounds what the session remembers of ended processes however
#: long it runs (20 exits a second: a sweep every ~100 s).
SWEEP_DEAD = 2_048
SWEEP_DEAD_MAX = 20_000
SWEEP_SPACING = 10


def sweep_due(dead: int, stale: int, max_allocs: int, now: float, next_ok: float) -> bool:
    """Whether to sweep the blocks of ``dead`` ended incarnations (``stale``
    blocks about) out of an ``allocs`` map of ``max_allocs`` entries now."""
    if dead == 0:
        return False
    if stale > max_allocs // 10 or dead > SWEEP_DEAD_MAX:
        return True
    return dead >= SWEEP_DEAD and now >= next_ok


def _stat_fields(pid: int) -> list[bytes] | None:
    """/proc/PID/stat after the command name (which may hold spaces and ')')."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rfind(b")") + 2:].split()


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat: tells a process from a later one with its PID."""
    f = _stat_fields(pid)
    return f[19].decode() if f and len(f) > 19 else None


@dataclass
class _Census:
    """The last heap census of a process and what it was taken against."""

    report: HeapReport
    probe_live: int      # the probes' malloc live bytes then
    events: int          # allocator VM events seen then
    layout: tuple        # the heaps' (start, end, rss) then
    done: float          # time.monotonic() when it ended


# A census is taken again once the heap changed, but no more often than every
# CENSUS_SPACING times its own duration (a huge heap takes seconds to walk).
CENSUS_SPACING = 10
# Share of one core that applying VM events may take (a program calling mmap
# hundreds of thousands of times a second would otherwise take a whole core).
VM_CPU_SHARE = 0.2


def _log(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


# -- TEST-ONLY fault injection ------------------------------------------------
# Inert unless the environment sets HEAPTRACE_FAULT=POINT:N; then the Nth call
# of _fault(POINT) raises, as a bug at that point would (tests/integration/
# test_faults.py). Points: "drain" (the start of each interval's drain).
_FAULT_CALLS: dict[str, int] = {}


def _fault(point: str) -> None:
    spec = os.environ.get("HEAPTRACE_FAULT")
    if not spec or spec.partition(":")[0] != point:
        return
    _FAULT_CALLS[point] = _FAULT_CALLS.get(point, 0) + 1
    if str(_FAULT_CALLS[point]) == spec.partition(":")[2]:
        raise RuntimeError(f"fault injected by HEAPTRACE_FAULT={spec}")


# -- why a target ended ---------------------------------------------------------
_OOM_KILL = re.compile(rb"Killed process (\d+) \(")


class _KernelLog:
    """Kernel log records written since the session began (/dev/kmsg): the
    OOM killer names each process it kills there. Unreadable (no root, a
    container without it): nothing is known, nothing fails."""

    def __init__(self):
        self.oom_killed: set[int] = set()
        try:
            self.fd: int | None = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            self.fd = None
            return
        try:
            os.lseek(self.fd, 0, os.SEEK_END)
        except OSError:
            self.close()

    def poll(self) -> None:
        for _ in range(100_000):  # one record per read
            if self.fd is None:
                return
            try:
                rec = os.read(self.fd, 8192)
            except BrokenPipeError:
                continue  # records overwritten before they were read: go on after them
            except OSError:
                return    # EAGAIN: nothing more
            if not rec:
                return
            m = _OOM_KILL.search(rec)
            if m:
                self.oom_killed.add(int(m.group(1)))

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _how_it_ended(status: int | None, oom: bool) -> str:
    """'was killed by SIGKILL', 'exited with status 3', ... (a wait status)."""
    if oom:
        return "was killed by the kernel's OOM killer (out of memory; dmesg tells more)"
    if status is None:
        return "exited"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return f"was killed by {name}"
    if os.WIFEXITED(status) and os.WEXITSTATUS(status):
        return f"exited with status {os.WEXITSTATUS(status)}"
    return "exited"


# -- the CSVs: a failed write keeps every finished interval -----------------------
def _disk_error(path: str, e: OSError, kept: str) -> OutputError:
    why = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
           errno.EFBIG: "the file is too large for its file system"}.get(e.errno)
    cause = f"{why} ({e.strerror})" if why else (e.strerror or str(e))
    return OutputError(f"writing {safe(path)} failed: {cause}; {kept}")


def _cut(path: str, size: int, existed: bool) -> None:
    """Give a CSV back the size it had (or remove it, if heaptrace made it)."""
    from .outfile import open_fd
    try:
        fd = open_fd(path, append=True)
    except Exception:
        return
    try:
        if existed:
            os.ftruncate(fd, size)
        else:
            os.unlink(path)
    except OSError:
        pass
    finally:
        os.close(fd)


def _open_csv(cls, path: str):
    """A CSV writer; a file that cannot be started (a full disk) is left as it
    was and the error names it."""
    try:
        st = os.stat(path)
        size, existed = st.st_size, True
    except OSError:
        size, existed = 0, False
    try:
        return cls(path)
    except OSError as e:
        error = _disk_error(path, e, "nothing was traced")  # holds no reference to e
    # The half-made writer went with the exception (its file closed after one
    # more flush, which may have written part of the header): cut the file
    # back to what it was.
    gc.collect()
    _cut(path, size, existed)
    raise error


def _discard(w) -> None:
    """Close a CSV writer without writing what it still buffers: its file
    descriptor is pointed at /dev/null first."""
    try:
        null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.dup2(null, w.f.fileno())
        finally:
            os.close(null)
        w.close()
    except (OSError, ValueError):
        pass


class Session:
    def __init__(self, opts: Options, kernel_factory: Callable[[Limits], Kernel] = Kernel):
        self.o = opts
        self.kernel_factory = kernel_factory
        self.stop = threading.Event()
        self.stop_reason = ""
        self.symbols = Symbolizer()
        self.resolved: dict[tuple[int, int], ResolvedStack] = {}
        self.comms: dict[int, str] = {}
        self.started: dict[int, str | None] = {}
        self.exited: set[int] = set()
        self.alloc_modules: dict[int, set[str]] = {}
        self._realpaths: dict[tuple[int, str], str] = {}
        self.mappings = MappingTracker(os.sysconf("SC_PAGE_SIZE"))
        self._vm_raw: list[bytes] = []
        self.child: int | None = None
        self.child_status: int | None = None
        self.prev: Snapshot | None = None
        self.history: deque[Snapshot] = deque(maxlen=diagnose.WINDOW)
        self.census: dict[int, _Census] = {}
        self.glibc: set[int] = set()          # targets whose malloc is glibc's (census)
        self.memory: dict[int, Memory] = {}   # last breakdown of each target
        self.exit_seen: set[int] = set()      # targets whose exit the kernel reported
        self.kernel: Kernel | None = None
        self.csv: list = []                             # the open CSV writers
        self._released = False                          # the -c program was let run
        self._exiting: dict[int, float] = {}            # exit seen, not yet a zombie: since when
        self._klog: _KernelLog | None = None
        self._owners: dict[tuple[int, int], str] = {}   # (pid, caller) -> owner
        self._vm_next = 0.0                             # when to empty the ring buffer next
        self._alloc_files: set[str] = set()             # --all: allocator files probed (host paths)
        self._breakpoints: list[release.Breakpoint] = []  # --all: where the probes sit, per file
        self.modes: dict[int, str] = {}                 # --all: processes moved by the budget
        self._stuck: set[int] = set()                   # --all: sampled, not to be released
        self._cpu: dict[int, tuple[int, float]] = {}    # --all: (CPU ticks, when) at the last look
        self.everyone: AllProcesses | None = (AllProcesses(opts.filters, os.getpid())
                                              if opts.all_processes else None)
        self.pids: list[int] = []                       # the processes of the session so far
        self.cur_gen: dict[int, int] = {}               # tgid -> incarnation shown
        self.exit_order: deque[int] = deque()           # --all: exited processes, oldest first
        self._measured: dict[int, tuple] = {}           # --all: pid -> (live bytes, interval) of its breakdown
        self._bd_next = 0.0                             # --all: when breakdowns may be made again
        self._n = 0                                     # intervals drained
        self._dead: set[tuple[int, int]] = set()        # (tgid, gen) retired since the last sweep
        self._stack_keys: dict[int, set[int]] = {}      # --all: stacks stored for each process
        self._execd: set[int] = set()                   # exec'd since the last drain
        self._early_exits: dict[int, int] = {}          # --all: exited before first seen -> interval
        self._check_files: set[int] = set()             # --all: mapped an executable file this tick
        self._stale = 0                                 # their blocks still recorded (about)
        self._sweep_next = 0.0                          # when a sweep may be due again (SWEEP_SPACING)
        self._event_comm: dict[int, str] = {}           # names the exec/exit events carried

    # -- signals -------------------------------------------------------------
    def _on_signal(self, signum, _frame) -> None:
        self.stop_reason = signal.Signals(signum).name
        self.stop.set()

    def _install_signals(self) -> dict:
        old = {}
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            if s == signal.SIGHUP and signal.getsignal(s) == signal.SIG_IGN:
                continue  # started with nohup: keep ignoring hang-ups
            old[s] = signal.signal(s, self._on_signal)
        return old

    # -- set-up --------------------------------------------------------------
    def _plans(self) -> list[targets.Plan]:
        plans = []
        if self.everyone:
            return plans  # --all: see _attach_all
        if self.o.command:
            libs = targets.libraries_of_command(self.o.command[0])
            self.child = launch.spawn_stopped(self.o.command)
            try:
                plans.append(targets.plan(self.child, libs))
            except Exception:
                self._kill_child()
                raise
        for pid in self.o.pids:
            plans.append(targets.plan(pid, targets.libraries_of_pid(pid)))
        return plans

    def _attach(self, kernel: Kernel, plans: list[targets.Plan]) -> None:
        for pl in plans:
            self.alloc_modules[pl.pid] = {os.path.realpath(lib.open_path) for lib in pl.libraries}
            if any(os.path.basename(lib.path).startswith(("libc.so", "libc-")) for lib in pl.libraries):
                self.glibc.add(pl.pid)
            self.started[pl.pid] = _start_time(pl.pid)
            self.comms[pl.pid] = read_comm(pl.pid) or "?"
            if self.o.limits.mappings:
                kernel.add_target(pl.pid)
                self._seed_mappings(pl.pid)
            for pp in pl.probes:
                if self.stop.is_set():
                    return  # a signal during start-up: attach no more
                if self.o.verbose and not pp.probe.ret:
                    alias = f" (also {', '.join(pp.aliases)})" if pp.aliases else ""
                    _log(f"heaptrace: pid {pl.pid}: {os.path.basename(pp.probe.path)} {pp.reason}{alias}")
                kernel.attach(pp.probe)

    def _attach_all(self, kernel: Kernel) -> None:
        """--all: a mode for heaptrace itself and the processes a filter
        names, then the probes, once per allocator file, for every process."""
        e = self.everyone
        modes, traced = e.start()
        for pid, mode in modes.items():
            kernel.add_target(pid, mode)
        for pid in traced:
            self._track(pid)
            if self.stop.is_set():
                return

    def _attach_file(self, kernel: Kernel, lib: targets.Library) -> None:
        """Probes on one allocator file, for every process mapping it. A file
        that cannot be probed (gone, unreadable, refused) is named and left
        out; the session goes on with the others."""
        self._alloc_files.add(os.path.realpath(lib.open_path))
        try:
            elf = targets._elf(lib.open_path)
            planned = targets.plan_library(lib, -1)
            for pp in planned:
                if self.o.verbose and not pp.probe.ret:
                    _log(f"heaptrace: {lib.path}: {pp.reason}")
                kernel.attach(pp.probe)
            points = {elf.file_offset(pp.probe.vaddr) for pp in planned}
            with open(lib.open_path, "rb") as f:  # where the kernel puts its breakpoints
                for off in sorted(points):
                    f.seek(off)
                    if lib.identity is not None:
                        self._breakpoints.append(release.Breakpoint(lib.identity, off, f.read(1)))
        except (OSError, ElfError, MissingFeature) as e:
            _log(f"heaptrace: {safe(lib.path)} (an allocator file) cannot be probed: {safe(str(e))}; "
                 "the processes using it are not traced")

    def _track(self, pid: int) -> None:
        """--all: a process joins the session (seen at start, or first seen
        allocating or mapping)."""
        if pid in self.started and pid not in self.exited:
            return
        self.pids.append(pid)
        if self._early_exits.pop(pid, None) is not None:  # it ended before it was first seen
            self.exit_seen.add(pid)
            self.exited.add(pid)
            self.exit_order.append(pid)
        self.started[pid] = _start_time(pid)
        self.comms[pid] = read_comm(pid) or self._event_comm.get(pid) or self.comms.get(pid, "?")
        try:
            maps = read_maps(pid)  # once, for the three below
        except (ProcessGone, PermissionError):
            return
        self.symbols.refresh(pid, maps)
        if self.o.limits.mappings:
            self._seed_mappings(pid, maps=maps)
        for lib in self.everyone.new_files(pid, maps):  # a container's own libc, say
            if not self.o.kernel_only:
                self._attach_file(self.kernel, lib)

    def _forget(self, *pids: int) -> None:
        """--all: drop what the session knows of ended processes (a PID
        that now names another one, or the oldest exited ones kept)."""
        for pid in pids:
            self._forget_one(pid)
        gone = set(pids)
        stacks = [(pid, st) for pid in gone for st in self._stack_keys.pop(pid, ())]
        if stacks and self.kernel is not None:
            self.kernel.forget_stacks(stacks)
        self._owners = {k: v for k, v in self._owners.items() if k[0] not in gone}
        self.resolved = {k: v for k, v in self.resolved.items() if k[0] not in gone}
        self._realpaths = {k: v for k, v in self._realpaths.items() if k[0] not in gone}

    def _forget_one(self, pid: int) -> None:
        for d in (self.started, self.memory, self.census, self.cur_gen, self._measured, self.comms,
                  self._event_comm, self.modes, self._cpu):
            d.pop(pid, None)
        self.exited.discard(pid)
        self.exit_seen.discard(pid)
        self._exiting.pop(pid, None)
        if pid in self.pids:
            self.pids.remove(pid)
        self.mappings.forget(pid)
        self.symbols.forget(pid)
        self.everyone.forget(pid)

    def _seed_mappings(self, pid: int, exec_: bool = False, maps: list | None = None) -> None:
        """Anonymous mappings that exist before tracing: known, owner unknown."""
        if maps is None:
            try:
                maps = read_maps(pid)
            except (ProcessGone, PermissionError):
                return
        regions = [Region(m.start, m.end, ("r" in m.perms) | ("w" in m.perms) << 1 | ("x" in m.perms) << 2)
                   for m in maps if m.path in ("", "[heap]") and m.start < m.end]
        heap = [m.end for m in maps if m.path == "[heap]"]
        if exec_:
            self.mappings.exec(pid, regions, None)  # brk: from the new image's first brk call
        else:
            self.mappings.seed(pid, regions, brk=max(heap) if heap else None)

    def _owner(self, pid: int, caller: int) -> str:
        """Who made a mapping: the allocator, the program's own code, or the
        system (the dynamic linker; or a caller heaptrace cannot place)."""
        key = (pid, caller)
        owner = self._owners.get(key)
        if owner is None:
            path = self.symbols.module_of(pid, caller)
            if path is None or os.path.basename(path).startswith("ld-"):
                return "unknown"  # not cached: the module may be mapped later
            owner = "allocator" if self._in_allocator(pid, caller) else "program"
            if len(self._owners) > 100_000:
                self._owners.clear()
            self._owners[key] = owner
        return owner

    def _await_libraries(self, pid: int, plan: targets.Plan, timeout: float = 0.5) -> None:
        """Read the maps of a program just started once the dynamic linker
        has mapped the libraries it was expected to (about a millisecond), so
        that a program that exits at once still has names for its frames."""
        want = {os.path.basename(lib.path) for lib in plan.libraries}
        end = time.monotonic() + timeout
        while True:
            try:
                seen = {os.path.basename(m.path) for m in read_maps(pid)}
            except ProcessGone:
                return
            self.symbols.refresh(pid)
            if want <= seen or time.monotonic() > end:
                return
            time.sleep(0.001)

    # -- the loop ------------------------------------------------------------
    def run(self) -> int:
        old = self._install_signals()
        self._klog = _KernelLog()
        try:
            rc = self._run()
        except BaseException:
            self._end(old, failing=True)
            raise
        self._end(old, failing=False)
        return rc

    def _run(self) -> int:
        t0 = time.monotonic()
        # Compiling the BPF programs takes most of the start-up: do it
        # in a thread (bcc releases the GIL) while the targets are planned.
        with ThreadPoolExecutor(1) as pool:
            compiling = pool.submit(self.kernel_factory, self.o.limits)
            try:
                plans = self._plans()
            finally:
                self.kernel = kernel = compiling.result()
        stale = remove_stale_uprobe_events()
        if stale:
            _log(f"heaptrace: removed {len(stale)} uprobe event{'s' if len(stale) != 1 else ''} left in "
                 f"tracefs by bcc processes that no longer run")
        if (self.o.limits.mappings or self.everyone) and not self.stop.is_set():
            kernel.open_vm_events(self._vm_raw.append)
        if not self.stop.is_set():
            if self.everyone:
                self._attach_all(kernel)
            else:
                self._attach(kernel, plans)
        if self.stop.is_set():  # a signal during start-up: end before tracing
            _log(f"heaptrace: stopped by {self.stop_reason} during start-up; nothing was traced")
            return 128 + signal.Signals[self.stop_reason].value
        if self.child is not None:
            launch.release(self.child)
            self._released = True
            self._await_libraries(self.child, plans[0])
        if self.everyone:
            pids = self.pids
            e = self.everyone
            what = (f"every process ({len(pids)} now, and those started later; "
                    f"{len(e.files)} allocator file{'s' if len(e.files) != 1 else ''}"
                    f"{'; kernel events only' if self.o.kernel_only else ''})")
        else:
            pids = self.pids = [p.pid for p in plans]
            what = f"{len(pids)} process{'es' if len(pids) != 1 else ''} ({', '.join(map(str, pids))})"
        _log(f"Tracing {what}, {len(kernel.attached)} probes, attached in "
             f"{time.monotonic() - t0:.2f} s... Ctrl-C to end.")
        if not self.everyone:
            for pid in pids:  # the state from before attach: a first heap census
                if pid != self.child:
                    self._memory(pid, 0)
        if self.o.csv:
            self.csv.append(_open_csv(SitesCsv, self.o.csv))
            self.csv.append(_open_csv(ProcessesCsv, processes_csv.path_for(self.o.csv)))
        return self._loop(kernel, self.csv, pids, time.monotonic())

    def _end(self, old: dict, failing: bool) -> None:
        """Close the CSVs, detach every probe, end the -c program, restore the
        signal handlers: each step whatever happened in the one before."""
        errors = []
        steps = [w.close for w in self.csv]
        if self.kernel is not None:
            steps.append(self.kernel.close)
        steps.append(self._kill_child)
        if self._klog is not None:
            steps.append(self._klog.close)
        for step in steps:
            try:
                step()
            except Exception as e:
                errors.append(e)
        for s, h in old.items():
            signal.signal(s, h)
        if errors and failing:  # the error that ended the session is told after these
            for e in errors:
                _log(f"heaptrace: while ending the session: {type(e).__name__}: {e}")
        elif errors:
            raise errors[0]

    def _write_csv(self, snap: Snapshot, n: int) -> None:
        """Interval ``n`` to every CSV. If a write fails (a full disk), every
        file is cut back to where it ended after the last finished interval
        (a row half written would break the file), and the error names the
        file and the cause."""
        sizes = [os.fstat(w.f.fileno()).st_size for w in self.csv]  # each write ends flushed
        for w in self.csv:
            try:
                w.write(snap)
            except OSError as e:
                for w2, size in zip(self.csv, sizes):
                    try:
                        os.ftruncate(w2.f.fileno(), size)
                    except (OSError, ValueError):
                        pass
                    _discard(w2)
                done = n - 1
                raise _disk_error(w.path, e, f"it keeps the {done} interval{'s' if done != 1 else ''} "
                                             "finished before") from None

    def _loop(self, kernel: Kernel, csv: list, pids: list[int], t0: float) -> int:
        """Drain every interval from ``t0`` (when tracing began) to the end."""
        use_live = not self.o.plain and sys.stdout.isatty()
        view = None
        if use_live:
            from .views.live import LiveView
            view = LiveView(top=self.o.top).__enter__()
        n = 0
        deadline = t0 + self.o.duration if self.o.duration else None
        next_tick = time.monotonic() + self.o.interval
        snap = None
        try:
            while True:
                ended = self._wait(next_tick, deadline, pids)
                next_tick += self.o.interval
                if snap is not None:  # every interval has its own timestamp
                    while datetime.now(timezone.utc) - snap.timestamp < _MIN_STEP:
                        time.sleep(0.001)
                td = time.monotonic()
                if ended:
                    self._vm_next = 0.0  # the last drain takes every event left
                _fault("drain")
                snap = self.drain(kernel, pids)
                if self.o.verbose:
                    nsites = sum(len(p.sites) for p in snap.processes.values())
                    _log(f"drain: {nsites} sites in {time.monotonic() - td:.3f} s")
                n += 1
                self._write_csv(snap, n)
                if view:
                    view.update(snap, self.prev, status=f"interval {n}  Ctrl-C to end")
                elif not ended:
                    plain.render(snap, self.prev, sys.stdout, top=self.o.top)
                self.prev = snap
                if ended or (self.o.count and n >= self.o.count):
                    break
        finally:
            if view:
                view.__exit__(None, None, None)
        if snap is not None:
            plain.render_summary(snap, sys.stdout, top=self.o.top, seconds=time.monotonic() - t0)
        if self.stop_reason:
            _log(f"heaptrace: stopped by {self.stop_reason}")
        if self.child is not None and self.child not in self.exited:
            _log(f"heaptrace: the session ended before pid {self.child}; sending it SIGTERM")
        if self.child is not None:
            return launch.exit_code(self.child_status) if self.child_status is not None else 0
        return 0

    def _wait(self, until: float, deadline: float | None, pids: list[int]) -> bool:
        """Sleep to the next tick; True when the session must end after it."""
        while True:
            now = time.monotonic()
            if self.stop.is_set():
                return True
            if deadline is not None and now >= deadline:
                return True
            self._check_targets(pids)
            if self.kernel is not None:
                self._vm_events(self.kernel)
            if not self.everyone and all(p in self.exited for p in pids):
                return True
            if now >= until:
                return False
            self.stop.wait(min(0.1, until - now, (deadline - now) if deadline else 1.0))

    def _check_targets(self, pids: list[int]) -> None:
        """Mark targets that ended; re-read the maps of the others, so that a
        library loaded a moment before exit still has names for its frames.
        (--all: the kernel reports each exit; no /proc read per process.)"""
        if self.everyone:
            for pid in self.exit_seen - self.exited:
                self.exited.add(pid)
                self.exit_order.append(pid)
            return
        for pid in pids:
            if pid in self.exited:
                continue
            if pid == self.child:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    self.child_status = status
                    self._ended(pid, status)
                    continue
            else:
                f = _stat_fields(pid)
                same = bool(f) and len(f) > 19 and f[19].decode() == self.started.get(pid)
                if same and f[0] == b"Z":  # a zombie: its wait status is still there
                    self._ended(pid, int(f[49]) if len(f) > 49 else None)
                    continue
                if not same:              # gone, or its PID reused
                    self._ended(pid, None)
                    continue
                if pid in self.exit_seen:  # its last thread is exiting: a zombie soon
                    since = self._exiting.setdefault(pid, time.monotonic())
                    if time.monotonic() - since > 1.0:
                        self._ended(pid, None)
                        continue
            self.symbols.refresh(pid)

    def _ended(self, pid: int, status: int | None) -> None:
        """A target is gone: mark it, and say how it ended (one line)."""
        self.exited.add(pid)
        oom = False
        if self._klog is not None and (status is None or (os.WIFSIGNALED(status)
                                                          and os.WTERMSIG(status) == signal.SIGKILL)):
            self._klog.poll()
            oom = pid in self._klog.oom_killed
        _log(f"heaptrace: pid {pid} ({safe(self.comms.get(pid, '?'))}) {_how_it_ended(status, oom)}")

    # -- drain ---------------------------------------------------------------
    def _current(self, raw: list[tuple[bytes, int, bytes]], kernel: Kernel) -> list[tuple[bytes, int, bytes]]:
        """The sites of each process's current incarnation. A process that
        exec'd, or whose PID was used again, has sites of an earlier
        incarnation too: those end (retired in the kernel, their slots used
        again). --all: exited processes beyond MAX_EXITED end as well."""
        gens: dict[int, set[int]] = {}
        for k, _slot, _v in raw:
            tgid, gen, _ = layout.decode_owned_key(k)
            gens.setdefault(tgid, set()).add(gen)
        live = None
        for tgid, seen in gens.items():
            cur = self.cur_gen.get(tgid)
            if tgid in self._execd or len(seen) > 1 or cur not in seen:
                if live is None:
                    live = kernel.gens()
                if tgid in live:
                    # (after an exec, maybe a gen not seen: the program
                    # before it has ended, the new one allocated nothing yet)
                    self.cur_gen[tgid] = live[tgid]
                elif tgid in self._execd:
                    self.cur_gen[tgid] = -1  # exec'd, then gone: every site ended
                elif cur not in seen:
                    self.cur_gen[tgid] = max(seen)  # from before the session, or gone
        self._execd.clear()
        dropped: set[int] = set()
        if self.everyone:
            while len(self.exit_order) > MAX_EXITED:
                pid = self.exit_order.popleft()
                if pid in self.exited:
                    dropped.add(pid)
            self._forget(*dropped)
        keep, retire, gone_stacks = [], [], []
        for k, slot, v in raw:
            tgid, gen, stack = layout.decode_owned_key(k)
            if self.everyone:  # its stack goes when the process is forgotten (now, if it is)
                if tgid in dropped:
                    gone_stacks.append((tgid, stack))
                else:
                    self._stack_keys.setdefault(tgid, set()).add(stack)
            if tgid in dropped or gen != self.cur_gen.get(tgid):
                retire.append((k, slot))
                self._dead.add((tgid, gen))
                self._stale += max(0, layout.decode_site(v).live_allocs)
            else:
                keep.append((k, slot, v))
        if retire:
            kernel.retire(retire)
        if gone_stacks:  # (dropped before a drain had seen their sites: a burst of exits)
            kernel.forget_stacks(gone_stacks)
        if sweep_due(len(self._dead), self._stale, kernel.limits.max_allocs, time.monotonic(), self._sweep_next):
            # Blocks the ended processes never freed fill the allocs map:
            # sweep them out (they would otherwise stay to the end).
            t = time.monotonic()
            n = kernel.sweep_allocs(self._dead)
            end = time.monotonic()
            self._sweep_next = end + SWEEP_SPACING * (end - t)
            if self.o.verbose:
                _log(f"heaptrace: {n:,} records of {len(self._dead):,} ended processes swept in {end - t:.3f} s")
            self._dead, self._stale = set(), 0
        return keep

    def drain(self, kernel: Kernel, pids: list[int]) -> Snapshot:
        if self._early_exits:  # a PID used again later is another process
            self._early_exits = {p: n for p, n in self._early_exits.items() if self._n - n < 3}
        if len(self._event_comm) > 2 * len(self.started) + 1000:  # names of processes never tracked
            self._event_comm = {p: c for p, c in self._event_comm.items() if p in self.started}
        self._vm_events(kernel)  # first: an exec or exit seen now applies to the sites read next
        if self.everyone:
            self._check_targets(pids)  # (exits to exit_order, trimmed by _current)
        sites = []
        by_slot = {}
        for k, slot, v in self._current(kernel.read_sites(), kernel):
            tgid, stack = layout.decode_key(k)
            by_slot[slot] = stack
            sites.append((tgid, stack, layout.decode_site(v)))
            if self.everyone and tgid not in self.started:
                self._track(tgid)
        if self.o.min_age is not None:
            now = time.monotonic_ns()
            blocks = []
            for k, v in kernel.read_allocs():
                size, slot, ts = layout.decode_alloc(v)
                blocks.append((layout.decode_key(k)[0], size, by_slot.get(slot, -1), ts))
            sites = apply_min_age(sites, blocks, now, int(self.o.min_age * 1e9))
        mapped = [(pid, stack, c) for pid in list(self.mappings.maps) for stack, c in self.mappings.rows(pid)]
        fresh = {(t, s) for t, s, _ in sites + mapped if (t, s) not in self.resolved}
        # (_check_targets re-reads the maps of live targets every poll tick.)
        for tgid in {t for t, _ in fresh}:
            if tgid not in self.exited:
                self.comms[tgid] = read_comm(tgid) or self._event_comm.get(tgid) or self.comms.get(tgid, "?")
                if self.everyone:  # (-p/-c re-read the maps every tick; --all when there is something new)
                    self.symbols.refresh(tgid)
        for tgid, stack in fresh:
            raw = kernel.read_stack(tgid, stack)
            ips = layout.decode_stack(raw, kernel.limits.max_depth) if raw else ()
            self.resolved[(tgid, stack)] = resolve_stack(
                ips,
                frame=lambda ip, t=tgid: self.symbols.frame(t, ip),
                executable=lambda ip, t=tgid: self.symbols.in_executable_mapping(t, ip),
                allocator=lambda ip, t=tgid: self._in_allocator(t, ip))
        raw_stats = kernel.stats()
        stats = {layout.LOST_STATS[i]: raw_stats[i] for i in layout.LOST_STATS}
        for i, name in STAT_NAMES.items():
            stats[name] = raw_stats[i]
        snap = build_snapshot(datetime.now(timezone.utc), sites, self.resolved, self.comms,
                              self.exited, stats, pids, mapped)
        snap.every = self.everyone is not None
        self.diagnose(snap)
        if self.everyone and self.o.budget > 0 and not self.o.kernel_only:
            self._budget(kernel, snap)
        for pid, mode in self.modes.items():
            if pid in snap.processes:
                snap.processes[pid].mode = mode
        return snap

    def _budget(self, kernel: Kernel, snap: Snapshot) -> None:
        """Move each process whose probes cost it more than the budget to a
        cheaper mode (tracer.budget), and say so."""
        now = time.monotonic()
        tick = os.sysconf("SC_CLK_TCK")
        prev = self.prev.processes if self.prev else {}
        for pid, p in snap.processes.items():
            mode = self.modes.get(pid, budget.FULL)
            if pid in self.exited or mode == budget.RELEASED or pid in self._stuck:
                continue
            calls = sum(s.counts.allocs + s.counts.frees for s in p.sites if s.source == "malloc")
            before = prev.get(pid)
            done = calls - (sum(s.counts.allocs + s.counts.frees for s in before.sites if s.source == "malloc")
                            if before else 0)
            if done < budget.MIN_CALLS:
                continue
            f = _stat_fields(pid)
            if not f or len(f) < 13:
                continue
            cpu = int(f[11]) + int(f[12])
            last = self._cpu.get(pid)
            self._cpu[pid] = (cpu, now)
            if last is None:
                continue
            v = budget.judge(mode, done, (cpu - last[0]) / tick, now - last[1], self.o.budget)
            if v is not None:
                self._move(kernel, pid, v)

    def _move(self, kernel: Kernel, pid: int, v: budget.Verdict) -> None:
        who = f"pid {pid} ({safe(self.comms.get(pid, '?'))})"
        why = (f"its probes took ~{v.share:.0%} of its CPU ({v.calls_per_s:,.0f} allocator calls/s; "
               f"budget {self.o.budget:.0%})")
        if v.mode == budget.SAMPLED:
            kernel.add_target(pid, layout.C["MODE_SAMPLED"])
            self.modes[pid] = budget.SAMPLED
            _log(f"heaptrace: {who}: {why}: now 1 allocation in {layout.C['SAMPLE_EVERY']} is traced "
                 "(its numbers are estimates from here)")
            return
        foreign = release.foreign_uprobes(self._breakpoints, os.getpid())
        if foreign:
            _log(f"heaptrace: {who}: {why}, but pid {foreign[0][0]} has a uprobe at the same place: "
                 "left sampled (taking the breakpoints out would take that one's too)")
            self._stuck.add(pid)  # not judged again
            return
        kernel.add_target(pid, layout.C["MODE_OFF"])
        try:
            n = release.remove(pid, release.addresses(read_maps(pid), self._breakpoints))
        except (OSError, ProcessGone) as e:
            _log(f"heaptrace: {who}: {why}, but its breakpoints could not be taken out ({e}): "
                 "its allocator calls are no longer traced, each still hits a breakpoint")
            n = 0
        self.modes[pid] = budget.RELEASED
        _log(f"heaptrace: {who}: {why}, sampled: {n} breakpoints taken out of it; it runs at full "
             "speed, its malloc numbers stop here (mmap/brk go on)")

    # -- the per-process breakdown and the findings ------------------------
    def diagnose(self, snap: Snapshot) -> None:
        self._n += 1
        t = time.monotonic()
        due = self._due(snap)
        for pid in due:
            p = snap.processes[pid]
            m = self._memory(pid, p.live_bytes("malloc"), p.live_bytes("mmap"))
            if m is not None:
                self.memory[pid] = m
        if self.everyone and due:
            self._bd_next = t + (time.monotonic() - t) / BREAKDOWN_SHARE
        for pid, p in snap.processes.items():
            if pid in self.memory:
                snap.memory[pid] = self.memory[pid]
            if self.everyone:
                p.cgroup = self.everyone.cgroup_of(pid)
        self.history.append(snap)
        findings = diagnose.leaks(self.history)
        cpus = os.cpu_count() or 1
        for pid, m in snap.memory.items():
            findings += diagnose.retention(pid, snap.processes[pid].comm, m, cpus)
        snap.findings = findings

    def _due(self, snap: Snapshot) -> list[int]:
        """The live processes whose breakdown is made this interval: every
        one with -p/-c. With --all, a breakdown (smaps, maybe a heap census)
        may take BREAKDOWN_SHARE of a core at most: after a batch that took
        t seconds the next one waits t / BREAKDOWN_SHARE. A batch holds at
        most BREAKDOWNS_PER_INTERVAL processes: those whose live bytes
        changed, the biggest change first, then those never measured or
        measured REFRESH_INTERVALS ago."""
        live = [pid for pid in snap.processes if pid not in self.exited]
        if not self.everyone:
            return live
        if time.monotonic() < self._bd_next:
            return []
        changed, stale = [], []
        for pid in live:
            p = snap.processes[pid]
            held = p.live_bytes("malloc") + p.live_bytes("mmap")
            last = self._measured.get(pid)
            if last is not None and last[0] != held:
                changed.append((-abs(held - last[0]), pid, held))
            elif last is None or self._n - last[1] >= REFRESH_INTERVALS:
                stale.append((last[1] if last else -1, pid, held))
        changed.sort()
        stale.sort()
        out = []
        for _, pid, held in (changed + stale)[:BREAKDOWNS_PER_INTERVAL]:
            self._measured[pid] = (held, self._n)
            out.append(pid)
        return out

    def _memory(self, pid: int, probe_live: int, mmap_live: int = 0) -> Memory | None:
        """What the process holds, what its allocator keeps: /proc/PID/smaps
        and status every interval, a heap census when the heap changed."""
        try:
            smaps = [(m.start, m.end, m.perms, m.path, rss) for m, rss in read_smaps_rss(pid)]
        except (ProcessGone, PermissionError):
            return None
        st = self.census.get(pid)
        if pid in self.glibc or (self.everyone is not None and pid in self.everyone.glibc):
            shape = tuple((a, b, r) for a, b, perms, path, r in smaps
                          if path == "[heap]" or (path == "" and perms.startswith("rw") and a % HEAP_MAX_SIZE == 0))
            events = self.mappings.events.get(pid, 0)
            now = time.monotonic()
            if st is None or ((shape, events, probe_live) != (st.layout, st.events, st.probe_live)
                              and now - st.done >= CENSUS_SPACING * st.report.seconds):
                entries = [row[:4] for row in smaps]
                t = time.monotonic()
                report = summarize(census_process(pid, entries), mmapped_chunks(pid, entries),
                                   time.monotonic() - t)
                st = self.census[pid] = _Census(report, probe_live, events, shape, time.monotonic())
                if self.o.verbose:
                    _log(f"census: pid {pid}: {report.heaps} heaps, {report.arenas} arenas, "
                         f"in {report.seconds:.3f} s{'' if report.complete else ': ' + report.note}")
        report = st.report if st else None
        return breakdown(rss_anon=read_rss_anon(pid), rss=heap_rss(smaps, report), probe_live=probe_live,
                         census=report, probe_live_at_census=st.probe_live if st else 0,
                         mmap_live=mmap_live,
                         given_back=self.mappings.given_back.get(pid, 0) if self.o.limits.mappings else None)

    def _vm_events(self, kernel: Kernel) -> None:
        """Apply the VM events the kernel streamed since the last call (every
        poll tick, so the ring buffer is emptied ten times a second).

        Bounded: this may take at most VM_CPU_SHARE of a core; after a long
        call the next ones wait, the ring buffer fills and the kernel counts
        what it could not keep (shown as LOST)."""
        t = time.monotonic()
        if not (self.o.limits.mappings or self.everyone) or t < self._vm_next:
            return
        kernel.poll_vm_events()
        events, self._vm_raw[:] = list(self._vm_raw), []
        for raw in events:
            ev = layout.decode_vm_event(raw)
            if ev.kind in (layout.C["VM_EXEC"], layout.C["VM_EXIT"]) and (ev.args[0] or ev.args[1]):
                self._event_comm[ev.tgid] = layout.event_comm(ev)
            if self.everyone and ev.tgid in self.exited and ev.kind != layout.C["VM_EXIT"]:
                self._forget(ev.tgid)  # its PID used again: another process
            if self.everyone and ev.tgid not in self.started:
                if ev.kind == layout.C["VM_EXIT"]:
                    # Not seen doing anything yet: its sites may still come
                    # (a child that only malloc'd): it is then an exited one.
                    self._early_exits[ev.tgid] = self._n
                    continue
                if ev.kind == layout.C["VM_EXEC"]:
                    mode = self.everyone.on_exec(ev.tgid)
                    if mode is not None:
                        kernel.add_target(ev.tgid, mode)
                    elif self.o.filters.selective:
                        continue  # not selected
                self._track(ev.tgid)
            elif self.everyone and ev.kind == layout.C["VM_EXEC"]:
                self._stuck.discard(ev.tgid)
                if self.modes.pop(ev.tgid, None) is not None:  # a new program: judged afresh
                    kernel.add_target(ev.tgid, self.everyone.default_mode()
                                      if not self.o.filters.selective else layout.C["MODE_FULL"])
                    self._cpu.pop(ev.tgid, None)
                self.everyone.on_exec(ev.tgid)
                for lib in self.everyone.new_files(ev.tgid):
                    if not self.o.kernel_only:
                        self._attach_file(kernel, lib)
            if ev.kind == layout.C["VM_EXEC"]:
                self._execd.add(ev.tgid)
                self._seed_mappings(ev.tgid, exec_=True)
                self._owners = {k: v for k, v in self._owners.items() if k[0] != ev.tgid}
                self.census.pop(ev.tgid, None)
                self.symbols.refresh(ev.tgid)
                self.comms[ev.tgid] = read_comm(ev.tgid) or self._event_comm.get(ev.tgid) or self.comms.get(ev.tgid, "?")
            elif ev.kind == layout.C["VM_EXIT"]:
                self.exit_seen.add(ev.tgid)
            else:
                self.mappings.apply(ev, self._owner(ev.tgid, ev.caller))
                if self.everyone and ev.stack:
                    self._stack_keys.setdefault(ev.tgid, set()).add(ev.stack)
                if (self.everyone and ev.kind == layout.C["VM_MMAP"] and ev.args[2] & PROT_EXEC
                        and not is_error(ev.ret) and ev.args[4] < 1 << 31):
                    self._check_files.add(ev.tgid)  # a library mapped (ld.so, dlopen): an allocator?
        for pid in self._check_files:
            if pid not in self.exited:
                for lib in self.everyone.new_files(pid):
                    if not self.o.kernel_only:
                        self._attach_file(kernel, lib)
        self._check_files.clear()
        self._vm_next = t + (time.monotonic() - t) / VM_CPU_SHARE

    def _in_allocator(self, pid: int, ip: int) -> bool:
        """Is ``ip`` inside one of the allocator libraries probed for ``pid``?"""
        path = self.symbols.module_of(pid, ip)
        if path is None:
            return False
        key = (pid, path)
        if key not in self._realpaths:
            self._realpaths[key] = real_host_path(pid, path)
        return self._realpaths[key] in self.alloc_modules.get(pid, self._alloc_files)

    # -- child ---------------------------------------------------------------
    def _kill_child(self) -> None:
        """End a program heaptrace started, if it still runs."""
        pid = self.child
        if pid is None or self.child_status is not None:
            return
        # Never let run (stopped since exec, not one instruction of its own
        # run): nothing to end gracefully.
        first = (signal.SIGTERM, 2.0) if self._released else (signal.SIGKILL, 5.0)
        for sig, wait in (first, (signal.SIGKILL, 5.0)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
            end = time.monotonic() + wait
            while time.monotonic() < end:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    self.child_status = status
                    return
                time.sleep(0.02)
        try:
            _, self.child_status = os.waitpid(pid, 0)
        except ChildProcessError:
            pass


PF_KTHREAD = 0x00200000


def check_pids(pids: list[int]) -> None:
    for pid in pids:
        fields = _stat_fields(pid) if pid > 0 else None
        if not fields:
            raise TargetError(f"process {pid} does not exist: check the PID with ps")
        if pid == os.getpid():
            raise TargetError("heaptrace cannot trace itself")
        if fields[0] == b"Z":
            raise TargetError(f"process {pid} is a zombie: it has exited and holds no memory "
                              "(its parent has not reaped it yet)")
        if len(fields) > 6 and int(fields[6]) & PF_KTHREAD:
            raise TargetError(f"process {pid} is a kernel thread: it has no user-space "
                              "allocator to trace")
