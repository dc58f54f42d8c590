"""Linking programs: subprogram layout and call offsets, map and global-data
references, func_info/line_info emission.  The root tests load every linked
program of the test objects into the running kernel (the verifier is the
oracle for call offsets and map references) and run the global-data program
to see that each variable lands at its offset."""

import dataclasses
import os
import struct

import pytest

from pybpfload.errors import RelocationError
from pybpfload.obj import elf, insn, link
from pybpfload.obj.maps import set_variable

from conftest import OBJECTS

OBJS = ["globals", "subprogs", "maps", "legacy"]


def read(name):
    return elf.read_object_file(OBJECTS / f"{name}.bpf.o")


def starts_of(insns):
    """{function name: slot} of the functions in a linked program."""
    out, slot = {}, 0
    for i in insns:
        if i.symbol:
            out[i.symbol] = slot
        slot += i.size
    return out


def calls_of(insns):
    """[(slot, target slot, reference)] of calls and function references."""
    out, slot = [], 0
    for i in insns:
        if i.is_bpf_to_bpf_call() or i.is_func_reference():
            imm = i.imm if i.is_call() else insn._s32(i.imm & 0xFFFFFFFF)
            out.append((slot, slot + imm + 1, i.reference))
        slot += i.size
    return out


@pytest.mark.parametrize("name", OBJS)
def test_every_call_lands_on_its_function(name):
    obj = read(name)
    for pname in obj.programs:
        linked = link.link_program(obj, pname)
        starts = starts_of(linked)
        assert linked[0].symbol == pname
        # each function once
        names = [i.symbol for i in linked if i.symbol]
        assert len(names) == len(set(names))
        for slot, target, ref in calls_of(linked):
            assert starts[ref] == target, (pname, slot, ref)


def test_transitive_subprograms_appended_once():
    obj = read("subprogs")
    a = link.link_program(obj, "entry_a")
    assert [i.symbol for i in a if i.symbol] == ["entry_a", "loop_cb", "middle", "leaf"]
    b = link.link_program(obj, "entry_b")
    assert [i.symbol for i in b if i.symbol] == ["entry_b", "global_helper", "middle", "leaf"]
    c = link.link_program(obj, "entry_c")
    assert [i.symbol for i in c if i.symbol] == ["entry_c", "local_in_section"]
    expected = sum(insn.slot_count(obj.functions[f]) for f in ("loop_cb", "middle", "leaf"))
    assert insn.slot_count(a) == insn.slot_count(obj.programs["entry_a"].instructions) + \
        expected
    # the callback is a BPF_PSEUDO_FUNC ld_imm64 after linking too
    cb = [i for i in a if i.is_func_reference()]
    assert len(cb) == 1 and cb[0].src == insn.BPF_PSEUDO_FUNC


def test_linking_does_not_change_the_spec():
    obj = read("subprogs")
    before = [(i.imm, i.src) for i in obj.functions["middle"]]
    link.link_program(obj, "entry_a")
    link.link_program(obj, "entry_b")
    assert [(i.imm, i.src) for i in obj.functions["middle"]] == before
    # the two programs place 'middle' at different slots, each with its own offsets
    a, b = link.link_program(obj, "entry_a"), link.link_program(obj, "entry_b")
    assert starts_of(a)["middle"] != starts_of(b)["middle"]


def test_map_and_data_references():
    obj = read("globals")
    linked = link.link_program(obj, "use_globals")
    refs = [(i.reference, i.src, i.imm) for i in linked if i.is_ld_imm64()]
    V = insn.BPF_PSEUDO_MAP_VALUE
    assert ("globals.rodata", V, 4 << 32) in refs      # threshold
    assert ("globals.rodata", V, 16 << 32) in refs     # prefix
    assert ("globals.bss", V, 8 << 32) in refs         # big_bss
    assert (".rodata.str1.1", V, 0) in refs
    assert obj.programs["use_globals"].maps_used == sorted(obj.maps)
    fds = {name: 100 + n for n, name in enumerate(sorted(obj.maps))}
    resolved = link.resolve_map_references(linked, fds)
    raw = insn.encode(resolved)
    # kernel ABI: first slot imm = fd, second slot imm = offset
    slot = 0
    seen = 0
    for i in resolved:
        if i.is_ld_imm64() and i.reference:
            lo, hi = struct.unpack_from("<i", raw, slot * 8 + 4)[0], \
                struct.unpack_from("<i", raw, slot * 8 + 12)[0]
            assert lo == fds[i.reference] and hi == i.ref_offset
            assert raw[slot * 8 + 1] >> 4 == V
            seen += 1
        slot += i.size
    assert seen == 10
    # the linked copies are not touched by resolving
    assert all(i.imm >> 32 == i.ref_offset for i in linked if i.is_ld_imm64())


