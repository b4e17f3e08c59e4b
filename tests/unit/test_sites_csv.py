"""The sites CSV contract: columns, appending, safety, what pandas reads."""
import os
from datetime import datetime, timezone

import pandas as pd
import pytest

from tracer.errors import HeaptraceError
from tracer.exporters.sites_csv import COLUMNS, SCHEMA_VERSION, SitesCsv, protect, unprotect
from tracer.layout import SiteCounts
from tracer.model import ResolvedStack, build_snapshot

T0 = datetime(2026, 11, 22, 4, 0, 0, tzinfo=timezone.utc)
T1 = datetime(2026, 11, 22, 4, 0, 1, tzinfo=timezone.utc)


def snap(ts, live, comm="svc", freed=(0, 0)):
    stacks = {(10, 1): ResolvedStack(("leak+0x9 [svc]", "main+0x20 [svc]"), "leak+0x9 [svc]"),
              (10, 2): ResolvedStack(("tmp+0x4 [svc]",), "tmp+0x4 [svc]")}
    return build_snapshot(ts, [(10, 1, SiteCounts(live * 1009, live, live * 1009, live, 0)),
                               (10, 2, SiteCounts(0, 0, 31 * freed[0], freed[0], freed[1]))],
                          stacks, {10: comm})


def test_schema_and_values_load_with_plain_read_csv(tmp_path):
    path = tmp_path / "s.csv"
    w = SitesCsv(str(path), host="h1")
    w.write(snap(T0, 23, freed=(29, 29)))
    w.close()
    df = pd.read_csv(path)
    assert list(df.columns) == COLUMNS
    assert (df.schema_version == SCHEMA_VERSION).all()
    leak = df[df.callsite == "leak+0x9 [svc]"].iloc[0]
    assert (leak.pid, leak.comm, leak.source, leak.live_bytes, leak.live_allocs) == (10, "svc", "malloc", 23 * 1009, 23)
    assert leak.stack == "main+0x20 [svc];leak+0x9 [svc]"
    assert leak.timestamp == "2026-11-22T04:00:00.000Z"
    assert pd.Timestamp(leak.timestamp).tz is not None


def test_appends_every_interval_and_skips_idle_empty_sites(tmp_path):
    path = str(tmp_path / "s.csv")
    w = SitesCsv(path)
    w.write(snap(T0, 1, freed=(5, 5)))
    w.write(snap(T1, 2, freed=(5, 5)))  # tmp unchanged and empty: not repeated
    w.close()
    w = SitesCsv(path)  # a second session appends, one header only
    w.write(snap(T1, 3, freed=(5, 5)))
    w.close()
    df = pd.read_csv(path)
    assert list(df.live_allocs[df.callsite.str.startswith("leak")]) == [1, 2, 3]
    assert (df.callsite.str.startswith("tmp")).sum() == 2  # first sight in each session


def test_file_is_flushed_after_each_interval(tmp_path):
    path = str(tmp_path / "s.csv")
    w = SitesCsv(path)
    w.write(snap(T0, 1))
    df = pd.read_csv(path)  # readable before close: a killed session keeps it
    assert list(df.live_allocs[df.callsite.str.startswith("leak")]) == [1]
    w.close()


@pytest.mark.parametrize("name", ["=cmd|'/c calc'!A1", "+1", "-2", "@SUM(A1)", "\tx"])
def test_formula_cells_are_protected_and_reversible(tmp_path, name):
    assert protect(name).startswith("'")
    assert unprotect(protect(name)) == name
    path = str(tmp_path / "s.csv")
    w = SitesCsv(path)
    w.write(snap(T0, 1, comm=name))
    w.close()
    df = pd.read_csv(path, keep_default_na=False)
    assert unprotect(df.comm.iloc[0]) == name and df.comm.iloc[0].startswith("'")


def test_plain_names_untouched():
    assert protect("nginx") == "nginx" and unprotect("'quoted") == "'quoted"


def test_commas_quotes_newlines_round_trip(tmp_path):
    path = str(tmp_path / "s.csv")
    w = SitesCsv(path)
    w.write(snap(T0, 1, comm='a,"b"\nc'))
    w.close()
    assert pd.read_csv(path).comm.iloc[0] == 'a,"b"\nc'


def test_refuses_symlink_and_creates_0600(tmp_path):
    target = tmp_path / "elsewhere"
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    with pytest.raises(HeaptraceError, match="symbolic link"):
        SitesCsv(str(link))
    assert not target.exists()
    path = tmp_path / "new.csv"
    SitesCsv(str(path)).close()
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(HeaptraceError, match="cannot write"):
        SitesCsv(str(tmp_path / "no" / "such" / "dir.csv"))
