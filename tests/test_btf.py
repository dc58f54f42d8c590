"""BTF parsing: a clang-built object, hand-built BTF for the kinds clang 14
cannot emit, the kernel's BTF against bpftool, the on-disk index cache, and
the raw-byte fixups (checked by the kernel's own BTF loader)."""

import ctypes
import os
import pathlib
import re
import shutil
import struct
import subprocess
import sys

import pytest
from elftools.elf.elffile import ELFFile

from pybpfload.errors import BTFError
from pybpfload.obj import btf as B
from pybpfload.obj import btf_cache

DATA = pathlib.Path(__file__).resolve().parent / "data" / "btf"
KINDS_OBJ = DATA / "kinds.bpf.o"
KERNEL = B.KERNEL_BTF_PATH


# -- helpers -------------------------------------------------------------------

def elf_section(path, name):
    with open(path, "rb") as f:
        sec = ELFFile(f).get_section_by_name(name)
        return sec.data() if sec is not None else None


def build_btf(types, strings, hdr_extra=b"", magic=0xEB9F):
    """Raw BTF from records: each type is (name_off, kind, vlen, kflag, size_or_type, extra words)."""
    body = b""
    for name_off, kind, vlen, kflag, sot, extra in types:
        info = kind << 24 | vlen | (kflag << 31)
        body += struct.pack("<III", name_off, info, sot) + struct.pack(f"<{len(extra)}I", *extra)
    hdr_len = 24 + len(hdr_extra)
    hdr = struct.pack("<HBBIIIII", magic, 1, 0, hdr_len, 0, len(body), len(body), len(strings))
    return hdr + hdr_extra + body + strings


class Strings:
    """A BTF string section builder: add(name) -> offset."""

    def __init__(self, start=b"\0"):
        self.blob = bytearray(start)

    def add(self, s):
        off = len(self.blob)
        self.blob += s.encode() + b"\0"
        return off


def kinds_btf():
    return B.BTF.parse(elf_section(KINDS_OBJ, ".BTF"))


def by_name(btf, name, kind=None):
    ids = btf.find(name, kind)
    assert len(ids) == 1, (name, ids)
    return btf[ids[0]]


# -- a real clang object -------------------------------------------------------

def test_object_kinds_and_members():
    btf = kinds_btf()
    assert btf.count == 48 and list(btf.ids()) == list(range(1, 48))
    flags = by_name(btf, "flags")
    assert isinstance(flags, B.Struct) and flags.kind == B.KIND_STRUCT and flags.size == 32
    assert btf.kind_flag_of(flags.id)
    m = {x.name: x for x in flags.members}
    assert (m["a"].bit_offset, m["a"].bitfield_size) == (0, 3)
    assert (m["b"].bit_offset, m["b"].bitfield_size) == (3, 5)
    assert (m["c"].bit_offset, m["c"].bitfield_size) == (8, 7)
    assert (m["wide"].bit_offset, m["wide"].bitfield_size) == (64, 0)
    assert isinstance(btf[m["f"].type], B.Float) and btf[m["d"].type].size == 8
    assert btf[m["a"].type].name == "u32" and btf.size_of(m["a"].type) == 4

    tags = {t.name: t for t in (btf[i] for i in btf.ids()) if t.kind == B.KIND_DECL_TAG}
    assert tags["flags_tag"].type == flags.id and tags["flags_tag"].component_idx == -1
    assert btf[tags["param_tag"].type].name == "helper" and tags["param_tag"].component_idx == 0

    holder = by_name(btf, "holder")
    hm = {x.name: x for x in holder.members}
    p = btf[hm["p"].type]
    assert isinstance(p, B.Restrict)
    target = btf[p.type].type                       # restrict -> ptr -> const
    assert btf.skip_mods(target) == btf.find("int")[0]
    user = btf[btf[hm["user_ptr"].type].type]
    assert isinstance(user, B.TypeTag) and user.name == "user"
    assert btf[btf[hm["fo"].type].type] == B.Fwd(28, B.KIND_FWD, "fwd_only", False)
    assert btf[btf[hm["fu"].type].type].is_union is True
    either = btf[hm["e"].type]
    assert isinstance(either, B.Union) and either.size == 8
    color = btf[hm["col"].type]
    assert color.values == (B.EnumValue("RED", 1), B.EnumValue("GREEN", 2),
                            B.EnumValue("BLUE", 0x7FFFFFFF)) and not color.signed
    arr = btf[hm["arr"].type]
    assert isinstance(arr, B.Array) and arr.nelems == 4 and btf.size_of(arr.id) == 48
    assert btf.size_of(holder.id) == 96 and btf.size_of(hm["p"].type) == 8

    helper = by_name(btf, "helper", B.KIND_FUNC)
    assert helper.linkage == B.LINKAGE_STATIC
    proto = btf[helper.type]
    assert isinstance(proto, B.FuncProto) and proto.params[0].name == "t"
    assert btf.name_of(proto.return_type) == "int"
    assert by_name(btf, "prog").linkage == B.LINKAGE_GLOBAL

    bss = by_name(btf, ".bss", B.KIND_DATASEC)
    assert [btf.name_of(v.type) for v in bss.vars] == ["holder_var", "buffer"]
    assert btf.size_of(bss.vars[0].type) == 96
    var = by_name(btf, "counter")
    assert isinstance(var, B.Var) and var.linkage == B.LINKAGE_GLOBAL


