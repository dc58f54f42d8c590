"""BTF: parsing the BPF Type Format of an object and of the kernel.

API CONTRACT (other modules are written against it; keep it):

Kinds are module constants KIND_INT=1 ... KIND_ENUM64=19 (the kernel's numbers).

Decoded types are immutable objects with slots, each with ``id``, ``kind``
and ``name`` ('' when anonymous), plus:

  Void (id 0)                       -
  Int                               size, encoding (INT_SIGNED=1|INT_CHAR=2|INT_BOOL=4), bit_offset, bits
  Ptr, Typedef, Volatile, Const,
  Restrict, TypeTag                 type            (the target id)
  Array                             type, index_type, nelems
  Struct, Union                     size, members: tuple of Member(name, type, bit_offset, bitfield_size)
  Enum, Enum64                      size, signed (bool), values: tuple of EnumValue(name, value)
  Fwd                               is_union (bool)
  Func                              type (FuncProto id), linkage
  FuncProto                         return_type, params: tuple of Param(name, type)
  Var                               type, linkage
  Datasec                           size, vars: tuple of VarSecinfo(type, offset, size)
  Float                             size
  DeclTag                           type, component_idx

class BTF:
  BTF.parse(data: bytes, base: BTF | None = None) -> BTF      (split BTF when base given)
  BTF.load_kernel(path=KERNEL_BTF_PATH, cache_dir=None) -> BTF  (index cached on disk by build id)
  btf.data            the raw bytes
  btf.count           number of type ids (largest id + 1; id 0 is void)
  btf.base            the base BTF or None
  btf[type_id] / btf.get(type_id) -> decoded type (lazy, cached); KeyError-free: bad id -> BTFError
  btf.kind_of(id) -> int, btf.name_of(id) -> str      (cheap, from the index)
  btf.find(name, kind=None) -> list[int]             ids with exactly that name
  btf.find_essential(name, kind=None) -> list[int]   ids whose essential name (text before '___') equals name
  btf.skip_mods(id) -> id                            past const/volatile/restrict/type_tag
  btf.skip_mods_and_typedefs(id) -> id
  btf.size_of(id) -> int                             resolved size in bytes (arrays, typedefs...)
  btf.string(offset) -> str
  btf.ids() -> range of ids (first_id .. count-1)

Raw-byte fixups used before loading into a kernel (pure functions):
  fixup_datasecs(raw: bytes, section_sizes: dict[str,int], var_offsets: dict[str,int]) -> bytes
  sanitize(raw: bytes, unsupported: set[str]) -> bytes     (unsupported kind names e.g. {'decl_tag','type_tag','enum64','float','func_global','datasec'})

Errors: every malformed input raises errors.BTFError, never another exception.

Additions beyond the contract:
  btf.first_id, btf.str_len, btf.from_cache (True when load_kernel used the
  on-disk index), btf.kind_flag_of(id), essential_name(name), KIND_NAMES,
  LINKAGE_* constants, and ``find(..., include_base=True)``.

How it is fast: the type section is viewed as a memoryview of native u32
words (no copy); one tight loop records the word position of every type
record (``array('I')``).  The name index is one ``array('I')`` of type
indexes sorted by their NAME (the bytes, ties by id): ``find(name)`` is a
binary search of ~17 short comparisons of names read from the string
section, and the types whose name starts with ``name___`` (CO-RE flavors,
``find_essential``) are the run that follows.  Until that index exists (a
parsed object, a kernel BTF read without the cache) the first lookups search
the string section with ``bytes.find`` instead.  Types are decoded only when
asked for, and cached.
"""

import bisect
import mmap
import os
import operator
import struct
import sys
from array import array
from itertools import compress
from collections import namedtuple

from ..errors import BTFError

KERNEL_BTF_PATH = "/sys/kernel/btf/vmlinux"

BTF_MAGIC = 0xEB9F
BTF_VERSION = 1
HEADER_LEN = 24

# -- kinds (the kernel's numbers) --------------------------------------------
KIND_UNKN = 0
KIND_INT = 1
KIND_PTR = 2
KIND_ARRAY = 3
KIND_STRUCT = 4
KIND_UNION = 5
KIND_ENUM = 6
KIND_FWD = 7
KIND_TYPEDEF = 8
KIND_VOLATILE = 9
KIND_CONST = 10
KIND_RESTRICT = 11
KIND_FUNC = 12
KIND_FUNC_PROTO = 13
KIND_VAR = 14
KIND_DATASEC = 15
KIND_FLOAT = 16
KIND_DECL_TAG = 17
KIND_TYPE_TAG = 18
KIND_ENUM64 = 19

KIND_NAMES = {
    0: "void", 1: "int", 2: "ptr", 3: "array", 4: "struct", 5: "union",
    6: "enum", 7: "fwd", 8: "typedef", 9: "volatile", 10: "const",
    11: "restrict", 12: "func", 13: "func_proto", 14: "var", 15: "datasec",
    16: "float", 17: "decl_tag", 18: "type_tag", 19: "enum64",
}

