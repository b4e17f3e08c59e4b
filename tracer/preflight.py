"""Checks made before loading anything, each failing with cause and fix."""
from __future__ import annotations

import os

from .errors import MissingFeature, PermissionProblem

CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_PERFMON, CAP_BPF = 21, 19, 38, 39


def effective_caps(status_text: str) -> int:
    for line in status_text.splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def check_privileges(status_text: str | None = None) -> None:
    if status_text is None:
        with open("/proc/self/status") as f:
            status_text = f.read()
    caps = effective_caps(status_text)
    has = lambda c: bool(caps >> c & 1)  # noqa: E731
    bpf_ok = has(CAP_SYS_ADMIN) or (has(CAP_BPF) and has(CAP_PERFMON))
    if not bpf_ok or not (has(CAP_SYS_PTRACE) or has(CAP_SYS_ADMIN)):
        missing = [n for c, n in ((CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON"),
                                  (CAP_SYS_PTRACE, "CAP_SYS_PTRACE")) if not has(c)]
        raise PermissionProblem(
            "heaptrace needs root to load BPF programs and attach uprobes (missing "
            f"{', '.join(missing)}): run it with sudo, or grant CAP_BPF, CAP_PERFMON "
            "and CAP_SYS_PTRACE")


def check_uprobes(sysfs: str = "/sys") -> None:
    pmu = os.path.exists(f"{sysfs}/bus/event_source/devices/uprobe/type")
    tracefs = any(os.path.exists(f"{sysfs}/kernel/{d}/uprobe_events")
                  for d in ("tracing", "debug/tracing"))
    if not (pmu or tracefs):
        raise MissingFeature(
            "uprobes are not available: tracefs is not mounted and the kernel has no uprobe "
            "PMU. Mount it with: mount -t tracefs nodev /sys/kernel/tracing (or run "
            "scripts/bootstrap); the kernel needs CONFIG_UPROBE_EVENTS")


def check_headers(release: str | None = None, root: str = "") -> None:
    release = release or os.uname().release
    mod = f"{root}/lib/modules/{release}"
    have = (os.path.exists(f"{mod}/build/include/linux/kconfig.h")
            or os.path.exists(f"{mod}/source/include/linux/kconfig.h")
            or os.path.exists(f"{root}/sys/kernel/kheaders.tar.xz"))
    if not have:
        raise MissingFeature(
            f"kernel headers for {release} are missing (bcc compiles heaptrace's BPF programs "
            f"against them): install linux-headers-{release}, or run scripts/bootstrap, which "
            "links the distribution's headers when the running kernel has none")


def check_btf(sysfs: str = "/sys") -> None:
    """Per-thread state lives in task-local storage, which needs kernel BTF."""
    if not os.path.exists(f"{sysfs}/kernel/btf/vmlinux"):
        raise MissingFeature(
            "the kernel has no BTF (/sys/kernel/btf/vmlinux is missing): heaptrace keeps "
            "per-thread state in BPF task storage, which needs a kernel built with "
            "CONFIG_DEBUG_INFO_BTF=y (the default on current Debian, Ubuntu and Fedora kernels)")


def check_all() -> None:
    check_privileges()
    check_uprobes()
    check_btf()
    check_headers()
