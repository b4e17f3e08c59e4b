"""pprof: a gzipped ``profile.proto`` (github.com/google/pprof/proto/profile.proto),
for ``go tool pprof``, Pyroscope, Parca, Grafana and the like.

Encoded by hand (varints and length-delimited fields: no protobuf
dependency). What the profile holds:

* four sample types, in this order: ``inuse_space/bytes``,
  ``inuse_objects/count``, ``alloc_space/bytes``, ``alloc_objects/count``
  (a site's ``live_bytes``, ``live_allocs``, ``alloc_bytes``, ``allocs``,
  as Go's heap profiles name them); ``default_sample_type`` is the one of
  ``--value`` (``inuse_space`` unless told);
* one sample per site with any of them non-zero, leaf first, with labels
  ``pid`` (number), ``comm`` and ``source`` (``malloc`` or ``mmap``);
  ``go tool pprof -tagroot=comm,pid -tagleaf=source`` draws them as frames,
  ``-tagfocus=source=mmap`` keeps only direct mappings;
* one Location and one Function per distinct frame text: the function name
  is the frame before `` [module]`` (``remember_request+0x15``), the module
  is a Mapping (file name only: the offsets are gone by the time the CSV is
  written, so every mapping says it has its functions already, and pprof
  never tries to symbolize); a bare-address frame keeps its address;
* ``time_nanos``: the interval's end; comments (``-comments``): the source.

Names are kept exactly as the CSV gives them (valid UTF-8: a lone surrogate
becomes ``?``); a viewer shows them as it shows any name.
"""
from __future__ import annotations

import gzip
import re
from typing import Any, Iterable

from .folded import VALUES, records, split_stack

SAMPLE_TYPES = (("inuse_space", "bytes"), ("inuse_objects", "count"),
                ("alloc_space", "bytes"), ("alloc_objects", "count"))
TYPE_OF_VALUE = dict(zip(VALUES, (t for t, _ in SAMPLE_TYPES)))

_MASK = (1 << 64) - 1


def varint(n: int) -> bytes:
    """Base-128 varint; a negative int64 as its two's complement (10 bytes)."""
    n &= _MASK
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return varint(field << 3 | wire)


def num(field: int, n: int) -> bytes:
    """A varint field; 0 (the proto3 default) is left out."""
    return _key(field, 0) + varint(n) if n else b""


def blob(field: int, data: bytes) -> bytes:
    """A length-delimited field (bytes, string, sub-message)."""
    return _key(field, 2) + varint(len(data)) + data


def packed(field: int, nums: Iterable[int]) -> bytes:
    body = b"".join(varint(n) for n in nums)
    return blob(field, body) if body else b""


class _Strings:
    def __init__(self) -> None:
        self.table: list[str] = [""]
        self.index: dict[str, int] = {"": 0}

    def __call__(self, s: str) -> int:
        i = self.index.get(s)
        if i is None:
            i = self.index[s] = len(self.table)
            self.table.append(s)
        return i


_WITH_MODULE = re.compile(r"(?s)(0x[0-9a-fA-F]+|.*?\+0x[0-9a-fA-F]+) \[(.*)\]")


def split_frame(frame: str) -> tuple[str, str]:
    """``"f+0x1a [libc.so.6]"`` -> ``("f+0x1a", "libc.so.6")``; no module: ``""``.
    The module starts after the first ``+0xOFF [`` (or a bare address), so
    a module name holding `` [`` stays whole."""
    # (Only a frame ending in ']' can match: the check keeps the lazy
    # expression linear on a long frame with many '+0x1 [' and no ']'.)
    m = _WITH_MODULE.fullmatch(frame) if frame.endswith("]") else None
    if m:
        return m.group(1), m.group(2)
    i = frame.rfind(" [")
    if i > 0 and frame.endswith("]"):
        return frame[:i], frame[i + 2:-1]
    return frame, ""


def _address(name: str) -> int:
    if name.startswith("0x"):
        try:
            return int(name, 16) & _MASK
        except ValueError:
            pass
    return 0


def encode(data: Any, value: str = "live_bytes", time_nanos: int = 0,
           comments: Iterable[str] = ()) -> bytes:
    """The profile, serialized (not compressed)."""
    if value not in TYPE_OF_VALUE:
        raise ValueError(f"value must be one of {', '.join(VALUES)}")
    s = _Strings()
    out = bytearray()
    for t, unit in SAMPLE_TYPES:
        out += blob(1, num(1, s(t)) + num(2, s(unit)))
    mappings: dict[str, int] = {}
    locations: dict[str, int] = {}
    loc_msgs: list[bytes] = []
    fn_msgs: list[bytes] = []
    map_msgs: list[bytes] = []
    for r in records(data):
        vals = [r[v] for v in VALUES]
        if not any(vals):
            continue
        ids = []
        for frame in reversed(split_stack(r["stack"])):  # pprof: leaf first
            lid = locations.get(frame)
            if lid is None:
                name, module = split_frame(frame)
                mid = 0
                if module:
                    mid = mappings.get(module, 0)
                    if not mid:
                        mid = mappings[module] = len(mappings) + 1
                        # id, filename, has_functions
                        map_msgs.append(num(1, mid) + num(5, s(module)) + num(7, 1))
                lid = locations[frame] = len(locations) + 1
                fid = lid
                fn_msgs.append(num(1, fid) + num(2, s(name)) + num(3, s(name)))
                # id, mapping_id, address, line{function_id}
                loc_msgs.append(num(1, lid) + num(2, mid) + num(3, _address(name)) + blob(4, num(1, fid)))
            ids.append(lid)
        labels = blob(3, num(1, s("pid")) + num(3, r["pid"]))
        for key in ("comm", "source"):
            if r[key]:  # an empty string is index 0: no label at all
                labels += blob(3, num(1, s(key)) + num(2, s(r[key])))
        out += blob(2, packed(1, ids) + packed(2, vals) + labels)
    for m in map_msgs:
        out += blob(3, m)
    for m in loc_msgs:
        out += blob(4, m)
    for m in fn_msgs:
        out += blob(5, m)
    comment_ids = [s(c) for c in comments]
    default = s(TYPE_OF_VALUE[value])
    for text in s.table:
        out += blob(6, text.encode("utf-8", "replace"))
    out += num(9, time_nanos)
    out += packed(13, comment_ids)
    out += num(14, default)
    return bytes(out)


def export(data: Any, value: str = "live_bytes", time_nanos: int = 0, comments: Iterable[str] = ()) -> bytes:
    """The profile, gzipped (what ``go tool pprof`` and friends read)."""
    return gzip.compress(encode(data, value, time_nanos, comments), mtime=0)
