"""Plain-text rendering: for pipes, logs, ``--plain`` and the final summary."""
from __future__ import annotations

import textwrap
from typing import TextIO

from rich.cells import cell_len

from ..model import Snapshot, callsites, groups, growing, growth, process_growth
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
        state = (" [exited]" if p.exited else "") + state_of(p)
        out.write(f"  {p.pid:>7} {human(t.live_bytes):>10} {t.live_allocs:>9,} {human(pg[p.pid], True):>11}"
                  f"  {shorten(safe(p.comm, 64), name_w - len(state))}{state}\n")
        m = snap.memory.get(p.pid)
        if m is not None:
            out.write(f"  {'':>7} {memory_line(m)}\n")
        for r in callsites(p, g)[:top]:
            out.write(f"  {'':>7} {human(r.counts.live_bytes):>10} {r.counts.live_allocs:>9,} "
                      f"{human(r.growth, True):>11}    {shorten(safe(r.callsite), name_w - 2)}\n")
    if snap.every:
        render_groups(snap, prev, out)
    for f in snap.findings[:top]:
        out.write(f"  ! {shorten(safe(f.code + ' ' + str(f.pid) + ': ' + f.subject), WIDTH - 4)}\n")
    for reason, n in sorted(snap.lost.items()):
        out.write(f"  LOST: {n:,} {reason}\n")
    out.flush()


def group_lines(snap: Snapshot, prev: Snapshot | None, top: int = 3) -> list[str]:
    """--all: who grows fastest, and the biggest command names and cgroups."""
    out = []
    fast = growing(snap, prev, top)
    if fast:
        out.append("growing: " + ", ".join(f"{p.pid} {shorten(safe(p.comm, 64), 16)} {human(g, True)}"
                                           for p, g in fast))
    for label, key in (("by command", lambda p: p.comm), ("by cgroup", lambda p: p.cgroup or "?")):
        rows = groups(snap, prev, key)[:top]
        if rows and (len(rows) > 1 or rows[0].processes > 1):
            out.append(f"{label}: " + ", ".join(
                f"{shorten(safe(r.name, 200), 28)} ({r.processes}) {human(r.live_bytes)}"
                + (f" {human(r.growth, True)}" if r.growth else "") for r in rows))
    return out


def render_groups(snap: Snapshot, prev: Snapshot | None, out: TextIO) -> None:
    for line in group_lines(snap, prev):
        out.write(f"  {shorten(line, WIDTH - 2)}\n")


def state_of(p) -> str:
    """What the budget left traced of a process (--all), for its name."""
    return {"sampled": " [sampled]", "released": " [probes off]"}.get(p.mode, "")


def memory_line(m) -> str:
    """The breakdown in one line of at most 72 columns."""
    rss = human(m.rss_anon) if m.rss_anon is not None else "?"
    parts = [f"rss {rss}", f"heap {human(m.heap_live)}", f"kept {human(m.retained)}"]
    if m.mmap_live:
        parts.append(f"mmap {human(m.mmap_live)}")
    if m.arenas is not None:
        parts.append(f"{m.arenas} arena{'s' if m.arenas != 1 else ''}")
    if m.given_back:
        parts.append(f"back {human(m.given_back)}")
    return shorten(", ".join(parts), 72)


def render_findings(snap: Snapshot, out: TextIO, *, top: int = 10) -> None:
    """Every finding with its evidence and advice, wrapped to 80 columns."""
    if not snap.findings:
        out.write("  findings: none (no sustained growth, nothing kept by the allocator)\n")
        return
    out.write("  findings:\n")
    for f in snap.findings[:top]:
        comm = snap.processes[f.pid].comm if f.pid in snap.processes else "?"
        head = f"  {shorten(safe(f.code, 64), 24)} in pid {f.pid} ({shorten(safe(comm, 64), 24)}): "
        out.write(f"{head}{shorten(safe(f.subject), max(8, WIDTH - cell_len(head)))}\n")
        for label, text in (("evidence", f.evidence), ("advice", f.advice)):
            out.write(textwrap.fill(safe(text, 2000), WIDTH, initial_indent=f"    {label}: ",
                                    subsequent_indent="      ") + "\n")


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
            head = f"  pid {p.pid}: {human(r.counts.live_bytes)} live from "
            out.write(f"{head}{shorten(safe(r.callsite), min(40, WIDTH - len(head) - len(more) - 7))}"
                      f"{more}, e.g.:\n")
            for f in s.frames[:8]:
                out.write(f"      {shorten(safe(f), WIDTH - 6)}\n")
    for p in ranked(snap, top):
        m = snap.memory.get(p.pid)
        if m is None:
            continue
        c = m.census
        text = (f"pid {p.pid} memory: RSS (anon) {human(m.rss_anon or 0)}; the program holds "
                f"{human(m.heap_live)} through malloc and {human(m.mmap_live)} in its own mappings; "
                f"the allocator keeps {human(m.retained)} more")
        if m.brk_size:
            text += f"; brk heap {human(m.brk_size)}"
        if c is not None:
            text += (f"; {c.arenas} arena{'s' if c.arenas != 1 else ''}, malloc_trim(0) would "
                     f"return ~{human(c.trimmable)}")
        if m.given_back is not None:
            text += f"; given back since attach {human(m.given_back)}"
        out.write(textwrap.fill(text, WIDTH, initial_indent="  ", subsequent_indent="    ") + "\n")
    render_findings(snap, out, top=top)
    if snap.unknown_frees:
        out.write(f"  {snap.unknown_frees:,} frees of blocks allocated before tracing began (ignored)\n")
    if not snap.lost:
        out.write("  nothing lost: every allocation seen was counted\n")
    out.flush()
