"""Tests for tracer.procmaps: maps parsing and procfs readers on a fake /proc."""
from __future__ import annotations

from pathlib import Path

import pytest

from tracer.procmaps import Mapping, ProcessGone, host_path, parse_maps, read_comm, read_maps

MAPS = """\
55d0c0a00000-55d0c0a01000 r--p 00000000 fd:01 1311 /usr/bin/leaky
55d0c0a01000-55d0c0a02000 r-xp 00001000 fd:01 1311 /usr/bin/leaky
55d0c1e5e000-55d0c1e7f000 rw-p 00000000 00:00 0                          [heap]
7f1a2b000000-7f1a2b021000 rw-p 00000000 00:00 0 
7f1a2c028000-7f1a2c1bd000 r-xp 00028000 103:02 4242                       /usr/lib/x86_64-linux-gnu/libc.so.6
7f1a2d000000-7f1a2d001000 r-xp 00000000 08:02 77 /opt/my app/lib foo.so
7f1a2e000000-7f1a2e001000 r-xp 00002000 08:02 78 /tmp/libgone.so (deleted)
7ffd7c5f0000-7ffd7c611000 rw-p 00000000 00:00 0                          [stack]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
"""


def test_parse_full_example() -> None:
    maps = parse_maps(MAPS)
    assert len(maps) == 9
    first = maps[0]
    assert first == Mapping(0x55D0C0A00000, 0x55D0C0A01000, "r--p", 0, (0xFD, 1), 1311, "/usr/bin/leaky")
    assert not first.executable and not first.anonymous and not first.deleted
    text = maps[1]
    assert text.executable and text.offset == 0x1000


def test_pseudo_and_anonymous_mappings() -> None:
    heap, anon = parse_maps(MAPS)[2:4]
    assert heap.path == "[heap]" and heap.anonymous and heap.inode == 0
    assert anon.path == "" and anon.anonymous and not anon.executable
    stack, vsyscall = parse_maps(MAPS)[7:]
    assert stack.path == "[stack]"
    assert vsyscall.path == "[vsyscall]" and vsyscall.executable and vsyscall.start == 0xFFFFFFFFFF600000


def test_large_device_major_is_hex() -> None:
    libc = parse_maps(MAPS)[4]
    assert libc.dev == (0x103, 2)
    assert libc.path == "/usr/lib/x86_64-linux-gnu/libc.so.6"


def test_path_with_spaces_kept_whole() -> None:
    m = parse_maps(MAPS)[5]
    assert m.path == "/opt/my app/lib foo.so"
    assert not m.deleted


def test_deleted_suffix_becomes_flag() -> None:
    m = parse_maps(MAPS)[6]
    assert m.path == "/tmp/libgone.so"
    assert m.deleted and not m.anonymous


def test_deleted_path_with_spaces() -> None:
    (m,) = parse_maps("1000-2000 r-xp 00000000 08:01 5 /a b/c (deleted)\n")
    assert (m.path, m.deleted) == ("/a b/c", True)


@pytest.mark.parametrize(
    "line",
    [
        "",
        "   ",
        "garbage",
        "1000-2000 r-xp 00000000 08:01",  # too few fields
        "1000 r-xp 00000000 08:01 5 /x",  # no range
        "zzzz-2000 r-xp 00000000 08:01 5 /x",  # not hex
        "2000-1000 r-xp 00000000 08:01 5 /x",  # end before start
        "1000-2000 rwx 00000000 08:01 5 /x",  # perms too short
        "1000-2000 r-xq 00000000 08:01 5 /x",  # bad perm char
        "1000-2000 r-xp 0000000g 08:01 5 /x",  # bad offset
        "1000-2000 r-xp 00000000 0801 5 /x",  # bad dev
        "1000-2000 r-xp 00000000 08:01 -5 /x",  # negative inode
        "1000-2000 r-xp 00000000 08:01 5a /x",  # inode is decimal
        "\x00\xff\ufffd binary junk \n\t",
    ],
)
def test_garbage_lines_skipped(line: str) -> None:
    assert parse_maps(line) == []
    good = "1000-2000 r-xp 00000000 08:01 5 /ok"
    assert [m.path for m in parse_maps(f"{good}\n{line}\n{good}")] == ["/ok", "/ok"]


