"""Blocks from before attach, a million-plus live blocks, code without frame
pointers, C++ operator new."""
import re

import pytest

pytestmark = pytest.mark.integration


def test_frees_of_blocks_from_before_attach(ht):
    h, pid = ht.run_p("workload", "before")
    df = h.read_csv()
    assert (df.live_bytes >= 0).all() and (df.live_allocs >= 0).all(), \
        df[(df.live_bytes < 0) | (df.live_allocs < 0)].to_string()
    got = ht.by_function(ht.last_interval(df, pid))
    site = got.get("site_before")
    assert site is not None, got
    # 41 fresh blocks of 64 after attach, each realloc'd to 128, 21 freed.
    assert (site["live_allocs"], site["live_bytes"]) == (20, 20 * 128), site
    assert (site["allocs"], site["frees"]) == (41, 21), site
    # The 41 frees of blocks allocated before attach are reported, not counted.
    m = re.search(r"([\d,]+) frees of blocks allocated before tracing began", h.stdout)
    assert m, h.stdout
    assert int(m.group(1).replace(",", "")) == 41, m.group(0)


def test_four_million_live_blocks_all_counted(ht):
    n = 4_000_037
    h, pid = ht.run_p("workload", "many", done_timeout=180)
    df = h.read_csv()
    got = ht.by_function(ht.last_interval(df, pid))
    site = got.get("site_many")
    assert site is not None, got
    assert (site["live_allocs"], site["live_bytes"]) == (n, 32 * n), site
    assert "LOST" not in h.stdout, [l for l in h.out if "LOST" in l]
    assert "nothing lost" in h.stdout


@pytest.mark.parametrize("how", ["c", "p"])
def test_no_frame_pointers_one_site_one_row(ht, how):
    h, pid = ht.run(how, "nofp")
    df = h.read_csv()
    mine = df[df.pid == pid]
    nofp = mine[mine.callsite.str.startswith("nofp_site")]
    assert len(nofp), mine.to_string()
    per_interval = nofp.groupby("interval").size()
    assert (per_interval == 1).all(), "one call site split into several rows:\n" + nofp.to_string()
    # Once the site exists, every interval (the last included) has its row.
    after = df[df.interval >= nofp.interval.min()].interval.unique()
    assert len(per_interval) == len(after) and nofp.interval.max() == df.interval.max(), nofp.to_string()
    last = nofp[nofp.interval == nofp.interval.max()].iloc[0]
    assert (int(last.live_allocs), int(last.live_bytes)) == (37, 37 * 53), last.to_string()
    assert (int(last.allocs), int(last.frees)) == (37, 0), last.to_string()


def _run_cxx_c(ht):
    """-c, with two intervals between "ready" and go: whatever libstdc++
    allocates for itself at start-up is in the CSV before the program's work."""
    h = ht.started(ht.heaptrace(["-c", ht.command("cxx")]))
    h.wait_intervals(2, len(h.out))
    go_rows = len(h.read_csv())
    h.send(b"g")
    i = h.wait_line("out", lambda l: l == "done", 30, what="'done'")
    h.wait_intervals(2, i + 1)
    assert h.interrupt() == 0, h.transcript()
    ht.no_traceback(h.stderr)
    return h, h.traced[0], go_rows


@pytest.mark.parametrize("how", ["c", "p"])
def test_operator_new_charged_to_its_caller(ht, how):
    if how == "c":
        h, pid, go_rows = _run_cxx_c(ht)
    else:
        (h, pid), go_rows = ht.run_p("cxx"), 0
    df = h.read_csv()
    mine = df[df.pid == pid]
    got = ht.by_function(ht.last_interval(df, pid))
    want = {"cxx_new_site": (13, 13 * 1013), "cxx_nothrow_site": (7, 7 * 409),
            "cxx_aligned_site": (5, 5 * 192)}
    for fn, (n, b) in want.items():
        c = got.get(fn)
        assert c is not None and (c["live_allocs"], c["live_bytes"]) == (n, b), (fn, c, got)
    # No allocation the program made is charged to libstdc++. Under -c,
    # libstdc++'s own start-up allocation (its exception emergency pool,
    # malloc called by libstdc++ itself, before "ready") is libstdc++'s: it
    # may appear, but only as it was before the program ran, never growing.
    stdcxx = mine.callsite.map(ht.module_of).str.startswith("libstdc++")
    before_go = mine.index < go_rows
    late = mine[stdcxx & ~before_go]
    startup = {k: tuple(g[["live_bytes", "allocs"]].iloc[-1]) for k, g in mine[stdcxx & before_go].groupby("stack")}
    for k, g in late.groupby("stack"):
        assert startup.get(k) is not None and (g[["live_bytes", "allocs"]].values == list(startup[k])).all(), \
            "allocations after start-up charged to libstdc++:\n" + late.to_string()
    if how == "p":
        assert not stdcxx.any(), "call sites inside libstdc++:\n" + mine[stdcxx].to_string()
    assert (df.live_bytes >= 0).all()


def test_full_allocation_map_is_counted_as_lost(ht):
    """--max-allocs 1009 and 5003 live blocks: 1009 counted, 3994 shown as LOST."""
    h, pid = ht.run_p("workload", "many", "5003", extra=["--max-allocs", "1009"])
    df = h.read_csv()
    site = ht.by_function(ht.last_interval(df, pid)).get("site_many")
    assert site is not None and (site["live_allocs"], site["live_bytes"]) == (1009, 1009 * 32), site
    lost = [l for l in h.out if "LOST" in l and "allocation map full" in l]
    assert lost, h.stdout
    assert int(re.search(r"LOST: ([\d,]+)", lost[-1]).group(1).replace(",", "")) == 5003 - 1009, lost[-1]
    assert "nothing lost" not in h.stdout


def _start(argv):
    import subprocess
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _heaptrace_p(pid):
    import subprocess
    from pathlib import Path
    exe = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "heaptrace"
    return subprocess.run([str(exe), "-p", str(pid), "--plain", "1", "1"], capture_output=True, text=True,
                          timeout=60)


def test_go_and_stripped_static_programs_are_explained(tmp_path):
    """What cannot be traced is said, with why and what to use instead."""
    import shutil
    import subprocess
    if shutil.which("go") is None:
        pytest.fail("go is missing: scripts/bootstrap installs golang-go")
    (tmp_path / "main.go").write_text('package main\nimport "time"\nfunc main() { time.Sleep(time.Hour) }\n')
    env = {"HOME": str(tmp_path), "GOCACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin",
           "GO111MODULE": "off"}
    r = subprocess.run(["go", "build", "-o", str(tmp_path / "gosleep"), str(tmp_path / "main.go")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    (tmp_path / "st.c").write_text("#include <unistd.h>\nint main(){sleep(3600);}\n")
    r = subprocess.run(["gcc", "-static", "-s", "-o", str(tmp_path / "st"), str(tmp_path / "st.c")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for exe, needle in (("gosleep", "is a Go program"), ("st", "statically linked")):
        p = _start([str(tmp_path / exe)])
        try:
            import time
            time.sleep(0.3)
            out = _heaptrace_p(p.pid)
            assert out.returncode == 3, out
            assert needle in out.stderr and "Traceback" not in out.stderr, out.stderr
        finally:
            p.kill()
            p.wait()
