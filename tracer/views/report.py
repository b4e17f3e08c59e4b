"""Rendering of ``heaptrace report`` and ``heaptrace diff``: plain text (pipes,
``--plain``) and rich tables (a terminal), both within 80 columns.

Every name read from a CSV (process, call site, stack frame, finding code,
file name) goes through :func:`~tracer.views.fmt.safe` and, in rich output,
into ``rich.text.Text`` objects: never interpreted as markup, never sent to
the terminal as escape sequences.
"""
from __future__ import annotations

import textwrap
from typing import Iterable, Sequence

import pandas as pd
from rich.cells import cell_len, set_cell_size
from rich.console import Group
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from ..diffing import Diff, Point
from ..reporting import METRICS, ProcessReport, Report, SiteReport, caller, runs
from .fmt import human, safe

WIDTH = 80


def fit(s: str, width: int) -> str:
    """``s`` within ``width`` terminal cells ('…' where cut)."""
    if width <= 0:
        return ""
    if cell_len(s) <= width:
        return s
    return set_cell_size(s, width - 1).rstrip() + "…"


def _time(t: pd.Timestamp | None, date: bool = False) -> str:
    if t is None:
        return "?"
    return t.strftime("%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S")


def _size(v: float | None) -> str:
    return "?" if v is None else human(int(v))


def _rate(r: float | None) -> str:
    if r is None:
        return "—"
    return "0 B/s" if r == 0 else f"{human(r, True)}/s"


def site_labels(sites: Sequence, *, who) -> list[str]:
    """Labels of the rows of one table: ``who(row)`` (pid or process name)
    and the call site; rows that would read the same name their caller."""
    base = [f"{who(s)}\0{safe(s.label)}" for s in sites]
    out = []
    for s, b in zip(sites, base):
        label = safe(s.label)
        if base.count(b) > 1:
            parent = caller(s.stack, s.callsite)
            if parent:
                label += f" via {safe(parent)}"
        out.append(label)
    return out


# ---------------------------------------------------------------- report


def _interval_runs(ix: Sequence[int], most: int = 4) -> str:
    parts = [f"{a}" if a == b else f"{a}-{b}" for a, b in runs(ix)]
    if len(parts) > most:
        parts = parts[:most] + ["…"]
    return ", ".join(parts)


def _header_lines(r: Report) -> list[str]:
    n = len(r.times)
    span = (r.times[-1] - r.times[0]).total_seconds()
    lines = [fit(f"heaptrace report of {safe(r.path)}", WIDTH)]
    if r.processes_path:
        lines.append(fit(f"  processes: {safe(r.processes_path)}", WIDTH))
    elif r.processes_missing:
        lines += [fit(x, WIDTH) for x in _wrap(safe(r.processes_missing, 400), "  ", "    ")[:4]]
    lines.append(f"  {n} interval{'s' if n != 1 else ''} (0-{n - 1}), {_time(r.times[0], True)} to "
                 f"{_time(r.times[-1])} UTC ({span:.1f} s)")
    who = f"pid {r.pid}" if r.pid is not None else (
        f"{r.total_processes} process{'es' if r.total_processes != 1 else ''}")
    lines.append(f"  {who}, {r.sites} call site{'s' if r.sites != 1 else ''} (process, source, stack)")
    return lines


def _process_title(p: ProcessReport) -> tuple[str, str]:
    """(pid and name, the rest) of a process's first line."""
    name = fit(safe(p.comm, 64), 32)
    rest = " [exited]" if p.exited else ""
    if p.rows:
        rest += f": {p.rows} interval{'s' if p.rows != 1 else ''}, {_time(p.first)} to {_time(p.last)}"
    else:
        rest += f": {_time(p.first)} to {_time(p.last)}"
    return f"pid {p.pid} {name}", rest


def _extras(p: ProcessReport) -> str:
    parts = []
    if p.arenas is not None:
        a = int(p.arenas)
        text = f"{a} arena{'s' if a != 1 else ''}"
        if p.arenas_peak is not None and int(p.arenas_peak) != a:
            text += f" (peak {int(p.arenas_peak)})"
        parts.append(text)
    parts.append("given back: ?" if p.given_back is None else f"given back {human(int(p.given_back))} since attach")
    if p.trimmable is not None:
        parts.append(f"malloc_trim(0) would return {human(int(p.trimmable))}")
    return "; ".join(parts)


def _finding_texts(p: ProcessReport, n: int) -> list[str]:
    out = []
    for f in p.findings:
        k = len(f.intervals)
        where = f"in intervals {_interval_runs(f.intervals)}" if k != 1 else f"in interval {f.intervals[0]}"
        out.append(f"{fit(safe(f.code, 64), 24)} {where} ({'all ' + str(n) if k == n else f'{k} of {n}'})")
    return out


def _sites_text(p: ProcessReport) -> str:
    if not p.sites:
        return "call sites: none in the sites CSV"
    live = ", ".join(f"{human(v)} {safe(src, 16)}" for src, v in sorted(p.live_end.items()) if v) or "0 B"
    return f"call sites: {p.sites}; live at the last interval: {live}"