def test_map_fd_references():
    obj = read("legacy")
    linked = link.link_program(obj, "first")
    refs = [(i.reference, i.src) for i in linked if i.is_ld_imm64()]
    assert refs == [("legacy_hash", insn.BPF_PSEUDO_MAP_FD)]
    resolved = link.resolve_map_references(linked, {"legacy_hash": 7, "legacy_array": 8})
    assert [i.imm for i in resolved if i.is_ld_imm64()] == [7]
    with pytest.raises(RelocationError, match="legacy_hash"):
        link.resolve_map_references(linked, {})


def test_unknown_program_and_function():
    obj = read("subprogs")
    with pytest.raises(RelocationError, match="no program 'nope'"):
        link.link_program(obj, "nope")
    del obj.functions["leaf"]
    with pytest.raises(RelocationError) as exc:
        link.link_program(obj, "entry_a")
    msg = str(exc.value)
    assert "'entry_a'" in msg and "instruction" in msg and "'leaf'" in msg


def test_unresolvable_call_names_the_index():
    obj = read("subprogs")
    body = obj.programs["entry_c"].instructions
    call = [n for n, i in enumerate(body) if i.is_call()][0]
    body[call].reference = None
    with pytest.raises(RelocationError, match=r"'entry_c': instruction 0 calls code"):
        link.link_program(obj, "entry_c")


def test_reference_to_unknown_symbol():
    obj = read("globals")
    ins = [i for i in obj.programs["use_globals"].instructions if i.reference][0]
    ins.reference = "not_there"
    with pytest.raises(RelocationError, match=r"'use_globals': instruction 3 refers to "
                                              r"'not_there'"):
        link.link_program(obj, "use_globals")


def test_func_and_line_info_follow_instructions():
    obj = read("subprogs")
    if obj.btf_ext is None:
        pytest.skip(".BTF.ext support not available")
    linked = link.link_program(obj, "entry_a")
    data, size = link.func_info_records(linked)
    recs = [struct.unpack_from("<II", data, o) for o in range(0, len(data), size)]
    starts = starts_of(linked)
    # one func_info per function, at its start, naming that function's BTF FUNC
    assert [r[0] for r in recs] == sorted(starts.values())
    for slot, type_id in recs:
        name = [n for n, s in starts.items() if s == slot][0]
        assert obj.btf.name_of(type_id) == name
    data, size = link.line_info_records(linked)
    assert size == 16 and len(data) % 16 == 0 and len(data) > 16 * 4
    slots = [struct.unpack_from("<I", data, o)[0] for o in range(0, len(data), size)]
    assert slots == sorted(slots) and slots[0] == 0
    assert max(slots) >= starts["leaf"]  # line info moved with the appended subprogram
    # the CO-RE record of 'middle' is carried to its new place
    core = [n for n, i in enumerate(linked) if i.core is not None]
    assert core and all(starts["middle"] <= insn.slot_count(linked[:n]) < starts["leaf"]
                        for n in core)


# -- against the kernel -------------------------------------------------------------

def create_maps(obj, stack):
    """Create every map of ``obj``; return {name: Map}."""
    from pybpfload.kernel.features import possible_cpus
    from pybpfload.kernel.maps import Map

    made = {}
    for name, m in obj.maps.items():
        s = m
        if m.type == 4 and not m.max_entries:
            s = dataclasses.replace(m, max_entries=len(possible_cpus()))
        inner_fd = None
        if m.inner is not None:
            inner = stack.enter_context(Map.create(m.inner))
            inner_fd = inner.fileno()
        made[name] = stack.enter_context(Map.create(s, inner_map_fd=inner_fd))
    for name, m in obj.maps.items():
        for key, target in m.contents:
            made[name].update(struct.pack("<I", key), struct.pack("<I", made[target].fileno()))
    return made


