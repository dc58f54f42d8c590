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
"""

KERNEL_BTF_PATH = "/sys/kernel/btf/vmlinux"