def test_types_are_immutable_and_cached():
    btf = kinds_btf()
    t = btf[5]
    assert btf.get(5) is t
    with pytest.raises(AttributeError):
        t.size = 1
    assert btf[0] == B.Void(0, 0, "") and btf.kind_of(0) == 0 and btf.name_of(0) == ""


@pytest.mark.parametrize("bad", [-1, 48, 10 ** 9, "5", None])
def test_bad_ids_raise_btferror(bad):
    btf = kinds_btf()
    with pytest.raises(BTFError):
        btf[bad]
    with pytest.raises(BTFError):
        btf.kind_of(bad)


def test_size_of_errors_and_typedef_chain():
    btf = kinds_btf()
    with pytest.raises(BTFError, match="has no size"):
        btf.size_of(btf.find("prog")[0])
    u64 = btf.find("u64")[0]
    assert btf.skip_mods_and_typedefs(u64) == btf.find("unsigned long long")[0]


def test_compile_fresh_object(tmp_path):
    """The same source compiled now parses to the committed object's types."""
    clang = shutil.which("clang")
    if not clang:
        pytest.skip("clang is not installed")
    out = tmp_path / "k.o"
    subprocess.run([clang, "-g", "-O2", "-target", "bpf", "-c", str(DATA / "kinds.bpf.c"),
                    "-o", str(out)], check=True)
    fresh = B.BTF.parse(elf_section(out, ".BTF"))
    old = kinds_btf()
    assert fresh.count == old.count
    assert [fresh[i] for i in fresh.ids()] == [old[i] for i in old.ids()]


# -- hand-built BTF --------------------------------------------------------------

def signed_enums_blob():
    s = Strings()
    int_ = (s.add("int"), B.KIND_INT, 0, 0, 4, [1 << 24 | 32])
    e32 = (s.add("e32"), B.KIND_ENUM, 2, 1, 4, [s.add("NEG"), 0xFFFFFFFB, s.add("POS"), 7])
    e64 = (s.add("e64"), B.KIND_ENUM64, 2, 1, 8,
           [s.add("BIG"), 0xFFFFFFFF, 0xFFFFFFFF, s.add("HUGE"), 0, 0x10])
    u64 = (s.add("u64e"), B.KIND_ENUM64, 1, 0, 8, [s.add("TOP"), 0, 0x80000000])
    return build_btf([int_, e32, e64, u64], bytes(s.blob))


