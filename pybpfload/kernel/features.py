"""Cheap, cached probes of what the running kernel supports.

Each probe asks the kernel directly (creates a tiny map, loads a two-
instruction program, loads a small BTF blob) instead of comparing version
numbers, and caches the answer for the life of the process.
"""

import ctypes
import errno as _errno
import functools
import mmap
import os
import struct

from . import syscall as sc
from .fd import FD

__all__ = ["possible_cpus", "online_cpus", "has_perf_link", "has_ringbuf",
           "unsupported_btf_kinds", "memlock_charged", "has_raw_tracepoint",
           "has_tp_btf", "has_batch_ops", "has_map_freeze", "vmlinux_type_id",
           "parse_cpu_list"]

BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_RINGBUF = 1, 2, 27
BPF_PERF_EVENT = 41
BPF_TRACE_RAW_TP = 23
BPF_FUNC_get_current_task_btf = 158

# r0 = 0; exit
_RET0 = bytes.fromhex("b700000000000000" "9500000000000000")


def parse_cpu_list(text):
    """Parse a kernel CPU list such as ``0-3,5,7-8`` into a sorted list of ints."""
    cpus = []
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        try:
            lo_i, hi_i = int(lo), int(hi or lo)
        except ValueError:
            from ..errors import ParseError
            raise ParseError(f"malformed CPU list {text.strip()!r}") from None
        cpus.extend(range(lo_i, hi_i + 1))
    return sorted(set(cpus))


@functools.lru_cache(maxsize=None)
def _cpu_file(name):
    with open(f"/sys/devices/system/cpu/{name}") as f:
        return tuple(parse_cpu_list(f.read()))


def possible_cpus():
    """CPU numbers the kernel may ever bring up (per-CPU map values are this many)."""
    return list(_cpu_file("possible"))


def online_cpus():
    """CPU numbers online now (read fresh every call)."""
    with open("/sys/devices/system/cpu/online") as f:
        return parse_cpu_list(f.read())


def _create_map(map_type, key_size, value_size, max_entries, flags=0):
    attr = sc.MapCreateAttr(map_type=map_type, key_size=key_size, value_size=value_size,
                            max_entries=max_entries, map_flags=flags)
    ret, err = sc.bpf_errno(sc.MAP_CREATE, attr)
    return (FD(ret), 0) if ret >= 0 else (None, err)


def _load(prog_type, code=_RET0, expected_attach_type=0, attach_btf_id=0):
    buf = ctypes.create_string_buffer(code, len(code))
    lic = sc.c_str("GPL")
    attr = sc.ProgLoadAttr(prog_type=prog_type, insn_cnt=len(code) // 8,
                           insns=ctypes.addressof(buf), license=ctypes.addressof(lic),
                           expected_attach_type=expected_attach_type,
                           attach_btf_id=attach_btf_id)
    ret, err = sc.bpf_errno(sc.PROG_LOAD, attr)
    return (FD(ret), 0) if ret >= 0 else (None, err)


@functools.lru_cache(maxsize=None)
def has_perf_link():
    """BPF_LINK_CREATE accepts BPF_PERF_EVENT (tracepoints/kprobes as bpf links)."""
    prog, _ = _load(5)
    if prog is None:
        return False
    with prog:
        attr = sc.LinkCreateAttr(prog_fd=prog.fileno(), target_fd=0xFFFFFFFF,
                                 attach_type=BPF_PERF_EVENT)
        ret, err = sc.bpf_errno(sc.LINK_CREATE, attr)
        if ret >= 0:
            os.close(ret)
            return True
        return err == _errno.EBADF   # got as far as looking up the perf event fd


@functools.lru_cache(maxsize=None)
def has_ringbuf():
    fd, _ = _create_map(BPF_MAP_TYPE_RINGBUF, 0, 0, mmap.PAGESIZE)
    if fd is None:
        return False
    fd.close()
    return True


@functools.lru_cache(maxsize=None)
def has_raw_tracepoint():
    fd, _ = _load(17)
    if fd is None:
        return False
    fd.close()
    return True


@functools.lru_cache(maxsize=None)
def has_map_freeze():
    fd, _ = _create_map(BPF_MAP_TYPE_ARRAY, 4, 4, 1)
    if fd is None:
        return False
    with fd:
        ret, _ = sc.bpf_errno(sc.MAP_FREEZE, sc.MapFreezeAttr(map_fd=fd.fileno()))
        return ret >= 0


@functools.lru_cache(maxsize=None)
def has_batch_ops():
    """BPF_MAP_LOOKUP_BATCH exists (an empty hash map answers ENOENT)."""
    fd, _ = _create_map(BPF_MAP_TYPE_HASH, 4, 4, 4)
    if fd is None:
        return False
    with fd:
        keys = ctypes.create_string_buffer(16)
        vals = ctypes.create_string_buffer(16)
        out = ctypes.create_string_buffer(8)
        attr = sc.MapBatchAttr(map_fd=fd.fileno(), keys=ctypes.addressof(keys),
                               values=ctypes.addressof(vals), out_batch=ctypes.addressof(out),
                               count=4)
        ret, err = sc.bpf_errno(sc.MAP_LOOKUP_BATCH, attr)
        return ret >= 0 or err == _errno.ENOENT


