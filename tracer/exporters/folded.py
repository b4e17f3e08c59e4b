"""Folded stacks (Brendan Gregg's ``stackcollapse`` format): one line per stack,
``frame;frame;...;frame VALUE``, root first, for ``flamegraph.pl``, inferno,
Pyroscope ingest (``format=folded``) and speedscope.

Conventions of this file, chosen so a flame graph of it reads right:

* the root frame is the process, ``comm-pid`` (``process_frame=False`` omits
  it, and then the stacks of all processes merge);
* a stack whose ``source`` is ``mmap`` (a direct anonymous mapping the
  program made, not the malloc family) ends with one more frame, ``[mmap]``,
  on the leaf side: in a flame graph it is a box on top of the function that
  called ``mmap``, so those bytes are never mistaken for heap bytes; a
  ``malloc`` stack has no marker;
* frames are made safe for a line-based format: a ``;`` inside a frame (a
  symbol name may hold one, ``[u8; 4]``) becomes ``:``, and control
  characters (newline, escape sequences) and Unicode direction overrides
  are written as visible escapes (``\\x1b``), so no name can split a line,
  split a frame or drive the terminal of whoever ``cat``\\ s the file;
* sites with a value of 0 or less are omitted (a flame graph has no room
  for them); identical lines are summed; lines are sorted.

Also the helpers the other exporters share: :func:`records` (rows from the
state DataFrame of :func:`tracer.review.state_at`, or plain mappings) and
:func:`split_stack` (the ``stack`` column back into frames).
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

VALUES = ("live_bytes", "live_allocs", "alloc_bytes", "allocs")
LOST_STACK = "[lost stack]"   # what tracer.model writes for a stack it could not read
MMAP_MARKER = "[mmap]"

# A frame heaptrace writes: "name+0xoff [module]", "0xaddr [module]", "0xaddr", "[lost stack]".
# (One regular expression for all, ``.*\+0x[0-9a-f]+ \[.*\]``, takes time
# cubic in the length of a cell whose names hold many ``;`` and ``+0x1 [``:
# minutes for 36 KB. These checks are linear; see :func:`is_frame`.)
_ANCHOR = re.compile(r"\+0x[0-9a-fA-F]+ \[")   # holds no ';': always inside one piece
_ADDR = re.compile(r"0x[0-9a-fA-F]+")
_ADDR_MODULE = re.compile(r"0x[0-9a-fA-F]+ \[")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def is_frame(s: str) -> bool:
    """Whether ``s`` is a whole frame as heaptrace writes it: ``…+0xOFF […]``,
    ``0xADDR``, ``0xADDR […]`` or ``[…]`` (``…``: anything, ``;`` too)."""
    if s.endswith("]") and (s.startswith("[") or _ADDR_MODULE.match(s) or _ANCHOR.search(s)):
        return True
    return _ADDR.fullmatch(s) is not None


def split_stack(stack: str) -> list[str]:
    """The frames of a ``stack`` cell, outermost first.

    The writer joins frames with ``;`` unescaped, so a frame that holds a
    ``;`` was split in two. A frame heaptrace writes always ends in
    ``[module]`` or is a bare address; pieces that do not look like one are
    joined to the pieces after them until they do. Pieces that never
    form one (a hand-written file) are kept as they are. Linear time.
    """
    if not stack:
        return [LOST_STACK]
    parts = stack.split(";")
    if len(parts) == 1 or all(is_frame(p) for p in parts):
        return parts
    out: list[str] = []
    pending: list[str] = []
    anchored = False  # a piece of pending holds "+0xOFF ["
    for p in parts:
        pending.append(p)
        anchored = anchored or _ANCHOR.search(p) is not None
        first = pending[0]
        if ((p.endswith("]") and (anchored or first.startswith("[") or _ADDR_MODULE.match(first)))
                or (len(pending) == 1 and _ADDR.fullmatch(p))):
            out.append(";".join(pending))
            pending, anchored = [], False
    out.extend(pending)
    return out


def records(data: Any) -> list[dict]:
    """Rows as dicts with ``pid``, ``comm``, ``source``, ``stack`` and the
    :data:`VALUES` (0 when absent), from a DataFrame or mappings."""
    if hasattr(data, "to_dict") and hasattr(data, "columns"):
        rows: Iterable[Mapping] = data.to_dict("records")
    else:
        rows = data
    out = []
    for r in rows:
        d = {"pid": _int(r.get("pid")), "comm": _str(r.get("comm")),
             "source": _str(r.get("source")) or "malloc", "stack": _str(r.get("stack"))}
        for v in VALUES:
            d[v] = _int(r.get(v))
        out.append(d)
    return out


def _int(v: Any) -> int:
    try:
        return int(v)
    except (TypeError, ValueError, OverflowError):  # None, NaN, text
        return 0


def _str(v: Any) -> str:
    return v if isinstance(v, str) else ("" if v is None or v != v else str(v))


def escape(text: str) -> str:
    """Control characters, direction overrides and lone surrogates as
    visible escapes."""
    return _UNSAFE.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                       else f"\\u{ord(m.group()):04x}", text)


def _frame(text: str) -> str:
    return escape(text).replace(";", ":") or "?"


def process_frame(comm: str, pid: int) -> str:
    return _frame(f"{comm}-{pid}")


def export(data: Any, value: str = "live_bytes", process_frames: bool = True) -> str:
    """The folded text (ends with a newline unless empty)."""
    if value not in VALUES:
        raise ValueError(f"value must be one of {', '.join(VALUES)}")
    acc: dict[str, int] = {}
    for r in records(data):
        n = r[value]
        if n <= 0:
            continue
        frames = [_frame(f) for f in split_stack(r["stack"])]
        if r["source"] == "mmap":
            frames.append(MMAP_MARKER)
        elif r["source"] != "malloc":
            frames.append(_frame(f"[{r['source']}]"))
        if process_frames:
            frames.insert(0, process_frame(r["comm"], r["pid"]))
        line = ";".join(frames)
        acc[line] = acc.get(line, 0) + n
    return "".join(f"{k} {acc[k]}\n" for k in sorted(acc))
