"""Trace the malloc family and the VM syscalls of running processes (-p) or of
a program started under tracing (-c); print live bytes per process and call
site, each process's memory breakdown and findings every interval, and a
summary at the end.

examples:
  sudo heaptrace -p 1234                 # one service, every 1 s, to Ctrl-C
  sudo heaptrace -p 1234,5678 5 12       # two processes, every 5 s, 12 times
  sudo heaptrace -c './server --port 8080' --csv run.csv
  sudo heaptrace -p 1234 --min-age 30    # only blocks older than 30 s

other commands (each with --help):
  heaptrace demo      bundled workloads traced, each diagnosis shown
  heaptrace report    a CSV session: breakdown, findings, top call sites
  heaptrace diff      call sites that changed between two sessions or times
  heaptrace export    folded stacks, pprof or speedscope from a CSV session
  heaptrace plot      live bytes and breakdown over time (PNG or SVG)
"""
from __future__ import annotations

import argparse
import re
import shlex

from ..errors import UsageError
from ..kernel import Limits
from ..layout import C


def _pids(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) <= 0:
            raise argparse.ArgumentTypeError(f"not a process ID: {part!r} (want e.g. -p 1234,5678)")
        out.append(int(part))
    return out


def _positive(kind):
    def conv(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}")
        if v <= 0:
            raise argparse.ArgumentTypeError(f"must be greater than 0: {text!r}")
        return v
    return conv


def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().rstrip("ib").rstrip("b") if text.strip().lower()[-1:] in "b" else text.strip().lower()
    mult = 1
    if t[-1:] in units:
        mult, t = units[t[-1]], t[:-1]
    try:
        v = int(float(t) * mult)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 64, 4k, 1M)")
    if v < 0:
        raise argparse.ArgumentTypeError(f"a size cannot be negative: {text!r}")
    return v


