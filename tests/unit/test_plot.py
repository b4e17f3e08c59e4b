"""heaptrace plot: PNG and SVG from CSVs written by the real writers, hostile
names, a missing or damaged processes CSV, a truncated file, bad output
paths."""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone

import pytest

from tracer import cli, diagnose
from tracer.breakdown import HeapRss, breakdown
from tracer.commands import plot as plot_cmd
from tracer.csvread import open_csv, processes_path
from tracer.exporters.processes_csv import ProcessesCsv
from tracer.exporters.sites_csv import SitesCsv
from tracer.layout import SiteCounts
from tracer.model import Process, Site, Snapshot
from tracer.views import plot

KIB, MIB = 1 << 10, 1 << 20
T0 = datetime(2026, 11, 22, 4, 31, 26, 120000, tzinfo=timezone.utc)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SVG = "{http://www.w3.org/2000/svg}"


def site(pid, comm, callsite, frames, live, allocs, frees=0, source="malloc"):
    return Site(pid, comm, source, callsite, tuple(frames),
                SiteCounts(live, allocs - frees, live + frees * 64, allocs, frees))


def session(tmp_path, *, intervals=8, comm="svc", leak_name="remember_request+0x1c [svc]",
            other="cache_put+0x22 [svc]", pids=(100, 200), name="run.csv", processes=True):
    """Write a sites CSV (and its processes CSV) with the real writers: a
    leak growing every interval, a cache that levels off, a second process
    with an mmap site; findings from interval 4 on."""
    path = str(tmp_path / name)
    sw = SitesCsv(path, host="h")
    pw = ProcessesCsv(processes_path(path), host="h") if processes else None
    for i in range(intervals):
        procs, memory = {}, {}
        for n, pid in enumerate(pids):
            leak = 1031 * 50 * (i + 1)
            cache = 2048 * min(64, 20 * (i + 1))
            sites = [site(pid, comm, leak_name, [leak_name, "handle+0x9 [svc]", "main+0x30 [svc]"],
                          leak, 50 * (i + 1)),
                     site(pid, comm, other, [other, "handle+0x9 [svc]", "main+0x30 [svc]"], cache,
                          min(64, 20 * (i + 1)))]
            if n == 1:
                sites.append(site(pid, comm, "new_worker_stack+0x4 [svc]", ["new_worker_stack+0x4 [svc]"],
                                  256 * KIB * (i + 1), i + 1, source="mmap"))
            procs[pid] = Process(pid, comm, exited=(n == 1 and i == intervals - 1), sites=sites)
            heap = leak + cache
            memory[pid] = breakdown(rss_anon=heap + 3 * MIB + n * MIB, rss=HeapRss(brk_size=4 * MIB,
                                    brk_rss=heap + 2 * MIB), probe_live=heap, census=None,
                                    mmap_live=256 * KIB * (i + 1) if n == 1 else 0, given_back=0)
        findings = [diagnose.Finding("leak", pids[0], leak_name, 1.0, "", "")] if i >= 4 else []
        if i >= 6 and len(pids) > 1:
            findings.append(diagnose.Finding("mmap-leak", pids[1], "new_worker_stack", 1.0, "", ""))
        snap = Snapshot(T0 + timedelta(seconds=i), procs, memory=memory, findings=findings)
        sw.write(snap)
        if pw:
            pw.write(snap)
    sw.close()
    if pw:
        pw.close()
    return path


def run_plot(*argv) -> int:
    return cli.main(["plot", *argv])


def svg_texts(path) -> list[str]:
    root = ET.parse(path).getroot()
    assert root.tag == f"{SVG}svg"
    return ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]


def test_png_from_both_csvs(tmp_path, capsys):
    src = session(tmp_path)
    out = tmp_path / "out.png"
    assert run_plot(src, "-o", str(out)) == 0
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    assert os.stat(out).st_mode & 0o777 == 0o600
    err = capsys.readouterr().err
    assert "wrote" in err and "2 process panels" in err and "Traceback" not in err


def test_svg_has_axis_labels_call_sites_and_findings(tmp_path):
    src = session(tmp_path)
    out = tmp_path / "out.svg"
    assert run_plot(src, "-o", str(out), "--top", "3") == 0
    texts = svg_texts(out)
    joined = "\n".join(texts)
    assert "live bytes" in texts and "bytes" in texts
    assert any(t.startswith("time since 04:31:26 UTC (s)") for t in texts), texts
    assert any("remember_request+0x1c [svc]" in t for t in texts), texts
    assert any("new_worker_stack+0x4 [svc] (mmap)" in t for t in texts), texts
    assert "run.csv" in joined and "2026-11-22 04:31:26 to 04:31:33 UTC (7.0 s, 8 intervals)" in joined
    assert "heap live" in texts and "kept by the allocator" in texts and "RSS anon" in texts
    assert any(t.strip().startswith("leak") for t in texts), texts       # finding codes marked
    assert any("mmap-leak" in t for t in texts), texts
    assert any(t.endswith("MiB") or t.endswith("KiB") for t in texts), texts  # binary units
    assert "top 3 of 5 by peak live bytes" in joined


