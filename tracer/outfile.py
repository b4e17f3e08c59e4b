"""Every file heaptrace writes goes through here: the policy of a root tool on
a shared host.

1. Never through a symbolic link: the file itself is opened with
   ``O_NOFOLLOW``.
2. Not into another directory through someone else's link: a directory on
   the path that is a symbolic link is followed only if it belongs to root or
   to the user heaptrace runs as (like the kernel's ``protected_symlinks``
   for sticky directories; ``/var/run -> /run`` is fine, a link another user
   planted in ``/tmp`` is not).
3. Only a regular file: not a FIFO (opened non-blocking, then checked), not a
   device, not a directory.
4. Not a file that belongs to another user (a root tool appending to a file
   another user prepared is how such attacks start).
5. Created with mode 0600.

Each refusal is a :class:`~tracer.errors.HeaptraceError` that names the
path, the reason and what to do.
"""
from __future__ import annotations

import os
import stat
from typing import IO

from .errors import HeaptraceError
from .views.fmt import safe


def _refuse(path: str, why: str) -> HeaptraceError:
    return HeaptraceError(f"refusing to write {safe(path)}: {why}")


def _check_directories(path: str) -> None:
    me = os.geteuid()
    d = os.path.dirname(os.path.abspath(path))
    parts = d.split(os.sep)
    cur = os.sep
    for part in parts[1:]:
        if not part:
            continue
        cur = os.path.join(cur, part)
        try:
            st = os.lstat(cur)
        except OSError:
            return  # does not exist: the open says so
        if stat.S_ISLNK(st.st_mode) and st.st_uid not in (0, me):
            raise _refuse(path, f"{safe(cur)} is a symbolic link owned by uid {st.st_uid} (heaptrace "
                                "runs as root and does not follow another user's links); give a path "
                                "without it")


def open_fd(path: str, *, append: bool) -> int:
    """Open ``path`` for writing under the policy; ``append`` keeps its
    content (CSVs), else it is emptied (the caller writes it whole)."""
    _check_directories(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    if append:
        flags |= os.O_APPEND
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as e:
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            mode = None
        if mode is not None and stat.S_ISLNK(mode):
            raise _refuse(path, "it is a symbolic link (heaptrace runs as root and never writes "
                                "through links); give another path") from None
        if mode is not None and stat.S_ISDIR(mode):
            raise HeaptraceError(f"cannot write {safe(path)}: it is a directory; give a file name") from None
        if e.errno == 6:  # ENXIO: a FIFO nobody reads
            raise _refuse(path, "it is not a regular file (a pipe); give another path") from None
        raise HeaptraceError(f"cannot write {safe(path)}: {e.strerror}; check the directory exists "
                             "and is writable") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _refuse(path, "it is not a regular file (a device or a pipe); give another path")
        if st.st_uid != os.geteuid():
            raise _refuse(path, f"it belongs to uid {st.st_uid}, not to the user heaptrace runs as; "
                                "remove it or give another path")
        os.set_blocking(fd, True)
        if not append:
            os.ftruncate(fd, 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_append(path: str) -> IO[str]:
    """A text file to append CSV rows to."""
    fd = open_fd(path, append=True)
    return os.fdopen(fd, "a", newline="", encoding="utf-8", errors="backslashreplace")


def write_whole(path: str, data: bytes) -> None:
    """Replace ``path``'s content with ``data`` (the data is ready first, so a
    failure before this point leaves an existing file alone)."""
    fd = open_fd(path, append=False)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        try:
            os.fsync(fd)
        except OSError:
            pass
    except OSError as e:
        raise HeaptraceError(f"writing {safe(path)} failed: {e.strerror}") from None
    finally:
        os.close(fd)
