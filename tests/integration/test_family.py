"""The malloc family, exact bytes per call site (tests/programs/workload.c family)."""
import os

import pytest

pytestmark = pytest.mark.integration

MIB = 1 << 20
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def expected_live(page: int) -> dict[str, tuple[int, int]]:
    """function -> (live_allocs, live_bytes) after the family mode."""
    return {
        "site_malloc_kept": (24, 23 * 1009 + 4001),  # the failed realloc leaves the 4001 block live
        "site_calloc": (11, 11 * 91),
        "site_posix_memalign": (5, 5 * 2003),
        "site_aligned_alloc": (3, 3 * 128),
        "site_memalign": (7, 7 * 211),
        "site_valloc": (2, 2 * 101),
        "site_pvalloc": (2, 2 * page),
        "site_realloc_origin": (13, 13 * 300),   # growth charged to the origin site
        "site_realloc_fresh": (17, 17 * 59),
        "site_reallocarray": (19, 19 * 111),
        "site_large": (3, 3 * MIB),              # served by mmap, counted once
    }


def check_family(ht, h, pid, how):
    df = h.read_csv()
    mine = df[df.pid == pid]
    assert (df.live_bytes >= 0).all() and (df.live_allocs >= 0).all(), \
        df[(df.live_bytes < 0) | (df.live_allocs < 0)].to_string()
    assert set(df.source) <= {"malloc"}, "the 1 MiB blocks must not also be charged as direct mappings"

    got = ht.by_function(ht.last_interval(df, pid))
    want = expected_live(ht.PAGE_SIZE)
    problems = []
    for fn, (n, b) in want.items():
        c = got.get(fn)
        if c is None:
            problems.append(f"{fn}: missing")
        elif (c["live_allocs"], c["live_bytes"]) != (n, b):
            problems.append(f"{fn}: live {c['live_allocs']} blocks / {c['live_bytes']} B, want {n} / {b}")
    origin = got.get("site_realloc_origin")
    if origin and origin["alloc_bytes"] != 13 * 300:
        problems.append(f"site_realloc_origin: alloc_bytes {origin['alloc_bytes']}, want {13 * 300}")
    # The realloc calls move blocks of the origin site; they are no site of their own.
    for fn in ("site_realloc_grow", "main"):
        if fn in got:
            problems.append(f"{fn}: unexpected site {got[fn]} (failed calls and moves are not blocks)")
    # Anything else must be libc's own (the stdout buffer, when traced from exec).
    for fn, c in got.items():
        if fn not in want and fn not in ("site_realloc_grow", "main"):
            rows = mine[mine.function == fn]
            mods = {ht.module_of(cs) for cs in rows.callsite}
            if mods != {"libc.so.6"}:
                problems.append(f"{fn}: unexpected site {c} in {mods}")

    freed = ht.final_by_function(df, pid).get("site_malloc_freed")
    if freed is None:
        problems.append("site_malloc_freed: never written")
    else:
        f = (freed["allocs"], freed["frees"], freed["live_allocs"], freed["live_bytes"])
        if f != (29, 29, 0, 0):
            problems.append(f"site_malloc_freed: allocs/frees/live/bytes {f}, want (29, 29, 0, 0)")
    assert not problems, "\n".join(problems) + "\n" + mine.tail(40).to_string()
    assert "LOST" not in h.stdout, h.stdout


@pytest.mark.parametrize("how", ["c", "p"])
def test_family_exact_bytes(ht, how):
    h, pid = ht.run(how, "workload", "family")
    check_family(ht, h, pid, how)


def test_min_size_filters_small_blocks(ht):
    h, pid = ht.run_c("workload", "family", extra=["--min-size", "1000"])
    df = h.read_csv()
    mine = df[df.pid == pid]
    got = ht.by_function(ht.last_interval(df, pid))
    assert got.get("site_malloc_kept", {}).get("live_bytes") == 23 * 1009 + 4001, got
    assert got.get("site_posix_memalign", {}).get("live_bytes") == 5 * 2003, got
    assert got.get("site_large", {}).get("live_bytes") == 3 * MIB, got
    # No block smaller than 1000 bytes is counted, in any interval, from any
    # function of the family (realloc(NULL, 59) and reallocarray(NULL, 3, 37)
    # are allocations of 59 and 111 bytes; 100 grown to 300 is still 300).
    small = ["site_calloc", "site_malloc_freed", "site_aligned_alloc", "site_memalign", "site_valloc",
             "site_realloc_origin", "site_realloc_grow", "site_realloc_fresh", "site_reallocarray"]
    present = sorted(set(mine.function) & set(small))
    assert not present, f"sites of blocks < 1000 B counted with --min-size 1000: {present}\n" + \
        mine[mine.function.isin(present)].drop_duplicates("function").to_string()
    with_blocks = mine[mine.allocs > 0]
    assert (with_blocks.alloc_bytes >= 1000 * with_blocks.allocs).all(), with_blocks.to_string()


