"""C++ symbol names made readable with the C++ runtime's own demangler."""
from __future__ import annotations

import ctypes
import ctypes.util
from functools import lru_cache


@lru_cache(maxsize=1)
def _runtime():
    for name in ("stdc++", "c++"):
        path = ctypes.util.find_library(name)
        if not path:
            continue
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


@lru_cache(maxsize=65536)
def demangle(name: str) -> str:
    """``_Z12cxx_new_sitev`` -> ``cxx_new_site()``; anything else unchanged."""
    if not name.startswith("_Z"):
        return name
    rt = _runtime()
    if rt is None:
        return name
    fn, free = rt
    status = ctypes.c_int(-1)
    try:
        p = fn(name.encode("utf-8", "surrogateescape"), None, None, ctypes.byref(status))
    except (ValueError, UnicodeError):
        return name
    if not p:
        return name
    try:
        return ctypes.string_at(p).decode("utf-8", "replace") if status.value == 0 else name
    finally:
        free(p)
