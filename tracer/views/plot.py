"""Charts of a CSV session (``heaptrace plot``): live bytes per call site over
time, and each process's memory breakdown over time, as PNG or SVG.

Reading is separate from drawing: :func:`load_sites` and
:func:`load_processes` reduce the CSVs to the few series drawn (memory
bounded by the number of distinct call sites and by the lines drawn, not
by the sites CSV's length; the processes CSV, one row per process and
interval, is read whole); :func:`render` draws them with matplotlib (imported here,
lazily, Agg backend, no display) and returns the file's bytes.

Call sites are ranked by their **peak live bytes** over the session (the
most memory a call site held at any interval end; ties by how much it grew
from its first interval to its last): the plot answers "who held the
memory", and a leak, growing to the end, shows up by its slope. A call site
is one line per process: its stacks are summed (as the live view does).

Names in the CSV are chosen by any user (process names, symbols, file
names): every text drawn goes through :func:`text`, which strips control
characters and escapes ``$`` (so matplotlib never reads a name as mathtext);
LaTeX is never used, whatever the local matplotlibrc says.
"""
from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass, field

import pandas as pd

from ..csvread import CsvFile

KEY = ["pid", "source", "callsite"]
STACK_KEY = ["pid", "source", "stack"]
BREAKDOWN = [("heap_live_bytes", "heap live", "#4C72B0"),
             ("allocator_retained_bytes", "kept by the allocator", "#DD8452"),
             ("mmap_live_bytes", "own mmap (mapped)", "#55A868")]
RSS = ("rss_anon_bytes", "RSS anon", "black")
LABEL_WIDTH = 60

# C0/C1 controls, DEL, line/paragraph separators, bidirectional overrides and isolates.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\u200e\u200f\ufeff]")
_SPACE = re.compile(r"\s+")
_CALLSITE = re.compile(r"^(?P<fn>.*?)(?P<off>\+0x[0-9a-fA-F]+)?(?P<mod> \[[^\[\]]*\])?$", re.S)
_CODE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")


# -- text ------------------------------------------------------------------------

def clean(s: object) -> str:
    """A name as one line of plain text: control characters stripped (line
    breaks and tabs become spaces), runs of white space folded."""
    s = str(s)
    s = s.replace("\n", " ").replace("\r", " ").replace("\t", " ")
    return _SPACE.sub(" ", _CONTROL.sub("", s)).strip()


def escape(s: str) -> str:
    """Every ``$`` escaped: matplotlib shows ``\\$`` as ``$`` and never
    switches to mathtext (which needs an unescaped pair)."""
    return s.replace("$", r"\$")


def text(s: object, limit: int = 120) -> str:
    """Any user-chosen name, ready to draw: cleaned, bounded, escaped."""
    s = clean(s)
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    return escape(s)


def _collapse(fn: str) -> str:
    """``ns::f<long, args>(int, char const*)`` -> ``ns::f<…>(…)``; the name
    unchanged when its brackets do not balance (``operator<<``)."""
    out, depth = [], 0
    pairs = {"<": ">", "(": ")"}
    closing = []
    for ch in fn:
        if ch in pairs:
            if depth == 0:
                out.append(ch + "…")
            closing.append(pairs[ch])
            depth += 1
        elif ch in (">", ")"):
            if not closing or closing.pop() != ch:
                return fn
            depth -= 1
            if depth == 0:
                out.append(ch)
        elif depth == 0:
            out.append(ch)
    return "".join(out) if depth == 0 else fn


