"""heaptrace's command line. ``main`` is the only place that prints errors."""
from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from .errors import EX_SOFTWARE, HeaptraceError, UsageError

# Subcommands, each a module in tracer.commands; tracing is the default.
SUBCOMMANDS: dict[str, str] = {"demo": "demo", "report": "report", "diff": "diff", "export": "export",
                               "plot": "plot"}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would exit 2 with usage; keep one path
        raise UsageError(f"{message} (see heaptrace --help)")


def _parser(name: str, module) -> argparse.ArgumentParser:
    doc = (module.__doc__ or "").strip()
    first, _, rest = doc.partition("\n\n")
    p = _Parser(prog=name, description=first, epilog=rest or None,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    module.prepare_parser(p)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = None
    try:
        if argv and argv[0] in SUBCOMMANDS:
            mod = importlib.import_module(f"tracer.commands.{SUBCOMMANDS[argv[0]]}")
            name, argv = f"heaptrace {argv[0]}", argv[1:]
        else:
            mod = importlib.import_module("tracer.commands.trace")
            name = "heaptrace"
        args = _parser(name, mod).parse_args(argv)
        return int(mod.run(args) or 0)
    except HeaptraceError as e:
        sys.stderr.write(f"heaptrace: error: {e}\n")
        return e.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("heaptrace: interrupted\n")
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:
        # Not an error the user can act on: a bug. Whatever was attached is
        # detached and the CSVs are closed by now (the session's cleanup ran
        # on the way out); one line, the traceback only with -v.
        if getattr(args, "verbose", False):
            traceback.print_exc(file=sys.stderr)
        text = " ".join(str(e).split())  # one line, whatever the message holds
        what = f"{type(e).__name__}: {text}" if text else type(e).__name__
        sys.stderr.write(f"heaptrace: internal error: {what} (a bug in heaptrace: please report it, "
                         f"with the traceback that -v prints)\n")
        return EX_SOFTWARE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
