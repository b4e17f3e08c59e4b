"""The soak's short form (issue 6, item 5): ``scripts/soak --seconds 60``.

The full soak (30 minutes, not run in CI) and this one are the same script:
heaptrace -p on a leak, a churn and a process-spawning workload; its RSS
bounded, no interval lost in either CSV, exact leak and churn figures in the
last interval, nothing registered after it ends. The script does the checks
and prints them as a Markdown table; this test runs it against the venv's
heaptrace and wants exit status 0, once with ``-p`` and once with ``--all``
(``heaptrace --all --budget 0``: every process on the host, spawn's children
too; at most 100 exited processes kept from one interval to the next).
"""
from __future__ import annotations

import subprocess

import pytest
from conftest import HEAPTRACE, ROOT, VENV_BIN
from test_faults import _require_bpftool

pytestmark = pytest.mark.integration

SECONDS = 60
SLACK = 300   # build, attach, the last intervals, leftover checks


# With --all, every binary that allocates on the host is symbolized once
# (its symbol table kept for the session): in one minute that is a one-time
# growth of up to a few MiB, not a trend; the long soak judges the trend.
@pytest.mark.parametrize("targets", [[], ["--all", "--rss-noise", "4096"]], ids=["pids", "all"])
def test_soak_short_form(tmp_path, targets):
    _require_bpftool()
    out = tmp_path / "soak.md"
    cmd = [str(VENV_BIN / "python"), str(ROOT / "scripts" / "soak"), *targets, "--seconds", str(SECONDS),
           "--heaptrace", str(HEAPTRACE), "--out", str(out), "--keep", str(tmp_path / "work")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=SECONDS + SLACK)
    said = f"{' '.join(cmd)}\n--- stdout ---\n{r.stdout}\n--- stderr ---\n{r.stderr}"
    assert r.returncode == 0, f"the soak exited {r.returncode}\n{said}"
    table = out.read_text()
    assert table == r.stdout, said
    assert "**FAILED**" not in table, said
    for check in ("heaptrace exits 0 after SIGINT", "sites CSV: one timestamp an interval",
                  "leak: leak_request live bytes exact", "nothing left registered",
                  *(["--all: at most 100 exited processes kept from one interval to the next"] if targets else [])):
        assert f"| {check} | ok |" in table, said
