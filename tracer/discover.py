"""Every process on the host, its cgroup, and the ``--all`` filters.

Process groups come from ``/proc/PID/cgroup``; the allocator files the
processes map are found by ``tracer.allprocs``.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Iterable

from .procmaps import read_comm


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    comm: str
    cgroup: str      # the cgroup v2 path ("/" for the root), or v1's systemd/first one


def parse_cgroup(text: str) -> str:
    """The process's cgroup from ``/proc/PID/cgroup``: the v2 entry
    (``0::/path``), else v1's ``name=systemd``, else the first v1 path; "/"
    when nothing can be read. Never raises."""
    v1: list[tuple[str, str]] = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, controllers, path = parts
        if hid == "0" and controllers == "" and path.startswith("/"):
            if path != "/" or not v1:
                return path
        if path.startswith("/"):
            v1.append((controllers, path))
    for controllers, path in v1:
        if "name=systemd" in controllers.split(","):
            return path
    return v1[0][1] if v1 else "/"


_CONTAINER = (
    (re.compile(r"docker-([0-9a-f]{12})[0-9a-f]*\.scope"), "docker"),
    (re.compile(r"/docker/([0-9a-f]{12})[0-9a-f]*"), "docker"),
    (re.compile(r"cri-containerd-([0-9a-f]{12})[0-9a-f]*\.scope"), "containerd"),
    (re.compile(r"crio-([0-9a-f]{12})[0-9a-f]*\.scope"), "cri-o"),
    (re.compile(r"libpod-([0-9a-f]{12})[0-9a-f]*\.scope"), "podman"),
    (re.compile(r"/lxc(?:\.payload)?[./]([^/]+)"), "lxc"),
)


def container_of(cgroup: str) -> str | None:
    """A short container name (``docker:0123456789ab``) from a cgroup path,
    or None for a process outside any container runtime's cgroup."""
    for pattern, runtime in _CONTAINER:
        m = pattern.search(cgroup)
        if m:
            return f"{runtime}:{m.group(1)}"
    return None


def list_pids(proc: str = "/proc") -> list[int]:
    try:
        return sorted(int(n) for n in os.listdir(proc) if n.isdigit())
    except OSError:
        return []


def read_cgroup(pid: int, proc: str = "/proc") -> str:
    try:
        with open(f"{proc}/{pid}/cgroup", "rb") as f:
            return parse_cgroup(f.read(65536).decode("utf-8", "replace"))
    except OSError:
        return "/"


def processes(proc: str = "/proc", exclude: Iterable[int] = ()) -> list[ProcInfo]:
    """Every process now (kernel threads included: they map nothing)."""
    skip = set(exclude)
    return [ProcInfo(pid, read_comm(pid, proc), read_cgroup(pid, proc))
            for pid in list_pids(proc) if pid not in skip]


def select(procs: Iterable[ProcInfo], *, comm: str | None = None, cgroup: str | None = None,
           exclude_pids: Iterable[int] = ()) -> list[ProcInfo]:
    """The ``--comm`` (exact name or a regular expression), ``--cgroup``
    (a path prefix, or a container name such as ``docker:0123456789ab``)
    and ``--exclude-pid`` filters."""
    skip = set(exclude_pids)
    rx = re.compile(comm) if comm is not None else None
    out = []
    for p in procs:
        if p.pid in skip:
            continue
        if rx is not None and not (p.comm == comm or rx.fullmatch(p.comm)):
            continue
        if cgroup is not None and not (p.cgroup == cgroup or p.cgroup.startswith(cgroup.rstrip("/") + "/")
                                       or container_of(p.cgroup) == cgroup):
            continue
        out.append(p)
    return out
