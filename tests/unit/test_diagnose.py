"""Findings and the per-process breakdown, from plain values (no root)."""
from datetime import datetime, timedelta, timezone

from tracer import diagnose
from tracer.breakdown import HeapRss, breakdown, heap_rss, summarize
from tracer.census import HeapCensus
from tracer.exporters.processes_csv import COLUMNS, ProcessesCsv, path_for
from tracer.layout import SiteCounts
from tracer.model import Process, Site, Snapshot

MIB = 1 << 20
T0 = datetime(2026, 11, 22, tzinfo=timezone.utc)


def snap(i: int, sites: dict[str, tuple[str, int]], pid: int = 7) -> Snapshot:
    p = Process(pid, "svc")
    for name, (source, live) in sites.items():
        p.sites.append(Site(pid, "svc", source, name, (name,), SiteCounts(live, live // 100, live, live // 100, 0)))
    return Snapshot(T0 + timedelta(seconds=i), {pid: p})


def series(leak, cache, mapped=None, n=10):
    out = []
    for i in range(n):
        s = {"remember": ("malloc", leak(i)), "cache_put": ("malloc", cache(i))}
        if mapped:
            s["new_stack"] = ("mmap", mapped(i))
        out.append(snap(i, s))
    return out


def test_steady_growth_is_a_leak_and_a_cache_that_levels_off_is_not():
    hist = series(lambda i: 40_000 * (i + 1), lambda i: min(i, 4) * 100_000)
    found = diagnose.leaks(hist)
    assert [(f.code, f.subject) for f in found] == [("leak", "remember")]
    assert 39_000 < found[0].score < 41_000  # bytes per second
    assert "grew in 9 of 9 intervals" in found[0].evidence


def test_direct_mappings_growing_are_an_mmap_leak_ranked_by_rate():
    hist = series(lambda i: 20_000 * i, lambda i: 0, mapped=lambda i: 262_144 * i)
    found = diagnose.leaks(hist)
    assert [f.code for f in found] == ["mmap-leak", "leak"]  # faster first
    assert found[0].subject == "new_stack"


def test_no_verdict_on_too_few_intervals_small_growth_or_a_drop():
    assert diagnose.leaks(series(lambda i: 1 << 20 * i, lambda i: 0, n=3)) == []
    assert diagnose.leaks(series(lambda i: 1000 * i, lambda i: 0)) == []         # < MIN_GROWTH
    saw = lambda i: (i % 5) * 100_000 + 1_000_000                                 # noqa: E731
    assert diagnose.leaks(series(saw, lambda i: 0)) == []                         # freed back
    stalled = lambda i: min(i, 5) * 100_000                                       # noqa: E731
    assert diagnose.leaks(series(stalled, lambda i: 0)) == []                     # stopped growing


def heap(kind="main", in_use=0, free=0, free_chunks=0, top=0, largest=0, pinned=None, trim=0, first=False,
         start=0x10000):
    return HeapCensus(kind, start, start + in_use + free + top, in_use, 1, free, free_chunks, top, largest,
                      pinned, trim, True, first_of_arena=first)


def test_retention_with_a_pinned_top_says_what_trim_returns():
    rep = summarize([heap(in_use=5000, free=190 * MIB, free_chunks=1, largest=190 * MIB, pinned=0x5000,
                          trim=190 * MIB)])
    rss = HeapRss(brk_size=191 * MIB, brk_rss=190 * MIB)
    m = breakdown(rss_anon=191 * MIB, rss=rss, probe_live=0, census=rep, given_back=0)
    assert m.heap_live == 5000 and m.retained == 190 * MIB - 5000 and m.arenas == 1
    [f] = diagnose.retention(7, "svc", m)
    assert f.code == "allocator-retention"
    assert "malloc_trim(0) would return about 190.0 MiB" in f.evidence
    assert "a live chunk at 0x5010" in f.evidence and "malloc_trim(0) after" in f.advice


def test_fragmented_arenas_are_arena_bloat_and_trim_is_not_advised():
    heaps = [heap(in_use=1 * MIB, trim=0)] + [
        heap("arena", in_use=4 * MIB, free=12 * MIB, free_chunks=8000, largest=1536, first=True,
             start=(i + 1) << 26) for i in range(12)]
    rep = summarize(heaps)
    assert rep.arenas == 13 and rep.arena_in_use == 48 * MIB
    smaps = [(0x10000, 0x10000 + MIB, "rw-p", "[heap]", MIB)] + \
        [((i + 1) << 26, ((i + 1) << 26) + 16 * MIB, "rw-p", "", 16 * MIB) for i in range(12)] + \
        [(0x7000_0000_0000, 0x7000_0400_0000, "rw-p", "", 64 * MIB)]   # the program's own: not the allocator's
    rss = heap_rss(smaps, rep)
    assert (rss.brk_rss, rss.arena_rss, rss.mmapped_rss) == (MIB, 192 * MIB, 0)
    m = breakdown(rss_anon=300 * MIB, rss=rss, probe_live=0, census=rep)
    found = {f.code: f for f in diagnose.retention(7, "svc", m, cpus=2)}
    assert set(found) == {"allocator-retention", "arena-bloat"}
    assert "MALLOC_ARENA_MAX=2" in found["arena-bloat"].advice
    assert "cannot help much" in found["allocator-retention"].advice
    assert "fragmented" in found["allocator-retention"].evidence


def test_probes_since_the_census_move_the_live_heap():
    rep = summarize([heap(in_use=10 * MIB)], mmapped=[(0x7f0000000000, 4 * MIB)])
    assert rep.in_use == 14 * MIB and rep.mmapped == 4 * MIB
    m = breakdown(rss_anon=0, rss=HeapRss(brk_rss=10 * MIB, mmapped_rss=4 * MIB), probe_live=3 * MIB,
                  census=rep, probe_live_at_census=1 * MIB)
    assert m.heap_live == 16 * MIB and m.retained == 0
    no_census = breakdown(rss_anon=None, rss=HeapRss(brk_rss=MIB), probe_live=-5, census=None)
    assert no_census.heap_live == 0 and no_census.arenas is None and no_census.given_back is None
    assert diagnose.retention(7, "svc", no_census) == []


def test_processes_csv(tmp_path):
    assert path_for("/x/run.csv") == "/x/run.processes.csv" and path_for("/x/run") == "/x/run.processes.csv"
    s = snap(0, {"remember": ("malloc", 100)})
    s.processes[7].comm = "=cmd()"
    s.memory[7] = breakdown(rss_anon=5 * MIB, rss=HeapRss(brk_size=MIB, brk_rss=MIB), probe_live=100,
                            census=None, mmap_live=8192, given_back=None)
    s.findings = [diagnose.Finding("arena-bloat", 7, "svc", 1, "", ""), diagnose.Finding("leak", 7, "x", 1, "", "")]
    w = ProcessesCsv(str(tmp_path / "p.csv"), host="h")
    w.write(s)
    w.close()
    import pandas as pd
    df = pd.read_csv(tmp_path / "p.csv", keep_default_na=False)
    assert list(df.columns) == COLUMNS
    r = df.iloc[0]
    assert (r.pid, r.comm, r.rss_anon_bytes, r.heap_live_bytes, r.mmap_live_bytes) == (7, "'=cmd()", 5 * MIB, 100, 8192)
    assert r.allocator_retained_bytes == MIB - 100 and r.given_back_bytes == "" and r.arenas == ""
    assert r.findings == "leak;arena-bloat"
