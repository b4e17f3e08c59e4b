"""heaptrace diff: matching, sorting, totals, 80 columns, hostile names, bad input."""
import io
from datetime import datetime, timedelta, timezone

import pytest
from rich.console import Console

from tracer import cli, diffing
from tracer.csvread import CsvFile, open_csv
from tracer.exporters.sites_csv import SitesCsv
from tracer.layout import SiteCounts
from tracer.model import Process, Site, Snapshot
from tracer.views import report as view

T0 = datetime(2026, 11, 22, 4, 0, 0, tzinfo=timezone.utc)
EVIL = "[bold]x\x1b[31m\nevil"
EVIL_SITE = "=cmd()"
A = ("grow+0x1 [svc]", "main+0x9 [svc]")
B = ("shrink+0x2 [svc]", "main+0x9 [svc]")
C = ("same+0x3 [svc]", "main+0x9 [svc]")
GONE = ("gone+0x4 [svc]", "main+0x9 [svc]")
NEW = ("fresh+0x5 [svc]", "main+0x9 [svc]")
E = (EVIL_SITE, "[red]f[/red] [lib]", "main")


def site(pid, comm, frames, live, source="malloc"):
    return Site(pid, comm, source, frames[0], frames, SiteCounts(live, 1 if live else 0, live, 1, 0))


def session(tmp_path, name, comms, steps, t0=T0):
    """``steps``: per interval, {pid: {frames: live}}; ``comms``: pid -> name."""
    path = str(tmp_path / name)
    w = SitesCsv(path, host="h")
    for i, step in enumerate(steps):
        procs = {}
        for pid, held in step.items():
            p = Process(pid, comms[pid])
            p.sites += [site(pid, comms[pid], f, v) for f, v in held.items()]
            procs[pid] = p
        w.write(Snapshot(t0 + timedelta(seconds=i), procs))
    w.close()
    return path


def two_sessions(tmp_path):
    base = session(tmp_path, "base.csv", {100: "svc", 11: EVIL},
                   [{100: {A: 1000, B: 9000, C: 500, GONE: 300}, 11: {E: 64}}])
    new = session(tmp_path, "new.csv", {200: "svc", 21: EVIL},
                  [{200: {A: 1, B: 1, C: 1}, 21: {E: 1}},
                   {200: {A: 5000, B: 1000, C: 500, NEW: 2000}, 21: {E: 64}}],
                  t0=T0 + timedelta(days=1))
    return base, new


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def fits(text, width=80):
    return all(len(line) <= width for line in text.splitlines())


def test_two_sessions_are_matched_by_name_and_stack_and_sorted_by_absolute_change(tmp_path):
    base, new = two_sessions(tmp_path)
    d = diffing.diff_files(open_csv(base, "sites"), open_csv(new, "sites"))
    got = [(c.comm, c.callsite, c.base, c.new, c.change) for c in d.rows]
    assert got == [("svc", "shrink+0x2 [svc]", 9000, 1000, -8000),
                   ("svc", "grow+0x1 [svc]", 1000, 5000, 4000),
                   ("svc", "fresh+0x5 [svc]", 0, 2000, 2000),
                   ("svc", "gone+0x4 [svc]", 300, 0, -300)]
    assert all(c.pid is None for c in d.rows) and not d.by_pid
    assert (d.total_base, d.total_new, d.changed, d.sites) == (10864, 8564, 4, 6)
    assert (d.base.index, d.base.count, d.new.index, d.new.count) == (0, 1, 1, 2)


def test_processes_of_one_name_are_summed_across_sessions(tmp_path):
    base = session(tmp_path, "b.csv", {1: "w", 2: "w"}, [{1: {A: 100}, 2: {A: 100}}])
    new = session(tmp_path, "n.csv", {7: "w"}, [{7: {A: 150}}])
    d = diffing.diff_files(open_csv(base, "sites"), open_csv(new, "sites"))
    assert [(c.base, c.new) for c in d.rows] == [(200, 150)]


def test_one_session_between_two_intervals_by_pid(tmp_path):
    path = session(tmp_path, "one.csv", {100: "svc", 101: "svc"},
                   [{100: {A: 10, B: 50}, 101: {A: 10, B: 50}}, {100: {A: 20, B: 50}, 101: {A: 20, B: 50}},
                    {100: {A: 40, B: 10}, 101: {A: 40, B: 10}}])
    f = open_csv(path, "sites")
    d = diffing.diff_points(f, at_from="0", at_to="-1")
    assert d.by_pid and [(c.pid, c.callsite, c.change) for c in d.rows] == [
        (100, "shrink+0x2 [svc]", -40), (101, "shrink+0x2 [svc]", -40),
        (100, "grow+0x1 [svc]", 30), (101, "grow+0x1 [svc]", 30)]
    d = diffing.diff_points(f, at_from="1", at_to="2026-11-22T04:00:01.500Z", top=1)
    assert (d.base.index, d.new.index, d.changed, d.rows) == (1, 1, 0, [])
    d = diffing.diff_points(f, at_to="1", top=1)              # --from defaults to the first
    assert (d.base.index, d.rows[0].change, d.more, d.more_change) == (0, 10, 1, 10)