def test_enum_signedness_and_enum64():
    btf = B.BTF.parse(signed_enums_blob())
    e32, e64, u64 = btf[2], btf[3], btf[4]
    assert e32.signed and e32.values == (B.EnumValue("NEG", -5), B.EnumValue("POS", 7))
    assert isinstance(e64, B.Enum64) and e64.signed
    assert e64.values == (B.EnumValue("BIG", -1), B.EnumValue("HUGE", 0x10 << 32))
    assert not u64.signed and u64.values[0].value == 1 << 63
    assert btf.size_of(3) == 8


def test_larger_header_is_honoured():
    s = Strings()
    blob = build_btf([(s.add("int"), B.KIND_INT, 0, 0, 4, [32])], bytes(s.blob), hdr_extra=b"\0" * 8)
    btf = B.BTF.parse(blob)
    assert btf.count == 2 and btf[1].name == "int" and btf[1].bits == 32


def test_big_endian_detected():
    blob = bytearray(build_btf([], b"\0"))
    blob[0:2] = b"\xeb\x9f"
    with pytest.raises(BTFError, match="big-endian"):
        B.BTF.parse(bytes(blob))


def test_unknown_kind_names_kind_and_id():
    s = Strings()
    blob = build_btf([(s.add("int"), B.KIND_INT, 0, 0, 4, [32]), (0, 25, 0, 0, 0, [])],
                     bytes(s.blob))
    with pytest.raises(BTFError, match=r"unknown BTF kind 25 in type id 2"):
        B.BTF.parse(blob)


def test_truncated_type_section():
    s = Strings()
    blob = build_btf([(s.add("x"), B.KIND_STRUCT, 2, 0, 8, [0, 0, 0])], bytes(s.blob))
    with pytest.raises(BTFError, match="truncated"):
        B.BTF.parse(blob)


def test_split_btf_ids_and_strings_continue_after_base():
    s = Strings()
    int_name, base_name, m_name = s.add("int"), s.add("base_s"), s.add("m")
    base_blob = build_btf([(int_name, B.KIND_INT, 0, 0, 4, [1 << 24 | 32]),
                           (base_name, B.KIND_STRUCT, 1, 0, 4, [m_name, 1, 0])],
                          bytes(s.blob))
    base = B.BTF.parse(base_blob)
    split_strings = Strings(b"")
    base_len = base.str_len
    name = split_strings.add("mod_s") + base_len
    member = split_strings.add("field") + base_len
    split_blob = build_btf([(name, B.KIND_STRUCT, 2, 0, 16, [member, 2, 0, m_name, 1, 64]),
                            (0, B.KIND_PTR, 0, 0, 3, [])], bytes(split_strings.blob))
    split = B.BTF.parse(split_blob, base=base)
    assert split.first_id == 3 and split.count == 5 and list(split.ids()) == [3, 4]
    mod = split[3]
    assert mod.name == "mod_s" and [m.name for m in mod.members] == ["field", "m"]
    assert split[mod.members[0].type].name == "base_s"      # base id reachable through split
    assert split.size_of(4) == 8 and split.name_of(1) == "int"
    assert split.find("mod_s") == [3] and split.find("int") == [1]
    assert split.find("int", include_base=False) == []
    with pytest.raises(BTFError):
        split[5]


def test_find_essential_flavors():
    s = Strings()
    types = [(s.add(n), B.KIND_STRUCT, 0, 0, 4, []) for n in
             ("foo", "foo___v2", "foo___bar___baz", "foobar", "xfoo", "foo____x")]
    types.append((s.add("foo"), B.KIND_TYPEDEF, 0, 0, 1, []))
    btf = B.BTF.parse(build_btf(types, bytes(s.blob)))
    assert btf.find("foo") == [1, 7]
    assert btf.find("foo", B.KIND_STRUCT) == [1]
    assert btf.find_essential("foo") == [1, 2, 7]
    assert btf.find_essential(B.essential_name("foo___v3"), B.KIND_STRUCT) == [1, 2]
    assert btf.find_essential("foo___v3") == []
    assert btf.find_essential("foo___bar") == [3]
    assert B.essential_name("foo___bar___baz") == "foo___bar"
    assert B.essential_name("foo____x") == "foo____x"
    assert btf.find("nope") == [] and btf.find_essential("nope") == []


