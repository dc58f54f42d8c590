"""Reading a clang-built BPF ELF object into an :class:`~pybpfload.obj.spec.ObjectSpec`.

pyelftools reads the ELF header and the section headers; the few tables the
loader needs (symbols, ``Elf64_Rel`` entries) are plain fixed-size records
that are unpacked directly, so that malformed input turns into one
:class:`~pybpfload.errors.ELFError` rather than whatever a deeper library
happens to raise.

What comes out:

* every executable section other than ``.text`` is a program section; each
  global function in it is a program, each static one a subprogram;
* ``.text`` holds subprograms only;
* relocations of program sections and ``.text`` (and only those: the
  thousands of ``.rel.debug_*`` entries are never read) set
  ``Instruction.reference`` / ``ref_offset``; calls and function references
  inside a section are resolved to function names as well, so that linking
  (``link.py``) needs no offsets;
* ``.BTF`` / ``.BTF.ext``: the ``func_info``, ``line_info`` and CO-RE records
  are attached to the instructions they describe;
* maps, global data and variables come from ``maps.py``.
"""

import io
import os
import struct
from collections import namedtuple

from ..errors import BPFError, ELFError, ParseError
from . import insn as _insn
from . import maps as _maps
from .sections import classify
from .spec import ObjectSpec, ProgramSpec

__all__ = ["read_object", "read_object_file", "Section", "Symbol"]

EM_BPF = 247
SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_NOBITS, SHT_REL = 1, 2, 3, 8, 9
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 0x1, 0x2, 0x4
STT_NOTYPE, STT_OBJECT, STT_FUNC, STT_SECTION = 0, 1, 2, 3
STB_LOCAL, STB_GLOBAL, STB_WEAK = 0, 1, 2
R_BPF_64_64, R_BPF_64_32 = 1, 10

#: One section: ``data`` is b'' for NOBITS (``size`` still holds its size).
Section = namedtuple("Section", "index name type flags size link info data")
#: One symbol of ``.symtab``.
Symbol = namedtuple("Symbol", "name value size type bind shndx")
#: A function inside an executable section (offsets in slots).
_Func = namedtuple("_Func", "name section start end is_global")

_SYM = struct.Struct("<IBBHQQ")
_REL = struct.Struct("<QQ")
# largest section we accept: bigger ones are corrupt sizes, not real objects
_MAX_SECTION = 1 << 30


def read_object_file(path):
    """Read a BPF object file; the map-name prefix comes from its file name."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ELFError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return read_object(data, name=object_name(path))
    except ParseError as exc:
        # say which file: a user loading several objects must know which is broken
        raise type(exc)(f"{path} is not a usable BPF ELF object: {exc.args[0]}",
                        exc.hint or "rebuild it with clang -g -O2 -target bpf") from None


def object_name(path):
    """The object's name as used in data-map names: file name up to the first dot."""
    base = os.path.basename(str(path))
    return base.split(".", 1)[0] or "obj"


def read_object(data, name="obj"):
    """Parse the bytes of a BPF ELF object into an ``ObjectSpec``.

    ``name`` prefixes global data maps (``<name>.rodata``), as libbpf does.
    Raises only ``ParseError`` subclasses on malformed input.
    """
    data = bytes(data)
    try:
        return _Reader(data, name).read()
    except BPFError as exc:
        if isinstance(exc, ParseError):
            raise
        raise ELFError(str(exc)) from None


# -- low level: sections and symbols ----------------------------------------

def _check_header(data):
    if len(data) < 64 or data[:4] != b"\x7fELF":
        raise ELFError("not an ELF file (bad magic)",
                       hint="give a BPF object built with clang -target bpf")
    if data[4] != 2 or data[5] != 1:
        raise ELFError("not a 64-bit little-endian ELF object",
                       hint="build with clang -target bpf (or bpfel)")
    machine = struct.unpack_from("<H", data, 18)[0]
    if machine != EM_BPF:
        raise ELFError(f"ELF machine is {machine}, not BPF ({EM_BPF})",
                       hint="build with clang -target bpf")