def _percent(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a percentage: {text!r} (e.g. 5)")
    if not 0 <= v <= 100:
        raise argparse.ArgumentTypeError(f"a percentage is between 0 and 100: {text!r}")
    return v


def prepare_parser(p: argparse.ArgumentParser) -> None:
    who = p.add_mutually_exclusive_group()
    who.add_argument("-p", "--pid", type=_pids, metavar="PID[,PID...]", help="trace these running processes")
    who.add_argument("-c", "--command", metavar="'CMD ARGS'",
                     help="start CMD with every probe attached before it runs; heaptrace exits with its status")
    who.add_argument("--all", action="store_true", dest="all_processes",
                     help="every process on the host, containers and processes started later included")
    p.add_argument("--comm", metavar="NAME|REGEX", help="--all: only processes of this command name")
    p.add_argument("--cgroup", metavar="PATH|RUNTIME:ID",
                   help="--all: only processes in this cgroup (a path prefix) or container (docker:0123456789ab)")
    p.add_argument("--exclude-pid", type=_pids, default=[], metavar="PID[,PID...]",
                   help="--all: not these processes (nor what they fork)")
    p.add_argument("--budget", type=_percent, default=5.0, metavar="PERCENT",
                   help="--all: a process whose probes cost it more than this share of its CPU is "
                        "sampled, then released from its probes (default 5; 0: never)")
    p.add_argument("--kernel-only", action="store_true",
                   help="--all: no uprobes, only the kernel's mmap/brk/... events and /proc: the lowest cost")
    p.add_argument("interval", nargs="?", type=_positive(float), default=1.0,
                   help="seconds between reports (default 1)")
    p.add_argument("count", nargs="?", type=_positive(int), help="number of reports, then stop")
    p.add_argument("--duration", type=_positive(float), metavar="SECONDS", help="stop after this long")
    p.add_argument("--csv", metavar="PATH", help="append the sites CSV here, every interval")
    p.add_argument("--top", type=_positive(int), default=10, metavar="N",
                   help="processes and call sites shown (default 10)")
    p.add_argument("--min-size", type=_size, metavar="BYTES", help="count only allocations of at least this size")
    p.add_argument("--max-size", type=_size, metavar="BYTES", help="count only allocations of at most this size")
    p.add_argument("--min-age", type=_positive(float), metavar="SECONDS",
                   help="count only blocks older than this (reads every live block: O(live blocks))")
    p.add_argument("--mappings", action=argparse.BooleanOptionalAction, default=True,
                   help="trace brk/mmap/munmap/mremap/mprotect/madvise of the targets (default on): "
                        "the per-process breakdown, memory given back and the program's own "
                        "'mmap' rows. --no-mappings saves ~0.05 us per traced malloc (syscall "
                        "tracepoints put every syscall on the host on the traced path)")
    p.add_argument("--plain", action="store_true", help="plain text, no live view (default when not a terminal)")
    p.add_argument("-v", "--verbose", action="store_true", help="say where each probe sits and why")
    p.add_argument("--max-allocs", type=_positive(int), default=C["MAX_ALLOCS"], metavar="N",
                   help=f"live blocks tracked at once (default {C['MAX_ALLOCS']:,})")
    p.add_argument("--max-sites", type=_positive(int), default=C["MAX_SITES"], metavar="N",
                   help=f"distinct (process, stack) pairs (default {C['MAX_SITES']:,})")
    p.add_argument("--max-depth", type=_positive(int), default=C["MAX_DEPTH"], metavar="N",
                   help=f"frames kept per stack, 1-64 (default {C['MAX_DEPTH']})")


def options(args: argparse.Namespace):
    from ..allprocs import AllProcesses, Filters
    from ..session import Options
    if not args.pid and args.command is None and not args.all_processes:
        raise UsageError("nothing to trace: give -p PID, -c 'CMD ARGS' or --all "
                         "(scripts/demo shows it on a bundled leaky program)")
    if not args.all_processes:
        for name in ("comm", "cgroup", "exclude_pid", "kernel_only"):
            if getattr(args, name):
                raise UsageError(f"--{name.replace('_', '-')} goes with --all (it selects among every process)")
    if args.comm is not None:
        try:
            re.compile(args.comm)
        except re.error as e:
            raise UsageError(f"--comm {args.comm!r} is not a regular expression ({e}): give a command name")
    if args.kernel_only and not args.mappings:
        raise UsageError("--kernel-only traces only the kernel's mmap/brk/... events: "
                         "it cannot go with --no-mappings")
    if args.max_depth > 64:
        raise UsageError(f"--max-depth {args.max_depth} is too deep: at most 64")
    if args.min_size is not None and args.max_size is not None and args.min_size > args.max_size:
        raise UsageError(f"--min-size {args.min_size} is larger than --max-size {args.max_size}")
    command = None
    if args.command is not None:
        try:
            command = shlex.split(args.command)
        except ValueError as e:
            raise UsageError(f"cannot parse -c {args.command!r}: {e}")
        if not command:
            raise UsageError("-c needs a command, e.g. -c './server --port 8080'")
    filters = Filters(comm=args.comm, cgroup=args.cgroup, exclude_pids=args.exclude_pid)
    default_mode = (AllProcesses(filters, 0).default_mode() if args.all_processes else C["MODE_OFF"])
    return Options(pids=args.pid or [], command=command, interval=args.interval, count=args.count,
                   duration=args.duration, top=args.top, min_age=args.min_age, csv=args.csv,
                   plain=args.plain, verbose=args.verbose,
                   limits=Limits(max_depth=args.max_depth, max_allocs=args.max_allocs,
                                 max_sites=args.max_sites, min_size=args.min_size,
                                 max_size=args.max_size, track_age=args.min_age is not None,
                                 mappings=args.mappings, all_processes=args.all_processes,
                                 default_mode=default_mode),
                   all_processes=args.all_processes, kernel_only=args.kernel_only, budget=args.budget / 100,
                   filters=filters)


def run(args: argparse.Namespace) -> int:
    opts = options(args)
    from .. import preflight
    from ..session import Session, check_pids
    check_pids(opts.pids)
    preflight.check_all()
    return Session(opts).run()
