"""Plot a CSV session as PNG or SVG: live bytes of the top call sites over time
(ranked by their peak live bytes), then each process's breakdown over time
(heap live, kept by the allocator, own mmap, stacked; RSS anon as a line),
from the processes CSV beside the sites CSV. Findings are marked where each
first appeared. No root needed.

A call site is one line per process, its stacks summed; the x axis is the
time since the first interval. The format follows the output's extension
(.png or .svg). The breakdown
panels need FILE's processes CSV (run.csv -> run.processes.csv); without it
only the call sites are plotted. The output is never written through a
symbolic link, and is created with mode 0600.

examples:
  heaptrace plot run.csv -o run.png
  heaptrace plot run.csv -o run.svg --pid 1234 --top 5
  heaptrace plot run.csv -o run.png --processes 8   # up to 8 breakdown panels
"""
from __future__ import annotations

import argparse
import os
import sys

from ..errors import UsageError
from ..views.fmt import safe

FORMATS = {".png": "png", ".svg": "svg"}
MAX_PROCESSES = 16


def _pids(text: str) -> set[int]:
    out = set()
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) <= 0:
            raise argparse.ArgumentTypeError(f"not a process ID: {part!r} (want e.g. --pid 1234,5678)")
        out.add(int(part))
    return out


def _count(lo: int, hi: int):
    def conv(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if not lo <= n <= hi:
            raise argparse.ArgumentTypeError(f"{n} is out of range: give {lo} to {hi}")
        return n
    return conv


def prepare_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE.csv", help="a sites CSV written by heaptrace --csv")
    p.add_argument("-o", "--output", metavar="OUT.png|OUT.svg", required=True,
                   help="the image to write; its extension chooses the format")
    p.add_argument("--pid", type=_pids, metavar="P[,P]", help="only these processes")
    p.add_argument("--top", type=_count(1, 20), default=8, metavar="N",
                   help="call sites plotted, those with the highest peak live bytes (default 8, at most 20)")
    p.add_argument("--processes", type=_count(0, MAX_PROCESSES), default=4, metavar="N",
                   help="breakdown panels, for the processes with the highest peak RSS "
                        f"(default 4, at most {MAX_PROCESSES}; 0: none)")


def output_format(path: str) -> str:
    shown = safe(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise UsageError(f"-o {shown}: the format follows the extension, and "
                         f"{ext or 'no extension'} is not one heaptrace writes: give a name ending in "
                         ".png or .svg")
    return FORMATS[ext]


def write_file(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` under heaptrace's output file policy
    (:mod:`tracer.outfile`: no links, regular files of ours, mode 0600)."""
    from ..outfile import write_whole
    write_whole(path, data)


def _note(msg: str) -> None:
    sys.stderr.write(f"heaptrace: note: {safe(msg, 1000)}\n")


def run(args: argparse.Namespace) -> int:
    fmt = output_format(args.output)
    from ..csvread import CsvError, open_csv, processes_path
    from ..views import plot

    sites_file = open_csv(args.file, "sites")
    sites = plot.load_sites(sites_file, args.pid, args.top)
    procs, pfile = None, None
    ppath = processes_path(args.file)
    if not os.path.exists(ppath):
        _note(f"{ppath} is missing: plotting the call sites only (the breakdown panels and the "
              "findings need the processes CSV heaptrace --csv writes beside the sites CSV)")
    else:
        try:
            pfile = open_csv(ppath, "processes")
            procs = plot.load_processes(pfile, args.pid, args.processes)
        except CsvError as e:
            _note(f"{e}: plotting the call sites only")
            procs, pfile = None, None
    if not sites.times and not (procs and procs.total):
        if args.pid:
            have: set[int] = set()
            for f in (sites_file, pfile):
                for chunk in (f.chunks(columns=["pid"]) if f else ()):
                    have.update(int(p) for p in chunk["pid"].unique())
            listed = ", ".join(map(str, sorted(have)[:12])) + (", ..." if len(have) > 12 else "")
            raise CsvError(f"{safe(args.file)} has no rows for pid {', '.join(map(str, sorted(args.pid)))}"
                           + (f" (its processes: {listed})" if have else ""))
        raise CsvError(f"{safe(args.file)} holds no interval yet: was the session stopped before its first one?")
    for n in sites_file.notes + (pfile.notes if pfile else []):
        _note(n)
    if procs and procs.total > len(procs.shown) and args.processes:
        _note(f"{len(procs.shown)} of {procs.total} processes have a breakdown panel (the largest "
              "peak RSS); choose others with --pid, or more with --processes")

    data = plot.render(sites, procs, name=os.path.basename(args.file), fmt=fmt)
    write_file(args.output, data)
    shown = len(procs.shown) if procs else 0
    sys.stderr.write(f"heaptrace: wrote {safe(args.output)} ({fmt}, {len(data)} bytes): "
                     f"{len(sites.lines)} call sites, {shown} process panel{'s' if shown != 1 else ''}\n")
    return 0
