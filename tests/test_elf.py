"""The ELF reader, SEC() names and map/global-data specs, checked against the
facts llvm-readelf reports about the committed test objects and against the
names and flags libbpf 1.1 gives the same objects' maps."""

import json
import os
import re
import shutil
import struct
import subprocess
import sys

import pytest

from pybpfload.errors import ConfigError, ELFError, ParseError, UnknownSectionError
from pybpfload.obj import elf, insn, maps, sections, spec
from pybpfload.obj.maps import get_variable, set_variable

from conftest import OBJECTS

OBJS = ["globals", "subprogs", "maps", "legacy"]


def read(name):
    return elf.read_object_file(OBJECTS / f"{name}.bpf.o")


def readelf_funcs(name):
    """{function: (section index, size)} from llvm-readelf."""
    if not shutil.which("llvm-readelf"):
        pytest.skip("llvm-readelf not installed")
    out = subprocess.run(["llvm-readelf", "-s", "-W", str(OBJECTS / f"{name}.bpf.o")],
                         check=True, capture_output=True, text=True).stdout
    funcs = {}
    for line in out.splitlines():
        f = line.split()
        if len(f) == 8 and f[3] == "FUNC":
            funcs[f[7]] = (int(f[6]), int(f[2]))
    return funcs


# -- programs and functions ----------------------------------------------------

