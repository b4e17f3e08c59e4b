"""When --all sweeps the blocks of ended processes out of the allocs map
(tracer.session.sweep_due): what it remembers of them stays bounded, and the
sweep (O(live blocks)) stays rare."""
from __future__ import annotations

from tracer.session import SWEEP_DEAD, SWEEP_DEAD_MAX, sweep_due

MAX = 1_000_000


def test_nothing_ended_nothing_to_sweep():
    assert not sweep_due(0, 0, MAX, now=100.0, next_ok=0.0)
    assert not sweep_due(0, MAX, MAX, now=100.0, next_ok=0.0)


def test_a_few_ended_processes_wait_for_more():
    assert not sweep_due(SWEEP_DEAD - 1, 10, MAX, now=100.0, next_ok=0.0)
    assert sweep_due(SWEEP_DEAD, 10, MAX, now=100.0, next_ok=0.0)


def test_spacing_after_a_long_sweep_is_kept():
    assert not sweep_due(SWEEP_DEAD * 5, 10, MAX, now=100.0, next_ok=100.5)
    assert sweep_due(SWEEP_DEAD * 5, 10, MAX, now=100.5, next_ok=100.5)


def test_a_filling_map_or_too_many_ended_ones_sweep_at_once():
    assert sweep_due(1, MAX // 10 + 1, MAX, now=100.0, next_ok=1e9)
    assert not sweep_due(1, MAX // 10, MAX, now=100.0, next_ok=1e9)
    assert sweep_due(SWEEP_DEAD_MAX + 1, 0, MAX, now=100.0, next_ok=1e9)
    assert not sweep_due(SWEEP_DEAD_MAX, 0, MAX, now=100.0, next_ok=1e9)
