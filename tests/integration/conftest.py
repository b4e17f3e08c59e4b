"""Root integration tests: the real CLI, real probes, real C programs.

Every test starts ``heaptrace`` as a subprocess through its console script,
drives a small C program through the stdin protocol of tests/programs/*
("ready", one byte on stdin, the work, "done", wait for stdin to close) and
reads the sites CSV with pandas.

Environment: root, bcc importable, gcc and g++. When one is missing the test
is skipped, except under CI=true, where it fails: CI runs as root, and an
integration test that skips there is a failure.
"""
from __future__ import annotations

import functools
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
PROGRAMS = ROOT / "tests" / "programs"
VENV_BIN = ROOT / ".venv" / "bin"
HEAPTRACE = VENV_BIN / "heaptrace"
UPROBE_EVENTS = ("/sys/kernel/tracing/uprobe_events", "/sys/kernel/debug/tracing/uprobe_events")

INTERVAL = 0.2
HEADER = re.compile(r"^\d\d:\d\d:\d\d$")  # the first line of each plain-text interval
TRACING_TIMEOUT = 60.0                     # BPF compile + attach (about 1 s here)
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


# -- environment: skip, or fail under CI=true ----------------------------------

@functools.lru_cache(maxsize=None)
def missing_requirement() -> str | None:
    if os.geteuid() != 0:
        return "integration tests need root (BPF programs and uprobes)"
    try:
        import bcc  # noqa: F401
    except Exception as e:  # ImportError, or libbcc failing to load
        return f"bcc is not importable ({e.__class__.__name__}: {e}): install python3-bpfcc"
    for tool in ("gcc", "g++"):
        if shutil.which(tool) is None:
            return f"{tool} is missing: the test programs are built at run time"
    if not HEAPTRACE.exists():
        return f"{HEAPTRACE} is missing: pip install -e . in the venv"
    return None


def _must_fail() -> bool:
    return os.environ.get("CI") == "true"


def pytest_runtest_setup(item):
    if item.get_closest_marker("integration") is None:
        return
    reason = missing_requirement()
    if reason is not None and not _must_fail():
        pytest.skip(reason)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item):
    """Under CI=true the test FAILS (in its call phase, so it is reported as
    failed, not as a setup error); the fixtures did nothing meanwhile."""
    if item.get_closest_marker("integration") is None:
        return
    reason = missing_requirement()
    if reason is not None:
        pytest.fail(f"CI=true and an integration test cannot run: {reason}", pytrace=False)


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


# -- programs --------------------------------------------------------------------

@pytest.fixture(scope="session")
def programs(tmp_path_factory) -> dict[str, str]:
    """The C programs, built once per session."""
    if missing_requirement():
        return {}  # the test fails (CI=true) before it uses them
    out = tmp_path_factory.mktemp("programs")
    builds = {
        "workload": ["gcc", "-O1", "-fno-omit-frame-pointer", "-Wno-alloc-size-larger-than",
                     "-o", str(out / "workload"), str(PROGRAMS / "workload.c")],
        "nofp": ["gcc", "-O2", "-fomit-frame-pointer", "-o", str(out / "nofp"), str(PROGRAMS / "nofp.c")],
        "cxx": ["g++", "-O2", "-o", str(out / "cxx"), str(PROGRAMS / "cxx.cc")],
        # Hostile names; the assembler cannot put a newline in one: objcopy does.
        "hostile": ["sh", "-c", 'gcc -O1 -fno-omit-frame-pointer -o "$1" "$2" && objcopy --redefine-sym '
                    '"hostile_nl_placeholder=$(printf "line1\\nline2[bold]")" "$1"',
                    "sh", str(out / "hostile"), str(PROGRAMS / "hostile.c")],
    }
    # --all (test_all.py): one source, three programs: two names (an exec from
    # one to the other changes the process's name) and a static one (its
    # malloc is in its executable: --all does not trace it).
    for name, flags in (("allproc", []), ("allproc2", []), ("allstatic", ["-static"])):
        builds[name] = ["gcc", "-O1", "-fno-omit-frame-pointer", *flags, "-o", str(out / name),
                        str(PROGRAMS / "allproc.c")]
    for name in ("leak", "mmapleak", "retention", "arenas"):  # the demo's workloads
        builds[name] = ["gcc", "-O1", "-fno-omit-frame-pointer", "-pthread", "-o", str(out / name),
                        str(ROOT / "tracer" / "workloads" / f"{name}.c")]
    for name, cmd in builds.items():
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            pytest.fail(f"building {name} failed: {' '.join(cmd)}\n{r.stderr}", pytrace=False)
    return {name: str(out / name) for name in builds}


