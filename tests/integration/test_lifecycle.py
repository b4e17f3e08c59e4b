"""How a session starts and ends: exit status, bad targets, targets that exit,
--count, --duration, SIGTERM, several processes."""
import os
import shutil
import subprocess
import re
import signal
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

KEPT = (24, 23 * 1009 + 4001)  # site_malloc_kept after the family mode


def test_exit_status_of_the_command_is_passed_through(ht):
    h = ht.heaptrace(["-c", 'sh -c "exit 7"'])
    h.wait_tracing()
    assert h.wait(60) == 7, h.transcript()
    ht.no_traceback(h.stderr)


def test_command_killed_by_a_signal_gives_128_plus_signal(ht):
    h = ht.heaptrace(["-c", "sh -c 'kill -TERM $$'"])
    h.wait_tracing()
    assert h.wait(60) == 128 + signal.SIGTERM, h.transcript()
    ht.no_traceback(h.stderr)


@pytest.mark.parametrize("command", ["/nonexistent/heaptrace-test-prog", "no-such-command-heaptrace-test",
                                     "NOT_EXECUTABLE"])
def test_command_that_cannot_run(ht, tmp_path, command):
    if command == "NOT_EXECUTABLE":
        f = tmp_path / "not-a-program"
        f.write_text("just text\n")
        os.chmod(f, 0o644)
        command = str(f)
    h = ht.heaptrace(["-c", command])
    rc = h.wait(60)
    assert rc != 0, h.transcript()
    ht.no_traceback(h.stderr)
    assert "heaptrace: error:" in h.stderr and os.path.basename(command) in h.stderr, h.transcript()
    assert not any(l.startswith("Tracing") for l in h.err), h.transcript()


def test_pid_that_does_not_exist(ht):
    with open("/proc/sys/kernel/pid_max") as f:
        pid = int(f.read()) - 1
    while os.path.exists(f"/proc/{pid}"):
        pid -= 1
    h = ht.heaptrace(["-p", str(pid)])
    rc = h.wait(60)
    assert rc != 0, h.transcript()
    ht.no_traceback(h.stderr)
    assert re.search(rf"heaptrace: error: .*process {pid} does not exist", h.stderr), h.transcript()


@pytest.mark.parametrize("target", [["-p", "1"], ["-c", "true"]])
def test_unprivileged_user_is_told_what_is_missing(ht, target):
    """Run as nobody (setpriv drops every capability): exit 77, one line
    naming the missing capabilities and sudo, nothing attached."""
    if shutil.which("setpriv") is None:
        pytest.fail("setpriv (util-linux) is needed to drop privileges")
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        str(ht_bin()), *target], capture_output=True, text=True, timeout=60)
    ht.no_traceback(r.stderr)
    assert r.returncode == 77, (r.returncode, r.stderr)
    assert "sudo" in r.stderr and "CAP_BPF" in r.stderr and "Tracing" not in r.stderr


def ht_bin():
    return Path(__file__).resolve().parents[2] / ".venv" / "bin" / "heaptrace"


def _block_of(lines, pid):
    """The process line of ``pid`` in the summary (the last block of stdout)."""
    start = max(i for i, l in enumerate(lines) if l.startswith("heaptrace summary"))
    return [l for l in lines[start:] if re.match(rf"^\s*{pid}\s", l)]


@pytest.mark.parametrize("how", ["c", "p"])
def test_target_that_exits_is_marked_and_its_data_kept(ht, how):
    if how == "c":
        h = ht.started(ht.heaptrace(["-c", ht.command("workload", "family")]))
        pid, w = h.traced[0], None
        h.send(b"g")
        i = h.wait_line("out", lambda l: l == "done", 30, what="'done'")
        h.wait_intervals(2, i + 1)
        h.close_stdin()           # the program's stdin is heaptrace's: EOF ends it
    else:
        w = ht.program("workload", "family")
        pid = w.pid
        h = ht.heaptrace(["-p", str(pid)])
        h.wait_tracing()
        w.send(b"g")
        w.wait_line("out", lambda l: l == "done", 30, what="'done'")
        h.wait_intervals(2, len(h.out))
        w.close_stdin()
        assert w.wait(10) == 0
    rc = h.wait(30)               # every target gone: the session ends by itself
    assert rc == 0, h.transcript()
    ht.no_traceback(h.stderr)
    assert "stopped by" not in h.stderr, h.transcript()
    line = _block_of(h.out, pid)
    assert line and "[exited]" in line[0], h.transcript()
    df = h.read_csv()
    got = ht.by_function(ht.last_interval(df, pid))
    kept = got.get("site_malloc_kept", {})
    assert (kept.get("live_allocs"), kept.get("live_bytes")) == KEPT, got


