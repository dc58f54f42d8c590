"""Offline CO-RE against a second kernel: Debian's 6.1, whose BTF was copied
out of a real boot (``tests/data/btf/vmlinux-6.1.0-57-cloud-amd64.btf.xz``,
see tests/qemu/refresh_data.py).

No kernel, no root: every prebuilt object is linked and relocated against
the 6.1 BTF with ``relocate_core`` and compared with two oracles that do not
use our BTF reader: libbpf's patches for the very same objects in that kernel
(recorded by ``bpftool -d prog loadall`` in the guest), and ``bpftool btf
dump ... format raw`` of the 6.1 BTF for the fields the tools depend on.
"""

import hashlib
import json
import lzma
import pathlib
import re
import shutil
import subprocess

import pytest

from pybpfload.obj import core, link
from pybpfload.obj.btf import BTF
from pybpfload.obj.elf import read_object

from conftest import OBJECTS, PREBUILT

RELEASE = "6.1.0-57-cloud-amd64"
DATA = pathlib.Path(__file__).resolve().parent / "data" / "btf"
BTF_XZ = DATA / f"vmlinux-{RELEASE}.btf.xz"
LIBBPF = DATA / f"core-{RELEASE}.json"
OBJECT_PATHS = sorted(PREBUILT.glob("*.bpf.o")) + [OBJECTS / "core_kernel.bpf.o"]

#: what libbpf relocated in the 6.1 guest (the shared qemu notes) — and the
#: offsets are not this host's (6.18: 1280, 1268, 1840)
KNOWN_61 = {
    "field byte offset of struct task_struct.real_parent": 2432,
    "field byte offset of struct task_struct.tgid": 2420,
    "field byte offset of struct task_struct.nsproxy": 3064,
}


@pytest.fixture(scope="module")
def btf61_raw():
    return lzma.decompress(BTF_XZ.read_bytes())


@pytest.fixture(scope="module")
def btf61(btf61_raw):
    return BTF.parse(btf61_raw)


@pytest.fixture(scope="module")
def libbpf61():
    return json.loads(LIBBPF.read_text())


def relocate_all(path, target):
    """{program:insn -> value}, {description -> set of values}, [poisoned program:insn]."""
    spec = read_object(path.read_bytes())
    cache = core.CoreCache()
    patched, by_desc, poisoned = {}, {}, []
    for pname in spec.programs:
        insns = link.link_program(spec, pname)
        for r in core.relocate_core(insns, spec.btf, target, pname, cache):
            key = f"{pname}:{r.insn_index}"
            if r.poisoned:
                poisoned.append(key)
                by_desc.setdefault(r.description, set()).add("poisoned")
            else:
                patched[key] = r.value
                by_desc.setdefault(r.description, set()).add(r.value)
    return patched, by_desc, sorted(poisoned)


def test_the_data_is_the_61_kernel(btf61, btf61_raw):
    assert len(btf61_raw) > 3_000_000
    assert btf61.find("task_struct")
    # the 6.1 task_struct is larger than the one this code was written on
    (tid,) = [t for t in btf61.find("task_struct") if btf61.kind_of(t) == 4]
    assert btf61.size_of(tid) == 9728


@pytest.mark.parametrize("path", OBJECT_PATHS, ids=lambda p: p.name)
def test_same_patches_as_libbpf_in_61(path, btf61, libbpf61):
    patched, _, poisoned = relocate_all(path, btf61)
    want = libbpf61["libbpf"][path.name]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if libbpf61["objects_sha256"].get(path.name) != digest:
        pytest.skip(f"{path.name} was rebuilt after the 6.1 libbpf data was recorded "
                    "(regenerate: python3 tests/qemu/refresh_data.py)")
    assert sorted(want["poisoned"]) == poisoned
    # libbpf relocates each program before appending subprograms: the keys of
    # the entry function's instructions are the same on both sides
    assert patched == want["patched"]


@pytest.mark.parametrize("path", OBJECT_PATHS, ids=lambda p: p.name)
def test_every_object_relocates_in_61(path, btf61):
    """Whatever the object: only guarded, known-absent fields are poisoned."""
    _, by_desc, poisoned = relocate_all(path, btf61)
    for desc, values in by_desc.items():
        if "poisoned" in values:
            # the only absent field on 6.1 is the post-6.15 kernfs_node.__parent
            assert "kernfs_node" in desc and ".__parent" in desc, desc
    for desc, value in KNOWN_61.items():
        if desc in by_desc:
            assert by_desc[desc] == {value}, desc


def raw_offsets(btf_file, wanted):
    """{(struct, member): byte offset} from ``bpftool btf dump format raw``."""
    out = subprocess.run(["bpftool", "btf", "dump", "file", str(btf_file), "format", "raw"],
                         check=True, capture_output=True, text=True).stdout
    found, cur = {}, None
    head = re.compile(r"^\[\d+\] STRUCT '([^']*)'")
    member = re.compile(r"^\t'([^']*)' type_id=\d+ bits_offset=(\d+)")
    for line in out.splitlines():
        m = head.match(line)
        if m:
            cur = m.group(1) if m.group(1) in {s for s, _ in wanted} else None
            continue
        m = member.match(line)
        if m and cur and (cur, m.group(1)) in wanted and (cur, m.group(1)) not in found:
            found[(cur, m.group(1))] = int(m.group(2)) // 8
    return found


def test_offsets_agree_with_bpftool_raw_dump(btf61_raw, tmp_path):
    if shutil.which("bpftool") is None:
        pytest.skip("bpftool not installed")
    btf_file = tmp_path / "vmlinux-6.1"
    btf_file.write_bytes(btf61_raw)
    _, by_desc, _ = relocate_all(OBJECTS / "core_kernel.bpf.o", BTF.parse(btf61_raw))
    wanted = {("task_struct", f) for f in ("real_parent", "tgid", "nsproxy", "thread_pid",
                                           "cgroups")} | {("css_set", "dfl_cgrp"),
                                                          ("cgroup", "kn"), ("pid", "level")}
    dump = raw_offsets(btf_file, wanted)
    assert set(dump) == wanted
    for (struct, field), off in dump.items():
        assert by_desc[f"field byte offset of struct {struct}.{field}"] == {off}
    for desc, value in KNOWN_61.items():
        assert by_desc[desc] == {value}
