"""The BTF -> C header writer and the ``btf dump`` command.

* the header written from the running kernel's BTF compiles with clang
  (-target bpf, -Wall -Werror) and every struct/union size, member offset
  and typedef size in it is what the BTF says (clang's static asserts);
* classify/syscalls/floor built against it (-DUSE_VMLINUX_H) and against
  bpftool's vmlinux.h have the same instruction counts and the same CO-RE
  relocations (access strings resolved to field names);
* ``--format raw`` prints byte for byte what ``bpftool btf dump ... format
  raw`` prints, for the kernel and for every object in the repository;
* hand-made BTF: bitfields, anonymous members, enum sizes, ENUM64, function
  pointers, arrays of pointers, duplicate names, packed structs.
"""
import os
import shutil
import struct
import subprocess
import sys
import time

import pytest

from conftest import OBJECTS, PREBUILT, ROOT

from pybpfload.obj import btf as B
from pybpfload.obj.btf_c import HeaderWriter, _identifier, header_text

CLANG = shutil.which("clang")
BPFTOOL = shutil.which("bpftool") or "/usr/sbin/bpftool"
KERNEL_BTF = "/sys/kernel/btf/vmlinux"
needs_clang = pytest.mark.skipif(CLANG is None, reason="clang is not installed")
needs_kernel_btf = pytest.mark.skipif(not os.path.exists(KERNEL_BTF), reason="no kernel BTF")
needs_bpftool = pytest.mark.skipif(not os.path.exists(BPFTOOL), reason="bpftool is not installed")
#: types whose size differs on purpose: va_list is the compiler's, not the kernel's
VA_LIST_USERS = {"va_list", "warn_args", "__builtin_va_list", "va_format"}


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "pybpfload", *args], cwd=ROOT,
                          capture_output=True, **kw)


@pytest.fixture(scope="module")
def kernel_header(tmp_path_factory):
    if not os.path.exists(KERNEL_BTF):
        pytest.skip("no kernel BTF")
    out = tmp_path_factory.mktemp("ours") / "vmlinux.h"
    started = time.perf_counter()
    res = _cli("btf", "dump", "--format", "c", "--time", "-o", str(out), text=True)
    assert res.returncode == 0, res.stderr
    print(f"kernel BTF -> vmlinux.h in {time.perf_counter() - started:.2f}s ({res.stderr.strip()})")
    return out


