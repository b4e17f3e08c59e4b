"""Hostile names end to end (issue 6): tests/programs/hostile.c names itself
and its functions with terminal escapes, rich markup, a newline, a ';',
bytes that are not UTF-8 and a 4 KiB name, and leaks one prime number of
bytes from each function. Traced with -c and -p, on a pseudo-terminal (the
rich live view) and in plain text, the names must be shown escaped and
literally, never sent to the terminal; the CSV must give them back exactly
(formula cells protected); the offline commands must take that CSV.
"""
from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import shlex
import signal
import struct
import subprocess
import termios
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest
from rich.cells import cell_len

pytestmark = pytest.mark.integration

HEAPTRACE = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "heaptrace"

# The process name (prctl): 14 bytes, one of them (0xff) not UTF-8; procfs
# gives it back with U+FFFD.
COMM = "=x\x1b[31m[b]\ufffdend"
LONG = "long" + "x" * 2048 + "\x1b[2J" + "x" * 2048
# Function name (as read from the ELF symbol table, invalid UTF-8 replaced)
# -> the bytes it leaks (a prime).
LEAKS = {
    "esc\x1b[2J\x1b[31m[bold]red": 7919,
    "[link=http://x]click[/link]": 7907,
    "line1\nline2[bold]": 7901,               # renamed by objcopy (the assembler refuses a newline)
    "osc\x1b]0;pwned\x07\u202erlo\x9b2Jc1": 7883,
    "semi;colon;fn": 6007,
    "bytes\ufffd\ufffd\ufffd\ufffdend": 5003,
    LONG: 4001,
}
# What the views print for them: escaped, markup as typed.
# (Views cut call sites to their column: the first 30 characters.)
SHOWN = ["esc\\x1b[2J\\x1b[31m[bold]red+0x", "[link=http://x]click[/link]+0x", "line1\\x0aline2[bold]+0x",
         "osc\\x1b]0;pwned\\x07\\u202erlo", "semi;colon;fn+0x"]
SHOWN_COMM = "=x\\x1b[31m[b]\ufffdend"

# Never in heaptrace's output: ESC (and its C1 twin CSI), BEL, a bidi override.
RAW = re.compile("[\x1b\x07\x9b\u202e]")
# What rich itself sends to a terminal: SGR colours and styles, cursor up /
# erase line for the live redraw, hide/show the cursor.
RICH_CONTROL = re.compile(rb"\x1b\[[0-9;]*m|\x1b\[[0-9]*[ABCDGK]|\x1b\[\?25[hl]")


def _no_raw_controls(text: str, what: str) -> None:
    m = RAW.search(text)
    assert m is None, f"{what}: raw {m.group()!r} at {m.start()}: {text[max(0, m.start() - 80):m.start() + 80]!r}"


def check_trace_output(h) -> None:
    """stdout and stderr of heaptrace --plain: every name escaped, markup literal."""
    for name, text in (("stdout", h.stdout), ("stderr", h.stderr)):
        _no_raw_controls(text, name)
    out = h.stdout
    for shown in SHOWN + [SHOWN_COMM]:
        assert shown in out, f"{shown!r} not in the output\n{h.transcript()}"
    # The newline inside a name did not split a line: both halves on one.
    assert any("line1\\x0aline2[bold]" in line for line in h.out)
    assert not any(line.startswith("line2[bold]") for line in h.out)


def function_of(callsite: str) -> str:
    return callsite.rsplit("+0x", 1)[0]


def check_csv(ht, csv: Path, pid: int) -> None:
    """The names come back exactly; the process name, a formula, is protected."""
    raw = csv.read_bytes()
    assert b",'=x\x1b[31m[b]\xef\xbf\xbdend," in raw, "the comm cell is not written as '=..."
    assert b",=x\x1b" not in raw
    # pandas: the cells as written (protected)
    df = pd.read_csv(csv, keep_default_na=False)
    d = df[df.pid == pid]
    assert set(d.comm) == {"'" + COMM}, set(d.comm)
    # tracer.csvread: protection undone, and each function's live bytes exact
    from tracer.csvread import open_csv
    d = open_csv(str(csv), "sites").read()
    d = d[d.pid == pid]
    assert set(d.comm) == {COMM}, set(d.comm)
    last = d.groupby(["source", "stack"], sort=False).tail(1)
    live = last.assign(function=last.callsite.map(function_of)).groupby("function").live_bytes.sum()
    for name, size in LEAKS.items():
        assert int(live.get(name, 0)) == size, (name[:40], live.to_dict() if len(live) < 30 else len(live))


