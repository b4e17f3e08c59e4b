"""Plain-text rendering: for pipes, logs, ``--plain`` and the final summary."""
from __future__ import annotations

from typing import TextIO

from ..model import Snapshot, growth, process_growth
from .fmt import human, safe, shorten

WIDTH = 80


def ranked(snap: Snapshot, top: int):
    procs = sorted(snap.processes.values(), key=lambda p: (-p.totals.live_bytes, p.pid))
    return procs[:top]


def render(snap: Snapshot, prev: Snapshot | None, out: TextIO, *, top: int = 10,
           title: str | None = None) -> None:
    g = growth(snap, prev)
    pg = process_growth(snap, prev)
    out.write(f"{title or snap.timestamp.strftime('%H:%M:%S')}\n")
    if not snap.processes:
        out.write("  no allocations seen yet\n")
    for p in ranked(snap, top):
        t = p.totals
        state = " [exited]" if p.exited else ""
        out.write(f"  {p.pid:>7} {shorten(safe(p.comm, 32), 16):<16} live {human(t.live_bytes):>10} "
                  f"in {t.live_allocs:>9,} blocks  {human(pg[p.pid], True):>11}{state}\n")
        for s in p.sites[:top]:
            d = g.get(s.key, 0)
            site = shorten(safe(s.callsite), WIDTH - 40)
            out.write(f"      {human(s.counts.live_bytes):>10} {s.counts.live_allocs:>9,} "
                      f"{human(d, True):>11}  {site}\n")
    for reason, n in sorted(snap.lost.items()):
        out.write(f"  LOST: {n:,} {reason}\n")
    out.flush()


def render_summary(snap: Snapshot, out: TextIO, *, top: int = 10, first: Snapshot | None = None,
                   seconds: float | None = None) -> None:
    out.write("\n")
    head = "heaptrace summary"
    if seconds is not None:
        head += f" after {seconds:.1f} s"
    render(snap, first, out, top=top, title=head + " (growth: since start)")
    for p in ranked(snap, top):
        for s in p.sites[:3]:
            if len(s.frames) > 1:
                out.write(f"  {p.pid} {shorten(safe(s.callsite), 60)} stack:\n")
                for f in s.frames[:8]:
                    out.write(f"      {shorten(safe(f), 72)}\n")
    if snap.unknown_frees:
        out.write(f"  {snap.unknown_frees:,} frees of blocks allocated before tracing began (ignored)\n")
    if not snap.lost:
        out.write("  nothing lost: every allocation seen was counted\n")
    out.flush()
