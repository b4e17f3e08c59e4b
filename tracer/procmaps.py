"""Read a process's memory map and name from procfs.

Everything here is plain file parsing: no privileges are needed beyond
being allowed to read ``/proc/PID/maps`` (root, or the same user).
The ``proc`` argument lets tests point the functions at a fake directory.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = [
    "Mapping",
    "ProcessGone",
    "host_path",
    "real_host_path",
    "parse_maps",
    "read_comm",
    "read_maps",
]

_DELETED = " (deleted)"
_PERM_CHARS = ("r-", "w-", "x-", "ps")

# Errors that mean "this pid no longer exists" when touching /proc/PID/...
# ESRCH shows up when the process exits while we are reading.
_GONE_ERRORS = (FileNotFoundError, ProcessLookupError, NotADirectoryError)


class ProcessGone(Exception):
    """The process does not exist (never did, or has exited)."""

    def __init__(self, pid: int) -> None:
        super().__init__(f"process {pid} is gone")
        self.pid = pid


@dataclass(frozen=True)
class Mapping:
    """One line of ``/proc/PID/maps``.

    ``path`` is ``''`` for anonymous memory; pseudo names such as ``[heap]``,
    ``[stack]`` or ``[vdso]`` are kept verbatim.  A trailing `` (deleted)``
    is removed from ``path`` and recorded in ``deleted``.
    """

    start: int
    end: int
    perms: str
    offset: int
    dev: tuple[int, int]
    inode: int
    path: str
    deleted: bool = False

    @property
    def executable(self) -> bool:
        return "x" in self.perms

    @property
    def anonymous(self) -> bool:
        """True unless the mapping is backed by a file (its path is absolute).

        ``''``, ``[heap]``, ``[stack]``, ``[vdso]``, ``[anon:name]`` are all
        anonymous in this sense.
        """
        return not self.path.startswith("/")


def _parse_line(line: str) -> Mapping | None:
    parts = line.split(None, 5)
    if len(parts) < 5:
        return None
    addrs, perms, offset, dev, inode = parts[:5]
    path = parts[5] if len(parts) == 6 else ""
    try:
        start_s, end_s = addrs.split("-")
        start, end = int(start_s, 16), int(end_s, 16)
        major_s, minor_s = dev.split(":")
        dev_t = (int(major_s, 16), int(minor_s, 16))
        off = int(offset, 16)
        ino = int(inode, 10)
    except ValueError:
        return None
    if start > end or min(start, off, ino, *dev_t) < 0:
        return None
    if len(perms) != 4 or any(c not in ok for c, ok in zip(perms, _PERM_CHARS)):
        return None
    deleted = path.endswith(_DELETED)
    if deleted:
        path = path[: -len(_DELETED)]
    return Mapping(start, end, perms, off, dev_t, ino, path, deleted)


def parse_maps(text: str) -> list[Mapping]:
    """Parse the text of a maps file, silently skipping malformed lines.

    Paths may contain spaces; they are everything after the inode column.
    Never raises on garbage input.
    """
    result = []
    for line in text.splitlines():
        mapping = _parse_line(line)
        if mapping is not None:
            result.append(mapping)
    return result


def read_maps(pid: int, proc: str = "/proc") -> list[Mapping]:
    """Read and parse ``{proc}/{pid}/maps``.

    Paths are decoded like :func:`os.fsdecode` (undecodable bytes become
    surrogates), so they can be passed back to :func:`open`.
    A zombie or kernel thread yields ``[]``.

    Raises :class:`ProcessGone` if the process does not exist or exits while
    being read; other ``OSError`` (e.g. ``PermissionError``) propagate.
    """
    try:
        with open(f"{proc}/{pid}/maps", "rb") as f:
            data = f.read()
    except _GONE_ERRORS:
        raise ProcessGone(pid) from None
    return parse_maps(os.fsdecode(data))


def parse_smaps_rss(text: str) -> list[tuple[Mapping, int]]:
    """Each mapping of a ``/proc/PID/smaps`` text with its resident bytes
    (the ``Rss:`` line that follows its header). Never raises on garbage."""
    out: list[tuple[Mapping, int]] = []
    cur: Mapping | None = None
    for line in text.splitlines():
        if line.startswith("Rss:"):
            parts = line.split()
            kb = _kb(parts[1]) if len(parts) >= 2 else None
            if cur is not None and kb is not None:
                out.append((cur, kb * 1024))
                cur = None
            continue
        if line and line[0] in "0123456789abcdef" and "-" in line.split(None, 1)[0]:
            cur = _parse_line(line)
    return out


def _kb(text: str) -> int | None:
    """A count of kB: ASCII digits only (``str.isdigit`` also takes ``'²'``,
    which ``int`` refuses), and not absurdly long (``int`` refuses more than
    4300 digits)."""
    if not (text.isascii() and text.isdigit()) or len(text) > 20:
        return None
    return int(text)


def read_smaps_rss(pid: int, proc: str = "/proc") -> list[tuple[Mapping, int]]:
    """``{proc}/{pid}/smaps`` as (mapping, resident bytes); raises
    :class:`ProcessGone` like :func:`read_maps`."""
    try:
        with open(f"{proc}/{pid}/smaps", "rb") as f:
            data = f.read()
    except _GONE_ERRORS:
        raise ProcessGone(pid) from None
    return parse_smaps_rss(os.fsdecode(data))


def parse_status_kb(text: str, field: str) -> int | None:
    """A ``kB`` field of ``/proc/PID/status`` (e.g. ``RssAnon``) in bytes."""
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name == field:
            parts = rest.split()
            kb = _kb(parts[0]) if parts else None
            return None if kb is None else kb * 1024
    return None


def read_rss_anon(pid: int, proc: str = "/proc") -> int | None:
    """Resident anonymous bytes of a process (``RssAnon``), None if gone."""
    try:
        with open(f"{proc}/{pid}/status", "rb") as f:
            return parse_status_kb(f.read().decode("utf-8", "replace"), "RssAnon")
    except OSError:
        return None


def read_comm(pid: int, proc: str = "/proc") -> str:
    """The process's ``comm`` (short command name), or ``''`` if unreadable.

    Invalid UTF-8 is replaced with U+FFFD; only the trailing newline is removed.
    """
    try:
        with open(f"{proc}/{pid}/comm", "rb") as f:
            data = f.read()
    except OSError:
        return ""
    return data.decode("utf-8", errors="replace").removesuffix("\n")


def host_path(pid: int, path: str, proc: str = "/proc", identity: tuple | None = None) -> str:
    """A path heaptrace can open for the file a process maps as ``path``.

    ``/proc/PID/maps`` names a file as seen from heaptrace's root when it can
    be reached from there (a chroot: the whole host path), else as seen in
    the process's own mount namespace (a container: ``/lib/...``, opened
    through ``/proc/PID/root``). With the file's ``identity`` ((major,
    minor), inode) from the maps line, the candidate that is that file wins;
    without it, or if none is, ``/proc/PID/root`` + ``path``. Only
    meaningful while the process is alive.
    """
    through_root = f"{proc}/{pid}/root{path}"
    if identity is None:
        return through_root
    for candidate in (through_root, path):
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if ((os.major(st.st_dev), os.minor(st.st_dev)), st.st_ino) == tuple(identity):
            return candidate
    return through_root


def real_host_path(pid: int, path: str, proc: str = "/proc", identity: tuple | None = None) -> str:
    """The file's canonical path as heaptrace sees it: the /proc/PID/root link
    resolved now, so it stays valid after the process exits. Falls back to
    ``path`` itself when the process is already gone."""
    try:
        return os.path.realpath(host_path(pid, path, proc, identity), strict=True)
    except OSError:
        return path
