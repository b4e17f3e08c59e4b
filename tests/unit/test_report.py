"""heaptrace report: the numbers, 80 columns, hostile names, bad input."""
import dataclasses
import io
import os
from datetime import datetime, timedelta, timezone

import pytest
from rich.console import Console

from tracer import cli, diagnose, reporting
from tracer.breakdown import HeapRss, breakdown
from tracer.csvread import CsvFile, open_csv
from tracer.exporters.processes_csv import ProcessesCsv
from tracer.exporters.sites_csv import SitesCsv
from tracer.layout import SiteCounts
from tracer.model import Process, Site, Snapshot
from tracer.views import report as view

T0 = datetime(2026, 11, 22, 4, 0, 0, tzinfo=timezone.utc)
EVIL = "[bold]x\x1b[31m\nevil"          # markup, an escape sequence, a newline
EVIL_SITE = "=cmd()"                    # a spreadsheet formula
EVIL_FRAME = "[red]f[/red]+0x1 [lib\x1b]0;t\x07]"
LEAK = "remember+0x15 [svc]"
CACHE = "cache_put+0x40 [svc]"
STACK_LEAK = ("remember+0x15 [svc]", "handle+0x23 [svc]", "main+0x87 [svc]")
STACK_CACHE = ("cache_put+0x40 [svc]", "handle+0x1c [svc]", "main+0x87 [svc]")
STACK_MMAP = ("new_stack+0x29 [svc]", "main+0x85 [svc]")
STACK_EVIL = (EVIL_SITE, EVIL_FRAME, "main+0x1 [evil]")


def counts(live, n=1):
    return SiteCounts(live, n, live, n, 0)


def write_session(tmp_path, intervals=5, name="run.csv", processes=True, pid=10, evil_pid=20):
    """A session with the real writers: pid 10 'svc' leaks 1000 B a second at
    remember(), holds a 5000 B cache, maps 1 MiB more each second; pid 20 has
    hostile names; a 'leak' finding from interval 2 on, 'arena-bloat' at 1."""
    path = str(tmp_path / name)
    sites = SitesCsv(path, host="h")
    procs = ProcessesCsv(path[:-4] + ".processes.csv", host="h") if processes else None
    for i in range(intervals):
        svc = Process(pid, "svc")
        svc.sites += [Site(pid, "svc", "malloc", LEAK, STACK_LEAK, counts(1000 * (i + 1), i + 1)),
                      Site(pid, "svc", "malloc", CACHE, STACK_CACHE, counts(5000, 5)),
                      Site(pid, "svc", "mmap", "new_stack+0x29 [svc]", STACK_MMAP, counts((i + 1) << 20))]
        evil = Process(evil_pid, EVIL)
        evil.sites.append(Site(evil_pid, EVIL, "malloc", EVIL_SITE, STACK_EVIL, counts(64)))
        mem = {pid: dataclasses.replace(
                   breakdown(rss_anon=(100 + 10 * i) << 10, rss=HeapRss(1 << 20, 300 << 10, 0, 0),
                             probe_live=6000 + 1000 * i, census=None, mmap_live=(i + 1) << 20,
                             given_back=512 * i),
                   arenas=2 + (i == 3), trimmable=4096),
               evil_pid: breakdown(rss_anon=None, rss=HeapRss(), probe_live=64, census=None)}
        findings = [diagnose.Finding("leak", pid, LEAK, 1000.0, "e", "a")] if i >= 2 else []
        if i == 1:
            findings.append(diagnose.Finding("arena-bloat", pid, "svc", 1.0, "e", "a"))
        snap = Snapshot(T0 + timedelta(seconds=i), {pid: svc, evil_pid: evil}, memory=mem, findings=findings)
        sites.write(snap)
        if procs:
            procs.write(snap)
    sites.close()
    if procs:
        procs.close()
    return path


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def fits(text, width=80):
    return all(len(line) <= width for line in text.splitlines())


def build(path, **kw):
    pp = path[:-4] + ".processes.csv"
    return reporting.build(open_csv(path, "sites"), open_csv(pp, "processes") if os.path.exists(pp) else None, **kw)


