"""speedscope's JSON file format (https://www.speedscope.app/file-format-schema.json),
to open in https://www.speedscope.app or the ``speedscope`` command.

One ``sampled`` profile per process, named ``comm (pid) VALUE at TIME``,
biggest first: each site is one sample (its frame indices root first) whose
weight is the site's value; unit ``bytes`` for ``live_bytes`` and
``alloc_bytes``, ``none`` for the counts. Sites with a value of 0 or less
are left out. Frames are shared by all profiles: ``name`` is the frame
before `` [module]`` (``remember_request+0x15``), ``file`` the module. As
in the folded format, a stack of direct mappings (source ``mmap``) ends
with a ``[mmap]`` frame on the leaf side. Names are kept exactly; the file
is ASCII (JSON escapes for everything else), so no name can break it.
"""
from __future__ import annotations

import json
from typing import Any

from .. import __version__
from .folded import MMAP_MARKER, VALUES, records, split_stack
from .pprof import split_frame

SCHEMA = "https://www.speedscope.app/file-format-schema.json"


def unit_of(value: str) -> str:
    return "bytes" if value.endswith("_bytes") else "none"


def export(data: Any, value: str = "live_bytes", when: str = "", name: str = "") -> str:
    """The speedscope JSON text; ``when`` (the interval) goes in profile names."""
    if value not in VALUES:
        raise ValueError(f"value must be one of {', '.join(VALUES)}")
    frames: list[dict] = []
    index: dict[str, int] = {}

    def frame(text: str) -> int:
        i = index.get(text)
        if i is None:
            i = index[text] = len(frames)
            fn, module = split_frame(text)
            frames.append({"name": fn, "file": module} if module else {"name": fn})
        return i

    procs: dict[int, dict] = {}
    for r in records(data):
        n = r[value]
        if n <= 0:
            continue
        stack = split_stack(r["stack"])
        if r["source"] == "mmap":
            stack.append(MMAP_MARKER)
        elif r["source"] != "malloc":
            stack.append(f"[{r['source']}]")
        key = tuple(frame(f) for f in stack)
        p = procs.setdefault(r["pid"], {"comm": r["comm"], "stacks": {}})
        p["stacks"][key] = p["stacks"].get(key, 0) + n
    profiles = []
    at = f" at {when}" if when else ""
    for pid, p in sorted(procs.items(), key=lambda kv: (-sum(kv[1]["stacks"].values()), kv[0])):
        stacks = sorted(p["stacks"].items())
        weights = [w for _, w in stacks]
        profiles.append({"type": "sampled", "name": f"{p['comm']} ({pid}) {value}{at}",
                         "unit": unit_of(value), "startValue": 0, "endValue": sum(weights),
                         "samples": [list(k) for k, _ in stacks], "weights": weights})
    doc = {"$schema": SCHEMA, "shared": {"frames": frames}, "profiles": profiles,
           "name": name or f"heaptrace {value}{at}", "activeProfileIndex": 0,
           "exporter": f"heaptrace {__version__}"}
    return json.dumps(doc, ensure_ascii=True, separators=(",", ":")) + "\n"