def cli(ht, *args: str, env=None) -> subprocess.CompletedProcess:
    r = subprocess.run([str(HEAPTRACE), *args], capture_output=True, timeout=180, env=env)
    out, err = r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")
    ht.no_traceback(out + err)
    assert r.returncode == 0, f"heaptrace {' '.join(args)}: exit {r.returncode}\n{out[-2000:]}\n{err[-2000:]}"
    assert b"\x1b" not in r.stdout and b"\x1b" not in r.stderr, f"heaptrace {args[0]}: raw ESC"
    _no_raw_controls(out + err, f"heaptrace {' '.join(args)}")
    return r


def check_review(ht, csv: Path, pid: int, tmp: Path) -> None:
    """report, diff, export, plot on the CSV: exit 0, no traceback, no raw
    control character, report and diff lines within 80 columns."""
    for args in (["report", str(csv)], ["report", str(csv), "--pid", str(pid), "--top", "20"],
                 ["diff", str(csv), str(csv)], ["diff", str(csv), "--from", "first", "--to", "last"]):
        out = cli(ht, *args).stdout.decode()
        for line in out.splitlines():
            assert cell_len(line) <= 80, f"heaptrace {args[0]}: {cell_len(line)} columns: {line!r}"
        if args[0] == "report":
            assert SHOWN_COMM in out and "[link=http://x]click[/link]" in out, out
    folded = cli(ht, "export", str(csv), "--format", "folded", "-o", "-").stdout.decode()
    lines = folded.splitlines()
    assert lines and all(re.fullmatch(r".+ \d+", line) for line in lines), folded[:2000]
    for shown, size in (("esc\\x1b[2J\\x1b[31m[bold]red+0x", 7919), ("semi:colon:fn+0x", 6007),
                        ("line1\\x0aline2[bold]+0x", 7901), ("osc\\x1b]0:pwned\\x07\\u202erlo\\x9b2Jc1", 7883)):
        assert [line for line in lines if shown in line and line.endswith(f" {size}")], (shown, folded[:3000])
    for fmt, name in (("pprof", "out.pb.gz"), ("speedscope", "out.json")):
        cli(ht, "export", str(csv), "--format", fmt, "-o", str(tmp / name))
    for name in ("plot.png", "plot.svg"):
        cli(ht, "plot", str(csv), "-o", str(tmp / name))
    svg = (tmp / "plot.svg").read_bytes()
    assert b"\x1b" not in svg
    ET.fromstring(svg)  # well-formed XML: no control character in a name


@pytest.mark.parametrize("how", ["c", "p"])
def test_hostile_names_traced_shown_escaped_and_kept_exactly(ht, tmp_path, how):
    h, pid = ht.run(how, "hostile")
    check_trace_output(h)
    check_csv(ht, h.csv, pid)
    check_review(ht, h.csv, pid, tmp_path)


def test_a_hostile_executable_file_name_with_a_strict_stdout(ht, tmp_path, monkeypatch):
    """The module name of every frame is the file's name: here with ESC, ';',
    markup and a byte that is not UTF-8 (a surrogate once decoded). With a
    strict stdout encoding (any UTF-8 locale but C.UTF-8) printing that
    surrogate raised UnicodeEncodeError and ended the session."""
    evil = tmp_path / os.fsdecode(b"ho\xff\x1b[2J;st[bold]")
    evil.write_bytes(Path(ht.programs["hostile"]).read_bytes())
    evil.chmod(0o755)
    ht.programs = {**ht.programs, "evil_path": str(evil)}
    monkeypatch.setenv("PYTHONIOENCODING", "utf-8")
    h, pid = ht.run_c("evil_path")
    _no_raw_controls(h.stdout + h.stderr, "heaptrace")
    assert "[ho\ufffd" not in h.stdout, "a raw byte (0xff) reached stdout"
    assert "[ho\\udcff\\x1b[2J;st[bold]]" in h.stdout, h.transcript()
    check_review(ht, h.csv, pid, tmp_path)


