"""The processes CSV: one row per interval x process, the memory breakdown.

Written beside the sites CSV (``run.csv`` -> ``run.processes.csv``), with
the same rules: appended, flushed and fsynced every interval, formula cells
quoted, never through a symbolic link, mode 0600. An empty cell means "not
known" (e.g. ``given_back_bytes`` with ``--no-mappings``, ``arenas`` without a
heap census).
"""
from __future__ import annotations

import csv
import os
import socket

from .. import diagnose
from ..model import Snapshot
from .sites_csv import open_for_append, protect

SCHEMA_VERSION = 2
COLUMNS = ["schema_version", "timestamp", "host", "pid", "comm", "rss_anon_bytes", "heap_live_bytes",
           "allocator_retained_bytes", "mmap_live_bytes", "brk_heap_bytes", "arenas", "given_back_bytes",
           "trimmable_bytes", "exited", "findings", "cgroup", "mode"]
#: Columns a later schema version added: a file of an earlier one has none
#: (read as "").
ADDED = {"cgroup": 2, "mode": 2}


def path_for(sites_path: str) -> str:
    """``run.csv`` -> ``run.processes.csv`` (any other name: ``+ .processes.csv``)."""
    base = sites_path[:-4] if sites_path.endswith(".csv") else sites_path
    return base + ".processes.csv"


def _cell(v) -> str:
    return "" if v is None else str(v)


class ProcessesCsv:
    def __init__(self, path: str, host: str | None = None):
        self.path = path
        self.host = host or socket.gethostname()
        self.f = open_for_append(path)
        self.w = csv.writer(self.f)
        if self.f.tell() == 0:
            self.w.writerow(COLUMNS)
            self._sync()

    def _sync(self) -> None:
        self.f.flush()
        try:
            os.fsync(self.f.fileno())
        except OSError:
            pass

    def write(self, snap: Snapshot) -> int:
        ts = snap.timestamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        n = 0
        for pid in sorted(snap.processes):
            p = snap.processes[pid]
            m = snap.memory.get(pid)
            row = [None] * 8 if m is None else [m.rss_anon, m.heap_live, m.retained, m.mmap_live,
                                                m.brk_size, m.arenas, m.given_back, m.trimmable]
            self.w.writerow([SCHEMA_VERSION, ts, protect(self.host), pid, protect(p.comm),
                             *map(_cell, row), int(p.exited), diagnose.codes(snap.findings, pid),
                             protect(p.cgroup), p.mode or "full"])
            n += 1
        self._sync()
        return n

    def close(self) -> None:
        if not self.f.closed:
            self._sync()
            self.f.close()
