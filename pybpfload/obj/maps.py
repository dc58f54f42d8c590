"""Map specs of an object: BTF-defined ``.maps``, the legacy ``maps`` section,
and global data sections turned into single-entry arrays; plus the global
variables living in those sections and ``set_variable`` to configure them
before load.

BTF-defined maps (``struct { __uint(type, ...); ... } name SEC(".maps")``)
encode every attribute in the BTF of the variable's struct:

* ``__uint(attr, N)`` is a member ``int (*attr)[N]``: pointer to an array of N;
* ``__type(key, T)`` is a member ``T *key``: the size is that of T;
* ``__array(values, S)`` is ``S *values[]``: the inner map definition, with the
  initial slots given by relocations in ``.rel.maps``.

Global data (``.rodata``, ``.data``, ``.bss``, ``.rodata.*``, ``.data.*``,
including string literals in ``.rodata.str1.1``) becomes an ARRAY of one
entry whose value is the whole section.  Map names follow libbpf, so that
tools see the same names: ``<object>.<section>`` for the standard sections
(object name cut so the result fits 15 characters), the section name itself
for custom ones.
"""

import struct

from ..errors import BTFError, ConfigError, ELFError
from .spec import (BPF_F_MMAPABLE, BPF_F_RDONLY_PROG, MAP_TYPES, MapSpec, PIN_NONE,
                   Variable)

__all__ = ["read_maps", "data_map_name", "is_data_section", "set_variable",
           "get_variable", "OBJ_NAME_LEN"]

#: the kernel's BPF_OBJ_NAME_LEN: names hold at most 15 characters
OBJ_NAME_LEN = 16
_MAX_VALUE = 1 << 30

SHT_PROGBITS, SHT_NOBITS = 1, 8
SHF_ALLOC, SHF_EXECINSTR = 0x2, 0x4
STT_OBJECT, STT_SECTION = 1, 3

# BTF kinds (the kernel's numbers, as in btf.py's contract)
_K_INT, _K_PTR, _K_ARRAY, _K_STRUCT, _K_UNION, _K_ENUM = 1, 2, 3, 4, 5, 6
_K_VAR, _K_DATASEC, _K_ENUM64 = 14, 15, 19
_INT_SIGNED = 1


def is_data_section(name):
    """Whether a section of this name is global data the loader maps."""
    return (name in (".rodata", ".data", ".bss") or name.startswith(".rodata.")
            or name.startswith(".data.") or name.startswith(".bss."))


def data_map_name(obj_name, section):
    """The map name of a global data section (libbpf's naming)."""
    if section.find(".", 1) >= 0:
        # custom sections (.data.custom, .rodata.str1.1) keep their own name
        name = section
    else:
        suffix_len = max(7, len(section))
        prefix_len = max(0, min(OBJ_NAME_LEN - 1 - suffix_len, len(obj_name)))
        name = obj_name[:prefix_len] + section
    name = name[:OBJ_NAME_LEN - 1]
    return "".join(c if (c.isascii() and c.isalnum()) or c in "_." else "_" for c in name)


def read_maps(obj_name, sections, symbols, btf, relocations_of):
    """Every map and global variable of an object.

    ``relocations_of(section_name)`` gives ``[(offset, Symbol, type)]``.
    Returns ``(maps, variables)``, both dicts sorted by name.
    """
    maps = {}
    by_name = {}
    for s in sections:
        by_name.setdefault(s.name, s)
    if ".maps" in by_name:
        if btf is None:
            raise ELFError("the object has a .maps section but no usable .BTF",
                           hint="build with clang -g so that BTF is emitted")
        for m in _btf_maps(btf, by_name[".maps"], symbols, relocations_of):
            _add(maps, m)
    if "maps" in by_name:
        for m in _legacy_maps(by_name["maps"], symbols):
            _add(maps, m)
    variables = {}
    for sec in sections:
        if not is_data_section(sec.name) or not sec.flags & SHF_ALLOC \
                or sec.flags & SHF_EXECINSTR or sec.type not in (SHT_PROGBITS, SHT_NOBITS) \
                or sec.size == 0:
            continue
        if sec.size > _MAX_VALUE:
            raise ELFError(f"data section {sec.name!r} claims {sec.size} bytes")
        _add(maps, _data_map(obj_name, sec, btf))
        for var in _section_variables(sec, symbols, btf):
            variables.setdefault(var.name, var)
    return (dict(sorted(maps.items())), dict(sorted(variables.items())))


def _add(maps, m):
    if m.name in maps:
        raise ELFError(f"map {m.name!r} is defined twice")
    maps[m.name] = m


# -- global data ---------------------------------------------------------------

