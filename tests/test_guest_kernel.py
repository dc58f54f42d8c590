"""The loader and the tools on a second kernel: Debian's 6.1 under qemu.

One boot per test session (~40 s under software emulation): the guest runs
``tests/qemu/guest_checks.py``, which loads and attaches every prebuilt object
with our loader, asks libbpf (bpftool) to relocate the same objects, runs
``classify --json`` around a host exec and an ``unshare -p -f`` exec, counts a
child's getppid() calls with syscalls.bpf.o, and reports JSON over a second
serial port.  These tests judge that report.  Deselect with ``-m 'not guest'``.
"""

import hashlib
import lzma
import os
import pathlib
import sys

import pytest

from pybpfload.obj import core, link
from pybpfload.obj.elf import read_object

from conftest import OBJECTS, PREBUILT, ROOT

sys.path.insert(0, str(ROOT / "tests" / "qemu"))
import guest          # noqa: E402
import refresh_data   # noqa: E402

pytestmark = [pytest.mark.guest, pytest.mark.slow]

README = ROOT / "README.md"
REAL_PARENT = "field byte offset of struct task_struct.real_parent"


@pytest.fixture(scope="module")
def booted():
    """(GuestRun, report) of the one guest boot of this session."""
    try:
        guest.qemu_binary()
        guest.kernel()
        guest.base_image()
    except guest.GuestUnavailable as exc:
        pytest.skip(f"no guest kernel: {exc}")
    run, report = refresh_data.run_in_guest(btf=False, timeout=480)
    print(f"guest {run.kernel}: boot {run.boot_seconds}s, total {run.seconds:.1f}s, "
          f"checks {report and report['seconds']}")
    assert run.returncode == 0 and report is not None, \
        f"guest rc={run.returncode}\n{run.output[-4000:]}"
    return run, report


@pytest.fixture(scope="module")
def report(booted):
    return booted[1]


def section(report, name):
    sec = report[name]
    assert "_error" not in sec, sec.get("_traceback", sec["_error"])
    return sec


def test_the_guest_runs_61(booted):
    run, report = booted
    assert report["kernel"].startswith("6.1.")
    assert run.boot_seconds is not None


def test_every_prebuilt_object_loads_and_attaches(report):
    objs = section(report, "objects")
    names = sorted(p.name for p in PREBUILT.glob("*.bpf.o"))
    assert names and set(names) <= set(objs)
    for name in names:
        rec = objs[name]
        assert rec["loaded"] and rec["attached"], f"{name}: {rec.get('error')}"
        assert rec["programs"]


def test_core_patches_equal_libbpfs_in_the_guest(report):
    """Ours (in the guest, against its /sys/kernel/btf/vmlinux) and libbpf's."""
    objs, lib = section(report, "objects"), section(report, "libbpf")
    assert "_skipped" not in lib, lib
    compared = 0
    for name, want in lib.items():
        assert want["returncode"] == 0, f"libbpf failed on {name}: {want.get('stderr_tail')}"
        assert objs[name]["patched"] == want["patched"], name
        compared += len(want["patched"])
    assert lib["core_kernel.bpf.o"]["poisoned"]          # the guarded __parent access
    assert compared >= 60


def host_real_parent():
    """Our relocation of task_struct.real_parent against this host's kernel BTF."""
    from pybpfload.obj.btf import BTF
    try:
        host_btf = BTF.load_kernel()
    except OSError as exc:
        pytest.skip(f"cannot read this host's kernel BTF: {exc}")
    spec = read_object((OBJECTS / "core_kernel.bpf.o").read_bytes())
    values = set()
    for pname in spec.programs:
        for r in core.relocate_core(link.link_program(spec, pname), spec.btf, host_btf, pname):
            if r.description == REAL_PARENT:
                values.add(r.value)
    return values


def test_core_offsets_really_moved(report):
    objs = section(report, "objects")
    guest_values = set(objs["core_kernel.bpf.o"]["core"][REAL_PARENT])
    host_values = host_real_parent()
    print(f"task_struct.real_parent: {report['kernel']} -> {sorted(guest_values)}, "
          f"{os.uname().release} -> {sorted(host_values)}")
    assert len(guest_values) == 1 and len(host_values) == 1
    assert guest_values != host_values
    for name in ("classify.bpf.o",):
        assert set(objs[name]["core"][REAL_PARENT]) == guest_values


def test_classify_sees_host_and_unshare_execs(report):
    cls = section(report, "classify")
    host, ns = cls["host"], cls["unshare"]
    assert host is not None and ns is not None, cls["stderr_tail"]
    assert cls["returncode"] == 0
    for rec in (host, ns):
        assert rec["type"] == "host"
        assert rec["container_id"] is None and rec["runtime"] is None
        assert rec["comm"] == "echo" and rec["filename"] == "/bin/echo"
        assert rec["uid"] == 0 and rec["gid"] == 0
        assert rec["cgroup"] == "/" and rec["cgroup_v1"] == "/"
        assert rec["tid"] == rec["pid"] and rec["ppid"] > 0
    assert host["own_pidns"] is False and host["pidns_level"] == 0
    assert host["nspid"] == host["pid"]
    assert ns["own_pidns"] is True and ns["pidns_level"] == 1
    assert ns["nspid"] == 1 and ns["pid"] != 1
    assert ns["pidns"] != host["pidns"] and ns["mntns"] == host["mntns"]


def test_syscalls_counts_getppid_of_a_watched_cgroup(report):
    sc = section(report, "syscalls")
    assert sc["getppid"] == sc["calls"] == 1000
    # the child also made the read() that released it, and exit_group()
    assert sc["calls"] < sc["all_syscalls_in_cgroup"] < sc["calls"] + 10


def test_the_committed_61_btf_is_this_kernels(report):
    if report["kernel"] != "6.1.0-57-cloud-amd64":
        pytest.skip(f"the guest runs {report['kernel']}, the committed data is 6.1.0-57")
    data = lzma.decompress(refresh_data.btf_path(report["kernel"]).read_bytes())
    assert hashlib.sha256(data).hexdigest() == report["btf_sha256"]


def readme_row(release):
    for line in README.read_text().splitlines():
        if line.startswith(f"| {release} |"):
            return line
    return None


def test_readme_kernel_table_says_what_the_probes_found(report):
    section(report, "features")
    row = readme_row(report["kernel"])
    assert row is not None, ("README's 'Kernels tested' has no row for "
                             f"{report['kernel']}; run python3 tests/qemu/refresh_data.py")
    size = guest_btf_size(report)
    assert row == refresh_data.table_row(report, size)


def guest_btf_size(report):
    path = refresh_data.btf_path(report["kernel"])
    if path.exists():
        return len(lzma.decompress(path.read_bytes()))
    pytest.skip("no committed BTF for this guest kernel to size the table row")


@pytest.mark.root
def test_readme_kernel_table_row_of_this_host():
    row = readme_row(os.uname().release)
    if row is None:
        pytest.skip(f"README lists no row for this host's kernel {os.uname().release}")
    host = refresh_data.run_on_host("features")
    assert row == refresh_data.table_row(host, os.path.getsize("/sys/kernel/btf/vmlinux"))
