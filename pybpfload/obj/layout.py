"""Turning raw bytes into Python values through a BTF type.

``Layout.of(btf, type_id)`` (or ``Layout.of_struct(btf, "exec_event")``)
compiles a BTF type into a decoder once; decoding an event or a map value is
then a single ``struct.unpack_from`` plus a little post-processing, which is
what the hot paths (perf rings, map dumps) need.

Decoded values:

* integers, enums and pointers -> ``int``; bool -> ``bool``; floats -> ``float``
* ``char[N]`` -> ``bytes`` cut at the first NUL (``raw_chars`` keeps all N)
* other arrays -> ``list``; arrays of ``char[N]`` -> ``list`` of ``bytes``
* structs and unions -> ``dict`` (``Layout.decode``) or a named tuple
  (``Layout.decode_tuple``); bitfields are extracted; a union decodes as
  each of its members over the same bytes.
"""

import collections
import keyword
import struct

from ..errors import BTFError, ParseError
from . import btf as btfmod

_INT_FORMATS = {(1, False): "B", (1, True): "b", (2, False): "H", (2, True): "h",
                (4, False): "I", (4, True): "i", (8, False): "Q", (8, True): "q"}


class Layout:
    """A compiled decoder for one BTF type."""

    def __init__(self, btf, type_id, raw=()):
        self.btf = btf
        self.type_id = type_id
        self.size = btf.size_of(type_id)
        self._decode = _compile(btf, type_id, 0, frozenset(raw))
        t = btf[btf.skip_mods_and_typedefs(type_id)]
        self.fields = tuple(m.name for m in t.members) if t.kind in (
            btfmod.KIND_STRUCT, btfmod.KIND_UNION) else ()
        self._tuple = (collections.namedtuple(_ident(t.name or "value"),
                                              [_ident(f) for f in self.fields], rename=True)
                       if self.fields and all(self.fields)
                       and len(set(self.fields)) == len(self.fields) else None)

    @classmethod
    def of(cls, btf, type_id, raw=()):
        return cls(btf, type_id, raw)

    @classmethod
    def of_struct(cls, btf, name, raw=()):
        """The layout of ``struct NAME`` (or union, or typedef of one).

        Members named in ``raw`` that are ``char`` arrays keep all their bytes
        (e.g. NUL-separated argument lists) instead of being cut at the first NUL.
        """
        for kind in (btfmod.KIND_STRUCT, btfmod.KIND_UNION, btfmod.KIND_TYPEDEF):
            ids = btf.find(name, kind)
            if ids:
                return cls(btf, ids[0], raw)
        raise BTFError(f"no struct or union named {name!r} in the BTF")

    def decode(self, data, offset=0):
        """Decode ``self.size`` bytes of ``data`` at ``offset``."""
        if len(data) - offset < self.size:
            raise ParseError(f"{len(data) - offset} bytes is too short for a "
                             f"{self.size}-byte value")
        return self._decode(data, offset)

    def decode_tuple(self, data, offset=0):
        """Like :meth:`decode`, a named tuple for structs with named members."""
        value = self.decode(data, offset)
        if self._tuple is None or not isinstance(value, dict):
            return value
        return self._tuple(*value.values())


#: how many zero-byte elements an array may have and still be decoded
MAX_EMPTY_ELEMENTS = 4096


def _ident(name):
    """``name`` as a Python identifier (named tuples refuse keywords and symbols)."""
    if name.isidentifier() and not keyword.iskeyword(name):
        return name
    return "_" + "".join(c if c.isalnum() else "_" for c in name)