def test_breakdown_findings_and_sites_numbers(tmp_path):
    r = build(write_session(tmp_path))
    assert len(r.times) == 5 and r.sites == 4 and r.total_processes == 2
    svc = next(p for p in r.processes if p.pid == 10)
    assert svc.rows == 5 and svc.comm == "svc" and not svc.exited
    rss = svc.memory["rss_anon_bytes"]
    assert (rss.first, rss.last, rss.peak) == (100 << 10, 140 << 10, 140 << 10)
    heap = svc.memory["heap_live_bytes"]
    assert (heap.first, heap.last, heap.peak) == (6000, 10000, 10000)
    kept = svc.memory["allocator_retained_bytes"]
    assert (kept.first, kept.last) == ((300 << 10) - 6000, (300 << 10) - 10000)
    assert svc.memory["mmap_live_bytes"].last == 5 << 20
    assert (svc.given_back, svc.arenas, svc.arenas_peak, svc.trimmable) == (2048, 2, 3, 4096)
    assert [(f.code, f.intervals) for f in svc.findings] == [("leak", (2, 3, 4)), ("arena-bloat", (1,))]
    assert svc.live_end == {"malloc": 5000 + 5000, "mmap": 5 << 20}
    evil = next(p for p in r.processes if p.pid == 20)
    assert evil.comm == EVIL and evil.memory["rss_anon_bytes"].last is None and evil.findings == []
    # the processes are ranked by peak RSS: svc first (the other's is unknown)
    assert [p.pid for p in r.processes] == [10, 20]
    top = [(s.pid, s.label, s.live) for s in r.top_live]
    assert top == [(10, "new_stack+0x29 [svc] (mmap)", 5 << 20), (10, CACHE, 5000), (10, LEAK, 5000),
                   (20, EVIL_SITE, 64)]
    growth = {s.label: s.rate for s in r.top_growth}
    assert growth == {"new_stack+0x29 [svc] (mmap)": float(1 << 20), LEAK: 1000.0}
    leak = next(s for s in r.top_growth if s.label == LEAK)
    assert leak.trend == "▂▄▅▇█" and leak.growth == 4000 and leak.peak == 5000
    assert next(s for s in r.top_live if s.label == CACHE).trend == "█████"


def test_reading_in_small_chunks_gives_the_same_report(tmp_path, monkeypatch):
    path = write_session(tmp_path, intervals=7)
    whole = build(path)
    real = CsvFile.chunks
    monkeypatch.setattr(CsvFile, "chunks", lambda self, columns=None, chunk_rows=0: real(self, columns, 3))
    small = build(path)
    assert small.top_live == whole.top_live and small.top_growth == whole.top_growth
    assert [dataclasses.asdict(p) for p in small.processes] == [dataclasses.asdict(p) for p in whole.processes]


def test_pid_and_top(tmp_path):
    path = write_session(tmp_path)
    r = build(path, pid=20)
    assert [p.pid for p in r.processes] == [20] and [s.pid for s in r.top_live] == [20] and r.top_growth == []
    r = build(path, top=1)
    assert len(r.processes) == 1 and r.more_processes == 1 and len(r.top_live) == 1


def test_sparkline_and_runs():
    assert reporting.sparkline([0, 5, 10]) == " ▄█"
    assert reporting.sparkline([0, 0]) == "  "
    s = reporting.sparkline(list(range(100)), width=10)
    assert len(s) == 10 and s[-1] == "█" and s[0] == "▁"
    assert reporting.runs([0, 1, 2, 5, 7, 8]) == [(0, 2), (5, 5), (7, 8)]
    assert reporting.caller("main;handle+0x1;f+0x2", "f+0x2") == "handle+0x1"


def test_plain_report_fits_80_columns_and_shows_hostile_names_literally(tmp_path, capsys):
    path = write_session(tmp_path)
    code, out, err = run(capsys, "report", path, "--plain")
    assert code == 0 and err == ""
    assert fits(out), [line for line in out.splitlines() if len(line) > 80]
    assert "\x1b" not in out and "\x07" not in out and "[bold]x\\x1b[31m\\x0aevil" in out
    assert "=cmd()" in out and "'=cmd()" not in out
    words = " ".join(out.split())
    for needle in ("pid 10 svc: 5 intervals", "RSS (anon)", "100.0 KiB", "140.0 KiB", "2 arenas (peak 3)",
                   "given back 2.0 KiB since attach", "malloc_trim(0) would return 4.0 KiB",
                   "findings: leak in intervals 2-4 (3 of 5)", "arena-bloat in interval 1 (1 of 5)",
                   "new_stack+0x29 [svc] (mmap)", "+1000 B/s", "+1.0 MiB/s", "findings: none"):
        assert needle in words, needle
    lines = out.splitlines()
    first_site = lines.index(next(x for x in lines if x.startswith("top call sites"))) + 2
    assert lines[first_site].split()[:3] == ["10", "5.0", "MiB"]


