"""The pure pipeline: drained values -> snapshot -> rankings."""
from datetime import datetime, timezone

from tracer.layout import SiteCounts
from tracer.model import (LOST_STACK, ResolvedStack, apply_min_age, build_snapshot, callsites, growth,
                          process_growth, resolve_stack)

T0 = datetime(2026, 11, 22, 4, 0, 0, tzinfo=timezone.utc)
EXEC = range(0x400000, 0x500000)


def rs(*frames, callsite=None):
    return ResolvedStack(tuple(frames), callsite or frames[0])


def resolve(ips, allocator=lambda ip: False):
    return resolve_stack(tuple(ips), frame=lambda ip: f"f{ip:x}", executable=lambda ip: ip in EXEC,
                         allocator=allocator)


def test_first_frame_always_kept_garbage_cut_at_first_non_executable():
    r = resolve([0x12, 0x400010, 0x400020])  # caller's ip is kept even if unknown
    assert r.frames == ("f12", "f400010", "f400020")
    r = resolve([0x400001, 0x400002, 0x7FFF0000, 0x400003])
    assert r.frames == ("f400001", "f400002")


def test_callsite_is_innermost_frame_outside_the_allocator():
    r = resolve([0x400001, 0x400002, 0x400003], allocator=lambda ip: ip == 0x400001)
    assert r.callsite == "f400002"
    r = resolve([0x400001], allocator=lambda ip: True)
    assert r.callsite == "f400001"


def test_empty_stack_is_shown_as_lost():
    assert resolve([]).frames == (LOST_STACK,)


def test_stacks_that_resolve_alike_are_one_site():
    stacks = {(1, 0xA): rs("site+0x9 [p]"), (1, 0xB): rs("site+0x9 [p]"),
              (1, 0xC): rs("other+0x1 [p]")}
    sites = [(1, 0xA, SiteCounts(53 * 17, 17, 53 * 17, 17, 0)),
             (1, 0xB, SiteCounts(53 * 20, 20, 53 * 20, 20, 0)),
             (1, 0xC, SiteCounts(5, 1, 5, 1, 0))]
    snap = build_snapshot(T0, sites, stacks, {1: "prog"})
    p = snap.processes[1]
    assert [(s.callsite, s.counts.live_allocs) for s in p.sites] == [("site+0x9 [p]", 37), ("other+0x1 [p]", 1)]
    assert p.totals.live_bytes == 53 * 37 + 5


def test_unknown_stack_and_comm_and_exited_and_idle_pids():
    snap = build_snapshot(T0, [(7, 0x1, SiteCounts(1, 1, 1, 1, 0))], {}, {}, exited=[7], pids=[7, 8])
    assert snap.processes[7].sites[0].callsite == LOST_STACK
    assert snap.processes[7].exited and snap.processes[7].comm == "?"
    assert snap.processes[8].sites == []


def test_stats_split_into_lost_and_counters():
    snap = build_snapshot(T0, [], {}, {}, stats={"a lost thing": 3, "nothing": 0,
                                                "unknown_frees": 41, "failed_allocs": 2})
    assert snap.lost == {"a lost thing": 3}
    assert (snap.unknown_frees, snap.failed_allocs) == (41, 2)


def test_folded_stack_is_outermost_first():
    snap = build_snapshot(T0, [(1, 1, SiteCounts(1, 1, 1, 1, 0))], {(1, 1): rs("inner", "mid", "main")}, {})
    assert snap.processes[1].sites[0].folded == "main;mid;inner"


def test_growth_between_snapshots_and_new_sites():
    st = {(1, 1): rs("a"), (1, 2): rs("b")}
    s1 = build_snapshot(T0, [(1, 1, SiteCounts(100, 1, 100, 1, 0))], st, {})
    s2 = build_snapshot(T0, [(1, 1, SiteCounts(300, 3, 300, 3, 0)), (1, 2, SiteCounts(7, 1, 7, 1, 0))], st, {})
    g = growth(s2, s1)
    assert sorted(g.values()) == [7, 200]
    assert process_growth(s2, s1) == {1: 207}
    assert process_growth(s1, None) == {1: 100}


def test_callsites_group_stacks_and_rank_by_live_then_growth():
    st = {(1, 1): rs("x", "m1", callsite="x"), (1, 2): rs("x", "m2", callsite="x"), (1, 3): rs("y")}
    snap = build_snapshot(T0, [(1, 1, SiteCounts(10, 1, 10, 1, 0)), (1, 2, SiteCounts(20, 2, 20, 2, 0)),
                               (1, 3, SiteCounts(25, 1, 25, 1, 0))], st, {})
    rows = callsites(snap.processes[1], growth(snap, None))
    assert [(r.callsite, r.counts.live_bytes, r.stacks, r.growth) for r in rows] == [("x", 30, 2, 30), ("y", 25, 1, 25)]


def test_min_age_counts_only_old_blocks():
    sites = [(1, 0xA, SiteCounts(3 * 64, 3, 3 * 64, 3, 0)), (1, 0xB, SiteCounts(8, 1, 8, 1, 0))]
    blocks = [(1, 64, 0xA, 1_000), (1, 64, 0xA, 9_000), (1, 64, 0xA, 9_500), (1, 8, 0xB, 9_900)]
    out = apply_min_age(sites, blocks, now_ns=10_000, min_age_ns=1_000)
    assert [(s, c.live_bytes, c.live_allocs, c.allocs) for _, s, c in out] == [(0xA, 128, 2, 3), (0xB, 0, 0, 1)]
