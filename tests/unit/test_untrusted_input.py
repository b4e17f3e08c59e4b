"""Property tests for everything that parses or prints text chosen by other
users: /proc files, process and symbol names, CSV cells."""
import re
import string

from hypothesis import example, given, settings
from hypothesis import strategies as st

from tracer.demangle import demangle
from tracer.exporters.sites_csv import protect, unprotect
from tracer.procmaps import parse_maps
from tracer.views.fmt import safe

CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@settings(max_examples=300)
@given(st.text())
def test_parse_maps_never_raises_on_any_text(text):
    for m in parse_maps(text):
        assert m.start <= m.end


@settings(max_examples=200)
@given(st.lists(st.tuples(st.integers(0, 2**47), st.integers(1, 2**20), st.sampled_from(["r-xp", "rw-p", "---p"]),
                          st.text(alphabet=string.ascii_letters + "/._- ", max_size=40))))
def test_parse_maps_reads_back_well_formed_lines(rows):
    text = "".join(f"{a:x}-{a + n:x} {perms} 00000000 08:01 {i} {path}\n"
                   for i, (a, n, perms, path) in enumerate(rows))
    got = parse_maps(text)
    assert [(m.start, m.end, m.perms) for m in got] == [(a, a + n, perms) for a, n, perms, _ in rows]


@settings(max_examples=300)
@given(st.text())
def test_safe_names_carry_no_control_characters(name):
    out = safe(name)
    assert not CONTROL.search(out)
    assert len(out) <= 200


@settings(max_examples=300)
@given(st.text())
@example("'=cmd")
@example("'")
@example("''")
def test_csv_protection_round_trips_and_defuses_formulas(cell):
    p = protect(cell)
    assert unprotect(p) == cell
    assert not p.startswith(("=", "+", "-", "@", "\t", "\r"))


@settings(max_examples=200)
@given(st.text(max_size=80))
def test_demangle_never_raises(name):
    assert isinstance(demangle("_Z" + name), str)
