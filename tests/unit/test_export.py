"""heaptrace export: folded, pprof and speedscope from a sites CSV (offline, no root)."""
import gzip
import json
import os
import re
import shutil
import subprocess
from collections import defaultdict
from datetime import datetime, timezone

import pytest

from tracer import cli, review
from tracer.csvread import open_csv
from tracer.exporters import folded, pprof, speedscope
from tracer.exporters.sites_csv import COLUMNS, SitesCsv
from tracer.layout import SiteCounts
from tracer.model import Process, Site, Snapshot

T0 = datetime(2026, 11, 22, 4, 0, 0, tzinfo=timezone.utc)
T1 = datetime(2026, 11, 22, 4, 0, 1, tzinfo=timezone.utc)
T1_NS = int(T1.timestamp()) * 10**9

EVIL = "\x1b[31mred\x1b]0;title\x07\nnext [bold]b[/bold]"   # escape sequences, newline, rich markup
FRAMES_A = ("leak+0x9 [svc]", "handle+0x20 [svc]", "main+0x10 [svc]")          # innermost first
FRAMES_B = ("cache_put+0x4 [svc]", "handle+0x28 [svc]", "main+0x10 [svc]")
FRAMES_M = ("new_stack+0x29 [svc]", "main+0x10 [svc]")
FRAMES_X = ("=cmd()+0x1 [lib;odd.so]", "<[u8; 4] as Debug>::fmt+0x2 [" + EVIL + "]", "0x7f0012 [ld.so]")


def site(pid, comm, frames, live, n, ab, allocs, frees=0, source="malloc"):
    return Site(pid, comm, source, frames[0], frames, SiteCounts(live, n, ab, allocs, frees))


def snapshot(ts, scale):
    svc = Process(10, "svc", sites=[
        site(10, "svc", FRAMES_A, 1009 * scale, scale, 1009 * scale, scale),
        site(10, "svc", FRAMES_B, 4096, 1, 8192 * scale, 2 * scale, 2 * scale - 1),
        site(10, "svc", FRAMES_M, 1 << 20, 1, 2 << 20, 2, 1, source="mmap"),
        site(10, "svc", ("tmp+0x4 [svc]", "main+0x10 [svc]"), 0, 0, 31 * scale, scale, scale)])
    evil = Process(20, "=cmd()", sites=[site(20, "=cmd()", FRAMES_X, 77 * scale, scale, 77 * scale, scale)])
    odd = Process(30, EVIL, sites=[site(30, EVIL, ("f+0x1 [a]",), 5, 1, 5, 1)])
    return Snapshot(ts, {10: svc, 20: evil, 30: odd})


@pytest.fixture
def csv_path(tmp_path):
    path = str(tmp_path / "run.csv")
    w = SitesCsv(path, host="h1")
    w.write(snapshot(T0, 1))
    w.write(snapshot(T1, 3))
    w.close()
    return path


def state(path, at=None):
    f = open_csv(path, "sites")
    return review.state_at(f, review.pick(review.intervals(f), at))


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


# --- a protobuf decoder, independent of the encoder --------------------------------------------

def _varint(b, i):
    n = shift = 0
    while True:
        c = b[i]
        i += 1
        n |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            return n, i


