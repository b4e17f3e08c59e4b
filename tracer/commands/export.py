"""Export what a sites CSV (written by a session with --csv) says at one
interval as a profile for other tools: folded stacks (flamegraph.pl,
inferno, Pyroscope), pprof (go tool pprof, Pyroscope, Parca, Grafana) or
speedscope. Offline: no root, no bcc.

formats:
  folded      one line per stack, "comm-pid;outer;...;inner VALUE"; a direct
              mapping's stack ends in an "[mmap]" frame
  pprof       gzipped profile.proto with inuse_space, inuse_objects,
              alloc_space, alloc_objects; labels pid, comm, source
  speedscope  JSON, one profile per process

--value picks what a stack weighs (folded, speedscope) or the default sample
type (pprof): live_bytes (default), live_allocs, alloc_bytes or allocs.
--at picks the interval: last (default), first, an index (0, -1) or an
ISO-8601 time (the last interval at or before it, UTC unless it says).

examples:
  heaptrace export run.csv --format folded -o run.folded && flamegraph.pl run.folded > run.svg
  heaptrace export run.csv --format pprof -o heap.pb.gz && go tool pprof -top heap.pb.gz
  heaptrace export run.csv --format speedscope -o run.speedscope.json --at 2026-11-22T04:31:26Z
  heaptrace export run.csv --format folded -o - --pid 1234 --value alloc_bytes | head
"""
from __future__ import annotations

import argparse
import os
import sys

from ..errors import HeaptraceError, UsageError
from ..exporters import folded, pprof, speedscope

FORMATS = ("folded", "pprof", "speedscope")


def _pids(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) <= 0:
            raise argparse.ArgumentTypeError(f"not a process ID: {part!r} (want e.g. --pid 1234,5678)")
        out.append(int(part))
    return out


def prepare_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE.csv", help="a sites CSV a session wrote with --csv")
    p.add_argument("--format", "-f", required=True, choices=FORMATS, help="what to write")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="file to write (replaced if it exists, created with mode 0600; never "
                        "through a symbolic link); '-' for standard output")
    p.add_argument("--at", metavar="T", help="interval: last (default), first, an index, or an ISO-8601 time")
    p.add_argument("--pid", type=_pids, metavar="PID[,PID...]", help="only these processes")
    p.add_argument("--value", choices=folded.VALUES, default="live_bytes",
                   help="what a stack weighs (default live_bytes)")
    p.add_argument("--no-process-frame", action="store_true",
                   help="folded: no 'comm-pid' root frame (the stacks of all processes merge)")


def _when(at) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _human(n: int, value: str) -> str:
    if not value.endswith("_bytes"):
        return f"{n}"
    from ..views.fmt import human
    return human(n)


def render(fmt: str, state, value: str, when: str, time_nanos: int, source: str,
           process_frames: bool = True) -> bytes:
    """The bytes of one export of ``state`` (rows of :func:`tracer.review.state_at`)."""
    if fmt == "folded":
        return folded.export(state, value, process_frames).encode("utf-8", "backslashreplace")
    if fmt == "pprof":
        return pprof.export(state, value, time_nanos,
                            comments=[f"heaptrace export of {source}", f"interval ending {when}"])
    if fmt == "speedscope":
        return speedscope.export(state, value, when, name=f"{os.path.basename(source)} {value} at {when}"
                                 ).encode("ascii")
    raise UsageError(f"unknown format {fmt!r}: choose from {', '.join(FORMATS)}")


def write_output(path: str, data: bytes, input_path: str | None = None) -> None:
    """Write ``data`` to ``path`` as the CSV writer writes (never through a
    symbolic link; created with mode 0600), replacing what was there; ``-``
    is standard output."""
    if path == "-":
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    if input_path is not None:
        try:
            same = os.path.samefile(path, input_path)
        except OSError:
            same = False
        if same:
            raise UsageError(f"-o {path} is the CSV being read: give another output file")
    from ..outfile import write_whole
    write_whole(path, data)


def run(args: argparse.Namespace) -> int:
    from .. import review
    from ..csvread import open_csv

    if args.no_process_frame and args.format != "folded":
        raise UsageError("--no-process-frame is for --format folded (speedscope has one profile per "
                         "process; pprof has pid and comm labels)")
    if args.output == "-" and args.format == "pprof" and sys.stdout.isatty():
        raise UsageError("pprof is binary (gzip): give a file with -o, or pipe standard output")
    f = open_csv(args.file, "sites")
    at = review.pick(review.intervals(f), args.at)
    when = _when(at)
    state = review.state_at(f, at)
    if args.pid:
        present = dict(zip(state["pid"].astype(int), state["comm"]))
        missing = [p for p in args.pid if p not in present]
        if missing:
            have = ", ".join(f"{p} ({folded.escape(str(c))[:40]})" for p, c in sorted(present.items())[:20])
            raise UsageError(f"--pid {','.join(map(str, missing))}: no such process in {args.file} at or "
                             f"before {when}" + (f"; it has: {have}" if have else ""))
        state = state[state["pid"].isin(args.pid)]
    notes = list(dict.fromkeys(f.notes))
    if notes:  # as report does: one line, names made safe
        sys.stderr.write(f"heaptrace: warning: {folded.escape('; '.join(notes))}\n")
    held = state[state[args.value] > 0] if len(state) else state
    if not len(held):
        raise HeaptraceError(f"nothing to export: at {when} no site in {args.file}"
                             f"{' of the processes given' if args.pid else ''} has {args.value} above 0; "
                             "try an earlier --at or --value alloc_bytes")
    data = render(args.format, state, args.value, when, int(at.value), args.file,
                  process_frames=not args.no_process_frame)
    write_output(args.output, data, args.file)
    total = int(held[args.value].sum())
    dest = "standard output" if args.output == "-" else folded.escape(args.output)
    nsites, nprocs = len(held), held["pid"].nunique()
    sys.stderr.write(f"heaptrace: wrote {dest} ({args.format}): {nsites} site{'s' * (nsites != 1)} in "
                     f"{nprocs} process{'es' * (nprocs != 1)}, {args.value} {_human(total, args.value)} "
                     f"at {when}\n")
    return 0
