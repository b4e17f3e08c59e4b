"""heaptrace --all (issue 4): every process on the host, the ones started
later included, with exact byte counts (tests/programs/allproc.c).

Other sessions and other tests may run on the host at the same time: every
assertion selects its rows by PID, never by being alone. After each session
nothing heaptrace attached may be left (Held, from test_faults.py).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import pandas as pd
import pytest
from conftest import Proc
from test_faults import Held, perf_attachments, printed_intervals, processes_csv, programs_held_by

pytestmark = pytest.mark.integration

INTERVAL = 0.5
MAX_EXITED = 100   # tracer/session.py: exited processes kept with --all


# -- sessions ----------------------------------------------------------------------

class HeldEvents(Held):
    """--kernel-only: BPF programs on tracepoints, not one uprobe."""

    def __init__(self, h):
        self.pid = h.pid
        self.programs = programs_held_by(h.pid)
        self.perf = perf_attachments(h.pid)
        kinds = {e.get("fd_type") for e in self.perf}
        assert self.programs and kinds == {"tracepoint"}, (self.programs, self.perf)


def trace_all(ht, *args: str, tail: tuple[str, ...] = ()):
    """``heaptrace --all ARGS``, once it traces: (heaptrace, what it holds).
    (With --comm and nothing selected yet, it holds no uprobe: see
    test_comm_selects_one_program.)"""
    h = ht.heaptrace(["--all", *args], interval=INTERVAL, tail=list(tail))
    line = h.wait_tracing()
    assert line.startswith("Tracing every process"), line
    if "--comm" in args:
        return h, None
    return h, (HeldEvents(h) if "--kernel-only" in args else Held(h))


def settle(h, n: int = 2) -> None:
    """``n`` more intervals drained (the exec and VM events before now handled)."""
    h.wait_intervals(n, len(h.out))


def go(w, start: int = 0) -> None:
    """One byte to a workload; wait for its 'done'."""
    w.send(b"g")
    w.wait_line("out", lambda l: l == "done", 60, start, what="'done'")


def finish(ht, h, held):
    """SIGINT; heaptrace ends cleanly and leaves nothing attached. The sites
    and processes CSVs."""
    rc = h.interrupt()
    assert rc == 0, f"heaptrace exited {rc} after SIGINT\n{h.transcript()}"
    assert "stopped by SIGINT" in h.stderr, h.transcript()
    return ended(ht, h, held)


def ended(ht, h, held):
    """heaptrace has ended: no traceback, nothing left attached, LOST counted. The CSVs."""
    ht.no_traceback(h.stderr)
    held.assert_nothing_left(h)
    lost = [l for l in h.out + h.err if "LOST" in l]
    assert all(re.search(r"LOST: \d", l) for l in lost), lost   # counted, never vague
    return h.read_csv(), processes_csv(h)


def site(ht, rows: pd.DataFrame, function: str) -> tuple[int, int, int, int]:
    """(live_allocs, live_bytes, allocs, frees) of one function in ``rows``."""
    got = ht.by_function(rows[rows.source == "malloc"]).get(function, {})
    return got.get("live_allocs"), got.get("live_bytes"), got.get("allocs"), got.get("frees")


def leaked(n: int, size: int) -> tuple[int, int, int, int]:
    return n, n * size, n, 0


def exec_args(ht, second: str) -> list[str]:
    """allproc: 23 x 1013 at leak_before_exec, then exec ``second``: 29 x 2011."""
    return ["exec", "23", "1013", ht.programs[second], "29", "2011"]


def drive_exec(h, w) -> None:
    """Through the exec mode of allproc (``w`` prints its lines; with -c, ``w``
    is heaptrace): the first program leaks and is drained, the second one
    leaks and is drained."""
    w.send(b"g")
    i = w.wait_line("out", lambda l: l == "leaked", 60, what="'leaked'")
    settle(h)
    w.send(b"g")  # exec
    i = w.wait_line("out", lambda l: l == "ready", 30, i + 1, what="'ready' after the exec")
    go(w, i + 1)
    settle(h)


def start(ht, argv: list[str]) -> Proc:
    """A workload started by hand (not by name), killed at the end of the test."""
    p = Proc(argv)
    ht.procs.append(p)
    p.wait_line("out", lambda l: l == "ready", 30, what="'ready'")
    return p


# -- processes whatever their start ----------------------------------------------------

def leak_traced(ht, h, held, w, n: int, size: int) -> pd.DataFrame:
    """``w`` (allproc leak N SIZE) leaks: its last interval has N x SIZE at
    leak_main, under its name. The processes CSV."""
    go(w)
    settle(h)
    df, procs = finish(ht, h, held)
    last = ht.last_interval(df, w.pid)
    assert site(ht, last, "leak_main") == leaked(n, size), last
    assert set(last.comm) == {"allproc"}, last
    return procs


def test_process_started_after_tracing_began(ht):
    h, held = trace_all(ht)
    w = ht.program("allproc", "leak", "13", "1009")
    procs = leak_traced(ht, h, held, w, 13, 1009)
    assert w.pid in set(procs.pid)


def test_process_running_before_tracing_began(ht):
    w = ht.program("allproc", "leak", "17", "2003")
    h, held = trace_all(ht)
    procs = leak_traced(ht, h, held, w, 17, 2003)
    mine = procs[procs.pid == w.pid]
    assert len(mine) and set(mine.exited) == {0}, mine


def _loader_and_libc(exe: str) -> list[str]:
    """The dynamic loader and libc ``exe`` uses (ldd)."""
    out = subprocess.run(["ldd", exe], capture_output=True, text=True, check=True).stdout
    libc = re.search(r"libc\.so\.6 => (\S+)", out)
    loader = re.search(r"^\s*(/\S*ld-linux\S*)", out, re.M)
    assert libc and loader, out
    return [loader.group(1), libc.group(1)]


def test_chroot_with_its_own_copy_of_libc(ht, tmp_path):
    """A process in a chroot mapping its own copy of libc (another inode),
    started after heaptrace: found through /proc/PID/root and probed apart."""
    root = tmp_path / "root"
    files = {ht.programs["allproc"]: "/allproc"}
    files.update({f: f for f in _loader_and_libc(ht.programs["allproc"])})
    for src, dst in files.items():
        (root / dst.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, root / dst.lstrip("/"))
    libc = next(d for d in files.values() if "libc.so" in d)
    assert os.stat(root / libc.lstrip("/")).st_ino != os.stat(libc).st_ino
    h, held = trace_all(ht)
    w = start(ht, ["chroot", str(root), "/allproc", "leak", "19", "3001"])
    settle(h)  # its libc found, its probes attached
    leak_traced(ht, h, held, w, 19, 3001)


def test_exec_starts_a_new_program_under_the_same_pid(ht):
    """allproc leaks 23 x 1013, then execs allproc2, which leaks 29 x 2011:
    the first program's blocks are never shown under the second's name."""
    h, held = trace_all(ht)
    w = ht.program("allproc", *exec_args(ht, "allproc2"))
    drive_exec(h, w)
    df, _ = finish(ht, h, held)
    mine = df[df.pid == w.pid]
    before, after = mine[mine.comm == "allproc"], mine[mine.comm == "allproc2"]
    assert set(mine.comm) == {"allproc", "allproc2"}, mine
    assert site(ht, ht.last_interval(before, w.pid), "leak_before_exec") == leaked(23, 1013), before
    assert "leak_before_exec" not in set(after.function), after
    last = ht.last_interval(mine, w.pid)
    assert set(last.comm) == {"allproc2"}, last
    assert site(ht, last, "leak_main") == leaked(29, 2011), last
    assert before.interval.max() < after.interval.min(), mine


def test_exec_into_an_untraced_program_leaves_no_rows_of_the_first(ht):
    h, held = trace_all(ht)
    w = ht.program("allproc", *exec_args(ht, "allstatic"))
    drive_exec(h, w)
    df, _ = finish(ht, h, held)
    mine = df[df.pid == w.pid]
    before = mine[mine.function == "leak_before_exec"]
    assert site(ht, ht.last_interval(before, w.pid), "leak_before_exec") == leaked(23, 1013), mine
    after = mine[mine.comm == "allstatic"]
    assert not len(after), f"rows of allproc under the name of the program it exec'd:\n{after}"


def test_process_that_exits_keeps_its_final_numbers(ht):
    h, held = trace_all(ht)
    w = ht.program("allproc", "leak", "31", "499")
    go(w)
    settle(h)
    w.close_stdin()
    assert w.wait(30) == 0
    settle(h, 3)
    df, procs = finish(ht, h, held)
    last = ht.last_interval(df, w.pid)
    assert last.interval.max() == df.interval.max(), "an exited process must stay in the results"
    assert site(ht, last, "leak_main") == leaked(31, 499), last
    mine = procs[procs.pid == w.pid]
    assert mine.timestamp.iloc[-1] == procs.timestamp.max(), mine
    assert mine.exited.iloc[-1] == 1 and mine.exited.iloc[0] == 0, mine
    assert "[exited]" in h.stdout


def test_many_short_lived_processes(ht):
    """200 children, each leaking 3 x 1021 and exiting: heaptrace keeps
    going for its count of intervals, and every child it shows has its
    exact numbers."""
    count, children, n, size = 8, 200, 3, 1021
    h, held = trace_all(ht, tail=(str(count),))
    w = ht.program("allproc", "fork", str(children), str(n), str(size), "5000")
    go(w)
    assert h.wait(120) == 0, h.transcript()
    df, procs = ended(ht, h, held)
    kids = {int(l.split()[1]) for l in w.out if l.startswith("child ")}
    assert len(kids) == children
    assert printed_intervals(h) == count and procs.timestamp.nunique() == count, h.transcript()
    seen = kids & set(df.pid)
    assert seen, "no child of the fork loop in the CSV"
    for pid in seen:
        last = ht.last_interval(df[df.source == "malloc"], pid)
        assert (int(last.live_allocs.sum()), int(last.live_bytes.sum())) == (n, n * size), last


def test_forked_children_that_exit_are_marked_exited_and_bounded(ht):
    children, n, size = 2 * MAX_EXITED, 2, 1511
    h, held = trace_all(ht)
    w = ht.program("allproc", "fork", str(children), str(n), str(size), "0")
    go(w)
    settle(h, 3)
    df, procs = finish(ht, h, held)
    kids = {int(l.split()[1]) for l in w.out if l.startswith("child ")}
    last = procs[procs.timestamp == procs.timestamp.max()]
    shown = last[last.pid.isin(kids)]
    assert len(shown) <= MAX_EXITED, f"{len(shown)} exited children kept (at most {MAX_EXITED})"
    assert set(shown.exited) <= {1}, shown[shown.exited == 0]


def test_blocks_of_forgotten_processes_are_swept(ht):
    """2,600 children each leave 2 blocks and exit: beyond the 100 kept,
    they are forgotten, and once 2,048 ended incarnations wait
    (tracer.session.SWEEP_DEAD) their blocks are swept out of the allocs
    map during the session, not at its end."""
    children, n, size = 2600, 2, 1511
    h, held = trace_all(ht, "-v")
    w = ht.program("allproc", "fork", str(children), str(n), str(size), "0")
    go(w)
    settle(h, 3)
    finish(ht, h, held)
    swept = [re.search(r"heaptrace: ([\d,]+) records of ([\d,]+) ended processes swept", l) for l in h.err]
    swept = [(int(m[1].replace(",", "")), int(m[2].replace(",", ""))) for m in swept if m]
    assert swept, h.transcript()
    records, dead = swept[0]
    assert dead >= 2048 and records >= 2048, swept


# -- filters -----------------------------------------------------------------------

def only_the_first_is_traced(ht, h, held, traced, untraced, n: int, size: int) -> None:
    """Both workloads leak; only ``traced`` (n x size) is in the CSVs."""
    go(traced)
    go(untraced)
    settle(h)
    df, procs = finish(ht, h, held)
    assert site(ht, ht.last_interval(df, traced.pid), "leak_main") == leaked(n, size)
    assert untraced.pid not in set(df.pid) and untraced.pid not in set(procs.pid)


def test_comm_selects_one_program(ht):
    h, _ = trace_all(ht, "--comm", "allproc")
    a = ht.program("allproc", "leak", "37", "509")
    b = ht.program("allproc2", "leak", "41", "521")
    settle(h)  # both execs seen: allproc selected, its libc probed
    only_the_first_is_traced(ht, h, Held(h), a, b, 37, 509)


def test_exclude_pid(ht):
    a = ht.program("allproc", "leak", "43", "557")
    b = ht.program("allproc", "leak", "47", "563")
    h, held = trace_all(ht, "--exclude-pid", str(a.pid))
    only_the_first_is_traced(ht, h, held, b, a, 47, 563)


def test_kernel_only_has_mmap_rows_and_no_malloc_rows(ht):
    h, held = trace_all(ht, "--kernel-only")
    assert "kernel events only" in h.tracing_line
    w = ht.program("allproc", "mmap", "53", "1031", "7")
    go(w)
    settle(h)
    df, _ = finish(ht, h, held)
    mine = df[df.pid == w.pid]
    assert not len(mine[mine.source == "malloc"]), mine
    last = ht.last_interval(mine[mine.source == "mmap"], w.pid)
    got = ht.by_function(last).get("map_kept", {})
    assert (got.get("live_allocs"), got.get("live_bytes")) == (1, 7 * ht.PAGE_SIZE), last
    assert not len(df[df.source == "malloc"]), "--kernel-only wrote malloc rows"


# -- -c: the same separation -------------------------------------------------------

def test_exec_under_c_shows_only_the_second_program_after_it(ht):
    h = ht.started(ht.heaptrace(["-c", ht.command("allproc", *exec_args(ht, "allproc2"))], interval=INTERVAL))
    pid = h.traced[0]
    held = Held(h)
    drive_exec(h, h)
    df, _ = finish(ht, h, held)
    mine = df[df.pid == pid]
    before = mine[mine.function == "leak_before_exec"]
    assert site(ht, ht.last_interval(before, pid), "leak_before_exec") == leaked(23, 1013), mine
    after = mine[mine.interval > before.interval.max()]
    assert len(after) and set(after.comm) == {"allproc2"}, mine
    assert "leak_before_exec" not in set(after.function), after
    assert site(ht, ht.last_interval(mine, pid), "leak_main") == leaked(29, 2011), mine
