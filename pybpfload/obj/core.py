"""CO-RE: rewriting a program's field offsets, sizes, type ids and enum values
so that it fits the target kernel's types (BPF "Compile Once - Run Everywhere").

The compiler records, for each instruction that embeds a type-dependent
constant, a relocation ``(type_id, access string, kind)`` against the object's
own (local) BTF.  :func:`relocate_core` resolves each of them against the
target BTF (normally the running kernel's) and patches the instruction in
place, following libbpf's rules:

* the local type's *essential* name (the text before a ``___flavour``
  suffix) selects candidate target types of a compatible kind;
* every candidate is matched (fields by name, through anonymous members;
  arrays by index; types by the compatibility or the stricter "matches"
  relation; enumerators by essential name);
* all matching candidates must agree, else the relocation is ambiguous;
* when nothing matches, the ``*_EXISTS``/``TYPE_MATCHES`` kinds yield 0, the
  type-based kinds yield 0, and the others *poison* the instruction: it
  becomes a call to the non-existent helper ``POISON_CALL_IMM``, which the
  verifier only rejects if the instruction is reachable.

Each relocation is reported as a :class:`CoreResult`, so that the kernel layer
can explain a verifier failure at a poisoned instruction.  The pass is pure:
no kernel is involved, only the two BTFs.
"""

from . import insn as _insn
from ..errors import BPFError, RelocationError

__all__ = [
    "relocate_core", "describe", "CoreResult", "CoreCache", "poison_message",
    "essential_name", "KIND_NAMES",
    "FIELD_BYTE_OFFSET", "FIELD_BYTE_SIZE", "FIELD_EXISTS", "FIELD_SIGNED",
    "FIELD_LSHIFT_U64", "FIELD_RSHIFT_U64", "TYPE_ID_LOCAL", "TYPE_ID_TARGET",
    "TYPE_EXISTS", "TYPE_SIZE", "ENUMVAL_EXISTS", "ENUMVAL_VALUE", "TYPE_MATCHES",
]

# enum bpf_core_relo_kind: the kernel's UAPI numbers, defined with the records
from .btf_ext import (  # noqa: E402  (re-exported)
    ENUMVAL_EXISTS, ENUMVAL_VALUE, FIELD_BYTE_OFFSET, FIELD_BYTE_SIZE, FIELD_EXISTS,
    FIELD_LSHIFT_U64, FIELD_RSHIFT_U64, FIELD_SIGNED, TYPE_EXISTS, TYPE_ID_LOCAL,
    TYPE_ID_TARGET, TYPE_MATCHES, TYPE_SIZE)

#: kind number -> what it computes, in words
KIND_NAMES = {
    FIELD_BYTE_OFFSET: "field byte offset",
    FIELD_BYTE_SIZE: "field byte size",
    FIELD_EXISTS: "field existence",
    FIELD_SIGNED: "field signedness",
    FIELD_LSHIFT_U64: "field left shift",
    FIELD_RSHIFT_U64: "field right shift",
    TYPE_ID_LOCAL: "local type id",
    TYPE_ID_TARGET: "target type id",
    TYPE_EXISTS: "type existence",
    TYPE_SIZE: "type size",
    ENUMVAL_EXISTS: "enum value existence",
    ENUMVAL_VALUE: "enum value",
    TYPE_MATCHES: "type match",
}

_FIELD_KINDS = frozenset(range(FIELD_BYTE_OFFSET, FIELD_RSHIFT_U64 + 1))
_TYPE_KINDS = frozenset((TYPE_ID_LOCAL, TYPE_ID_TARGET, TYPE_EXISTS, TYPE_SIZE, TYPE_MATCHES))
_ENUM_KINDS = frozenset((ENUMVAL_EXISTS, ENUMVAL_VALUE))

#: deepest access string / type nesting followed (libbpf's limits)
_MAX_SPEC_LEN = 64
_MAX_DEPTH = 32

_U64 = (1 << 64) - 1

# BTF kind numbers (the kernel's; repeated here so the module reads alone)
K_INT, K_PTR, K_ARRAY, K_STRUCT, K_UNION, K_ENUM, K_FWD = 1, 2, 3, 4, 5, 6, 7
K_FUNC_PROTO, K_FLOAT, K_ENUM64 = 13, 16, 19
_ANY_ENUM = (K_ENUM, K_ENUM64)
_KIND_WORDS = {K_STRUCT: "struct", K_UNION: "union", K_ENUM: "enum", K_ENUM64: "enum",
               K_FWD: "struct", 8: "typedef"}
