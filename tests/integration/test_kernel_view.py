"""The kernel view: the per-process breakdown, the processes CSV and the
findings, on the demo's workloads (tracer/workloads/*.c), with real probes,
syscall tracepoints and heap censuses."""
from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd
import pytest



pytestmark = pytest.mark.integration
MIB = 1 << 20


def processes_csv(h) -> pd.DataFrame:
    path = str(h.csv)[:-4] + ".processes.csv"
    df = pd.read_csv(path, keep_default_na=False, dtype={"findings": str})
    for col in ("rss_anon_bytes", "heap_live_bytes", "allocator_retained_bytes", "mmap_live_bytes",
                "brk_heap_bytes", "arenas", "given_back_bytes", "trimmable_bytes", "findings"):
        assert col in df.columns, list(df.columns)
    df["ts"] = pd.to_datetime(df["timestamp"], utc=True)
    return df


def finding_lines(h, code: str, pid: int) -> list[str]:
    return [l for l in h.out if l.strip().startswith(f"! {code} {pid}:")]


def traced(ht, args, interval=0.5):
    return ht.heaptrace(args, interval=interval)


def stop(ht, h) -> None:
    rc = h.interrupt()
    assert rc == 0, h.transcript()
    ht.no_traceback(h.stderr)


def test_leak_is_found_and_a_cache_that_levels_off_is_not(ht):
    h = ht.started(traced(ht, ["-c", ht.command("leak", "6")]))
    pid = h.traced[0]
    h.send(b"g")
    i = h.wait_line("out", lambda l: l == "done", 60, what="'done'")
    h.wait_intervals(1, i + 1)
    stop(ht, h)
    leaks = finding_lines(h, "leak", pid)
    assert leaks and all("remember_request" in l for l in leaks), h.transcript()
    assert not any("cache_put" in l for l in h.out if "! leak" in l), h.transcript()
    df = processes_csv(h)
    mine = df[df.pid == pid]
    assert mine.findings.str.contains("leak").any(), mine.to_string()
    # The cache is full after 64 requests (1.3 s): by the end it is flat.
    assert "evidence: +" in h.stdout and "remember_request" in h.stdout


def test_mmap_leak_of_hand_made_thread_stacks(ht):
    h = ht.started(traced(ht, ["-c", ht.command("mmapleak", "5")]))
    pid = h.traced[0]
    h.send(b"g")
    i = h.wait_line("out", lambda l: l == "done", 60, what="'done'")
    h.wait_intervals(1, i + 1)
    stop(ht, h)
    assert any("new_worker_stack" in l for l in finding_lines(h, "mmap-leak", pid)), h.transcript()
    sites = h.read_csv()
    rows = sites[(sites.pid == pid) & (sites.source == "mmap") & (sites.function == "new_worker_stack")]
    last = rows.iloc[-1]
    assert last.frees == 0 and last.allocs >= 20 and last.live_bytes == last.allocs * 256 * 1024, rows.to_string()
    df = processes_csv(h)
    end = df[df.pid == pid].iloc[-1]
    assert end.mmap_live_bytes == last.live_bytes and "mmap-leak" in end.findings, end


def test_retention_from_before_attach_then_malloc_trim_while_traced(ht):
    """The program freed 96 MiB before heaptrace started; glibc keeps it
    under a live block. The census at attach says so; malloc_trim(0) while
    traced shows up in the next interval as memory given back."""
    w = ht.program("retention", "96")
    h = traced(ht, ["-p", str(w.pid)], interval=0.5)
    h.wait_tracing()
    h.wait_intervals(2, 0)
    before = processes_csv(h)
    row = before[before.pid == w.pid].iloc[-1]
    assert row.allocator_retained_bytes >= 90 * MIB and row.heap_live_bytes < MIB, row
    assert row.trimmable_bytes >= 90 * MIB and row.rss_anon_bytes >= 90 * MIB, row
    assert "allocator-retention" in row.findings and row.arenas == 1, row
    assert row.brk_heap_bytes >= 96 * MIB and row.given_back_bytes == 0, row
    w.send(b"g")
    w.wait_line("out", lambda l: l == "done", 30, what="'done'")
    done = datetime.now(timezone.utc)
    h.wait_intervals(2, len(h.out))
    stop(ht, h)
    df = processes_csv(h)
    after = df[(df.pid == w.pid) & (df.ts > done)]
    first = after.iloc[0]  # the first interval after malloc_trim returned
    assert first.allocator_retained_bytes < 4 * MIB, after.to_string()
    assert first.given_back_bytes >= 90 * MIB, after.to_string()
    assert first.rss_anon_bytes < row.rss_anon_bytes - 90 * MIB, after.to_string()
    assert "allocator-retention" not in first.findings, after.to_string()
    assert row.brk_heap_bytes - first.brk_heap_bytes < MIB, "brk cannot shrink past the live block"


def test_arena_bloat_with_twelve_threads(ht):
    w = ht.program("arenas", "12", "16")
    h = traced(ht, ["-p", str(w.pid)], interval=0.5)
    h.wait_tracing()
    h.wait_intervals(2, 0)
    stop(ht, h)
    df = processes_csv(h)
    row = df[df.pid == w.pid].iloc[-1]
    assert row.arenas >= 9, row  # main + at least 8 thread arenas (one per thread, up to 8 x cores)
    assert "arena-bloat" in row.findings, row
    assert row.allocator_retained_bytes >= 100 * MIB, row
    assert "MALLOC_ARENA_MAX=" in h.stdout, h.transcript()