# Int encoding bits
INT_SIGNED = 1
INT_CHAR = 2
INT_BOOL = 4

# linkage of FUNC (in vlen) and VAR (in the extra word)
LINKAGE_STATIC = 0
LINKAGE_GLOBAL = 1
LINKAGE_EXTERN = 2

# Record length in u32 words: fixed part (header + extra word) and per-vlen part.
_FIXED_WORDS = [None] * 32
_PER_VLEN_WORDS = [0] * 32
for _k, _fixed, _per in (
        (KIND_INT, 4, 0), (KIND_PTR, 3, 0), (KIND_ARRAY, 6, 0),
        (KIND_STRUCT, 3, 3), (KIND_UNION, 3, 3), (KIND_ENUM, 3, 2),
        (KIND_FWD, 3, 0), (KIND_TYPEDEF, 3, 0), (KIND_VOLATILE, 3, 0),
        (KIND_CONST, 3, 0), (KIND_RESTRICT, 3, 0), (KIND_FUNC, 3, 0),
        (KIND_FUNC_PROTO, 3, 2), (KIND_VAR, 4, 0), (KIND_DATASEC, 3, 3),
        (KIND_FLOAT, 3, 0), (KIND_DECL_TAG, 4, 0), (KIND_TYPE_TAG, 3, 0),
        (KIND_ENUM64, 3, 3)):
    _FIXED_WORDS[_k] = _fixed
    _PER_VLEN_WORDS[_k] = _per
_FIXED_WORDS = tuple(_FIXED_WORDS)
_PER_VLEN_WORDS = tuple(_PER_VLEN_WORDS)

_MODIFIERS = frozenset((KIND_CONST, KIND_VOLATILE, KIND_RESTRICT, KIND_TYPE_TAG))
_MAX_RESOLVE_DEPTH = 32
_HEADER = struct.Struct("<HBBIIIII")
_LITTLE_HOST = sys.byteorder == "little"


# -- decoded types -----------------------------------------------------------

Member = namedtuple("Member", "name type bit_offset bitfield_size")
EnumValue = namedtuple("EnumValue", "name value")
Param = namedtuple("Param", "name type")
VarSecinfo = namedtuple("VarSecinfo", "type offset size")


class Type:
    """Base of the decoded BTF types: immutable, compared by value."""

    __slots__ = ("id", "kind", "name")
    _fields = ()

    def __init__(self, id, kind, name, *values):
        setter = object.__setattr__
        setter(self, "id", id)
        setter(self, "kind", kind)
        setter(self, "name", name)
        for field, value in zip(self._fields, values):
            setter(self, field, value)

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name):
        raise AttributeError(f"{type(self).__name__} is immutable")

    def _key(self):
        return (type(self), self.id, self.name) + tuple(getattr(self, f) for f in self._fields)

    def __eq__(self, other):
        return isinstance(other, Type) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        fields = "".join(f", {f}={getattr(self, f)!r}" for f in self._fields)
        return f"{type(self).__name__}(id={self.id}, name={self.name!r}{fields})"


def _type_class(name, fields):
    fields = tuple(fields.split())
    return type(name, (Type,), {"__slots__": fields, "_fields": fields,
                                "__doc__": f"A BTF {name} type."})


Void = _type_class("Void", "")
Int = _type_class("Int", "size encoding bit_offset bits")
Ptr = _type_class("Ptr", "type")
Array = _type_class("Array", "type index_type nelems")
Struct = _type_class("Struct", "size members")
Union = _type_class("Union", "size members")
Enum = _type_class("Enum", "size signed values")
Fwd = _type_class("Fwd", "is_union")
Typedef = _type_class("Typedef", "type")
Volatile = _type_class("Volatile", "type")
Const = _type_class("Const", "type")
Restrict = _type_class("Restrict", "type")
Func = _type_class("Func", "type linkage")
FuncProto = _type_class("FuncProto", "return_type params")
Var = _type_class("Var", "type linkage")
Datasec = _type_class("Datasec", "size vars")
Float = _type_class("Float", "size")
DeclTag = _type_class("DeclTag", "type component_idx")
TypeTag = _type_class("TypeTag", "type")
Enum64 = _type_class("Enum64", "size signed values")


def essential_name(name):
    """The name without its CO-RE flavor suffix: 'foo___v2' -> 'foo'.

    The flavor separator is the last ``X___Y`` in the name where neither X
    nor Y is an underscore (the rule the kernel-side CO-RE tooling uses).
    """
    for i in range(len(name) - 5, -1, -1):
        if (name[i] != "_" and name[i + 1:i + 4] == "___" and name[i + 4] != "_"):
            return name[:i + 1]
    return name


