"""--all's budget (tracer.budget) and where breakpoints sit (tracer.release): pure parts."""
from __future__ import annotations

import pytest

from tracer import budget, release
from tracer.procmaps import Mapping


def test_a_process_within_its_budget_stays():
    # 100,000 calls at 1.2 us = 0.12 s of a 10 s CPU interval: 1.2%
    assert budget.judge(budget.FULL, 100_000, 10.0, 1.0, 0.05) is None


def test_over_budget_full_goes_to_sampled_then_released():
    v = budget.judge(budget.FULL, 1_000_000, 2.0, 1.0, 0.05)
    assert v.mode == budget.SAMPLED and v.share == pytest.approx(0.6) and v.calls_per_s == 1_000_000
    v = budget.judge(budget.SAMPLED, 1_000_000, 2.0, 1.0, 0.05)
    assert v.mode == budget.RELEASED and v.share == pytest.approx(0.45)


@pytest.mark.parametrize("mode, calls, cpu, seconds, share", [
    (budget.RELEASED, 10**7, 1.0, 1.0, 0.05),    # nothing cheaper
    (budget.FULL, budget.MIN_CALLS - 1, 0.001, 1.0, 0.05),  # too few calls to judge
    (budget.FULL, 10**7, 0.0, 1.0, 0.05),        # no CPU time counted
    (budget.FULL, 10**7, 1.0, 0.0, 0.05),
    (budget.FULL, 10**7, 1.0, 1.0, 0.0),         # --budget 0: never
])
def test_no_verdict(mode, calls, cpu, seconds, share):
    assert budget.judge(mode, calls, cpu, seconds, share) is None


def test_share_is_at_most_everything():
    assert budget.judge(budget.FULL, 10**9, 0.01, 1.0, 0.05).share == 1.0


def m(start, end, off, dev=(8, 1), ino=42, perms="r-xp"):
    return Mapping(start, end, perms, off, dev, ino, "/lib/libc.so.6", False)


def test_breakpoint_addresses_follow_each_executable_mapping_of_the_file():
    bp = release.Breakpoint(((8, 1), 42), 0x2_9a0f, b"\x55")
    other = release.Breakpoint(((8, 1), 43), 0x2_9a0f, b"\x55")
    maps = [m(0x7000_0000, 0x7002_8000, 0),                        # r-x, ends before the offset
            m(0x7002_8000, 0x7010_0000, 0x2_8000),                 # covers it
            m(0x7100_0000, 0x7110_0000, 0x2_8000, perms="r--p"),   # not executable
            m(0x7200_0000, 0x7210_0000, 0x2_8000, ino=44)]         # another file
    assert release.addresses(maps, [bp, other]) == [(0x7002_8000 + 0x1a0f, bp)]


def test_remove_writes_only_where_a_breakpoint_is(tmp_path):
    mem = tmp_path / "mem"
    mem.write_bytes(b"\x00" * 16 + release.INT3 + b"\x90" * 15)
    bp = release.Breakpoint(((8, 1), 42), 0, b"\x55")
    assert release.remove(0, [(16, bp), (17, bp)], mem=str(mem)) == 1
    assert mem.read_bytes()[16:18] == b"\x55\x90"
    assert release.remove(0, [(16, bp)], mem=str(mem)) == 0
