"""--all's budget on a real malloc-heavy process: it is sampled first, then
its breakpoints are taken out and it runs at full speed again (or, when
another session on the host probes the same places, it stays sampled and
heaptrace says why). Shown in the view and the processes CSV."""
from __future__ import annotations

import re
import statistics
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from conftest import Proc

pytestmark = pytest.mark.integration

SOURCE = Path(__file__).resolve().parents[1] / "programs" / "churn.c"


@pytest.fixture(scope="module")
def churn(tmp_path_factory) -> str:
    exe = tmp_path_factory.mktemp("budget") / "churn"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(SOURCE)], check=True)
    return str(exe)


def speeds(p: Proc, start: int, n: int) -> tuple[float, int]:
    """Median ns per pair over the next ``n`` reports after stdout line ``start``."""
    got, i = [], start
    for _ in range(n):
        i = p.wait_line("out", lambda l: l.startswith("ns "), 30, start=i, what="a speed") + 1
        got.append(float(p.out[i - 1].split()[1]))
    return statistics.median(got), i


def test_a_process_over_budget_is_sampled_then_released(ht, churn):
    untraced = Proc([churn])
    ht.procs.append(untraced)
    untraced.wait_line("out", lambda l: l == "ready", 10, what="ready")
    base, _ = speeds(untraced, 0, 5)
    untraced.close_stdin()
    untraced.wait(10)

    h = ht.heaptrace(["--all", "--budget", "5", "--top", "1000"], interval=0.5)
    h.wait_tracing()
    p = Proc([churn])
    ht.procs.append(p)
    p.wait_line("out", lambda l: l == "ready", 10, what="ready")
    traced, i = speeds(p, 0, 3)
    me = rf"pid {p.pid} \(churn\)"
    h.wait_line("err", lambda l: re.search(me + r".*now 1 allocation in 64 is traced", l), 30,
                what="the move to sampling")
    end = h.wait_line("err", lambda l: re.search(me + r".*(breakpoints taken out|left sampled)", l), 30,
                      what="the release (or why not)")
    released = "breakpoints taken out" in h.err[end]
    if released:
        after, _ = speeds(p, len(p.out), 5)
        # Traced, each pair hits two breakpoints (~1.5 us); released, it is
        # back to what it was untraced (within noise).
        assert traced > 20 * base, (traced, base)
        assert after < 5 * base + 50, (after, base, traced)
    h.wait_intervals(2, len(h.out))
    assert h.interrupt() == 0, h.transcript()
    p.close_stdin()
    assert p.wait(10) == 0
    procs = pd.read_csv(str(h.csv)[:-4] + ".processes.csv", keep_default_na=False)
    modes = set(procs[procs["pid"] == p.pid]["mode"])
    assert modes <= {"full", "sampled", "released"} and ("released" if released else "sampled") in modes
    assert re.search(rf"{p.pid} .*churn \[(probes off|sampled)\]", h.stdout)
