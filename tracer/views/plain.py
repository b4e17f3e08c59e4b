"""Plain-text rendering: for pipes, logs, ``--plain`` and the final summary."""
from __future__ import annotations

from typing import TextIO

from ..model import Snapshot, callsites, growth, process_growth
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
    else:
        out.write(f"  {'PID':>7} {'LIVE':>10} {'BLOCKS':>9} {'GROWTH':>11}  COMMAND / CALL SITE\n")
    name_w = WIDTH - 44
    for p in ranked(snap, top):
        t = p.totals
        state = " [exited]" if p.exited else ""
        out.write(f"  {p.pid:>7} {human(t.live_bytes):>10} {t.live_allocs:>9,} {human(pg[p.pid], True):>11}"
                  f"  {shorten(safe(p.comm, 64), name_w - len(state))}{state}\n")
        for r in callsites(p, g)[:top]:
            out.write(f"  {'':>7} {human(r.counts.live_bytes):>10} {r.counts.live_allocs:>9,} "
                      f"{human(r.growth, True):>11}    {shorten(safe(r.callsite), name_w - 2)}\n")
    for reason, n in sorted(snap.lost.items()):
        out.write(f"  LOST: {n:,} {reason}\n")
    out.flush()


def render_summary(snap: Snapshot, out: TextIO, *, top: int = 10, seconds: float | None = None) -> None:
    """The end of a session: totals since attach, the top stacks, what was lost."""
    out.write("\n")
    head = "heaptrace summary"
    if seconds is not None:
        head += f" after {seconds:.1f} s"
    render(snap, None, out, top=top, title=head + " (growth: since tracing began)")
    for p in ranked(snap, top):
        for r in callsites(p, {})[:3]:
            if r.counts.live_bytes <= 0:
                continue
            s = max((s for s in p.sites if s.label == r.callsite), key=lambda s: s.counts.live_bytes)
            more = f" (and {r.stacks - 1} other stacks)" if r.stacks > 1 else ""
            out.write(f"  pid {p.pid}: {human(r.counts.live_bytes)} live from {shorten(safe(r.callsite), 40)}"
                      f"{more}, e.g.:\n")
            for f in s.frames[:8]:
                out.write(f"      {shorten(safe(f), WIDTH - 6)}\n")
    if snap.unknown_frees:
        out.write(f"  {snap.unknown_frees:,} frees of blocks allocated before tracing began (ignored)\n")
    if not snap.lost:
        out.write("  nothing lost: every allocation seen was counted\n")
    out.flush()