def test_top_ranks_by_peak_and_pid_filters(tmp_path):
    src = session(tmp_path)
    f = open_csv(src, "sites")
    s = plot.load_sites(f, None, 2)
    assert [ln.callsite for ln in s.lines] == ["new_worker_stack+0x4 [svc]", "remember_request+0x1c [svc]"]
    assert s.lines[0].values == [256 * KIB * (i + 1) for i in range(8)]
    assert s.lines[1].values == [1031 * 50 * (i + 1) for i in range(8)]
    one = plot.load_sites(f, {100}, 8)
    assert {ln.pid for ln in one.lines} == {100} and one.pids == [100] and one.sites == 2
    p = plot.load_processes(open_csv(processes_path(src), "processes"), None, 1)
    assert p.total == 2 and [x.pid for x in p.shown] == [200]
    assert p.shown[0].findings.keys() == {"mmap-leak"} and p.shown[0].exited_at is not None


def test_stacks_of_one_call_site_are_summed(tmp_path):
    path = str(tmp_path / "s.csv")
    w = SitesCsv(path, host="h")
    for i in range(3):
        sites = [site(7, "svc", "f+0x1 [a]", ["f+0x1 [a]", "g+0x2 [a]"], 100 * (i + 1), i + 1),
                 site(7, "svc", "f+0x1 [a]", ["f+0x1 [a]", "h+0x3 [a]"], 10 * (i + 1), i + 1)]
        w.write(Snapshot(T0 + timedelta(seconds=i), {7: Process(7, "svc", sites=sites)}))
    w.close()
    s = plot.load_sites(open_csv(path, "sites"), None, 8)
    assert len(s.lines) == 1 and s.lines[0].values == [110, 220, 330] and s.sites == 1


HOSTILE = ["$x$", "\x1b[31mred\x1b[0m", "[bold]b[/bold]", "two\nlines", "a$b", r"\$\frac{1}{0}$",
           "_hidden", "\u202eevil", "<script>&amp;"]


@pytest.mark.parametrize("fmt", ["png", "svg"])
def test_hostile_names_do_not_crash_and_are_shown_plainly(tmp_path, fmt):
    src = session(tmp_path, comm="$x$\x1b[31m[bold]\n", pids=(100, 200),
                  leak_name="$x$\x1b[31m[bold]\nf<$a$>(int)+0x1 [m$o$d]", other="_start+0x2 [x\n$]",
                  name="$run$.csv")
    out = tmp_path / f"o.{fmt}"
    assert run_plot(src, "-o", str(out)) == 0
    if fmt == "svg":
        texts = svg_texts(out)
        assert not any("\x1b" in t or "\n" in t for t in texts)
        assert any(t.startswith("$x$[31m[bold] f<$a$>(int)+0x1 [m$o$d]") for t in texts), texts
        assert any(t.startswith("_start+0x2 [x $]") for t in texts), texts  # an underscore is not hidden
        assert any("$run$.csv" in t for t in texts)
    else:
        assert out.read_bytes().startswith(PNG_MAGIC)


@pytest.mark.parametrize("name", HOSTILE)
def test_label_helpers_strip_controls_and_escape_dollars(name):
    for s in (plot.text(name), plot.short_callsite(name + "+0x1 [m]")):
        assert not any(ord(c) < 0x20 or 0x7f <= ord(c) < 0xa0 or 0x202a <= ord(c) <= 0x202e for c in s)
        assert s.count("$") == s.count(r"\$")  # no unescaped dollar: never mathtext


def test_short_callsite_keeps_offset_and_module():
    long = ("std::vector<std::pair<std::string, int>, std::allocator<std::pair<std::string, int> > >"
            "::_M_realloc_insert<int const&>(__gnu_cxx::__normal_iterator<int*, std::vector<int> >, int const&)"
            "+0x5a [libfoo.so.1]")
    s = plot.short_callsite(long)
    assert s == "std::vector<…>::_M_realloc_insert<…>(…)+0x5a [libfoo.so.1]"
    assert plot.short_callsite("operator<<(std::ostream&)" + "x" * 80 + "+0x1 [a]").endswith("…+0x1 [a]")
    assert len(plot.short_callsite("f" * 500 + "+0x1 [" + "m" * 300 + "]")) <= plot.LABEL_WIDTH
    assert plot.short_callsite("0x7f00dead [anon]") == "0x7f00dead [anon]"


