"""``python -m pybpfload inspect OBJ.o [--json]``: what is in a BPF object.

Programs (section, type, attach point, instruction count including linked
subprograms), maps (type, key/value sizes and BTF types, entries, flags,
pinning), global variables (section, offset, size, type) and CO-RE
relocations.  Kernel-free: reads the file only, and imports nothing of the
kernel layer.
"""

import json
import sys

__all__ = ["add_arguments", "run", "describe_object"]

_FLAG_NAMES = {1 << 0: "no_prealloc", 1 << 1: "no_common_lru", 1 << 2: "numa_node",
               1 << 3: "rdonly", 1 << 4: "wronly", 1 << 5: "stack_build_id",
               1 << 6: "zero_seed", 1 << 7: "rdonly_prog", 1 << 8: "wronly_prog",
               1 << 9: "clone", 1 << 10: "mmapable", 1 << 11: "preserve_elems",
               1 << 12: "inner_map"}
_CORE_KINDS = {0: "field_byte_offset", 1: "field_byte_size", 2: "field_exists",
               3: "field_signed", 4: "field_lshift_u64", 5: "field_rshift_u64",
               6: "type_id_local", 7: "type_id_target", 8: "type_exists", 9: "type_size",
               10: "enumval_exists", 11: "enumval_value", 12: "type_matches"}


def add_arguments(parser):
    parser.add_argument("object", help="a BPF ELF object (.bpf.o)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")


def run(args):
    from ..obj.elf import read_object_file

    obj = read_object_file(args.object)
    info = describe_object(obj)
    out = sys.stdout
    if args.json:
        json.dump(info, out, indent=2, sort_keys=True)
        out.write("\n")
    else:
        out.write(format_text(args.object, info))
    return 0


def describe_object(obj):
    """A JSON-ready dict of everything ``inspect`` shows."""
    from ..errors import BPFError
    from ..obj.link import link_program
    from ..obj.sections import attach_type_name, prog_type_name

    btf = obj.btf
    programs = []
    core = []
    for name, p in obj.programs.items():
        linked_error = None
        try:
            linked = link_program(obj, name)
        except BPFError as exc:
            linked, linked_error = p.instructions, str(exc)
        slots = sum(i.size for i in linked)
        subprogs = [i.symbol for i in linked[len(p.instructions):] if i.symbol]
        entry = {"name": name, "section": p.section, "type": prog_type_name(p.type),
                 "attach_kind": p.attach_kind, "attach_to": p.attach_to,
                 "expected_attach_type": attach_type_name(p.expected_attach_type)
                 if p.expected_attach_type else "",
                 "instructions": slots, "subprograms": subprogs,
                 "maps": list(p.maps_used), "sleepable": p.sleepable}
        if linked_error:
            entry["link_error"] = linked_error
        programs.append(entry)
        slot = 0
        for ins in linked:
            if ins.core is not None:
                core.append({"program": name, "insn": slot,
                             "kind": _CORE_KINDS.get(ins.core.kind, str(ins.core.kind)),
                             "description": _describe_core(ins.core, btf)})
            slot += ins.size
    maps = []
    for name, m in obj.maps.items():
        maps.append({"name": name, "type": m.type_name, "key_size": m.key_size,
                     "value_size": m.value_size, "key_type": _type_name(btf, m.key_type_id),
                     "value_type": _type_name(btf, m.value_type_id),
                     "max_entries": m.max_entries,
                     "entries_note": "one per CPU" if m.type == 4 and not m.max_entries else "",
                     "flags": _flag_names(m.flags), "pinning": "by_name" if m.pinning else "",
                     "section": m.section or "",
                     "inner": _inner(m.inner, btf) if m.inner else None,
                     "contents": [[k, v] for k, v in m.contents]})
    variables = [{"name": v.name, "section": v.section, "offset": v.offset, "size": v.size,
                  "type": _type_name(btf, v.type_id), "const": v.is_const}
                 for v in sorted(obj.variables.values(), key=lambda v: (v.section, v.offset))]
    return {"license": obj.license, "kernel_version": obj.kernel_version,
            "btf": obj.btf is not None, "programs": programs, "maps": maps,
            "variables": variables, "core_relocations": core}


def _inner(m, btf):
    return {"type": m.type_name, "key_size": m.key_size, "value_size": m.value_size,
            "max_entries": m.max_entries, "key_type": _type_name(btf, m.key_type_id),
            "value_type": _type_name(btf, m.value_type_id)}