def test_min_age_hides_young_blocks(ht):
    import time
    from datetime import datetime, timezone

    age = 2.0
    h = ht.started(ht.heaptrace(["-c", ht.command("workload", "family"), "--min-age", str(age)]))
    pid = h.traced[0]
    w_go = datetime.now(timezone.utc).timestamp()
    h.send(b"g")
    i = h.wait_line("out", lambda l: l == "done", 30, what="'done'")
    w_done = datetime.now(timezone.utc).timestamp()
    time.sleep(age + 0.3)
    h.wait_intervals(2, len(h.out))
    assert h.interrupt() == 0, h.transcript()
    df = h.read_csv()
    d = df[df.pid == pid]
    kept = d[d.function == "site_malloc_kept"]
    assert len(kept), d.to_string()
    # The state of the site at each interval: a stack's row is not written
    # again while nothing of it is live and nothing changed, so each stack
    # keeps its last written row.
    state, per = {}, []
    for i, rows in d.groupby("interval"):
        for _, r in kept[kept.interval == i].iterrows():
            state[r["stack"]] = (int(r.live_allocs), int(r.live_bytes), int(r.allocs))
        if state:
            live_allocs, live_bytes, allocs = (sum(v[j] for v in state.values()) for j in range(3))
            per.append((rows.ts.max().timestamp(), live_allocs, live_bytes, allocs))
    table = "\n".join(map(str, per))
    # Allocation counters are not filtered by age; live counts are.
    allocs = [a for *_, a in per]
    assert allocs == sorted(allocs) and allocs[-1] == 24, table
    for t, n, b, _ in per:
        if t < w_go + age:
            assert (n, b) == (0, 0), f"blocks younger than {age} s counted at {t}\n{table}"
        elif t > w_done + age + 0.5:
            assert (n, b) == (24, 23 * 1009 + 4001), f"old blocks not counted at {t}\n{table}"
        assert 0 <= n <= 24 and 0 <= b <= 23 * 1009 + 4001, table
    assert per[0][0] < w_go + age, "the first interval after the allocations must see them young\n" + table
    assert per[-1][0] > w_done + age + 0.5, table
    assert (df.live_bytes >= 0).all()


@pytest.mark.parametrize("how", ["c", "p"])
def test_direct_mappings_are_charged_to_their_call_site(ht, how):
    """mmap made by the program's own code: source "mmap" rows at its call
    site with exact bytes (partial munmap included); malloc's own mmaps for
    large blocks are only in the malloc rows; a failed mmap is nothing."""
    h, pid = ht.run(how, "workload", "mappings")
    df = h.read_csv()
    mine = df[df.pid == pid]
    last = ht.last_interval(df, pid)
    mm = ht.by_function(last[last.source == "mmap"])
    page = PAGE_SIZE
    assert mm.get("site_mmap_kept", {}).get("live_bytes") == 7 * 13 * page, mm
    assert mm["site_mmap_kept"]["allocs"] == 7 and mm["site_mmap_kept"]["alloc_bytes"] == 7 * 13 * page
    trimmed = mm.get("site_mmap_trimmed")
    assert trimmed is not None and (trimmed["live_bytes"], trimmed["alloc_bytes"], trimmed["frees"]) == \
        (7 * page, 11 * page, 1), trimmed
    freed = mine[(mine.source == "mmap") & (mine.function == "site_mmap_freed")]
    final = freed.groupby("stack").tail(1)
    assert (final.live_bytes == 0).all() and final.allocs.sum() == 3 and final.frees.sum() == 3, freed.to_string()
    # Exactly these three call sites made mappings; malloc's large blocks are
    # malloc rows only, counted once.
    moved = mm.get("site_mmap_moved")
    assert moved is not None and (moved["live_bytes"], moved["alloc_bytes"]) == (17 * page, 3 * page), moved
    assert set(mine[mine.source == "mmap"].function) == {"site_mmap_kept", "site_mmap_trimmed", "site_mmap_freed",
                                                         "site_mmap_moved", "reserve_hole"}, \
        mine[mine.source == "mmap"].to_string()
    large = ht.by_function(last[last.source == "malloc"]).get("site_large")
    assert large is not None and large["live_bytes"] == 3 * MIB, large


def test_no_mappings_turns_the_vm_tracepoints_off(ht):
    """With --no-mappings no syscall tracepoint is attached: no mmap rows."""
    h, pid = ht.run("c", "workload", "mappings", extra=["--no-mappings"])
    df = h.read_csv()
    assert not (df[df.pid == pid].source == "mmap").any(), df[df.source == "mmap"].to_string()
    assert ht.by_function(ht.last_interval(df, pid))["site_large"]["live_bytes"] == 3 * MIB