def _compile(src, out, *flags):
    res = subprocess.run([CLANG, "-g", "-O2", "-target", "bpf", "-mcpu=v3", "-Wall", "-Werror",
                          *flags, "-c", str(src), "-o", str(out)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-4000:]
    return out


def _layout_asserts(btf, writer):
    lines = []
    for tid in range(1, btf.count):
        kind = btf.kind_of(tid)
        name = btf.name_of(tid)
        if not name or name in VA_LIST_USERS:
            continue
        if kind in (B.KIND_STRUCT, B.KIND_UNION):
            t = btf[tid]
            ctype = f"{'struct' if kind == B.KIND_STRUCT else 'union'} {writer.names[tid]}"
            lines.append(f'_Static_assert(sizeof({ctype}) == {t.size}, "{tid}");')
            for m in t.members:
                if m.name and not writer._bitfield_size(m):
                    lines.append(f"_Static_assert(__builtin_offsetof({ctype}, "
                                 f'{_identifier(m.name)}) == {m.bit_offset // 8}, "{tid}");')
        elif kind == B.KIND_TYPEDEF:
            target = btf.kind_of(btf.skip_mods_and_typedefs(tid))
            if target not in (B.KIND_FUNC_PROTO, B.KIND_UNKN, B.KIND_FWD):
                lines.append(f'_Static_assert(sizeof({writer.names[tid]}) == '
                             f'{btf.size_of(tid)}, "{tid}");')
    return lines


@needs_clang
@needs_kernel_btf
def test_kernel_header_compiles_with_exact_layouts(kernel_header, tmp_path):
    btf = B.BTF.load_kernel()
    checks = _layout_asserts(btf, HeaderWriter(btf))
    assert len(checks) > 10000
    src = tmp_path / "layout.c"
    src.write_text('#include "vmlinux.h"\n' + "\n".join(checks) + "\n")
    _compile(src, tmp_path / "layout.o", f"-I{kernel_header.parent}")


def _summary(path):
    """{program: (instruction count, [(insn, CO-RE relocation in words)])}."""
    from pybpfload.obj.core import describe
    from pybpfload.obj.elf import read_object_file

    spec = read_object_file(path)
    return {name: (len(p.instructions),
                   [(i, describe(ins.core, spec.btf)) for i, ins in enumerate(p.instructions)
                    if ins.core is not None])
            for name, p in spec.programs.items()}


@needs_clang
@needs_bpftool
@needs_kernel_btf
@pytest.mark.parametrize("name", ["classify", "syscalls", "floor"])
def test_programs_build_the_same_against_ours_and_bpftools(kernel_header, tmp_path, name):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    with open(theirs / "vmlinux.h", "wb") as f:
        subprocess.run([BPFTOOL, "btf", "dump", "file", KERNEL_BTF, "format", "c"],
                       stdout=f, check=True)
    objs = {}
    for label, inc in (("ours", kernel_header.parent), ("theirs", theirs)):
        objs[label] = _compile(ROOT / "bpf" / f"{name}.bpf.c", tmp_path / f"{label}.o",
                               "-DUSE_VMLINUX_H", f"-I{inc}", f"-I{ROOT / 'bpf' / 'include'}")
    ours, bpftools = _summary(objs["ours"]), _summary(objs["theirs"])
    assert ours == bpftools
    if name != "floor":
        assert any(relos for _, relos in ours.values())
    # and the object's struct names are the kernel's (CO-RE finds them)
    assert all("task_struct" in d or "bpf_raw" in d or "trace_event" in d or "kernfs" in d
               or "cgroup" in d or "css" in d or "pid" in d or "ns" in d or "mm" in d
               or "thread" in d for _, relos in ours.values() for _, d in relos)


@needs_bpftool
@pytest.mark.parametrize("path", [KERNEL_BTF] + sorted(
    str(p) for p in list(OBJECTS.glob("*.bpf.o")) + list(PREBUILT.glob("*.bpf.o"))))
def test_raw_format_is_bpftools(path):
    if not os.path.exists(path):
        pytest.skip(f"{path} is missing")
    ours = _cli("btf", "dump", path, "--format", "raw")
    assert ours.returncode == 0, ours.stderr
    theirs = subprocess.run([BPFTOOL, "btf", "dump", "file", path, "format", "raw"],
                            capture_output=True, check=True)
    assert ours.stdout == theirs.stdout


def test_missing_file_is_one_line():
    res = _cli("btf", "dump", "/nonexistent/btf", text=True)
    assert res.returncode == 1
    assert res.stderr.startswith("pybpfload: error: cannot read /nonexistent/btf")
    assert res.stderr.count("\n") == 1


# -- hand-made BTF -------------------------------------------------------------

class _Builder:
    """Raw BTF assembled type by type (ids from 1)."""

    def __init__(self):
        self.strings = bytearray(b"\0")
        self.types = bytearray()
        self.count = 0

    def s(self, name):
        if not name:
            return 0
        off = len(self.strings)
        self.strings += name.encode() + b"\0"
        return off

    def add(self, kind, name, vlen, size_or_type, extra=b"", kflag=0):
        self.types += struct.pack("<III", self.s(name), kind << 24 | kflag << 31 | vlen,
                                  size_or_type) + extra
        self.count += 1
        return self.count

    def int(self, name, size, signed=False):
        return self.add(B.KIND_INT, name, 0, size,
                        struct.pack("<I", (1 if signed else 0) << 24 | size * 8))

    def composite(self, kind, name, size, members):
        extra = b"".join(struct.pack("<III", self.s(n), t, bf << 24 | off)
                         for n, t, off, bf in members)
        return self.add(kind, name, len(members), size, extra, kflag=1)

    def enum(self, name, size, values, signed=False):
        extra = b"".join(struct.pack("<Ii", self.s(n), v) for n, v in values)
        return self.add(B.KIND_ENUM, name, len(values), size, extra, kflag=int(signed))

    def enum64(self, name, values):
        extra = b"".join(struct.pack("<III", self.s(n), v & 0xFFFFFFFF, v >> 32 & 0xFFFFFFFF)
                         for n, v in values)
        return self.add(B.KIND_ENUM64, name, len(values), 8, extra)

    def ref(self, kind, target, name=""):
        return self.add(kind, name, 0, target)

    def array(self, elem, index, n):
        return self.add(B.KIND_ARRAY, "", 0, 0, struct.pack("<III", elem, index, n))

    def proto(self, ret, params):
        extra = b"".join(struct.pack("<II", self.s(n), t) for n, t in params)
        return self.add(B.KIND_FUNC_PROTO, "", len(params), ret, extra)

    def btf(self):
        hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(self.types), len(self.types),
                          len(self.strings))
        return B.BTF.parse(hdr + bytes(self.types) + bytes(self.strings))