def message(b):
    """field number -> list of raw values (ints for varints, bytes for length-delimited)."""
    out, i = defaultdict(list), 0
    while i < len(b):
        key, i = _varint(b, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            v, i = _varint(b, i)
        elif wire == 2:
            n, i = _varint(b, i)
            v, i = b[i:i + n], i + n
        else:
            raise AssertionError(f"unexpected wire type {wire}")
        out[field].append(v)
    return out


def ints(m, field):
    """A repeated integer field, packed or not."""
    out = []
    for v in m.get(field, []):
        if isinstance(v, bytes):
            i = 0
            while i < len(v):
                n, i = _varint(v, i)
                out.append(n)
        else:
            out.append(v)
    return out


def one(m, field, default=0):
    return m[field][-1] if field in m else default


def signed(n):
    return n - (1 << 64) if n >= 1 << 63 else n


def decode_pprof(data):
    p = message(gzip.decompress(data))
    strings = [s.decode("utf-8") for s in p[6]]
    assert strings[0] == ""
    functions = {}
    for raw in p[5]:
        f = message(raw)
        functions[one(f, 1)] = strings[one(f, 2)]
    mappings = {}
    for raw in p[3]:
        m = message(raw)
        assert one(m, 7) == 1  # has_functions: pprof must not try to symbolize
        mappings[one(m, 1)] = strings[one(m, 5)]
    locations = {}
    for raw in p[4]:
        loc = message(raw)
        lines = [message(x) for x in loc[4]]
        assert len(lines) == 1
        locations[one(loc, 1)] = (functions[one(lines[0], 1)], mappings.get(one(loc, 2), ""), one(loc, 3))
    samples = []
    for raw in p[2]:
        s = message(raw)
        labels = {}
        for lraw in s[3]:
            lab = message(lraw)
            key = strings[one(lab, 1)]
            labels[key] = strings[one(lab, 2)] if 2 in lab else one(lab, 3)
        samples.append({"locations": [locations[i] for i in ints(s, 1)],
                        "values": [signed(v) for v in ints(s, 2)], "labels": labels})
    types = [(strings[one(message(t), 1)], strings[one(message(t), 2)]) for t in p[1]]
    return {"types": types, "samples": samples, "time": one(p, 9), "default": strings[one(p, 14)],
            "comments": [strings[i] for i in ints(p, 13)], "mappings": mappings, "functions": functions,
            "locations": locations}


# --- stacks -------------------------------------------------------------------------------------

@pytest.mark.parametrize("stack, frames", [
    ("main+0x1 [a];f+0x2 [b]", ["main+0x1 [a]", "f+0x2 [b]"]),
    ("main+0x1 [a];x;y+0x2 [b]", ["main+0x1 [a]", "x;y+0x2 [b]"]),          # ';' in a symbol
    ("main+0x1 [a;b];0x7f [c]", ["main+0x1 [a;b]", "0x7f [c]"]),            # ';' in a module
    ("main;g", ["main", "g"]),                                                # hand-written
    ("0x1;0x2", ["0x1", "0x2"]),
    ("", ["[lost stack]"]),
    ("a;;b", ["a", "", "b"]),
])
def test_split_stack(stack, frames):
    assert folded.split_stack(stack) == frames


def test_split_frame():
    assert pprof.split_frame("f+0x1a [libc.so.6]") == ("f+0x1a", "libc.so.6")
    assert pprof.split_frame("[lost stack]") == ("[lost stack]", "")
    assert pprof.split_frame("0x7f12") == ("0x7f12", "")
    assert pprof.split_frame("a [b] [c]") == ("a [b]", "c")


# --- folded -------------------------------------------------------------------------------------

def parse_folded(text):
    out = []
    for line in text.splitlines():
        stack, _, n = line.rpartition(" ")
        out.append((stack.split(";"), int(n)))
    return out


def test_folded_totals_equal_live_bytes_per_process(csv_path):
    st = state(csv_path)
    text = folded.export(st)
    assert text.endswith("\n") and "\r" not in text
    per = defaultdict(int)
    for frames, n in parse_folded(text):
        per[frames[0]] += n
        assert n > 0
    want = {folded.process_frame(c, p): int(v) for (p, c), v in st.groupby(["pid", "comm"])["live_bytes"].sum().items()}
    assert per == want
    assert per["svc-10"] == 1009 * 3 + 4096 + (1 << 20)
    lines = dict((";".join(f), n) for f, n in parse_folded(text))
    assert lines["svc-10;main+0x10 [svc];new_stack+0x29 [svc];[mmap]"] == 1 << 20       # mmap marked
    assert lines["svc-10;main+0x10 [svc];handle+0x20 [svc];leak+0x9 [svc]"] == 3027
    assert not any("tmp+0x4" in k for k in lines)                                          # 0: omitted


def test_folded_values_and_no_process_frame(csv_path):
    st = state(csv_path)
    text = folded.export(st, "alloc_bytes", process_frames=False)
    lines = dict((";".join(f), n) for f, n in parse_folded(text))
    assert lines["main+0x10 [svc];tmp+0x4 [svc]"] == 93
    assert sum(lines.values()) == int(st["alloc_bytes"].sum())
    assert not any(k.startswith("svc-10") for k in lines)
    # two processes with one stack merge without the process frame
    rows = [{"pid": 1, "comm": "a", "stack": "m+0x1 [x]", "live_bytes": 5},
            {"pid": 2, "comm": "b", "stack": "m+0x1 [x]", "live_bytes": 7}]
    assert folded.export(rows, process_frames=False) == "m+0x1 [x] 12\n"
    assert folded.export(rows) == "a-1;m+0x1 [x] 5\nb-2;m+0x1 [x] 7\n"
    with pytest.raises(ValueError):
        folded.export(rows, "frees")


def test_folded_hostile_names_cannot_split_lines_or_frames(csv_path):
    text = folded.export(state(csv_path))
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]", text)
    lines = parse_folded(text)
    assert len(lines) == len(text.splitlines()) == 5
    evil = [f for f, _ in lines if f[0].startswith("=cmd()")][0]
    # the ';' inside the symbol and the module stay inside their frames (as ':')
    assert evil == ["=cmd()-20", "0x7f0012 [ld.so]",
                    "<[u8: 4] as Debug>::fmt+0x2 [\\x1b[31mred\\x1b]0:title\\x07\\x0anext [bold]b[/bold]]",
                    "=cmd()+0x1 [lib:odd.so]"]
    odd = [f for f, _ in lines if "red" in f[0]][0]
    assert odd[0] == "\\x1b[31mred\\x1b]0:title\\x07\\x0anext [bold]b[/bold]-30"


