""".BTF.ext: per-instruction function info, line info and CO-RE relocations.

``parse_btf_ext(data, btf)`` reads the section clang emits next to ``.BTF``;
``encode_func_info`` / ``encode_line_info`` write the records the kernel
takes in BPF_PROG_LOAD (there ``insn_off`` counts instructions, while in the
file it counts bytes).

Layout: header (u16 magic 0xeB9F, u8 version, u8 flags, u32 hdr_len, then
u32 offset/length pairs for func_info, line_info and, when hdr_len >= 32,
core_relo; offsets are relative to the end of the header).  Each part is
u32 record size, then per ELF section: u32 section name offset (into the BTF
strings), u32 record count, and the records.  Records may be larger than
the fields known here: the known prefix is read and the rest skipped.
"""

import struct
from collections import namedtuple

from ..errors import BPFError, BTFError

BTF_EXT_MAGIC = 0xEB9F

# CO-RE relocation kinds (enum bpf_core_relo_kind)
FIELD_BYTE_OFFSET = 0
FIELD_BYTE_SIZE = 1
FIELD_EXISTS = 2
FIELD_SIGNED = 3
FIELD_LSHIFT_U64 = 4
FIELD_RSHIFT_U64 = 5
TYPE_ID_LOCAL = 6
TYPE_ID_TARGET = 7
TYPE_EXISTS = 8
TYPE_SIZE = 9
ENUMVAL_EXISTS = 10
ENUMVAL_VALUE = 11
TYPE_MATCHES = 12

CORE_KIND_NAMES = {
    FIELD_BYTE_OFFSET: "byte_off", FIELD_BYTE_SIZE: "byte_sz",
    FIELD_EXISTS: "field_exists", FIELD_SIGNED: "signed",
    FIELD_LSHIFT_U64: "lshift_u64", FIELD_RSHIFT_U64: "rshift_u64",
    TYPE_ID_LOCAL: "local_type_id", TYPE_ID_TARGET: "target_type_id",
    TYPE_EXISTS: "type_exists", TYPE_SIZE: "type_size",
    ENUMVAL_EXISTS: "enumval_exists", ENUMVAL_VALUE: "enumval_value",
    TYPE_MATCHES: "type_matches",
}

FUNC_INFO_REC_SIZE = 8
LINE_INFO_REC_SIZE = 16
CORE_RELO_REC_SIZE = 16

FuncInfo = namedtuple("FuncInfo", "insn_off type_id")
FuncInfo.__doc__ = "A function's BTF FUNC id at its first instruction (insn_off: bytes in the file)."

_LineInfoBase = namedtuple("_LineInfoBase", "insn_off file_name_off line_off line_col file_name line")


class LineInfo(_LineInfoBase):
    """Source position of an instruction: file name, source text, line and column."""

    __slots__ = ()

    @property
    def line_number(self):
        return self.line_col >> 10

    @property
    def column(self):
        return self.line_col & 0x3FF


_CoreReloBase = namedtuple("_CoreReloBase", "insn_off type_id access_str kind")


class CoreRelo(_CoreReloBase):
    """A CO-RE relocation: the instruction, the local root type, the access path, the kind."""

    __slots__ = ()

    @property
    def kind_name(self):
        return CORE_KIND_NAMES.get(self.kind, str(self.kind))

    @property
    def accessors(self):
        """The access string as a list of ints ('0:1:2' -> [0, 1, 2])."""
        try:
            return [int(x) for x in self.access_str.split(":")]
        except ValueError:
            raise BTFError(f"bad CO-RE access string {self.access_str!r}") from None


class BTFExt:
    """Parsed .BTF.ext: dicts from ELF section name to lists of records."""

    __slots__ = ("func_info", "line_info", "core_relos")

    def __init__(self, func_info, line_info, core_relos):
        self.func_info = func_info
        self.line_info = line_info
        self.core_relos = core_relos

    def __repr__(self):
        def n(d):
            return sum(len(v) for v in d.values())
        return (f"<BTFExt {n(self.func_info)} func_info, {n(self.line_info)} line_info,"
                f" {n(self.core_relos)} core_relos>")


_HDR = struct.Struct("<HBBI")
_U32 = struct.Struct("<I")
_PAIR = struct.Struct("<II")


def _string(btf, off, what):
    try:
        return btf.string(off)
    except BPFError:
        raise
    except Exception:  # a foreign object passed as btf
        raise BTFError(f".BTF.ext {what}: string offset {off} is not valid") from None


