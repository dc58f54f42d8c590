"""libbpf as the oracle: every object libbpf 1.1 can load is loaded by our
loader and by ``bpftool prog loadall``, and the instructions the kernel holds
for each program (its xlated dump) must be identical.  The only difference
allowed is where an ld_imm64 points at a map: the kernel dumps the map's id
there, so both sides are normalised to the map's (name, type, offset)."""

import contextlib
import os
import shutil
import struct
import subprocess
import uuid

import pytest

from pybpfload.kernel.bpf_object import BPFObject
from pybpfload.kernel.maps import Map
from pybpfload.kernel.programs import Program
from conftest import OBJECTS, PREBUILT

pytestmark = pytest.mark.root

#: objects libbpf 1.1 refuses, with the reason
NOT_FOR_LIBBPF = {
    "legacy.bpf.o": "legacy 'maps' section map definitions (libbpf 1.0+ refuses them)",
    "subprogs.bpf.o": "a static function in a program section (libbpf refuses it)",
    "verifier_reject.bpf.o": "rejected by the verifier on purpose",
    "core_kernel_unguarded.bpf.o": "rejected on purpose (an unguarded missing field)",
    "core_reloc.bpf.o": "CO-RE test input for a hand-made target, not for this kernel",
}

CASES = sorted([p for p in OBJECTS.glob("*.bpf.o")] + list(PREBUILT.glob("*.bpf.o")))

_INSN = struct.Struct("<BBhi")
LD_IMM64 = 0x18
PSEUDO_MAP_SRCS = (1, 2, 5, 6)   # MAP_FD, MAP_VALUE, MAP_IDX, MAP_IDX_VALUE


def normalised(xlated):
    """Instructions as tuples; map references as ('map', name, type, offset)."""
    out, i, n = [], 0, len(xlated) // 8
    names = {}
    while i < n:
        code, regs, off, imm = _INSN.unpack_from(xlated, i * 8)
        if code == LD_IMM64 and (regs >> 4) in PSEUDO_MAP_SRCS and i + 1 < n:
            imm2 = _INSN.unpack_from(xlated, (i + 1) * 8)[3]
            if imm not in names:
                with Map.from_id(imm) as m:
                    names[imm] = (m.info.name, m.info.type)
            out.append(("map", code, regs, off) + names[imm] + (imm2,))
            i += 2
            continue
        out.append((code, regs, off, imm))
        i += 1
    return out


@contextlib.contextmanager
def by_name_pins(path):
    """Remove the maps libbpf and we pin by name (LIBBPF_PIN_BY_NAME) in
    /sys/fs/bpf, unless they were there before."""
    from pybpfload.obj.elf import read_object_file
    from pybpfload.obj.spec import PIN_BY_NAME
    spec = read_object_file(path)
    pins = [f"/sys/fs/bpf/{m.name}" for m in spec.maps.values() if m.pinning == PIN_BY_NAME]
    existed = {p for p in pins if os.path.exists(p)}
    try:
        yield
    finally:
        for p in pins:
            if p not in existed and os.path.exists(p):
                os.unlink(p)


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.name)
def test_same_instructions_as_libbpf(path):
    if path.name in NOT_FOR_LIBBPF:
        pytest.skip(NOT_FOR_LIBBPF[path.name])
    pin = f"/sys/fs/bpf/pybpfload-oracle-{uuid.uuid4().hex[:10]}"
    os.mkdir(pin)
    try:
        with by_name_pins(path):
            res = subprocess.run(["bpftool", "prog", "loadall", str(path), pin],
                                 capture_output=True, text=True)
            assert res.returncode == 0, res.stderr[-3000:]
            with BPFObject(path) as obj:
                obj.load()
                assert sorted(os.listdir(pin)) == sorted(obj.programs)
                for name, ours in obj.programs.items():
                    with Program.from_pin(os.path.join(pin, name)) as theirs:
                        assert ours.program.info().type == theirs.info().type
                        mine = normalised(ours.program.xlated())
                        libbpf = normalised(theirs.xlated())
                        assert len(mine) == len(libbpf), name
                        diff = [(i, a, b) for i, (a, b) in enumerate(zip(mine, libbpf))
                                if a != b]
                        assert not diff, f"{name}: first differences {diff[:5]}"
    finally:
        shutil.rmtree(pin, ignore_errors=True)


def test_normalisation_sees_map_differences():
    """The normaliser keeps what matters: two different maps never compare equal."""
    from pybpfload.obj.spec import MapSpec
    a = MapSpec(name="oracle_a", type=2, key_size=4, value_size=4, max_entries=1)
    b = MapSpec(name="oracle_b", type=2, key_size=4, value_size=4, max_entries=1)
    with Map.create(a) as ma, Map.create(b) as mb:
        def ld(map_id):
            return (_INSN.pack(LD_IMM64, 1 << 4 | 1, 0, map_id) + _INSN.pack(0, 0, 0, 0))
        assert normalised(ld(ma.info.id)) != normalised(ld(mb.info.id))
        assert normalised(ld(ma.info.id)) == normalised(ld(ma.info.id))