def _hand_made():
    b = _Builder()
    u32 = b.int("unsigned int", 4)
    s64 = b.int("long long int", 8, signed=True)
    u8 = b.int("unsigned char", 1)
    node = 5  # struct node, defined right below (referenced before)
    ptr_node = b.ref(B.KIND_PTR, node)
    b.composite(B.KIND_STRUCT, "node", 32, [
        ("next", ptr_node, 0, 0),
        ("flags_a", u32, 64, 3), ("flags_b", u32, 67, 29),
        ("", 8, 128, 0),              # anonymous union
        ("value", s64, 192, 0),
    ])
    cb = b.proto(u32, [("", ptr_node), ("", s64)])           # 6
    ptr_cb = b.ref(B.KIND_PTR, cb)                            # 7
    b.composite(B.KIND_UNION, "", 8, [("cb", ptr_cb, 0, 0), ("raw", s64, 0, 0)])  # 8
    small = b.enum("small", 1, [("SMALL_A", 1), ("SMALL_B", 2)])        # 9
    b.enum64("", [("BIG", 1 << 40), ("BIGGER", (1 << 64) - 1)])       # 10
    arr = b.array(ptr_node, u32, 4)                                     # 11
    b.composite(B.KIND_STRUCT, "holder", 48, [                          # 12
        ("kind", small, 0, 0), ("tight", s64, 8, 0),                    # off by one: packed
        ("nodes", arr, 72, 0),
    ])
    b.composite(B.KIND_STRUCT, "node", 4, [("other", u32, 0, 0)])     # 13: same name
    b.ref(B.KIND_TYPEDEF, arr, name="node_table")                       # 14
    b.ref(B.KIND_TYPEDEF, ptr_cb, name="callback_t")                    # 15
    b.composite(B.KIND_STRUCT, "gap", 24, [("a", u8, 0, 0), ("b", u32, 96, 0)])  # 16
    return b.btf()


def test_hand_made_header_text():
    text = header_text(_hand_made())
    assert "struct node___2 {" in text and "\tunsigned int other;" in text
    assert "\tunsigned int flags_a: 3;" in text and "\tunsigned int flags_b: 29;" in text
    assert "\tunion {\n\t\tunsigned int (*cb)(struct node *, long long int);" in text
    assert "} __attribute__((mode(byte)))" in text
    assert "BIGGER = 18446744073709551615ULL," in text
    assert "} __attribute__((packed));" in text
    assert "typedef struct node *node_table[4];" in text
    assert "typedef unsigned int (*callback_t)(struct node *, long long int);" in text
    assert "struct gap {\n\tunsigned char a;\n\tchar: 8;\n\tshort: 16;\n\tint: 32;\n\tint: 32;\n" \
           "\tunsigned int b;\n\tlong: 64;\n};" in text
    # dependency order: the pointer-only use needs just a declaration first
    assert text.index("struct node;") < text.index("struct holder {")


@needs_clang
def test_reference_cycle_is_a_btf_error():
    b = _Builder()
    b.ref(B.KIND_CONST, 2)
    b.ref(B.KIND_TYPEDEF, 1, name="loop")
    from pybpfload.errors import BTFError
    with pytest.raises(BTFError):
        header_text(b.btf())


@needs_clang
def test_hand_made_header_compiles_with_exact_layouts(tmp_path):
    btf = _hand_made()
    (tmp_path / "vmlinux.h").write_text(header_text(btf))
    checks = _layout_asserts(btf, HeaderWriter(btf))
    checks.append('_Static_assert(sizeof(enum small) == 1, "enum");')
    checks.append('_Static_assert(BIG == 1ULL << 40, "enum64");')
    src = tmp_path / "t.c"
    src.write_text('#include "vmlinux.h"\n' + "\n".join(checks) + "\n")
    _compile(src, tmp_path / "t.o", f"-I{tmp_path}")


@needs_clang
@pytest.mark.parametrize("path", sorted(str(p) for p in OBJECTS.glob("*.bpf.o")))
def test_object_btf_header_compiles(tmp_path, path):
    res = _cli("btf", "dump", path, "--format", "c", "-o", str(tmp_path / "vmlinux.h"), text=True)
    assert res.returncode == 0, res.stderr
    (tmp_path / "t.c").write_text('#include "vmlinux.h"\n')
    _compile(tmp_path / "t.c", tmp_path / "t.o", f"-I{tmp_path}")