def test_small_chunks_give_the_same_diff(tmp_path, monkeypatch):
    base, new = two_sessions(tmp_path)
    whole = diffing.diff_files(open_csv(base, "sites"), open_csv(new, "sites"))
    real = CsvFile.chunks
    monkeypatch.setattr(CsvFile, "chunks", lambda self, columns=None, chunk_rows=0: real(self, columns, 2))
    small = diffing.diff_files(open_csv(base, "sites"), open_csv(new, "sites"))
    assert small.rows == whole.rows and small.total_new == whole.total_new


def test_plain_diff_fits_80_columns_with_a_total_line_and_literal_names(tmp_path, capsys):
    long = ("f" * 400, "main")
    base = session(tmp_path, "b.csv", {5: EVIL, 6: "x" * 300}, [{5: {E: 1}, 6: {A: 1, long: 1}}])
    new = session(tmp_path, "n.csv", {8: EVIL, 9: "x" * 300}, [{8: {E: 3 << 20}, 9: {A: 2048, long: 9}}])
    code, out, err = run(capsys, "diff", base, new, "--plain")
    assert code == 0 and err == "" and fits(out), out
    assert "\x1b" not in out and "[bold]x\\x1b[31m…: =cmd()" in out and "'=cmd()" not in out
    lines = out.splitlines()
    head = next(i for i, x in enumerate(lines) if x.split()[:3] == ["change", "base", "new"])
    assert lines[head + 1].split()[:5] == ["+3.0", "MiB", "1", "B", "3.0"]
    assert lines[-1].split()[:2] == ["+3.0", "MiB"] and "total (3 of 3 call sites changed)" in lines[-1]


def test_rich_diff_fits_80_columns_and_shows_markup_literally(tmp_path):
    base, new = two_sessions(tmp_path)
    d = diffing.diff_files(open_csv(base, "sites"), open_csv(new, "sites"), top=10)
    buf = io.StringIO()
    Console(file=buf, width=80, color_system=None, force_terminal=False).print(view.diff_renderable(d))
    out = buf.getvalue()
    assert fits(out) and "\x1b" not in out and "shrink+0x2 [svc]" in out and "total (4 of 6" in out
    assert "-7.8 KiB" in out and "+3.9 KiB" in out


def test_sites_of_one_call_site_are_told_apart_by_their_caller(tmp_path, capsys):
    one = ("alloc+0x1 [svc]", "a+0x1 [svc]", "main")
    two = ("alloc+0x1 [svc]", "b+0x2 [svc]", "main")
    base = session(tmp_path, "b.csv", {1: "svc"}, [{1: {one: 10, two: 10}}])
    new = session(tmp_path, "n.csv", {2: "svc"}, [{2: {one: 20, two: 40}}])
    code, out, _ = run(capsys, "diff", base, new)
    assert "svc: alloc+0x1 [svc] via b+0x2 [svc]" in out and "svc: alloc+0x1 [svc] via a+0x1 [svc]" in out


def test_more_line_and_truncated_file_warning(tmp_path, capsys):
    base, new = two_sessions(tmp_path)
    text = open(new).read()
    open(new, "w").write(text[:-5])
    code, out, err = run(capsys, "diff", base, new, "--top", "1")
    assert code == 0 and fits(out)
    assert err.count("\n") == 1 and err.startswith("heaptrace: warning:") and "cut short" in err
    assert "more call sites:" in out and "raise --top" in out


@pytest.mark.parametrize("extra, code, needle", [
    (["--from", "7"], 2, "--from 7: the file has 3 intervals"),
    (["--to", "yesterday"], 2, "--to 'yesterday' is not a time"),
    (["--from", "2020-01-01T00:00:00Z"], 2, "starts later"),
    (["--top", "0"], 2, "greater than 0"),
    ([], 2, "one file: give --from T"),
])
def test_bad_arguments_for_one_session(tmp_path, capsys, extra, code, needle):
    path = session(tmp_path, "one.csv", {1: "svc"}, [{1: {A: 1}}, {1: {A: 2}}, {1: {A: 3}}])
    got, out, err = run(capsys, "diff", path, *extra)
    assert got == code and err.startswith("heaptrace: error:") and needle in err, err


@pytest.mark.parametrize("second, needle", [
    ("hello\n", "is not a heaptrace CSV"),
    ("", "is not a heaptrace CSV"),
    ("schema_version,timestamp,host\n1,x,y\n", "columns missing"),
    ("HEADER", "holds no interval"),
    ("NEWER", "upgrade heaptrace"),
])
def test_bad_files(tmp_path, capsys, second, needle):
    base = session(tmp_path, "b.csv", {1: "svc"}, [{1: {A: 1}}])
    text = open(base).read()
    second = {"HEADER": text.splitlines(True)[0], "NEWER": text.replace("\n1,", "\n2,")}.get(second, second)
    other = tmp_path / "other.csv"
    other.write_text(second)
    got, out, err = run(capsys, "diff", base, str(other))
    assert got == 65 and err.startswith("heaptrace: error:") and needle in err, err


def test_help(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["diff", "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "--from" in out and "examples:" in out and fits(out)