def test_count_ends_after_n_intervals(ht):
    h = ht.started(ht.heaptrace(["-c", ht.command("workload", "family")], tail=["3"]))
    h.send(b"g")
    rc = h.wait(60)
    assert rc == 0, h.transcript()
    ht.no_traceback(h.stderr)
    assert "stopped by" not in h.stderr
    summary = next(i for i, l in enumerate(h.out) if l.startswith("heaptrace summary"))
    assert h.headers_after(0) == 3 and sum(1 for l in h.out[:summary] if ht.HEADER.match(l)) == 3, h.stdout
    df = h.read_csv()
    assert df.interval.nunique() <= 3, df[["timestamp", "interval"]].to_string()
    pid = h.traced[0]
    assert ht.start_time(pid) is None or ht.state(pid) == "Z", "the -c program outlived heaptrace"


def test_duration_ends_the_session(ht):
    w = ht.program("workload", "family")
    t0 = time.monotonic()
    h = ht.heaptrace(["-p", str(w.pid), "--duration", "1.5"])
    h.wait_tracing()
    t_tracing = time.monotonic()
    rc = h.wait(30)
    t_end = time.monotonic()
    assert rc == 0, h.transcript()
    ht.no_traceback(h.stderr)
    assert "stopped by" not in h.stderr
    assert any(l.startswith("heaptrace summary") for l in h.out), h.stdout
    assert t_end - t0 >= 1.5, f"ended {t_end - t0:.2f} s after start"
    assert t_end - t0 < 1.5 + 15, f"ended {t_end - t0:.2f} s after start"
    print(f"--duration 1.5: {t_end - t_tracing:.2f} s after 'Tracing', {t_end - t0:.2f} s after start")
    assert w.p.poll() is None


def _interval_blocks(lines):
    """stdout split into plain-text intervals (the summary excluded)."""
    blocks, cur = [], None
    for l in lines:
        if l.startswith("heaptrace summary"):
            break
        if re.match(r"^\d\d:\d\d:\d\d$", l):
            cur = []
            blocks.append(cur)
        elif cur is not None:
            cur.append(l)
    return blocks


def test_sigterm_ends_cleanly_with_every_interval_in_the_csv(ht):
    h = ht.started(ht.heaptrace(["-c", ht.command("workload", "family")]))
    pid = h.traced[0]
    h.send(b"g")
    i = h.wait_line("out", lambda l: l == "done", 30, what="'done'")
    h.wait_intervals(3, i + 1)
    rc = h.interrupt(signal.SIGTERM)
    assert rc == 0, h.transcript()
    ht.no_traceback(h.stderr)
    assert "stopped by SIGTERM" in h.stderr, h.transcript()
    assert any(l.startswith("heaptrace summary") for l in h.out)
    shown = sum(1 for b in _interval_blocks(h.out) if any("site_malloc_kept" in l for l in b))
    df = h.read_csv()
    mine = df[(df.pid == pid) & (df.function == "site_malloc_kept")]
    # Every interval printed, plus the last one drained after the signal.
    assert mine.interval.nunique() == shown + 1, (shown, mine[["timestamp", "interval"]].to_string())
    last = ht.by_function(ht.last_interval(df, pid))["site_malloc_kept"]
    assert (last["live_allocs"], last["live_bytes"]) == KEPT
    assert ht.start_time(pid) is None or ht.state(pid) == "Z", "the -c program outlived heaptrace"


def test_sigint_during_start_up_leaves_nothing_behind(ht):
    h = ht.heaptrace(["-c", ht.command("workload", "family")])
    time.sleep(0.3)  # in the middle of compiling and attaching
    h.p.send_signal(signal.SIGINT)
    rc = h.wait(60)
    assert rc in (0, 130), h.transcript()
    ht.no_traceback(h.stderr)
    assert not ht.running(ht.programs["workload"]), "a program heaptrace started outlived it"


