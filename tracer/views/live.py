"""The rich live view: top processes and their top call sites.

Names go into ``rich.text.Text`` objects, never into markup strings, so a
process called ``[bold]x`` is shown as typed.
"""
from __future__ import annotations

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ..model import Snapshot, callsites, growth, process_growth
from .fmt import human, safe
from .plain import group_lines, ranked, state_of


def renderable(snap: Snapshot, prev: Snapshot | None, *, top: int = 10, sites_per_process: int = 5,
               status: str = ""):
    g = growth(snap, prev)
    pg = process_growth(snap, prev)
    t = Table(box=None, pad_edge=False, expand=False, show_edge=False, header_style="bold")
    t.add_column("PID", justify="right", no_wrap=True, width=7)
    t.add_column("live", justify="right", no_wrap=True, width=10)
    t.add_column("blocks", justify="right", no_wrap=True, width=9)
    t.add_column("growth", justify="right", no_wrap=True, width=11)
    t.add_column("process / call site", no_wrap=True, overflow="ellipsis", max_width=36)
    for p in ranked(snap, top):
        tot = p.totals
        name = Text(safe(p.comm, 64), style="bold")
        if p.exited:
            name.append(" [exited]", style="dim")
        name.append(state_of(p), style="yellow")
        t.add_row(str(p.pid), human(tot.live_bytes), f"{tot.live_allocs:,}",
                  Text(human(pg[p.pid], True), style="red" if pg[p.pid] > 0 else ""), name)
        for r in callsites(p, g)[:sites_per_process]:
            t.add_row("", human(r.counts.live_bytes), f"{r.counts.live_allocs:,}",
                      Text(human(r.growth, True), style="red" if r.growth > 0 else ""),
                      Text("  " + safe(r.callsite)))
    parts: list = [Text(f"heaptrace {snap.timestamp.strftime('%H:%M:%S')}  {status}", style="dim"), t]
    if snap.memory:
        parts.append(memory_table(snap, top))
    if not snap.processes:
        parts.append(Text("no allocations seen yet"))
    if snap.every:
        for line in group_lines(snap, prev):
            parts.append(Text(line, style="cyan", no_wrap=True, overflow="ellipsis"))
    for f in snap.findings[:top]:
        line = Text(f"{f.code} ", style="bold yellow")
        line.append(f"pid {f.pid} {safe(f.subject)}: {safe(f.evidence, 300)}")
        parts.append(line)
    for reason, n in sorted(snap.lost.items()):
        parts.append(Text(f"LOST: {n:,} {reason}", style="bold red"))
    return Group(*parts)


def memory_table(snap: Snapshot, top: int) -> Table:
    """The per-process breakdown: what the program holds, what the allocator keeps."""
    t = Table(box=None, pad_edge=False, show_edge=False, header_style="bold", title_justify="left")
    t.add_column("PID", justify="right", no_wrap=True, width=7)
    for name in ("rss", "heap", "kept", "mmap"):
        t.add_column(name, justify="right", no_wrap=True, min_width=9)
    t.add_column("arenas", justify="right", no_wrap=True, min_width=6)
    t.add_column("given back", justify="right", no_wrap=True, min_width=10)
    for p in ranked(snap, top):
        m = snap.memory.get(p.pid)
        if m is None:
            continue
        t.add_row(str(p.pid), human(m.rss_anon) if m.rss_anon is not None else "?", human(m.heap_live),
                  Text(human(m.retained), style="yellow" if m.retained >= 32 << 20 else ""),
                  human(m.mmap_live), "" if m.arenas is None else str(m.arenas),
                  "" if m.given_back is None else human(m.given_back))
    return t


class LiveView:
    """Redraws in place on a terminal; ``update`` once per interval."""

    def __init__(self, console: Console | None = None, top: int = 10):
        self.console = console or Console(stderr=False)
        self.top = top
        self._live = Live(Text("heaptrace: waiting for the first interval"), console=self.console,
                          auto_refresh=False, transient=False)

    def __enter__(self) -> "LiveView":
        self._live.__enter__()
        return self

    def update(self, snap: Snapshot, prev: Snapshot | None, status: str = "") -> None:
        self._live.update(renderable(snap, prev, top=self.top, status=status), refresh=True)

    def __exit__(self, *exc) -> None:
        self._live.__exit__(*exc)
