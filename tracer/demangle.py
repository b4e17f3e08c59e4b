"""C++ symbol names made readable with the C++ runtime's own demangler.

Symbol names come from the files of the traced programs: any user's. The
Itanium demangler's output can grow exponentially with the number of
back-references (``S0_``, ``T_``, ...): a 235-byte name demangles to 117 MB,
one of 300 bytes to terabytes, taking as long. So a name is demangled in
this process only when it cannot blow up (at most :data:`INLINE_REFS`
back-references and :data:`INLINE_LENGTH` bytes: most names); the others
go to a helper process (the demangler alone, started on first use) with
its memory limited, which is killed (and started again when needed) when a
name takes longer than :data:`TIMEOUT`. A name that cannot be demangled,
or whose demangled form is longer than :data:`MAX_OUTPUT`, is kept as it is.
"""
from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import os
import re
import select
import subprocess
import sys
import threading
import time
from functools import lru_cache

#: Names longer than this (mangled or demangled) are kept as they are.
MAX_OUTPUT = 64 * 1024
#: Demangled in this process: at most this many back-references...
INLINE_REFS = 3
#: ... and at most this long (the output is then at most a few MB).
INLINE_LENGTH = 1024
#: Time the helper process may take for one name.
TIMEOUT = 0.5
#: Memory (RLIMIT_DATA) of the helper process.
WORKER_MEMORY = 256 << 20

# What makes the demangler print a part of the name again: substitutions
# (S_, S0_), template parameters (T_, T0_, TL0__), function parameters (fp,
# fL), pack expansions (Dp, sZ, sP). Counted generously (a source name may
# hold the same letters): a name counted too high only goes to the helper.
_REFS = re.compile(r"[ST][0-9A-Z]*_|Dp|sZ|sP|fp|fL")


@lru_cache(maxsize=1)
def _candidates() -> list[str]:
    return [p for p in (ctypes.util.find_library(n) for n in ("stdc++", "c++")) if p]


@lru_cache(maxsize=1)
def _runtime():
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path)
            fn = lib.__cxa_demangle
        except (OSError, AttributeError):
            continue
        fn.restype = ctypes.c_void_p
        fn.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)]
        libc = ctypes.CDLL(None)
        libc.free.argtypes = [ctypes.c_void_p]
        return fn, libc.free
    return None


def _demangle_raw(fn, free, raw: bytes) -> bytes | None:
    status = ctypes.c_int(-1)
    p = fn(raw, None, None, ctypes.byref(status))
    if not p:
        return None
    try:
        return ctypes.string_at(p) if status.value == 0 else None
    finally:
        free(p)


# The helper: reads hex-encoded names, one a line; writes the demangled name
# hex-encoded, or '-'. It ends with heaptrace (PR_SET_PDEATHSIG, stdin EOF).
_WORKER = r"""
import ctypes, os, resource, sys
libc = ctypes.CDLL(None)
libc.prctl(1, 9, 0, 0, 0)
if os.getppid() != int(sys.argv[1]):
    sys.exit(0)
resource.setrlimit(resource.RLIMIT_DATA, (int(sys.argv[2]), int(sys.argv[2])))
fn = ctypes.CDLL(sys.argv[3]).__cxa_demangle
fn.restype = ctypes.c_void_p
fn.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)]
libc.free.argtypes = [ctypes.c_void_p]
limit = int(sys.argv[4])
for line in sys.stdin.buffer:
    status = ctypes.c_int(-1)
    p = fn(bytes.fromhex(line.decode()), None, None, ctypes.byref(status))
    out = ctypes.string_at(p) if p and status.value == 0 else None
    if p:
        libc.free(p)
    sys.stdout.buffer.write((out.hex() if out is not None and len(out) <= limit else "-").encode() + b"\n")
    sys.stdout.buffer.flush()
"""


class _Worker:
    """The helper process, started on first use, killed on a time-out."""

    def __init__(self) -> None:
        self._p: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def _start(self) -> subprocess.Popen | None:
        lib = next(iter(_candidates()), None)
        if lib is None or not sys.executable:
            return None
        try:
            return subprocess.Popen(
                [sys.executable, "-S", "-E", "-c", _WORKER, str(os.getpid()), str(WORKER_MEMORY), lib,
                 str(MAX_OUTPUT)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, close_fds=True)
        except OSError:
            return None

    def _stop(self) -> None:
        p, self._p = self._p, None
        if p is None:
            return
        try:
            p.kill()
        except ProcessLookupError:
            pass
        p.wait()
        for s in (p.stdin, p.stdout):
            try:
                s.close()
            except OSError:
                pass

    def demangle(self, raw: bytes) -> bytes | None:
        with self._lock:
            if self._p is None or self._p.poll() is not None:
                self._stop()
                self._p = self._start()
                if self._p is None:
                    return None
            p = self._p
            try:
                p.stdin.write(raw.hex().encode() + b"\n")
                p.stdin.flush()
                line = b""
                end = time.monotonic() + TIMEOUT
                while not line.endswith(b"\n"):
                    left = end - time.monotonic()
                    if left <= 0 or not select.select([p.stdout], [], [], left)[0]:
                        raise TimeoutError
                    chunk = os.read(p.stdout.fileno(), 2 * MAX_OUTPUT + 2)
                    if not chunk:
                        raise EOFError
                    line += chunk
            except (OSError, TimeoutError, EOFError, ValueError):
                self._stop()  # stuck on this name, or gone: the next name starts another
                return None
            text = line.strip()
            try:
                return None if text == b"-" else bytes.fromhex(text.decode())
            except ValueError:
                self._stop()
                return None

    def close(self) -> None:
        with self._lock:
            self._stop()


_worker = _Worker()
atexit.register(_worker.close)


def risky(name: str) -> bool:
    """Whether the demangled form of ``name`` could be huge (exponential)."""
    return len(name) > INLINE_LENGTH or len(_REFS.findall(name)) > INLINE_REFS


@lru_cache(maxsize=65536)
def demangle(name: str) -> str:
    """``_Z12cxx_new_sitev`` -> ``cxx_new_site()``; anything else unchanged."""
    if not name.startswith("_Z") or len(name) > MAX_OUTPUT or "\0" in name:
        return name
    try:
        raw = name.encode("utf-8", "surrogateescape")
    except UnicodeError:
        return name
    if risky(name):
        out = _worker.demangle(raw)
    else:
        rt = _runtime()
        if rt is None:
            return name
        out = _demangle_raw(*rt, raw)
    if out is None or len(out) > MAX_OUTPUT:
        return name
    return out.decode("utf-8", "replace")
