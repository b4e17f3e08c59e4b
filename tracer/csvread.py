"""Reading heaptrace's CSV files back: validated, chunked, spreadsheet-safe.

For ``report``, ``diff``, ``export`` and ``plot``, on any machine (no root,
no bcc). A file is read in chunks of rows (memory bounded by the chunk, not
the file); every chunk is checked against the schema, its text cells have
the spreadsheet protection undone, and ``ts`` (UTC) is parsed. A file that
is not a heaptrace CSV, a newer schema version or missing columns raise
:class:`CsvError` naming the cause and the fix; a last line cut short (a
session killed mid-write) is left out, and said so through ``notes``.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from typing import Iterator

import pandas as pd

from .errors import HeaptraceError
from .exporters import processes_csv, sites_csv
from .exporters.sites_csv import unprotect

CHUNK_ROWS = 200_000
_I64 = 2 ** 63 - 1

SITES = "sites"
PROCESSES = "processes"
_COLUMNS = {SITES: sites_csv.COLUMNS, PROCESSES: processes_csv.COLUMNS}
# What a file must have: the columns of its first schema version.
_REQUIRED = {SITES: sites_csv.COLUMNS, PROCESSES: [c for c in processes_csv.COLUMNS if c not in processes_csv.ADDED]}
_VERSION = {SITES: sites_csv.SCHEMA_VERSION, PROCESSES: processes_csv.SCHEMA_VERSION}
_TEXT = {SITES: ["host", "comm", "callsite", "stack"], PROCESSES: ["host", "comm", "cgroup", "mode"]}
_INTS = {SITES: ["pid", "live_bytes", "live_allocs", "alloc_bytes", "allocs", "frees"],
         PROCESSES: ["pid", "exited"]}
_OPTIONAL = {PROCESSES: ["rss_anon_bytes", "heap_live_bytes", "allocator_retained_bytes", "mmap_live_bytes",
                         "brk_heap_bytes", "arenas", "given_back_bytes", "trimmable_bytes"]}


class CsvError(HeaptraceError):
    """The file cannot be read as a heaptrace CSV."""

    exit_code = 65  # EX_DATAERR


@dataclass
class CsvFile:
    """A heaptrace CSV opened for reading: its kind and what was left out."""

    path: str
    kind: str
    header: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    _limit: int = 0
    _drop_ts: str | None = None   # an interval cut short: its rows are left out

    def chunks(self, columns: list[str] | None = None, chunk_rows: int = CHUNK_ROWS) -> Iterator[pd.DataFrame]:
        """The rows, ``chunk_rows`` at a time (every column, or ``columns``
        plus ``timestamp``), with ``ts`` parsed and text cells unprotected."""
        want = None if columns is None else sorted((set(columns) & set(self.header))
                                                   | {"timestamp", "schema_version"})
        dtypes = {c: str for c in _TEXT[self.kind] + (["findings"] if self.kind == PROCESSES else [])
                  if c in self.header}
        with open(self.path, "rb") as raw:
            f = io.TextIOWrapper(_Limited(raw, self._limit), encoding="utf-8", errors="replace", newline="")
            try:
                reader = pd.read_csv(f, usecols=want, dtype=dtypes, keep_default_na=False,
                                     chunksize=chunk_rows)
                for n, chunk in enumerate(reader):
                    yield self._clean(chunk, n * chunk_rows)
            except (pd.errors.ParserError, ValueError, OverflowError, UnicodeError) as e:
                raise CsvError(f"{self.path}: not a well-formed heaptrace {self.kind} CSV ({_short(e)}); "
                               "was it edited, or is it another file?") from None

    def read(self, columns: list[str] | None = None) -> pd.DataFrame:
        """Every row at once (small files: a processes CSV, or tests)."""
        parts = list(self.chunks(columns))
        if not parts:
            return self._clean(pd.DataFrame(columns=_COLUMNS[self.kind]), 0)
        return pd.concat(parts, ignore_index=True)

    def _clean(self, df: pd.DataFrame, first_row: int) -> pd.DataFrame:
        if self._drop_ts is not None and "timestamp" in df.columns:
            df = df[df["timestamp"] != self._drop_ts]
        if "schema_version" in df.columns and len(df):
            v = pd.to_numeric(df["schema_version"], errors="coerce")
            if v.isna().any():
                bad = int(v.isna().to_numpy().nonzero()[0][0]) + first_row + 2
                raise CsvError(f"{self.path}, line {bad}: schema_version is not a number: the file is "
                               "damaged or not a heaptrace CSV")
            newest = int(v.max())
            if newest > _VERSION[self.kind]:
                raise CsvError(f"{self.path} has schema version {newest}; this heaptrace reads up to "
                               f"{_VERSION[self.kind]}: upgrade heaptrace to read it")
        for c in _TEXT[self.kind]:
            if c in df.columns:
                df[c] = df[c].astype(str).map(unprotect)
            elif c not in self.header:  # a column of a later schema version
                df[c] = ""
        for c in _INTS[self.kind]:
            if c in df.columns:
                v = pd.to_numeric(df[c], errors="coerce").fillna(0)
                if len(v) and (v.max() > _I64 or v.min() < -_I64):
                    raise CsvError(f"{self.path}: a value of {c} is out of range: the file is damaged")
                df[c] = v.astype("int64")
        for c in _OPTIONAL.get(self.kind, ()):
            if c in df.columns:  # an empty cell: unknown (NaN)
                df[c] = pd.to_numeric(df[c], errors="coerce")
        if "findings" in df.columns:
            df["findings"] = df["findings"].astype(str)
        df["ts"] = pd.to_datetime(df["timestamp"], utc=True, errors="coerce", format="ISO8601")
        bad = df["ts"].isna()
        if bad.any():
            self.notes.append(f"{int(bad.sum())} rows with an unreadable timestamp left out")
            df = df[~bad]
        return df


class _Limited(io.RawIOBase):
    """The first ``limit`` bytes of a file: what precedes a cut-off last line."""

    def __init__(self, raw, limit: int):
        self.raw, self.left = raw, limit

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self.left <= 0:
            return 0
        n = self.raw.readinto(memoryview(b)[: min(len(b), self.left)])
        self.left -= n or 0
        return n or 0


def _short(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else e.__class__.__name__


def _complete_length(path: str, size: int) -> int:
    """Bytes up to and including the last newline that ends a row: outside
    quotes (a name may hold a newline inside its quoted cell). The rest is
    a row cut short. One pass over the file, 8 MiB at a time."""
    last, inside, done = 0, False, 0
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            pieces = block.split(b'"')
            pos = done
            for i, piece in enumerate(pieces):
                if not inside:
                    j = piece.rfind(b"\n")
                    if j >= 0:
                        last = pos + j + 1
                pos += len(piece) + 1          # the piece and the quote after it
                if i < len(pieces) - 1:
                    inside = not inside
            done += len(block)
    return last


def _cut_timestamp(path: str, start: int) -> str | None:
    """The timestamp of the row cut short at ``start``, if it got that far."""
    with open(path, "rb") as f:
        f.seek(start)
        tail = f.read(256).decode("utf-8", "replace")
    fields = tail.split(",")
    if len(fields) > 2 and fields[1].endswith("Z"):
        return fields[1]
    return None


def open_csv(path: str, kind: str | None = None) -> CsvFile:
    """Open a heaptrace CSV, checking its header; ``kind`` is ``"sites"``,
    ``"processes"``, or None to accept either."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.readline(65536)
    except FileNotFoundError:
        raise CsvError(f"{path}: no such file: give the CSV a heaptrace session wrote with --csv") from None
    except IsADirectoryError:
        raise CsvError(f"{path} is a directory: give a CSV file heaptrace wrote with --csv") from None
    except OSError as e:
        raise CsvError(f"cannot read {path}: {e.strerror}") from None
    header = head.decode("utf-8", "replace").strip().split(",")
    if not header or header[0] != "schema_version" or "timestamp" not in header:
        raise CsvError(f"{path} is not a heaptrace CSV (its first line should start with "
                       "'schema_version,timestamp'): give a file written by heaptrace --csv")
    found = [k for k in (kind,) if k] or [SITES, PROCESSES]
    for k in found:
        missing = [c for c in _REQUIRED[k] if c not in header]
        if not missing:
            out = CsvFile(path, k, header)
            break
    else:
        k = found[0] if kind else (SITES if "stack" in header else PROCESSES)
        missing = [c for c in _REQUIRED[k] if c not in header]
        hint = (" (this looks like a processes CSV: give the sites CSV, the one without "
                "'.processes')" if kind == SITES and "rss_anon_bytes" in header else "")
        raise CsvError(f"{path}: columns missing for a heaptrace {k} CSV: {', '.join(missing)}{hint}")
    end = _complete_length(path, size)
    if end < size:
        out._drop_ts = _cut_timestamp(path, end)
        what = "with the rest of its interval" if out._drop_ts else ""
        out.notes.append(f"{path}: the last line is cut short (a session ended mid-write?): "
                         f"left out{' ' + what if what else ''}")
    out._limit = end
    return out


def processes_path(sites_path: str) -> str:
    return processes_csv.path_for(sites_path)