def _read_sections(data):
    """All section headers, names and contents.

    pyelftools parses the ELF header and the section headers
    (``ELFStructs``); ``ELFFile`` is not used: importing it pulls in the
    DWARF and ARM unwinding readers (~15 ms of start-up) that a BPF object
    never needs.  The extended numbering rules (``e_shnum`` 0: the count is
    section 0's ``sh_size``) are the ELF ABI's, as ``ELFFile`` applies them.
    """
    from elftools.common.utils import struct_parse
    from elftools.elf.structs import ELFStructs

    try:
        stream = io.BytesIO(data)
        structs = ELFStructs(little_endian=True, elfclass=64)   # _check_header made sure
        structs.create_basic_structs()
        ehdr = struct_parse(structs.Elf_Ehdr, stream, stream_pos=0)
        structs.create_advanced_structs(ehdr["e_type"], ehdr["e_machine"],
                                        ehdr["e_ident"]["EI_OSABI"])
        shoff, shentsize = ehdr["e_shoff"], ehdr["e_shentsize"]
        shdr = structs.Elf_Shdr

        def header(index):
            pos = shoff + index * shentsize
            if pos > len(data):
                raise ELFError(f"section header {index} at offset {pos} is past the end "
                               f"of the {len(data)}-byte file")
            return struct_parse(shdr, stream, stream_pos=pos)

        if shoff == 0:
            count = 0
        else:
            if shentsize < shdr.sizeof():
                raise ELFError(f"section header size {shentsize} is too small")
            count = ehdr["e_shnum"] or header(0)["sh_size"]
        if count > 65535:
            raise ELFError(f"ELF claims {count} sections")
        headers = [header(i) for i in range(count)]
        shstrndx = headers[ehdr["e_shstrndx"]] if ehdr["e_shstrndx"] < count else None
    except BPFError:
        raise
    except Exception as exc:  # pyelftools raises many types on corrupt headers
        raise ELFError(f"corrupt ELF headers: {exc}".splitlines()[0][:200]) from None
    if shstrndx is None:
        raise ELFError("the section name table index is out of range")
    names_data = _slice(data, shstrndx["sh_offset"], shstrndx["sh_size"], "section names")
    out = []
    for index, h in enumerate(headers):
        stype = _num(h["sh_type"], _SHT)
        size = h["sh_size"]
        name = _cstr(names_data, h["sh_name"], "section name")
        if stype == SHT_NOBITS or stype == 0:
            body = b""
            if size > _MAX_SECTION:
                raise ELFError(f"section {name!r} claims {size} bytes")
        else:
            body = _slice(data, h["sh_offset"], size, f"section {name!r}")
        out.append(Section(index, name, stype, h["sh_flags"], size, h["sh_link"],
                           h["sh_info"], body))
    return out


# pyelftools gives some header enums as strings
_SHT = {"SHT_NULL": 0, "SHT_PROGBITS": 1, "SHT_SYMTAB": 2, "SHT_STRTAB": 3, "SHT_RELA": 4,
        "SHT_HASH": 5, "SHT_DYNAMIC": 6, "SHT_NOTE": 7, "SHT_NOBITS": 8, "SHT_REL": 9,
        "SHT_SHLIB": 10, "SHT_DYNSYM": 11}


def _num(value, table):
    if isinstance(value, int):
        return value
    return table.get(value, -1)


def _slice(data, offset, size, what):
    if offset < 0 or size < 0 or offset + size > len(data):
        raise ELFError(f"{what} lies outside the file (offset {offset}, size {size})",
                       hint="the object is truncated or corrupt")
    return data[offset:offset + size]


def _cstr(strtab, offset, what):
    if offset >= len(strtab) and offset:
        raise ELFError(f"{what} offset {offset} is outside its string table")
    end = strtab.find(b"\0", offset)
    if end < 0:
        end = len(strtab)
    try:
        return strtab[offset:end].decode("utf-8")
    except UnicodeDecodeError:
        raise ELFError(f"{what} at offset {offset} is not UTF-8") from None


def _read_symbols(sections):
    symtabs = [s for s in sections if s.type == SHT_SYMTAB]
    if not symtabs:
        raise ELFError("the object has no symbol table",
                       hint="do not strip BPF objects with --strip-all")
    symtab = symtabs[0]
    if symtab.link >= len(sections):
        raise ELFError("the symbol table's string table index is out of range")
    strtab = sections[symtab.link].data
    body = symtab.data
    usable = len(body) - len(body) % _SYM.size
    out = []
    for st_name, st_info, _other, shndx, value, size in _SYM.iter_unpack(
            memoryview(body)[:usable]):
        name = _cstr(strtab, st_name, "symbol name")
        out.append(Symbol(name, value, size, st_info & 0xF, st_info >> 4, shndx))
    return out


# -- the reader --------------------------------------------------------------

