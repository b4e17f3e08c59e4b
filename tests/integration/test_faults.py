"""Signals and faults (issue 6, item 3): whatever ends a session, heaptrace
detaches every probe, leaves no uprobe event and no BPF program behind,
says why it ended in one line with a meaningful exit status, and its CSVs
hold every interval that finished.

What is left behind is counted for the heaptrace process under test only
(other sessions may run on the host at the same time): the BPF programs it
holds are read from /proc/PID/fdinfo while it runs, and must be gone from
``bpftool prog show`` after it ends; no uprobe event named for its PID
(``_bcc_PID``) may be in tracefs; ``bpftool perf list`` must show nothing
attached by it.
"""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import UPROBE_EVENTS, uprobe_events

pytestmark = pytest.mark.integration

KEPT = (24, 23 * 1009 + 4001)  # site_malloc_kept after the family mode
LEFTOVER_TIMEOUT = 20.0         # BPF programs are freed after an RCU grace period


# -- what heaptrace holds in the kernel, and what is left after it ---------------

def _require_bpftool() -> str:
    path = shutil.which("bpftool")
    if path is None:
        msg = "bpftool is missing: run scripts/bootstrap (it installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return path


def _bpftool_json(*args: str):
    out = subprocess.run([_require_bpftool(), *args, "--json"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout or "[]")


def loaded_programs() -> dict[int, str]:
    """Every BPF program loaded on the host: id -> name."""
    return {p["id"]: p.get("name", "") for p in _bpftool_json("prog", "show")}


def perf_attachments(pid: int) -> list[dict]:
    """BPF programs attached to perf events (uprobes, tracepoints) by ``pid``."""
    return [e for e in _bpftool_json("perf", "list") if e.get("pid") == pid]


def _fdinfos(pid: int) -> list[str]:
    """The texts of ``pid``'s /proc fdinfo files; a descriptor closed while
    they are read (the process runs on) is skipped."""
    texts = []
    try:
        files = list(Path(f"/proc/{pid}/fdinfo").iterdir())
    except OSError:
        return texts
    for f in files:
        try:
            texts.append(f.read_text())
        except OSError:
            continue
    return texts


def programs_held_by(pid: int) -> set[int]:
    """IDs of the BPF programs whose file descriptors ``pid`` holds."""
    ids = set()
    for text in _fdinfos(pid):
        m = re.search(r"^prog_id:\s*(\d+)", text, re.M)
        if m:
            ids.add(int(m.group(1)))
    return ids


class Held:
    """What one heaptrace process attached, read while it traces."""

    def __init__(self, h):
        self.pid = h.pid
        self.programs = programs_held_by(h.pid)
        self.perf = perf_attachments(h.pid)
        assert self.programs, f"heaptrace {h.pid} holds no BPF program while tracing?\n{h.transcript()}"
        kinds = {e.get("fd_type") for e in self.perf}
        assert "uprobe" in kinds or "uretprobe" in kinds, self.perf
        assert {e["prog_id"] for e in self.perf} <= self.programs, (self.perf, self.programs)

    def assert_nothing_left(self, h) -> None:
        """heaptrace has exited: its programs, perf attachments and uprobe
        events are gone (programs are freed after a grace period: wait)."""
        assert h.p.poll() is not None, "heaptrace still running"
        end = time.monotonic() + LEFTOVER_TIMEOUT
        while True:
            left = {i: n for i, n in loaded_programs().items() if i in self.programs}
            if not left or time.monotonic() > end:
                break
            time.sleep(0.2)
        assert not left, f"BPF programs of heaptrace {self.pid} still loaded after it ended: {left}"
        assert not perf_attachments(self.pid), perf_attachments(self.pid)
        mine = [l for l in uprobe_events() if re.search(rf"_bcc_{self.pid}\s", l)]
        assert not mine, "uprobe events of heaptrace left in tracefs:\n" + "\n".join(mine)


# -- sessions ----------------------------------------------------------------------

def processes_csv(h) -> pd.DataFrame:
    path = Path(str(h.csv)[:-4] + ".processes.csv")
    return pd.read_csv(path, keep_default_na=False)


def printed_intervals(h) -> int:
    """Interval blocks printed before the summary (if any)."""
    end = next((i for i, l in enumerate(h.out) if l.startswith("heaptrace summary")), len(h.out))
    return sum(1 for l in h.out[:end] if re.match(r"^\d\d:\d\d:\d\d$", l))


def start(ht, how: str, prog: str = "workload", *args: str, extra=(), tail=()):
    """heaptrace -c or -p on PROG; returns (heaptrace, target pid, target Proc or None)."""
    args = args or ("family",)
    if how == "c":
        h = ht.started(ht.heaptrace(["-c", ht.command(prog, *args), *extra], tail=list(tail)))
        return h, h.traced[0], None
    w = ht.program(prog, *args)
    h = ht.heaptrace(["-p", str(w.pid), *extra], tail=list(tail))
    h.wait_tracing()
    assert h.traced == [w.pid], h.tracing_line
    return h, w.pid, w


def go(h, w) -> None:
    """'g' to the workload, wait for its 'done'."""
    if w is None:
        h.send(b"g")
        h.wait_line("out", lambda l: l == "done", 60, what="'done' from the -c program")
    else:
        w.send(b"g")
        w.wait_line("out", lambda l: l == "done", 60, what="'done'")


def gone(ht, pid: int, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if ht.start_time(pid) is None or ht.state(pid) == "Z":
            return True
        time.sleep(0.05)
    return False


def assert_every_interval_kept(ht, h, pid: int, drained: int) -> pd.DataFrame:
    """Both CSVs load with pandas and hold ``drained`` intervals; the last
    one has the family mode's exact live blocks."""
    df = h.read_csv()
    procs = processes_csv(h)
    mine = procs[procs.pid == pid]
    assert mine.timestamp.nunique() == len(mine) == drained, (drained, mine.to_string())
    assert set(df[df.pid == pid].timestamp) <= set(mine.timestamp)
    got = ht.by_function(ht.last_interval(df, pid)).get("site_malloc_kept", {})
    assert (got.get("live_allocs"), got.get("live_bytes")) == KEPT, got
    return df


# -- Ctrl-C, SIGTERM, SIGHUP ------------------------------------------------------------

@pytest.mark.parametrize("how", ["c", "p"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_signal_ends_the_session_with_everything_detached(ht, how, sig):
    h, pid, w = start(ht, how)
    held = Held(h)
    go(h, w)
    h.wait_intervals(2, len(h.out))
    rc = h.interrupt(sig)
    assert rc == 0, h.transcript()
    ht.no_traceback(h.stderr)
    assert f"heaptrace: stopped by {sig.name}" in h.err, h.transcript()
    assert any(l.startswith("heaptrace summary") for l in h.out), h.transcript()
    # Every printed interval, and the one drained after the signal.
    assert_every_interval_kept(ht, h, pid, printed_intervals(h) + 1)
    held.assert_nothing_left(h)
    if how == "c":
        assert gone(ht, pid), "the -c program outlived heaptrace"
    else:
        assert w.p.poll() is None, "heaptrace -p must leave its target running"


def test_started_with_nohup_a_hang_up_does_not_end_the_session(ht):
    """Under nohup (SIGHUP ignored) heaptrace keeps ignoring hang-ups, as
    nohup asks; SIGINT still ends it cleanly."""
    w = ht.program("workload", "family")
    h = ht.heaptrace(["-p", str(w.pid)], hup_ignored=True)
    h.wait_tracing()
    held = Held(h)
    os.kill(h.pid, signal.SIGHUP)
    n = printed_intervals(h)
    h.wait_intervals(2, len(h.out))
    assert h.p.poll() is None and printed_intervals(h) >= n + 2, h.transcript()
    assert h.interrupt() == 0, h.transcript()
    assert "heaptrace: stopped by SIGINT" in h.err, h.transcript()
    held.assert_nothing_left(h)


def orphaned_programs(names: set[str]) -> dict[int, str]:
    """Loaded programs named like heaptrace's that no live process holds
    (another session's are held by it), after their grace period."""
    end = time.monotonic() + LEFTOVER_TIMEOUT
    while True:
        held = set()
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    held |= programs_held_by(int(d))
                except OSError:
                    pass
        left = {i: n for i, n in loaded_programs().items() if n in names and i not in held}
        if not left or time.monotonic() > end:
            return left
        time.sleep(0.2)


HEAPTRACE_PROGRAMS = {"malloc_enter", "free_enter", "alloc_return", "calloc_enter", "realloc_enter",
                      "tracepoint__syscalls__sys_enter_mmap", "tracepoint__sched__sched_process_exit"}


def test_signal_during_start_up_ends_at_once_with_nothing_attached(ht):
    """SIGTERM while the BPF programs are compiled and attached: heaptrace
    attaches no more, says so, exits 143; nothing stays loaded."""
    w = ht.program("workload", "family")
    h = ht.heaptrace(["-p", str(w.pid)])
    end = time.monotonic() + 60
    while not any(re.search(r"^map_id:", text, re.M) for text in _fdinfos(h.pid)):
        assert time.monotonic() < end and h.p.poll() is None, h.transcript()
        time.sleep(0.01)                  # until bcc made its maps: compiled, attaching next
    h.p.send_signal(signal.SIGTERM)
    rc = h.wait(60)
    ht.no_traceback(h.stderr)
    assert rc == 128 + signal.SIGTERM, h.transcript()
    assert h.err[-1] == "heaptrace: stopped by SIGTERM during start-up; nothing was traced", h.transcript()
    assert not any(l.startswith("Tracing") for l in h.err), h.transcript()
    assert not perf_attachments(h.pid)
    assert not orphaned_programs(HEAPTRACE_PROGRAMS)
    assert w.p.poll() is None


# -- a bug in the drain loop ----------------------------------------------------------------

@pytest.mark.parametrize("how", ["c", "p"])
def test_exception_in_the_drain_loop_is_an_internal_error(ht, how, monkeypatch):
    """HEAPTRACE_FAULT=drain:6 raises in the 6th drain: five intervals are in
    the CSVs, the probes are detached, one line says 'internal error' and to
    report it, exit 70, no traceback."""
    monkeypatch.setenv("HEAPTRACE_FAULT", "drain:6")
    h, pid, w = start(ht, how)
    monkeypatch.delenv("HEAPTRACE_FAULT")
    held = Held(h)
    go(h, w)
    rc = h.wait(60)
    assert rc == 70, h.transcript()
    ht.no_traceback(h.stderr)
    errors = [l for l in h.err if l.startswith("heaptrace: internal error:")]
    assert len(errors) == 1, h.transcript()
    assert "HEAPTRACE_FAULT=drain:6" in errors[0] and "please report it" in errors[0], errors
    assert h.err[-1] == errors[0], "the error is the last thing said\n" + h.transcript()
    assert printed_intervals(h) == 5, h.transcript()
    assert_every_interval_kept(ht, h, pid, 5)
    held.assert_nothing_left(h)
    if how == "c":
        assert gone(ht, pid), "the -c program outlived heaptrace"
    else:
        assert w.p.poll() is None


def test_internal_error_with_v_shows_the_traceback(ht, monkeypatch):
    monkeypatch.setenv("HEAPTRACE_FAULT", "drain:2")
    h, pid, w = start(ht, "p", extra=["-v"])
    monkeypatch.delenv("HEAPTRACE_FAULT")
    held = Held(h)
    rc = h.wait(60)
    assert rc == 70, h.transcript()
    assert "Traceback" in h.stderr and "_fault" in h.stderr, h.transcript()
    assert h.err[-1].startswith("heaptrace: internal error: RuntimeError: fault injected"), h.transcript()
    held.assert_nothing_left(h)


# -- the target killed ----------------------------------------------------------------------

@pytest.mark.parametrize("how", ["c", "p"])
def test_target_killed_with_sigkill(ht, how):
    h, pid, w = start(ht, how)
    held = Held(h)
    go(h, w)
    h.wait_intervals(2, len(h.out))
    os.kill(pid, signal.SIGKILL)          # -p: not reaped until heaptrace has ended
    rc = h.wait(60)
    ht.no_traceback(h.stderr)
    assert rc == (128 + signal.SIGKILL if how == "c" else 0), h.transcript()
    assert f"heaptrace: pid {pid} (workload) was killed by SIGKILL" in h.err, h.transcript()
    assert "stopped by" not in h.stderr
    summary = next(i for i, l in enumerate(h.out) if l.startswith("heaptrace summary"))
    assert any(re.match(rf"^\s*{pid}\s.*\[exited\]", l) for l in h.out[summary:]), h.transcript()
    assert_every_interval_kept(ht, h, pid, printed_intervals(h) + 1)
    held.assert_nothing_left(h)


class MemoryCgroup:
    """A child memory cgroup with a hard limit: cgroup v2 ``memory.max`` when
    a v2 hierarchy has the memory controller, else cgroup v1
    ``memory.limit_in_bytes`` (a hybrid host, where memory is bound to v1)."""

    def __init__(self, limit: int):
        self.path: Path | None = None
        mounts = [l.split() for l in open("/proc/mounts")]
        for dev, mnt, fstype, opts, *_ in mounts:
            if fstype == "cgroup2":
                root = Path(mnt)
                try:
                    if "memory" in (root / "cgroup.subtree_control").read_text().split():
                        self._make(root, {"memory.max": limit, "memory.swap.max": 0})
                        return
                except OSError:
                    pass
        for dev, mnt, fstype, opts, *_ in mounts:
            if fstype == "cgroup" and "memory" in opts.split(","):
                self._make(Path(mnt), {"memory.limit_in_bytes": limit, "memory.memsw.limit_in_bytes": limit})
                return

    def _make(self, root: Path, limits: dict) -> None:
        path = root / f"heaptrace-test-{os.getpid()}-{time.monotonic_ns()}"
        path.mkdir()
        self.path = path
        for name, value in limits.items():
            f = path / name
            if f.exists():
                f.write_text(str(value))

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def remove(self) -> None:
        if self.path is None:
            return
        end = time.monotonic() + 10
        while True:
            try:
                self.path.rmdir()
                return
            except OSError as e:
                if e.errno != errno.EBUSY or time.monotonic() > end:
                    raise
                time.sleep(0.1)


@pytest.mark.parametrize("how", ["c", "p"])
def test_target_killed_by_the_oom_killer(ht, how):
    """The target moves into a memory cgroup limited to 32 MiB, then
    allocates 4,000,037 blocks of 32 bytes: the kernel's OOM killer ends it.
    heaptrace says so, keeps every interval, and detaches."""
    cg = MemoryCgroup(32 << 20)
    if cg.path is None:
        msg = "no memory cgroup (v2 memory.max or v1 memory.limit_in_bytes) to make the OOM killer act"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    pid = None
    try:
        h, pid, w = start(ht, how, "workload", "many", "4000037")
        held = Held(h)
        cg.add(pid)
        (h if w is None else w).send(b"g")
        rc = h.wait(120)
        ht.no_traceback(h.stderr)
        assert rc == (128 + signal.SIGKILL if how == "c" else 0), h.transcript()
        assert f"heaptrace: pid {pid} (workload) was killed by the kernel's OOM killer" in h.stderr, \
            h.transcript()
        assert not any(l == "done" for l in (h.out if w is None else w.out)), "it was not killed"
        df = h.read_csv()
        procs = processes_csv(h)
        mine = procs[procs.pid == pid]
        assert mine.timestamp.nunique() == len(mine) == printed_intervals(h) + 1, h.transcript()
        many = df[(df.pid == pid) & (df.function == "site_many")]
        assert len(many) and many.live_allocs.max() > 100_000, many.to_string()
        held.assert_nothing_left(h)
    finally:
        for p in reversed(ht.procs):
            p.kill()
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        cg.remove()


# -- a full disk ---------------------------------------------------------------------------

class SmallDisk:
    """A 256 KiB tmpfs, unmounted at the end whatever happens."""

    def __init__(self, where: Path):
        self.dir = where
        self.dir.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(self.dir)],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        self.filler = self.dir / "filler"

    def fill(self, leave: int = 0) -> None:
        """Fill the disk, then free ``leave`` bytes."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
        finally:
            os.close(fd)
        size = self.filler.stat().st_size
        os.truncate(self.filler, max(0, size - leave))

    def unmount(self) -> None:
        r = subprocess.run(["umount", str(self.dir)], capture_output=True, text=True)
        if r.returncode != 0:
            subprocess.run(["umount", "-l", str(self.dir)], capture_output=True, text=True)


def test_full_disk_while_writing_the_csv(ht, tmp_path):
    """The disk fills after a few intervals: heaptrace names the file and
    says the disk is full (exit 74), both CSVs load and hold every interval
    finished before, nothing is left attached."""
    disk = SmallDisk(tmp_path / "small")
    try:
        disk.fill(leave=40 << 10)
        w = ht.program("workload", "family")
        h = ht.heaptrace(["-p", str(w.pid)], csv=disk.dir / "run.csv")
        h.wait_tracing()
        held = Held(h)
        go(h, w)
        rc = h.wait(120)
        ht.no_traceback(h.stderr)
        assert rc == 74, h.transcript()
        m = re.fullmatch(r"heaptrace: error: writing (\S+) failed: the disk is full \(No space left on device\); "
                         r"it keeps the (\d+) intervals? finished before", h.err[-1])
        assert m, h.transcript()
        assert m.group(1) in (str(disk.dir / "run.csv"), str(disk.dir / "run.processes.csv")), h.err[-1]
        done = int(m.group(2))
        assert done >= 3 and printed_intervals(h) == done, h.transcript()
        assert_every_interval_kept(ht, h, w.pid, done)
        for f in ("run.csv", "run.processes.csv"):
            assert (disk.dir / f).read_bytes().endswith(b"\r\n"), f"{f} ends in a cut row"
        held.assert_nothing_left(h)
        assert w.p.poll() is None
    finally:
        for p in reversed(ht.procs):
            p.kill()
        disk.unmount()


def test_full_disk_before_the_first_interval(ht, tmp_path):
    """No room for the CSV's header: the same error, 'nothing was traced',
    no file left half-written, nothing attached."""
    disk = SmallDisk(tmp_path / "small")
    try:
        disk.fill()
        w = ht.program("workload", "family")
        h = ht.heaptrace(["-p", str(w.pid)], csv=disk.dir / "run.csv")
        h.wait_tracing()
        held = Held(h)
        rc = h.wait(60)
        ht.no_traceback(h.stderr)
        assert rc == 74, h.transcript()
        assert h.err[-1] == (f"heaptrace: error: writing {disk.dir / 'run.csv'} failed: the disk is full "
                             "(No space left on device); nothing was traced"), h.transcript()
        assert not (disk.dir / "run.csv").exists() and not (disk.dir / "run.processes.csv").exists()
        held.assert_nothing_left(h)
    finally:
        for p in reversed(ht.procs):
            p.kill()
        disk.unmount()


# -- two sessions at once ----------------------------------------------------------------------

def test_two_sessions_at_once_do_not_disturb_each_other(ht):
    """A traces w1; B traces w1 (the same process) and w2. B ends while A
    goes on. Both CSVs exact; A never sees w2; B's end leaves A's probes."""
    w1 = ht.program("workload", "family")
    w2 = ht.program("workload", "family")
    a = ht.heaptrace(["-p", str(w1.pid)])
    a.wait_tracing()
    held_a = Held(a)
    b = ht.heaptrace(["-p", f"{w1.pid},{w2.pid}"])
    b.wait_tracing()
    held_b = Held(b)
    assert not held_a.programs & held_b.programs
    go(a, w1)
    go(b, w2)
    b.wait_intervals(2, len(b.out))
    assert b.interrupt() == 0, b.transcript()
    ht.no_traceback(b.stderr)
    held_b.assert_nothing_left(b)
    assert a.p.poll() is None, "A ended with B\n" + a.transcript()
    assert programs_held_by(a.pid) == held_a.programs
    # A goes on after B detached: two more intervals, its counts exact.
    a.wait_intervals(2, len(a.out))
    assert a.interrupt() == 0, a.transcript()
    ht.no_traceback(a.stderr)
    held_a.assert_nothing_left(a)
    da, db = a.read_csv(), b.read_csv()
    for df, pid in ((da, w1.pid), (db, w1.pid), (db, w2.pid)):
        got = ht.by_function(ht.last_interval(df, pid))["site_malloc_kept"]
        assert (got["live_allocs"], got["live_bytes"]) == KEPT, (pid, got)
    assert set(da.pid) == {w1.pid}, set(da.pid)
    # A's every interval is exact once w1 was done: no count doubled or lost
    # while B attached and detached on the same process.
    rows = da[da.function == "site_malloc_kept"].groupby("interval")[["live_allocs", "live_bytes"]].sum()
    counts = list(zip(rows.live_allocs, rows.live_bytes))
    first = counts.index(KEPT)
    assert counts[first:] == [KEPT] * (len(counts) - first) and len(counts) - first >= 4, rows.to_string()


# -- heaptrace itself killed ---------------------------------------------------------------------

@pytest.mark.parametrize("how", ["c", "p"])
def test_heaptrace_killed_with_sigkill_leaves_nothing_attached(ht, how):
    """bcc 0.26 attaches through perf_event_open (the uprobe PMU): the kernel
    drops every probe and program with heaptrace's file descriptors. A -c
    program gets SIGTERM (PR_SET_PDEATHSIG). The CSV keeps what was written."""
    assert os.path.exists("/sys/bus/event_source/devices/uprobe/type"), \
        "no uprobe PMU: bcc would make tracefs events (removed at the next start: see the next test)"
    h, pid, w = start(ht, how)
    held = Held(h)
    assert not [l for l in uprobe_events() if re.search(rf"_bcc_{h.pid}\s", l)], uprobe_events()
    go(h, w)
    h.wait_intervals(2, len(h.out))
    h.p.kill()
    assert h.wait(30) == -signal.SIGKILL
    held.assert_nothing_left(h)
    df = h.read_csv()
    got = ht.by_function(ht.last_interval(df, pid)).get("site_malloc_kept", {})
    assert (got.get("live_allocs"), got.get("live_bytes")) == KEPT, got
    if how == "c":
        assert gone(ht, pid), "the -c program outlived heaptrace's SIGKILL"
    else:
        assert w.p.poll() is None


def _tracefs_command(path: str, line: str) -> None:
    """One command to uprobe_events: appended, never truncated (that would
    remove every uprobe event), without the seek Python's "a" mode does."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _dead_pid() -> int:
    with open("/proc/sys/kernel/pid_max") as f:
        pid = int(f.read()) - 1
    while os.path.exists(f"/proc/{pid}"):
        pid -= 1
    return pid


def test_stale_bcc_uprobe_events_are_removed_at_start(ht):
    """Where bcc falls back to tracefs (a kernel without the uprobe PMU), a
    heaptrace killed with SIGKILL leaves named uprobe events behind. The
    next heaptrace removes those whose creating process is gone, and keeps
    those of a live one."""
    path = next(p for p in UPROBE_EVENTS if os.path.exists(p))
    target = ht.programs["workload"]
    dead, live = _dead_pid(), os.getpid()
    names = {"dead": f"p__heaptrace_test_0x1000_bcc_{dead}", "live": f"p__heaptrace_test_0x1000_bcc_{live}"}
    try:
        for n in names.values():
            _tracefs_command(path, f"p:uprobes/{n} {target}:0x1000\n")
        assert all(any(n in l for l in uprobe_events()) for n in names.values()), uprobe_events()
        w = ht.program("workload", "family")
        h = ht.heaptrace(["-p", str(w.pid)])
        h.wait_tracing()
        events = uprobe_events()
        assert not any(names["dead"] in l for l in events), events
        assert any(names["live"] in l for l in events), events
        assert "heaptrace: removed 1 uprobe event left in tracefs by bcc processes that no longer run" \
            in h.err, h.transcript()
        assert h.interrupt() == 0
    finally:
        for n in names.values():
            try:
                _tracefs_command(path, f"-:uprobes/{n}\n")
            except OSError:
                pass