def test_name_offset_inside_another_string():
    """A producer may point a name into the middle of a longer string."""
    s = Strings()
    off = s.add("my_task_struct") + 3
    btf = B.BTF.parse(build_btf([(off, B.KIND_STRUCT, 0, 0, 4, [])], bytes(s.blob)))
    assert btf.name_of(1) == "task_struct" and btf.find("task_struct") == [1]
    assert btf.find("my_task_struct") == []


def test_find_agrees_with_full_scan_before_and_after_name_index():
    btf = kinds_btf()
    names = {}
    for i in btf.ids():
        names.setdefault(btf.name_of(i), []).append(i)
    for name, ids in names.items():
        if name:
            assert btf.find(name) == ids
    btf2 = kinds_btf()
    btf2._ensure_name_index()
    for name, ids in names.items():
        assert btf2.find(name) == ids



def test_name_index_orders_names_and_finds_flavors_and_odd_offsets():
    """The name index (type indexes sorted by name bytes) answers find and
    find_essential exactly like a scan: flavors, names pointing into the
    middle of a longer string, duplicate strings, a name offset outside the
    string section (never found, never an error)."""
    s = Strings()
    task = s.add("task_struct")
    v2 = s.add("task_struct___v2")
    dup = s.add("task_struct")             # the same name at a second offset
    tail = s.add("my_pid") + 3             # "pid" inside "my_pid"
    pid = s.add("pid")
    tricky = s.add("task_struct____x")     # '____x' is not a flavor suffix
    types = [(task, B.KIND_STRUCT, 0, 0, 4, []), (v2, B.KIND_STRUCT, 0, 0, 8, []),
             (0, B.KIND_PTR, 0, 0, 1, []), (dup, B.KIND_STRUCT, 0, 0, 4, []),
             (tail, B.KIND_TYPEDEF, 0, 0, 1, []), (pid, B.KIND_STRUCT, 0, 0, 4, []),
             (tricky, B.KIND_STRUCT, 0, 0, 4, []), (1 << 20, B.KIND_TYPEDEF, 0, 0, 1, [])]
    raw = build_btf(types, bytes(s.blob))
    for use_index in (False, True):
        btf = B.BTF.parse(raw)
        if use_index:
            btf._ensure_name_index()
            order = [btf._name_bytes(btf._words[btf._offsets[i]]) for i in btf._name_keys]
            assert order == sorted(order) and len(order) == 7     # all but the anonymous
        assert btf.find("task_struct") == [1, 4]
        assert btf.find("task_struct", B.KIND_PTR) == []
        assert btf.find("pid") == [5, 6] and btf.find("my_pid") == []
        assert btf.find("") == [3]
        assert btf.find_essential("task_struct") == [1, 2, 4]
        assert btf.find_essential("task_struct", B.KIND_STRUCT) == [1, 2, 4]
        assert btf.find_essential("task") == [] and btf.find("task_struct___") == []
        assert btf.find("task_struct\0") == []