# -- processes -------------------------------------------------------------------

def _stat_field(pid: int, index: int) -> str | None:
    """A field of /proc/PID/stat counted after the command name (0: state)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rfind(b")") + 2:].split()[index].decode()


def _start_time(pid: int) -> str | None:
    return _stat_field(pid, 19)


def _state(pid: int) -> str | None:
    return _stat_field(pid, 0)


def running(exe: str) -> list[int]:
    """PIDs of live (not zombie) processes running the file ``exe``."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{d}/exe") == exe and _state(int(d)) not in (None, "Z"):
                out.append(int(d))
        except OSError:
            continue
    return out


# A test run started with nohup ignores SIGHUP, and every program it starts
# would inherit that (heaptrace then keeps running on a hang-up, as nohup
# asks): programs are then started through this, which gives SIGHUP back its
# default action and execs them (same PID), as a terminal session would.
_HUP_DEFAULT = ("import os, signal, sys; signal.signal(signal.SIGHUP, signal.SIG_DFL); "
                "os.execvp(sys.argv[1], sys.argv[1:])")


def _launch_argv(argv: list[str], hup_ignored: bool) -> list[str]:
    """``argv`` as started: SIGHUP ignored in it if ``hup_ignored``, at its
    default action otherwise, whatever the test run's own disposition."""
    if hup_ignored:
        return ["nohup", *argv]
    if signal.getsignal(signal.SIGHUP) == signal.SIG_IGN:
        return [sys.executable, "-c", _HUP_DEFAULT, *argv]
    return argv


class Proc:
    """A subprocess whose stdout and stderr are read line by line in threads."""

    def __init__(self, argv: list[str], *, stdin=subprocess.PIPE, env=None, hup_ignored: bool = False):
        self.argv = argv
        self.p = subprocess.Popen(_launch_argv(argv, hup_ignored), stdin=stdin, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, env=env)
        self.pid = self.p.pid
        self.out: list[str] = []
        self.err: list[str] = []
        self._cv = threading.Condition()
        self._eof = {"out": False, "err": False}
        self._threads = [threading.Thread(target=self._pump, args=(self.p.stdout, self.out, "out"), daemon=True),
                         threading.Thread(target=self._pump, args=(self.p.stderr, self.err, "err"), daemon=True)]
        for t in self._threads:
            t.start()

    def _pump(self, stream, lines: list[str], name: str) -> None:
        for raw in iter(stream.readline, b""):
            with self._cv:
                lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._cv.notify_all()
        with self._cv:
            self._eof[name] = True
            self._cv.notify_all()

    def wait_line(self, stream: str, pred, timeout: float, start: int = 0, what: str = "") -> int:
        """Index of the first line from ``start`` matching ``pred``; fails after ``timeout``."""
        lines = self.out if stream == "out" else self.err
        end = time.monotonic() + timeout
        i = start
        with self._cv:
            while True:
                while i < len(lines):
                    if pred(lines[i]):
                        return i
                    i += 1
                if self._eof[stream]:
                    raise AssertionError(f"{self.argv[0]}: {stream} ended (exit {self.p.poll()}) before "
                                         f"{what or 'the expected line'}\n{self.transcript()}")
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{self.argv[0]}: no {what or 'expected line'} on {stream} "
                                         f"within {timeout} s\n{self.transcript()}")
                self._cv.wait(min(left, 0.5))

    def send(self, data: bytes = b"g") -> None:
        self.p.stdin.write(data)
        self.p.stdin.flush()

    def close_stdin(self) -> None:
        if self.p.stdin and not self.p.stdin.closed:
            try:
                self.p.stdin.close()
            except OSError:
                pass

    def wait(self, timeout: float) -> int:
        """Wait for exit and for both pipes to be read to the end."""
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.argv[0]} still running after {timeout} s\n{self.transcript()}")
        for t in self._threads:
            t.join(10)
        return rc

    @property
    def stdout(self) -> str:
        with self._cv:
            return "\n".join(self.out)

    @property
    def stderr(self) -> str:
        with self._cv:
            return "\n".join(self.err)

    def transcript(self) -> str:
        out, err = self.out[-60:], self.err[-40:]
        return ("--- stdout (last lines) ---\n" + "\n".join(out) +
                "\n--- stderr (last lines) ---\n" + "\n".join(err))

    def kill(self) -> None:
        if self.p.poll() is None:
            try:
                self.p.kill()
            except ProcessLookupError:
                pass
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self.close_stdin()
        for t in self._threads:
            t.join(5)
        for s in (self.p.stdout, self.p.stderr):
            try:
                s.close()
            except OSError:
                pass