# -- on a pseudo-terminal: the rich live view --------------------------------------------------------

def on_pty(ht, argv: list[str], *, cols: int, drive=None, timeout: float = 120.0) -> tuple[int, bytes]:
    """Run ``argv`` with stdout and stderr on a pseudo-terminal of ``cols``
    columns (stdin a pipe); ``drive(proc, output_so_far)`` is called as
    output arrives until it returns True. Returns (exit status, output)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, cols, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR")}
    env["TERM"] = "xterm-256color"
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    out = bytearray()
    done = drive is None
    end = time.monotonic() + timeout
    try:
        while True:
            if time.monotonic() > end:
                raise AssertionError(f"{argv[:2]} still running after {timeout} s:\n{bytes(out)[-3000:]!r}")
            r, _, _ = select.select([master], [], [], 0.1)
            if r:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every end of the terminal closed
                    data = b""
                if not data:
                    break
                out += data
            if not done:
                done = drive(p, bytes(out))
        rc = p.wait(60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        if p.stdin:
            p.stdin.close()
        os.close(master)
    return rc, bytes(out)


def check_terminal_output(out: bytes, what: str) -> str:
    """Only rich's own control sequences; returns the text without them."""
    for bad in (b"\x1b[2J", b"\x1b]", b"\x07", b"\xc2\x9b", b"\xe2\x80\xae", b"\x1b[31m[b]"):
        assert bad not in out, f"{what}: {bad!r} reached the terminal"
    text = RICH_CONTROL.sub(b"", out)
    i = text.find(b"\x1b")
    assert i < 0, f"{what}: an escape sequence rich does not send: {text[max(0, i - 60):i + 60]!r}"
    return text.decode("utf-8")  # strict: no stray byte


def test_live_view_on_a_terminal_shows_hostile_names_literally(ht, tmp_path):
    csv = tmp_path / "live.csv"
    argv = [str(HEAPTRACE), "-c", shlex.join([ht.programs["hostile"]]), "--csv", str(csv), "0.2"]
    state = {"sent": 0.0}

    def drive(p, out: bytes) -> bool:
        m = re.search(rb"Tracing 1 process \((\d+)\)", out)
        if m and not any(pid == int(m.group(1)) for pid, _ in ht.foreign):
            pid = int(m.group(1))
            ht.foreign.append((pid, ht.start_time(pid)))
        if not state["sent"] and b"ready" in out:
            p.stdin.write(b"g")
            p.stdin.flush()
            state["sent"] = time.monotonic()
        if state["sent"] and b"done" in out and out.count(b"interval") >= 8 \
                and time.monotonic() - state["sent"] > 1.5:
            p.send_signal(signal.SIGINT)
            return True
        return False

    rc, out = on_pty(ht, argv, cols=100, drive=drive)
    assert rc == 0, out[-3000:]
    assert b"Traceback" not in out, out[-3000:]
    assert b"\x1b[?25l" in out and b"process / call site" in out, "not the rich live view"
    text = check_terminal_output(out, "the live view")
    for shown in SHOWN[:4] + [SHOWN_COMM]:
        assert shown[:30] in text, (shown, text[-4000:])
    assert "stopped by SIGINT" in text


def test_report_on_a_terminal_shows_hostile_names_literally(ht, tmp_path):
    h, pid = ht.run("c", "hostile")
    rc, out = on_pty(ht, [str(HEAPTRACE), "report", str(h.csv)], cols=80)
    assert rc == 0 and b"Traceback" not in out, out[-3000:]
    text = check_terminal_output(out, "heaptrace report (rich)")
    assert SHOWN_COMM in text and "[link=http://x]click[/link]" in text, text
    for line in text.replace("\r", "").split("\n"):
        assert cell_len(line) <= 80, line