def _data_map(obj_name, sec, btf):
    readonly = sec.name.startswith(".rodata")
    flags = BPF_F_MMAPABLE | (BPF_F_RDONLY_PROG if readonly else 0)
    value_type = 0
    if btf is not None:
        ids = btf.find(sec.name, _K_DATASEC)
        value_type = ids[0] if ids else 0
    data = bytearray(sec.data) if sec.type == SHT_PROGBITS else bytearray(sec.size)
    return MapSpec(name=data_map_name(obj_name, sec.name), type=MAP_TYPES["array"],
                   key_size=4, value_size=sec.size, max_entries=1, flags=flags,
                   value_type_id=value_type, data=data, section=sec.name, freeze=readonly)


def _section_variables(sec, symbols, btf):
    types = {}
    if btf is not None:
        for dsid in btf.find(sec.name, _K_DATASEC):
            for vsi in btf[dsid].vars:
                var = btf[vsi.type]
                if var.kind == _K_VAR:
                    types[var.name] = var.type
    out = []
    for sym in symbols:
        if sym.type != STT_OBJECT or sym.shndx != sec.index or not sym.name:
            continue
        if sym.value + sym.size > sec.size:
            raise ELFError(f"variable {sym.name!r} lies outside section {sec.name!r}")
        out.append(Variable(name=sym.name, section=sec.name, offset=sym.value,
                            size=sym.size, type_id=types.get(sym.name, 0),
                            is_const=sec.name.startswith(".rodata")))
    out.sort(key=lambda v: (v.offset, v.name))
    return out


# -- legacy maps ---------------------------------------------------------------

_MAP_DEF_FIELDS = ("type", "key_size", "value_size", "max_entries", "flags",
                   "inner_map_idx", "numa_node")


