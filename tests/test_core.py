"""CO-RE relocation (pybpfload.obj.core), checked without a kernel.

tests/objects/core_reloc.bpf.o is compiled against the "local" types of
tests/bpf/core_types.h; tests/objects/core_reloc.target.bpf.o is the same
source compiled with -DTARGET, whose .BTF is the target.  Every expected value
below is worked out by hand from the TARGET definitions in core_types.h (the
byte offsets are written next to each member there), never from pybpfload.
"""

import collections
import shutil
import struct
import subprocess

import pytest
from elftools.elf.elffile import ELFFile

from pybpfload.errors import BPFError, RelocationError
from pybpfload.obj import core
from pybpfload.obj import insn as insn_mod
from pybpfload.obj.btf import BTF
from pybpfload.obj.core import describe, relocate_core

from conftest import OBJECTS

LOCAL_OBJ = OBJECTS / "core_reloc.bpf.o"
TARGET_OBJ = OBJECTS / "core_reloc.target.bpf.o"

POISON = insn_mod.POISON_CALL_IMM
LDX_W, LDX_H, LDX_B, LDX_DW = 0x61, 0x69, 0x71, 0x79
STX_W = 0x63

# -- reading test objects (until elf.read_object attaches CO-RE records) ------

CoreRelo = collections.namedtuple("CoreRelo", "insn_off type_id access_str kind")


def section_data(path, name):
    with open(path, "rb") as f:
        sec = ELFFile(f).get_section_by_name(name)
        return None if sec is None else sec.data()


def btf_of(path):
    return BTF.parse(section_data(path, ".BTF"))


def parse_core_relos(ext, btf):
    """section name -> [CoreRelo] from .BTF.ext (its core_relo table)."""
    magic, _version, _flags, hdr_len = struct.unpack_from("<HBBI", ext, 0)
    assert magic == 0xEB9F
    core_off, core_len = struct.unpack_from("<II", ext, 24)
    pos = hdr_len + core_off
    end = pos + core_len
    rec_size, = struct.unpack_from("<I", ext, pos)
    pos += 4
    out = {}
    while pos < end:
        sec_off, count = struct.unpack_from("<II", ext, pos)
        pos += 8
        recs = out.setdefault(btf.string(sec_off), [])
        for _ in range(count):
            off, tid, acc, kind = struct.unpack_from("<IIII", ext, pos)
            recs.append(CoreRelo(off, tid, btf.string(acc), kind))
            pos += rec_size
    return out


def load_programs(path):
    """(local BTF, {section name: [Instruction]}) with ``.core`` attached.

    Uses the ELF reader; if it attached no CO-RE record (no .BTF.ext reader
    yet), decodes the sections and attaches .BTF.ext's records by byte offset
    itself (an ld_imm64 is 16 bytes)."""
    try:
        from pybpfload.obj.elf import read_object
        obj = read_object(open(path, "rb").read())
        progs = {p.section: p.instructions for p in obj.programs.values()}
        if any(i.core is not None for insns in progs.values() for i in insns):
            return obj.btf, progs
    except ImportError:
        pass
    btf = btf_of(path)
    relos = parse_core_relos(section_data(path, ".BTF.ext"), btf)
    progs = {}
    with open(path, "rb") as f:
        for sec in ELFFile(f).iter_sections():
            if sec.name not in relos:
                continue
            insns = insn_mod.decode(sec.data())
            by_off, off = {}, 0
            for ins in insns:
                by_off[off] = ins
                off += 8 * ins.size
            for r in relos[sec.name]:
                by_off[r.insn_off].core = r
            progs[sec.name] = insns
    return btf, progs


@pytest.fixture(scope="module")
def target():
    return btf_of(TARGET_OBJ)


@pytest.fixture
def local():
    """Fresh (local BTF, programs) for each test: relocation patches in place."""
    return load_programs(LOCAL_OBJ)


def run(local, target, section):
    lbtf, progs = local
    insns = progs[section]
    results = relocate_core(insns, lbtf, target, program_name=section.split("/")[-1])
    return insns, results


def by_description(results):
    """description -> list of results (clang may emit one relocation twice)."""
    out = collections.defaultdict(list)
    for r in results:
        out[r.description].append(r)
    return out


def insn_at(insns, slot):
    pos = 0
    for ins in insns:
        if pos == slot:
            return ins
        pos += ins.size
    raise AssertionError(f"no instruction at slot {slot}")