def test_name_index_of_split_btf_reads_base_strings():
    """A split BTF's own types may be named by the base's strings: the name
    index sorts and finds them the same, with or without the index."""
    s = Strings()
    base_name = s.add("shared")
    base = B.BTF.parse(build_btf([(base_name, B.KIND_STRUCT, 0, 0, 4, [])], bytes(s.blob)))
    own = Strings(b"")
    zed = own.add("zed") + base.str_len
    alpha = own.add("alpha___x") + base.str_len
    blob = build_btf([(zed, B.KIND_STRUCT, 0, 0, 4, []), (base_name, B.KIND_TYPEDEF, 0, 0, 2, []),
                      (alpha, B.KIND_STRUCT, 0, 0, 4, []), (0, B.KIND_PTR, 0, 0, 2, [])],
                     bytes(own.blob))
    for use_index in (False, True):
        split = B.BTF.parse(blob, base=base)
        if use_index:
            split._ensure_name_index()
            assert [i + split.first_id for i in split._name_keys] == [4, 3, 2]
        assert split.find("shared") == [1, 3] and split.find("shared", include_base=False) == [3]
        assert split.find("zed") == [2] and split.find("") == [5]
        assert split.find_essential("alpha") == [4] and split.find_essential("shared") == [1, 3]


@pytest.mark.skipif(not os.path.exists(KERNEL), reason="no kernel BTF")
def test_name_index_agrees_with_a_scan_on_the_kernel_btf(tmp_path):
    """Every name of the kernel's BTF, through the cached index: find and
    find_essential return exactly the ids a linear scan finds."""
    B.BTF.load_kernel(cache_dir=str(tmp_path))
    btf = B.BTF.load_kernel(cache_dir=str(tmp_path))
    assert btf.from_cache
    names, essential = {}, {}
    for i in btf.ids():
        name = btf.name_of(i)
        names.setdefault(name, []).append(i)
        essential.setdefault(B.essential_name(name), []).append(i)
    for name, ids in names.items():
        assert btf.find(name) == ids, name
    for name in ["task_struct", "nf_conn", "cgroup", "pid_namespace"] + [
            B.essential_name(n) for n in names if B.essential_name(n) != n]:
        assert btf.find_essential(name) == sorted(essential.get(name, [])), name
    assert btf.find("no_such_type_anywhere") == [] and btf.find_essential("zzzz") == []

# -- the kernel's BTF against bpftool --------------------------------------------

needs_kernel_btf = pytest.mark.skipif(not os.path.exists(KERNEL), reason="no kernel BTF")
needs_bpftool = pytest.mark.skipif(not shutil.which("bpftool"), reason="bpftool is not installed")


def bpftool_raw(*ids):
    out = subprocess.run(["bpftool", "btf", "dump", "file", KERNEL, "format", "raw"],
                         check=True, capture_output=True, text=True).stdout
    blocks, current = {}, None
    for line in out.splitlines():
        m = re.match(r"\[(\d+)\] (\S+) '([^']*)'(.*)", line)
        if m:
            current = int(m.group(1))
            blocks[current] = [line]
        elif current is not None:
            blocks[current].append(line)
    return blocks


@pytest.fixture(scope="module")
def kernel_raw():
    if not shutil.which("bpftool") or not os.path.exists(KERNEL):
        pytest.skip("needs bpftool and kernel BTF")
    return bpftool_raw()