def _legacy_maps(sec, symbols):
    out = []
    for sym in sorted((s for s in symbols if s.shndx == sec.index and s.name
                       and s.type != STT_SECTION), key=lambda s: s.value):
        if sym.size < 16 or sym.value + sym.size > len(sec.data):
            raise ELFError(f"legacy map {sym.name!r} in section 'maps' has a bad size "
                           f"{sym.size} (struct bpf_map_def needs at least 16 bytes)")
        count = min(len(_MAP_DEF_FIELDS), sym.size // 4)
        values = dict(zip(_MAP_DEF_FIELDS, struct.unpack_from(f"<{count}I", sec.data,
                                                               sym.value)))
        out.append(MapSpec(name=sym.name, type=values["type"], key_size=values["key_size"],
                           value_size=values["value_size"],
                           max_entries=values["max_entries"], flags=values.get("flags", 0),
                           numa_node=values.get("numa_node", 0)))
    return out


# -- BTF-defined maps ------------------------------------------------------------

def _btf_maps(btf, sec, symbols, relocations_of):
    datasecs = btf.find(".maps", _K_DATASEC)
    if not datasecs:
        raise ELFError("the .BTF has no DATASEC for .maps", hint="build with clang -g")
    datasec = btf[datasecs[0]]
    offsets = {s.name: s.value for s in symbols if s.shndx == sec.index and s.name}
    # initial slots of map-in-map / prog-array: relocations in .rel.maps
    relocs = sorted((off, sym.name) for off, sym, _t in relocations_of(".maps"))
    out = []
    for vsi in datasec.vars:
        var = btf[vsi.type]
        if var.kind != _K_VAR:
            raise ELFError(f".maps entry {vsi.type} is not a variable")
        name = var.name
        m, values_off = _map_from_struct(btf, name, var.type)
        var_off = offsets.get(name, vsi.offset)
        if values_off is not None:
            for off, target in relocs:
                rel = off - var_off - values_off
                if 0 <= rel < m.max_entries * 8 and rel % 8 == 0 and off >= var_off:
                    m.contents.append((rel // 8, target))
        out.append(m)
    return out


def _map_from_struct(btf, name, type_id, inner=False):
    """A MapSpec from a map definition struct; also the byte offset of ``values``."""
    sid = btf.skip_mods_and_typedefs(type_id)
    st = btf[sid]
    if st.kind != _K_STRUCT:
        raise ELFError(f"map {name!r}: its definition is not a struct in BTF")
    attrs = {}
    key_type = value_type = 0
    key_size = value_size = None
    values_off = None
    inner_spec = None
    for member in st.members:
        mname = member.name
        if mname in ("key", "value"):
            tid = _pointee(btf, name, member)
            size = btf.size_of(tid)
            if mname == "key":
                key_type, key_size = tid, size
            else:
                value_type, value_size = tid, size
        elif mname == "values":
            arr = btf[btf.skip_mods_and_typedefs(member.type)]
            if arr.kind != _K_ARRAY:
                raise ELFError(f"map {name!r}: 'values' must be an array of pointers")
            ptr = btf[btf.skip_mods_and_typedefs(arr.type)]
            if ptr.kind != _K_PTR:
                raise ELFError(f"map {name!r}: 'values' must be an array of pointers")
            target = btf.skip_mods_and_typedefs(ptr.type)
            values_off = member.bit_offset // 8
            if btf[target].kind == _K_STRUCT:
                inner_spec, _ = _map_from_struct(btf, f"{name}.inner", target, inner=True)
        else:
            attrs[mname] = _uint_value(btf, name, member)
    if "type" not in attrs:
        raise ELFError(f"map {name!r} has no type", hint="add __uint(type, BPF_MAP_TYPE_...)")
    mtype = attrs["type"]
    if "key_size" in attrs:
        if key_size is not None and key_size != attrs["key_size"]:
            raise ELFError(f"map {name!r}: key_size {attrs['key_size']} contradicts the key "
                           f"type's size {key_size}")
        key_size = attrs["key_size"]
    if "value_size" in attrs:
        if value_size is not None and value_size != attrs["value_size"]:
            raise ELFError(f"map {name!r}: value_size {attrs['value_size']} contradicts the "
                           f"value type's size {value_size}")
        value_size = attrs["value_size"]
    if mtype in (MAP_TYPES["array_of_maps"], MAP_TYPES["hash_of_maps"]):
        if inner_spec is None and not inner:
            raise ELFError(f"map {name!r}: a map-in-map needs __array(values, ...) "
                           "describing its inner map")
        value_size = 4
    if mtype == MAP_TYPES["prog_array"]:
        value_size = value_size or 4
    if mtype == MAP_TYPES["perf_event_array"]:
        key_size = key_size or 4
        value_size = value_size or 4
    spec = MapSpec(name=name, type=mtype, key_size=key_size or 0,
                   value_size=value_size or 0, max_entries=attrs.get("max_entries", 0),
                   flags=attrs.get("map_flags", 0), pinning=attrs.get("pinning", PIN_NONE),
                   numa_node=attrs.get("numa_node", 0), key_type_id=key_type,
                   value_type_id=value_type, inner=inner_spec)
    return spec, values_off


def _pointee(btf, name, member):
    ptr = btf[btf.skip_mods_and_typedefs(member.type)]
    if ptr.kind != _K_PTR:
        raise ELFError(f"map {name!r}: member {member.name!r} must be a pointer "
                       f"(use __type({member.name}, T))")
    return ptr.type


def _uint_value(btf, name, member):
    """The N of ``__uint(attr, N)`` (pointer to array of N) or ``__ulong`` (an enum)."""
    t = btf[btf.skip_mods_and_typedefs(member.type)]
    if t.kind == _K_PTR:
        arr = btf[btf.skip_mods_and_typedefs(t.type)]
        if arr.kind == _K_ARRAY:
            return arr.nelems
    if t.kind in (_K_ENUM, _K_ENUM64) and t.values:
        return t.values[0].value
    raise ELFError(f"map {name!r}: member {member.name!r} is not an __uint() value")


# -- configuring variables -------------------------------------------------------

def get_variable(spec, name):
    """The bytes a global variable holds in the spec (its initial value)."""
    var, m = _locate(spec, name)
    return bytes(m.data[var.offset:var.offset + var.size])


def set_variable(spec, name, value):
    """Set the initial value of a global variable (e.g. ``.rodata`` config) before load.

    ``value`` is ``bytes`` of exactly the variable's size, or an int packed
    little-endian to that size (signed when its BTF type is signed).
    """
    var, m = _locate(spec, name)
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        if len(raw) != var.size:
            raise ConfigError(f"variable {name!r} is {var.size} bytes, got {len(raw)} bytes",
                              hint=f"give exactly {var.size} bytes or an int")
    elif isinstance(value, int):
        signed = _is_signed(spec.btf, var.type_id)
        try:
            raw = int(value).to_bytes(var.size, "little", signed=signed)
        except OverflowError:
            kind = "signed" if signed else "unsigned"
            raise ConfigError(f"value {value} does not fit variable {name!r} "
                              f"({var.size} bytes, {kind})") from None
    else:
        raise ConfigError(f"variable {name!r}: value must be bytes or int, "
                          f"not {type(value).__name__}")
    m.data[var.offset:var.offset + var.size] = raw


def _locate(spec, name):
    var = spec.variables.get(name)
    if var is None:
        known = ", ".join(sorted(spec.variables)) or "none"
        raise ConfigError(f"no global variable {name!r} in the object (variables: {known})")
    for m in spec.maps.values():
        if m.section == var.section and m.data is not None:
            return var, m
    raise ConfigError(f"variable {name!r}: its section {var.section!r} has no data map")


def _is_signed(btf, type_id):
    if btf is None or not type_id:
        return False
    try:
        t = btf[btf.skip_mods_and_typedefs(type_id)]
    except BTFError:  # an unknown type: treat as unsigned
        return False
    if t.kind == _K_INT:
        return bool(t.encoding & _INT_SIGNED)
    if t.kind in (_K_ENUM, _K_ENUM64):
        return bool(t.signed)
    return False
