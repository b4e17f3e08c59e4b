"""Process discovery for --all: cgroups, filters, allocator files by identity."""
from hypothesis import given, strategies as st

from tracer import allprocs, discover
from tracer.discover import ProcInfo
from tracer.targets import Library

V2 = "0::/system.slice/docker-0123456789abcdef0123456789abcdef.scope\n"
HYBRID = "9:name=systemd:/kubepods/pod1/crio-aaaabbbbccccdddd.scope\n4:memory:/x\n0::/\n"
V1 = "4:memory:/m\n2:cpuacct,cpu:/c\n"


def test_cgroups_and_containers():
    assert discover.parse_cgroup(V2) == "/system.slice/docker-0123456789abcdef0123456789abcdef.scope"
    assert discover.parse_cgroup(HYBRID) == "/kubepods/pod1/crio-aaaabbbbccccdddd.scope"
    assert discover.parse_cgroup(V1) == "/m"
    assert discover.parse_cgroup("") == "/" and discover.parse_cgroup("garbage\n::\n") == "/"
    assert discover.container_of(discover.parse_cgroup(V2)) == "docker:0123456789ab"
    assert discover.container_of("/kubepods/pod1/crio-aaaabbbbccccdddd.scope") == "cri-o:aaaabbbbcccc"
    assert discover.container_of("/user.slice/session-1.scope") is None


@given(st.text(max_size=300))
def test_parse_cgroup_never_raises(text):
    assert discover.parse_cgroup(text).startswith("/")


def test_filters():
    procs = [ProcInfo(1, "nginx", "/system.slice/docker-0123456789abcdef.scope"), ProcInfo(2, "nginx", "/"),
             ProcInfo(3, "redis-server", "/system.slice/redis.service"), ProcInfo(4, "=x", "/")]
    pids = lambda ps: [p.pid for p in ps]  # noqa: E731
    assert pids(discover.select(procs, comm="nginx")) == [1, 2]
    assert pids(discover.select(procs, comm="redis.*")) == [3]
    assert pids(discover.select(procs, comm="=x")) == [4]
    assert pids(discover.select(procs, cgroup="/system.slice")) == [1, 3]
    assert pids(discover.select(procs, cgroup="docker:0123456789ab")) == [1]
    assert pids(discover.select(procs, comm="nginx", exclude_pids=[2])) == [1]


def _fake_proc(tmp_path):
    line = "7f0000000000-7f0000100000 r-xp 00000000 08:01 {ino} {path}\n"
    for pid, libs in ((10, [(100, "/usr/lib/libc.so.6"), (200, "/usr/bin/app")]),
                      (11, [(100, "/usr/lib/libc.so.6")]),
                      (12, [(300, "/usr/lib/libc.so.6")])):  # a container's own libc: another file
        d = tmp_path / str(pid)
        d.mkdir()
        (d / "maps").write_text("".join(line.format(ino=i, path=p) for i, p in libs))
        (d / "comm").write_text(f"p{pid}\n")
        (d / "cgroup").write_text("0::/\n")
    (tmp_path / "self").mkdir()
    return str(tmp_path)


def test_allocator_files_by_identity_each_classified_once(tmp_path, monkeypatch):
    proc = _fake_proc(tmp_path)
    calls = []

    def classify(open_path, display, ident):
        calls.append(ident)
        return Library(display, open_path, ident, True, False) if "libc" in display else None

    monkeypatch.setattr(allprocs.targets, "classify", classify)
    every = allprocs.AllProcesses(allprocs.Filters(), own_pid=1, proc=proc)
    files = {pid: every.new_files(pid) for pid in discover.list_pids(proc)}
    assert {pid: [lib.identity[1] for lib in libs] for pid, libs in files.items()} == {10: [100], 11: [], 12: [300]}
    # 100 and 300 read once each; /usr/bin/app not at all (not an allocator's name)
    assert sorted(calls) == sorted(set(calls)) and len(calls) == 2
    assert files[10][0].open_path == f"{proc}/10/root/usr/lib/libc.so.6"
    assert every.glibc == {10, 11, 12}
    assert [p.pid for p in discover.processes(proc)] == [10, 11, 12]