def _header(data):
    """Validate the BTF header; return (hdr_len, type_start, type_end, str_start, str_end)."""
    if len(data) < HEADER_LEN:
        raise BTFError(f"BTF is truncated: {len(data)} bytes, the header alone needs {HEADER_LEN}")
    magic_le = data[0] | data[1] << 8
    if magic_le != BTF_MAGIC:
        if magic_le == 0x9FEB:
            raise BTFError("BTF is big-endian; only little-endian BTF is supported",
                           "rebuild the object with -target bpfel")
        raise BTFError(f"not BTF: bad magic 0x{magic_le:04x} (expected 0xeb9f)")
    _, version, _flags, hdr_len, type_off, type_len, str_off, str_len = \
        _HEADER.unpack_from(data, 0)
    if version != BTF_VERSION:
        raise BTFError(f"unsupported BTF version {version} (expected {BTF_VERSION})")
    if hdr_len < HEADER_LEN or hdr_len > len(data):
        raise BTFError(f"bad BTF header length {hdr_len} for {len(data)} bytes of data")
    body = len(data) - hdr_len
    if type_off + type_len > body or str_off + str_len > body:
        raise BTFError(f"BTF sections (types {type_off}+{type_len}, strings {str_off}+{str_len})"
                       f" run past the end of the {body} bytes after the header")
    if type_off % 4 or type_len % 4:
        raise BTFError(f"BTF type section (offset {type_off}, length {type_len}) is not 4-byte aligned")
    return (hdr_len, hdr_len + type_off, hdr_len + type_off + type_len,
            hdr_len + str_off, hdr_len + str_off + str_len)


def _words(data, start, end):
    """The u32 words of data[start:end] (little-endian) as an indexable sequence."""
    if _LITTLE_HOST:
        return memoryview(data)[start:end].cast("I")
    words = array("I", data[start:end])
    words.byteswap()
    return words


def _index_types(words, first_id, name_offs=None):
    """Word position of every type record in ``words``: array('I').

    With ``name_offs`` (an array('I')), each record's name offset is
    appended to it on the way (cheaper than a second pass).

    The step from one record to the next depends only on the record's info
    word, and a kernel BTF uses a few hundred distinct info words, so the
    steps are memoized in a dict filled on KeyError: the hot loop is one
    index, one dict lookup, one append and one add per type.
    """
    offsets = array("I")
    append = offsets.append
    name_append = name_offs.append if name_offs is not None else None
    steps = {}
    n = len(words)
    pos = 0
    while True:
        try:
            if name_append is None:
                while pos < n:
                    step = steps[words[pos + 1]]
                    append(pos)
                    pos += step
            else:
                while pos < n:
                    step = steps[words[pos + 1]]
                    append(pos)
                    name_append(words[pos])
                    pos += step
            break
        except KeyError:
            info = words[pos + 1]
            kind = info >> 24 & 0x1F
            if _FIXED_WORDS[kind] is None:
                raise BTFError(f"unknown BTF kind {kind} in type id {first_id + len(offsets)}",
                               "the BTF was made for a newer kernel ABI than pybpfload knows") from None
            steps[info] = _FIXED_WORDS[kind] + _PER_VLEN_WORDS[kind] * (info & 0xFFFF)
        except IndexError:
            break
    if pos != n:
        raise BTFError(f"BTF type section is truncated in type id {first_id + len(offsets) - 1}")
    return offsets


def _name_index(btf):
    """array('I') of the indexes of the named types of ``btf`` sorted by name
    (bytes), ties by index.

    Anonymous types (name offset 0) are left out (``find("")`` scans for
    them); each other name is read once from the string section and the
    indexes are sorted with the names as keys (a stable sort: equal names
    keep id order).  A name offset outside the string section sorts as
    b"\xff", which no UTF-8 name equals.  ~40 ms and ~9 MB at peak for a
    kernel BTF: done once, then stored in the on-disk cache.
    """
    words, offsets = btf._words, btf._offsets
    n = len(offsets)
    name_offs = btf._name_offs
    if name_offs is None or len(name_offs) != n:
        name_offs = array("I", map(words.__getitem__, offsets))
    named_mask = bytes(map(bool, name_offs))
    named = array("I", compress(range(n), named_mask))
    names = None
    if btf.base is None:
        strings = bytes(btf.data[btf._s_start:btf._s_end])    # bytes.find beats mmap's
        find = strings.find
        names = [strings[o:find(b"\0", o)] for o in compress(name_offs, named_mask)]
        if b"" in names:    # an offset past the strings (or at a NUL): read them carefully
            names = None
    if names is None:       # split BTF (names in the base's strings too), odd offsets
        names = list(map(btf._name_bytes, compress(name_offs, named_mask)))
    return array("I", map(named.__getitem__, sorted(range(len(names)), key=names.__getitem__)))