def test_rich_report_fits_80_columns_and_shows_markup_literally(tmp_path):
    r = build(write_session(tmp_path))
    buf = io.StringIO()
    Console(file=buf, width=80, color_system=None, force_terminal=False).print(view.report_renderable(r))
    out = buf.getvalue()
    assert fits(out)
    assert "\x1b" not in out and "[bold]x\\x1b[31m" in out and "[red]f[/red]" not in out  # a frame, not shown
    assert "=cmd()" in out and "2 arenas (peak 3)" in out and "leak in intervals 2-4" in out


def test_long_names_are_cut_to_80_columns(tmp_path, capsys):
    path = str(tmp_path / "long.csv")
    w = SitesCsv(path, host="h")
    p = Process(7, "c" * 300)
    name = "f" * 150 + " " + "g" * 150 + " [lib]"
    p.sites.append(Site(7, p.comm, "malloc", name, (name, "main"), counts(10)))
    w.write(Snapshot(T0, {7: p}))
    w.close()
    code, out, _ = run(capsys, "report", path)
    assert code == 0 and fits(out)
    assert "no processes CSV beside it" in out


def test_without_the_processes_csv_it_says_so_in_one_line(tmp_path, capsys):
    path = write_session(tmp_path, processes=False)
    code, out, err = run(capsys, "report", path, "--pid", "10")
    assert code == 0 and err == ""
    assert sum("processes CSV" in line for line in out.splitlines()) == 1
    assert "RSS (anon)" not in out and "call sites: 3; live at the last interval: 9.8 KiB malloc, 5.0 MiB mmap" in out


def test_a_bad_processes_csv_is_left_out_with_its_reason(tmp_path, capsys):
    path = write_session(tmp_path)
    pp = path[:-4] + ".processes.csv"
    text = open(pp).read().replace("\n2,", "\n3,", 1)
    open(pp, "w").write(text)
    code, out, _ = run(capsys, "report", path)
    assert code == 0 and "processes CSV not used" in out and "upgrade heaptrace" in out


def test_a_truncated_file_is_reported_with_one_warning(tmp_path, capsys):
    path = write_session(tmp_path, pid=30, evil_pid=20)      # the last row: pid 30's
    text = open(path).read()
    open(path, "w").write(text[:-7])                        # the last row cut short
    code, out, err = run(capsys, "report", path, "--plain")
    assert code == 0 and fits(out)
    assert err.count("\n") == 1 and err.startswith("heaptrace: warning:") and "cut short" in err
    r = build(path)
    mmap = next(s for s in r.top_growth if s.source == "mmap")  # its last row was the cut one
    assert mmap.live == 0 and mmap.trend == "▂▄▆█ " and mmap.growth == 3 << 20


def _csv(tmp_path, text, name="bad.csv"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize("make, extra, code, needle", [
    (lambda t: _csv(t, "hello,world\n1,2\n"), [], 65, "is not a heaptrace CSV"),
    (lambda t: _csv(t, ""), [], 65, "is not a heaptrace CSV"),
    (lambda t: _csv(t, "schema_version,timestamp,host,pid\n1,x,h,1\n"), [], 65, "columns missing"),
    (lambda t: _csv(t, open(write_session(t)).readline()), [], 65, "holds no interval"),
    (lambda t: write_session(t)[:-4] + ".processes.csv", [], 65, "looks like a processes CSV"),
    (lambda t: _csv(t, open(write_session(t)).read().replace("\n1,", "\n3,")), [], 65, "upgrade heaptrace"),
    (lambda t: _csv(t, open(write_session(t)).read() + "x,2026-11-22T04:00:09.000Z,h,1,c,malloc,f,f,1,1,1,1,0\n"),
     [], 65, "damaged"),
    (lambda t: str(t / "missing.csv"), [], 65, "no such file"),
    (lambda t: str(t), [], 65, "is a directory"),
    (write_session, ["--pid", "99"], 2, "--pid 99: no such process"),
    (write_session, ["--pid", "x"], 2, "not a whole number"),
    (write_session, ["--top", "0"], 2, "greater than 0"),
    (write_session, ["--at", "3"], 2, "unrecognized"),
])
def test_bad_input_says_why_without_a_traceback(tmp_path, capsys, make, extra, code, needle):
    got, out, err = run(capsys, "report", make(tmp_path), *extra)
    assert got == code and err.startswith("heaptrace: error:") and needle in err, err


def test_help(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["report", "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "examples:" in out and "--pid" in out and "--top" in out and fits(out)
