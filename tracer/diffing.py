"""What ``heaptrace diff`` shows: call sites whose live bytes changed.

Pure over :mod:`tracer.review`'s state at an interval (memory bounded by the
number of distinct sites). Two sessions: sites are matched by (process
name, source, stack), since PIDs differ from one run to the next (processes
of one name are summed). Two points of one session: by (pid, source, stack).
Sorted by absolute change, like ``jeprof --base``.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from . import review
from .csvread import CsvError, CsvFile
from .errors import UsageError
from .reporting import site_label


@dataclass(frozen=True)
class Point:
    """One interval of one file."""

    path: str
    index: int
    count: int
    ts: pd.Timestamp


@dataclass(frozen=True)
class Change:
    pid: int | None      # None when matched across sessions
    comm: str
    source: str
    callsite: str
    stack: str
    base: int
    new: int
    base_allocs: int = 0
    new_allocs: int = 0

    @property
    def change(self) -> int:
        return self.new - self.base

    @property
    def label(self) -> str:
        return site_label(self.callsite, self.source)


@dataclass
class Diff:
    base: Point
    new: Point
    by_pid: bool
    rows: list[Change]        # the top ones by absolute change
    changed: int              # call sites whose live bytes changed
    sites: int                # call sites in either state
    more: int                 # changed ones not in rows ...
    more_change: int          # ... and their summed change
    total_base: int
    total_new: int


def point(f: CsvFile, at: str | None, option: str, default: str = "last",
          times: list[pd.Timestamp] | None = None) -> Point:
    """The interval ``option`` (``--from``/``--to``) names in ``f``; an
    argument that names none is a usage error, a file with none a data error."""
    times = review.intervals(f) if times is None else times
    if not times:
        raise CsvError(f"{f.path} holds no interval yet: was the session stopped before its first one?")
    text = default if at is None else at
    try:
        t = review.pick(times, text)
    except CsvError as e:
        raise UsageError(str(e).replace("--at", option, 1) + f" (in {f.path})") from None
    return Point(f.path, times.index(t), len(times), t)


def _collapse(state: pd.DataFrame, by_pid: bool) -> dict[tuple, tuple[int, int, str]]:
    """key -> (live bytes, live blocks, callsite)."""
    out: dict[tuple, list] = {}
    if not len(state):
        return {}
    cols = ["pid", "comm", "source", "stack", "callsite", "live_bytes", "live_allocs"]
    for pid, comm, source, stack, callsite, live, allocs in state[cols].itertuples(index=False):
        key = (int(pid) if by_pid else None, str(comm), str(source), str(stack))
        a = out.get(key)
        if a is None:
            out[key] = [int(live), int(allocs), str(callsite)]
        else:
            a[0] += int(live)
            a[1] += int(allocs)
    return {k: tuple(v) for k, v in out.items()}


def compare(base: pd.DataFrame, new: pd.DataFrame, *, by_pid: bool, top: int, base_point: Point,
            new_point: Point) -> Diff:
    """The changes from the ``base`` state to the ``new`` one (rows of
    :func:`tracer.review.state_at`)."""
    if top < 1:
        raise UsageError(f"--top {top}: show at least 1")
    b, n = _collapse(base, by_pid), _collapse(new, by_pid)
    changes = []
    for key in b.keys() | n.keys():
        lb, ab, cb = b.get(key, (0, 0, ""))
        ln, an, cn = n.get(key, (0, 0, ""))
        if ln == lb:
            continue
        pid, comm, source, stack = key
        changes.append(Change(pid, comm, source, cn or cb, stack, lb, ln, ab, an))
    changes.sort(key=lambda c: (-abs(c.change), -c.new, c.comm, c.pid or 0, c.label, c.stack))
    shown, rest = changes[:top], changes[top:]
    return Diff(base=base_point, new=new_point, by_pid=by_pid, rows=shown, changed=len(changes),
                sites=len(b.keys() | n.keys()), more=len(rest), more_change=sum(c.change for c in rest),
                total_base=sum(v[0] for v in b.values()), total_new=sum(v[0] for v in n.values()))


def diff_files(base: CsvFile, new: CsvFile, *, base_at: str | None = None, new_at: str | None = None,
               top: int = 10) -> Diff:
    """Two sessions: each at its last interval (or at ``base_at``/``new_at``)."""
    pb = point(base, base_at, "--from")
    pn = point(new, new_at, "--to")
    return compare(review.state_at(base, pb.ts), review.state_at(new, pn.ts), by_pid=False, top=top,
                   base_point=pb, new_point=pn)


def diff_points(f: CsvFile, *, at_from: str | None = None, at_to: str | None = None, top: int = 10) -> Diff:
    """One session, between two of its intervals (default: first and last)."""
    times = review.intervals(f)
    pb = point(f, at_from, "--from", default="first", times=times)
    pn = point(f, at_to, "--to", default="last", times=times)
    return compare(review.state_at(f, pb.ts), review.state_at(f, pn.ts), by_pid=True, top=top,
                   base_point=pb, new_point=pn)
