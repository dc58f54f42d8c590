"""Linking a program: its entry function plus every subprogram it reaches, and
map / global-data references turned into the ``ld_imm64`` forms the kernel
takes.

``link_program`` copies the entry function, then appends each subprogram it
calls (bpf-to-bpf calls, ``src=BPF_PSEUDO_CALL``) or takes the address of
(callbacks: ``ld_imm64 src=BPF_PSEUDO_FUNC``), transitively, each once, and
sets every call's ``imm`` to ``target slot - (call slot + 1)``.  Because the
ELF reader resolved calls to function names and attached ``.BTF.ext`` records
to instructions, nothing here deals with section offsets.

References to maps become ``src=BPF_PSEUDO_MAP_FD``; references to global
data become ``src=BPF_PSEUDO_MAP_VALUE`` with the byte offset into the value
in the upper half of ``imm`` (the kernel reads it from the second slot's
``imm``).  The lower half is the map's fd, filled in by
``resolve_map_references`` once the kernel layer has created the maps.

``func_info_records`` / ``line_info_records`` encode the BTF metadata carried
on the linked instructions for ``BPF_PROG_LOAD``, with instruction indexes.
"""

import struct

from ..errors import RelocationError
from . import insn as _insn

__all__ = ["link_program", "resolve_map_references", "func_info_records",
           "line_info_records", "referenced_maps", "FUNC_INFO_SIZE", "LINE_INFO_SIZE"]

FUNC_INFO_SIZE = 8    # struct bpf_func_info {u32 insn_off; u32 type_id}
LINE_INFO_SIZE = 16   # struct bpf_line_info {u32 insn_off, file_name_off, line_off, line_col}
_FUNC_INFO = struct.Struct("<II")
_LINE_INFO = struct.Struct("<IIII")


def link_program(obj, prog_name):
    """The instructions of program ``prog_name``, with its subprograms appended.

    The returned instructions are copies (the spec is not changed except for
    ``ProgramSpec.maps_used``, which is set to the maps the linked program
    references).  Raises ``RelocationError`` naming the program and the
    instruction index for anything that cannot be resolved.
    """
    prog = obj.programs.get(prog_name)
    if prog is None:
        known = ", ".join(sorted(obj.programs)) or "none"
        raise RelocationError(f"no program {prog_name!r} in the object (programs: {known})")
    out = [i.copy() for i in prog.instructions]
    starts = {prog_name: 0}
    slot = _insn.slot_count(out)
    # breadth-first over the code, appending functions the first time they are seen
    pos = 0
    while pos < len(out):
        ins = out[pos]
        pos += 1
        if not (ins.is_bpf_to_bpf_call() or ins.is_func_reference()):
            continue
        target = ins.reference
        if target in starts:
            continue
        body = obj.functions.get(target) if target else None
        if body is None:
            what = "calls" if ins.is_call() else "takes the address of"
            index = _index_of(out, pos - 1)
            if not target or target.startswith("<"):
                raise RelocationError(
                    f"program {prog_name!r}: instruction {index} {what} code that is not the "
                    f"start of a function ({target or 'no relocation'})")
            raise RelocationError(f"program {prog_name!r}: instruction {index} {what} "
                                  f"unknown function {target!r}")
        starts[target] = slot
        for i in body:
            out.append(i.copy())
        slot += _insn.slot_count(body)

    maps_used = set()
    slot = 0
    sections = _data_sections(obj)
    for index, ins in enumerate(out):
        if ins.is_bpf_to_bpf_call() or ins.is_func_reference():
            rel = starts[ins.reference] - (slot + 1)
            ins.imm = rel if ins.is_call() else rel & 0xFFFFFFFF
        elif ins.is_call() and ins.src == _insn.BPF_PSEUDO_CALL:
            pass
        elif ins.is_ld_imm64() and ins.reference is not None:
            _relocate_data(obj, prog_name, index, ins, sections)
            maps_used.add(ins.reference)
        elif ins.reference is not None and ins.is_call():
            raise RelocationError(f"program {prog_name!r}: instruction {index} calls "
                                  f"{ins.reference!r}, which is not defined in the object",
                                  hint="kernel functions (kfuncs) are not supported")
        slot += ins.size
    prog.maps_used = sorted(maps_used)
    return out