def test_empty_text() -> None:
    assert parse_maps("") == []
    assert parse_maps("\n\n") == []


def make_proc(tmp_path: Path, pid: int, maps: bytes | None = None, comm: bytes | None = None) -> str:
    d = tmp_path / "proc" / str(pid)
    d.mkdir(parents=True)
    if maps is not None:
        (d / "maps").write_bytes(maps)
    if comm is not None:
        (d / "comm").write_bytes(comm)
    return str(tmp_path / "proc")


def test_read_maps(tmp_path: Path) -> None:
    proc = make_proc(tmp_path, 42, maps=MAPS.encode())
    assert read_maps(42, proc) == parse_maps(MAPS)


def test_read_maps_non_utf8_path_roundtrips(tmp_path: Path) -> None:
    raw = b"/tmp/lib\xff.so"
    proc = make_proc(tmp_path, 42, maps=b"1000-2000 r-xp 00000000 08:01 5 " + raw + b"\n")
    (m,) = read_maps(42, proc)
    assert m.path.encode("utf-8", "surrogateescape") == raw


def test_read_maps_zombie_is_empty(tmp_path: Path) -> None:
    proc = make_proc(tmp_path, 42, maps=b"")
    assert read_maps(42, proc) == []


def test_read_maps_vanished_pid(tmp_path: Path) -> None:
    proc = make_proc(tmp_path, 42, maps=MAPS.encode())
    with pytest.raises(ProcessGone) as info:
        read_maps(43, proc)
    assert info.value.pid == 43
    assert not isinstance(info.value, OSError)


def test_read_maps_missing_maps_file(tmp_path: Path) -> None:
    proc = make_proc(tmp_path, 42)
    with pytest.raises(ProcessGone):
        read_maps(42, proc)


def test_read_maps_real_self() -> None:
    import os

    maps = read_maps(os.getpid())
    assert any(m.executable and not m.anonymous for m in maps)


def test_read_comm(tmp_path: Path) -> None:
    proc = make_proc(tmp_path, 7, comm=b"my prog\n")
    assert read_comm(7, proc) == "my prog"


def test_read_comm_odd_bytes(tmp_path: Path) -> None:
    proc = make_proc(tmp_path, 7, comm=b" a\xffb\t\n")
    assert read_comm(7, proc) == " a\ufffdb\t"


def test_read_comm_only_one_newline_stripped(tmp_path: Path) -> None:
    proc = make_proc(tmp_path, 7, comm=b"x\n\n")
    assert read_comm(7, proc) == "x\n"


def test_read_comm_gone(tmp_path: Path) -> None:
    proc = make_proc(tmp_path, 7, comm=b"x\n")
    assert read_comm(8, proc) == ""
    assert read_comm(8, str(tmp_path / "nowhere")) == ""


def test_host_path() -> None:
    assert host_path(12, "/usr/lib/libc.so.6") == "/proc/12/root/usr/lib/libc.so.6"
    assert host_path(12, "/x y", proc="/p") == "/p/12/root/x y"


def test_smaps_rss_and_status_fields() -> None:
    from tracer.procmaps import parse_smaps_rss, parse_status_kb
    text = ("55d0c0000000-55d0c0021000 rw-p 00000000 00:00 0                          [heap]\n"
            "Size:                132 kB\nRss:                  12 kB\nPss: 12 kB\n"
            "7f0000000000-7f0004000000 rw-p 00000000 00:00 0 \nSize: 65536 kB\nRss: garbage\n"
            "7f1000000000-7f1000001000 r--p 00000000 08:01 42   /usr/lib/x 1.so\nRss: 4 kB\n"
            "not a line\nRss: 99 kB\n")
    rows = parse_smaps_rss(text)
    assert [(m.path, rss) for m, rss in rows] == [("[heap]", 12 * 1024), ("/usr/lib/x 1.so", 4096)]
    assert parse_status_kb("Name:\tx\nRssAnon:\t  1788 kB\n", "RssAnon") == 1788 * 1024
    assert parse_status_kb("RssAnon: x kB\n", "RssAnon") is None
    assert parse_status_kb("", "RssAnon") is None
