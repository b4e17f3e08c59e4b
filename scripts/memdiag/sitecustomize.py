"""A census of heaptrace's own memory, for finding what grows in a long
session (loaded through scripts/memdiag/heaptrace; inert unless HT_MEMDIAG
names a file).

Every HT_MEMDIAG_EVERY seconds (60) it appends: VmRSS, the Python blocks
allocated, glibc's mallinfo2 (arena, in use, free, mmapped, top), the object
types whose count changed most, and the length of every dict, set, list and
deque held by an object of heaptrace's (``tracer.*``) classes, summed by
class and attribute, with the change since the last census. Cheap (a walk
of gc.get_objects(), ~0.1 s): it does not change what it measures the way
tracemalloc does (which made an --all session CPU-bound).
"""
import collections
import ctypes
import gc
import os
import sys
import threading
import time

_OUT = os.environ.get("HT_MEMDIAG")


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                "fsmblks", "uordblks", "fordblks", "keepcost")]


def _containers(objs) -> dict:
    sizes: dict = {}
    for o in objs:
        t = type(o)
        if not getattr(t, "__module__", "").startswith("tracer") or not hasattr(o, "__dict__"):
            continue
        for k, v in vars(o).items():
            if isinstance(v, (dict, set, list, collections.deque)):
                key = f"{t.__name__}.{k}"
                sizes[key] = sizes.get(key, 0) + len(v)
    return sizes


def _loop(out: str, every: float) -> None:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    prev_types, prev_sizes = None, {}
    mib = 2 ** 20
    while True:
        time.sleep(every)
        mi = libc.mallinfo2()
        objs = gc.get_objects()
        types = collections.Counter(type(o).__name__ for o in objs)
        sizes = _containers(objs)
        del objs
        with open("/proc/self/status") as f:
            rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
        lines = [f"=== {time.strftime('%H:%M:%S')} rss={rss / 1024:.1f}M pyblocks={sys.getallocatedblocks()} "
                 f"malloc arena={mi.arena / mib:.1f}M inuse={mi.uordblks / mib:.1f}M free={mi.fordblks / mib:.1f}M "
                 f"mmapped={mi.hblkhd / mib:.1f}M top={mi.keepcost / mib:.1f}M"]
        if prev_types is not None:
            moved = sorted(types, key=lambda t: -abs(types[t] - prev_types.get(t, 0)))[:8]
            lines.append("  types: " + ", ".join(f"{t}:{types[t]}({types[t] - prev_types.get(t, 0):+d})"
                                                 for t in moved))
            top = sorted(sizes.items(), key=lambda kv: -kv[1])[:25]
            lines.append("  containers: " + ", ".join(f"{k}={n}({n - prev_sizes.get(k, 0):+d})" for k, n in top))
        with open(out, "a") as f:
            f.write("\n".join(lines) + "\n")
        prev_types, prev_sizes = types, sizes


if _OUT:
    threading.Thread(target=_loop, args=(_OUT, float(os.environ.get("HT_MEMDIAG_EVERY", "60"))),
                     daemon=True, name="memdiag").start()