def _read_btf_file(path):
    """The bytes of a BTF file: a private read-only mapping when possible, else read()."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise BTFError(f"cannot read BTF {path}: {e.strerror}",
                       "the kernel needs CONFIG_DEBUG_INFO_BTF=y") from None
    try:
        size = os.fstat(fd).st_size
        if size > 0:
            try:
                return mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)
            except (OSError, ValueError):
                pass
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as e:
        raise BTFError(f"cannot read BTF {path}: {e.strerror}") from None
    finally:
        os.close(fd)



class BTF:
    """Parsed BTF: an index over the raw bytes, and types decoded on demand."""

    #: after this many name lookups by scanning, the sorted name index is built
    _SCANS_BEFORE_INDEX = 12

    def __init__(self, data, base=None, _index=None):
        if not isinstance(data, (bytes, mmap.mmap)):
            try:
                data = bytes(data)
            except TypeError:
                raise BTFError(f"BTF data must be bytes, not {type(data).__name__}") from None
        self.data = data
        self.base = base
        self.from_cache = False
        hdr_len, t_start, t_end, s_start, s_end = _header(data)
        self._t_start, self._t_end = t_start, t_end
        self._s_start, self._s_end = s_start, s_end
        self.str_len = s_end - s_start
        if base is None:
            self.first_id = 1
            self._str_base = 0
            if self.str_len and data[s_start] != 0:
                raise BTFError("BTF string section does not start with an empty string")
        else:
            if not isinstance(base, BTF):
                raise BTFError("split BTF needs a BTF object as its base")
            self.first_id = base.count
            self._str_base = base._str_base + base.str_len
        if self.str_len and data[s_end - 1] != 0:
            raise BTFError("BTF string section is not NUL-terminated")
        self._words = _words(data, t_start, t_end)
        self._name_keys = None
        self._name_offs = None
        if _index is not None:
            self._offsets, self._name_keys = _index
            if (self._offsets and self._offsets[-1] >= len(self._words)
                    or len(self._name_keys) > len(self._offsets)):
                raise BTFError("cached BTF index does not match the BTF data")
        else:
            # the name offsets are kept until the name index is built from them
            self._name_offs = array("I")
            self._offsets = _index_types(self._words, self.first_id, self._name_offs)
        self._scans = 0
        self.count = self.first_id + len(self._offsets)
        self._cache = {}
        self._find_cache = {}

    # -- construction --------------------------------------------------------

    @classmethod
    def parse(cls, data, base=None):
        """Parse BTF bytes; with ``base`` the data is split BTF (e.g. a module's)."""
        return cls(data, base)

    @classmethod
    def load_kernel(cls, path=KERNEL_BTF_PATH, cache_dir=None):
        """Read the running kernel's BTF, using (and filling) the on-disk index cache.

        The file is mapped read-only when the kernel allows it (6.16+), else
        read; then ``btf.data`` is an ``mmap`` (bytes-like: slicing, find, len).
        ``btf.from_cache`` says whether the type index came from the cache.
        """
        from . import btf_cache
        data = _read_btf_file(path)
        try:
            key = btf_cache.cache_key(data)
        except BTFError:
            key = None
        if cache_dir is None:
            cache_dir = btf_cache.default_cache_dir()
        index = btf_cache.load_index(cache_dir, key) if key else None
        if index is not None:
            try:
                btf = cls(data, None, _index=index)
            except BTFError:
                btf = None
            if btf is not None:
                btf.from_cache = True
                return btf
        btf = cls(data)
        btf._ensure_name_index()
        if key:
            btf_cache.store_index(cache_dir, key, (btf._offsets, btf._name_keys))
        return btf

    # -- cheap accessors -----------------------------------------------------

    def ids(self):
        """All type ids this BTF defines (split BTF: only its own)."""
        return range(self.first_id, self.count)

    def __len__(self):
        return self.count

    def _pos(self, type_id):
        """Word position of a type record of this (not the base) BTF."""
        idx = type_id - self.first_id
        if idx < 0 or idx >= len(self._offsets):
            raise BTFError(f"BTF type id {type_id} out of range (1..{self.count - 1})")
        return self._offsets[idx]

    def _bad_id(self, type_id):
        return BTFError(f"BTF type id {type_id!r} is not an integer in 0..{self.count - 1}")

    def kind_of(self, type_id):
        """The kind number of a type id (0 for void)."""
        if type(type_id) is not int:
            raise self._bad_id(type_id)
        if type_id == 0:
            return KIND_UNKN
        if type_id < self.first_id and self.base is not None:
            return self.base.kind_of(type_id)
        return self._words[self._pos(type_id) + 1] >> 24 & 0x1F

    def kind_flag_of(self, type_id):
        """The kind_flag bit of a type id."""
        if type(type_id) is not int:
            raise self._bad_id(type_id)
        if type_id == 0:
            return False
        if type_id < self.first_id and self.base is not None:
            return self.base.kind_flag_of(type_id)
        return bool(self._words[self._pos(type_id) + 1] >> 31)

    def name_of(self, type_id):
        """The name of a type id ('' when anonymous)."""
        if type(type_id) is not int:
            raise self._bad_id(type_id)
        if type_id == 0:
            return ""
        if type_id < self.first_id and self.base is not None:
            return self.base.name_of(type_id)
        return self.string(self._words[self._pos(type_id)])

    def string(self, offset):
        """The NUL-terminated string at ``offset`` of the string section."""
        if offset < self._str_base:
            return self.base.string(offset)
        rel = offset - self._str_base
        if rel < 0 or rel >= self.str_len:
            raise BTFError(f"BTF string offset {offset} is outside the string section")
        start = self._s_start + rel
        end = self.data.find(b"\0", start, self._s_end)
        try:
            return self.data[start:end].decode()
        except UnicodeDecodeError:
            raise BTFError(f"BTF string at offset {offset} is not valid UTF-8") from None

    # -- decoding ------------------------------------------------------------

    def __getitem__(self, type_id):
        return self.get(type_id)

    def get(self, type_id):
        """The decoded type for ``type_id`` (cached)."""
        t = self._cache.get(type_id)
        if t is not None:
            return t
        if type(type_id) is not int:
            raise self._bad_id(type_id)
        if type_id == 0:
            t = Void(0, KIND_UNKN, "")
        elif isinstance(type_id, int) and 0 < type_id < self.first_id and self.base is not None:
            return self.base.get(type_id)
        else:
            t = self._decode(type_id)
        self._cache[type_id] = t
        return t

    def _decode(self, type_id):
        w = self._words
        pos = self._pos(type_id)
        name_off, info, size_or_type = w[pos], w[pos + 1], w[pos + 2]
        kind = info >> 24 & 0x1F
        vlen = info & 0xFFFF
        kflag = info >> 31
        name = self.string(name_off)
        s = self.string
        p = pos + 3
        if kind == KIND_INT:
            enc = w[p]
            return Int(type_id, kind, name, size_or_type, enc >> 24 & 0x0F, enc >> 16 & 0xFF, enc & 0xFF)
        if kind in (KIND_STRUCT, KIND_UNION):
            members = []
            for i in range(p, p + 3 * vlen, 3):
                off = w[i + 2]
                if kflag:
                    members.append(Member(s(w[i]), w[i + 1], off & 0xFFFFFF, off >> 24))
                else:
                    members.append(Member(s(w[i]), w[i + 1], off, 0))
            cls = Struct if kind == KIND_STRUCT else Union
            return cls(type_id, kind, name, size_or_type, tuple(members))
        if kind == KIND_ENUM:
            values = []
            for i in range(p, p + 2 * vlen, 2):
                v = w[i + 1]
                if kflag and v & 0x80000000:
                    v -= 1 << 32
                values.append(EnumValue(s(w[i]), v))
            return Enum(type_id, kind, name, size_or_type, bool(kflag), tuple(values))
        if kind == KIND_ENUM64:
            values = []
            for i in range(p, p + 3 * vlen, 3):
                v = w[i + 1] | w[i + 2] << 32
                if kflag and v & (1 << 63):
                    v -= 1 << 64
                values.append(EnumValue(s(w[i]), v))
            return Enum64(type_id, kind, name, size_or_type, bool(kflag), tuple(values))
        if kind == KIND_ARRAY:
            return Array(type_id, kind, name, w[p], w[p + 1], w[p + 2])
        if kind == KIND_PTR:
            return Ptr(type_id, kind, name, size_or_type)
        if kind == KIND_TYPEDEF:
            return Typedef(type_id, kind, name, size_or_type)
        if kind == KIND_CONST:
            return Const(type_id, kind, name, size_or_type)
        if kind == KIND_VOLATILE:
            return Volatile(type_id, kind, name, size_or_type)
        if kind == KIND_RESTRICT:
            return Restrict(type_id, kind, name, size_or_type)
        if kind == KIND_TYPE_TAG:
            return TypeTag(type_id, kind, name, size_or_type)
        if kind == KIND_FWD:
            return Fwd(type_id, kind, name, bool(kflag))
        if kind == KIND_FUNC:
            return Func(type_id, kind, name, size_or_type, vlen)
        if kind == KIND_FUNC_PROTO:
            params = tuple(Param(s(w[i]), w[i + 1]) for i in range(p, p + 2 * vlen, 2))
            return FuncProto(type_id, kind, name, size_or_type, params)
        if kind == KIND_VAR:
            return Var(type_id, kind, name, size_or_type, w[p])
        if kind == KIND_DATASEC:
            vars_ = tuple(VarSecinfo(w[i], w[i + 1], w[i + 2]) for i in range(p, p + 3 * vlen, 3))
            return Datasec(type_id, kind, name, size_or_type, vars_)
        if kind == KIND_FLOAT:
            return Float(type_id, kind, name, size_or_type)
        if kind == KIND_DECL_TAG:
            idx = w[p]
            if idx & 0x80000000:
                idx -= 1 << 32
            return DeclTag(type_id, kind, name, size_or_type, idx)
        raise BTFError(f"unknown BTF kind {kind} in type id {type_id}")

    # -- resolving -----------------------------------------------------------

    def _check_id(self, type_id):
        if not isinstance(type_id, int) or type_id < 0 or type_id >= self.count:
            raise BTFError(f"BTF type id {type_id} out of range (0..{self.count - 1})")

    def skip_mods(self, type_id):
        """Follow const/volatile/restrict/type_tag to the first other type."""
        for _ in range(_MAX_RESOLVE_DEPTH):
            if self.kind_of(type_id) not in _MODIFIERS:
                return type_id
            type_id = self.get(type_id).type
        raise BTFError(f"BTF type id {type_id}: modifier chain too long or looping")

    def skip_mods_and_typedefs(self, type_id):
        """Follow modifiers and typedefs to the underlying type."""
        for _ in range(_MAX_RESOLVE_DEPTH):
            kind = self.kind_of(type_id)
            if kind not in _MODIFIERS and kind != KIND_TYPEDEF:
                return type_id
            type_id = self.get(type_id).type
        raise BTFError(f"BTF type id {type_id}: typedef/modifier chain too long or looping")

    def size_of(self, type_id):
        """Size in bytes of a type, resolving typedefs, modifiers, arrays and vars."""
        nelems = 1
        start = type_id
        for _ in range(_MAX_RESOLVE_DEPTH):
            kind = self.kind_of(type_id)
            if kind in (KIND_INT, KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_ENUM64,
                        KIND_DATASEC, KIND_FLOAT):
                return nelems * self.get(type_id).size
            if kind == KIND_PTR:
                return nelems * 8
            if kind == KIND_ARRAY:
                arr = self.get(type_id)
                nelems *= arr.nelems
                type_id = arr.type
            elif kind in _MODIFIERS or kind in (KIND_TYPEDEF, KIND_VAR, KIND_DECL_TAG):
                type_id = self.get(type_id).type
            else:
                raise BTFError(f"BTF type id {type_id} ({KIND_NAMES.get(kind, kind)}) has no size"
                               f" (asked for the size of type id {start})")
        raise BTFError(f"BTF type id {start}: type chain too long or looping")

    # -- finding by name -----------------------------------------------------

    def _ensure_name_index(self):
        if self._name_keys is None:
            self._name_keys = _name_index(self)
            self._name_offs = None

    def _name_bytes(self, offset):
        """The name at absolute string ``offset`` as bytes; b"\\xff" when outside the strings."""
        if offset < self._str_base:
            return self.base._name_bytes(offset)
        rel = offset - self._str_base
        if rel >= self.str_len:
            return b"\xff"
        start = self._s_start + rel
        return self.data[start:self.data.find(b"\0", start, self._s_end)]

    def _ids_in_name_order(self, key, prefix):
        """Own type ids named exactly ``key`` (bytes), or, with ``prefix``, whose
        name starts with ``key``: a binary search of the name index, then the
        run of matching names that follows it."""
        order, words, offsets = self._name_keys, self._words, self._offsets
        name = self._name_bytes
        lo, hi = 0, len(order)
        while lo < hi:
            mid = (lo + hi) >> 1
            if name(words[offsets[order[mid]]]) < key:
                lo = mid + 1
            else:
                hi = mid
        out = []
        first = self.first_id
        for i in range(lo, len(order)):
            idx = order[i]
            got = name(words[offsets[idx]])
            if got == key or (prefix and got.startswith(key)):
                out.append(idx + first)
            else:
                break
        out.sort()
        return out

    def _ids_with_name_off(self, name_off):
        """Own type ids whose name_off is exactly ``name_off`` (absolute offset),
        found by scanning the type section for the 4-byte value (C speed) and
        keeping each hit that is the first word of a record.  Used only until
        the name index exists."""
        out = []
        if name_off >= 1 << 32:
            return out
        data, start, end = self.data, self._t_start, self._t_end
        offsets = self._offsets
        needle = struct.pack("<I", name_off)
        i = data.find(needle, start, end)
        while i >= 0:
            rel = i - start
            if rel % 4 == 0:
                word = rel >> 2
                j = bisect.bisect_left(offsets, word)
                if j < len(offsets) and offsets[j] == word:
                    out.append(j + self.first_id)
            i = data.find(needle, i + 1, end)
        return out

    def _own_string_matches(self, needle):
        """Absolute string offsets in this BTF's own string section where ``needle`` occurs."""
        data, start, end = self.data, self._s_start, self._s_end
        shift = self._str_base - start
        found = []
        i = data.find(needle, start, end)
        while i >= 0:
            found.append(i + shift)
            i = data.find(needle, i + 1, end)
        return found

    def _all_string_matches(self, needle):
        """Occurrences in this and the base string sections (split types may use both)."""
        found = self._own_string_matches(needle)
        base = self.base
        while base is not None:
            found = base._own_string_matches(needle) + found
            base = base.base
        return found

    def _use_index(self):
        """True when lookups go through the name index: it exists, or enough
        lookups have scanned the string section that building it pays."""
        if self._name_keys is None:
            self._scans += 1
            if self._scans > self._SCANS_BEFORE_INDEX:
                self._ensure_name_index()
        return self._name_keys is not None

    def _ids_named(self, name_bytes):
        """Own type ids whose name is exactly ``name_bytes``."""
        if self._use_index():
            return self._ids_in_name_order(name_bytes, False)
        offs = self._all_string_matches(name_bytes + b"\0")
        if len(offs) > 4:
            self._ensure_name_index()
            return self._ids_in_name_order(name_bytes, False)
        ids = []
        for off in offs:
            ids.extend(self._ids_with_name_off(off))
        ids.sort()
        return ids

    def find(self, name, kind=None, include_base=True):
        """Ids of the types named exactly ``name`` (optionally of one kind)."""
        key = ("=", name, kind, include_base)
        hit = self._find_cache.get(key)
        if hit is not None:
            return list(hit)
        if name == "":
            # name offset 0 (not in the name index), or one pointing at a NUL
            self._ensure_name_index()
            words = self._words
            anonymous = compress(range(len(self._offsets)),
                                 map(operator.not_, map(words.__getitem__, self._offsets)))
            ids = sorted(set(map(self.first_id.__add__, anonymous)).union(
                self._ids_in_name_order(b"", False)))
        else:
            ids = self._ids_named(name.encode())
        if kind is not None:
            ids = [i for i in ids if self.kind_of(i) == kind]
        if include_base and self.base is not None:
            ids = self.base.find(name, kind) + ids
        self._find_cache[key] = tuple(ids)
        return ids

    def find_essential(self, name, kind=None, include_base=True):
        """Ids of types whose essential name (flavor suffix '___...' cut) equals ``name``.

        ``name`` is compared as given: pass ``essential_name(local_name)`` to
        find the candidates of a local CO-RE type such as 'task_struct___v2'.
        """
        key = ("~", name, kind, include_base)
        hit = self._find_cache.get(key)
        if hit is not None:
            return list(hit)
        ids = set(self.find(name, kind, include_base=False)) if essential_name(name) == name else set()
        if name:
            flavored = name.encode() + b"___"
            if self._use_index():
                tids = self._ids_in_name_order(flavored, True)
            else:
                tids = [tid for off in self._all_string_matches(flavored)
                        for tid in self._ids_with_name_off(off)]
            for tid in tids:
                if essential_name(self.name_of(tid)) == name and (
                        kind is None or self.kind_of(tid) == kind):
                    ids.add(tid)
        ids = sorted(ids)
        if include_base and self.base is not None:
            ids = self.base.find_essential(name, kind) + ids
        self._find_cache[key] = tuple(ids)
        return ids

    def __repr__(self):
        split = f", split after {self.first_id - 1}" if self.base is not None else ""
        return f"<BTF {self.count - self.first_id} types, {self.str_len} bytes of strings{split}>"


# -- raw-byte fixups ------------------------------------------------------------

def _raw_layout(raw):
    """(words array('I') of the whole blob, type positions, strings, str byte offset)."""
    hdr_len, t_start, t_end, s_start, s_end = _header(raw)
    words = _words(raw, t_start, t_end)
    offsets = _index_types(words, 1)
    return t_start, array("I", words), offsets, s_start, s_end


def _pack(raw, t_start, words):
    """raw with the type section replaced by ``words`` (same length)."""
    if not _LITTLE_HOST:
        words = array("I", words)
        words.byteswap()
    out = bytearray(raw)
    out[t_start:t_start + 4 * len(words)] = words.tobytes()
    return out


def _raw_string(raw, s_start, s_end, off):
    if off >= s_end - s_start:
        raise BTFError(f"BTF string offset {off} is outside the string section")
    end = raw.find(b"\0", s_start + off, s_end)
    try:
        return bytes(raw[s_start + off:end]).decode()
    except UnicodeDecodeError:
        raise BTFError(f"BTF string at offset {off} is not valid UTF-8") from None


def fixup_datasecs(raw, section_sizes, var_offsets):
    """Fill DATASEC sizes and variable offsets that the compiler left as 0.

    ``section_sizes`` maps an ELF section name ('.bss', '.rodata'...) to its
    size; ``var_offsets`` maps a variable name to its symbol value (offset in
    its section).  Returns new BTF bytes of the same length.  DATASECs or
    variables not named in the dicts are left alone.
    """
    t_start, words, offsets, s_start, s_end = _raw_layout(raw)
    for pos in offsets:
        info = words[pos + 1]
        if info >> 24 & 0x1F != KIND_DATASEC:
            continue
        name = _raw_string(raw, s_start, s_end, words[pos])
        if name in section_sizes:
            size = section_sizes[name]
            if not 0 <= size < 1 << 32:
                raise BTFError(f"size {size} of section {name} does not fit BTF")
            words[pos + 2] = size
        for i in range(pos + 3, pos + 3 + 3 * (info & 0xFFFF), 3):
            var_id = words[i]
            if not 1 <= var_id <= len(offsets):
                raise BTFError(f"DATASEC {name} refers to type id {var_id} which does not exist")
            vpos = offsets[var_id - 1]
            if words[vpos + 1] >> 24 & 0x1F != KIND_VAR:
                continue
            vname = _raw_string(raw, s_start, s_end, words[vpos])
            if vname in var_offsets:
                off = var_offsets[vname]
                if not 0 <= off < 1 << 32:
                    raise BTFError(f"offset {off} of variable {vname} does not fit BTF")
                words[i + 1] = off
    return bytes(_pack(raw, t_start, words))


_SANITIZE_NAMES = frozenset(("decl_tag", "type_tag", "enum64", "float", "func_global",
                             "datasec", "var", "func"))


def sanitize(raw, unsupported):
    """Rewrite kinds an older kernel rejects into ones it accepts; type ids stay stable.

    ``unsupported`` names what the kernel lacks:
      'func'        FUNC -> TYPEDEF, FUNC_PROTO -> ENUM (params become values)
      'func_global' FUNC with global linkage -> static linkage
      'datasec'/'var'  VAR -> INT (1 byte), DATASEC -> STRUCT (vars become
                    members; '.' in its name becomes '_')
      'float'       FLOAT -> STRUCT of the same size without members
      'decl_tag'    DECL_TAG -> INT (1 byte, anonymous)
      'type_tag'    TYPE_TAG -> CONST (anonymous)
      'enum64'      ENUM64 -> UNION of the same size whose members are the
                    value names, all of one appended 1-byte INT type (the
                    only rewrite that makes the blob longer)
    The output has the same length unless 'enum64' rewriting happened.
    """
    unknown = set(unsupported) - _SANITIZE_NAMES
    if unknown:
        raise BTFError(f"sanitize: unknown kind name(s) {sorted(unknown)};"
                       f" known: {sorted(_SANITIZE_NAMES)}")
    t_start, words, offsets, s_start, s_end = _raw_layout(raw)
    raw = bytearray(raw)
    no_datasec = "datasec" in unsupported or "var" in unsupported
    int_1byte = (0, KIND_INT << 24, 1, 8)   # name_off, info, size, encoding(bits=8)
    placeholder_id = None
    enum64_ids = []
    for idx, pos in enumerate(offsets):
        info = words[pos + 1]
        kind = info >> 24 & 0x1F
        vlen = info & 0xFFFF
        if kind == KIND_FUNC and "func" in unsupported:
            words[pos + 1] = KIND_TYPEDEF << 24
        elif kind == KIND_FUNC and "func_global" in unsupported:
            words[pos + 1] = KIND_FUNC << 24 | LINKAGE_STATIC
        elif kind == KIND_FUNC_PROTO and "func" in unsupported:
            words[pos + 1] = KIND_ENUM << 24 | vlen
            words[pos + 2] = 4
        elif kind == KIND_VAR and no_datasec:
            words[pos:pos + 4] = array("I", (words[pos],) + int_1byte[1:])
        elif kind == KIND_DATASEC and no_datasec:
            words[pos + 1] = KIND_STRUCT << 24 | vlen
            name_off = words[pos]
            if name_off < s_end - s_start:
                end = raw.find(b"\0", s_start + name_off, s_end)
                seg = raw[s_start + name_off:end]
                raw[s_start + name_off:end] = bytes(
                    c if (48 <= c <= 57 or 65 <= c <= 90 or 97 <= c <= 122 or c == 95) else 95
                    for c in seg)
            for i in range(pos + 3, pos + 3 + 3 * vlen, 3):
                var_id, offset = words[i], words[i + 1]
                member_name = 0
                if 1 <= var_id <= len(offsets):
                    member_name = words[offsets[var_id - 1]]
                words[i:i + 3] = array("I", (member_name, var_id, offset * 8 & 0xFFFFFFFF))
        elif kind == KIND_FLOAT and "float" in unsupported:
            words[pos] = 0
            words[pos + 1] = KIND_STRUCT << 24
        elif kind == KIND_DECL_TAG and "decl_tag" in unsupported:
            words[pos:pos + 4] = array("I", int_1byte)
        elif kind == KIND_TYPE_TAG and "type_tag" in unsupported:
            words[pos] = 0
            words[pos + 1] = KIND_CONST << 24
        elif kind == KIND_ENUM64 and "enum64" in unsupported:
            if placeholder_id is None:
                placeholder_id = len(offsets) + 1
            words[pos + 1] = KIND_UNION << 24 | vlen
            for i in range(pos + 3, pos + 3 + 3 * vlen, 3):
                words[i + 1] = placeholder_id
                words[i + 2] = 0
            enum64_ids.append(idx + 1)
    if placeholder_id is None:
        return bytes(_pack(bytes(raw), t_start, words))
    # The placeholder INT goes after the last type, so the blob is rebuilt as
    # header | types | strings and grows by one 16-byte record.
    words.extend(int_1byte)
    if not _LITTLE_HOST:
        words.byteswap()
    types = words.tobytes()
    strings = bytes(raw[s_start:s_end])
    hdr_len = _HEADER.unpack_from(raw, 0)[3]
    header = bytearray(raw[:hdr_len])
    struct.pack_into("<IIII", header, 8, 0, len(types), len(types), len(strings))
    return bytes(header) + types + strings