_INT_SIGNED = 1

_SIZE_CODES = {1: _insn.BPF_B, 2: _insn.BPF_H, 4: _insn.BPF_W, 8: _insn.BPF_DW}
_CODE_SIZES = {v: k for k, v in _SIZE_CODES.items()}


class _Fail(Exception):
    """Internal: a relocation cannot be applied; carries the reason in words."""


class _Poison(Exception):
    """Internal: the relocation's value cannot be computed; poison the insn."""


# -- names ---------------------------------------------------------------------

def essential_name(name):
    """The name without its flavour: ``task_struct___v2`` -> ``task_struct``.

    Like libbpf, the flavour starts at the LAST ``X___Y`` where neither X nor
    Y is an underscore.
    """
    n = len(name)
    for i in range(n - 5, -1, -1):
        if (name[i] != "_" and name[i + 1:i + 4] == "___" and name[i + 4] != "_"):
            return name[:i + 1]
    return name


def _names_match(local_name, targ_name):
    """libbpf's name test of the "type matches" relation."""
    if not targ_name:
        return not local_name
    return essential_name(local_name) == essential_name(targ_name)


def _type_words(btf, type_id):
    """``struct task_struct``, ``enum foo``, ``typedef pid_t``, ``int``..."""
    try:
        t = btf[type_id]
        kind = t.kind
        name = t.name
    except BPFError:
        return f"type [{type_id}]"
    if kind == K_FWD and getattr(t, "is_union", False):
        prefix = "union"
    else:
        prefix = _KIND_WORDS.get(kind, "")
    if not name:
        name = "(anon)"
    return f"{prefix} {name}" if prefix else name


def describe(relo, local_btf):
    """A relocation in words, e.g. ``field byte offset of struct
    task_struct.real_parent`` or ``enum value of enum
    cgroup_subsys_id::cpu_cgrp_id``.  Never raises on malformed records."""
    kind = getattr(relo, "kind", None)
    what = KIND_NAMES.get(kind, f"unknown relocation kind {kind}")
    type_id = getattr(relo, "type_id", 0)
    access = getattr(relo, "access_str", "")
    root = _type_words(local_btf, type_id)
    try:
        indexes = _parse_access(access)
    except _Fail:
        return f"{what} of {root} (bad access string {access!r})"
    if kind in _TYPE_KINDS or kind not in KIND_NAMES:
        return f"{what} of {root}"
    if kind in _ENUM_KINDS:
        try:
            t = local_btf[local_btf.skip_mods_and_typedefs(type_id)]
            return f"{what} of {root}::{t.values[indexes[0]].name}"
        except (BPFError, AttributeError, IndexError):
            return f"{what} of {root} (bad enumerator {access!r})"
    return f"{what} of {root}{_path_words(local_btf, type_id, indexes)}"


def _path_words(btf, type_id, indexes):
    """The C-like path an access string denotes: ``[2].pid.numbers[1]``."""
    out = [f"[{indexes[0]}]"] if indexes[0] else []
    cur = type_id
    try:
        for idx in indexes[1:]:
            t = btf[btf.skip_mods_and_typedefs(cur)]
            if t.kind in (K_STRUCT, K_UNION):
                m = t.members[idx]
                if m.name:
                    out.append("." + m.name)
                cur = m.type
            elif t.kind == K_ARRAY:
                out.append(f"[{idx}]")
                cur = t.type
            else:
                raise IndexError
    except (BPFError, IndexError, AttributeError):
        out.append(" (bad access string)")
    return "".join(out)


def _parse_access(access):
    parts = access.split(":") if isinstance(access, str) else None
    if not parts or any(not p.isdigit() or not p.isascii() for p in parts):
        raise _Fail(f"malformed access string {access!r}")
    if len(parts) > _MAX_SPEC_LEN:
        raise _Fail(f"access string {access!r} is nested too deeply")
    return [int(p) for p in parts]


# -- specs: where an access string leads in one BTF -------------------------------

