"""Views rendered at a fixed width, with hostile names."""
import io
from datetime import datetime, timezone

from rich.console import Console

from tracer.layout import SiteCounts
from tracer.model import ResolvedStack, build_snapshot
from tracer.views import live, plain
from tracer.views.fmt import human, safe

T0 = datetime(2026, 11, 22, 4, 0, 0, tzinfo=timezone.utc)


def snap(comm="svc", callsite="leak+0x9 [svc]", live_n=23, lost=None, exited=()):
    return build_snapshot(T0, [(10, 1, SiteCounts(live_n * 1009, live_n, live_n * 1009, live_n, 0))],
                          {(10, 1): ResolvedStack((callsite, "main+0x1 [svc]"), callsite)},
                          {10: comm}, exited=exited, stats=lost)


def render_live(s, prev=None, width=80):
    buf = io.StringIO()
    Console(file=buf, width=width, color_system=None, force_terminal=False).print(live.renderable(s, prev))
    return buf.getvalue()


def render_plain(s, prev=None):
    buf = io.StringIO()
    plain.render(s, prev, buf)
    return buf.getvalue()


def test_human_sizes():
    assert human(0) == "0 B" and human(1023) == "1023 B" and human(1536) == "1.5 KiB"
    assert human(3 << 20, signed=True) == "+3.0 MiB" and human(-2048, signed=True) == "-2.0 KiB"
    assert human(0, signed=True) == "±0 B"


def test_live_view_fits_80_columns_and_shows_growth():
    out = render_live(snap(live_n=29), snap(live_n=23))
    assert all(len(line) <= 80 for line in out.splitlines())
    assert "leak+0x9 [svc]" in out and "+5.9 KiB" in out and "28.6 KiB" in out


def test_plain_view_fits_80_columns_even_with_long_names():
    out = render_plain(snap(comm="x" * 300, callsite="f" * 500 + " [lib]"))
    assert all(len(line) <= 80 for line in out.splitlines()), out


def test_markup_and_escapes_are_shown_literally():
    evil = "[bold red]pwn[/] \x1b]0;title\x07\x1b[2J"
    for out in (render_live(snap(comm=evil, callsite=evil)), render_plain(snap(comm=evil, callsite=evil))):
        assert "\x1b" not in out and "\x07" not in out
        assert "\\x1b" in out


def test_markup_is_not_interpreted_in_live_view():
    out = render_live(snap(callsite="[bold]site[/bold]"))
    assert "[bold]site[/bold]" in out


def test_safe_bounds_length_and_escapes_newlines():
    assert safe("a\nb") == "a\\x0ab"
    assert len(safe("y" * 5000)) == 200


def test_lost_data_is_shown_never_silent():
    s = snap(lost={"blocks not tracked (allocation map full: raise --max-allocs)": 17})
    assert "LOST: 17 blocks not tracked" in render_plain(s)
    assert "LOST: 17 blocks not tracked" in render_live(s)
    buf = io.StringIO()
    plain.render_summary(s, buf)
    assert "LOST: 17" in buf.getvalue() and "nothing lost" not in buf.getvalue()


def test_exited_process_is_marked():
    assert "[exited]" in render_plain(snap(exited=[10]))
    assert "[exited]" in render_live(snap(exited=[10]))


def test_summary_names_the_stack_of_the_top_site():
    buf = io.StringIO()
    plain.render_summary(snap(), buf, seconds=3.0)
    out = buf.getvalue()
    assert "heaptrace summary after 3.0 s" in out and "main+0x1 [svc]" in out and "nothing lost" in out


def test_live_view_shows_the_breakdown_and_findings_literally():
    from io import StringIO
    from rich.console import Console
    from tracer import diagnose
    from tracer.breakdown import HeapRss, breakdown
    from tracer.model import Process, Snapshot
    from tracer.views.live import renderable
    from datetime import datetime, timezone
    s = Snapshot(datetime(2026, 11, 22, tzinfo=timezone.utc), {7: Process(7, "svc")})
    s.memory[7] = breakdown(rss_anon=200 << 20, rss=HeapRss(brk_rss=199 << 20), probe_live=1000, census=None,
                            given_back=300 << 20)
    s.findings = [diagnose.Finding("allocator-retention", 7, "[bold]x\x1b[2J", 1, "kept [red]y", "advice")]
    out = StringIO()
    Console(file=out, width=80, force_terminal=False).print(renderable(s, None))
    text = out.getvalue()
    assert "200.0 MiB" in text and "199.0 MiB" in text and "300.0 MiB" in text
    assert "allocator-retention pid 7 [bold]x\\x1b[2J: kept [red]y" in text
    assert max(len(l) for l in text.splitlines()) <= 80