def test_binary_ticks():
    ticks, top, unit, dec = plot.binary_ticks(300 * KIB)
    assert unit == "KiB" and top >= 300 * KIB and ticks[0] == 0 and all(t % KIB == 0 for t in ticks)
    assert 3 <= len(ticks) <= 8
    assert plot.binary_ticks(1.5 * KIB)[2] == "KiB" and plot.binary_ticks(3 * MIB * 1024)[2] == "GiB"
    assert plot.binary_ticks(0)[1] > 0 and plot.binary_ticks(5)[2] == "B"
    fmt = plot._format_bytes("MiB", 1)
    assert fmt(0) == "0" and fmt(1.5 * MIB) == "1.5 MiB"


def test_missing_processes_csv_plots_the_call_sites_and_says_so(tmp_path, capsys):
    src = session(tmp_path, processes=False)
    out = tmp_path / "o.svg"
    assert run_plot(src, "-o", str(out)) == 0
    err = capsys.readouterr().err
    assert "run.processes.csv is missing" in err and "call sites only" in err
    texts = svg_texts(out)
    assert "live bytes" in texts and "heap live" not in texts


def test_damaged_processes_csv_is_a_note_not_a_failure(tmp_path, capsys):
    src = session(tmp_path)
    with open(processes_path(src), "w") as f:
        f.write("not,a,csv\n")
    assert run_plot(src, "-o", str(tmp_path / "o.png")) == 0
    assert "is not a heaptrace CSV" in capsys.readouterr().err


def test_truncated_csv_leaves_the_cut_line_out(tmp_path, capsys):
    src = session(tmp_path)
    with open(src, "rb+") as f:
        f.truncate(os.path.getsize(src) - 7)
    out = tmp_path / "o.png"
    assert run_plot(src, "-o", str(out)) == 0
    assert out.read_bytes().startswith(PNG_MAGIC)
    assert "cut short" in capsys.readouterr().err


@pytest.mark.parametrize("argv,msg,rc", [
    (["-o", "x.pdf"], "give a name ending in .png or .svg", 2),
    (["-o", "x"], "no extension", 2),
    (["-o", "x.png", "--top", "0"], "out of range", 2),
    (["-o", "x.png", "--pid", "abc"], "not a process ID", 2),
    (["-o", "x.png", "--pid", "999"], "no rows for pid 999", 65),
])
def test_usage_errors(tmp_path, capsys, argv, msg, rc):
    src = session(tmp_path)
    argv = [a if not a.startswith("x.") and a != "x" else str(tmp_path / a) for a in argv]
    assert run_plot(src, *argv) == rc
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err


def test_not_a_sites_csv(tmp_path, capsys):
    src = session(tmp_path)
    assert run_plot(processes_path(src), "-o", str(tmp_path / "o.png")) == 65
    assert "looks like a processes CSV" in capsys.readouterr().err
    assert run_plot(str(tmp_path / "none.csv"), "-o", str(tmp_path / "o.png")) == 65
    empty = tmp_path / "empty.csv"
    SitesCsv(str(empty)).close()
    assert run_plot(str(empty), "-o", str(tmp_path / "o.png")) == 65
    assert "no interval" in capsys.readouterr().err


def test_output_symlink_is_refused_and_its_target_untouched(tmp_path, capsys):
    src = session(tmp_path)
    target = tmp_path / "victim"
    target.write_text("keep")
    link = tmp_path / "o.png"
    link.symlink_to(target)
    assert run_plot(src, "-o", str(link)) == 1
    assert "symbolic link" in capsys.readouterr().err
    assert target.read_text() == "keep"


def test_output_not_a_regular_file_or_missing_dir(tmp_path, capsys):
    src = session(tmp_path)
    fifo = tmp_path / "p.svg"
    os.mkfifo(fifo)
    assert run_plot(src, "-o", str(fifo)) == 1
    assert "not a regular file" in capsys.readouterr().err
    assert run_plot(src, "-o", str(tmp_path / "nodir" / "o.png")) == 1
    assert "check the directory exists" in capsys.readouterr().err


def test_existing_output_is_replaced_whole(tmp_path):
    src = session(tmp_path)
    out = tmp_path / "o.svg"
    out.write_bytes(b"x" * 5_000_000)
    assert run_plot(src, "-o", str(out)) == 0
    ET.parse(out)  # no leftover bytes of the old file


def test_write_file_mode(tmp_path):
    p = tmp_path / "w.png"
    old = os.umask(0)
    try:
        plot_cmd.write_file(str(p), b"abc")
    finally:
        os.umask(old)
    assert p.read_bytes() == b"abc" and os.stat(p).st_mode & 0o777 == 0o600