@functools.lru_cache(maxsize=None)
def memlock_charged():
    """True when BPF objects are still charged to RLIMIT_MEMLOCK (kernels before
    memcg accounting).  Probed by creating a map with the soft limit at 0."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    try:
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (0, hard))
    except (ValueError, OSError):
        return False
    try:
        fd, err = _create_map(BPF_MAP_TYPE_ARRAY, 4, 4, 1)
    finally:
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (soft, hard))
    if fd is not None:
        fd.close()
        return False
    return err == _errno.EPERM


# -- BTF ---------------------------------------------------------------------
_BTF_HDR = struct.Struct("<HBBIIIII")
_T = struct.Struct("<III")


def _btf_blob(types, strings):
    """Assemble a BTF blob from raw type bytes and a strings section."""
    hdr = _BTF_HDR.pack(0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    return hdr + types + strings


def _t(name_off, kind, vlen, size_or_type, kflag=0):
    return _T.pack(name_off, (kflag << 31) | (kind << 24) | vlen, size_or_type)


# strings: "\0int\0f\0v\0.data\0tag\0e\0float\0"
_STRS = b"\0int\0f\0v\0.data\0tag\0e\0float\0"
_S_INT, _S_F, _S_V, _S_DATA, _S_TAG, _S_E, _S_FLOAT = 1, 5, 7, 9, 15, 19, 21
_INT = _t(_S_INT, 1, 0, 4) + struct.pack("<I", (1 << 24) | 32)        # id 1: int
_PROTO = _t(0, 13, 0, 1)                                                # id 2: int (void)

_KIND_PROBES = {
    "func": _INT + _PROTO + _t(_S_F, 12, 0, 2),
    "func_global": _INT + _PROTO + _t(_S_F, 12, 1, 2),
    "datasec": (_INT + _t(_S_V, 14, 0, 1) + struct.pack("<I", 0)
                + _t(_S_DATA, 15, 1, 4) + struct.pack("<III", 2, 0, 4)),
    "float": _t(_S_FLOAT, 16, 0, 4),
    "decl_tag": (_INT + _t(_S_V, 14, 0, 1) + struct.pack("<I", 0)
                 + _t(_S_TAG, 17, 0, 2) + struct.pack("<i", -1)),
    "type_tag": _INT + _t(_S_TAG, 18, 0, 1) + _t(0, 2, 0, 2),
    "enum64": _t(_S_E, 19, 1, 8) + struct.pack("<Iii", _S_E, 1, 0),
}


@functools.lru_cache(maxsize=None)
def unsupported_btf_kinds():
    """Names of BTF features the kernel rejects, in the vocabulary of
    ``obj.btf.sanitize``: subset of {func, func_global, datasec, float,
    decl_tag, type_tag, enum64}."""
    bad = set()
    for name, types in _KIND_PROBES.items():
        blob = _btf_blob(types, _STRS)
        buf = ctypes.create_string_buffer(blob, len(blob))
        attr = sc.BtfLoadAttr(btf=ctypes.addressof(buf), btf_size=len(blob))
        ret, _ = sc.bpf_errno(sc.BTF_LOAD, attr)
        if ret >= 0:
            os.close(ret)
        else:
            bad.add(name)
    return frozenset(bad)


def vmlinux_type_id(name, kind):
    """BTF id of the vmlinux type ``name`` of ``kind`` (e.g. 8 typedef, 12 func), or 0.

    Reads the kernel BTF through ``obj.btf.BTF.load_kernel`` (the one BTF
    parser, with its on-disk index cache), honouring ``PYBPFLOAD_KERNEL_BTF``.
    """
    from ..errors import BPFError
    from .bpf_object import kernel_btf
    try:
        ids = kernel_btf().find(name, kind)
    except (BPFError, OSError):
        return 0
    return ids[0] if ids else 0


@functools.lru_cache(maxsize=None)
def has_tp_btf():
    """tp_btf programs load (BPF_PROG_TYPE_TRACING + BPF_TRACE_RAW_TP)."""
    tid = vmlinux_type_id("btf_trace_sys_enter", 8)
    if not tid:
        return False
    fd, _ = _load(26, expected_attach_type=BPF_TRACE_RAW_TP, attach_btf_id=tid)
    if fd is None:
        return False
    fd.close()
    return True


@functools.lru_cache(maxsize=None)
def has_get_current_task_btf():
    """The helper bpf_get_current_task_btf is callable from tp_btf programs."""
    tid = vmlinux_type_id("btf_trace_sys_enter", 8)
    if not tid:
        return False
    # call get_current_task_btf; r0 = 0; exit
    code = struct.pack("<BBhi", 0x85, 0, 0, BPF_FUNC_get_current_task_btf) + _RET0
    fd, _ = _load(26, code, BPF_TRACE_RAW_TP, tid)
    if fd is None:
        return False
    fd.close()
    return True