def values(results):
    """description -> the single value all its relocations agree on."""
    out = {}
    for desc, rs in by_description(results).items():
        vals = {r.value for r in rs}
        assert len(vals) == 1, (desc, vals)
        out[desc] = vals.pop()
    return out


# -- field offsets in loads and stores --------------------------------------------

def test_loads_and_stores_get_target_offsets(local, target):
    before = insn_mod.slot_count(local[1]["tp/test/fields"])
    insns, results = run(local, target, "tp/test/fields")
    expect = {  # description: (code after, offset after) from TARGET struct sample
        "field byte offset of struct sample.a": (LDX_W, 16),
        "field byte offset of struct sample.b": (LDX_DW, 0),
        "field byte offset of struct sample.usz": (LDX_H, 20),     # u32 -> u16: load shrinks
        "field byte offset of struct sample.in.y": (LDX_W, 56 + 8),
        "field byte offset of struct sample.ux": (LDX_W, 72 + 8),  # anon union in anon struct
        "field byte offset of struct sample.uy": (LDX_DW, 72 + 8),
        "field byte offset of struct sample.arr[2].y": (LDX_W, 96 + 2 * 16 + 8),
        "field byte offset of struct sample.name[3]": (LDX_B, 24 + 3),
        "field byte offset of struct sample.tail[5]": (LDX_W, 164 + 5 * 4),  # flexible array
        "field byte offset of struct sample.col": (LDX_W, 92),
        "field byte offset of struct sample.cnt": (STX_W, 160),
    }
    got = {r.description: (insn_at(insns, r.insn_index).code, insn_at(insns, r.insn_index).off)
           for r in results}
    assert got == expect
    assert not any(r.poisoned for r in results)
    assert insn_mod.slot_count(insns) == before


def test_signed_field_that_shrinks_is_poisoned(local, target):
    insns, results = run(local, target, "tp/test/signed_shrink")
    (r,) = results
    assert r.poisoned and r.value is None
    ins = insn_at(insns, r.insn_index)
    assert (ins.code, ins.src, ins.imm) == (insn_mod.CALL, 0, POISON)
    assert "size changed" in r.reason


def test_field_info_builtins(local, target):
    _, results = run(local, target, "tp/test/field_info")
    assert values(results) == {
        "field byte offset of struct sample.b": 0,
        "field byte size of struct sample.name": 32,
        "field byte size of struct sample.usz": 2,
        "field signedness of struct sample.a": 1,
        "field signedness of struct sample.usz": 0,
        "field existence of struct sample.a": 1,
        "field byte offset of struct sample[1].a": 168 + 16,  # root array index * sizeof
        "field byte offset of struct sample.arr[1]": 96 + 16,
        "field byte size of struct sample.arr[1]": 16,
    }


def test_bitfields(local, target):
    insns, results = run(local, target, "tp/test/bitfields")
    # TARGET: bf_u at bits 711..713, bf_s at 714..725, both in the u32 at byte 88
    assert values(results) == {
        "field byte offset of struct sample.bf_u": 88,
        "field byte size of struct sample.bf_u": 4,
        "field left shift of struct sample.bf_u": 64 - (711 + 3 - 88 * 8),
        "field right shift of struct sample.bf_u": 64 - 3,
        "field signedness of struct sample.bf_u": 0,
        "field byte offset of struct sample.bf_s": 88,
        "field byte size of struct sample.bf_s": 4,
        "field left shift of struct sample.bf_s": 64 - (714 + 12 - 88 * 8),
        "field right shift of struct sample.bf_s": 64 - 12,
        "field signedness of struct sample.bf_s": 1,
    }
    for r in results:   # every relocated value really is in its instruction
        assert insn_at(insns, r.insn_index).imm == r.value


def test_guarded_missing_field_poisons_the_access(local, target):
    before = insn_mod.encode(local[1]["tp/test/missing"])
    insns, results = run(local, target, "tp/test/missing")
    exists, access = results
    assert exists.description == "field existence of struct sample.removed"
    assert exists.value == 0 and insn_at(insns, exists.insn_index).imm == 0
    assert access.poisoned and access.reason == "field not found"
    ins = insn_at(insns, access.insn_index)
    assert (ins.code, ins.dst, ins.src, ins.off, ins.imm) == (insn_mod.CALL, 0, 0, 0, POISON)
    assert len(insn_mod.encode(insns)) == len(before)
    msg = core.poison_message(results, access.insn_index)
    assert msg == ("CO-RE relocation #1 for struct sample.removed in program missing "
                   "failed: field not found")
    assert core.poison_message(results, exists.insn_index) is None