@needs_kernel_btf
@needs_bpftool
def test_kernel_btf_matches_bpftool(kernel_raw, tmp_path):
    btf = B.BTF.load_kernel(cache_dir=str(tmp_path))
    assert btf.count - 1 == max(kernel_raw)

    ts_id = btf.find("task_struct", B.KIND_STRUCT)[0]
    head, *members = kernel_raw[ts_id]
    ts = btf[ts_id]
    assert f"STRUCT 'task_struct' size={ts.size} vlen={len(ts.members)}" in head
    for line, m in zip(members, ts.members):
        mm = re.match(r"\s*'([^']*)' type_id=(\d+) bits_offset=(\d+)(?: bitfield_size=(\d+))?", line)
        assert (mm.group(1), int(mm.group(2)), int(mm.group(3)), int(mm.group(4) or 0)) == \
            (m.name, m.type, m.bit_offset, m.bitfield_size)

    enum_id = btf.find("bpf_prog_type", B.KIND_ENUM)[0]
    head, *values = kernel_raw[enum_id]
    enum = btf[enum_id]
    assert [re.match(r"\s*'(\w+)' val=(-?\d+)", v).groups() for v in values] == \
        [(v.name, str(v.value)) for v in enum.values]

    func_id = btf.find("do_sys_openat2", B.KIND_FUNC)[0]
    proto_id = btf[func_id].type
    head, *params = kernel_raw[proto_id]
    proto = btf[proto_id]
    assert f"ret_type_id={proto.return_type} vlen={len(proto.params)}" in head
    assert [re.match(r"\s*'([^']*)' type_id=(\d+)", p).groups() for p in params] == \
        [(p.name, str(p.type)) for p in proto.params]

    # a sample of kinds and names over the whole id range
    for tid in range(1, btf.count, 997):
        m = re.match(r"\[(\d+)\] (\S+) '([^']*)'", kernel_raw[tid][0])
        assert B.KIND_NAMES[btf.kind_of(tid)].upper() == m.group(2)
        assert (btf.name_of(tid) or "(anon)") == m.group(3)


# -- the on-disk cache -------------------------------------------------------------

@needs_kernel_btf
def test_cache_is_used_the_second_time(tmp_path):
    first = B.BTF.load_kernel(cache_dir=str(tmp_path))
    assert not first.from_cache
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].stat().st_size > 4 * first.count
    second = B.BTF.load_kernel(cache_dir=str(tmp_path))
    assert second.from_cache
    assert second.count == first.count
    ts = second.find("task_struct", B.KIND_STRUCT)
    assert ts == first.find("task_struct", B.KIND_STRUCT)
    assert second[ts[0]] == first[ts[0]]


@needs_kernel_btf
def test_corrupt_cache_is_rebuilt(tmp_path):
    B.BTF.load_kernel(cache_dir=str(tmp_path))
    (cache_file,) = tmp_path.iterdir()
    blob = bytearray(cache_file.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    cache_file.write_bytes(bytes(blob))
    again = B.BTF.load_kernel(cache_dir=str(tmp_path))
    assert not again.from_cache
    assert B.BTF.load_kernel(cache_dir=str(tmp_path)).from_cache
    cache_file.write_bytes(b"junk")
    assert not B.BTF.load_kernel(cache_dir=str(tmp_path)).from_cache


@needs_kernel_btf
def test_other_build_id_misses(tmp_path):
    data = open(KERNEL, "rb").read()
    real = btf_cache.cache_key(data)
    assert real is not None
    other = btf_cache.cache_key(data, build_id=b"\x01" * 20)
    assert other != real
    btf = B.BTF.parse(data)
    btf._ensure_name_index()
    assert btf_cache.store_index(str(tmp_path), real, (btf._offsets, btf._name_keys))
    assert btf_cache.load_index(str(tmp_path), real) is not None
    assert btf_cache.load_index(str(tmp_path), other) is None


@needs_kernel_btf
def test_symlink_in_cache_dir_is_not_followed(tmp_path):
    data = open(KERNEL, "rb").read()
    key = btf_cache.cache_key(data)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / btf_cache.cache_file_name(key)).symlink_to(victim)
    btf = B.BTF.load_kernel(cache_dir=str(cache))
    assert not btf.from_cache and victim.read_bytes() == b"precious"
    # a symlinked cache directory is refused too
    link = tmp_path / "linkdir"
    link.symlink_to(cache)
    assert not B.BTF.load_kernel(cache_dir=str(link)).from_cache


def test_unwritable_cache_dir_is_ignored(tmp_path):
    if not os.path.exists(KERNEL):
        pytest.skip("no kernel BTF")
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    btf = B.BTF.load_kernel(cache_dir=str(blocker / "sub"))
    assert btf.count > 1000 and not btf.from_cache