# --- pprof --------------------------------------------------------------------------------------

def test_pprof_decodes_back(csv_path):
    st = state(csv_path)
    data = pprof.export(st, time_nanos=T1_NS, comments=["from run.csv"])
    assert data[:2] == b"\x1f\x8b"
    p = decode_pprof(data)
    assert p["types"] == [("inuse_space", "bytes"), ("inuse_objects", "count"),
                          ("alloc_space", "bytes"), ("alloc_objects", "count")]
    assert p["default"] == "inuse_space" and p["time"] == T1_NS and p["comments"] == ["from run.csv"]
    by = {(s["labels"]["pid"], s["labels"]["source"], s["locations"][0][0]): s for s in p["samples"]}
    leak = by[(10, "malloc", "leak+0x9")]
    assert leak["values"] == [3027, 3, 3027, 3]
    assert leak["labels"]["comm"] == "svc"
    assert [loc[0] for loc in leak["locations"]] == ["leak+0x9", "handle+0x20", "main+0x10"]  # leaf first
    assert {loc[1] for loc in leak["locations"]} == {"svc"}
    assert by[(10, "mmap", "new_stack+0x29")]["values"] == [1 << 20, 1, 2 << 20, 2]
    assert by[(10, "malloc", "tmp+0x4")]["values"] == [0, 0, 93, 3]                     # freed: alloc_* only
    cache = by[(10, "malloc", "cache_put+0x4")]
    assert cache["values"] == [4096, 1, 8192 * 3, 6]
    # every value type sums to the state's column
    for i, col in enumerate(folded.VALUES):
        assert sum(s["values"][i] for s in p["samples"]) == int(st[col].sum())
    # one Location and one Function per distinct frame text; hostile names kept exactly
    evil = by[(20, "malloc", "=cmd()+0x1")]
    assert evil["labels"]["comm"] == "=cmd()"
    assert evil["locations"] == [("=cmd()+0x1", "lib;odd.so", 0),
                                 ("<[u8; 4] as Debug>::fmt+0x2", EVIL, 0),
                                 ("0x7f0012", "ld.so", 0x7F0012)]
    assert by[(30, "malloc", "f+0x1")]["labels"]["comm"] == EVIL
    frames = {f for s in st["stack"] for f in folded.split_stack(s)}
    assert len(p["locations"]) == len(p["functions"]) == len(frames)
    assert sorted(p["mappings"].values()) == sorted({pprof.split_frame(f)[1] for f in frames})


def test_pprof_default_type_follows_value(csv_path):
    for value, t in pprof.TYPE_OF_VALUE.items():
        assert decode_pprof(pprof.export(state(csv_path), value))["default"] == t


def test_varints():
    assert pprof.varint(0) == b"\x00" and pprof.varint(300) == b"\xac\x02"
    assert pprof.varint(-1) == b"\xff" * 9 + b"\x01"
    assert signed(_varint(pprof.varint(-5), 0)[0]) == -5
    assert pprof.num(3, 0) == b""