@pytest.mark.parametrize("name", OBJS)
def test_every_function_is_a_program_or_subprogram_of_its_size(name):
    obj = read(name)
    funcs = readelf_funcs(name)
    seen = {}
    for pname, p in obj.programs.items():
        seen[pname] = insn.slot_count(p.instructions)
    for fname, body in obj.functions.items():
        seen[fname] = insn.slot_count(body)
    assert seen == {f: size // 8 for f, (_, size) in funcs.items()}


def test_programs_of_subprogs_object():
    obj = read("subprogs")
    assert sorted(obj.programs) == ["entry_a", "entry_b", "entry_c"]
    # static and global functions of .text, and a static one in a program section
    assert sorted(obj.functions) == ["global_helper", "leaf", "local_in_section",
                                     "loop_cb", "middle"]
    a = obj.programs["entry_a"]
    assert (a.section, a.type, a.attach_kind, a.attach_to) == (
        "tp/syscalls/sys_enter_getpid", 5, "tracepoint", "syscalls/sys_enter_getpid")
    c = obj.programs["entry_c"]
    assert (c.type, c.attach_kind, c.attach_to) == (17, "raw_tracepoint", "sys_enter")
    assert obj.license == "GPL" and a.license == "GPL"
    # the entry carries its own symbol name
    assert a.instructions[0].symbol == "entry_a"


def test_several_programs_in_one_section_and_version():
    obj = read("legacy")
    assert [(p.name, p.section) for p in obj.programs.values()] == [
        ("first", "tracepoint/syscalls/sys_enter_getpid"),
        ("second", "tracepoint/syscalls/sys_enter_getpid")]
    assert obj.kernel_version == 0x060C00
    assert obj.license == "Dual BSD/GPL"
    # each program stops where its function ends: both end in exit
    for p in obj.programs.values():
        assert p.instructions[-1].is_exit()


def test_relocations_name_their_symbols():
    obj = read("globals")
    refs = [(i.reference, i.ref_offset) for i in obj.programs["use_globals"].instructions
            if i.reference]
    # variables by name, with their offset in the section; the string literal
    # by its section symbol
    assert ("target_pid", 0) in refs
    assert ("threshold", 4) in refs
    assert ("flags_cfg", 8) in refs
    assert ("prefix", 16) in refs
    assert ("big_bss", 8) in refs
    assert (".rodata.str1.1", 0) in refs
    assert len(refs) == 10  # as many as llvm-objdump -r shows for the section


def test_call_references_resolved_to_function_names():
    obj = read("subprogs")
    calls = [i.reference for i in obj.programs["entry_a"].instructions
             if i.is_bpf_to_bpf_call() or i.is_func_reference()]
    assert calls == ["loop_cb", "middle"]  # callback (ld_imm64) then direct call
    cb = [i for i in obj.programs["entry_a"].instructions if i.is_func_reference()][0]
    assert cb.src == insn.BPF_PSEUDO_FUNC
    # unrelocated call within .text (middle -> leaf) and within a program section
    assert [i.reference for i in obj.functions["middle"] if i.is_call() and i.src == 1] == \
        ["leaf", "leaf"]
    assert [i.reference for i in obj.programs["entry_c"].instructions if i.is_call()] == \
        ["local_in_section"]


def test_reading_is_deterministic():
    data = (OBJECTS / "maps.bpf.o").read_bytes()
    a, b = elf.read_object(data, "maps"), elf.read_object(data, "maps")
    assert list(a.maps) == sorted(a.maps) == list(b.maps)
    assert [repr(i) for i in a.programs["use_maps"].instructions] == \
        [repr(i) for i in b.programs["use_maps"].instructions]


def test_debug_relocations_are_never_read():
    """Corrupting every .rel.debug_* section changes nothing: they are skipped."""
    data = bytearray((OBJECTS / "globals.bpf.o").read_bytes())
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shnum, shstrndx = struct.unpack_from("<HH", data, 0x3C)
    names_off = struct.unpack_from("<Q", data, shoff + shstrndx * 64 + 0x18)[0]
    corrupted = 0
    for i in range(shnum):
        h = shoff + i * 64
        name_off, = struct.unpack_from("<I", data, h)
        end = data.index(b"\0", names_off + name_off)
        name = data[names_off + name_off:end].decode()
        if name.startswith(".rel.debug"):
            off, size = struct.unpack_from("<QQ", data, h + 0x18)
            data[off:off + size] = b"\xff" * size
            corrupted += 1
    assert corrupted > 3
    obj = elf.read_object(bytes(data), "globals")
    assert obj.programs["use_globals"].instructions == read("globals").programs[
        "use_globals"].instructions


# -- errors ------------------------------------------------------------------------

def test_not_elf():
    with pytest.raises(ELFError, match="not an ELF"):
        elf.read_object(b"hello world" * 10)


def test_wrong_machine_and_class():
    data = bytearray((OBJECTS / "globals.bpf.o").read_bytes())
    bad = bytearray(data)
    struct.pack_into("<H", bad, 18, 62)  # x86-64
    with pytest.raises(ELFError, match="not BPF"):
        elf.read_object(bytes(bad))
    bad = bytearray(data)
    bad[4] = 1  # 32-bit
    with pytest.raises(ELFError, match="64-bit"):
        elf.read_object(bytes(bad))
    bad = bytearray(data)
    bad[5] = 2  # big endian
    with pytest.raises(ELFError, match="little-endian"):
        elf.read_object(bytes(bad))



def _all_objects():
    root = OBJECTS.parent.parent
    return sorted(OBJECTS.glob("*.bpf.o")) + sorted((root / "prebuilt").glob("*.bpf.o"))


@pytest.mark.parametrize("path", _all_objects(), ids=lambda p: p.name)
def test_sections_match_pyelftools_elffile(path):
    """The section table read through pyelftools' ELFStructs is the one its
    ELFFile gives: index, name, type, flags, size, link, info and contents."""
    from elftools.elf.elffile import ELFFile
    data = path.read_bytes()
    ours = elf._read_sections(data)
    with open(path, "rb") as f:
        ef = ELFFile(f)
        theirs = []
        for i in range(ef.num_sections()):
            sec = ef.get_section(i)
            h = sec.header
            body = b"" if h["sh_type"] in ("SHT_NOBITS", "SHT_NULL") else sec.data()
            theirs.append((i, sec.name, h["sh_flags"], h["sh_size"], h["sh_link"],
                           h["sh_info"], body))
    assert len(ours) == len(theirs) > 5
    assert [(s.index, s.name, s.flags, s.size, s.link, s.info, s.data) for s in ours] == theirs
    assert {s.type for s in ours} >= {elf.SHT_PROGBITS, elf.SHT_SYMTAB, elf.SHT_STRTAB}


def test_extended_section_count_and_bad_section_header_table():
    """e_shnum 0 means "the count is section 0's sh_size" (the ELF ABI's rule
    for >= 0xff00 sections); a header table past the end of the file or with
    too small entries is an ELFError."""
    data = (OBJECTS / "globals.bpf.o").read_bytes()
    want = elf.read_object(data)
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shnum, = struct.unpack_from("<H", data, 0x3C)
    ext = bytearray(data)
    struct.pack_into("<H", ext, 0x3C, 0)
    struct.pack_into("<Q", ext, shoff + 0x20, shnum)      # section 0's sh_size
    got = elf.read_object(bytes(ext))
    assert sorted(got.programs) == sorted(want.programs) and sorted(got.maps) == sorted(want.maps)
    bad = bytearray(data)
    struct.pack_into("<Q", bad, 0x28, len(data) + 64)
    with pytest.raises(ELFError, match="past the end"):
        elf.read_object(bytes(bad))
    bad = bytearray(data)
    struct.pack_into("<H", bad, 0x3A, 16)                 # e_shentsize
    with pytest.raises(ELFError, match="too small"):
        elf.read_object(bytes(bad))
    bad = bytearray(data)
    struct.pack_into("<Q", bad, 0x28, len(data) - 10)     # last header cut off
    with pytest.raises(ELFError):
        elf.read_object(bytes(bad))


def test_reading_imports_no_dwarf_reader():
    """An object is read without importing pyelftools' ELFFile and the DWARF
    and unwinding readers it pulls in (start-up time of every tool)."""
    code = ("import sys\n"
            "from pybpfload.obj import elf\n"
            "spec = elf.read_object_file(sys.argv[1])\n"
            "assert spec.programs\n"
            "print(sorted(m for m in sys.modules if m.startswith(('elftools.dwarf', "
            "'elftools.ehabi', 'elftools.elf.elffile'))))\n")
    out = subprocess.run([sys.executable, "-c", code, str(OBJECTS / "globals.bpf.o")],
                         capture_output=True, text=True, check=True,
                         cwd=str(OBJECTS.parent.parent))
    assert out.stdout.strip() == "[]"

def test_unknown_section_is_named():
    data = (OBJECTS / "subprogs.bpf.o").read_bytes()
    bad = data.replace(b"raw_tp/sys_enter\0", b"bogus/sys_enter\0\0")
    assert bad != data
    with pytest.raises(UnknownSectionError, match="bogus/sys_enter"):
        elf.read_object(bad)


def test_missing_file():
    with pytest.raises(ELFError, match="cannot read"):
        elf.read_object_file("/nonexistent/x.bpf.o")


# -- SEC() names ---------------------------------------------------------------------

@pytest.mark.parametrize("sec,prog_type,attach_type,kind,target,sleepable", [
    ("tp/sched/sched_process_exec", 5, 0, "tracepoint", "sched/sched_process_exec", False),
    ("tracepoint/syscalls/sys_enter_read", 5, 0, "tracepoint", "syscalls/sys_enter_read",
     False),
    ("raw_tp/sys_enter", 17, 0, "raw_tracepoint", "sys_enter", False),
    ("raw_tracepoint/sched_switch", 17, 0, "raw_tracepoint", "sched_switch", False),
    ("raw_tp.w/bpf_test_finish", 24, 0, "raw_tracepoint_writable", "bpf_test_finish", False),
    ("tp_btf/sched_switch", 26, 23, "tp_btf", "sched_switch", False),
    ("kprobe/do_sys_open", 2, 0, "kprobe", "do_sys_open", False),
    ("kretprobe/do_sys_open", 2, 0, "kretprobe", "do_sys_open", False),
    ("uprobe/bin/bash:readline", 2, 0, "uprobe", "bin/bash:readline", False),
    ("uprobe.s/bin/bash:readline", 2, 0, "uprobe", "bin/bash:readline", True),
    ("socket", 1, 0, "socket", "", False),
    ("xdp", 6, 37, "xdp", "", False),
    ("tc", 3, 0, "tc", "", False),
    ("classifier", 3, 0, "tc", "", False),
    ("cgroup_skb/ingress", 8, 0, "cgroup_skb", "ingress", False),
    ("cgroup_skb/egress", 8, 1, "cgroup_skb", "egress", False),
    ("perf_event", 7, 0, "perf_event", "", False),
    ("fentry/do_unlinkat", 26, 24, "fentry", "do_unlinkat", False),
    ("fentry.s/do_unlinkat", 26, 24, "fentry", "do_unlinkat", True),
    ("fexit/do_unlinkat", 26, 25, "fexit", "do_unlinkat", False),
    ("fexit.s/do_unlinkat", 26, 25, "fexit", "do_unlinkat", True),
    ("lsm/file_open", 29, 27, "lsm", "file_open", False),
    ("lsm.s/file_open", 29, 27, "lsm", "file_open", True),
    ("iter/task", 26, 28, "iter", "task", False),
    ("iter.s/task", 26, 28, "iter", "task", True),
    ("syscall", 31, 0, "syscall", "", False),
    ("struct_ops", 27, 0, "struct_ops", "", False),
    ("struct_ops.s/x", 27, 0, "struct_ops", "x", True),
])
def test_section_names(sec, prog_type, attach_type, kind, target, sleepable):
    k = sections.classify(sec)
    assert (k.prog_type, k.expected_attach_type, k.attach_kind, k.attach_to, k.sleepable) == \
        (prog_type, attach_type, kind, target, sleepable)


@pytest.mark.parametrize("sec", ["bogus", "tp/noslash", "kprobe", "kprobe.s/f", "xdp.s",
                                 "cgroup_skb/sideways", "tp", ".text.x", ""])
def test_bad_section_names(sec):
    with pytest.raises(UnknownSectionError) as exc:
        sections.classify(sec)
    assert repr(sec) in str(exc.value) and "\n" not in str(exc.value)


# -- maps ----------------------------------------------------------------------------

def test_global_data_maps_match_libbpf():
    """Names and flags as libbpf 1.1 (bpftool prog loadall) creates them."""
    obj = read("globals")
    got = {n: (m.section, m.value_size, m.flags, m.freeze) for n, m in obj.maps.items()}
    assert got == {
        "globals.rodata": (".rodata", 24, 0x480, True),
        "globals.data": (".data", 8, 0x400, False),
        "globals.bss": (".bss", 40, 0x400, False),
        ".data.custom": (".data.custom", 4, 0x400, False),
        ".rodata.custom": (".rodata.custom", 4, 0x480, True),
        ".rodata.str1.1": (".rodata.str1.1", 8, 0x480, True),
    }
    for m in obj.maps.values():
        assert (m.type, m.key_size, m.max_entries) == (spec.MAP_TYPES["array"], 4, 1)
        assert len(m.data) == m.value_size
    assert obj.maps["globals.data"].data == struct.pack("<Q", 42)
    assert obj.maps["globals.bss"].data == bytes(40)
    assert bytes(obj.maps[".rodata.str1.1"].data) == b"pid %d\n\0"
    assert obj.maps["globals.rodata"].data[16:19] == b"abc"


@pytest.mark.parametrize("obj_name,section,expected", [
    ("globals", ".rodata", "globals.rodata"),
    ("averyveryverylongname", ".rodata", "averyvery.rodata"[:8] + ".rodata"),
    ("x", ".bss", "x.bss"),
    ("obj", ".data.a_very_long_custom_name", ".data.a_very_lo"),
    ("my-obj", ".data", "my_obj.data"),
])
def test_data_map_names(obj_name, section, expected):
    name = maps.data_map_name(obj_name, section)
    assert name == expected and len(name) <= 15


def test_variables():
    obj = read("globals")
    v = obj.variables
    assert (v["target_pid"].section, v["target_pid"].offset, v["target_pid"].size) == \
        (".rodata", 0, 4)
    assert (v["threshold"].offset, v["threshold"].size) == (4, 2)
    assert (v["big_bss"].section, v["big_bss"].offset, v["big_bss"].size) == (".bss", 8, 32)
    assert v["custom_ro"].section == ".rodata.custom" and v["custom_ro"].is_const
    assert not v["counter"].is_const
    if obj.btf is not None:
        assert obj.btf.size_of(v["prefix"].type_id) == 8
        assert obj.btf.size_of(v["counter"].type_id) == 8


def test_set_variable():
    obj = read("globals")
    set_variable(obj, "target_pid", 1234)
    assert get_variable(obj, "target_pid") == struct.pack("<I", 1234)
    set_variable(obj, "prefix", b"xyz\0\0\0\0\0")
    assert obj.maps["globals.rodata"].data[16:24] == b"xyz\0\0\0\0\0"
    set_variable(obj, "counter", 2 ** 64 - 1)
    assert obj.maps["globals.data"].data == b"\xff" * 8
    # neighbours untouched
    assert get_variable(obj, "flags_cfg") == struct.pack("<Q", 7)
    if obj.btf is not None:
        set_variable(obj, "threshold", -2)  # s16 in BTF: signed
        assert get_variable(obj, "threshold") == struct.pack("<h", -2)
        with pytest.raises(ConfigError, match="does not fit"):
            set_variable(obj, "threshold", 40000)
    with pytest.raises(ConfigError, match="does not fit"):
        set_variable(obj, "target_pid", -1)  # u32
    with pytest.raises(ConfigError, match="'prefix' is 8 bytes"):
        set_variable(obj, "prefix", b"abc")
    with pytest.raises(ConfigError, match="no global variable 'nope'"):
        set_variable(obj, "nope", 1)


def test_legacy_maps():
    obj = read("legacy")
    got = {n: (m.type, m.key_size, m.value_size, m.max_entries, m.flags)
           for n, m in obj.maps.items()}
    assert got == {"legacy_hash": (1, 4, 8, 128, 0), "legacy_array": (2, 4, 4, 2, 0)}


def test_btf_defined_maps():
    obj = read("maps")
    if obj.btf is None:
        pytest.skip("BTF support not available")
    m = obj.maps
    assert sorted(m) == ["counts", "events", "inner_a", "inner_b", "outer", "outer_hash",
                         "percpu", "perf_events", "pinned_lru", "sized"]
    c = m["counts"]
    assert (c.type, c.key_size, c.value_size, c.max_entries, c.flags) == (1, 8, 24, 1024, 1)
    assert obj.btf.name_of(c.key_type_id) == "key_t"
    assert obj.btf.name_of(c.value_type_id) == "val_t"
    assert (m["sized"].key_size, m["sized"].value_size, m["sized"].key_type_id) == (4, 8, 0)
    assert m["percpu"].is_percpu
    assert m["pinned_lru"].pinning == spec.PIN_BY_NAME and m["counts"].pinning == 0
    assert (m["events"].type, m["events"].max_entries) == (27, 4096)
    pe = m["perf_events"]
    assert (pe.type, pe.key_size, pe.value_size, pe.max_entries) == (4, 4, 4, 0)
    outer = m["outer"]
    assert (outer.type, outer.key_size, outer.value_size, outer.max_entries) == (12, 4, 4, 3)
    assert (outer.inner.type, outer.inner.key_size, outer.inner.value_size,
            outer.inner.max_entries) == (2, 4, 8, 4)
    assert outer.contents == [(0, "inner_a"), (2, "inner_b")]
    oh = m["outer_hash"]
    assert (oh.type, oh.inner.type, oh.inner.max_entries, oh.contents) == (13, 1, 16, [])


def test_maps_section_without_btf_is_an_error():
    data = (OBJECTS / "maps.bpf.o").read_bytes()
    bad = data.replace(b".BTF\0", b".XTF\0")  # hide the BTF section
    assert bad != data
    with pytest.raises(ParseError, match="BTF"):
        elf.read_object(bad)


@pytest.mark.parametrize("name", OBJS)
def test_committed_objects_are_what_the_sources_build(name, tmp_path):
    """The committed objects are those their sources build (run make after editing)."""
    if not shutil.which("clang"):
        pytest.skip("clang not installed")
    root = OBJECTS.parent.parent
    out = tmp_path / f"{name}.bpf.o"
    subprocess.run(["clang", "-g", "-O2", "-target", "bpf", "-mcpu=v3", "-Wall", "-Werror",
                    "-Ibpf/include", f"-fdebug-prefix-map={root}=.", "-fno-ident",
                    "-Itests/bpf", "-c", f"tests/bpf/{name}.bpf.c", "-o", str(out)],
                   cwd=root, check=True)
    assert out.read_bytes() == (OBJECTS / f"{name}.bpf.o").read_bytes()


# -- libbpf as oracle ------------------------------------------------------------------

def _bpftool_maps():
    out = subprocess.run(["bpftool", "-j", "map", "show"], check=True, capture_output=True,
                         text=True).stdout
    return {m["id"]: m for m in json.loads(out or "[]")}


@pytest.mark.root
@pytest.mark.parametrize("name", ["globals", "maps"])
def test_maps_match_what_libbpf_creates(name, tmp_path):
    """bpftool prog loadall (libbpf) creates the same maps: names, types, sizes, flags.

    (subprogs.bpf.o is not comparable: libbpf 1.1 refuses its static function
    in a program section; legacy.bpf.o neither: libbpf 1.x dropped "maps".)
    """
    if not shutil.which("bpftool"):
        pytest.skip("bpftool not installed")
    from pybpfload.kernel.bpffs import ensure_bpffs
    from pybpfload.kernel.features import possible_cpus

    bpffs = ensure_bpffs()
    pin_dir = f"{bpffs}/pybpfload_test_elf_{os.getpid()}_{name}"
    obj = read(name)
    # libbpf pins PIN_BY_NAME maps as <bpffs>/<name>: those pins are ours to remove
    map_pins = [f"{bpffs}/{n}" for n, m in obj.maps.items() if m.pinning]
    if any(os.path.exists(p) for p in map_pins):
        pytest.skip(f"a pin among {map_pins} already exists; libbpf would reuse it")
    before = set(_bpftool_maps())
    try:
        subprocess.run(["bpftool", "prog", "loadall", str(OBJECTS / f"{name}.bpf.o"),
                        pin_dir], check=True, capture_output=True, text=True)
        created = {m["name"]: m for i, m in _bpftool_maps().items() if i not in before}
    finally:
        shutil.rmtree(pin_dir, ignore_errors=True)
        for p in map_pins:
            if os.path.exists(p):
                os.unlink(p)
    for mname, m in obj.maps.items():
        kname = mname[:15]
        got = created.get(kname)
        assert got is not None, (kname, sorted(created))
        entries = m.max_entries or len(possible_cpus())
        assert (spec.MAP_TYPES[got["type"]], got["bytes_key"], got["bytes_value"],
                got["max_entries"], got["flags"]) == (
            m.type, m.key_size, m.value_size, entries, m.flags), mname