def _index_of(insns, position):
    """Slot index of the instruction at list position ``position``."""
    return _insn.slot_count(insns[:position])


def _data_sections(obj):
    """ELF data section -> name of its map."""
    return {m.section: name for name, m in obj.maps.items() if m.section}


def _relocate_data(obj, prog_name, index, ins, sections):
    ref = ins.reference
    m = obj.maps.get(ref)
    if m is not None and not m.is_global_data:
        ins.src = _insn.BPF_PSEUDO_MAP_FD
        ins.imm = 0
        ins.ref_offset = 0
        return
    var = obj.variables.get(ref)
    section = var.section if var is not None else ref
    map_name = sections.get(section)
    if map_name is None:
        raise RelocationError(f"program {prog_name!r}: instruction {index} refers to "
                              f"{ref!r}, which is neither a map nor global data of the object",
                              hint="extern variables (.kconfig, .ksyms) are not supported")
    data_map = obj.maps[map_name]
    offset = ins.ref_offset
    if not 0 <= offset < data_map.value_size:
        raise RelocationError(f"program {prog_name!r}: instruction {index} points at byte "
                              f"{offset} of {section!r}, which has {data_map.value_size}")
    ins.reference = map_name
    ins.ref_offset = offset
    ins.src = _insn.BPF_PSEUDO_MAP_VALUE
    ins.imm = offset << 32


def referenced_maps(insns):
    """Sorted names of the maps linked instructions refer to."""
    return sorted({i.reference for i in insns if i.is_ld_imm64() and i.src in (
        _insn.BPF_PSEUDO_MAP_FD, _insn.BPF_PSEUDO_MAP_VALUE) and i.reference})


def resolve_map_references(insns, map_fds):
    """Copies of ``insns`` with map fds filled into map references.

    ``map_fds`` maps map name -> fd.  ``BPF_PSEUDO_MAP_FD`` references get
    ``imm = fd``; ``BPF_PSEUDO_MAP_VALUE`` ones keep their offset in the
    upper half.  A reference to a map missing from ``map_fds`` raises
    ``RelocationError``.
    """
    out = []
    slot = 0
    for ins in insns:
        if ins.is_ld_imm64() and ins.src in (_insn.BPF_PSEUDO_MAP_FD,
                                             _insn.BPF_PSEUDO_MAP_VALUE) and ins.reference:
            fd = map_fds.get(ins.reference)
            if fd is None:
                raise RelocationError(f"instruction {slot} refers to map {ins.reference!r}, "
                                      "which was not created")
            ins = ins.copy()
            if ins.src == _insn.BPF_PSEUDO_MAP_FD:
                ins.imm = fd
            else:
                ins.imm = (ins.ref_offset << 32) | (fd & 0xFFFFFFFF)
        out.append(ins)
        slot += ins.size
    return out


def func_info_records(insns):
    """``(bytes, record size)`` of ``struct bpf_func_info`` for the kernel."""
    buf = bytearray()
    slot = 0
    for ins in insns:
        fi = ins.func_info
        if fi is not None:
            buf += _FUNC_INFO.pack(slot, fi.type_id)
        slot += 2 if ins.code == _insn.LD_IMM64 else 1
    return bytes(buf), FUNC_INFO_SIZE


def line_info_records(insns):
    """``(bytes, record size)`` of ``struct bpf_line_info`` for the kernel."""
    buf = bytearray()
    slot = 0
    for ins in insns:
        li = ins.line_info
        if li is not None:
            buf += _LINE_INFO.pack(slot, li.file_name_off, li.line_off, li.line_col)
        slot += 2 if ins.code == _insn.LD_IMM64 else 1
    return bytes(buf), LINE_INFO_SIZE