class _Acc:
    """One step of a spec: a named member (``name`` set) or an array index."""
    __slots__ = ("type_id", "idx", "name")

    def __init__(self, type_id, idx, name=None):
        self.type_id = type_id
        self.idx = idx
        self.name = name


class _Spec:
    """A relocation resolved in one BTF: root type, named steps, bit offset."""
    __slots__ = ("btf", "root_id", "accs", "raw", "bit_offset")

    def __init__(self, btf, root_id):
        self.btf = btf
        self.root_id = root_id
        self.accs = []
        self.raw = []
        self.bit_offset = 0

    def copy(self):
        s = _Spec(self.btf, self.root_id)
        s.accs = list(self.accs)
        s.raw = list(self.raw)
        s.bit_offset = self.bit_offset
        return s


def _skip(btf, type_id):
    """(id, type) past modifiers and typedefs."""
    tid = btf.skip_mods_and_typedefs(type_id)
    return tid, btf[tid]


def _is_flex_array(btf, prev, arr):
    """An array of 0 elements that is the last named member of its struct."""
    if prev is None or prev.name is None or arr.nelems > 0:
        return False
    return prev.idx == len(btf[prev.type_id].members) - 1


def _parse_local_spec(btf, relo, indexes):
    """Resolve the relocation's access string in the local BTF."""
    kind = relo.kind
    spec = _Spec(btf, relo.type_id)
    spec.raw = list(indexes)
    if kind in _TYPE_KINDS:
        if indexes != [0]:
            raise _Fail(f"type relocation has access string {relo.access_str!r}, expected '0'")
        return spec
    tid, t = _skip(btf, relo.type_id)
    first = indexes[0]
    if kind in _ENUM_KINDS:
        if t.kind not in _ANY_ENUM or len(indexes) > 1 or first >= len(t.values):
            raise _Fail("enum relocation does not name an enumerator")
        name = t.values[first].name
        if not name:
            raise _Fail("enumerator has no name")
        spec.accs.append(_Acc(tid, first, name))
        return spec
    spec.accs.append(_Acc(tid, first))
    spec.bit_offset = first * btf.size_of(tid) * 8
    cur = tid
    for idx in indexes[1:]:
        cur, t = _skip(btf, cur)
        if t.kind in (K_STRUCT, K_UNION):
            if idx >= len(t.members):
                raise _Fail(f"member #{idx} of {_type_words(btf, cur)} does not exist")
            m = t.members[idx]
            spec.bit_offset += m.bit_offset
            if m.name:
                spec.accs.append(_Acc(cur, idx, m.name))
            cur = m.type
        elif t.kind == K_ARRAY:
            flex = _is_flex_array(btf, spec.accs[-1], t)
            elem, _ = _skip(btf, t.type)
            if not flex and idx >= t.nelems:
                raise _Fail(f"index {idx} is out of the array's {t.nelems} elements")
            spec.accs.append(_Acc(elem, idx))
            spec.bit_offset += idx * btf.size_of(elem) * 8
            cur = elem
        else:
            raise _Fail(f"access string {relo.access_str!r} indexes into a "
                        f"{_type_words(btf, cur)}, not a struct, union or array")
    return spec


# -- compatibility relations ---------------------------------------------------

def _kinds_compat(k1, k2):
    return k1 == k2 or (k1 in _ANY_ENUM and k2 in _ANY_ENUM)


def _fields_compat(lbtf, lid, tbtf, tid):
    """May a local field of type ``lid`` be relocated to a target field ``tid``?"""
    for _ in range(_MAX_DEPTH):
        lid, lt = _skip(lbtf, lid)
        tid, tt = _skip(tbtf, tid)
        if lt.kind in (K_STRUCT, K_UNION) and tt.kind in (K_STRUCT, K_UNION):
            return True
        if not _kinds_compat(lt.kind, tt.kind):
            return False
        k = lt.kind
        if k in (K_PTR, K_FLOAT):
            return True
        if k in (K_FWD, K_ENUM, K_ENUM64):
            ln, tn = essential_name(lt.name), essential_name(tt.name)
            return not ln or not tn or ln == tn
        if k == K_INT:
            return lt.bit_offset == 0 and tt.bit_offset == 0
        if k == K_ARRAY:
            lid, tid = lt.type, tt.type
            continue
        return False
    raise _Fail("types are nested too deeply")


