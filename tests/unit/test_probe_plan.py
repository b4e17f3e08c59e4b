"""Which files and offsets get probes (reads real ELF files; no root, no bcc)."""
import shutil
import subprocess

import pytest

from tracer import targets
from tracer.errors import TargetError

LIBC = "/usr/lib/x86_64-linux-gnu/libc.so.6"
needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc missing")


def build(tmp_path, name, src, *flags):
    c = tmp_path / f"{name}.c"
    c.write_text(src)
    out = tmp_path / name
    subprocess.run(["gcc", "-o", str(out), str(c), *flags], check=True, capture_output=True)
    return str(out)


@pytest.fixture(scope="module")
def libc_plan():
    lib = targets.classify(LIBC, LIBC)
    if lib is None:
        pytest.skip("no glibc at the Debian path")
    return lib, targets.plan_library(lib, 1234)


def test_glibc_is_an_allocator_and_every_entry_point_is_probed(libc_plan):
    lib, probes = libc_plan
    assert lib.allocator and not lib.operator_new
    entries = {p.symbol for p in probes if not p.probe.ret}
    assert {"malloc", "free", "calloc", "realloc", "posix_memalign", "valloc", "pvalloc"} <= entries
    assert all(p.probe.pid == 1234 for p in probes)


def test_aliases_are_probed_once(libc_plan):
    _, probes = libc_plan
    addrs = [p.probe.vaddr for p in probes if not p.probe.ret]
    assert len(addrs) == len(set(addrs))
    names = {p.symbol for p in probes} | {a for p in probes for a in p.aliases}
    assert {"aligned_alloc", "memalign"} <= names


def test_free_has_no_return_probe_and_allocators_have_one_at_the_same_address(libc_plan):
    _, probes = libc_plan
    by = {}
    for p in probes:
        by.setdefault(p.symbol, []).append(p)
    assert [p.probe.ret for p in by["free"]] == [False]
    for name in ("malloc", "calloc", "realloc"):
        entry, ret = by[name]
        assert (entry.probe.ret, ret.probe.ret, ret.probe.fn) == (False, True, "alloc_return")
        assert entry.probe.vaddr == ret.probe.vaddr


def test_free_skips_its_null_check_on_glibc_2_36(libc_plan):
    _, probes = libc_plan
    free = next(p for p in probes if p.symbol == "free")
    code = free.reason
    if free.offset == 0:
        pytest.skip(f"this glibc's free does not start with the NULL check: {code}")
    assert free.offset == 9 and "push %rbp" in code


@needs_gcc
def test_command_libraries_from_the_dynamic_linker(tmp_path):
    exe = build(tmp_path, "dyn", "#include <stdlib.h>\nint main(){return !malloc(1);}\n")
    libs = targets.libraries_of_command(exe)
    assert any(lib.allocator and lib.path.endswith("libc.so.6") for lib in libs)


@needs_gcc
def test_stripped_static_binary_is_refused_with_a_reason(tmp_path):
    try:
        exe = build(tmp_path, "static", "#include <stdlib.h>\nint main(){return !malloc(1);}\n", "-static", "-s")
    except subprocess.CalledProcessError:
        pytest.skip("no static libc to link with")
    libs = targets.libraries_of_command(exe)
    with pytest.raises(TargetError, match="(?i)statically linked"):
        targets.plan(1, libs)


def test_missing_command_is_named():
    with pytest.raises(TargetError, match="command not found"):
        targets.libraries_of_command("no-such-program-heaptrace")