def _flag_names(flags):
    names = [n for bit, n in sorted(_FLAG_NAMES.items()) if flags & bit]
    rest = flags & ~sum(_FLAG_NAMES)
    if rest:
        names.append(hex(rest))
    return names


def _describe_core(relo, btf):
    try:
        from ..obj.core import describe
    except ImportError:
        describe = None
    if describe is not None:
        from ..errors import BPFError
        try:
            return describe(relo, btf)
        except BPFError:
            pass
    return f"type {_type_name(btf, relo.type_id)} access {relo.access_str}"


_KIND_PREFIX = {4: "struct ", 5: "union ", 6: "enum ", 19: "enum "}


def _type_name(btf, type_id, depth=0):
    """A C-like name of a BTF type: 'struct key_t', 'u32', 'char[16]', '' when none."""
    if btf is None or not type_id:
        return ""
    from ..errors import BTFError

    try:
        t = btf[type_id]
    except BTFError:
        return f"#{type_id}"
    if depth > 8:
        return "..."
    kind = t.kind
    if kind == 2:  # pointer
        return _type_name(btf, t.type, depth + 1) + " *" if t.type else "void *"
    if kind == 3:  # array
        return f"{_type_name(btf, t.type, depth + 1)}[{t.nelems}]"
    if kind in (9, 10, 11, 18):  # volatile, const, restrict, type tag
        qual = {9: "volatile ", 10: "const ", 11: "restrict "}.get(kind, "")
        return qual + _type_name(btf, t.type, depth + 1)
    if t.name:
        return _KIND_PREFIX.get(kind, "") + t.name
    return _KIND_PREFIX.get(kind, "") + "(anon)"


def format_text(path, info):
    """The human-readable report."""
    lines = [f"{path}: license {info['license'] or '(none)'!r}"
             + (f", kernel version {info['kernel_version']:#x}" if info["kernel_version"]
                else "") + ("" if info["btf"] else ", no BTF")]
    lines.append("")
    lines.append(f"programs ({len(info['programs'])})")
    rows = [["NAME", "TYPE", "ATTACH", "INSNS", "SUBPROGRAMS", "MAPS"]]
    for p in info["programs"]:
        attach = p["attach_kind"] + (f" {p['attach_to']}" if p["attach_to"] else "")
        if p["sleepable"]:
            attach += " (sleepable)"
        rows.append([p["name"], p["type"], attach, str(p["instructions"]),
                     ", ".join(p["subprograms"]) or "-", ", ".join(p["maps"]) or "-"])
    lines += _table(rows)
    for p in info["programs"]:
        if p.get("link_error"):
            lines.append(f"  ! {p['name']}: {p['link_error']}")
    lines.append("")
    lines.append(f"maps ({len(info['maps'])})")
    rows = [["NAME", "TYPE", "KEY", "VALUE", "ENTRIES", "FLAGS", "PIN"]]
    for m in info["maps"]:
        key = _size_and_type(m["key_size"], m["key_type"])
        value = _size_and_type(m["value_size"], m["value_type"])
        if m["inner"]:
            value += f" -> {m['inner']['type']}"
        entries = str(m["max_entries"]) if not m["entries_note"] else m["entries_note"]
        rows.append([m["name"], m["type"], key, value, entries, ",".join(m["flags"]) or "-",
                     m["pinning"] or "-"])
    lines += _table(rows)
    for m in info["maps"]:
        if m["contents"]:
            slots = ", ".join(f"[{k}]={v}" for k, v in m["contents"])
            lines.append(f"  {m['name']} initial slots: {slots}")
    lines.append("")
    lines.append(f"global variables ({len(info['variables'])})")
    rows = [["NAME", "SECTION", "OFFSET", "SIZE", "TYPE"]]
    for v in info["variables"]:
        rows.append([v["name"], v["section"], str(v["offset"]), str(v["size"]),
                     v["type"] or "-"])
    lines += _table(rows)
    lines.append("")
    lines.append(f"CO-RE relocations ({len(info['core_relocations'])})")
    rows = [["PROGRAM", "INSN", "KIND", "WHAT"]]
    for c in info["core_relocations"]:
        rows.append([c["program"], str(c["insn"]), c["kind"], c["description"]])
    lines += _table(rows)
    return "\n".join(lines) + "\n"


def _size_and_type(size, type_name):
    return f"{size} ({type_name})" if type_name else str(size)


def _table(rows):
    if len(rows) == 1:
        return ["  (none)"]
    rows = [[_printable(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def _printable(text):
    """Names come from an untrusted file: no control characters on the terminal."""
    return "".join(c if c.isprintable() else "?" for c in str(text))
