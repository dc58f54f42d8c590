"""The one entry point into the kernel's bpf(2) system call.

:func:`bpf` takes a command number and a ctypes attribute structure (one
structure per command is defined here, laid out as ``union bpf_attr`` in
``include/uapi/linux/bpf.h``), calls ``syscall(__NR_bpf, cmd, &attr, size)``
through libc and turns a failure into a typed :class:`~pybpfload.errors.KernelError`.
ctypes structures start zeroed, so every field we do not set (and every
padding byte) reaches the kernel as zero, which is what it demands.
"""

import ctypes
import errno as _errno
import os

from ..errors import KernelError, NoPrivilegeError, NotSupportedError

__all__ = ["bpf", "libc", "raise_errno", "c_str", "buffer_address"]

# enum bpf_cmd
MAP_CREATE = 0
MAP_LOOKUP_ELEM = 1
MAP_UPDATE_ELEM = 2
MAP_DELETE_ELEM = 3
MAP_GET_NEXT_KEY = 4
PROG_LOAD = 5
OBJ_PIN = 6
OBJ_GET = 7
PROG_TEST_RUN = 10
PROG_GET_NEXT_ID = 11
MAP_GET_NEXT_ID = 12
PROG_GET_FD_BY_ID = 13
MAP_GET_FD_BY_ID = 14
OBJ_GET_INFO_BY_FD = 15
RAW_TRACEPOINT_OPEN = 17
BTF_LOAD = 18
BTF_GET_FD_BY_ID = 19
MAP_LOOKUP_AND_DELETE_ELEM = 21
MAP_FREEZE = 22
BTF_GET_NEXT_ID = 23
MAP_LOOKUP_BATCH = 24
MAP_LOOKUP_AND_DELETE_BATCH = 25
MAP_UPDATE_BATCH = 26
MAP_DELETE_BATCH = 27
LINK_CREATE = 28
LINK_GET_FD_BY_ID = 30
LINK_GET_NEXT_ID = 31
LINK_DETACH = 34

COMMAND_NAMES = {v: k for k, v in dict(globals()).items()
                 if k.isupper() and isinstance(v, int) and not k.startswith("_")}

# map update flags
BPF_ANY, BPF_NOEXIST, BPF_EXIST = 0, 1, 2
# file flags for *_GET_FD_BY_ID / OBJ_GET
BPF_F_RDONLY = 1 << 3
BPF_F_WRONLY = 1 << 4

_NR_BPF = {"x86_64": 321, "aarch64": 280, "arm64": 280, "riscv64": 280,
           "ppc64le": 361, "s390x": 351, "i686": 357, "i386": 357, "armv7l": 386}

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

#: the kernel-internal "operation not supported" some bpf commands leak to user space
ENOTSUPP = 524

u32 = ctypes.c_uint32
u64 = ctypes.c_uint64
s32 = ctypes.c_int32


class MapCreateAttr(ctypes.Structure):
    _fields_ = [("map_type", u32), ("key_size", u32), ("value_size", u32),
                ("max_entries", u32), ("map_flags", u32), ("inner_map_fd", u32),
                ("numa_node", u32), ("map_name", ctypes.c_char * 16),
                ("map_ifindex", u32), ("btf_fd", u32), ("btf_key_type_id", u32),
                ("btf_value_type_id", u32), ("btf_vmlinux_value_type_id", u32),
                ("map_extra", u64)]


class MapElemAttr(ctypes.Structure):
    _fields_ = [("map_fd", u32), ("key", u64), ("value", u64), ("flags", u64)]


class MapBatchAttr(ctypes.Structure):
    _fields_ = [("in_batch", u64), ("out_batch", u64), ("keys", u64), ("values", u64),
                ("count", u32), ("map_fd", u32), ("elem_flags", u64), ("flags", u64)]


class ProgLoadAttr(ctypes.Structure):
    _fields_ = [("prog_type", u32), ("insn_cnt", u32), ("insns", u64), ("license", u64),
                ("log_level", u32), ("log_size", u32), ("log_buf", u64),
                ("kern_version", u32), ("prog_flags", u32), ("prog_name", ctypes.c_char * 16),
                ("prog_ifindex", u32), ("expected_attach_type", u32), ("prog_btf_fd", u32),
                ("func_info_rec_size", u32), ("func_info", u64), ("func_info_cnt", u32),
                ("line_info_rec_size", u32), ("line_info", u64), ("line_info_cnt", u32),
                ("attach_btf_id", u32), ("attach_btf_obj_fd", u32), ("core_relo_cnt", u32),
                ("fd_array", u64), ("core_relos", u64), ("core_relo_rec_size", u32),
                ("log_true_size", u32)]


class ObjPinAttr(ctypes.Structure):
    _fields_ = [("pathname", u64), ("bpf_fd", u32), ("file_flags", u32)]


