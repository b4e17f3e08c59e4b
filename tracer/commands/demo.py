"""Trace four bundled workloads, one per problem heaptrace tells apart, and
show each diagnosis: a real leak, an mmap leak, allocator retention (memory
freed before heaptrace started, kept by glibc under a pinned heap top) and
arena bloat (12 threads, one glibc arena each).

The workloads are C sources shipped with heaptrace (tracer/workloads/),
built here with the system compiler; they are ended when the demo ends.

examples:
  sudo heaptrace demo                    # about 15 s, then the summary
  sudo heaptrace demo --only leak,arenas --duration 8
  sudo heaptrace demo --csv /tmp/demo.csv  # then: look at /tmp/demo.processes.csv
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass

from ..errors import HeaptraceError, UsageError

SOURCES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "workloads")


@dataclass(frozen=True)
class Workload:
    name: str
    args: tuple[str, ...]
    expect: str        # the finding the demo must show
    story: str


WORKLOADS = (
    Workload("leak", (), "leak",
             "a service leaking 1031 bytes a request in remember_request(), next to a cache that "
             "levels off (cache_put: not a leak)"),
    Workload("mmapleak", (), "mmap-leak",
             "thread stacks mapped by hand in new_worker_stack() and never unmapped (invisible to "
             "malloc-level tools)"),
    Workload("retention", ("192",), "allocator-retention",
             "freed 192 MiB before heaptrace started; one live block pins the brk heap, so glibc "
             "keeps it all"),
    Workload("arenas", ("12", "16"), "arena-bloat",
             "12 threads, one glibc arena each, each keeping 12 MiB its thread freed"),
)
BY_NAME = {w.name: w for w in WORKLOADS}


def prepare_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--only", metavar="NAME[,NAME]",
                   help=f"run only these workloads ({', '.join(BY_NAME)})")
    p.add_argument("--duration", type=float, default=12.0, metavar="SECONDS",
                   help="how long to trace (default 12; trends need at least 4 intervals)")
    p.add_argument("--csv", metavar="PATH", help="also write the sites and processes CSVs")
    p.add_argument("--plain", action="store_true", help="plain text, no live view")


def _compiler() -> str:
    for cc in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cc and shutil.which(cc):
            return cc
    raise HeaptraceError("the demo builds its workloads from C sources but no C compiler was found: "
                         "install one (apt install gcc) or set CC")


def build(names: list[str], outdir: str) -> dict[str, str]:
    cc = _compiler()
    exes = {}
    for name in names:
        exe = os.path.join(outdir, name)
        cmd = [cc, "-O1", "-g", "-fno-omit-frame-pointer", "-pthread", "-o", exe,
               os.path.join(SOURCES, f"{name}.c")]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise HeaptraceError(f"building the {name} workload failed ({' '.join(cmd)}):\n{r.stderr.strip()}")
        exes[name] = exe
    return exes


def _wait_ready(p: subprocess.Popen, name: str, timeout: float = 60.0) -> None:
    line: list[str] = []
    t = threading.Thread(target=lambda: line.append(p.stdout.readline()), daemon=True)
    t.start()
    t.join(timeout)
    if not line or line[0].strip() != "ready":
        raise HeaptraceError(f"the {name} workload did not start (no 'ready' within {timeout:.0f} s)")


def _end(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGKILL)
            except ProcessLookupError:
                pass
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            pass
        for f in (p.stdin, p.stdout):
            try:
                f and f.close()
            except OSError:
                pass


def run(args: argparse.Namespace) -> int:
    names = list(BY_NAME)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        bad = [n for n in names if n not in BY_NAME]
        if bad or not names:
            raise UsageError(f"unknown workload {', '.join(bad) or '(none)'}: choose from {', '.join(BY_NAME)}")
    if args.duration < 4:
        raise UsageError(f"--duration {args.duration:g} is too short: trends need at least 4 intervals (4 s)")
    from .. import preflight
    from ..session import Options, Session
    preflight.check_all()
    log = lambda m: (sys.stderr.write(f"demo: {m}\n"), sys.stderr.flush())  # noqa: E731
    tmp = tempfile.mkdtemp(prefix="heaptrace-demo.")
    procs: list[subprocess.Popen] = []
    try:
        log(f"building {len(names)} workloads from {SOURCES}")
        exes = build(names, tmp)
        for n in names:
            w = BY_NAME[n]
            p = subprocess.Popen([exes[n], *w.args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True, start_new_session=True)
            procs.append(p)
            _wait_ready(p, n)
            log(f"pid {p.pid} {n}: {w.story}; expect '{w.expect}'")
        for n, p in zip(names, procs):
            if n != "retention":  # retention's second step is malloc_trim(0): not in the demo
                p.stdin.write("g")
                p.stdin.flush()
        log(f"tracing them for {args.duration:g} s ...")
        opts = Options(pids=[p.pid for p in procs], interval=1.0, duration=args.duration, top=10,
                       csv=args.csv, plain=args.plain)
        s = Session(opts)
        rc = s.run()
        seen = {(f.pid, f.code) for f in (s.prev.findings if s.prev else [])}
        missing = [n for n, p in zip(names, procs) if (p.pid, BY_NAME[n].expect) not in seen]
        if missing:
            log(f"not shown: {', '.join(BY_NAME[n].expect + ' (' + n + ')' for n in missing)}")
            return rc or 1
        log(f"every diagnosis shown: {', '.join(BY_NAME[n].expect for n in names)}")
        return rc
    finally:
        _end(procs)
        shutil.rmtree(tmp, ignore_errors=True)