def _wrap(text: str, first: str, rest: str) -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=first, subsequent_indent=rest) or [first.rstrip()]


def _site_rows(sites: Sequence[SiteReport]) -> list[tuple[str, str, str, str, str]]:
    labels = site_labels(sites, who=lambda s: s.pid)
    return [(str(s.pid), human(s.live), _rate(s.rate), s.trend, lab) for s, lab in zip(sites, labels)]


_SITE_HEAD = ("PID", "live", "growth/s", "trend", "call site")


def _site_titles(r: Report) -> tuple[str, str, str, str]:
    last = f"at the last interval ({len(r.times) - 1}, {_time(r.times[-1])})"
    return (f"top call sites by live bytes {last}", "  no call site holds memory at the last interval",
            "fastest-growing call sites (live bytes/s from their first row to their last)",
            "  no call site grew")


def _plain_table(head: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool],
                 indent: int = 2, gaps: Sequence[int] | None = None, wrap: int = 3) -> list[str]:
    """Columns sized to their content, ``gaps[i]`` spaces after column i; the
    last one gets what is left of 80, wrapped onto at most ``wrap`` lines."""
    widths = [max([cell_len(h)] + [cell_len(r[i]) for r in rows]) for i, h in enumerate(head[:-1])]
    gaps = list(gaps) if gaps is not None else [2] * len(widths)
    lead = indent + sum(widths) + sum(gaps)
    last_w = max(12, WIDTH - lead)
    out = []
    for cells in [list(head)] + [list(r) for r in rows]:
        parts = []
        for i, c in enumerate(cells[:-1]):
            pad = " " * (widths[i] - cell_len(c))
            parts.append((pad + c if right[i] else c + pad) + " " * gaps[i])
        text = cells[-1]
        lines = [text] if cell_len(text) <= last_w else textwrap.wrap(
            text, last_w - 2, break_on_hyphens=False) or [""]
        if len(lines) > wrap:
            lines = lines[:wrap - 1] + [fit(" ".join(lines[wrap - 1:]), last_w)]
        out.append(" " * indent + "".join(parts) + fit(lines[0], last_w))
        out += [" " * (lead + 2) + fit(x, last_w - 2) for x in lines[1:]]
    return [fit(line.rstrip(), WIDTH) for line in out]


def report_lines(r: Report) -> list[str]:
    """The report as plain text lines, each at most 80 columns."""
    out = _header_lines(r)
    n = len(r.times)
    for p in r.processes:
        title, rest = _process_title(p)
        out.append("")
        out.append(fit(title + rest, WIDTH))
        if p.rows:
            rows = [(label, *(_size(getattr(p.memory[col], k)) for k in ("first", "last", "peak")))
                    for col, label in METRICS]
            out += _plain_table(("", "first", "last", "peak", ""), [(*x, "") for x in rows],
                                (False, True, True, True))
            out += _wrap(_extras(p), "  ", "    ")
            texts = _finding_texts(p, n)
            if not texts:
                out.append("  findings: none")
            for i, t in enumerate(texts):
                out += _wrap(t, "  findings: " if i == 0 else " " * 12, " " * 14)
        elif r.processes_path:
            out.append("  not in the processes CSV: no breakdown, no findings")
        out += _wrap(_sites_text(p), "  ", "    ")
    if r.more_processes:
        out.append("")
        out.append(f"({r.more_processes} more process{'es' if r.more_processes != 1 else ''}: "
                   "raise --top, or --pid P for one)")
    t_live, none_live, t_growth, none_growth = _site_titles(r)
    right = (True, True, True, False)
    for title, sites, empty in ((t_live, r.top_live, none_live), (t_growth, r.top_growth, none_growth)):
        out.append("")
        out.append(fit(title, WIDTH))
        out += _plain_table(_SITE_HEAD, _site_rows(sites), right, gaps=(1, 1, 2, 2)) if sites else [empty]
    return out


def _rich_sites(sites: Sequence[SiteReport]) -> Table:
    t = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for h in _SITE_HEAD[:-1]:
        t.add_column(h, justify="left" if h == "trend" else "right", no_wrap=True)
    t.add_column("call site", overflow="fold")
    for s, (pid, live, rate, trend, label) in zip(sites, _site_rows(sites)):
        t.add_row(pid, live, Text(rate, style="red" if (s.rate or 0) > 0 else ""), Text(trend, style="cyan"),
                  Text(label))
    return t


