"""Formatting shared by the views: sizes, and names made safe to print.

Process and symbol names are chosen by any user: control characters and
escape sequences are shown as visible escapes, never sent to the terminal,
and rich markup is never interpreted (views build ``rich.text.Text``).
"""
from __future__ import annotations

import re

from rich.cells import cell_len, set_cell_size

# C0 and C1 controls, line and paragraph separators, bidi overrides, and lone
# surrogates (bytes that were not UTF-8, in a path decoded by os.fsdecode:
# printed, they raise UnicodeEncodeError or reach the terminal raw).
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def safe(s: str, limit: int = 200) -> str:
    """A name as printable text: control bytes escaped, length bounded."""
    s = _UNSAFE.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                    else f"\\u{ord(m.group()):04x}", s)
    if len(s) > limit:
        s = s[: max(0, limit - 1)] + "…"
    return s


def human(n: int | float, signed: bool = False) -> str:
    """Bytes in binary units: '0 B', '1.5 KiB', '+12.0 MiB'."""
    sign = ""
    if signed:
        sign = "+" if n > 0 else ("-" if n < 0 else "±")
    elif n < 0:
        sign = "-"
    v = abs(float(n))
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if v < 1024 or unit == "TiB":
            return f"{sign}{int(v)} {unit}" if unit == "B" else f"{sign}{v:.1f} {unit}"
        v /= 1024
    raise AssertionError("unreachable")


def shorten(s: str, width: int) -> str:
    """``s`` within ``width`` terminal cells ('…' where cut): a wide character
    (CJK, emoji) takes two."""
    if cell_len(s) <= width:
        return s
    if width <= 0:
        return ""
    return set_cell_size(s, width - 1).rstrip() + "…"
