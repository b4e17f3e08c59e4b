"""``--all``'s budget: what heaptrace's probes may cost a process.

Pure. Each interval, a process's allocator calls (allocations and frees,
from its sites) times what a probed call costs in its mode, over the CPU
time the process used (its probes' time included: the kernel runs them on
its behalf), is the share of its CPU heaptrace takes. Above the budget the
process moves to a cheaper mode, one step at a time, and is shown so:

- ``full`` -> ``sampled``: one allocation in SAMPLE_EVERY is traced and
  counts for SAMPLE_EVERY (estimates); every call still hits a breakpoint.
- ``sampled`` -> ``released``: the breakpoints are taken out of the process
  (tracer.release): it runs at full speed, its malloc view stops there (its
  mmap/brk view, from the kernel's tracepoints, goes on).
"""
from __future__ import annotations

from dataclasses import dataclass

FULL, SAMPLED, RELEASED = "full", "sampled", "released"

#: Seconds a probed allocator call costs its process, per mode: half of a
#: malloc+free pair's cost over the untraced pair, measured by scripts/bench
#: (heaptrace's probes; the bare-probe floor for sampled calls, which only
#: look up the process and leave). The README's benchmark tables have them.
COST_PER_CALL = {FULL: 1.2e-6, SAMPLED: 0.9e-6}
#: Calls per interval below which a process is never moved (its share is
#: noise in a CPU time counted in 10 ms ticks).
MIN_CALLS = 10_000


@dataclass(frozen=True)
class Verdict:
    mode: str         # the mode to move to
    share: float      # of its CPU heaptrace took in the interval
    calls_per_s: float


def judge(mode: str, calls: float, cpu_seconds: float, seconds: float, budget: float) -> Verdict | None:
    """The cheaper mode a process must move to, or None. ``calls`` and
    ``cpu_seconds`` over the last ``seconds``; ``budget`` a fraction (0.05)."""
    if mode not in COST_PER_CALL or budget <= 0 or calls < MIN_CALLS or cpu_seconds <= 0 or seconds <= 0:
        return None
    share = min(1.0, calls * COST_PER_CALL[mode] / cpu_seconds)
    if share <= budget:
        return None
    return Verdict(SAMPLED if mode == FULL else RELEASED, share, calls / seconds)
