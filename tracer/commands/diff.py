"""Call sites whose live bytes changed, sorted by the size of the change
(like jeprof --base): between two sessions (each at its last interval;
sites matched by process name and stack, since PIDs differ), or between
two intervals of one session (--from, --to). No root, no bcc.

T (for --from and --to) is an interval index (0, 1, ... or -1 for the
last, -2 ...), 'first', 'last', or an ISO-8601 time (the last interval at
or before it; UTC unless it says otherwise). With two files, --from picks
the interval of BASE and --to that of NEW.

examples:
  heaptrace diff before.csv after.csv            # what the new build holds more
  heaptrace diff run.csv --from 0 --to -1        # growth over one session
  heaptrace diff run.csv --from 2026-11-22T04:00:00Z --to last --top 30
"""
from __future__ import annotations

import argparse

from ..csvread import open_csv
from ..errors import UsageError
from .report import positive_int, show, too_large, warn


def prepare_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("base", metavar="BASE.csv", help="the sites CSV to compare against")
    p.add_argument("new", metavar="NEW.csv", nargs="?",
                   help="the sites CSV of another session (omit it to compare two intervals of BASE)")
    p.add_argument("--from", dest="at_from", metavar="T",
                   help="the base interval (default: the last of BASE, or the first of a single file)")
    p.add_argument("--to", dest="at_to", metavar="T", help="the new interval (default: the last)")
    p.add_argument("--top", type=positive_int, default=10, metavar="N", help="call sites shown (default 10)")
    p.add_argument("--plain", action="store_true", help="plain text (the default when not a terminal)")


def run(args: argparse.Namespace) -> int:
    from .. import diffing
    from ..views import report as view
    base = open_csv(args.base, "sites")
    files = [base]
    try:
        if args.new is None:
            if args.at_from is None and args.at_to is None:
                raise UsageError("one file: give --from T and/or --to T (e.g. --from 0 --to -1), "
                                 "or a second CSV to compare with")
            d = diffing.diff_points(base, at_from=args.at_from, at_to=args.at_to, top=args.top)
        else:
            new = open_csv(args.new, "sites")
            files.append(new)
            d = diffing.diff_files(base, new, base_at=args.at_from, new_at=args.at_to, top=args.top)
    except OverflowError:  # pandas, on a number beyond 64 bits in an edited file
        raise too_large(files) from None
    finally:
        warn([n for f in files for n in f.notes])
    show(view.diff_renderable, view.diff_lines, d, args)
    return 0