def _types_compat(lbtf, lid, tbtf, tid, depth=_MAX_DEPTH):
    """libbpf's type compatibility (TYPE_ID_TARGET, TYPE_EXISTS, TYPE_SIZE)."""
    while True:
        depth -= 1
        if depth < 0:
            raise _Fail("types are nested too deeply")
        lid, lt = _skip(lbtf, lid)
        tid, tt = _skip(tbtf, tid)
        if not _kinds_compat(lt.kind, tt.kind):
            return False
        k = lt.kind
        if k in (0, K_STRUCT, K_UNION, K_ENUM, K_ENUM64, K_FWD):
            return True
        if k == K_INT:
            return lt.bit_offset == 0 and tt.bit_offset == 0
        if k in (K_PTR, K_ARRAY):
            lid, tid = lt.type, tt.type
            continue
        if k == K_FUNC_PROTO:
            if len(lt.params) != len(tt.params):
                return False
            for lp, tp in zip(lt.params, tt.params):
                if not _types_compat(lbtf, lp.type, tbtf, tp.type, depth):
                    return False
            lid, tid = lt.return_type, tt.return_type
            continue
        return False


def _types_match(lbtf, lid, tbtf, tid, behind_ptr=False, depth=_MAX_DEPTH):
    """libbpf's stricter "type matches" relation (TYPE_MATCHES)."""
    while True:
        depth -= 1
        if depth < 0:
            raise _Fail("types are nested too deeply")
        lid, lt = _skip(lbtf, lid)
        tid, tt = _skip(tbtf, tid)
        if not _names_match(lt.name, tt.name):
            return False
        k, tk = lt.kind, tt.kind
        if k == 0:
            return tk == 0
        if k == K_FWD:
            if tk == K_FWD:
                return lt.is_union == tt.is_union
            if not behind_ptr:
                return False
            return (tk == K_STRUCT and not lt.is_union) or (tk == K_UNION and lt.is_union)
        if k in _ANY_ENUM:
            return tk in _ANY_ENUM and _enums_match(lt, tt)
        if k in (K_STRUCT, K_UNION):
            if behind_ptr:
                if k == tk:
                    return True
                return tk == K_FWD and (k == K_UNION) == tt.is_union
            return k == tk and _composites_match(lbtf, lt, tbtf, tt, behind_ptr, depth)
        if k == K_INT:
            return (tk == K_INT and lt.size == tt.size and
                    (lt.encoding & _INT_SIGNED) == (tt.encoding & _INT_SIGNED))
        if k == K_PTR:
            if tk != K_PTR:
                return False
            behind_ptr = True
            lid, tid = lt.type, tt.type
            continue
        if k == K_ARRAY:
            if tk != K_ARRAY or lt.nelems != tt.nelems:
                return False
            lid, tid = lt.type, tt.type
            continue
        if k == K_FUNC_PROTO:
            if tk != K_FUNC_PROTO or len(lt.params) != len(tt.params):
                return False
            for lp, tp in zip(lt.params, tt.params):
                if not _types_match(lbtf, lp.type, tbtf, tp.type, behind_ptr, depth):
                    return False
            lid, tid = lt.return_type, tt.return_type
            continue
        return False


def _enums_match(lt, tt):
    if lt.size != tt.size or len(lt.values) > len(tt.values):
        return False
    return all(any(_names_match(lv.name, tv.name) for tv in tt.values) for lv in lt.values)


def _composites_match(lbtf, lt, tbtf, tt, behind_ptr, depth):
    if len(lt.members) > len(tt.members):
        return False
    for lm in lt.members:
        if not any(_names_match(lm.name, tm.name) and
                   _types_match(lbtf, lm.type, tbtf, tm.type, behind_ptr, depth - 1)
                   for tm in tt.members):
            return False
    return True


# -- matching a local spec against one candidate ---------------------------------