class Heaptrace(Proc):
    """``heaptrace ARGS --plain --csv CSV INTERVAL [COUNT]`` and its session."""

    def __init__(self, args: list[str], csv: Path, *, interval: float = INTERVAL, tail: list[str] = (),
                 stdin=subprocess.PIPE, hup_ignored: bool = False):
        self.csv = csv
        super().__init__([str(HEAPTRACE), *args, "--plain", "--csv", str(csv), str(interval), *tail],
                         stdin=stdin, hup_ignored=hup_ignored)
        self.traced: list[int] = []
        self.tracing_line: str | None = None

    def wait_tracing(self, timeout: float = TRACING_TIMEOUT) -> str:
        i = self.wait_line("err", lambda l: l.startswith("Tracing"), timeout, what="the 'Tracing' line")
        self.tracing_line = self.err[i]
        if self.tracing_line.startswith("Tracing every process"):  # --all: no list of PIDs
            self.traced = []
            return self.tracing_line
        m = re.search(r"\(([\d, ]+)\)", self.tracing_line)
        assert m, f"no PIDs in {self.tracing_line!r}"
        self.traced = [int(x) for x in m.group(1).split(",")]
        return self.tracing_line

    def headers_after(self, start: int) -> int:
        with self._cv:
            return sum(1 for l in self.out[start:] if HEADER.match(l))

    def wait_intervals(self, n: int, start: int, timeout: float = 30.0) -> int:
        """Wait until ``n`` interval headers were printed after stdout line ``start``."""
        i = start
        for _ in range(n):
            i = self.wait_line("out", HEADER.match, timeout, i, what=f"{n} intervals") + 1
        return i

    def interrupt(self, sig=signal.SIGINT, timeout: float = 60.0) -> int:
        self.p.send_signal(sig)
        return self.wait(timeout)

    def read_csv(self) -> pd.DataFrame:
        return read_sites(self.csv)


