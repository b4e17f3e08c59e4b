"""The Python mirror of bpf/heaptrace.h, from raw bytes."""
import re
import struct

from tracer import layout


def test_constants_come_from_the_header():
    c = layout.constants()
    assert c["MAX_DEPTH"] == 16
    assert c["MAX_ALLOCS"] >= 4_000_000
    assert c["STACK_SPAN"] == 8 << 20
    assert c["STAT_NR"] > max(v for k, v in c.items() if k.startswith("STAT_") and k != "STAT_NR")


def test_every_struct_in_the_header_is_mirrored_with_its_size():
    text = layout.HEADER.read_text()
    structs = dict(re.findall(r"struct (\w+) \{([^}]*)\};", text))
    sizes = {"__u32": 4, "__s32": 4, "__u64": 8, "__s64": 8}

    def c_size(body: str) -> int:
        n = 0
        for typ, name in re.findall(r"(__[us]\d\d) (\w+(?:\[\w+\])?);", body):
            count = 1
            m = re.search(r"\[(\w+)\]", name)
            if m:
                count = layout.C[m.group(1)] if not m.group(1).isdigit() else int(m.group(1))
            n += sizes[typ] * count
        return n

    assert c_size(structs["alloc_key"]) == layout.KEY.size == 16
    assert c_size(structs["site_key"]) == layout.KEY.size
    assert c_size(structs["alloc_info"]) == layout.ALLOC_INFO.size == 24
    assert c_size(structs["site_val"]) == layout.SITE_VAL.size == 32
    assert c_size(structs["stack_val"]) == layout.stack_val().size == 8 + 8 * 16


def test_decode_site_key_and_value():
    key = struct.pack("<IIQ", 4242, 0, 0xDEADBEEFCAFE)
    val = struct.pack("<qQQQ", 5 * 1009, 7 * 1009, 7, 2)
    assert layout.decode_key(key) == (4242, 0xDEADBEEFCAFE)
    s = layout.decode_site(val)
    assert (s.live_bytes, s.live_allocs, s.alloc_bytes, s.allocs, s.frees) == (5045, 5, 7063, 7, 2)


def test_negative_live_values_decode_signed():
    s = layout.decode_site(struct.pack("<qQQQ", -64, 0, 0, 1))
    assert s.live_bytes == -64 and s.live_allocs == -1


def test_decode_stack_respects_depth_and_clamps():
    raw = struct.pack("<II16Q", 3, 0, *range(1, 17))
    assert layout.decode_stack(raw) == (1, 2, 3)
    raw = struct.pack("<II4Q", 99, 0, 10, 20, 30, 40)  # a corrupt depth
    assert layout.decode_stack(raw, depth=4) == (10, 20, 30, 40)


def test_decode_alloc():
    assert layout.decode_alloc(struct.pack("<QIIQ", 32, 7, 0, 123)) == (32, 7, 123)


def test_sitecounts_add():
    a = layout.SiteCounts(1, 2, 3, 4, 5)
    assert a + a == layout.SiteCounts(2, 4, 6, 8, 10)
    assert layout.ZERO + a == a
