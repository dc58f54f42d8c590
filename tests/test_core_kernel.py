"""CO-RE against the running kernel's BTF, with two independent oracles:
the offsets ``bpftool btf dump file /sys/kernel/btf/vmlinux format raw``
prints, and what libbpf patches (``bpftool -d prog loadall`` logs every CO-RE
relocation).  The relocated program is then loaded into the kernel: the
verifier accepts it (the poisoned access is guarded, thus dead code), and
rejects the unguarded variant at the poisoned instruction, which
``poison_message`` explains.
"""

import os
import re
import shutil
import subprocess
import tempfile

import pytest

from pybpfload.errors import VerifierError
from pybpfload.obj import insn as insn_mod
from pybpfload.obj.btf import BTF
from pybpfload.obj.core import poison_message, relocate_core

from conftest import OBJECTS
from test_core import load_programs

VMLINUX = "/sys/kernel/btf/vmlinux"
KERNEL_OBJ = OBJECTS / "core_kernel.bpf.o"
UNGUARDED_OBJ = OBJECTS / "core_kernel_unguarded.bpf.o"
SECTION = "tracepoint/sched/sched_process_exec"
BPF_PROG_TYPE_TRACEPOINT = 5

pytestmark = pytest.mark.skipif(not os.path.exists(VMLINUX), reason="no kernel BTF")


def need_bpftool():
    if shutil.which("bpftool") is None:
        pytest.skip("bpftool not installed")


@pytest.fixture(scope="module")
def kernel_btf():
    return BTF.load_kernel()


@pytest.fixture(scope="module")
def raw_dump():
    """bpftool's raw dump of the kernel BTF: name -> (header line, {member: (bits, bitfield)})."""
    need_bpftool()
    out = subprocess.run(["bpftool", "btf", "dump", "file", VMLINUX, "format", "raw"],
                         check=True, capture_output=True, text=True).stdout
    types, cur = {}, None
    head = re.compile(r"^\[\d+\] (\w+) '([^']*)'")
    member = re.compile(r"^\t'([^']*)' (?:type_id=\d+ bits_offset=(\d+)(?: bitfield_size=(\d+))?|val=(-?\d+))")
    for line in out.splitlines():
        m = head.match(line)
        if m:
            key = (m.group(1), m.group(2))
            cur = None if key in types else types.setdefault(key, (line, {}))
            continue
        m = member.match(line)
        if m and cur is not None:
            if m.group(4) is not None:
                cur[1][m.group(1)] = int(m.group(4))
            else:
                cur[1][m.group(1)] = (int(m.group(2)), int(m.group(3) or 0))
    return types


def byte_off(raw_dump, struct, field):
    bits, _ = raw_dump[("STRUCT", struct)][1][field]
    return bits // 8


def relocated(kernel_btf, path=KERNEL_OBJ):
    lbtf, progs = load_programs(path)
    insns = progs[SECTION]
    return insns, relocate_core(insns, lbtf, kernel_btf, program_name="read_task")


def test_offsets_match_the_kernel_btf(kernel_btf, raw_dump):
    insns, results = relocated(kernel_btf)
    got = {}
    for r in results:
        got.setdefault(r.description, set()).add("poisoned" if r.poisoned else r.value)
    size_line = raw_dump[("STRUCT", "task_struct")][0]
    task_size = int(re.search(r"size=(\d+)", size_line).group(1))
    upid_size = int(re.search(r"size=(\d+)", raw_dump[("STRUCT", "upid")][0]).group(1))
    in_execve_bits, in_execve_width = raw_dump[("STRUCT", "task_struct")][1]["in_execve"]
    unit = 4      # in_execve is an 'unsigned int' bitfield
    in_execve_byte = in_execve_bits // 8 // unit * unit
    kn_fields = raw_dump[("STRUCT", "kernfs_node")][1]
    new_parent = "__parent" in kn_fields    # renamed in 6.15
    expect = {
        "field byte offset of struct task_struct.real_parent": {byte_off(raw_dump, "task_struct", "real_parent")},
        "field byte offset of struct task_struct.tgid": {byte_off(raw_dump, "task_struct", "tgid")},
        "field byte offset of struct task_struct.nsproxy": {byte_off(raw_dump, "task_struct", "nsproxy")},
        "field byte offset of struct task_struct.thread_pid": {byte_off(raw_dump, "task_struct", "thread_pid")},
        "field byte offset of struct task_struct.cgroups": {byte_off(raw_dump, "task_struct", "cgroups")},
        "field byte offset of struct css_set.dfl_cgrp": {byte_off(raw_dump, "css_set", "dfl_cgrp")},
        "field byte offset of struct cgroup.kn": {byte_off(raw_dump, "cgroup", "kn")},
        "field byte offset of struct pid.level": {byte_off(raw_dump, "pid", "level")},
        "field byte offset of struct pid.numbers[1].nr":
            {byte_off(raw_dump, "pid", "numbers") + upid_size + byte_off(raw_dump, "upid", "nr")},
        "field existence of struct kernfs_node___new.__parent": {int(new_parent)},
        "field byte offset of struct kernfs_node___new.__parent":
            {byte_off(raw_dump, "kernfs_node", "__parent") if new_parent else "poisoned"},
        "field existence of struct kernfs_node___old.parent": {int(not new_parent)},
        "field byte offset of struct kernfs_node___old.parent":
            {"poisoned" if new_parent else byte_off(raw_dump, "kernfs_node", "parent")},
        "field byte offset of struct task_struct.in_execve": {in_execve_byte},
        "field byte size of struct task_struct.in_execve": {unit},
        "field left shift of struct task_struct.in_execve":
            {64 - (in_execve_bits + in_execve_width - in_execve_byte * 8)},
        "field signedness of struct task_struct.in_execve": {0},
        "field right shift of struct task_struct.in_execve": {64 - in_execve_width},
        "enum value of enum cgroup_subsys_id::cpu_cgrp_id":
            {raw_dump[("ENUM", "cgroup_subsys_id")][1]["cpu_cgrp_id"]},
        "type size of struct task_struct": {task_size},
    }
    assert got == expect