def short_callsite(callsite: str, width: int = LABEL_WIDTH) -> str:
    """``function+0xoff [module]`` in at most ``width`` characters, ready to
    draw: the offset and module are kept, a long (C++) function name has its
    template and parameter lists collapsed, then is cut with ``…``."""
    s = clean(callsite)
    m = _CALLSITE.match(s)
    fn, off, mod = (m.group("fn"), m.group("off") or "", m.group("mod") or "") if m else (s, "", "")
    if len(s) > width:
        fn = _collapse(fn)
    if len(mod) > width // 3:
        mod = mod[: width // 3 - 2] + "…]"
    room = max(8, width - len(off) - len(mod))
    if len(fn) > room:
        fn = fn[: room - 1] + "…"
    out = fn + off + mod
    if len(out) > width:
        out = out[: width - 1] + "…"
    return escape(out)


# -- binary units ----------------------------------------------------------------

UNITS = [("B", 1), ("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("TiB", 1 << 40)]


def binary_ticks(vmax: float, target: int = 5) -> tuple[list[float], float, str, int]:
    """Y ticks for bytes from 0 to at least ``vmax``, at round numbers of one
    binary unit: (ticks in bytes, top, unit name, decimals)."""
    vmax = max(float(vmax), 0.0)
    if not math.isfinite(vmax) or vmax <= 0:
        vmax = 1024.0
    name, unit = UNITS[0]
    for n, u in UNITS:
        if vmax >= u:
            name, unit = n, u
    v = vmax / unit
    raw = v / target
    mag = 10 ** math.floor(math.log10(raw))
    step = next(k * mag for k in (1, 2, 2.5, 5, 10) if k * mag >= raw * (1 - 1e-9))
    if name == "B":
        step = max(step, 1.0)
    count = max(1, math.ceil(v / step - 1e-9))
    ticks = [i * step * unit for i in range(count + 1)]
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) if step < 1 else 0
    if step >= 1 and step != int(step):
        decimals = 1
    return ticks, count * step * unit, name, decimals


def _format_bytes(unit_name: str, decimals: int):
    unit = dict(UNITS)[unit_name]

    def fmt(x, _pos=None) -> str:
        if x == 0:
            return "0"
        return f"{x / unit:.{decimals}f} {unit_name}"
    return fmt


# -- what is drawn ---------------------------------------------------------------

@dataclass
class SiteLine:
    pid: int
    comm: str
    source: str
    callsite: str
    peak: int
    values: list[int]           # live bytes at each interval of ``SitesData.times``

    def label(self, several_pids: bool) -> str:
        s = short_callsite(self.callsite)
        if self.source != "malloc":
            s += f" ({text(self.source, 16)})"
        if several_pids:
            s += f" · {text(self.comm, 24)} {self.pid}"
        return s


@dataclass
class SitesData:
    times: list[pd.Timestamp]
    lines: list[SiteLine]
    sites: int                  # call sites in the file (after --pid)
    pids: list[int]             # every pid in the file (after --pid)
    comms: dict[int, str] = field(default_factory=dict)


@dataclass
class ProcessSeries:
    pid: int
    comm: str
    peak: float
    times: list[pd.Timestamp]
    columns: dict[str, list[float]]     # BREAKDOWN and RSS columns, NaN = unknown
    findings: dict[str, pd.Timestamp]   # code -> first interval it was shown
    exited_at: pd.Timestamp | None


@dataclass
class ProcessesData:
    shown: list[ProcessSeries]
    total: int                  # processes in the file (after --pid)
    findings: dict[int, dict[str, pd.Timestamp]] = field(default_factory=dict)  # every process's


def _dedupe(c: pd.DataFrame, key: list[str]) -> pd.DataFrame:
    # Two intervals can share a millisecond timestamp (the last drain): per
    # site and timestamp, its last row holds.
    return c.drop_duplicates([*key, "ts"], keep="last")


def load_sites(f: CsvFile, pids: set[int] | None = None, top: int = 8) -> SitesData:
    """Two passes over the sites CSV: each call site's peak, then the series
    of the ``top`` call sites with the highest peaks."""
    cols = ["pid", "comm", "source", "callsite", "stack", "live_bytes"]
    peak: pd.Series | None = None
    first: pd.Series | None = None   # live bytes at a call site's first and last interval
    last: pd.Series | None = None
    times: set = set()
    comms: dict[int, str] = {}

    def sums(rows: pd.DataFrame) -> pd.Series:
        return _dedupe(rows, STACK_KEY).groupby([*KEY, "ts"], sort=False)["live_bytes"].sum()

    def add(rows: pd.DataFrame) -> None:
        nonlocal peak, first, last
        if not len(rows):
            return
        g = sums(rows).groupby(level=[0, 1, 2], sort=False)  # in file (time) order within each site
        p, a, b = g.max(), g.first(), g.last()
        if peak is None:
            peak, first, last = p, a, b
            return
        peak = pd.concat([peak, p]).groupby(level=[0, 1, 2], sort=False).max()
        first = pd.concat([first, a])
        first = first[~first.index.duplicated(keep="first")]
        last = pd.concat([last, b])
        last = last[~last.index.duplicated(keep="last")]

    carry: pd.DataFrame | None = None
    mine: set = set()
    for chunk in f.chunks(columns=cols):
        times.update(chunk["ts"].unique())
        if pids is not None:
            chunk = chunk[chunk["pid"].isin(pids)]
        if not len(chunk):
            continue
        mine.update(chunk["ts"].unique())
        comms.update(zip(chunk["pid"].tolist(), chunk["comm"].tolist()))
        if carry is not None:
            chunk = pd.concat([carry, chunk], ignore_index=True)
        # An interval's rows are written together; only the chunk's last
        # interval may go on in the next chunk: keep it for then.
        end = chunk["ts"].iloc[-1]
        carry = chunk[chunk["ts"] == end]
        add(chunk[chunk["ts"] != end])
    if carry is not None:
        add(carry)
    # Every interval from the first to the last with a row of these
    # processes: one with no row of theirs is one where they held nothing.
    lo, hi = (min(mine), max(mine)) if mine else (None, None)
    order = sorted(pd.Timestamp(t) for t in times if mine and lo <= t <= hi)
    if peak is None:
        return SitesData(order, [], 0, sorted(comms), comms)
    growth = (last - first).reindex(peak.index).fillna(0)
    ranked = sorted(((int(v), int(d), tuple(k)) for (k, v), d in zip(peak.items(), growth.tolist())),
                    key=lambda r: (-r[0], -r[1], r[2][0], r[2][1], r[2][2]))
    chosen = [r for r in ranked if r[0] > 0][:top]
    lines: list[SiteLine] = []
    if chosen:
        want = pd.MultiIndex.from_tuples([r[2] for r in chosen], names=KEY)
        acc: pd.Series | None = None
        for chunk in f.chunks(columns=cols):
            c = chunk[pd.MultiIndex.from_frame(chunk[KEY]).isin(want)]
            if not len(c):
                continue
            s = _dedupe(c, STACK_KEY)
            acc = s if acc is None else pd.concat([acc, s], ignore_index=True)
            acc = _dedupe(acc, STACK_KEY)
        wide = (acc.groupby([*KEY, "ts"])["live_bytes"].sum().unstack(KEY)
                .reindex(index=pd.DatetimeIndex(order)).fillna(0))
        for pk, _growth, k in chosen:
            values = wide[k].astype("int64").tolist() if k in wide.columns else [0] * len(order)
            lines.append(SiteLine(k[0], comms.get(k[0], "?"), k[1], k[2], pk, values))
    return SitesData(order, lines, len(ranked), sorted(comms), comms)


def _codes(cell: object) -> list[str]:
    return [c for c in (x.strip() for x in str(cell).split(";")) if _CODE.match(c)]


def load_processes(f: CsvFile, pids: set[int] | None = None, top: int = 4) -> ProcessesData:
    """The ``top`` processes by peak RSS anon (or, where it is unknown, by
    what the breakdown adds up to), each with its series."""
    cols = ["pid", "comm", "exited", "findings", RSS[0], *(c for c, _, _ in BREAKDOWN)]
    df = f.read(cols)
    if pids is not None:
        df = df[df["pid"].isin(pids)]
    df = _dedupe(df, ["pid"]).sort_values(["pid", "ts"], kind="stable")
    out: list[ProcessSeries] = []
    for pid, g in df.groupby("pid", sort=True):
        parts = g[[c for c, _, _ in BREAKDOWN]].fillna(0).sum(axis=1)
        rss = g[RSS[0]]
        peak = float(pd.concat([parts, rss], axis=1).max(axis=1, skipna=True).max(skipna=True) or 0)
        findings: dict[str, pd.Timestamp] = {}
        for t, cell in zip(g["ts"], g["findings"]):
            for code in _codes(cell):
                findings.setdefault(code, t)
        ex = g[g["exited"] != 0]
        out.append(ProcessSeries(
            pid=int(pid), comm=str(g["comm"].iloc[-1]), peak=0.0 if math.isnan(peak) else peak,
            times=list(g["ts"]),
            columns={c: g[c].astype("float64").tolist() for c in [RSS[0], *(c for c, _, _ in BREAKDOWN)]},
            findings=findings, exited_at=ex["ts"].iloc[0] if len(ex) else None))
    out.sort(key=lambda p: (-p.peak, p.pid))
    return ProcessesData(out[:top], len(out), {p.pid: p.findings for p in out if p.findings})


# -- drawing ---------------------------------------------------------------------

def _span(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    m, s = divmod(int(round(seconds)), 60)
    if m < 120:
        return f"{m} min {s} s"
    h, m = divmod(m, 60)
    return f"{h} h {m} min"


def _time_scale(span: float) -> tuple[float, str]:
    if span <= 20 * 60:
        return 1.0, "s"
    if span <= 10 * 3600:
        return 60.0, "min"
    return 3600.0, "h"


def title_for(name: str, t0: pd.Timestamp | None, t1: pd.Timestamp | None, intervals: int) -> str:
    head = f"heaptrace: {text(name, 80)}"
    if t0 is None or t1 is None:
        return head + " (no interval)"
    same_day = t0.date() == t1.date()
    end = t1.strftime("%H:%M:%S") if same_day else t1.strftime("%Y-%m-%d %H:%M:%S")
    return (f"{head}\n{t0.strftime('%Y-%m-%d %H:%M:%S')} to {end} UTC "
            f"({_span((t1 - t0).total_seconds())}, {intervals} interval{'s' if intervals != 1 else ''})")


def _findings_marks(ax, marks: dict[float, list[str]], xmax: float) -> list:
    """A dashed line where each finding was first shown, its code(s) on top
    (right of the line, or left of it in the last third of the time axis)."""
    out = []
    for x, codes in sorted(marks.items()):
        ax.axvline(x, color="#C44E52", linestyle="--", linewidth=1, alpha=0.8, zorder=1)
        left = xmax > 0 and x > xmax * 2 / 3
        out.append(ax.annotate(", ".join(codes) if len(codes) <= 2 else "\n".join(codes), xy=(x, 1.0),
                               xycoords=("data", "axes fraction"), xytext=(-3 if left else 3, -3),
                               textcoords="offset points", va="top", ha="right" if left else "left",
                               color="#C44E52", fontsize=8,
                               bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": "none",
                                     "alpha": 0.85}))
    return out


def _unoverlap(fig, labels: list[list]) -> None:
    """Move each axes' finding labels down until none covers another."""
    if not any(labels):
        return
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # lays the figure out: the labels' sizes and places are known
    renderer = canvas.get_renderer()
    for group in labels:
        placed = []
        for ann in group:  # in x order
            box = ann.get_window_extent(renderer)
            down = 0.0
            for _ in range(len(placed) + 1):
                moved = box.translated(0, -down)
                hit = [b for b in placed if b.overlaps(moved)]
                if not hit:
                    break
                down = box.y1 - min(b.y0 for b in hit) + 2
            if down:
                ann.xyann = (ann.xyann[0], -3 - down * 72.0 / fig.dpi)
            placed.append(box.translated(0, -down))


def _y_bytes(ax, vmax: float) -> None:
    from matplotlib.ticker import FixedLocator, FuncFormatter
    ticks, top, unit, decimals = binary_ticks(vmax)
    ax.set_ylim(0, top * 1.04)
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_major_formatter(FuncFormatter(_format_bytes(unit, decimals)))


def _rc() -> dict:
    """matplotlib's defaults, not the local matplotlibrc (which could turn
    on LaTeX, and it runs as root), with text kept as text in SVG."""
    import matplotlib
    rc = {k: v for k, v in matplotlib.rcParamsDefault.items() if k != "backend"}
    rc.update({"text.usetex": False, "svg.fonttype": "none", "svg.hashsalt": "heaptrace",
               "axes.grid": True, "grid.alpha": 0.35, "legend.fontsize": 8, "axes.titlesize": 10,
               "axes.titlelocation": "left", "figure.dpi": 100, "savefig.dpi": 110})
    return rc


def render(sites: SitesData, procs: ProcessesData | None, *, name: str, fmt: str) -> bytes:
    """The figure as ``fmt`` (``png`` or ``svg``) bytes: live bytes per call
    site on top, then one breakdown panel per process."""
    import warnings

    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    shown = procs.shown if procs else []
    all_times = list(sites.times) + [t for p in shown for t in p.times]
    t0 = min(all_times) if all_times else None
    t1 = max(all_times) if all_times else None
    span = (t1 - t0).total_seconds() if t0 is not None else 0.0
    scale, unit = _time_scale(span)
    xmax = span / scale

    def x(ts) -> list[float]:
        return [(t - t0).total_seconds() / scale for t in ts]

    several = len({(ln.pid) for ln in sites.lines}) > 1 or len(sites.pids) > 1
    with warnings.catch_warnings(), matplotlib.rc_context(rc=_rc()):
        warnings.filterwarnings("ignore", message=r".*[Gg]lyph.*missing")
        warnings.filterwarnings("ignore", message=r".*not found.*font", category=UserWarning)
        heights = [4.2] + [2.5] * len(shown)
        fig = Figure(figsize=(13, sum(heights) + 1.2), layout="constrained")
        axes = fig.subplots(len(heights), 1, sharex=True, squeeze=False,
                            gridspec_kw={"height_ratios": heights})[:, 0]
        fig.suptitle(title_for(name, t0, t1, len(set(all_times))), x=0.01, ha="left", fontsize=12)

        ax = axes[0]
        ax.set_title(f"live bytes by call site: top {len(sites.lines)} of {sites.sites} by peak live bytes"
                     if sites.lines else "live bytes by call site")
        ax.set_ylabel("live bytes")
        handles, labels = [], []
        styles = ["-", "--", "-.", ":"]
        marker = "." if len(sites.times) <= 60 else None
        xs = x(sites.times)
        for i, ln in enumerate(sites.lines):
            h, = ax.plot(xs, ln.values, color=matplotlib.colormaps["tab10"](i % 10),
                         linestyle=styles[(i // 10) % len(styles)], marker=marker, markersize=4, linewidth=1.6)
            handles.append(h)
            labels.append(ln.label(several))
        if handles:
            ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        else:
            ax.text(0.5, 0.5, "no call site held memory", transform=ax.transAxes, ha="center", va="center",
                    color="gray")
        _y_bytes(ax, max((max(ln.values, default=0) for ln in sites.lines), default=0))
        marks: dict[float, list[str]] = {}
        for pid, found in sorted((procs.findings if procs else {}).items()):
            for code, t in found.items():
                marks.setdefault(x([t])[0], []).append(text(code, 32) + (f" (pid {pid})" if several else ""))
        labels = [_findings_marks(ax, marks, xmax)]

        for ax, p in zip(axes[1:], shown):
            px = x(p.times)
            parts = [[0.0 if math.isnan(v) else v for v in p.columns[c]] for c, _, _ in BREAKDOWN]
            polys = ax.stackplot(px, *parts, colors=[c for _, _, c in BREAKDOWN], alpha=0.75,
                                 labels=[lbl for _, lbl, _ in BREAKDOWN])
            rss, = ax.plot(px, p.columns[RSS[0]], color=RSS[2], linewidth=1.6, label=RSS[1])
            ax.legend([*polys, rss], [lbl for _, lbl, _ in BREAKDOWN] + [RSS[1]], loc="upper left",
                      bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
            rss_max = max((v for v in p.columns[RSS[0]] if not math.isnan(v)), default=0)
            stack_max = max((sum(vs) for vs in zip(*parts)), default=0)
            _y_bytes(ax, max(rss_max, stack_max))
            ax.set_ylabel("bytes")
            head = f"{text(p.comm, 40)} (pid {p.pid}): peak {_human(p.peak)}"
            if p.exited_at is not None:
                head += " [exited]"
                ax.axvline(x([p.exited_at])[0], color="gray", linestyle=":", linewidth=1)
            ax.set_title(head)
            pm: dict[float, list[str]] = {}
            for code, t in p.findings.items():
                pm.setdefault(x([t])[0], []).append(text(code, 32))
            labels.append(_findings_marks(ax, pm, xmax))

        axes[-1].set_xlabel(f"time since {t0.strftime('%H:%M:%S')} UTC ({unit})" if t0 is not None
                            else "time")
        if t0 is not None and span == 0:
            axes[-1].set_xlim(-1 / scale, 1 / scale)
        _unoverlap(fig, labels)
        buf = io.BytesIO()
        meta = {"Date": None} if fmt == "svg" else {}
        fig.savefig(buf, format=fmt, bbox_inches="tight", metadata=meta or None)
    return buf.getvalue()


def _human(n: float) -> str:
    from .fmt import human
    return human(int(n))