def load(obj, pname, made, stack, with_btf=None):
    from pybpfload.kernel.programs import load_program

    linked = link.link_program(obj, pname)
    insns = link.resolve_map_references(linked, {n: m.fileno() for n, m in made.items()})
    p = obj.programs[pname]
    kw = {}
    if with_btf is not None:
        fi, fs = link.func_info_records(linked)
        li, ls = link.line_info_records(linked)
        kw = dict(prog_btf_fd=with_btf, func_info=fi, func_info_rec_size=fs, line_info=li,
                  line_info_rec_size=ls)
    return stack.enter_context(load_program(
        p.type, insns, p.license, expected_attach_type=p.expected_attach_type, name=pname,
        kernel_version=p.kernel_version, **kw))


@pytest.mark.root
@pytest.mark.parametrize("name", OBJS)
def test_kernel_accepts_every_linked_program(name):
    import contextlib

    obj = read(name)
    with contextlib.ExitStack() as stack:
        made = create_maps(obj, stack)
        btf_fd = load_object_btf(obj, stack)
        for pname in obj.programs:
            linked = link.link_program(obj, pname)
            if btf_fd is None and any(i.is_func_reference() for i in linked):
                continue  # callbacks need func_info, which needs .BTF.ext support
            prog = load(obj, pname, made, stack, with_btf=btf_fd)
            assert prog.fileno() >= 0


def load_object_btf(obj, stack):
    """The object's BTF loaded into the kernel (fd), or None without .BTF.ext support."""
    from pybpfload.kernel.btf_load import load_btf
    from pybpfload.obj import btf as btf_mod

    if obj.btf_ext is None or not hasattr(btf_mod, "fixup_datasecs"):
        return None
    raw = btf_mod.fixup_datasecs(obj.btf.data, obj.section_sizes, obj.symbol_offsets)
    return stack.enter_context(load_btf(raw))


@pytest.mark.root
def test_kernel_accepts_func_and_line_info():
    import contextlib

    obj = read("subprogs")
    with contextlib.ExitStack() as stack:
        btf_fd = load_object_btf(obj, stack)
        if btf_fd is None:
            pytest.skip(".BTF.ext support not available")
        made = create_maps(obj, stack)
        for pname in ("entry_a", "entry_b", "entry_c"):
            load(obj, pname, made, stack, with_btf=btf_fd)


@pytest.mark.root
def test_global_data_lands_at_each_variables_offset():
    """Run use_globals on getpid(): every variable it touches changes as the C says."""
    import contextlib

    from pybpfload.kernel.attach import attach_tracepoint

    obj = read("globals")
    set_variable(obj, "target_pid", os.getpid())
    set_variable(obj, "flags_cfg", 1000)
    set_variable(obj, "prefix", b"Z" + bytes(7))
    with contextlib.ExitStack() as stack:
        made = create_maps(obj, stack)
        prog = load(obj, "use_globals", made, stack)
        stack.enter_context(attach_tracepoint(prog, "syscalls/sys_enter_getpid"))
        for _ in range(3):
            os.getpid()
        data = bytes(made["globals.data"].lookup(struct.pack("<I", 0)))
        bss = bytes(made["globals.bss"].lookup(struct.pack("<I", 0)))
        custom = bytes(made[".data.custom"].lookup(struct.pack("<I", 0)))
    counter, = struct.unpack("<Q", data)
    hits, = struct.unpack_from("<I", bss, 0)
    big = struct.unpack_from("<4Q", bss, 8)
    # other processes calling getpid are filtered out by target_pid
    assert hits >= 3
    assert counter == 42 + 1000 * hits
    assert big[os.getpid() & 3] == ord("Z") * hits
    assert sum(big) == ord("Z") * hits
    assert struct.unpack("<I", custom)[0] == 3 + 9 * hits