def test_one_interval_and_nothing_live(tmp_path):
    path = str(tmp_path / "s.csv")
    w = SitesCsv(path, host="h")
    w.write(Snapshot(T0, {7: Process(7, "svc", sites=[site(7, "svc", "f+0x1 [a]", ["f+0x1 [a]"], 0, 3, 3)])}))
    w.close()
    out = tmp_path / "o.svg"
    assert run_plot(path, "-o", str(out)) == 0
    assert "no call site held memory" in svg_texts(out)


def test_help_mentions_formats(capsys):
    with pytest.raises(SystemExit):
        run_plot("--help")
    out = capsys.readouterr().out
    assert "-o OUT.png|OUT.svg" in out and "--top N" in out and "--pid" in out


@pytest.mark.parametrize("rows", [1, 2, 3, 5, 7])
def test_same_lines_whatever_the_chunk_size(tmp_path, rows):
    import functools

    from tracer.csvread import CsvFile
    src = session(tmp_path)
    whole = plot.load_sites(open_csv(src, "sites"), None, 8)
    f = open_csv(src, "sites")
    f.chunks = functools.partial(CsvFile.chunks, f, chunk_rows=rows)
    cut = plot.load_sites(f, None, 8)
    assert [(ln.pid, ln.callsite, ln.peak, ln.values) for ln in cut.lines] == \
        [(ln.pid, ln.callsite, ln.peak, ln.values) for ln in whole.lines]
    assert cut.times == whole.times and cut.sites == whole.sites == 5


def test_an_interval_without_rows_of_a_pid_is_zero_for_it(tmp_path):
    path = str(tmp_path / "s.csv")
    w = SitesCsv(path, host="h")
    live = {0: 500, 2: 700}
    for i in range(4):
        procs = {8: Process(8, "b", sites=[site(8, "b", "g+0x1 [b]", ["g+0x1 [b]"], 10, 1)])}
        if i in live:  # pid 7's site is gone (no row) in interval 1, and after 2
            procs[7] = Process(7, "a", sites=[site(7, "a", "f+0x1 [a]", ["f+0x1 [a]"], live[i], 1)])
        w.write(Snapshot(T0 + timedelta(seconds=i), procs))
    w.close()
    s = plot.load_sites(open_csv(path, "sites"), {7}, 8)
    assert len(s.times) == 3 and s.lines[0].values == [500, 0, 700]


def test_a_process_with_no_call_site_rows_still_gets_its_panel(tmp_path):
    """allocator retention from before attach: the processes CSV has the
    process, the sites CSV does not."""
    path = str(tmp_path / "r.csv")
    sw, pw = SitesCsv(path, host="h"), ProcessesCsv(processes_path(path), host="h")
    for i in range(3):
        snap = Snapshot(T0 + timedelta(seconds=i), {9: Process(9, "ret")},
                        memory={9: breakdown(rss_anon=190 * MIB, rss=HeapRss(brk_size=192 * MIB,
                                             brk_rss=190 * MIB), probe_live=0, census=None)},
                        findings=[diagnose.Finding("allocator-retention", 9, "ret", 1.0, "", "")])
        sw.write(snap)
        pw.write(snap)
    sw.close()
    pw.close()
    out = tmp_path / "o.svg"
    assert run_plot(path, "-o", str(out), "--pid", "9") == 0
    texts = svg_texts(out)
    assert "no call site held memory" in texts and any(t.startswith("ret (pid 9)") for t in texts)
    assert "allocator-retention" in [t.strip() for t in texts]
    assert any("3 intervals" in t for t in texts)


def test_no_breakdown_panels_still_marks_findings(tmp_path):
    src = session(tmp_path)
    out = tmp_path / "o.svg"
    assert run_plot(src, "-o", str(out), "--processes", "0") == 0
    texts = [t.strip() for t in svg_texts(out)]
    assert "heap live" not in texts and "leak (pid 100)" in texts


def test_equal_peaks_rank_the_growing_call_site_first(tmp_path):
    path = str(tmp_path / "s.csv")
    w = SitesCsv(path, host="h")
    for i, (up, down) in enumerate([(0, 100), (50, 50), (100, 0)]):
        sites = [site(7, "svc", "down+0x1 [a]", ["down+0x1 [a]"], down, 1, 0 if down else 1),
                 site(7, "svc", "up+0x1 [a]", ["up+0x1 [a]"], up, 1 if up else 0)]
        w.write(Snapshot(T0 + timedelta(seconds=i), {7: Process(7, "svc", sites=sites)}))
    w.close()
    s = plot.load_sites(open_csv(path, "sites"), None, 1)
    assert [ln.callsite for ln in s.lines] == ["up+0x1 [a]"] and s.lines[0].values == [0, 50, 100]