class _Reader:
    def __init__(self, data, name):
        self.data = data
        self.name = name

    def read(self):
        _check_header(self.data)
        self.sections = sections = _read_sections(self.data)
        self.by_name = {}
        for s in sections:
            self.by_name.setdefault(s.name, s)
        self.symbols = _read_symbols(sections)

        license_ = self._string_section("license")
        version = 0
        vsec = self.by_name.get("version")
        if vsec is not None and len(vsec.data) >= 4:
            version = struct.unpack_from("<I", vsec.data)[0]

        btf = self._read_btf()
        btf_ext = self._read_btf_ext(btf)

        code_sections = [s for s in sections
                         if s.type == SHT_PROGBITS and s.flags & SHF_EXECINSTR and s.size]
        funcs, insns_by_section = self._split_functions(code_sections)
        self._apply_relocations(code_sections, funcs, insns_by_section)
        if btf_ext is not None:
            self._attach_btf_ext(btf_ext, insns_by_section)

        maps, variables = _maps.read_maps(self.name, sections, self.symbols, btf,
                                          self._relocations_of)

        programs = {}
        functions = {}
        for f in sorted(funcs.values(), key=lambda f: (f.section, f.start)):
            body = insns_by_section[f.section][1][f.start:f.end]
            body = [ins for ins in body if ins is not None]
            if f.section != ".text" and f.is_global:
                kind = classify(f.section)
                programs[f.name] = ProgramSpec(
                    name=f.name, section=f.section, type=kind.prog_type,
                    expected_attach_type=kind.expected_attach_type,
                    attach_kind=kind.attach_kind, attach_to=kind.attach_to,
                    instructions=body, license=license_, kernel_version=version,
                    sleepable=kind.sleepable)
            else:
                functions[f.name] = body
        section_sizes = {s.name: s.size for s in sections if s.name}
        symbol_offsets = {sym.name: sym.value for sym in sorted(
            self.symbols, key=lambda sym: sym.name) if sym.name and sym.type == STT_OBJECT}
        return ObjectSpec(programs=programs, maps=maps, variables=variables, btf=btf,
                          btf_ext=btf_ext, license=license_, kernel_version=version,
                          functions=functions, section_sizes=section_sizes,
                          symbol_offsets=symbol_offsets)

    # -- small sections ------------------------------------------------------
    def _string_section(self, name):
        sec = self.by_name.get(name)
        if sec is None:
            return ""
        raw = sec.data.split(b"\0", 1)[0]
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise ELFError(f"the {name!r} section is not an ASCII string") from None

    def _read_btf(self):
        sec = self.by_name.get(".BTF")
        if sec is None or not sec.data:
            return None
        from . import btf as _btf
        if not hasattr(_btf, "BTF"):
            return None  # BTF support not available in this build
        return _btf.BTF.parse(sec.data)

    def _read_btf_ext(self, btf):
        sec = self.by_name.get(".BTF.ext")
        if sec is None or btf is None:
            return None
        try:
            from .btf_ext import parse_btf_ext
        except ImportError:
            return None
        return parse_btf_ext(sec.data, btf)

    # -- functions -------------------------------------------------------------
    def _split_functions(self, code_sections):
        """Cut executable sections into functions at their FUNC symbols.

        Returns ``{name: _Func}`` and ``{section: (slot->index, [Instruction
        or None per slot])}`` where the second slot of an ld_imm64 is None.
        """
        funcs = {}
        insns_by_section = {}
        by_index = {s.index: s for s in code_sections}
        per_section = {s.name: [] for s in code_sections}
        for sym in self.symbols:
            if sym.type != STT_FUNC or sym.shndx not in by_index or not sym.name:
                continue
            per_section[by_index[sym.shndx].name].append(sym)
        for sec in code_sections:
            if sec.size % 8:
                raise ELFError(f"section {sec.name!r} size {sec.size} is not a multiple of 8")
            slots = _decode_slots(sec)
            insns_by_section[sec.name] = (None, slots)
            nslots = len(slots)
            syms = sorted(per_section[sec.name], key=lambda s: (s.value, s.name))
            if not syms and sec.name != ".text":
                raise ELFError(f"section {sec.name!r} holds code but no function symbol",
                               hint="define programs as non-static functions")
            for sym in syms:
                if sym.value % 8 or sym.size % 8 or sym.value // 8 >= nslots:
                    raise ELFError(f"function {sym.name!r} has a bad offset or size in "
                                   f"{sec.name!r}")
                start = sym.value // 8
                end = start + sym.size // 8 if sym.size else nslots
                if end > nslots or slots[start] is None:
                    raise ELFError(f"function {sym.name!r} runs past the end of "
                                   f"{sec.name!r}")
                if sym.name in funcs:
                    raise ELFError(f"function {sym.name!r} is defined twice")
                funcs[sym.name] = _Func(sym.name, sec.name, start, end,
                                        sym.bind != STB_LOCAL)
                slots[start].symbol = sym.name
        self.funcs_at = {(f.section, f.start): f.name for f in funcs.values()}
        return funcs, insns_by_section

    def _func_at(self, section, slot):
        return self.funcs_at.get((section, slot))

    # -- relocations -------------------------------------------------------------
    def _relocations_of(self, target_name):
        """``[(r_offset, Symbol, r_type)]`` of the REL sections applying to a section."""
        target = self.by_name.get(target_name)
        if target is None:
            return []
        out = []
        nsyms = len(self.symbols)
        for sec in self.sections:
            if sec.type != SHT_REL or sec.info != target.index:
                continue
            body = sec.data
            usable = len(body) - len(body) % _REL.size
            for r_offset, r_info in _REL.iter_unpack(memoryview(body)[:usable]):
                sym_index = r_info >> 32
                if sym_index >= nsyms:
                    raise ELFError(f"relocation in {sec.name!r} names symbol {sym_index}, "
                                   f"past the end of the symbol table")
                out.append((r_offset, self.symbols[sym_index], r_info & 0xFFFFFFFF))
        return out

    def _apply_relocations(self, code_sections, funcs, insns_by_section):
        sections = self.sections
        for sec in code_sections:
            slots = insns_by_section[sec.name][1]
            relocated = set()
            for r_offset, sym, r_type in self._relocations_of(sec.name):
                if r_offset % 8 or r_offset // 8 >= len(slots) or slots[r_offset // 8] is None:
                    raise ELFError(f"relocation at byte {r_offset} of {sec.name!r} does not "
                                   "point at an instruction")
                slot = r_offset // 8
                ins = slots[slot]
                relocated.add(slot)
                target_sec = sections[sym.shndx] if 0 < sym.shndx < len(sections) else None
                is_code = (target_sec is not None and target_sec.flags & SHF_EXECINSTR
                           and target_sec.type == SHT_PROGBITS)
                if ins.is_call():
                    if not is_code:
                        # a call to an extern (kfunc) or something unknown
                        ins.reference = sym.name
                        continue
                    target = (sym.value // 8) + ins.imm + 1
                    ins.reference = self._func_at(target_sec.name, target) or \
                        _unresolved(target_sec.name, target)
                    ins.src = _insn.BPF_PSEUDO_CALL
                    ins.imm = -1
                elif ins.is_ld_imm64():
                    addend = _s32(ins.imm & 0xFFFFFFFF)
                    if is_code:
                        target_byte = sym.value + addend
                        ins.reference = self._func_at(target_sec.name, target_byte // 8) \
                            if target_byte % 8 == 0 else None
                        if ins.reference is None:
                            ins.reference = _unresolved(target_sec.name, target_byte // 8)
                        ins.src = _insn.BPF_PSEUDO_FUNC
                        ins.imm = 0
                    else:
                        if sym.type == STT_SECTION and target_sec is not None:
                            ins.reference = target_sec.name
                        else:
                            ins.reference = sym.name
                        ins.ref_offset = sym.value + addend
                        ins.imm = 0
                else:
                    raise ELFError(f"relocation at byte {r_offset} of {sec.name!r} is on an "
                                   f"instruction (code {ins.code:#04x}) that cannot be "
                                   "relocated")
            # calls inside the section that need no relocation
            for slot, ins in enumerate(slots):
                if ins is None or slot in relocated:
                    continue
                if ins.is_bpf_to_bpf_call():
                    target = slot + ins.imm + 1
                    ins.reference = self._func_at(sec.name, target) or \
                        _unresolved(sec.name, target)

    def _attach_btf_ext(self, btf_ext, insns_by_section):
        for attr, table in (("func_info", btf_ext.func_info),
                            ("line_info", btf_ext.line_info),
                            ("core", btf_ext.core_relos)):
            for section, records in sorted((table or {}).items()):
                if section not in insns_by_section:
                    raise ELFError(f".BTF.ext refers to section {section!r}, which holds no code")
                slots = insns_by_section[section][1]
                for rec in records:
                    off = rec.insn_off
                    if off % 8 or off // 8 >= len(slots) or slots[off // 8] is None:
                        raise ELFError(f".BTF.ext {attr} record at byte {off} of {section!r} "
                                       "does not point at an instruction")
                    setattr(slots[off // 8], attr, rec)


def _unresolved(section, slot):
    # a name that can never be a function: link.py reports it as unresolvable
    return f"<{section}+{slot}>"


def _decode_slots(sec):
    """Decode a section into one entry per 8-byte slot (None for ld_imm64 tails)."""
    try:
        insns = _insn.decode(sec.data)
    except ParseError as exc:
        raise ELFError(f"section {sec.name!r}: {exc}") from None
    slots = []
    for ins in insns:
        slots.append(ins)
        if ins.code == _insn.LD_IMM64:
            slots.append(None)
    return slots


def _s32(v):
    return v - (1 << 32) if v & 0x80000000 else v