class Session:
    """What one test started: every process is killed and waited for at the end."""

    def __init__(self, tmp: Path, programs: dict[str, str]):
        self.tmp = tmp
        self.programs = programs
        self.procs: list[Proc] = []
        self.foreign: list[tuple[int, str | None]] = []  # (pid, start time): started by heaptrace -c
        self._n = 0

    def csv_path(self) -> Path:
        self._n += 1
        return self.tmp / f"sites{self._n}.csv"

    def program(self, name: str, *args: str) -> Proc:
        """Start a test program directly (for -p) and wait for its "ready"."""
        p = Proc([self.programs[name], *args])
        self.procs.append(p)
        p.wait_line("out", lambda l: l == "ready", 30, what="'ready'")
        return p

    def heaptrace(self, args: list[str], **kw) -> Heaptrace:
        h = Heaptrace(args, kw.pop("csv", None) or self.csv_path(), **kw)
        self.procs.append(h)
        return h

    def started(self, h: Heaptrace, wait_ready: bool = True) -> Heaptrace:
        """After -c: remember the child heaptrace started (to kill it if left over)."""
        h.wait_tracing()
        for pid in h.traced:
            self.foreign.append((pid, _start_time(pid)))
        if wait_ready:
            h.wait_line("out", lambda l: l == "ready", 30, what="'ready' from the -c program")
        return h

    def command(self, name: str, *args: str) -> str:
        return shlex.join([self.programs[name], *args])

    # -- the usual session: go, "done", two more intervals, SIGINT ----------
    def run_c(self, prog: str, *args: str, extra: list[str] = (), done_timeout: float = 60.0,
              after: int = 2):
        """heaptrace -c 'PROG ARGS': the program inherits heaptrace's stdin."""
        h = self.started(self.heaptrace(["-c", self.command(prog, *args), *extra]))
        pid = h.traced[0]
        h.send(b"g")
        i = h.wait_line("out", lambda l: l == "done", done_timeout, what="'done' from the -c program")
        h.wait_intervals(after, i + 1)
        rc = h.interrupt()
        assert rc == 0, f"heaptrace exited {rc} after SIGINT\n{h.transcript()}"
        assert "stopped by SIGINT" in h.stderr, h.transcript()
        no_traceback(h.stderr)
        st = dict(self.foreign).get(pid)
        assert not (st and _start_time(pid) == st and _state(pid) != "Z"), \
            f"heaptrace left its -c program {pid} running"
        return h, pid

    def run_p(self, prog: str, *args: str, extra: list[str] = (), done_timeout: float = 60.0,
              after: int = 2):
        """heaptrace -p PID of a program the test started."""
        w = self.program(prog, *args)
        h = self.heaptrace(["-p", str(w.pid), *extra])
        h.wait_tracing()
        assert h.traced == [w.pid], h.tracing_line
        w.send(b"g")
        w.wait_line("out", lambda l: l == "done", done_timeout, what="'done'")
        h.wait_intervals(after, len(h.out))
        rc = h.interrupt()
        assert rc == 0, f"heaptrace exited {rc} after SIGINT\n{h.transcript()}"
        assert "stopped by SIGINT" in h.stderr, h.transcript()
        no_traceback(h.stderr)
        assert w.p.poll() is None, "heaptrace -p must leave its target running"
        return h, w.pid

    def run(self, how: str, prog: str, *args: str, **kw):
        return (self.run_c if how == "c" else self.run_p)(prog, *args, **kw)

    def close(self) -> None:
        for p in reversed(self.procs):
            p.kill()
        for pid, st in self.foreign:
            if st is not None and _start_time(pid) == st and _state(pid) != "Z":
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        # Programs heaptrace started before it could name them (killed early).
        for exe in self.programs.values():
            for pid in running(exe):
                self.foreign.append((pid, _start_time(pid)))
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        end = time.monotonic() + 10
        for pid, st in self.foreign:  # orphans: reaped by init once heaptrace is gone
            while st is not None and _start_time(pid) == st and time.monotonic() < end:
                time.sleep(0.05)


def uprobe_events() -> list[str]:
    for path in UPROBE_EVENTS:
        try:
            with open(path) as f:
                return [l.strip() for l in f if l.strip()]
        except FileNotFoundError:
            continue
    return []


@pytest.fixture(scope="session")
def uprobe_leftovers_check():
    """At the end of the session no uprobe event heaptrace (bcc) made is left."""
    if missing_requirement():
        yield
        return
    before = set(uprobe_events())
    yield
    after = uprobe_events()
    new = [l for l in after if l not in before]
    bcc_made = [l for l in after if "_bcc_" in l]
    assert not new and not bcc_made, ("uprobe events left in uprobe_events after the session:\n"
                                      + "\n".join(sorted(set(new) | set(bcc_made))))


