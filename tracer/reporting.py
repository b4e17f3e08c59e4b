"""What ``heaptrace report`` shows, computed from a session's CSV files.

Pure: no output, no terminal; :mod:`tracer.views.report` renders a
:class:`Report`. The files are read in chunks (:mod:`tracer.csvread`), and
every accumulator is keyed by site or by process, so memory is bounded by
the number of distinct sites, not by the number of rows (the finding
occurrences and the timeline are per interval: a few bytes each).

* The session's timeline is every interval either file has a row for.
* Per process, from the processes CSV: the first, last and peak known value
  of RSS (anon), heap live, kept and mmap; given back, arenas and what
  ``malloc_trim(0)`` would return (last known); each finding code with the
  intervals its ``findings`` cell named it in.
* Per site (``review.KEY``): its live bytes at the last interval (0 when it
  has no row then: it held nothing), its growth rate (live bytes per second
  from its first row to its last, ``None`` with a single row) and its trend
  (live bytes at every interval, from :func:`tracer.review.series`, drawn as
  a sparkline).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from . import review
from .csvread import CsvError, CsvFile
from .errors import UsageError
from .exporters.folded import split_stack

KEY = review.KEY
TREND_WIDTH = 10
SPARKS = " ▁▂▃▄▅▆▇█"

# (processes CSV column, label): the breakdown's first/last/peak rows
METRICS = (("rss_anon_bytes", "RSS (anon)"), ("heap_live_bytes", "heap live"),
           ("allocator_retained_bytes", "kept"), ("mmap_live_bytes", "mmap"))
_LAST_ONLY = ("given_back_bytes", "trimmable_bytes", "arenas", "exited", "comm")


@dataclass(frozen=True)
class Span:
    """One number over a process's rows: first, last and peak known values
    (None: never known)."""

    first: float | None
    last: float | None
    peak: float | None


@dataclass(frozen=True)
class FindingSpan:
    code: str
    intervals: tuple[int, ...]   # indices into Report.times, ascending


@dataclass
class ProcessReport:
    pid: int
    comm: str
    rows: int = 0                       # rows in the processes CSV (0: none)
    first: pd.Timestamp | None = None   # its first and last interval in either file
    last: pd.Timestamp | None = None
    exited: bool = False
    memory: dict[str, Span] = field(default_factory=dict)   # METRICS column -> span
    given_back: float | None = None
    trimmable: float | None = None
    arenas: float | None = None
    arenas_peak: float | None = None
    findings: list[FindingSpan] = field(default_factory=list)
    sites: int = 0                      # distinct sites in the sites CSV
    live_end: dict[str, int] = field(default_factory=dict)  # source -> live bytes at the last interval


@dataclass(frozen=True)
class SiteReport:
    pid: int
    comm: str
    source: str
    callsite: str
    stack: str
    live: int            # at the session's last interval
    live_allocs: int
    peak: int
    first: pd.Timestamp  # its first and last row
    last: pd.Timestamp
    growth: int          # live bytes of its last row minus its first
    rate: float | None   # growth / seconds between them (None: one row)
    trend: str = ""

    @property
    def label(self) -> str:
        return site_label(self.callsite, self.source)


@dataclass
class Report:
    path: str
    processes_path: str | None           # the processes CSV read, if any
    processes_missing: str | None        # why there is none (one line), if so
    times: list[pd.Timestamp]
    processes: list[ProcessReport]       # the top ones, ranked
    more_processes: int
    top_live: list[SiteReport]
    top_growth: list[SiteReport]
    sites: int                           # distinct sites (of the chosen process)
    total_processes: int
    pid: int | None = None
    notes: list[str] = field(default_factory=list)

    def index(self, t: pd.Timestamp) -> int:
        return self.times.index(t)


def site_label(callsite: str, source: str) -> str:
    """The call site as the views show it: direct mappings are marked."""
    return callsite if source == "malloc" else f"{callsite} ({source})"


def caller(stack: str, callsite: str) -> str:
    """The frame that called ``callsite`` in a folded stack ('' if none).
    A call site holding a ``;`` (a symbol name) is one frame: the stack is
    then split as the exporters split it."""
    frames = split_stack(stack) if ";" in callsite and stack else stack.split(";")
    for i in range(len(frames) - 1, 0, -1):
        if frames[i] == callsite:
            return frames[i - 1]
    return frames[-2] if len(frames) > 1 else ""


def sparkline(values: Sequence[float], width: int = TREND_WIDTH) -> str:
    """Live bytes over the intervals in at most ``width`` characters, scaled
    from 0 to the largest (each character: the largest value it covers;
    a blank: nothing held)."""
    v = np.asarray(values, dtype="float64")
    if not len(v):
        return ""
    if len(v) > width:
        v = np.array([b.max() for b in np.array_split(v, width)])
    top = float(v.max())
    if top <= 0:
        return " " * len(v)
    out = []
    for x in v:
        out.append(SPARKS[0] if x <= 0 else SPARKS[max(1, min(8, math.ceil(x / top * 8)))])
    return "".join(out)


def _merge_first(acc: pd.DataFrame | None, part: pd.DataFrame, key, keep: str) -> pd.DataFrame:
    part = part.drop_duplicates(key, keep=keep)
    if acc is None:
        return part
    return pd.concat([acc, part], ignore_index=True).drop_duplicates(key, keep=keep)


def _sites(f: CsvFile) -> tuple[pd.DataFrame, set]:
    """One row per site: its first row's time and live bytes, its last row,
    its peak; and the interval times seen."""
    cols = [*KEY, "comm", "callsite", "live_bytes", "live_allocs"]
    times: set = set()
    first = last = peak = None
    for chunk in f.chunks(columns=cols):
        if not len(chunk):
            continue
        c = chunk[[*cols, "ts"]].sort_values("ts", kind="stable")
        times.update(pd.Timestamp(t) for t in c["ts"].unique())
        first = _merge_first(first, c[[*KEY, "ts", "live_bytes"]], KEY, "first")
        last = _merge_first(last, c, KEY, "last")
        p = c.groupby(KEY, sort=False)["live_bytes"].max()
        peak = p if peak is None else pd.concat([peak, p]).groupby(level=list(range(len(KEY)))).max()
    if last is None:
        return pd.DataFrame(columns=[*cols, "ts", "first_ts", "first_live", "peak"]), times
    out = last.set_index(KEY)
    fi = first.set_index(KEY).rename(columns={"ts": "first_ts", "live_bytes": "first_live"})
    out = out.join(fi).join(peak.rename("peak"))
    return out.reset_index(), times


def _processes(f: CsvFile) -> tuple[dict[int, dict], dict[tuple[int, str], list], set]:
    """Per pid: first/last/peak of the breakdown, last known of the rest, row
    count, first/last time; per (pid, code): the times the code was named."""
    nums = [m for m, _ in METRICS]
    times: set = set()
    acc: dict[str, pd.DataFrame] = {}
    occ: dict[tuple[int, str], list] = {}
    for chunk in f.chunks():
        if not len(chunk):
            continue
        c = chunk.sort_values("ts", kind="stable")
        times.update(pd.Timestamp(t) for t in c["ts"].unique())
        g = c.groupby("pid", sort=False)
        parts = {
            "first": g[nums].first(),
            "last": g[[*nums, *_LAST_ONLY]].last(),
            "peak": g[[*nums, "arenas"]].max(),
            "rows": g.size().to_frame("rows"),
            "t0": g["ts"].min().to_frame("ts"),
            "t1": g["ts"].max().to_frame("ts"),
        }
        how = {"first": "first", "last": "last", "peak": "max", "rows": "sum", "t0": "min", "t1": "max"}
        for name, part in parts.items():
            acc[name] = part if name not in acc else getattr(
                pd.concat([acc[name], part]).groupby(level=0), how[name])()
        fc = c.loc[c["findings"].str.len() > 0, ["pid", "ts", "findings"]]
        if len(fc):
            ex = fc.assign(code=fc["findings"].str.split(";")).explode("code")
            ex = ex[ex["code"].notna() & (ex["code"].astype(str).str.len() > 0)]
            for (pid, code), grp in ex.groupby(["pid", "code"], sort=False):
                occ.setdefault((int(pid), str(code)), []).append(_naive_ns(grp["ts"]))
    out: dict[int, dict] = {}
    if not acc:
        return out, occ, times
    for pid in acc["rows"].index:
        first, last, peak = acc["first"].loc[pid], acc["last"].loc[pid], acc["peak"].loc[pid]
        out[int(pid)] = {
            "memory": {m: Span(_num(first[m]), _num(last[m]), _num(peak[m])) for m in nums},
            "given_back": _num(last["given_back_bytes"]), "trimmable": _num(last["trimmable_bytes"]),
            "arenas": _num(last["arenas"]), "arenas_peak": _num(peak["arenas"]),
            "exited": bool(_num(last["exited"]) or 0), "comm": str(last["comm"]),
            "rows": int(acc["rows"].loc[pid, "rows"]),
            "t0": pd.Timestamp(acc["t0"].loc[pid, "ts"]), "t1": pd.Timestamp(acc["t1"].loc[pid, "ts"]),
        }
    return out, occ, times


def _num(v) -> float | None:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def build(sites: CsvFile, processes: CsvFile | None = None, *, pid: int | None = None, top: int = 10,
          processes_missing: str | None = None) -> Report:
    """Everything ``heaptrace report`` shows. Raises CsvError for a file with
    no interval, UsageError for a ``pid`` the files do not hold."""
    if top < 1:
        raise UsageError(f"--top {top}: show at least 1")
    st, times = _sites(sites)
    procs, occ, ptimes = {}, {}, set()
    if processes is not None:
        try:
            procs, occ, ptimes = _processes(processes)
        except CsvError as e:  # the sites CSV alone still makes a report
            processes, processes_missing = None, f"processes CSV not used: {e}"
    timeline = sorted(times | ptimes)
    if not timeline:
        raise CsvError(f"{sites.path} holds no interval yet: was the session stopped before its first "
                       "one? (heaptrace writes a row every interval)")
    end = timeline[-1]
    st["ts"] = pd.to_datetime(st["ts"], utc=True)
    st["first_ts"] = pd.to_datetime(st["first_ts"], utc=True)
    pids = sorted(set(int(p) for p in st["pid"]) | set(procs))
    if pid is not None:
        if pid not in pids:
            have = ", ".join(map(str, pids[:12])) + (", ..." if len(pids) > 12 else "")
            raise UsageError(f"--pid {pid}: no such process in {sites.path} "
                             f"(it has {'pid' if len(pids) == 1 else 'pids'} {have})")
        st = st[st["pid"] == pid]
        pids = [pid]
    # sites: live at the end, growth rate
    rows: list[SiteReport] = []
    for r in st.itertuples(index=False):
        t0, t1 = pd.Timestamp(r.first_ts), pd.Timestamp(r.ts)
        secs = (t1 - t0).total_seconds()
        growth = int(r.live_bytes) - int(r.first_live)
        rows.append(SiteReport(
            pid=int(r.pid), comm=str(r.comm), source=str(r.source), callsite=str(r.callsite),
            stack=str(r.stack), live=int(r.live_bytes) if t1 == end else 0,
            live_allocs=int(r.live_allocs) if t1 == end else 0, peak=int(r.peak), first=t0, last=t1,
            growth=growth, rate=growth / secs if secs > 0 else None))
    by_live = sorted((s for s in rows if s.live > 0), key=lambda s: (-s.live, s.pid, s.label, s.stack))[:top]
    by_growth = sorted((s for s in rows if s.rate is not None and s.rate > 0),
                       key=lambda s: (-(s.rate or 0), -s.live, s.pid, s.label, s.stack))[:top]
    shown = {(s.pid, s.source, s.stack): None for s in by_live + by_growth}
    trends: dict[tuple, str] = {}
    if shown:
        ser = review.series(sites, list(shown), times=timeline)
        trends = {k: sparkline(ser[k].to_numpy()) for k in shown}
    by_live = [_with_trend(s, trends) for s in by_live]
    by_growth = [_with_trend(s, trends) for s in by_growth]
    # processes
    index = pd.DatetimeIndex(_naive_ns(pd.Series(timeline)))
    by_pid: dict[int, list[SiteReport]] = {}
    for s in rows:
        by_pid.setdefault(s.pid, []).append(s)
    out: list[ProcessReport] = []
    for p in pids:
        mine = by_pid.get(p, [])
        info = procs.get(p)
        live_end: dict[str, int] = {}
        for s in mine:
            live_end[s.source] = live_end.get(s.source, 0) + s.live
        firsts = [s.first for s in mine] + ([info["t0"]] if info else [])
        lasts = [s.last for s in mine] + ([info["t1"]] if info else [])
        comm = info["comm"] if info else (max(mine, key=lambda s: s.last).comm if mine else "?")
        pr = ProcessReport(pid=p, comm=comm, first=min(firsts), last=max(lasts), sites=len(mine),
                           live_end=live_end)
        if info:
            pr.rows, pr.exited, pr.memory = info["rows"], info["exited"], info["memory"]
            pr.given_back, pr.trimmable = info["given_back"], info["trimmable"]
            pr.arenas, pr.arenas_peak = info["arenas"], info["arenas_peak"]
            codes = sorted({c for (q, c) in occ if q == p}, key=_code_order)
            for code in codes:
                ix = np.unique(index.get_indexer(np.concatenate(occ[(p, code)])))
                pr.findings.append(FindingSpan(code, tuple(int(i) for i in ix if i >= 0)))
        out.append(pr)
    out.sort(key=_process_rank)
    return Report(path=sites.path, processes_path=processes.path if processes is not None else None,
                  processes_missing=processes_missing, times=timeline, processes=out[:top],
                  more_processes=max(0, len(out) - top), top_live=by_live, top_growth=by_growth,
                  sites=len(rows), total_processes=len(out), pid=pid)


def _naive_ns(ts: pd.Series) -> np.ndarray:
    """UTC times as naive datetime64[ns] (one unit whatever pandas parsed)."""
    return pd.to_datetime(ts, utc=True).dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")


_CODE_ORDER = ("leak", "mmap-leak", "allocator-retention", "arena-bloat")


def _code_order(code: str):
    return (_CODE_ORDER.index(code), "") if code in _CODE_ORDER else (len(_CODE_ORDER), code)


def _process_rank(p: ProcessReport):
    rss = p.memory.get("rss_anon_bytes")
    peak = rss.peak if rss is not None and rss.peak is not None else -1
    return (-peak, -sum(p.live_end.values()), p.pid)


def _with_trend(s: SiteReport, trends: dict) -> SiteReport:
    from dataclasses import replace
    return replace(s, trend=trends.get((s.pid, s.source, s.stack), ""))


def runs(indices: Sequence[int]) -> list[tuple[int, int]]:
    """Consecutive indices as (first, last) runs: [0,1,2,5] -> [(0,2),(5,5)]."""
    out: list[tuple[int, int]] = []
    for i in indices:
        if out and i == out[-1][1] + 1:
            out[-1] = (out[-1][0], i)
        else:
            out.append((i, i))
    return out