def libbpf_core_log(path, pin_dir):
    """(insn index -> patched value, set of poisoned insn indexes) from libbpf's debug log."""
    proc = subprocess.run(["bpftool", "-d", "prog", "loadall", str(path), pin_dir],
                          capture_output=True, text=True)
    patched, poisoned = {}, set()
    pat = re.compile(r"prog '\w+': relo #\d+: patched insn #(\d+) \([^)]*\) (?:imm|off|imm64) "
                     r"(\d+) -> (\d+)$")
    poison = re.compile(r"prog '\w+': relo #\d+: substituting insn #(\d+) w/ invalid insn")
    for line in proc.stderr.splitlines():
        m = pat.search(line)
        if m:
            patched[int(m.group(1))] = int(m.group(3))
        m = poison.search(line)
        if m:
            poisoned.add(int(m.group(1)))
    return proc, patched, poisoned


@pytest.mark.root
def test_same_patches_as_libbpf(kernel_btf):
    need_bpftool()
    pin_dir = tempfile.mktemp(prefix="pybpfload-core-", dir="/sys/fs/bpf")
    try:
        proc, patched, poisoned = libbpf_core_log(KERNEL_OBJ, pin_dir)
        assert proc.returncode == 0, proc.stderr[-2000:]
    finally:
        shutil.rmtree(pin_dir, ignore_errors=True)
    assert not os.path.exists(pin_dir)
    _, results = relocated(kernel_btf)
    ours = {r.insn_index: r.value for r in results if not r.poisoned}
    assert len(ours) >= 19 and len(poisoned) == 1
    assert ours == patched
    assert {r.insn_index for r in results if r.poisoned} == poisoned


@pytest.mark.root
def test_kernel_loads_the_relocated_program(kernel_btf):
    from pybpfload.kernel.programs import load_program
    insns, results = relocated(kernel_btf)
    assert any(r.poisoned for r in results)     # a guarded, dead access
    prog = load_program(BPF_PROG_TYPE_TRACEPOINT, insn_mod.encode(insns), "GPL",
                        name="core_test")
    prog.close()


@pytest.mark.root
def test_reachable_poisoned_access_is_rejected_and_explained(kernel_btf):
    from pybpfload.kernel.programs import load_program
    lbtf, progs = load_programs(UNGUARDED_OBJ)
    insns = progs[SECTION]
    results = relocate_core(insns, lbtf, kernel_btf, program_name="unguarded")
    (bad,) = [r for r in results if r.poisoned]
    with pytest.raises(VerifierError) as err:
        load_program(BPF_PROG_TYPE_TRACEPOINT, insn_mod.encode(insns), "GPL", name="core_bad")
    log = err.value.log
    m = re.search(r"^(\d+): \(85\) call unknown#%d" % insn_mod.POISON_CALL_IMM, log, re.M)
    assert m, log[-1500:]
    assert int(m.group(1)) == bad.insn_index
    assert poison_message(results, int(m.group(1))) == (
        "CO-RE relocation #0 for struct kernfs_node___old.parent in program unguarded "
        "failed: field not found")
