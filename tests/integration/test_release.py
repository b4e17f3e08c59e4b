"""Taking heaptrace's breakpoints out of one process (tracer.release, the
last step of --all's budget), against the kernel's real uprobes.

A program's own function is probed for every process (as --all probes
libc), so no other session on the host can hold a probe at the same place:
the breakpoint is found in the program's memory, taken out, the probe stops
firing there, the program runs on unharmed, and detaching afterwards is
clean.
"""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from conftest import Proc

from tracer import layout, release
from tracer.elfsyms import ElfFile
from tracer.kernel import Kernel, Limits, Probe
from tracer.procmaps import read_maps

pytestmark = pytest.mark.integration

SOURCE = Path(__file__).resolve().parents[1] / "programs" / "releasable.c"


@pytest.fixture(scope="module")
def releasable(tmp_path_factory) -> str:
    exe = tmp_path_factory.mktemp("release") / "releasable"
    subprocess.run(["gcc", "-O1", "-fno-omit-frame-pointer", "-o", str(exe), str(SOURCE)], check=True)
    return str(exe)


def calls_counted(kernel: Kernel, pid: int) -> int:
    return sum(layout.decode_site(v).allocs for k, _slot, v in kernel.read_sites()
               if layout.decode_key(k)[0] == pid)


def wait_for(pred, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_breakpoints_taken_out_of_one_process(releasable):
    elf = ElfFile.open(releasable)
    vaddr = elf.defined_functions()["pick"].value
    prog = Proc([releasable])
    other = Proc([releasable])  # the same program, left probed
    kernel = None
    try:
        for p in (prog, other):
            p.wait_line("out", lambda l: l == "ready", 10, what="ready")
        kernel = Kernel(Limits(all_processes=True, default_mode=layout.C["MODE_FULL"], mappings=False))
        kernel.add_target(os.getpid(), layout.C["MODE_OFF"])
        for ret in (False, True):
            kernel.attach(Probe(releasable, vaddr, "alloc_return" if ret else "malloc_enter", -1, ret))
        assert wait_for(lambda: calls_counted(kernel, prog.pid) > 1000), "the probe never fired"

        exe = next(m for m in read_maps(prog.pid) if m.executable and m.path == releasable)
        off = elf.file_offset(vaddr)
        with open(releasable, "rb") as f:
            f.seek(off)
            bp = release.Breakpoint((exe.dev, exe.inode), off, f.read(1))
        where = release.addresses(read_maps(prog.pid), [bp])
        assert len(where) == 1
        with open(f"/proc/{prog.pid}/mem", "rb") as mem:
            mem.seek(where[0][0])
            assert mem.read(1) == release.INT3  # the kernel's breakpoint, in this process's copy
        assert release.foreign_uprobes([bp], os.getpid()) == []

        assert release.remove(prog.pid, where) == 1
        with open(f"/proc/{prog.pid}/mem", "rb") as mem:
            mem.seek(where[0][0])
            assert mem.read(1) == bp.original
        assert release.remove(prog.pid, where) == 0  # nothing left to take out

        time.sleep(0.2)  # a hit in flight lands
        before, before_other = calls_counted(kernel, prog.pid), calls_counted(kernel, other.pid)
        time.sleep(0.5)
        assert calls_counted(kernel, prog.pid) == before            # no breakpoint: no more hits
        assert calls_counted(kernel, other.pid) > before_other      # the other process is still probed

        # The program runs on, unharmed: its own count keeps rising.
        prog.send(b"s")
        i = prog.wait_line("out", lambda l: l.startswith("calls "), 10, what="a count")
        time.sleep(0.2)
        prog.send(b"s")
        j = prog.wait_line("out", lambda l: l.startswith("calls "), 10, start=i + 1, what="a count")
        assert int(prog.out[j].split()[1]) > int(prog.out[i].split()[1])

        kernel.close()  # detaching restores only the breakpoints still there
        kernel = None
        for p in (prog, other):
            p.close_stdin()
            assert p.wait(10) == 0, p.transcript()
        with open(releasable, "rb") as f:  # the file itself was never touched
            f.seek(off)
            assert f.read(1) == bp.original
    finally:
        if kernel is not None:
            kernel.close()
        prog.kill()
        other.kill()