@pytest.fixture
def ht(tmp_path, programs, uprobe_leftovers_check):
    s = Session(tmp_path, programs)
    try:
        yield s
    finally:
        s.close()


# -- the CSV ---------------------------------------------------------------------

COLUMNS = ["timestamp", "host", "pid", "comm", "source", "callsite", "stack",
           "live_bytes", "live_allocs", "alloc_bytes", "allocs", "frees"]
COUNTS = ["live_bytes", "live_allocs", "alloc_bytes", "allocs", "frees"]


def read_sites(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, keep_default_na=False)
    missing = [c for c in COLUMNS if c not in df.columns]
    assert not missing, f"{path}: columns {missing} missing from {list(df.columns)}"
    df["function"] = df["callsite"].astype(str).map(function_of)
    df["ts"] = pd.to_datetime(df["timestamp"], utc=True)
    df["interval"] = intervals(df)
    return df


def intervals(df: pd.DataFrame) -> list[int]:
    """Number the intervals of a sites CSV, in file order.

    An interval's rows are written together and name each (pid, source,
    stack) at most once. The timestamp alone does not separate intervals:
    it has millisecond resolution, and the last drain (after SIGINT or
    SIGTERM) can fall in the same millisecond as the one before it.
    """
    out, n, ts, seen = [], -1, None, set()
    for t, key in zip(df["timestamp"], zip(df["pid"], df["source"], df["stack"])):
        if t != ts or key in seen:
            n, ts, seen = n + 1, t, set()
        seen.add(key)
        out.append(n)
    return out


_CALLSITE = re.compile(r"^(?P<fn>.*?)(?:\+0x[0-9a-f]+)?(?: \[[^\]]*\])?$")
_MANGLED = re.compile(r"^_Z(\d+)(\w+)$")


def function_of(callsite: str) -> str:
    """``site_calloc+0x9 [workload]`` -> ``site_calloc``; a plain C++ function
    is given by its name whether or not heaptrace demangles it
    (``_Z12cxx_new_sitev`` or ``cxx_new_site()`` -> ``cxx_new_site``)."""
    fn = _CALLSITE.match(callsite).group("fn")
    m = _MANGLED.match(fn)
    if m and len(m.group(2)) > int(m.group(1)):
        return m.group(2)[:int(m.group(1))]
    return fn[:-2] if fn.endswith("()") else fn


def last_interval(df: pd.DataFrame, pid: int) -> pd.DataFrame:
    d = df[df.pid == pid]
    assert len(d), f"no CSV rows for pid {pid}"
    return d[d.interval == d.interval.max()]


def by_function(rows: pd.DataFrame) -> dict[str, dict[str, int]]:
    g = rows.groupby("function")[COUNTS].sum()
    return {f: {k: int(v) for k, v in r.items()} for f, r in g.iterrows()}


def final_by_function(df: pd.DataFrame, pid: int) -> dict[str, dict[str, int]]:
    """Each site's last written row (a site with nothing live that did not
    change is not written again), summed per function."""
    d = df[df.pid == pid]
    return by_function(d.groupby(["source", "stack"], sort=False).tail(1))


def module_of(callsite: str) -> str:
    m = re.search(r"\[([^\]]+)\]\s*$", callsite)
    return m.group(1) if m else ""


def no_traceback(text: str) -> None:
    assert "Traceback" not in text, text


# Tests reach the helpers through the ``ht`` fixture (no import of conftest).
for _f in (read_sites, last_interval, by_function, final_by_function, module_of, no_traceback):
    setattr(Session, _f.__name__, staticmethod(_f))
Session.PAGE_SIZE = PAGE_SIZE
Session.HEADER = HEADER
Session.start_time = staticmethod(_start_time)
Session.running = staticmethod(running)
Session.state = staticmethod(_state)