def test_several_pids_each_with_its_own_sites(ht):
    a = ht.program("workload", "family")
    b = ht.program("nofp")
    h = ht.heaptrace(["-p", f"{a.pid},{b.pid}"])
    h.wait_tracing()
    assert sorted(h.traced) == sorted([a.pid, b.pid]), h.tracing_line
    a.send(b"g")
    b.send(b"g")
    a.wait_line("out", lambda l: l == "done", 30)
    b.wait_line("out", lambda l: l == "done", 30)
    h.wait_intervals(2, len(h.out))
    assert h.interrupt() == 0, h.transcript()
    df = h.read_csv()
    ga = ht.by_function(ht.last_interval(df, a.pid))
    gb = ht.by_function(ht.last_interval(df, b.pid))
    assert (ga["site_malloc_kept"]["live_allocs"], ga["site_malloc_kept"]["live_bytes"]) == KEPT, ga
    assert (gb["nofp_site"]["live_allocs"], gb["nofp_site"]["live_bytes"]) == (37, 37 * 53), gb
    assert not set(ga) & {"nofp_site"} and not set(gb) & {"site_malloc_kept"}
    assert set(df[df.pid == a.pid].comm) == {"workload"} and set(df[df.pid == b.pid].comm) == {"nofp"}


def test_command_that_exits_before_the_first_interval_is_symbolized(ht):
    """A short-lived -c program: its data is kept, with every frame named,
    including those in libc (mapped after exec, before the program ends)."""
    h = ht.started(ht.heaptrace(["-c", ht.command("workload", "family")]), wait_ready=False)
    pid = h.traced[0]
    h.send(b"g")
    h.close_stdin()               # "done", then EOF: the program exits at once
    assert h.wait(30) == 0, h.transcript()
    ht.no_traceback(h.stderr)
    df = h.read_csv()
    mine = df[df.pid == pid]
    got = ht.by_function(ht.last_interval(df, pid))
    kept = got.get("site_malloc_kept", {})
    assert (kept.get("live_allocs"), kept.get("live_bytes")) == KEPT, got
    frames = {f for s in mine["stack"] for f in s.split(";")}
    unnamed = sorted(f for f in frames if not re.match(r"^\S+\+0x[0-9a-f]+ \[[^\]]+\]$", f))
    assert not unnamed, f"frames without a symbol or module: {unnamed}\n" + mine.to_string()


def test_command_that_exits_as_heaptrace_is_stopped(ht):
    """The -c program ends (its stdin closes) at the moment heaptrace gets
    SIGINT: the last drain meets a process on its way out. No traceback,
    and the data is kept."""
    h = ht.started(ht.heaptrace(["-c", ht.command("workload", "family")]))
    pid = h.traced[0]
    h.send(b"g")
    h.wait_line("out", lambda l: l == "done", 30, what="'done'")
    h.close_stdin()
    h.p.send_signal(signal.SIGINT)
    rc = h.wait(60)
    ht.no_traceback(h.stderr)
    assert rc == 0, h.transcript()
    got = ht.by_function(ht.last_interval(h.read_csv(), pid))
    kept = got.get("site_malloc_kept", {})
    assert (kept.get("live_allocs"), kept.get("live_bytes")) == KEPT, got


def test_target_that_exits_unreaped_then_reaped(ht):
    """-p on a program that exits while its parent (this test) has not yet
    reaped it: a zombie for a few intervals, with a site heaptrace has not
    seen before. No traceback; once reaped, the session ends by itself,
    the process is [exited] and both sites are kept, by name."""
    w = ht.program("workload", "exit")
    h = ht.heaptrace(["-p", str(w.pid)])
    h.wait_tracing()
    w.send(b"g")
    w.wait_line("out", lambda l: l == "step", 30, what="'step'")
    h.wait_intervals(2, len(h.out))       # the first site is drained and named
    w.send(b"g")
    w.wait_line("out", lambda l: l == "done", 30, what="'done'")
    end = time.monotonic() + 10
    while ht.state(w.pid) != "Z" and time.monotonic() < end:
        time.sleep(0.02)
    assert ht.state(w.pid) == "Z"
    try:
        h.wait_intervals(2, len(h.out), timeout=10)
    except AssertionError:
        if h.p.poll() is None:
            raise                         # no interval, yet still running
    ht.no_traceback(h.stderr)
    assert w.wait(10) == 0                # reaped: the process is gone
    rc = h.wait(30)
    assert rc == 0, h.transcript()
    ht.no_traceback(h.stderr)
    line = _block_of(h.out, w.pid)
    assert line and "[exited]" in line[0], h.transcript()
    got = ht.by_function(ht.last_interval(h.read_csv(), w.pid))
    assert (got.get("site_malloc_kept", {}).get("live_bytes"), got.get("site_calloc", {}).get("live_bytes")) \
        == (23 * 1009, 11 * 91), got
