"""Review a session's CSV files offline (no root, no bcc): per process, the
memory breakdown over the session (first, last and peak of RSS, heap live,
kept, mmap; given back; arenas) and its findings with the intervals they
were seen in; then the call sites holding the most at the last interval and
the fastest-growing ones, each with a sparkline of its live bytes.

FILE is the sites CSV a session wrote with --csv; the processes CSV beside
it (run.csv -> run.processes.csv) gives the breakdown and the findings.

examples:
  heaptrace report run.csv               # every process, top 10 call sites
  heaptrace report run.csv --pid 1234 --top 20
  heaptrace report run.csv > report.txt  # plain text when not a terminal
"""
from __future__ import annotations

import argparse
import os
import sys

from ..csvread import CsvError, open_csv, processes_path


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}")
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0: {text!r}")
    return v


def warn(notes) -> None:
    """csvread's notes (a cut-off last line, unreadable rows) as one line."""
    from ..views.fmt import safe
    notes = list(dict.fromkeys(notes))
    if notes:
        sys.stderr.write(f"heaptrace: warning: {safe('; '.join(notes), 1000)}\n")
        sys.stderr.flush()


def too_large(files) -> CsvError:
    return CsvError(f"{' or '.join(f.path for f in files)}: a number too large for a heaptrace CSV "
                    "(beyond 64 bits): was the file edited?")


def use_rich(args: argparse.Namespace) -> bool:
    return not args.plain and sys.stdout.isatty()


def show(renderable_fn, lines_fn, obj, args: argparse.Namespace) -> None:
    if use_rich(args):
        from rich.console import Console
        Console(highlight=False).print(renderable_fn(obj))
    else:
        from ..views.report import write_lines
        write_lines(lines_fn(obj), sys.stdout)


def prepare_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE.csv", help="the sites CSV written by heaptrace --csv")
    p.add_argument("--pid", type=positive_int, metavar="PID", help="only this process")
    p.add_argument("--top", type=positive_int, default=10, metavar="N",
                   help="processes and call sites shown (default 10)")
    p.add_argument("--plain", action="store_true", help="plain text (the default when not a terminal)")


def run(args: argparse.Namespace) -> int:
    from .. import reporting
    from ..views import report as view
    sites = open_csv(args.file, "sites")
    ppath = processes_path(args.file)
    procs, missing = None, None
    if os.path.exists(ppath):
        try:
            procs = open_csv(ppath, "processes")
        except CsvError as e:
            missing = f"processes CSV not used: {e}"
    else:
        missing = f"no processes CSV beside it ({ppath}): no breakdown, no findings"
    try:
        r = reporting.build(sites, procs, pid=args.pid, top=args.top, processes_missing=missing)
    except OverflowError:  # pandas, on a number beyond 64 bits in an edited file
        raise too_large([sites] + ([procs] if procs is not None else [])) from None
    finally:
        warn(sites.notes + (procs.notes if procs is not None else []))
    show(view.report_renderable, view.report_lines, r, args)
    return 0
