"""The deterministic description of a BPF object: programs, maps, variables.

``elf.read_object(bytes)`` produces an :class:`ObjectSpec`; the relocation
passes (``relocate``, ``core``) turn its programs into instructions ready for
the kernel; the kernel layer creates what the specs describe.  Nothing here
talks to the kernel.
"""

from dataclasses import dataclass, field
from typing import Dict, List, Optional

# enum bpf_map_type (the subset objects use; numbers are the kernel's ABI)
MAP_TYPES = {
    "hash": 1, "array": 2, "prog_array": 3, "perf_event_array": 4,
    "percpu_hash": 5, "percpu_array": 6, "stack_trace": 7, "cgroup_array": 8,
    "lru_hash": 9, "lru_percpu_hash": 10, "lpm_trie": 11, "array_of_maps": 12,
    "hash_of_maps": 13, "devmap": 14, "sockmap": 15, "cpumap": 16, "xskmap": 17,
    "sockhash": 18, "cgroup_storage": 19, "reuseport_sockarray": 20,
    "percpu_cgroup_storage": 21, "queue": 22, "stack": 23, "sk_storage": 24,
    "devmap_hash": 25, "struct_ops": 26, "ringbuf": 27, "inode_storage": 28,
    "task_storage": 29, "bloom_filter": 30, "user_ringbuf": 31,
    "cgrp_storage": 32, "arena": 33,
}
MAP_TYPE_NAMES = {v: k for k, v in MAP_TYPES.items()}

#: map types whose values are per CPU (lookups return one value per CPU)
PERCPU_MAP_TYPES = {5, 6, 10, 21}

# map_flags bits that matter to the loader
BPF_F_NO_PREALLOC = 1 << 0
BPF_F_RDONLY_PROG = 1 << 7
BPF_F_MMAPABLE = 1 << 10

# pinning (libbpf's LIBBPF_PIN_*)
PIN_NONE = 0
PIN_BY_NAME = 1


@dataclass
class Variable:
    """A global variable living in a data section (``.rodata``, ``.bss``...)."""
    name: str
    section: str
    offset: int
    size: int
    type_id: int = 0          # BTF id of the VAR's type, 0 when unknown
    is_const: bool = False    # lives in a read-only section


@dataclass
class MapSpec:
    """A map to create.  Global data sections are single-entry arrays."""
    name: str
    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int = 0
    pinning: int = PIN_NONE
    numa_node: int = 0
    key_type_id: int = 0      # BTF ids in the object's BTF, 0 when none
    value_type_id: int = 0
    inner: Optional["MapSpec"] = None
    #: initial value for global data maps (``value_size`` bytes), else None
    data: Optional[bytearray] = None
    #: the ELF section a global data map comes from ('.rodata', '.bss', ...)
    section: Optional[str] = None
    #: freeze after initialising (``.rodata``)
    freeze: bool = False
    #: initial (key, value) entries, e.g. map-in-map slots: list of (int, str)
    contents: List = field(default_factory=list)

    @property
    def type_name(self):
        return MAP_TYPE_NAMES.get(self.type, str(self.type))

    @property
    def is_percpu(self):
        return self.type in PERCPU_MAP_TYPES

    @property
    def is_global_data(self):
        return self.section is not None


@dataclass
class ProgramSpec:
    """One program: an entry function and the subprograms it calls."""
    name: str                   # the entry function's symbol name
    section: str                # the ELF section, i.e. its SEC() name
    type: int                   # enum bpf_prog_type
    expected_attach_type: int   # enum bpf_attach_type
    attach_kind: str            # 'tracepoint', 'raw_tracepoint', 'tp_btf', 'kprobe', ...
    attach_to: str              # e.g. 'sched/sched_process_exec', '' if none
    instructions: list          # [Instruction]; after linking, subprograms appended
    license: str = ""
    kernel_version: int = 0
    sleepable: bool = False
    #: names of the maps this program references (filled by relocation)
    maps_used: List[str] = field(default_factory=list)


@dataclass
class ObjectSpec:
    """Everything read from one BPF ELF object, before any kernel is involved."""
    programs: Dict[str, ProgramSpec]
    maps: Dict[str, MapSpec]
    variables: Dict[str, Variable]
    btf: object = None          # obj.btf.BTF of the object, or None
    btf_ext: object = None      # obj.btf_ext.BTFExt, or None
    license: str = ""
    kernel_version: int = 0
    #: subprograms by name: list of Instruction (not loadable on their own)
    functions: Dict[str, list] = field(default_factory=dict)
    #: ELF section name -> size, and object symbol -> value (its offset in its
    #: section): what ``btf.fixup_datasecs`` needs before the BTF is loaded
    section_sizes: Dict[str, int] = field(default_factory=dict)
    symbol_offsets: Dict[str, int] = field(default_factory=dict)
