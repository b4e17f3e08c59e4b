"""Reading heaptrace's CSVs back: validation, truncation, unprotecting, --at."""
import pandas as pd
import pytest

from tracer import review
from tracer import csvread
from tracer.csvread import CsvError, open_csv
from tracer.exporters.sites_csv import COLUMNS

HEADER = ",".join(COLUMNS) + "\n"


def row(ts, pid=7, comm="svc", source="malloc", callsite="f+0x1 [a]", stack="main;f+0x1 [a]", live=0,
        nlive=0, ab=0, n=0, frees=0):
    return f"1,{ts},h,{pid},{comm},{source},{callsite},{stack},{live},{nlive},{ab},{n},{frees}\n"


def write(tmp_path, text, name="s.csv"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


T = ["2026-11-22T01:00:00.000Z", "2026-11-22T01:00:01.000Z", "2026-11-22T01:00:02.000Z"]


def test_state_at_and_series(tmp_path):
    text = HEADER + row(T[0], live=100, nlive=1, ab=100, n=1) + row(T[0], stack="main;g", live=5, nlive=1, ab=5, n=1)
    text += row(T[1], live=300, nlive=3, ab=300, n=3) + row(T[1], stack="main;g", live=0, nlive=0, ab=5, n=1, frees=1)
    text += row(T[2], live=600, nlive=6, ab=600, n=6)
    f = open_csv(write(tmp_path, text), "sites")
    times = review.intervals(f)
    assert [t.isoformat() for t in times] == [pd.Timestamp(t).isoformat() for t in T]
    st = review.state_at(f, review.pick(times, None)).set_index("stack")
    assert st.loc["main;f+0x1 [a]", "live_bytes"] == 600
    assert (st.loc["main;g", "live_bytes"], st.loc["main;g", "frees"]) == (0, 1)
    assert review.state_at(f, review.pick(times, "0")).set_index("stack").loc["main;g", "live_bytes"] == 5
    s = review.series(f, [(7, "malloc", "main;f+0x1 [a]"), (7, "malloc", "main;g")])
    assert s[(7, "malloc", "main;f+0x1 [a]")].tolist() == [100, 300, 600]
    assert s[(7, "malloc", "main;g")].tolist() == [5, 0, 0]


def test_protected_cells_are_unprotected_and_a_cut_last_line_is_left_out(tmp_path):
    text = HEADER + row(T[0], comm="'=cmd()", callsite="'-x", live=1, nlive=1) + row(T[1])[:-9]
    f = open_csv(write(tmp_path, text), "sites")
    df = f.read()
    assert len(df) == 1 and df.comm[0] == "=cmd()" and df.callsite[0] == "-x"
    assert any("cut short" in n for n in f.notes)


@pytest.mark.parametrize("text,msg", [
    ("a,b\n1,2\n", "is not a heaptrace CSV"),
    ("schema_version,timestamp,host\n1,x,y\n", "columns missing"),
    ("", "is not a heaptrace CSV"),
])
def test_bad_files_say_why(tmp_path, text, msg):
    with pytest.raises(CsvError, match=msg):
        open_csv(write(tmp_path, text), "sites")


def test_newer_schema_and_bad_at(tmp_path):
    f = open_csv(write(tmp_path, HEADER + row(T[0]).replace("1,", "2,", 1)), "sites")
    with pytest.raises(CsvError, match="upgrade heaptrace"):
        f.read()
    times = review.intervals(open_csv(write(tmp_path, HEADER + row(T[0]), "b.csv")))
    for at, msg in (("5", "intervals"), ("yesterday", "not a time"), ("2020-01-01T00:00:00Z", "starts later")):
        with pytest.raises(CsvError, match=msg):
            review.pick(times, at)
    with pytest.raises(CsvError, match="no such file"):
        open_csv(str(tmp_path / "none.csv"))


from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r"), max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(comm=_text, frames=st.lists(_text.filter(lambda s: ";" not in s and s), min_size=1, max_size=4))
def test_any_names_round_trip_through_the_writer_and_the_reader(tmp_path_factory, comm, frames):
    """Whatever a user names a process or a function (formula prefixes,
    quotes, commas, newlines, escapes), the reader gets it back exactly."""
    from datetime import datetime, timezone
    from tracer.exporters.sites_csv import SitesCsv
    from tracer.layout import SiteCounts
    from tracer.model import Process, Site, Snapshot
    d = tmp_path_factory.mktemp("rt")
    p = Process(7, comm)
    p.sites.append(Site(7, comm, "malloc", frames[0], tuple(frames), SiteCounts(10, 1, 10, 1, 0)))
    w = SitesCsv(str(d / "s.csv"), host="h")
    w.write(Snapshot(datetime(2026, 11, 22, tzinfo=timezone.utc), {7: p}))
    w.close()
    df = open_csv(str(d / "s.csv"), "sites").read()
    assert df["comm"].tolist() == [comm]
    assert df["callsite"].tolist() == [frames[0]]
    assert df["stack"].tolist() == [";".join(reversed(frames))]


def test_a_cut_interval_is_left_out_whole_and_quoted_newlines_are_not_row_ends(tmp_path):
    text = HEADER + row(T[0], live=1, nlive=1) + row(T[1], comm='"a\nb"', live=2, nlive=1)
    text += row(T[2], stack="main;g", live=3, nlive=1) + row(T[2], comm='"x\ny')  # cut inside a quoted name
    f = open_csv(write(tmp_path, text), "sites")
    df = f.read()
    assert df["live_bytes"].tolist() == [1, 2], df  # interval 2 was cut: all of it left out
    assert df["comm"].tolist() == ["svc", "a\nb"]
    assert any("with the rest of its interval" in n for n in f.notes)


def test_numbers_beyond_64_bits_are_a_clear_error(tmp_path):
    f = open_csv(write(tmp_path, HEADER + row(T[0], live=10 ** 30)), "sites")
    with pytest.raises(CsvError):
        f.read()


def test_a_processes_csv_of_schema_1_is_read_with_the_later_columns_empty(tmp_path):
    from tracer.exporters import processes_csv
    v1 = [c for c in processes_csv.COLUMNS if c not in processes_csv.ADDED]
    p = tmp_path / "old.processes.csv"
    p.write_text(",".join(v1) + "\n" + "1,2026-01-01T00:00:00.000Z,h,7,svc,4096,1024,2048,0,,,,,0,leak\n")
    f = csvread.open_csv(str(p))
    df = f.read()
    assert f.kind == csvread.PROCESSES and list(df["cgroup"]) == [""] and list(df["mode"]) == [""]
    assert list(df["pid"]) == [7] and list(df["findings"]) == ["leak"]
    assert list(f.read(["pid", "cgroup"])["cgroup"]) == [""]