def report_renderable(r: Report):
    """The report for a terminal: rich tables, names as ``Text``."""
    head = _header_lines(r)
    parts: list = [Text(head[0], style="bold", no_wrap=True, overflow="ellipsis")]
    parts += [Text(x, style="dim", no_wrap=True, overflow="ellipsis") for x in head[1:]]
    n = len(r.times)
    for p in r.processes:
        title, rest = _process_title(p)
        line = Text("\n")
        line.append(title, style="bold")
        line.append(rest, style="dim")
        parts.append(line)
        body: list = []
        if p.rows:
            t = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
            t.add_column("", no_wrap=True, min_width=10)
            for h in ("first", "last", "peak"):
                t.add_column(h, justify="right", no_wrap=True, min_width=9)
            for col, label in METRICS:
                sp = p.memory[col]
                t.add_row(label, _size(sp.first), _size(sp.last), _size(sp.peak))
            body.append(t)
            body.append(Text(_extras(p)))
            texts = _finding_texts(p, n)
            if not texts:
                body.append(Text("findings: none", style="dim"))
            for t_ in texts:
                line = Text("finding: ", style="bold")
                line.append(t_, style="yellow")
                body.append(line)
        elif r.processes_path:
            body.append(Text("not in the processes CSV: no breakdown, no findings", style="dim"))
        body.append(Text(_sites_text(p), style="dim"))
        parts.append(Padding(Group(*body), (0, 0, 0, 2)))
    if r.more_processes:
        parts.append(Text(f"\n({r.more_processes} more process{'es' if r.more_processes != 1 else ''}: "
                          "raise --top, or --pid P for one)", style="dim"))
    t_live, none_live, t_growth, none_growth = _site_titles(r)
    for title, sites, empty in ((t_live, r.top_live, none_live), (t_growth, r.top_growth, none_growth)):
        parts.append(Text("\n" + title, style="bold"))
        parts.append(Padding(_rich_sites(sites) if sites else Text(empty.strip(), style="dim"), (0, 0, 0, 2)))
    return Group(*parts)


# ---------------------------------------------------------------- diff


def _point(label: str, p: Point) -> str:
    if p.count == 1:
        which = "the only one"
    elif p.index == p.count - 1:
        which = f"the last of {p.count}"
    elif p.index == 0:
        which = f"the first of {p.count}"
    else:
        which = f"of 0-{p.count - 1}"
    return fit(f"  {label} {safe(p.path)}, interval {p.index} ({which}), {_time(p.ts, True)} UTC", WIDTH)


def _diff_header(d: Diff) -> list[str]:
    how = ("sites matched by process ID and stack (one session)" if d.by_pid
           else "sites matched by process name and stack (PIDs differ between sessions)")
    return ["heaptrace diff: live bytes by call site, new minus base", _point("base:", d.base),
            _point("new: ", d.new), f"  {how}"]


def change_labels(d: Diff) -> list[str]:
    who = (lambda c: f"{c.pid} {fit(safe(c.comm, 64), 16)}") if d.by_pid else (lambda c: fit(safe(c.comm, 64), 16))
    sites = site_labels(d.rows, who=lambda c: (c.pid, c.comm))
    return [f"{who(c)}: {s}" for c, s in zip(d.rows, sites)]


def _diff_cells(d: Diff) -> tuple[list[tuple[str, str, str, str]], tuple[str, str, str, str], str | None]:
    rows = [(human(c.change, True), human(c.base), human(c.new), lab) for c, lab in zip(d.rows, change_labels(d))]
    n = d.changed
    total = (human(d.total_new - d.total_base, True), human(d.total_base), human(d.total_new),
             f"total ({n} of {d.sites} call site{'s' if d.sites != 1 else ''} changed)")
    more = None
    if d.more:
        more = f"({d.more} more call site{'s' if d.more != 1 else ''}: {human(d.more_change, True)}; raise --top)"
    return rows, total, more


_DIFF_HEAD = ("change", "base", "new", "call site")


def diff_lines(d: Diff) -> list[str]:
    out = _diff_header(d)
    out.append("")
    rows, total, more = _diff_cells(d)
    body = rows + ([("", "", "", more)] if more else [])
    if not rows:
        body = [("", "", "", "no call site changed")]
    table = _plain_table(_DIFF_HEAD, body + [total], (True, True, True, False))
    return out + table


def diff_renderable(d: Diff):
    head = _diff_header(d)
    parts: list = [Text(head[0], style="bold")] + [Text(x, style="dim", no_wrap=True, overflow="ellipsis")
                                                    for x in head[1:]]
    rows, total, more = _diff_cells(d)
    t = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for h in _DIFF_HEAD[:-1]:
        t.add_column(h, justify="right", no_wrap=True)
    t.add_column("call site", overflow="fold")
    for c, (ch, b, n, lab) in zip(d.rows, rows):
        t.add_row(Text(ch, style="red" if c.change > 0 else "green"), b, n, Text(lab))
    if more:
        t.add_row("", "", "", Text(more, style="dim", no_wrap=True, overflow="ellipsis"))
    if not rows:
        t.add_row("", "", "", Text("no call site changed", style="dim"))
    t.add_section()
    t.add_row(Text(total[0], style="bold"), Text(total[1], style="bold"), Text(total[2], style="bold"),
              Text(total[3], style="bold", no_wrap=True, overflow="ellipsis"))
    parts += [Text(""), Padding(t, (0, 0, 0, 2))]
    return Group(*parts)


def write_lines(lines: Iterable[str], out) -> None:
    for line in lines:
        out.write(line + "\n")
    out.flush()