class GetIdAttr(ctypes.Structure):
    """``*_GET_NEXT_ID`` (start_id, next_id) and ``*_GET_FD_BY_ID`` (id, open_flags)."""
    _fields_ = [("start_id", u32), ("next_id", u32), ("open_flags", u32)]


class InfoByFdAttr(ctypes.Structure):
    _fields_ = [("bpf_fd", u32), ("info_len", u32), ("info", u64)]


class RawTracepointAttr(ctypes.Structure):
    _fields_ = [("name", u64), ("prog_fd", u32), ("_pad", u32), ("cookie", u64)]


class BtfLoadAttr(ctypes.Structure):
    _fields_ = [("btf", u64), ("btf_log_buf", u64), ("btf_size", u32),
                ("btf_log_size", u32), ("btf_log_level", u32), ("btf_log_true_size", u32)]


class MapFreezeAttr(ctypes.Structure):
    _fields_ = [("map_fd", u32)]


class LinkCreateAttr(ctypes.Structure):
    """BPF_LINK_CREATE; ``target_btf_id`` and ``cookie`` overlay the per-type union.

    For BPF_PERF_EVENT the union starts with ``u64 bpf_cookie`` at offset 16;
    for tracing programs it is ``u32 target_btf_id`` then ``u64 cookie``.
    """
    _fields_ = [("prog_fd", u32), ("target_fd", u32), ("attach_type", u32),
                ("flags", u32), ("union_u64_0", u64), ("union_u64_1", u64),
                ("union_u64_2", u64), ("union_u64_3", u64)]


class LinkDetachAttr(ctypes.Structure):
    _fields_ = [("link_fd", u32)]


class ProgTestRunAttr(ctypes.Structure):
    _fields_ = [("prog_fd", u32), ("retval", u32), ("data_size_in", u32),
                ("data_size_out", u32), ("data_in", u64), ("data_out", u64),
                ("repeat", u32), ("duration", u32), ("ctx_size_in", u32),
                ("ctx_size_out", u32), ("ctx_in", u64), ("ctx_out", u64),
                ("flags", u32), ("cpu", u32), ("batch_size", u32)]


def _syscall_number():
    nr = _NR_BPF.get(os.uname().machine)
    if nr is None:
        raise NotSupportedError(
            f"unknown bpf(2) syscall number on architecture {os.uname().machine!r}",
            hint="add it to pybpfload.kernel.syscall._NR_BPF")
    return nr


_NR = _NR_BPF.get(os.uname().machine, 0)


def c_str(text):
    """A NUL-terminated ctypes buffer holding ``text`` (str or bytes)."""
    if isinstance(text, str):
        text = text.encode()
    return ctypes.create_string_buffer(text)


def buffer_address(buf):
    """Address of a ctypes buffer (or 0 for None), for the u64 pointer fields."""
    return 0 if buf is None else ctypes.addressof(buf)


def raise_errno(err, what, hint=None):
    """Raise the typed error for ``errno`` ``err``; ``what`` says which operation failed."""
    text = os.strerror(err)
    if err in (_errno.EPERM, _errno.EACCES):
        raise NoPrivilegeError(f"{what}: {text}", err)
    if err == _errno.E2BIG:
        raise NotSupportedError(
            f"{what}: the running kernel does not know an attribute we set, or a size is too big",
            err, hint or "this kernel is too old for the feature, or reduce the size")
    if err == _errno.EINVAL:
        raise KernelError(f"{what}: the kernel rejected an argument as invalid", err,
                          hint or "check types, sizes and flags against what this kernel supports")
    if err in (_errno.ENOSYS, _errno.EOPNOTSUPP, ENOTSUPP):
        raise NotSupportedError(f"{what}: not supported by the running kernel", err, hint)
    raise KernelError(f"{what}: {text}", err, hint)


def bpf(cmd, attr, what=None, hint=None):
    """Call ``bpf(cmd, &attr, sizeof(attr))``; return the non-negative result.

    On failure raise a :class:`KernelError` subclass, its message starting with
    ``what`` (default: the command's name).
    """
    ret, err = bpf_errno(cmd, attr)
    if ret >= 0:
        return ret
    raise_errno(err, what or f"bpf({COMMAND_NAMES.get(cmd, cmd)})", hint)


def bpf_errno(cmd, attr):
    """Call bpf(2) and return ``(result, errno)`` without raising (for probes and loops)."""
    nr = _NR or _syscall_number()
    retries = 5  # PROG_LOAD may report EAGAIN when interrupted; bounded retry
    while True:
        ret = libc.syscall(nr, ctypes.c_int(cmd), ctypes.byref(attr),
                           ctypes.c_uint(ctypes.sizeof(attr)))
        if ret >= 0:
            return ret, 0
        err = ctypes.get_errno()
        if err == _errno.EINTR or (err == _errno.EAGAIN and cmd == PROG_LOAD and retries):
            retries -= 1
            continue
        return -1, err