@needs_kernel_btf
def test_cache_of_an_older_format_is_rebuilt(tmp_path):
    """A cache file written by another version (here: version 3's layout of
    u32 positions + u64 name_off keys) under the current key is ignored and
    replaced."""
    btf = B.BTF.load_kernel(cache_dir=str(tmp_path))
    (cache_file,) = tmp_path.iterdir()
    key = btf_cache.cache_key(btf.data)
    count = len(btf._offsets)
    payload = struct.pack(f"<{count}I", *btf._offsets).ljust((4 * count + 7) & ~7, b"\0")
    payload += bytes(8 * count)
    import zlib
    head = struct.pack("<8sII32sI", b"PYBTFIDX", 3, count, key, zlib.adler32(payload))
    cache_file.write_bytes(head.ljust(64, b"\0") + payload)
    assert btf_cache.load_index(str(tmp_path), key) is None
    assert not B.BTF.load_kernel(cache_dir=str(tmp_path)).from_cache
    again = B.BTF.load_kernel(cache_dir=str(tmp_path))
    assert again.from_cache and again.find("task_struct") == btf.find("task_struct")


@needs_kernel_btf
def test_cache_key_needs_no_hashlib(tmp_path):
    """The key is build id + size + CRC-32s: loading the kernel BTF (cold and
    cached) imports no hashlib and maps no libcrypto (~2.6 MB of RSS)."""
    code = ("import sys\n"
            "from pybpfload.obj import btf as B\n"
            "for _ in range(2):\n"
            "    btf = B.BTF.load_kernel(cache_dir=sys.argv[1])\n"
            "    assert btf.find('task_struct')\n"
            "maps = open('/proc/self/maps').read()\n"
            "print('hashlib' in sys.modules, 'libcrypto' in maps, btf.from_cache)\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                         text=True, check=True, cwd=str(pathlib.Path(__file__).parent.parent))
    assert out.stdout.split() == ["False", "False", "True"]
    data = open(KERNEL, "rb").read()
    key = btf_cache.cache_key(data)
    assert len(key) == 32 and key == btf_cache.cache_key(data)
    changed = bytearray(data)
    changed[-1] ^= 1
    assert btf_cache.cache_key(bytes(changed)) != key
    assert btf_cache.cache_key(data + b"\0") != key

def test_build_id_from_notes():
    def note(name, ntype, desc):
        pad = lambda b: b + b"\0" * (-len(b) % 4)  # noqa: E731
        return struct.pack("<III", len(name), len(desc), ntype) + pad(name) + pad(desc)
    notes = note(b"Xen\0", 1, b"abc") + note(b"GNU\0", 3, bytes(range(20)))
    assert btf_cache.parse_build_id(notes) == bytes(range(20))
    assert btf_cache.parse_build_id(notes[:30]) is None
    assert btf_cache.parse_build_id(b"") is None
    if os.path.exists(btf_cache.NOTES_PATH):
        assert len(btf_cache.kernel_build_id()) == 20


def test_default_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("PYBPFLOAD_CACHE_DIR", str(tmp_path))
    assert btf_cache.default_cache_dir() == str(tmp_path)


# -- raw-byte fixups ---------------------------------------------------------------

def test_fixup_datasecs():
    raw = elf_section(KINDS_OBJ, ".BTF")
    fixed = B.fixup_datasecs(raw, {".bss": 160, ".data": 4, ".rodata": 4},
                             {"holder_var": 0, "buffer": 96})
    assert len(fixed) == len(raw)
    btf = B.BTF.parse(fixed)
    bss = by_name(btf, ".bss")
    assert bss.size == 160 and [(v.offset, v.size) for v in bss.vars] == [(0, 96), (96, 64)]
    assert by_name(btf, "license").size == 0          # not named: left alone
    orig = kinds_btf()
    assert [btf[i] for i in btf.ids() if btf.kind_of(i) != B.KIND_DATASEC] == \
        [orig[i] for i in orig.ids() if orig.kind_of(i) != B.KIND_DATASEC]


def test_sanitize_keeps_ids_and_length():
    raw = elf_section(KINDS_OBJ, ".BTF")
    every = {"decl_tag", "type_tag", "float", "func_global", "datasec", "func"}
    out = B.sanitize(raw, every)
    assert len(out) == len(raw)
    btf, orig = B.BTF.parse(out), kinds_btf()
    assert btf.count == orig.count
    kinds = {btf.kind_of(i) for i in btf.ids()}
    assert not kinds & {B.KIND_DECL_TAG, B.KIND_TYPE_TAG, B.KIND_FLOAT, B.KIND_FUNC,
                        B.KIND_FUNC_PROTO, B.KIND_VAR, B.KIND_DATASEC}
    assert isinstance(btf[12], B.Struct) and btf[12].size == 4 and btf[12].members == ()
    assert isinstance(btf[25], B.Const) and btf[25].type == 3
    bss = btf[44]
    assert isinstance(bss, B.Struct) and bss.name == "_bss"
    assert [m.name for m in bss.members] == ["holder_var", "buffer"]
    assert B.sanitize(raw, set()) == raw
    static = B.BTF.parse(B.sanitize(raw, {"func_global"}))
    assert static[4].linkage == B.LINKAGE_STATIC and static[16].linkage == B.LINKAGE_STATIC
    with pytest.raises(BTFError, match="unknown kind name"):
        B.sanitize(raw, {"bogus"})


def test_sanitize_enum64_appends_placeholder():
    raw = signed_enums_blob()
    out = B.sanitize(raw, {"enum64"})
    btf = B.BTF.parse(out)
    assert btf.count == 6
    placeholder = btf[5]
    assert isinstance(placeholder, B.Int) and placeholder.size == 1
    u = btf[3]
    assert isinstance(u, B.Union) and u.size == 8
    assert [(m.name, m.type) for m in u.members] == [("BIG", 5), ("HUGE", 5)]
    assert btf[2] == B.BTF.parse(raw)[2]


# -- the kernel accepts what we produce ---------------------------------------------

BPF_BTF_LOAD = 18
SYS_BPF = 321


def kernel_btf_load(blob):
    """BPF_BTF_LOAD through raw bpf(2); returns (fd or -errno, verifier log)."""
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(blob)
    log = ctypes.create_string_buffer(1 << 16)
    attr = struct.pack("<QQIII", ctypes.addressof(buf), ctypes.addressof(log), len(blob),
                       len(log), 1)
    attr_buf = ctypes.create_string_buffer(attr, 128)
    fd = libc.syscall(SYS_BPF, BPF_BTF_LOAD, attr_buf, 128)
    if fd < 0:
        return -ctypes.get_errno(), log.value.decode(errors="replace")
    return fd, log.value.decode(errors="replace")


@pytest.mark.root
def test_kernel_accepts_fixed_object_btf_and_rejects_unfixed():
    import platform
    if platform.machine() != "x86_64":
        pytest.skip("bpf(2) syscall number used here is x86_64's")
    raw = elf_section(KINDS_OBJ, ".BTF")
    fd, log = kernel_btf_load(raw)
    if fd >= 0:
        os.close(fd)
    assert fd < 0, "the kernel should reject DATASECs of size 0"
    fixed = B.fixup_datasecs(raw, {".bss": 160, ".data": 4, ".rodata": 4, "license": 4},
                             {"holder_var": 0, "buffer": 96})
    fd, log = kernel_btf_load(fixed)
    assert fd >= 0, log
    os.close(fd)
    every = {"decl_tag", "type_tag", "float", "func_global", "datasec", "func"}
    fd, log = kernel_btf_load(B.sanitize(fixed, every))
    assert fd >= 0, log
    os.close(fd)
    fd, log = kernel_btf_load(B.sanitize(signed_enums_blob(), {"enum64"}))
    assert fd >= 0, log
    os.close(fd)
