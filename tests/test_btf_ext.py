""".BTF.ext parsing of a real clang object, records larger than known, the
kernel encoders, and malformed input."""

import struct

import pytest

from pybpfload.errors import BTFError
from pybpfload.obj import btf as B
from pybpfload.obj import btf_ext as X
from test_btf import KINDS_OBJ, elf_section

SEC = "tracepoint/sched/sched_process_exec"


@pytest.fixture(scope="module")
def objbtf():
    return B.BTF.parse(elf_section(KINDS_OBJ, ".BTF"))


@pytest.fixture(scope="module")
def ext(objbtf):
    return X.parse_btf_ext(elf_section(KINDS_OBJ, ".BTF.ext"), objbtf)


def test_func_info(ext, objbtf):
    assert set(ext.func_info) == {SEC, ".text"}
    (prog,) = ext.func_info[SEC]
    assert prog.insn_off == 0 and objbtf.name_of(prog.type_id) == "prog"
    (helper,) = ext.func_info[".text"]
    assert objbtf[helper.type_id].name == "helper" and helper.insn_off == 0


def test_line_info(ext):
    lines = ext.line_info[SEC]
    assert lines[0].insn_off == 0
    offs = [li.insn_off for li in lines]
    assert offs == sorted(offs) and all(o % 8 == 0 for o in offs)
    assert all(li.file_name.endswith("kinds.bpf.c") for li in lines)
    src = (KINDS_OBJ.parent / "kinds.bpf.c").read_text().splitlines()
    for li in lines:
        assert li.line_number >= 1 and li.column == li.line_col & 0x3FF
        assert src[li.line_number - 1].strip() == li.line.strip()


def test_core_relos(ext, objbtf):
    relos = ext.core_relos[SEC] + ext.core_relos.get(".text", [])
    assert relos and all(objbtf.name_of(r.type_id) == "task_like" for r in relos)
    by_access = {(r.access_str, r.kind) for r in relos}
    assert ("0:3", X.FIELD_BYTE_OFFSET) in by_access        # t->parent
    assert ("0:0", X.FIELD_BYTE_OFFSET) in by_access        # ->pid
    assert ("0:2:1", X.FIELD_BYTE_OFFSET) in by_access      # t->fl.b (bitfield offset)
    assert ("0:1", X.FIELD_BYTE_OFFSET) in by_access        # t->tgid
    assert all(r.insn_off % 8 == 0 for r in relos)
    r = next(r for r in relos if r.access_str == "0:2:1")
    assert r.accessors == [0, 2, 1] and r.kind_name == "byte_off"
    assert X.TYPE_MATCHES == 12 and X.CORE_KIND_NAMES[X.ENUMVAL_VALUE] == "enumval_value"


def make_ext(objbtf, rec_size=16, hdr_len=32, func_rec=8):
    """A .BTF.ext with one func_info and one core_relo record, records padded to rec_size."""
    name = objbtf.find("prog")[0]
    sec_off = next(o for o in range(objbtf.str_len) if objbtf.string(o) == SEC)
    access_off = next(o for o in range(objbtf.str_len) if objbtf.string(o) == "0:1")
    func = struct.pack("<III", func_rec, sec_off, 1) + struct.pack("<II", 8, name).ljust(func_rec, b"\xaa")
    core = struct.pack("<III", rec_size, sec_off, 1) + \
        struct.pack("<IIII", 16, 5, access_off, X.FIELD_BYTE_OFFSET).ljust(rec_size, b"\xbb")
    hdr = struct.pack("<HBBIIIIIII", 0xEB9F, 1, 0, hdr_len, 0, len(func), len(func), 0,
                      len(func), len(core))
    return hdr.ljust(hdr_len, b"\0") + func + core


def test_records_larger_than_known(objbtf):
    ext = X.parse_btf_ext(make_ext(objbtf, rec_size=24, hdr_len=40, func_rec=12), objbtf)
    assert ext.func_info == {SEC: [X.FuncInfo(8, objbtf.find("prog")[0])]}
    assert ext.core_relos == {SEC: [X.CoreRelo(16, 5, "0:1", X.FIELD_BYTE_OFFSET)]}
    assert ext.line_info == {}


def test_header_without_core_relos(objbtf):
    blob = make_ext(objbtf)
    short = bytearray(blob[:24] + blob[32:])
    struct.pack_into("<I", short, 4, 24)
    ext = X.parse_btf_ext(bytes(short), objbtf)
    assert ext.core_relos == {} and len(ext.func_info[SEC]) == 1


@pytest.mark.parametrize("mutate, match", [
    (lambda b: b[:10], "truncated"),
    (lambda b: b"\x00\x00" + b[2:], "magic"),
    (lambda b: b"\xeb\x9f" + b[2:], "big-endian"),
    (lambda b: b[:4] + struct.pack("<I", 9999) + b[8:], "header length"),
    (lambda b: b[:12] + struct.pack("<I", 9999) + b[16:], "runs past"),
    (lambda b: b[:-4], "runs past"),
    (lambda b: b[:60] + struct.pack("<I", 5) + b[64:], "run past its end"),
    (lambda b: b[:60] + struct.pack("<I", 0) + b[64:], "empty"),
])
def test_malformed(objbtf, mutate, match):
    with pytest.raises(BTFError, match=match):
        X.parse_btf_ext(mutate(make_ext(objbtf)), objbtf)


def test_encode_for_kernel():
    fi = X.encode_func_info([X.FuncInfo(0, 4), X.FuncInfo(12, 16)])
    assert fi == struct.pack("<IIII", 0, 4, 12, 16) and len(fi) == 2 * X.FUNC_INFO_REC_SIZE
    li = X.encode_line_info([X.LineInfo(3, 10, 20, 5 << 10 | 7, "f.c", "x = 1;")])
    assert li == struct.pack("<IIII", 3, 10, 20, 5 << 10 | 7)
    with pytest.raises(BTFError):
        X.encode_func_info([(-1, 2)])
    with pytest.raises(BTFError):
        X.encode_line_info([(1, 2, 3, 1 << 32)])


def test_byte_offsets_to_instruction_indexes(ext):
    """The loader divides insn_off by 8; the encoded blob carries those indexes."""
    lines = ext.line_info[SEC]
    blob = X.encode_line_info([li._replace(insn_off=li.insn_off // 8) for li in lines])
    got = [struct.unpack_from("<I", blob, i * 16)[0] for i in range(len(lines))]
    assert got == [li.insn_off // 8 for li in lines]
