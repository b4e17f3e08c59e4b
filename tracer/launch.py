"""Start a program stopped right after exec, so every probe is attached
before it runs a single instruction (``heaptrace -c``).

The child asks to be traced (PTRACE_TRACEME) and execs; the kernel stops it
with SIGTRAP once the new image is in place. heaptrace attaches, then
detaches from ptrace and the program starts. Nothing before exec is traced,
nothing after it is missed.

If heaptrace dies before it could end the program (SIGKILL, the OOM
killer), the kernel sends the program SIGTERM (PR_SET_PDEATHSIG), as
heaptrace itself does when a session ends first.
"""
from __future__ import annotations

import ctypes
import errno
import os
import signal

from .errors import TargetError

PTRACE_TRACEME, PTRACE_DETACH = 0, 17
PR_SET_PDEATHSIG = 1


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def spawn_stopped(argv: list[str]) -> int:
    libc = _libc()
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    parent = os.getpid()
    r, w = os.pipe()  # close-on-exec: EOF means exec succeeded
    pid = os.fork()  # from the main thread: the death signal follows the thread that forked
    if pid == 0:  # child
        try:
            os.close(r)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl")
            if os.getppid() != parent:  # heaptrace died before the prctl
                os._exit(128 + signal.SIGTERM)
            if libc.ptrace(PTRACE_TRACEME, 0, None, None) != 0:
                raise OSError(ctypes.get_errno(), "ptrace")
            os.execvp(argv[0], argv)
        except OSError as e:
            os.write(w, str(e.errno or errno.ENOEXEC).encode())
        finally:
            os._exit(127)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        err = f.read()
    if err:
        os.waitpid(pid, 0)
        code = int(err)
        raise TargetError(f"cannot run {argv[0]!r}: {os.strerror(code)}")
    _, status = os.waitpid(pid, 0)
    if not (os.WIFSTOPPED(status) and os.WSTOPSIG(status) == signal.SIGTRAP):
        raise TargetError(f"{argv[0]!r} did not stop after exec (status {status:#x})")
    return pid


def release(pid: int) -> None:
    """Let the stopped child run (detach ptrace, no signal delivered)."""
    libc = _libc()
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    if libc.ptrace(PTRACE_DETACH, pid, None, None) != 0:
        raise TargetError(f"could not start process {pid}: ptrace detach failed "
                          f"({os.strerror(ctypes.get_errno())})")


def exit_code(status: int) -> int:
    """A shell-style exit code from a wait status."""
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return 1