def test_pprof_negative_values_survive():
    p = decode_pprof(pprof.export([{"pid": 1, "comm": "c", "stack": "f+0x1 [m]", "live_bytes": -8, "allocs": 1}]))
    assert p["samples"][0]["values"] == [-8, 0, 0, 1]


# --- speedscope ---------------------------------------------------------------------------------

def test_speedscope_loads_with_consistent_indices(csv_path):
    st = state(csv_path)
    doc = json.loads(speedscope.export(st, when="2026-11-22T04:00:01.000Z"))
    assert doc["$schema"] == "https://www.speedscope.app/file-format-schema.json"
    frames = doc["shared"]["frames"]
    assert all(isinstance(f["name"], str) for f in frames)
    names = {}
    for prof in doc["profiles"]:
        assert prof["type"] == "sampled" and prof["unit"] == "bytes" and prof["startValue"] == 0
        assert len(prof["samples"]) == len(prof["weights"])
        assert prof["endValue"] == sum(prof["weights"])
        assert all(w > 0 for w in prof["weights"])
        for s in prof["samples"]:
            assert s and all(0 <= i < len(frames) for i in s)
        names[prof["name"]] = prof
    svc = names["svc (10) live_bytes at 2026-11-22T04:00:01.000Z"]
    assert svc["endValue"] == 1009 * 3 + 4096 + (1 << 20)
    assert doc["profiles"][0] is svc  # biggest first
    stacks = {tuple(frames[i]["name"] for i in s): w for s, w in zip(svc["samples"], svc["weights"])}
    assert stacks[("main+0x10", "handle+0x20", "leak+0x9")] == 3027      # root first
    assert stacks[("main+0x10", "new_stack+0x29", "[mmap]")] == 1 << 20
    assert f"{EVIL} (30) live_bytes at 2026-11-22T04:00:01.000Z" in names
    evil = names["=cmd() (20) live_bytes at 2026-11-22T04:00:01.000Z"]
    assert [frames[i] for i in evil["samples"][0]] == [
        {"name": "0x7f0012", "file": "ld.so"}, {"name": "<[u8; 4] as Debug>::fmt+0x2", "file": EVIL},
        {"name": "=cmd()+0x1", "file": "lib;odd.so"}]


def test_speedscope_counts_have_unit_none(csv_path):
    doc = json.loads(speedscope.export(state(csv_path), "allocs"))
    assert {p["unit"] for p in doc["profiles"]} == {"none"}
    assert sum(sum(p["weights"]) for p in doc["profiles"]) == int(state(csv_path)["allocs"].sum())


# --- the command --------------------------------------------------------------------------------

def test_command_writes_each_format(capsys, csv_path, tmp_path):
    for fmt in ("folded", "pprof", "speedscope"):
        out = tmp_path / f"out.{fmt}"
        code, _, err = run(capsys, "export", csv_path, "--format", fmt, "-o", out)
        assert code == 0, err
        assert f"wrote {out}" in err and "at 2026-11-22T04:00:01.000Z" in err
        assert os.stat(out).st_mode & 0o777 == 0o600
    p = decode_pprof((tmp_path / "out.pprof").read_bytes())
    assert p["time"] == T1_NS and any("run.csv" in c for c in p["comments"])
    assert json.loads((tmp_path / "out.speedscope").read_text())["profiles"]
    assert "svc-10;main+0x10 [svc]" in (tmp_path / "out.folded").read_text()


def test_command_at_pid_value_and_stdout(capsys, csv_path):
    code, out, _ = run(capsys, "export", csv_path, "--format", "folded", "-o", "-", "--at", "first",
                       "--pid", "10")
    assert code == 0
    lines = dict((";".join(f), n) for f, n in parse_folded(out))
    assert lines["svc-10;main+0x10 [svc];handle+0x20 [svc];leak+0x9 [svc]"] == 1009
    assert all(k.startswith("svc-10;") for k in lines)
    code, out, _ = run(capsys, "export", csv_path, "-f", "folded", "-o", "-", "--at", "-1",
                       "--value", "allocs", "--no-process-frame")
    assert code == 0 and "main+0x10 [svc];tmp+0x4 [svc] 3\n" in out
    code, out, _ = run(capsys, "export", csv_path, "-f", "speedscope", "-o", "-", "--at", "2026-11-22T04:00:00.5Z")
    assert code == 0 and "live_bytes at 2026-11-22T04:00:00.000Z" in out


