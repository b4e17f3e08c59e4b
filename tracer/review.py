"""What a sites CSV says at a point in time, and over time (offline review).

Shared by ``report``, ``diff``, ``export`` and ``plot``. Pure over the rows of
:mod:`tracer.csvread` (memory bounded by the number of distinct sites, not
by the file). The rule the writer follows: every interval writes a row for
each site holding memory, and for a site holding none when it first appears
or changes. So the state at an interval is, per site, its last row at or
before that interval's timestamp; a site absent from an interval holds
nothing then (its cumulative counts are those of its last row).
"""
from __future__ import annotations

from typing import Iterable

import pandas as pd

from .csvread import CsvError, CsvFile

KEY = ["pid", "source", "stack"]
COUNTS = ["live_bytes", "live_allocs", "alloc_bytes", "allocs", "frees"]


def intervals(f: CsvFile) -> list[pd.Timestamp]:
    """The distinct interval timestamps, in order."""
    seen: set = set()
    for chunk in f.chunks(columns=["timestamp"]):
        seen.update(chunk["ts"].unique())
    return sorted(pd.Timestamp(t) for t in seen)


def pick(times: list[pd.Timestamp], at: str | None) -> pd.Timestamp:
    """The interval ``--at`` names: ``None``/``last`` (the last one),
    ``first``, an index (``0``, ``-1``, ``-2``...), or an ISO-8601 time (the
    last interval at or before it; UTC unless it says otherwise)."""
    if not times:
        raise CsvError("the file holds no interval yet: was the session stopped before its first one?")
    if at is None or at == "last":
        return times[-1]
    if at == "first":
        return times[0]
    try:
        i = int(at)
    except ValueError:
        pass
    else:
        if not -len(times) <= i < len(times):
            raise CsvError(f"--at {at}: the file has {len(times)} intervals (0..{len(times) - 1}, or -1 for the last)")
        return times[i]
    try:
        t = pd.Timestamp(at)
    except (ValueError, TypeError):
        raise CsvError(f"--at {at!r} is not a time: give an ISO-8601 time (2026-11-22T04:31:26Z), "
                       "an interval index (0, -1) or 'first'/'last'") from None
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    before = [x for x in times if x <= t]
    if not before:
        raise CsvError(f"--at {at}: the file starts later, at {times[0].isoformat()}")
    return before[-1]


def state_at(f: CsvFile, at: pd.Timestamp, pids: Iterable[int] | None = None) -> pd.DataFrame:
    """One row per site (``KEY``): its last row at or before ``at``, with
    ``live_bytes``/``live_allocs`` zeroed for a site absent at ``at``."""
    want = set(pids) if pids is not None else None
    acc: pd.DataFrame | None = None
    for chunk in f.chunks():
        c = chunk[chunk["ts"] <= at]
        if want is not None:
            c = c[c["pid"].isin(want)]
        if not len(c):
            continue
        c = c.drop_duplicates(KEY, keep="last")
        acc = c if acc is None else pd.concat([acc, c]).drop_duplicates(KEY, keep="last")
    if acc is None:
        return pd.DataFrame(columns=[*chunk_columns(), "ts"])
    acc = acc.copy()
    stale = acc["ts"] < at
    acc.loc[stale, ["live_bytes", "live_allocs"]] = 0
    return acc.reset_index(drop=True)


def chunk_columns() -> list[str]:
    from .exporters.sites_csv import COLUMNS
    return list(COLUMNS)


def series(f: CsvFile, keys: Iterable[tuple], times: list[pd.Timestamp] | None = None) -> pd.DataFrame:
    """Live bytes of the given sites (``KEY`` tuples) at every interval:
    index = interval timestamps, one column per key (0 where absent)."""
    keys = [tuple(k) for k in keys]
    times = times if times is not None else intervals(f)
    out = pd.DataFrame(0, index=pd.DatetimeIndex(times), columns=pd.MultiIndex.from_tuples(keys, names=KEY)
                       if keys else None, dtype="int64")
    if not keys:
        return out
    wanted = pd.MultiIndex.from_tuples(keys, names=KEY)
    for chunk in f.chunks(columns=[*KEY, "live_bytes"]):
        c = chunk.set_index(KEY)
        c = c[c.index.isin(wanted)]
        if not len(c):
            continue
        wide = c.reset_index().pivot_table(index="ts", columns=KEY, values="live_bytes", aggfunc="last")
        # An interval's rows may be split between two chunks: a key missing
        # from this chunk leaves its cell alone (it is not a 0).
        for col in wide.columns:
            v = wide[col].dropna()
            out.loc[v.index, col] = v.astype("int64").to_numpy()
    return out
