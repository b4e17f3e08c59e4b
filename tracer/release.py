"""Taking heaptrace's breakpoints out of one process (``--all``'s budget).

With ``--all`` the uprobes are attached once per allocator file for every
process mapping it: the kernel writes a breakpoint (``int3``) into each
process's private copy of the page at each probed instruction. A process
whose allocation rate makes even the breakpoint too costly (about 1.5 us a
call, whatever the BPF program does) can only be spared by taking the
breakpoints out of its memory: the original byte, read from the file,
written back through ``/proc/PID/mem`` -- what a debugger does with its own
breakpoints. The kernel allows for it: when a probe is detached it restores
a byte only where its breakpoint still is. What the process forks inherits
the page as it is (no breakpoints); after an exec the new program has the
breakpoints again.

Not done when another program on the host has a uprobe at one of those
places (it would lose its breakpoint in that process too): every perf
event with a BPF program is asked what it probes (``BPF_TASK_FD_QUERY``, as
``bpftool perf`` does). Uprobes without a BPF program (``perf probe``) and
``uprobe_multi`` links are not seen by that query: see the README's limits.
"""
from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from typing import Iterable

from .procmaps import Mapping

INT3 = b"\xcc"
_BPF_TASK_FD_QUERY = 20
_BPF_FD_TYPE_UPROBE, _BPF_FD_TYPE_URETPROBE = 4, 5
_NR_BPF = 321  # x86-64


@dataclass(frozen=True)
class Breakpoint:
    identity: tuple        # ((major, minor), inode) of the file probed, as in /proc/PID/maps
    offset: int                 # file offset of the probed instruction
    original: bytes             # its first byte, from the file


def addresses(maps: Iterable[Mapping], points: Iterable[Breakpoint]) -> list[tuple[int, Breakpoint]]:
    """Where each breakpoint sits in a process: for each executable mapping
    of its file covering its offset, ``start + offset - mapping offset``.
    Pure."""
    by_file: dict[tuple[int, int], list[Breakpoint]] = {}
    for bp in points:
        by_file.setdefault(bp.identity, []).append(bp)
    out = []
    for m in maps:
        if not m.executable:
            continue
        for bp in by_file.get((m.dev, m.inode), ()):
            if m.offset <= bp.offset < m.offset + (m.end - m.start):
                out.append((m.start + bp.offset - m.offset, bp))
    return out


def remove(pid: int, where: list[tuple[int, Breakpoint]], mem: str | None = None) -> int:
    """Write each original byte back where a breakpoint still is; the number
    written. A byte that is not a breakpoint is left alone (never probed
    in this process, or already restored)."""
    fd = os.open(mem or f"/proc/{pid}/mem", os.O_RDWR | os.O_CLOEXEC)
    n = 0
    try:
        for addr, bp in where:
            if os.pread(fd, 1, addr) == INT3 and bp.original != INT3:
                os.pwrite(fd, bp.original, addr)
                n += 1
    finally:
        os.close(fd)
    return n


class _TaskFdQuery(ctypes.Structure):
    _fields_ = [("pid", ctypes.c_uint32), ("fd", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("buf_len", ctypes.c_uint32), ("buf", ctypes.c_uint64), ("prog_id", ctypes.c_uint32),
                ("fd_type", ctypes.c_uint32), ("probe_offset", ctypes.c_uint64),
                ("probe_addr", ctypes.c_uint64)]


def _query(libc, pid: int, fd: int) -> tuple[str, int] | None:
    """(file, offset) of the uprobe a perf event fd of ``pid`` holds, if any."""
    buf = ctypes.create_string_buffer(4096)
    q = _TaskFdQuery(pid=pid, fd=fd, buf_len=len(buf), buf=ctypes.addressof(buf))
    # bpf(BPF_TASK_FD_QUERY): 0, or -1 for an fd that is no perf event with a program
    if libc.syscall(_NR_BPF, _BPF_TASK_FD_QUERY, ctypes.byref(q), ctypes.sizeof(q)) != 0:
        return None
    if q.fd_type not in (_BPF_FD_TYPE_UPROBE, _BPF_FD_TYPE_URETPROBE):
        return None
    return buf.value.decode("utf-8", "surrogateescape"), q.probe_offset


def foreign_uprobes(points: Iterable[Breakpoint], own_pid: int, proc: str = "/proc") -> list[tuple[int, str, int]]:
    """Uprobes held by other processes at any of ``points``: (pid, file,
    offset) of each."""
    wanted = {(bp.identity, bp.offset) for bp in points}
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    found = []
    for name in os.listdir(proc):
        if not name.isdigit() or int(name) == own_pid:
            continue
        pid = int(name)
        try:
            fds = os.listdir(f"{proc}/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"{proc}/{pid}/fd/{fd}") != "anon_inode:[perf_event]":
                    continue
            except OSError:
                continue
            got = _query(libc, pid, int(fd))
            if got is None:
                continue
            path, offset = got
            try:
                st = os.stat(path if os.path.isabs(path) else f"{proc}/{pid}/root/{path}")
            except OSError:
                continue
            if (((os.major(st.st_dev), os.minor(st.st_dev)), st.st_ino), offset) in wanted:
                found.append((pid, path, offset))
    return found
