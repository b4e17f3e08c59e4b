"""Bad input gives a message naming cause and fix, a non-zero exit, no traceback."""
import pytest

from tracer import cli


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


@pytest.mark.parametrize("argv, needle", [
    ([], "nothing to trace"),
    (["-p", "abc"], "not a process ID"),
    (["-p", "0"], "not a process ID"),
    (["-p", "1,-5"], "not a process ID"),
    (["-p", "1", "0"], "greater than 0"),
    (["-p", "1", "-1"], "greater than 0"),
    (["-p", "1", "x"], "not a number"),
    (["-p", "1", "1", "0"], "greater than 0"),
    (["-p", "1", "--top", "0"], "greater than 0"),
    (["-p", "1", "--min-size", "lots"], "not a size"),
    (["-p", "1", "--min-size", "2k", "--max-size", "1k"], "larger than --max-size"),
    (["-p", "1", "--max-depth", "65"], "at most 64"),
    (["-p", "1", "-c", "true"], "not allowed with"),
    (["-c", ""], "needs a command"),
    (["-c", "'unbalanced"], "cannot parse"),
    (["--no-such-option"], "unrecognized"),
    (["--all", "-p", "1"], "not allowed with"),
    (["-p", "1", "--comm", "svc"], "--comm goes with --all"),
    (["-p", "1", "--kernel-only"], "--kernel-only goes with --all"),
    (["-c", "true", "--exclude-pid", "5"], "--exclude-pid goes with --all"),
    (["--all", "--comm", "svc("], "not a regular expression"),
    (["--all", "--exclude-pid", "x"], "not a process ID"),
    (["--all", "--budget", "-1"], "between 0 and 100"),
    (["--all", "--budget", "101"], "between 0 and 100"),
    (["--all", "--budget", "nan"], "between 0 and 100"),
    (["--all", "--budget", "lots"], "not a percentage"),
    (["--all", "--kernel-only", "--no-mappings"], "cannot go with --no-mappings"),
])
def test_bad_arguments(capsys, argv, needle):
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert needle in err and err.startswith("heaptrace: error:")


def test_missing_pid_named(capsys):
    code, _, err = run(capsys, "-p", "999999999")
    assert code == 3 and "999999999 does not exist" in err


def test_help_lists_options_and_examples(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    for word in ("-p PID", "--csv", "--min-age", "--top", "examples:", "interval"):
        assert word in out


def test_sizes_accept_units():
    from tracer.commands.trace import _size
    assert _size("64") == 64 and _size("4k") == 4096 and _size("1M") == 1 << 20
    assert _size("2KiB") == 2048 and _size("1.5k") == 1536


@pytest.mark.parametrize("argv, code, needle", [
    (["demo", "--only", "nope"], 2, "unknown workload"),
    (["demo", "--duration", "1"], 2, "too short"),
    (["demo", "--duration", "x"], 2, "invalid float"),
    (["report"], 2, "required"),
    (["report", "/nonexistent.csv"], 65, "no such file"),
    (["report", "/etc/passwd"], 65, "not a heaptrace CSV"),
    (["report", "/"], 65, "directory"),
    (["diff", "/nonexistent.csv"], 65, "no such file"),
    (["export", "/nonexistent.csv", "--format", "folded", "-o", "/tmp/x"], 65, "no such file"),
    (["export", "/nonexistent.csv", "--format", "nope", "-o", "/tmp/x"], 2, "invalid choice"),
    (["plot", "/nonexistent.csv", "-o", "/tmp/x.jpg"], 2, ".png or .svg"),
    (["plot", "/nonexistent.csv", "-o", "/tmp/x.png"], 65, "no such file"),
])
def test_every_subcommand_rejects_bad_input_cleanly(capsys, argv, code, needle):
    got, _, err = run(capsys, *argv)
    assert got == code, err
    assert err.startswith("heaptrace: error:") and needle in err, err
