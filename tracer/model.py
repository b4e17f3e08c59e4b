"""The snapshot model and the pure functions that build it from drained data.

drain (raw bytes) -> :func:`build_snapshot` -> Snapshot -> views / exporters.
Nothing here touches bcc, /proc or the clock: tests feed it plain values.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Iterable, Mapping

from .layout import ZERO, SiteCounts

LOST_STACK = "[lost stack]"


@dataclass(frozen=True)
class Site:
    pid: int
    comm: str
    source: str                 # "malloc" (the malloc family) or "mmap"
    callsite: str               # innermost frame outside the allocator
    frames: tuple[str, ...]     # innermost first
    counts: SiteCounts

    @property
    def key(self) -> tuple[int, str, tuple[str, ...]]:
        return (self.pid, self.source, self.frames)

    @property
    def label(self) -> str:
        """The call site as the views show it: direct mappings are marked."""
        return self.callsite if self.source == "malloc" else f"{self.callsite} ({self.source})"

    @property
    def folded(self) -> str:
        """Frames outermost first, joined by ';' (folded-stack convention)."""
        return ";".join(reversed(self.frames))


@dataclass
class Process:
    pid: int
    comm: str
    exited: bool = False
    sites: list[Site] = field(default_factory=list)
    cgroup: str = ""   # its cgroup (--all), "" when not known
    mode: str = ""     # --all: what the budget left traced of it ("" or "full": everything)

    @property
    def totals(self) -> SiteCounts:
        """All its sites summed (kept until a site is added: the views ask
        for it many times an interval)."""
        cached = self.__dict__.get("_totals")
        if cached is not None and cached[0] == len(self.sites):
            return cached[1]
        t = ZERO
        for s in self.sites:
            t = t + s.counts
        self.__dict__["_totals"] = (len(self.sites), t)
        return t

    def live_bytes(self, source: str) -> int:
        return sum(s.counts.live_bytes for s in self.sites if s.source == source)


@dataclass
class Snapshot:
    timestamp: datetime
    processes: dict[int, Process]
    lost: dict[str, int] = field(default_factory=dict)   # what could not be kept, by reason
    unknown_frees: int = 0                              # frees of blocks from before attach
    failed_allocs: int = 0
    memory: dict = field(default_factory=dict)          # pid -> breakdown.Memory
    findings: list = field(default_factory=list)        # diagnose.Finding, ranked
    every: bool = False                                 # --all: every process, grouped in the views

    def site_index(self) -> dict[tuple, Site]:
        return {s.key: s for p in self.processes.values() for s in p.sites}


@dataclass(frozen=True)
class ResolvedStack:
    frames: tuple[str, ...]   # symbolized, garbage frames already cut
    callsite: str


def resolve_stack(ips: tuple[int, ...], *, frame: Callable[[int], str],
                  executable: Callable[[int], bool], allocator: Callable[[int], bool]) -> ResolvedStack:
    """Symbolize a raw stack and cut it where the frame-pointer walk went astray.

    ``ips[0]`` is the return address read at the allocator's entry: always a
    real frame. The later ones come from a frame-pointer walk, which in code
    without frame pointers yields garbage: keep them only while each points
    into an executable mapping, so one call site never splits into many.
    """
    if not ips:
        return ResolvedStack((LOST_STACK,), LOST_STACK)
    kept = [ips[0]]
    for ip in ips[1:]:
        if not executable(ip):
            break
        kept.append(ip)
    frames = tuple(frame(ip) for ip in kept)
    callsite = frames[0]
    for ip, name in zip(kept, frames):
        if not allocator(ip):
            callsite = name
            break
    return ResolvedStack(frames, callsite)


def build_snapshot(timestamp: datetime,
                   sites: Iterable[tuple[int, int, SiteCounts]],
                   stacks: Mapping[tuple[int, int], ResolvedStack],
                   comms: Mapping[int, str],
                   exited: Iterable[int] = (),
                   stats: Mapping[str, int] | None = None,
                   pids: Iterable[int] = (),
                   mapped: Iterable[tuple[int, int, SiteCounts]] = ()) -> Snapshot:
    """Merge per-(tgid, stack hash) counts into per-site rows.

    ``sites`` are the malloc family's kernel counts, ``mapped`` the program's
    own direct anonymous mappings (source ``mmap``), both keyed by stack
    hash. Several stacks that resolve to the same frames (garbage cut off)
    become one row. ``pids`` are processes to show even with no site yet.
    """
    exited = set(exited)
    procs: dict[int, Process] = {}
    merged: dict[tuple[int, str, tuple[str, ...]], tuple[str, SiteCounts]] = {}
    rows = [(t, s, c, "malloc") for t, s, c in sites] + [(t, s, c, "mmap") for t, s, c in mapped]
    for tgid, stack, counts, source in rows:
        rs = stacks.get((tgid, stack)) or ResolvedStack((LOST_STACK,), LOST_STACK)
        k = (tgid, source, rs.frames)
        prev = merged.get(k)
        merged[k] = (rs.callsite, counts if prev is None else prev[1] + counts)
    for pid in pids:
        procs.setdefault(pid, Process(pid, comms.get(pid, "?"), pid in exited))
    for (tgid, source, frames), (callsite, counts) in merged.items():
        p = procs.setdefault(tgid, Process(tgid, comms.get(tgid, "?"), tgid in exited))
        p.sites.append(Site(tgid, p.comm, source, callsite, frames, counts))
    for p in procs.values():
        p.sites.sort(key=lambda s: (-s.counts.live_bytes, s.callsite))
    stats = dict(stats or {})
    unknown = stats.pop("unknown_frees", 0)
    failed = stats.pop("failed_allocs", 0)
    return Snapshot(timestamp, procs, {k: v for k, v in stats.items() if v}, unknown, failed)


def apply_min_age(sites: list[tuple[int, int, SiteCounts]],
                  blocks: Iterable[tuple[int, int, int, int]], now_ns: int, min_age_ns: int
                  ) -> list[tuple[int, int, SiteCounts]]:
    """Replace live counts by those of blocks older than ``min_age_ns``.

    ``blocks`` are (tgid, size, stack, ts_ns) of every live block.
    """
    aged: dict[tuple[int, int], list[int]] = {}
    for tgid, size, stack, ts in blocks:
        if now_ns - ts >= min_age_ns:
            a = aged.setdefault((tgid, stack), [0, 0])
            a[0] += size
            a[1] += 1
    out = []
    for tgid, stack, c in sites:
        b, n = aged.get((tgid, stack), (0, 0))
        out.append((tgid, stack, SiteCounts(b, n, c.alloc_bytes, c.allocs, c.frees)))
    return out


def growth(cur: Snapshot, prev: Snapshot | None) -> dict[tuple, int]:
    """Change of live bytes per site since the previous snapshot."""
    before = prev.site_index() if prev else {}
    return {k: s.counts.live_bytes - (before[k].counts.live_bytes if k in before else 0)
            for k, s in cur.site_index().items()}


def process_growth(cur: Snapshot, prev: Snapshot | None) -> dict[int, int]:
    out = {}
    for pid, p in cur.processes.items():
        before = prev.processes.get(pid) if prev else None
        out[pid] = p.totals.live_bytes - (before.totals.live_bytes if before else 0)
    return out


@dataclass(frozen=True)
class GroupRow:
    """Processes of one command name, or one cgroup (container), summed."""

    name: str
    processes: int
    live_bytes: int
    growth: int


def groups(cur: Snapshot, prev: Snapshot | None, key: Callable[[Process], str]) -> list[GroupRow]:
    """Live bytes and growth per group (``key``: a process's command name or
    cgroup), biggest first."""
    pg = process_growth(cur, prev)
    acc: dict[str, list[int]] = {}
    for pid, p in cur.processes.items():
        a = acc.setdefault(key(p), [0, 0, 0])
        a[0] += 1
        a[1] += p.totals.live_bytes
        a[2] += pg[pid]
    rows = [GroupRow(k, n, live, g) for k, (n, live, g) in acc.items()]
    rows.sort(key=lambda r: (-r.live_bytes, -r.growth, r.name))
    return rows


def growing(cur: Snapshot, prev: Snapshot | None, top: int) -> list[tuple[Process, int]]:
    """The processes whose live bytes grew most since ``prev``."""
    pg = process_growth(cur, prev)
    rows = sorted(((p, pg[pid]) for pid, p in cur.processes.items() if pg[pid] > 0),
                  key=lambda r: (-r[1], r[0].pid))
    return rows[:top]


@dataclass(frozen=True)
class CallsiteRow:
    """A call site with all its stacks summed: what the views rank."""

    callsite: str
    counts: SiteCounts
    growth: int
    stacks: int


def callsites(p: Process, site_growth: Mapping[tuple, int]) -> list[CallsiteRow]:
    acc: dict[str, list] = {}
    for s in p.sites:
        a = acc.setdefault(s.label, [ZERO, 0, 0])
        a[0] = a[0] + s.counts
        a[1] += site_growth.get(s.key, 0)
        a[2] += 1
    rows = [CallsiteRow(k, c, g, n) for k, (c, g, n) in acc.items()]
    rows.sort(key=lambda r: (-r.counts.live_bytes, -r.growth, r.callsite))
    return rows