def test_command_replaces_an_existing_file(capsys, csv_path, tmp_path):
    out = tmp_path / "o.folded"
    out.write_text("x" * 100000)
    assert run(capsys, "export", csv_path, "-f", "folded", "-o", out, "--pid", "30")[0] == 0
    assert out.read_text().count("\n") == 1 and "x" * 10 not in out.read_text()


def test_truncated_csv_exports_what_is_complete(capsys, csv_path, tmp_path):
    text = open(csv_path).read()
    cut = tmp_path / "cut.csv"
    cut.write_text(text + text.splitlines()[1][:25])
    code, out, err = run(capsys, "export", cut, "-f", "folded", "-o", "-")
    assert code == 0 and "cut short" in err
    assert out == folded.export(state(csv_path))


def test_non_utf8_and_protected_cells_from_a_hand_written_csv(capsys, tmp_path):
    path = tmp_path / "h.csv"
    row = (b"1,2026-11-22T01:00:00.000Z,h,7,'=bad\xff\xfename,malloc,f+0x1 [a],"
           b"\"main+0x1 [a];f\xff+0x1 [a]\",64,1,64,1,0\n")
    path.write_bytes(",".join(COLUMNS).encode() + b"\n" + row)
    code, out, _ = run(capsys, "export", path, "-f", "folded", "-o", "-")
    assert code == 0 and out == "=bad\ufffd\ufffdname-7;main+0x1 [a];f\ufffd+0x1 [a] 64\n"
    code, out, _ = run(capsys, "export", path, "-f", "pprof", "-o", tmp_path / "h.pb.gz")
    p = decode_pprof((tmp_path / "h.pb.gz").read_bytes())
    assert p["samples"][0]["labels"]["comm"] == "=bad\ufffd\ufffdname"
    assert p["samples"][0]["locations"][0] == ("f\ufffd+0x1", "a", 0)


@pytest.mark.parametrize("content, argv, code, needle", [
    ("not,a,csv\n1,2,3\n", [], 65, "is not a heaptrace CSV"),
    ("", [], 65, "is not a heaptrace CSV"),
    ("schema_version,timestamp,pid\n1,2026-11-22T01:00:00Z,3\n", [], 65, "columns missing"),
    (None, ["--format", "svg"], 2, "invalid choice"),
    (None, ["--pid", "99"], 2, "--pid 99: no such process"),
    (None, ["--pid", "x"], 2, "not a process ID"),
    (None, ["--at", "7"], 65, "intervals"),
    (None, ["--at", "1999-01-01T00:00:00Z"], 65, "starts later"),
    (None, ["--value", "frees"], 2, "invalid choice"),
    (None, ["-f", "pprof", "--no-process-frame"], 2, "is for --format folded"),
    (None, ["--pid", "30", "--value", "alloc_bytes", "--at", "first", "-o", "{tmp}/none/out"], 1,
     "check the directory exists"),
    (None, ["-o", "{tmp}"], 1, "is a directory"),
    (None, ["-o", "{csv}"], 2, "is the CSV being read"),
])
def test_bad_input_says_why(capsys, tmp_path, csv_path, content, argv, code, needle):
    path = csv_path
    if content is not None:
        path = str(tmp_path / "bad.csv")
        open(path, "w").write(content)
    argv = [a.format(tmp=tmp_path, csv=csv_path) for a in argv]
    base = ["export", path] + (["--format", "folded"] if "--format" not in argv and "-f" not in argv else [])
    base += ["-o", str(tmp_path / "out")] if "-o" not in argv else []
    got, out, err = run(capsys, *base, *argv)
    assert got == code, err
    assert needle in err and err.startswith("heaptrace: error:")
    assert not os.path.exists(tmp_path / "out")