def _match_member(lbtf, acc, tbtf, tid, spec):
    """Find the local member ``acc`` in target composite ``tid``, descending
    into anonymous members.  Returns the member's type id or None."""
    tid, tt = _skip(tbtf, tid)
    if tt.kind not in (K_STRUCT, K_UNION):
        return None
    lm = lbtf[acc.type_id].members[acc.idx]
    for i, m in enumerate(tt.members):
        if len(spec.raw) >= _MAX_SPEC_LEN:
            raise _Fail("struct nesting is too deep")
        spec.bit_offset += m.bit_offset
        spec.raw.append(i)
        if not m.name:
            found = _match_member(lbtf, acc, tbtf, m.type, spec)
            if found is not None:
                return found
        elif m.name == lm.name:
            if not _fields_compat(lbtf, lm.type, tbtf, m.type):
                return None
            spec.accs.append(_Acc(tid, i, m.name))
            return m.type
        spec.bit_offset -= m.bit_offset
        spec.raw.pop()
    return None


def _match_spec(local, kind, tbtf, cand_id):
    """Match the local spec against target type ``cand_id``: a target spec or None."""
    lbtf = local.btf
    spec = _Spec(tbtf, cand_id)
    if kind in _TYPE_KINDS:
        if kind == TYPE_MATCHES:
            ok = _types_match(lbtf, local.root_id, tbtf, cand_id)
        else:
            ok = _types_compat(lbtf, local.root_id, tbtf, cand_id)
        return spec if ok else None
    if kind in _ENUM_KINDS:
        tid, tt = _skip(tbtf, cand_id)
        if tt.kind not in _ANY_ENUM:
            return None
        want = essential_name(local.accs[0].name)
        for i, v in enumerate(tt.values):
            if essential_name(v.name) == want:
                spec.accs.append(_Acc(tid, i, v.name))
                spec.raw.append(i)
                return spec
        return None
    tid = cand_id
    for n, acc in enumerate(local.accs):
        tid, tt = _skip(tbtf, tid)
        if acc.name is not None:
            tid = _match_member(lbtf, acc, tbtf, tid, spec)
            if tid is None:
                return None
            continue
        if n > 0:
            if tt.kind != K_ARRAY:
                return None
            flex = _is_flex_array(tbtf, spec.accs[-1] if spec.accs else None, tt)
            if not flex and acc.idx >= tt.nelems:
                return None
            tid, _ = _skip(tbtf, tt.type)
        if len(spec.raw) >= _MAX_SPEC_LEN:
            raise _Fail("struct nesting is too deep")
        spec.accs.append(_Acc(tid, acc.idx))
        spec.raw.append(acc.idx)
        spec.bit_offset += acc.idx * tbtf.size_of(tid) * 8
    return spec


# -- computing values ------------------------------------------------------------

class _Value:
    """A relocation's value in one BTF, plus what the memory-size check needs."""
    __slots__ = ("val", "mem_size", "type_id", "validate")

    def __init__(self, val, mem_size=0, type_id=0, validate=True):
        self.val = val
        self.mem_size = mem_size
        self.type_id = type_id
        self.validate = validate


