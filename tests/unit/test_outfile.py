"""The output file policy: links, other users' files, pipes, modes."""
import os
import stat

import pytest

from tracer.errors import HeaptraceError
from tracer.outfile import open_append, write_whole


def test_created_0600_appended_and_replaced(tmp_path):
    p = tmp_path / "a.csv"
    with open_append(str(p)) as f:
        f.write("x\n")
    with open_append(str(p)) as f:
        f.write("y\n")
    assert p.read_text() == "x\ny\n" and stat.S_IMODE(p.stat().st_mode) == 0o600
    write_whole(str(tmp_path / "b.png"), b"12345")
    write_whole(str(tmp_path / "b.png"), b"1")
    assert (tmp_path / "b.png").read_bytes() == b"1"


def test_symbolic_links_and_pipes_are_refused(tmp_path):
    target = tmp_path / "target"
    target.write_text("keep")
    (tmp_path / "link").symlink_to(target)
    (tmp_path / "dangling").symlink_to(tmp_path / "nothing")
    for name in ("link", "dangling"):
        with pytest.raises(HeaptraceError, match="symbolic link"):
            open_append(str(tmp_path / name))
    with pytest.raises(HeaptraceError, match="symbolic link"):
        write_whole(str(tmp_path / "link"), b"x")
    assert target.read_text() == "keep" and not (tmp_path / "nothing").exists()
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(HeaptraceError, match="not a regular file"):
        write_whole(str(tmp_path / "fifo"), b"x")
    with pytest.raises(HeaptraceError, match="directory"):
        write_whole(str(tmp_path), b"x")
    with pytest.raises(HeaptraceError, match="check the directory exists"):
        open_append(str(tmp_path / "no" / "such.csv"))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make files of another user")
def test_other_users_files_and_links_are_refused(tmp_path):
    os.chmod(tmp_path, 0o1777)
    theirs = tmp_path / "theirs.csv"
    theirs.write_text("")
    os.chown(theirs, 65534, 65534)
    with pytest.raises(HeaptraceError, match="belongs to uid 65534"):
        open_append(str(theirs))
    d = tmp_path / "real"
    d.mkdir()
    link = tmp_path / "dirlink"
    link.symlink_to(d)
    os.lchown(link, 65534, 65534)
    with pytest.raises(HeaptraceError, match="owned by uid 65534"):
        open_append(str(link / "out.csv"))
    mine = tmp_path / "mylink"
    mine.symlink_to(d)  # root's own link to a directory: followed
    open_append(str(mine / "out.csv")).close()
    assert (d / "out.csv").exists()
