"""One error hierarchy. Only ``tracer.cli.main`` prints these and exits."""
from __future__ import annotations


class HeaptraceError(Exception):
    """An error the user can act on: the message names the cause and the fix."""

    exit_code = 1


class UsageError(HeaptraceError):
    exit_code = 2


class PermissionProblem(HeaptraceError):
    exit_code = 77  # EX_NOPERM


class MissingFeature(HeaptraceError):
    """The kernel or the host lacks something heaptrace needs."""

    exit_code = 69  # EX_UNAVAILABLE


class TargetError(HeaptraceError):
    """A target process cannot be traced (gone, static, no allocator)."""

    exit_code = 3


class OutputError(HeaptraceError):
    """A file heaptrace writes could not be written (a full disk, an I/O error)."""

    exit_code = 74  # EX_IOERR


# An exception heaptrace did not expect: a bug (tracer.cli.main reports it).
EX_SOFTWARE = 70