def test_missing_file_and_required_options(capsys, tmp_path, csv_path):
    assert run(capsys, "export", tmp_path / "nope.csv", "-f", "folded", "-o", "-")[0] == 65
    code, _, err = run(capsys, "export", csv_path, "-o", "-")
    assert code == 2 and "--format" in err
    code, _, err = run(capsys, "export", csv_path, "-f", "folded")
    assert code == 2 and "-o" in err


def test_symlink_output_is_refused(capsys, tmp_path, csv_path):
    target = tmp_path / "target"
    target.write_text("keep")
    link = tmp_path / "link"
    link.symlink_to(target)
    code, _, err = run(capsys, "export", csv_path, "-f", "folded", "-o", link)
    assert code == 1 and "symbolic link" in err
    assert target.read_text() == "keep"
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nothing")
    assert run(capsys, "export", csv_path, "-f", "folded", "-o", dangling)[0] == 1
    assert not (tmp_path / "nothing").exists()


def test_nothing_to_export(capsys, tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text(",".join(COLUMNS) + "\n")
    code, _, err = run(capsys, "export", path, "-f", "folded", "-o", "-")
    assert code == 65 and "no interval" in err
    path.write_text(",".join(COLUMNS) + "\n1,2026-11-22T01:00:00.000Z,h,7,c,malloc,f,f,0,0,64,1,1\n")
    code, _, err = run(capsys, "export", path, "-f", "speedscope", "-o", tmp_path / "o.json")
    assert code == 1 and "nothing to export" in err and "--value alloc_bytes" in err
    assert not (tmp_path / "o.json").exists()
    assert run(capsys, "export", path, "-f", "speedscope", "-o", tmp_path / "o.json", "--value", "alloc_bytes")[0] == 0


# --- any names, through the writer, the reader and every format -----------------------------------

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r"), max_size=30)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(comm=_text, frames=st.lists(_text, min_size=1, max_size=4), live=st.integers(1, 2**40))
def test_any_names_export_without_breaking_a_format(tmp_path_factory, comm, frames, live):
    path = str(tmp_path_factory.mktemp("any") / "s.csv")
    w = SitesCsv(path, host="h")
    w.write(Snapshot(T0, {5: Process(5, comm, sites=[site(5, comm, tuple(frames), live, 1, live, 1)])}))
    w.close()
    stt = state(path)
    text = folded.export(stt)
    assert len(text.splitlines()) == 1 and text.endswith(f" {live}\n")
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]", text)
    p = decode_pprof(pprof.export(stt))
    assert p["samples"][0]["values"][0] == live and p["samples"][0]["labels"].get("comm", "") == comm
    doc = json.loads(speedscope.export(stt))
    assert doc["profiles"][0]["weights"] == [live]
    assert doc["profiles"][0]["name"].startswith(f"{comm} (5)")


# --- a real pprof reader, where there is one ------------------------------------------------------

def test_go_tool_pprof_reads_it(csv_path, tmp_path):
    if shutil.which("go") is None:  # scripts/bootstrap installs golang-go; CI must have it
        if os.environ.get("CI") == "true":
            pytest.fail("go (go tool pprof) is missing: scripts/bootstrap installs golang-go")
        pytest.skip("go (go tool pprof) not installed")
    out = tmp_path / "heap.pb.gz"
    out.write_bytes(pprof.export(state(csv_path), time_nanos=T1_NS))
    env = {**os.environ, "HOME": str(tmp_path), "PPROF_TMPDIR": str(tmp_path)}
    r = subprocess.run(["go", "tool", "pprof", "-raw", str(out)], capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert "inuse_space/bytes[dflt] inuse_objects/count alloc_space/bytes alloc_objects/count" in r.stdout
    assert "3027          3       3027          3" in r.stdout
    r = subprocess.run(["go", "tool", "pprof", "-top", "-tagfocus=source=mmap", str(out)],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert re.search(r"^\s*1MB\s.*\snew_stack\+0x29$", r.stdout, re.M), r.stdout
    assert "leak+0x9" not in r.stdout
    r = subprocess.run(["go", "tool", "pprof", "-traces", "-sample_index=alloc_objects", str(out)],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert re.search(r"pid:\s+20\n\s+3\s+=cmd\(\)\+0x1\n", r.stdout), r.stdout
    assert re.search(r"source:\s+mmap\n\s+pid:\s+10\n\s+2\s+new_stack\+0x29\n", r.stdout), r.stdout
