"""The sites CSV: one row per interval x process x allocation site.

Appended and flushed (and fsynced) every interval, so a session killed at
any moment keeps every finished interval. Cells that a spreadsheet would
read as a formula are prefixed with a quote; ``unprotect`` undoes it.
"""
from __future__ import annotations

import csv
import os
import socket
from typing import IO

from ..model import Snapshot

SCHEMA_VERSION = 1
COLUMNS = ["schema_version", "timestamp", "host", "pid", "comm", "source", "callsite", "stack",
           "live_bytes", "live_allocs", "alloc_bytes", "allocs", "frees"]
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def protect(s: str) -> str:
    """A cell a spreadsheet shows as text: a leading quote before a formula
    character, and before a leading quote (so that ``unprotect`` is exact)."""
    return "'" + s if s.startswith(_FORMULA + ("'",)) else s


def unprotect(s: str) -> str:
    return s[1:] if s.startswith("'") and s[1:].startswith(_FORMULA + ("'",)) else s


def open_for_append(path: str) -> IO[str]:
    """Open ``path`` to append, under heaptrace's output file policy
    (:mod:`tracer.outfile`: no links, regular files of ours, mode 0600)."""
    from ..outfile import open_append
    return open_append(path)


class SitesCsv:
    def __init__(self, path: str, host: str | None = None):
        self.path = path
        self.host = host or socket.gethostname()
        self.f = open_for_append(path)
        self.w = csv.writer(self.f)
        if self.f.tell() == 0:
            self.w.writerow(COLUMNS)
            self._sync()
        self._last: dict[tuple, tuple] = {}

    def _sync(self) -> None:
        self.f.flush()
        try:
            os.fsync(self.f.fileno())
        except OSError:
            pass

    def write(self, snap: Snapshot) -> int:
        """One interval: every site holding memory or active since the last one."""
        ts = snap.timestamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        n = 0
        for p in sorted(snap.processes.values(), key=lambda p: p.pid):
            for s in p.sites:
                c = s.counts
                state = (c.live_bytes, c.live_allocs, c.allocs, c.frees, c.alloc_bytes)
                if c.live_allocs == 0 and self._last.get(s.key) == state:
                    continue
                self._last[s.key] = state
                self.w.writerow([SCHEMA_VERSION, ts, protect(self.host), p.pid, protect(p.comm),
                                 s.source, protect(s.callsite), protect(s.folded), c.live_bytes,
                                 c.live_allocs, c.alloc_bytes, c.allocs, c.frees])
                n += 1
        self._sync()
        if len(self._last) > 2 * sum(len(p.sites) for p in snap.processes.values()) + 1000:
            # processes no longer shown (--all forgets old exited ones): their sites go
            self._last = {k: v for k, v in self._last.items() if k[0] in snap.processes}
        return n

    def close(self) -> None:
        if not self.f.closed:
            self._sync()
            self.f.close()