def test_flavours(local, target):
    insns, results = run(local, target, "tp/test/flavours")
    got = {r.description: ("poisoned" if r.poisoned else r.value) for r in results}
    assert got == {
        "field existence of struct node___v2.__parent": 1,
        "field byte offset of struct node___v2.__parent": 8,   # TARGET struct node
        "field existence of struct node___v1.parent": 0,
        "field byte offset of struct node___v1.parent": "poisoned",
        "field byte offset of struct node___v2.name": 0,
    }
    (v2,) = [r for r in results if r.description.endswith("v2.__parent") and r.kind == 0]
    assert insn_at(insns, v2.insn_index).off == 8


def bpftool_type_id(path, name, kind="STRUCT"):
    """The id bpftool prints for a named type: an oracle independent of pybpfload."""
    if shutil.which("bpftool") is None:
        pytest.skip("bpftool not installed")
    out = subprocess.run(["bpftool", "btf", "dump", "file", str(path), "format", "raw"],
                         check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("[") and f"{kind} '{name}'" in line:
            return int(line[1:line.index("]")])
    raise AssertionError(f"{kind} {name} not in {path}")


def test_type_relocations(local, target):
    _, results = run(local, target, "tp/test/types")
    assert values(results) == {
        "target type id of struct sample": bpftool_type_id(TARGET_OBJ, "sample"),
        "local type id of struct sample": bpftool_type_id(LOCAL_OBJ, "sample"),
        "type existence of struct sample": 1,
        "type existence of struct local_only": 0,
        "type size of struct sample": 168,
        "type size of struct local_only": 0,      # libbpf: missing type -> 0, not poison
        "type existence of struct mt_same": 1,
        "type existence of struct mt_diff": 1,
        "type size of typedef inner_t": 16,
        "target type id of struct local_only": 0,
    }
    assert not any(r.poisoned for r in results)


def test_type_matches_is_stricter_than_exists(local, target):
    # clang 14 cannot emit TYPE_MATCHES: turn the two TYPE_EXISTS records
    # for mt_same / mt_diff into TYPE_MATCHES ones (their local value is 1 too)
    lbtf, progs = local
    for ins in progs["tp/test/types"]:
        if ins.core is not None and ins.core.kind == core.TYPE_EXISTS:
            if lbtf.name_of(ins.core.type_id) in ("mt_same", "mt_diff"):
                ins.core = ins.core._replace(kind=core.TYPE_MATCHES)
    _, results = run(local, target, "tp/test/types")
    got = values(results)
    assert got["type match of struct mt_same"] == 1   # target only adds a member
    assert got["type match of struct mt_diff"] == 0   # int a vs long a


def test_enum_values(local, target):
    before = insn_mod.slot_count(local[1]["tp/test/enums"])
    insns, results = run(local, target, "tp/test/enums")
    got = {r.description: ("poisoned" if r.poisoned else r.value) for r in results}
    assert got == {
        "enum value existence of enum color::BLUE": 1,
        "enum value existence of enum color::ORANGE": 0,
        "enum value of enum color::BLUE": 7,
        "enum value of enum color::GREEN": (-5) & (2 ** 64 - 1),
        "enum value of enum color::ORANGE": "poisoned",
    }
    green = [r for r in results if r.description.endswith("::GREEN")][0]
    assert insn_at(insns, green.insn_index).imm == -5          # ld_imm64, sign kept
    # the poisoned ld_imm64 became two one-slot poisoned calls: jumps unchanged
    orange = [r for r in results if r.poisoned][0]
    first = insn_at(insns, orange.insn_index)
    second = insn_at(insns, orange.insn_index + 1)
    assert first.code == second.code == insn_mod.CALL
    assert first.imm == second.imm == POISON
    assert insn_mod.slot_count(insns) == before


def test_ambiguous_candidates_are_an_error(local, target):
    with pytest.raises(RelocationError) as err:
        run(local, target, "tp/test/ambiguous")
    msg = str(err.value)
    assert "ambiguous" in msg and "struct amb.z" in msg
    assert "program ambiguous" in msg and "instruction #1" in msg


def test_agreeing_candidates_are_fine(local, target):
    insns, (r,) = run(local, target, "tp/test/agreeing")
    assert r.value == 8 and len(r.targets) == 2
    assert insn_at(insns, r.insn_index).off == 8


def test_self_relocation_changes_nothing():
    lbtf, progs = load_programs(LOCAL_OBJ)
    assert len(progs) >= 9
    for section, insns in progs.items():
        before = [i.copy() for i in insns]
        results = relocate_core(insns, lbtf, lbtf, section)
        assert results and not any(r.poisoned for r in results)
        # one exception, as in libbpf: clang emits 8 as the byte size of a
        # bitfield that libbpf (and we) read with the 4-byte load of its
        # storage unit; bitfield values are not validated against clang's.
        changed = {r.description: (r.old, r.new) for r in results if r.old != r.new}
        if section == "tp/test/bitfields":
            assert changed == {
                "field byte size of struct sample.bf_u": ((0xB7, 0, 8), (0xB7, 0, 4)),
                "field byte size of struct sample.bf_s": ((0xB7, 0, 8), (0xB7, 0, 4)),
            }
            continue
        assert insns == before, section
        assert not changed


# -- malformed records and instructions ---------------------------------------

def first_relocated(progs, section):
    return [i for i in progs[section] if i.core is not None][0]


@pytest.mark.parametrize("change, words", [
    (dict(kind=99), "unknown CO-RE relocation kind 99"),
    (dict(access_str="0:x"), "malformed access string"),
    (dict(access_str="0:-1"), "malformed access string"),
    (dict(access_str="0:99"), "member #99"),
    (dict(access_str=""), "malformed access string"),
    (dict(type_id=10 ** 6), ""),
])
def test_malformed_records_raise_relocation_error(local, target, change, words):
    lbtf, progs = local
    ins = first_relocated(progs, "tp/test/fields")
    ins.core = ins.core._replace(**change)
    with pytest.raises(RelocationError) as err:
        relocate_core(progs["tp/test/fields"], lbtf, target, "fields")
    assert words in str(err.value) and "program fields" in str(err.value)


def test_instruction_not_holding_the_local_value_is_rejected(local, target):
    lbtf, progs = local
    ins = first_relocated(progs, "tp/test/fields")   # s->a: off 0
    ins.off = 12
    with pytest.raises(RelocationError, match="offset is 12, expected 0"):
        relocate_core(progs["tp/test/fields"], lbtf, target, "fields")


def test_register_source_alu_is_rejected(local, target):
    lbtf, progs = local
    ins = first_relocated(progs, "tp/test/field_info")   # r2 = 8 (mov K)
    ins.code |= insn_mod.BPF_X
    with pytest.raises(RelocationError, match="register source"):
        relocate_core(progs["tp/test/field_info"], lbtf, target, "field_info")


def test_describe():
    lbtf, progs = load_programs(LOCAL_OBJ)
    relos = [i.core for p in progs.values() for i in p if i.core is not None]
    words = {describe(r, lbtf) for r in relos}
    assert "field byte offset of struct sample.arr[2].y" in words
    assert "enum value of enum color::GREEN" in words
    assert "type size of typedef inner_t" in words
    (first,) = [r for r in relos if describe(r, lbtf) == "field byte offset of struct sample.a"]
    bad = first._replace(access_str="0:77")
    assert describe(bad, lbtf) == "field byte offset of struct sample (bad access string)"
    assert "unknown relocation kind 42" in describe(first._replace(kind=42), lbtf)


def test_essential_name():
    assert core.essential_name("task_struct___v2") == "task_struct"
    assert core.essential_name("a___b___c") == "a___b"
    assert core.essential_name("__x___") == "__x___"
    assert core.essential_name("x____y") == "x____y"


hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(kind=st.integers(-2, 14), type_id=st.integers(0, 60),
       access=st.lists(st.integers(0, 40), min_size=0, max_size=6),
       junk=st.sampled_from(["", "a", ":", "1:", "x:0"]))
def test_any_record_fails_cleanly(kind, type_id, access, junk):
    """Whatever the record, relocation either works or raises a BPFError."""
    lbtf, progs = _FUZZ_LOCAL
    access_str = ":".join(map(str, access)) + junk
    for section in ("tp/test/fields", "tp/test/enums"):
        insns = [i.copy() for i in progs[section]]
        ins = [i for i in insns if i.core is not None][0]
        ins.core = CoreRelo(0, type_id, access_str, kind)
        try:
            relocate_core(insns, lbtf, _FUZZ_TARGET, section)
        except BPFError:
            pass
        describe(ins.core, lbtf)


_FUZZ_LOCAL = load_programs(LOCAL_OBJ)
_FUZZ_TARGET = btf_of(TARGET_OBJ)