def _subsections(data, start, length, min_rec, what, btf):
    """Yield (section name, record size, first record offset, count) of one part."""
    if length == 0:
        return
    end = start + length
    if start < 0 or end > len(data) or length < 4:
        raise BTFError(f".BTF.ext {what} (offset {start}, length {length}) runs past the"
                       f" {len(data)} bytes of the section")
    (rec_size,) = _U32.unpack_from(data, start)
    if rec_size < min_rec:
        raise BTFError(f".BTF.ext {what} record size {rec_size} is smaller than {min_rec}")
    pos = start + 4
    while pos < end:
        if pos + 8 > end:
            raise BTFError(f".BTF.ext {what} is truncated in a section header")
        name_off, count = _PAIR.unpack_from(data, pos)
        pos += 8
        if count == 0:
            raise BTFError(f".BTF.ext {what} has an empty section entry")
        if pos + count * rec_size > end:
            raise BTFError(f".BTF.ext {what}: {count} records of {rec_size} bytes run past its end")
        yield _string(btf, name_off, what), rec_size, pos, count
        pos += count * rec_size


def parse_btf_ext(data, btf):
    """Parse .BTF.ext bytes; strings are resolved through ``btf`` (the object's BTF)."""
    data = bytes(data)
    if len(data) < 24:
        raise BTFError(f".BTF.ext is truncated: {len(data)} bytes")
    magic, version, _flags, hdr_len = _HDR.unpack_from(data, 0)
    if magic != BTF_EXT_MAGIC:
        if magic == 0x9FEB:
            raise BTFError(".BTF.ext is big-endian; only little-endian is supported")
        raise BTFError(f"not .BTF.ext: bad magic 0x{magic:04x} (expected 0xeb9f)")
    if version != 1:
        raise BTFError(f"unsupported .BTF.ext version {version}")
    if hdr_len < 24 or hdr_len > len(data):
        raise BTFError(f"bad .BTF.ext header length {hdr_len} for {len(data)} bytes")
    fi_off, fi_len, li_off, li_len = struct.unpack_from("<IIII", data, 8)
    cr_off = cr_len = 0
    if hdr_len >= 32:
        cr_off, cr_len = struct.unpack_from("<II", data, 24)

    func_info = {}
    for sec, rec, pos, count in _subsections(data, hdr_len + fi_off, fi_len, 8, "func_info", btf):
        out = func_info.setdefault(sec, [])
        for i in range(count):
            out.append(FuncInfo._make(_PAIR.unpack_from(data, pos + i * rec)))

    line_info = {}
    quad = struct.Struct("<IIII")
    for sec, rec, pos, count in _subsections(data, hdr_len + li_off, li_len, 16, "line_info", btf):
        out = line_info.setdefault(sec, [])
        strings = {}
        for i in range(count):
            insn_off, file_off, line_off, line_col = quad.unpack_from(data, pos + i * rec)
            if file_off not in strings:
                strings[file_off] = _string(btf, file_off, "line_info")
            if line_off not in strings:
                strings[line_off] = _string(btf, line_off, "line_info")
            out.append(LineInfo(insn_off, file_off, line_off, line_col,
                                strings[file_off], strings[line_off]))

    core_relos = {}
    for sec, rec, pos, count in _subsections(data, hdr_len + cr_off, cr_len, 16, "core_relo", btf):
        out = core_relos.setdefault(sec, [])
        for i in range(count):
            insn_off, type_id, access_off, kind = quad.unpack_from(data, pos + i * rec)
            access = _string(btf, access_off, "core_relo")
            out.append(CoreRelo(insn_off, type_id, access, kind))
    return BTFExt(func_info, line_info, core_relos)


def _u32(value, what):
    if not isinstance(value, int) or not 0 <= value < 1 << 32:
        raise BTFError(f"{what} {value!r} does not fit in a u32")
    return value


def encode_func_info(records):
    """Kernel func_info blob (8-byte records) from (insn_index, type_id) records.

    ``insn_off`` of each record must already be an instruction index, not bytes.
    """
    out = bytearray()
    for r in records:
        out += _PAIR.pack(_u32(r[0], "func_info insn_off"), _u32(r[1], "func_info type_id"))
    return bytes(out)


def encode_line_info(records):
    """Kernel line_info blob (16-byte records) from LineInfo-like records with insn indexes."""
    out = bytearray()
    pack = struct.Struct("<IIII").pack
    for r in records:
        out += pack(_u32(r[0], "line_info insn_off"), _u32(r[1], "line_info file_name_off"),
                    _u32(r[2], "line_info line_off"), _u32(r[3], "line_info line_col"))
    return bytes(out)
