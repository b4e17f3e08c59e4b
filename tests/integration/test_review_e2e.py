"""End to end: trace the bundled leak workload with real probes, then review
the CSVs offline with the CLI (report, diff, export folded/pprof/speedscope,
plot), each as its own process, as a user would."""
from __future__ import annotations

import gzip
import json
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

HEAPTRACE = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "heaptrace"
LEAK_BYTES = 1031          # remember_request() in tracer/workloads/leak.c
REQUESTS_PER_S = 50


def cli(ht, *args: str, timeout: float = 180.0) -> subprocess.CompletedProcess:
    r = subprocess.run([str(HEAPTRACE), *args], capture_output=True, text=True, timeout=timeout)
    what = f"heaptrace {' '.join(args)}: exit {r.returncode}\n--- stdout ---\n{r.stdout[-3000:]}" \
           f"\n--- stderr ---\n{r.stderr[-3000:]}"
    ht.no_traceback(r.stdout + r.stderr)
    assert r.returncode == 0, what
    return r


def folded_total(path: Path, pid: int, function: str) -> int:
    """Sum of the values of the folded stacks of ``pid`` with a frame in
    ``function`` (the first frame, ``comm-pid``, is not a function)."""
    total = 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        stack, _, value = line.rpartition(" ")
        frames = stack.split(";")
        if not frames[0].endswith(f"-{pid}"):
            continue
        if any(f == function or f.startswith(function + "+") or f.startswith(function + " ")
               for f in frames[1:]):
            total += int(value)
    return total


def test_leak_session_reviewed_offline(ht, tmp_path):
    seconds = 3
    h = ht.started(ht.heaptrace(["-c", ht.command("leak", str(seconds))], interval=0.5))
    pid = h.traced[0]
    h.send(b"g")
    i = h.wait_line("out", lambda l: l == "done", 60, what="'done' from the leak workload")
    h.wait_intervals(1, i + 1)
    rc = h.interrupt()
    assert rc == 0, f"heaptrace exited {rc} after SIGINT\n{h.transcript()}"
    ht.no_traceback(h.stderr)
    csv = str(h.csv)
    assert Path(csv[:-4] + ".processes.csv").exists()

    # What the sites CSV says at its last interval: every remembered request is still live.
    df = ht.read_sites(h.csv)
    last = ht.last_interval(df, pid)
    rr = last[(last.function == "remember_request") & (last.source == "malloc")]
    assert len(rr), f"no remember_request row in the last interval\n{last.to_string()}"
    live, allocs, frees = int(rr.live_bytes.sum()), int(rr.allocs.sum()), int(rr.frees.sum())
    assert frees == 0, rr.to_string()
    assert allocs == seconds * REQUESTS_PER_S, rr.to_string()
    assert live == LEAK_BYTES * allocs, rr.to_string()

    r = cli(ht, "report", csv)
    assert "remember_request" in r.stdout, r.stdout

    r = cli(ht, "diff", csv, "--from", "first", "--to", "last")
    assert "remember_request" in r.stdout, r.stdout

    folded = tmp_path / "out.folded"
    cli(ht, "export", csv, "--format", "folded", "-o", str(folded))
    assert folded_total(folded, pid, "remember_request") == live == LEAK_BYTES * allocs, folded.read_text()

    pb = tmp_path / "out.pb.gz"
    cli(ht, "export", csv, "--format", "pprof", "-o", str(pb))
    assert len(gzip.decompress(pb.read_bytes())) > 0

    ss = tmp_path / "out.speedscope.json"
    cli(ht, "export", csv, "--format", "speedscope", "-o", str(ss))
    doc = json.loads(ss.read_text())
    assert "speedscope" in doc.get("$schema", ""), list(doc)

    png = tmp_path / "out.png"
    r = cli(ht, "plot", csv, "-o", str(png))
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000, r.stderr
    assert "missing" not in r.stderr, r.stderr  # the processes CSV was found: breakdown panels drawn

    svg = tmp_path / "out.svg"
    cli(ht, "plot", csv, "-o", str(svg), "--pid", str(pid), "--top", "3")
    texts = ["".join(t.itertext()) for t in ET.parse(svg).getroot().iter("{http://www.w3.org/2000/svg}text")]
    assert any(t.startswith("remember_request+0x") and t.endswith("[leak]") for t in texts), texts
    assert any(t.startswith("leak (pid ") for t in texts), texts       # the breakdown panel's title
    assert any(t.strip() == "leak" for t in texts), texts               # the finding, marked