def _field_value(kind, spec):
    if kind == FIELD_EXISTS:
        return _Value(1 if spec is not None else 0)
    if spec is None:
        raise _Poison("field not found")
    btf = spec.btf
    acc = spec.accs[-1]
    if acc.name is None:      # the last step is an array index
        size = btf.size_of(acc.type_id)
        if kind == FIELD_BYTE_OFFSET:
            return _Value(spec.bit_offset // 8, size, acc.type_id)
        if kind == FIELD_BYTE_SIZE:
            return _Value(size)
        raise _Fail(f"{KIND_NAMES[kind]} cannot be applied to an array element")
    m = btf[acc.type_id].members[acc.idx]
    ftid, ft = _skip(btf, m.type)
    bit_off = spec.bit_offset
    bit_sz = m.bitfield_size
    bitfield = bit_sz > 0
    if bitfield:
        byte_sz = getattr(ft, "size", 0)
        if byte_sz <= 0:
            raise _Fail("bitfield has a type without size")
        byte_off = bit_off // 8 // byte_sz * byte_sz
        while bit_off + bit_sz - byte_off * 8 > byte_sz * 8:
            if byte_sz >= 8:
                raise _Fail("bitfield cannot be read with one 64-bit load")
            byte_sz *= 2
            byte_off = bit_off // 8 // byte_sz * byte_sz
    else:
        byte_sz = btf.size_of(ftid)
        byte_off = bit_off // 8
        bit_sz = byte_sz * 8
    validate = not bitfield
    if kind == FIELD_BYTE_OFFSET:
        if bitfield:
            return _Value(byte_off, validate=False)
        return _Value(byte_off, byte_sz, ftid)
    if kind == FIELD_BYTE_SIZE:
        return _Value(byte_sz, validate=validate)
    if kind == FIELD_SIGNED:
        signed = ((ft.kind in _ANY_ENUM and bool(ft.signed)) or
                  (ft.kind == K_INT and bool(ft.encoding & _INT_SIGNED)))
        return _Value(int(signed))
    if kind == FIELD_LSHIFT_U64:
        return _Value(64 - (bit_off + bit_sz - byte_off * 8), validate=validate)
    return _Value(64 - bit_sz)    # FIELD_RSHIFT_U64


def _type_value(kind, spec):
    if spec is None:
        return _Value(0)
    if kind == TYPE_ID_TARGET:
        return _Value(spec.root_id, validate=False)
    if kind in (TYPE_EXISTS, TYPE_MATCHES):
        return _Value(1)
    return _Value(spec.btf.size_of(spec.root_id))     # TYPE_SIZE


def _enum_value(kind, spec):
    if kind == ENUMVAL_EXISTS:
        return _Value(1 if spec is not None else 0)
    if spec is None:
        raise _Poison("enumerator not found")
    acc = spec.accs[0]
    t = spec.btf[acc.type_id]
    value = t.values[acc.idx].value
    if t.kind == K_ENUM:
        # a 32-bit enumerator is stored as s32 and widened with its sign
        value &= 0xFFFFFFFF
        if value & 0x80000000:
            value -= 1 << 32
    return _Value(value & _U64)


def _value(kind, spec):
    if kind in _FIELD_KINDS:
        return _field_value(kind, spec)
    if kind in _TYPE_KINDS:
        return _type_value(kind, spec)
    return _enum_value(kind, spec)


class _Decision:
    """The outcome of one relocation before the instruction is touched."""
    __slots__ = ("orig", "new", "poison", "reason", "memsz_bad", "targets", "bit_offset")

    def __init__(self):
        self.orig = None
        self.new = None
        self.poison = False
        self.reason = ""
        self.memsz_bad = False
        self.targets = ()
        self.bit_offset = None


def _decide(kind, local, target):
    """Local and target values of a relocation (target spec may be None)."""
    d = _Decision()
    d.orig = _value(kind, local)
    try:
        d.new = _value(kind, target)
    except _Poison as exc:
        d.poison, d.reason = True, str(exc)
        return d
    if kind in _FIELD_KINDS and d.orig.mem_size != d.new.mem_size:
        lt = local.btf[d.orig.type_id]
        tt = target.btf[d.new.type_id]
        ok = (lt.kind == K_PTR and tt.kind == K_PTR) or (
            lt.kind == K_INT and tt.kind == K_INT and
            lt.encoding != _INT_SIGNED and tt.encoding != _INT_SIGNED)
        d.memsz_bad = not ok
    return d


# -- candidates -------------------------------------------------------------------

class CoreCache:
    """Candidate lists per (target BTF, local root name); share it between
    programs of one object to search the kernel's BTF once per type."""

    def __init__(self):
        self._cands = {}

    def candidates(self, lbtf, local_id, tbtf):
        lt = lbtf[local_id]
        kind_class = K_ENUM if lt.kind in _ANY_ENUM else lt.kind
        key = (id(tbtf), kind_class, lt.name)
        found = self._cands.get(key)
        if found is None:
            found = self._cands[key] = _find_candidates(lt, tbtf)
        return found


def _find_candidates(lt, tbtf):
    want = essential_name(lt.name)
    finder = getattr(tbtf, "find_essential", None)
    if finder is not None:
        ids = finder(want)
    else:
        ids = [i for i in tbtf.ids() if essential_name(tbtf.name_of(i)) == want]
    out = []
    for i in ids:
        name = tbtf.name_of(i)
        if name and essential_name(name) == want and _kinds_compat(lt.kind, tbtf.kind_of(i)):
            out.append(i)
    return sorted(out)


# -- results -----------------------------------------------------------------------

class CoreResult:
    """What one CO-RE relocation did to its instruction.

    ``index``        relocation number within the program (in instruction order)
    ``insn_index``   the instruction's slot index in the program (as the verifier counts)
    ``kind``         relocation kind number; ``description`` it in words
    ``local_value``  the value the compiler put in (per the local BTF)
    ``value``        the value patched in (None when poisoned)
    ``poisoned``     the instruction was replaced by a call to POISON_CALL_IMM
    ``reason``       why it was poisoned ('' otherwise)
    ``targets``      target type ids that matched
    ``old`` / ``new`` (code, off, imm) of the instruction before / after
    """

    __slots__ = ("index", "insn_index", "kind", "description", "local_value", "value",
                 "poisoned", "reason", "targets", "program", "old", "new")

    def __init__(self, index, insn_index, kind, description, program):
        self.index = index
        self.insn_index = insn_index
        self.kind = kind
        self.description = description
        self.program = program
        self.local_value = None
        self.value = None
        self.poisoned = False
        self.reason = ""
        self.targets = ()
        self.old = None
        self.new = None

    def failure_message(self):
        """One line explaining a poisoned relocation, for a verifier failure."""
        return (f"CO-RE relocation #{self.index} for {self._subject()} in program "
                f"{self.program or '?'} failed: {self.reason}")

    def _subject(self):
        d = self.description
        for prefix in KIND_NAMES.values():
            if d.startswith(prefix + " of "):
                return d[len(prefix) + 4:]
        return d

    def __repr__(self):
        state = f"poisoned ({self.reason})" if self.poisoned else f"{self.local_value} -> {self.value}"
        return f"<CoreResult #{self.index} insn {self.insn_index} {self.description}: {state}>"


def poison_message(results, insn_index):
    """The failure message of the poisoned relocation at slot ``insn_index``, or None."""
    for r in results:
        if r.poisoned and r.insn_index == insn_index:
            return r.failure_message()
    return None


# -- the pass ---------------------------------------------------------------------

def relocate_core(insns, local_btf, target_btf, program_name="", cache=None):
    """Apply the CO-RE relocation of every instruction with ``.core`` set.

    Patches ``insns`` (a list of :class:`~pybpfload.obj.insn.Instruction`) in
    place; a poisoned ``ld_imm64`` becomes two poisoned one-slot calls so the
    slot count, and thus every jump, is unchanged.  Returns one
    :class:`CoreResult` per relocation, in instruction order.  Raises
    :class:`RelocationError` naming the program, instruction, type and field
    path when a relocation is malformed, ambiguous or cannot be applied.
    """
    if cache is None:
        cache = CoreCache()
    results = []
    pos = 0
    slot = 0
    while pos < len(insns):
        ins = insns[pos]
        relo = ins.core
        if relo is None:
            slot += ins.size
            pos += 1
            continue
        result = CoreResult(len(results), slot, getattr(relo, "kind", None),
                            describe(relo, local_btf), program_name)
        width = ins.size
        try:
            decision = _resolve(relo, local_btf, target_btf, cache)
            result.targets = decision.targets
            result.local_value = decision.orig.val
            result.old = (ins.code, ins.off, ins.imm)
            replacement = _patch(ins, decision)
        except (_Fail, BPFError, AttributeError, IndexError, TypeError, ValueError) as exc:
            if isinstance(exc, RelocationError):
                raise
            raise RelocationError(
                f"CO-RE relocation #{result.index} ({result.description}) at instruction "
                f"#{slot} of program {program_name or '?'}: {exc}") from None
        if replacement is not None:
            insns[pos:pos + 1] = replacement
            pos += len(replacement) - 1
            result.poisoned = True
            result.reason = decision.reason
        else:
            result.value = decision.new.val
        result.new = (insns[pos].code, insns[pos].off, insns[pos].imm)
        results.append(result)
        slot += width
        pos += 1
    return results


def _resolve(relo, lbtf, tbtf, cache):
    kind = relo.kind
    if kind not in KIND_NAMES:
        raise _Fail(f"unknown CO-RE relocation kind {kind}")
    indexes = _parse_access(relo.access_str)
    local = _parse_local_spec(lbtf, relo, indexes)
    if kind == TYPE_ID_LOCAL:
        d = _Decision()
        d.orig = d.new = _Value(relo.type_id, validate=False)
        return d
    if not lbtf[relo.type_id].name:
        raise _Fail("CO-RE relocations against anonymous types are not supported")
    chosen = None
    for cand in cache.candidates(lbtf, relo.type_id, tbtf):
        spec = _match_spec(local, kind, tbtf, cand)
        if spec is None:
            continue
        d = _decide(kind, local, spec)
        d.bit_offset = spec.bit_offset
        if chosen is None:
            chosen = d
            chosen.targets = (cand,)
            continue
        if d.bit_offset != chosen.bit_offset:
            raise _Fail(f"ambiguous: target types {chosen.targets[0]} and {cand} put the field "
                        f"at bit offsets {chosen.bit_offset} and {d.bit_offset}")
        if d.poison != chosen.poison or (not d.poison and d.new.val != chosen.new.val):
            raise _Fail(f"ambiguous: target types {chosen.targets[0]} and {cand} give "
                        f"different values ({chosen.new and chosen.new.val} and "
                        f"{d.new and d.new.val})")
        chosen.targets += (cand,)
    if chosen is None:
        chosen = _decide(kind, local, None)
        if chosen.poison and kind in _FIELD_KINDS:
            chosen.reason = "field not found" if _has_candidates(cache, lbtf, relo, tbtf) \
                else f"no type named {essential_name(lbtf[relo.type_id].name)!r} in the target"
    return chosen


def _has_candidates(cache, lbtf, relo, tbtf):
    return bool(cache.candidates(lbtf, relo.type_id, tbtf))


def _poisoned_call(template):
    p = template.copy()
    p.code, p.dst, p.src, p.off, p.imm = _insn.CALL, 0, 0, 0, _insn.POISON_CALL_IMM
    return p


def _patch(ins, d):
    """Patch ``ins`` in place; return replacement instructions when poisoned."""
    if d.poison:
        return _poison(ins)
    orig, new = d.orig, d.new
    cls = ins.cls
    if cls in (_insn.BPF_ALU, _insn.BPF_ALU64):
        if ins.code & _insn.BPF_X:
            raise _Fail("the instruction is an ALU with a register source, not an immediate")
        if orig.validate and (ins.imm & _U64) != (orig.val & _U64):
            raise _Fail(f"the instruction holds {ins.imm}, expected {orig.val}: "
                        "the relocation does not belong to it")
        v = new.val & 0xFFFFFFFF
        ins.imm = v - (1 << 32) if v & 0x80000000 else v
        return None
    if cls in (_insn.BPF_LDX, _insn.BPF_ST, _insn.BPF_STX):
        if orig.validate and (ins.off & _U64) != (orig.val & _U64):
            raise _Fail(f"the instruction's offset is {ins.off}, expected {orig.val}: "
                        "the relocation does not belong to it")
        if new.val > 0x7FFF:
            raise _Fail(f"offset {new.val} does not fit the instruction's 16-bit offset")
        if d.memsz_bad:
            d.reason = ("the field's size changed and it is not a pointer or unsigned "
                        "integer, so the load cannot be resized")
            return _poison(ins)
        if new.mem_size != orig.mem_size:
            size = _CODE_SIZES.get(ins.code & 0x18)
            if size != orig.mem_size:
                raise _Fail(f"the instruction accesses {size} bytes, expected {orig.mem_size}")
            code = _SIZE_CODES.get(new.mem_size)
            if code is None:
                raise _Fail(f"the field's new size {new.mem_size} cannot be loaded by one instruction")
            ins.code = (ins.code & ~0x18) | code
        ins.off = new.val
        return None
    if ins.code == _insn.LD_IMM64:
        if ins.src != 0 or ins.off != 0:
            raise _Fail("the ld_imm64 instruction has an unexpected form")
        if orig.validate and (ins.imm & _U64) != (orig.val & _U64):
            raise _Fail(f"the instruction holds {ins.imm}, expected {orig.val}: "
                        "the relocation does not belong to it")
        v = new.val & _U64
        ins.imm = v - (1 << 64) if v >> 63 else v
        return None
    raise _Fail(f"instruction code {ins.code:#04x} cannot carry a CO-RE relocation")


def _poison(ins):
    first = _poisoned_call(ins)
    if ins.code == _insn.LD_IMM64:
        second = _poisoned_call(ins)
        for name in ("reference", "core", "func_info", "line_info", "symbol"):
            setattr(second, name, None)
        second.ref_offset = 0
        return [first, second]
    return [first]
