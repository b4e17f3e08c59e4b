"""Findings: tell a leak from memory the allocator keeps, with evidence and advice.

Pure: takes the recent snapshots (oldest first, each with its per-process
:class:`~tracer.breakdown.Memory`) and returns :class:`Finding` s.

* ``leak`` / ``mmap-leak``: a call site (malloc family / direct mappings)
  whose live bytes grew in most intervals of the window, by at least
  ``MIN_GROWTH`` in all, and are still growing in its last third, without
  ever falling back by more than a tenth. Ranked by growth rate: a cache
  that levels off stops growing and is not reported.
* ``allocator-retention``: the allocator's resident memory is far above what
  the program holds (at least ``RETAINED_MIN``, and at least as much as the
  program holds).
* ``arena-bloat``: several arenas whose heaps keep at least
  ``ARENA_RETAINED_MIN`` resident beyond what is in use in them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from .breakdown import Memory
from .views.fmt import human

WINDOW = 12                  # intervals a trend is judged on
MIN_POINTS = 4               # a trend needs at least this many intervals
MIN_GROWTH = 16 << 10        # bytes a site must grow over the window to be a leak
RETAINED_MIN = 32 << 20      # allocator-retention: kept bytes at least this ...
RETAINED_RATIO = 1.0         # ... and at least this many times the live heap
ARENA_MIN = 4                # arena-bloat: at least this many arenas ...
ARENA_RETAINED_MIN = 32 << 20  # ... keeping this much resident beyond their use

CODES = ("leak", "mmap-leak", "allocator-retention", "arena-bloat")


@dataclass(frozen=True)
class Finding:
    code: str
    pid: int
    subject: str      # the call site, or the process's command name
    score: float      # ranking: bytes/s for leaks, bytes kept otherwise
    evidence: str
    advice: str

    def line(self) -> str:
        return f"{self.code}: {self.subject}: {self.evidence}"


def _trend(series: Sequence[int]) -> tuple[bool, int, int]:
    """(sustained growth?, intervals that grew, steps)."""
    steps = [b - a for a, b in zip(series, series[1:])]
    grew = sum(1 for d in steps if d > 0)
    if len(series) < MIN_POINTS or series[-1] - series[0] < MIN_GROWTH:
        return False, grew, len(steps)
    peak, fell = series[0], False
    for v in series:
        peak = max(peak, v)
        fell |= v < peak * 0.9
    tail = series[-max(2, math.ceil(len(series) / 3)):]
    still = tail[-1] > tail[0]
    return grew >= 0.75 * len(steps) and still and not fell, grew, len(steps)


def leaks(history: Sequence) -> list[Finding]:
    """Sites whose live bytes grow steadily over the last intervals."""
    snaps = list(history)[-WINDOW:]
    if len(snaps) < MIN_POINTS:
        return []
    cur = snaps[-1]
    out = []
    indexes = [s.site_index() for s in snaps]
    for key, site in indexes[-1].items():
        series = [ix[key].counts.live_bytes if key in ix else 0 for ix in indexes]
        ok, grew, steps = _trend(series)
        if not ok:
            continue
        secs = max(1e-3, (cur.timestamp - snaps[0].timestamp).total_seconds())
        rate = (series[-1] - series[0]) / secs
        c = site.counts
        if site.source == "malloc":
            code = "leak"
            advice = ("blocks allocated here are not freed: find who should own them; "
                      "`heaptrace --min-age SECS` counts only old blocks")
            unit = "blocks"
        else:
            code = "mmap-leak"
            advice = ("mappings made here are never unmapped: munmap them when done "
                      "(hand-made thread stacks: munmap after pthread_join)")
            unit = "regions"
        evidence = (f"+{human(rate)}/s for {secs:.0f} s (grew in {grew} of {steps} intervals), "
                    f"{human(c.live_bytes)} live in {c.live_allocs:,} {unit}, {c.frees:,} freed")
        out.append(Finding(code, site.pid, site.label if site.source == "malloc" else site.callsite,
                           rate, evidence, advice))
    out.sort(key=lambda f: (-f.score, f.pid, f.subject))
    return out


def retention(pid: int, comm: str, m: Memory, cpus: int = 2) -> list[Finding]:
    """allocator-retention and arena-bloat for one process."""
    out = []
    c = m.census
    if m.retained >= RETAINED_MIN and m.retained >= RETAINED_RATIO * m.heap_live:
        why = []
        if c is not None:
            if c.main_pinned_by is not None and c.main_free >= 1 << 20:
                why.append(f"a live chunk at {c.main_pinned_by + 16:#x} sits at the top of the brk heap, "
                           "so glibc cannot shrink the heap below it")
            if c.top >= 1 << 20:
                why.append(f"{human(c.top)} in top chunks")
            if c.free >= 1 << 20:
                frag = (f"fragmented: the largest is {human(c.largest_free)}" if c.largest_free * 4 < c.free
                        else f"the largest is {human(c.largest_free)}")
                why.append(f"{human(c.free)} sits in {c.free_chunks:,} free chunk"
                           f"{'s' if c.free_chunks != 1 else ''} in glibc's bins ({frag})")
            trim = f"malloc_trim(0) would return about {human(c.trimmable)}"
        else:
            trim = "no heap census (not glibc, or it could not be read): what malloc_trim(0) returns is unknown"
        evidence = (f"the allocator holds {human(m.rss.total)} resident, the program uses "
                    f"{human(m.heap_live)}: {human(m.retained)} kept after free; {trim}")
        if why:
            evidence += "; held because " + "; ".join(why)
        fragmented = c is not None and c.trimmable * 4 < m.retained
        if fragmented:
            advice = ("malloc_trim(0) cannot help much: the free memory is in pieces smaller than a "
                      "page between live blocks (fragmentation). Allocate long-lived and short-lived "
                      "objects apart (pools, arenas per lifetime), or use jemalloc/tcmalloc, "
                      "which fragment less and return free memory over time")
        else:
            advice = ("call malloc_trim(0) after a burst of frees; or cap what glibc keeps: "
                      "mallopt(M_TRIM_THRESHOLD/M_MMAP_THRESHOLD) or GLIBC_TUNABLES="
                      "glibc.malloc.trim_threshold=131072:glibc.malloc.mmap_threshold=131072; "
                      "or use jemalloc/tcmalloc, which return free memory over time")
        out.append(Finding("allocator-retention", pid, comm, m.retained, evidence, advice))
    if c is not None and c.arenas >= ARENA_MIN:
        kept = max(0, m.rss.arena_rss - c.arena_in_use)
        if kept >= ARENA_RETAINED_MIN:
            cap = max(2, min(cpus, c.arenas // 2))
            evidence = (f"{c.arenas} arenas in {c.heaps} heaps: {human(m.rss.arena_rss)} resident in the "
                        f"thread arenas' heaps, {human(c.arena_in_use)} of it in use: {human(kept)} kept")
            advice = (f"cap the arenas: MALLOC_ARENA_MAX={cap} (or GLIBC_TUNABLES=glibc.malloc.arena_max={cap}) "
                      "trades a little lock contention for memory; or fewer, longer-lived threads")
            out.append(Finding("arena-bloat", pid, comm, kept, evidence, advice))
    return out


def codes(findings: Sequence[Finding], pid: int) -> str:
    """The processes CSV's ``findings`` cell: ``;``-joined codes, in a fixed order."""
    have = {f.code for f in findings if f.pid == pid}
    return ";".join(c for c in CODES if c in have)