def _compile(btf, type_id, depth, raw=frozenset()):
    if depth > 32:
        raise BTFError(f"type [{type_id}] nests too deeply to decode")
    tid = btf.skip_mods_and_typedefs(type_id)
    if tid == 0:
        return lambda d, o: None
    t = btf[tid]
    k = t.kind
    if k == btfmod.KIND_INT:
        if not 1 <= t.size <= 16:
            raise BTFError(f"type [{tid}] is a {t.size}-byte integer")
        if t.bits != t.size * 8 or t.bit_offset:
            return _bits_decoder(t.size, t.bit_offset, t.bits, bool(t.encoding & 1))
        if t.encoding & 4 and t.size == 1:
            return lambda d, o: d[o] != 0
        fmt = _INT_FORMATS.get((t.size, bool(t.encoding & 1)))
        if fmt is None:     # 16 bytes, or an odd size
            signed, n = bool(t.encoding & 1), t.size
            return lambda d, o: int.from_bytes(bytes(d[o:o + n]), "little", signed=signed)
        return _scalar(fmt)
    if k in (btfmod.KIND_ENUM, btfmod.KIND_ENUM64):
        fmt = _INT_FORMATS.get((t.size, bool(t.signed)))
        if fmt is None:     # an odd size: never read past the enum's own bytes
            signed, n = bool(t.signed), t.size
            return lambda d, o: int.from_bytes(bytes(d[o:o + n]), "little", signed=signed)
        return _scalar(fmt)
    if k == btfmod.KIND_PTR:
        return _scalar("Q")
    if k == btfmod.KIND_FLOAT:
        return _scalar({4: "f", 8: "d"}.get(t.size, "d")) if t.size in (4, 8) else (
            lambda d, o, n=t.size: bytes(d[o:o + n]))
    if k == btfmod.KIND_ARRAY:
        elem = btf.skip_mods_and_typedefs(t.type)
        et = btf[elem]
        n = t.nelems
        if et.kind == btfmod.KIND_INT and et.size == 1 and (et.encoding & 2 or et.name in (
                "char", "signed char", "unsigned char", "u8", "__u8")):
            def chars(d, o, n=n):
                raw = bytes(d[o:o + n])
                i = raw.find(b"\0")
                return raw if i < 0 else raw[:i]
            return chars
        esize = btf.size_of(elem)
        if esize == 0 and n > MAX_EMPTY_ELEMENTS:
            # elements with no bytes: nothing bounds n by the data's size
            raise BTFError(f"type [{tid}] is an array of {n} elements of 0 bytes")
        sub = _compile(btf, elem, depth + 1)
        return lambda d, o: [sub(d, o + i * esize) for i in range(n)]
    if k in (btfmod.KIND_STRUCT, btfmod.KIND_UNION):
        parts = []
        for m in t.members:
            byte_off = m.bit_offset // 8
            if not m.bitfield_size and byte_off + btf.size_of(m.type) > t.size:
                # corrupt BTF: decoding would read past the value's bytes
                raise BTFError(f"member {m.name!r} of type [{tid}] lies outside its "
                               f"{t.size}-byte {'union' if k == btfmod.KIND_UNION else 'struct'}")
            if m.bitfield_size:
                mt = btf[btf.skip_mods_and_typedefs(m.type)]
                size = btf.size_of(m.type)
                if not 1 <= size <= 16:
                    raise BTFError(f"bitfield {m.name!r} of type [{tid}] is stored in "
                                   f"{size} bytes")
                signed = bool(getattr(mt, "encoding", 0) & 1 or getattr(mt, "signed", False))
                start = (m.bit_offset // (size * 8)) * size
                if start + size > t.size:
                    raise BTFError(f"bitfield {m.name!r} of type [{tid}] lies outside its "
                                   f"{t.size}-byte record")
                parts.append((m.name, start, _bits_decoder(size, m.bit_offset - start * 8,
                                                           m.bitfield_size, signed)))
            elif m.name in raw:
                size = btf.size_of(m.type)
                parts.append((m.name, byte_off, lambda d, o, n=size: bytes(d[o:o + n])))
            else:
                parts.append((m.name, byte_off, _compile(btf, m.type, depth + 1)))
        names = [p[0] or f"_anon{i}" for i, p in enumerate(parts)]

        def record(d, o):
            return {name: fn(d, o + off) for name, (_, off, fn) in zip(names, parts)}
        return record
    size = btf.size_of(tid)
    return lambda d, o: bytes(d[o:o + size])


def _scalar(fmt):
    s = struct.Struct("<" + fmt)
    unpack = s.unpack_from
    return lambda d, o: unpack(d, o)[0]


def _bits_decoder(size, bit_offset, bits, signed):
    if not (0 < bits and 0 <= bit_offset and bit_offset + bits <= size * 8):
        raise BTFError(f"a {bits}-bit field at bit {bit_offset} does not fit its "
                       f"{size}-byte storage")
    mask = (1 << bits) - 1

    def bitfield(d, o):
        v = (int.from_bytes(bytes(d[o:o + size]), "little") >> bit_offset) & mask
        if signed and v >> (bits - 1):
            v -= 1 << bits
        return v
    return bitfield
