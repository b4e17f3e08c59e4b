"""Privilege and feature checks against fake /proc and /sys trees."""
import pytest

from tracer import preflight
from tracer.errors import MissingFeature, PermissionProblem

ROOT_CAPS = "Name:\tx\nCapEff:\t000001ffffffffff\n"
NO_CAPS = "Name:\tx\nCapEff:\t0000000000000000\n"
BPF_ONLY = f"CapEff:\t{(1 << 39) | (1 << 38) | (1 << 19):016x}\n"


def test_root_passes_and_capabilities_suffice():
    preflight.check_privileges(ROOT_CAPS)
    preflight.check_privileges(BPF_ONLY)


def test_unprivileged_is_told_to_use_sudo_and_what_is_missing():
    with pytest.raises(PermissionProblem) as e:
        preflight.check_privileges(NO_CAPS)
    msg = str(e.value)
    assert "sudo" in msg and "CAP_BPF" in msg and "CAP_PERFMON" in msg


def test_no_tracefs_and_no_pmu(tmp_path):
    with pytest.raises(MissingFeature, match="mount -t tracefs"):
        preflight.check_uprobes(str(tmp_path))
    (tmp_path / "kernel/tracing").mkdir(parents=True)
    (tmp_path / "kernel/tracing/uprobe_events").write_text("")
    preflight.check_uprobes(str(tmp_path))


def test_uprobe_pmu_is_enough(tmp_path):
    d = tmp_path / "bus/event_source/devices/uprobe"
    d.mkdir(parents=True)
    (d / "type").write_text("9\n")
    preflight.check_uprobes(str(tmp_path))


def test_missing_headers_name_the_package_and_bootstrap(tmp_path):
    with pytest.raises(MissingFeature) as e:
        preflight.check_headers("6.18.0-test", root=str(tmp_path))
    assert "linux-headers-6.18.0-test" in str(e.value) and "scripts/bootstrap" in str(e.value)
    inc = tmp_path / "lib/modules/6.18.0-test/source/include/linux"
    inc.mkdir(parents=True)
    (inc / "kconfig.h").write_text("")
    preflight.check_headers("6.18.0-test", root=str(tmp_path))


def test_missing_btf_names_the_kernel_option(tmp_path):
    with pytest.raises(MissingFeature, match="CONFIG_DEBUG_INFO_BTF"):
        preflight.check_btf(str(tmp_path))
    (tmp_path / "kernel/btf").mkdir(parents=True)
    (tmp_path / "kernel/btf/vmlinux").write_text("")
    preflight.check_btf(str(tmp_path))
