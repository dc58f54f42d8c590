"""bpffs: find or mount it, pin objects (OBJ_PIN), open pinned ones (OBJ_GET).

A pinned map can be checked against a :class:`~pybpfload.obj.spec.MapSpec`
before reuse; a mismatch raises :class:`~pybpfload.errors.PinError`.
"""

import ctypes
import errno as _errno
import os

from ..errors import KernelError, PinError
from . import syscall as sc
from .fd import FD

__all__ = ["BPFFS_PATH", "BPF_FS_MAGIC", "find_bpffs", "ensure_bpffs", "pin", "get_pinned",
           "check_pinned_map", "is_bpffs", "libc_mount", "fs_magic"]

BPFFS_PATH = "/sys/fs/bpf"
BPF_FS_MAGIC = 0xCAFE4A11


class _Statfs(ctypes.Structure):
    # struct statfs (64-bit): only f_type is read; the rest is room
    _fields_ = [("f_type", ctypes.c_long), ("_rest", ctypes.c_char * 256)]


def fs_magic(path):
    """The filesystem magic (statfs f_type) of ``path``, or None if it does not exist."""
    buf = _Statfs()
    if sc.libc.statfs(os.fsencode(path), ctypes.byref(buf)) != 0:
        return None
    return buf.f_type & 0xFFFFFFFF


def is_bpffs(path):
    return fs_magic(path) == BPF_FS_MAGIC


def libc_mount(source, target, fstype, flags=0, data=None):
    """mount(2) through libc (never a shell); raises a KernelError on failure."""
    ret = sc.libc.mount(os.fsencode(source), os.fsencode(target), os.fsencode(fstype),
                        ctypes.c_ulong(flags), None if data is None else os.fsencode(data))
    if ret != 0:
        err = ctypes.get_errno()
        sc.raise_errno(err, f"mounting {fstype} at {target}")


def find_bpffs():
    """The path of a mounted bpffs (``/sys/fs/bpf`` or one from /proc/mounts), or None."""
    if is_bpffs(BPFFS_PATH):
        return BPFFS_PATH
    try:
        with open("/proc/self/mounts", "rb") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[2] == b"bpf":
                    path = parts[1].decode("utf-8", "replace").replace("\\040", " ")
                    if is_bpffs(path):
                        return path
    except OSError:
        pass
    return None


def ensure_bpffs(path=BPFFS_PATH):
    """Return a bpffs path, mounting one at ``path`` if none is mounted."""
    found = find_bpffs() if path == BPFFS_PATH else (path if is_bpffs(path) else None)
    if found:
        return found
    os.makedirs(path, exist_ok=True)
    try:
        libc_mount("bpf", path, "bpf", 0, "mode=700")
    except KernelError as exc:
        raise PinError(f"cannot mount bpffs at {path}: {exc}", exc.errno,
                       hint="run as root, or mount it: mount -t bpf bpf /sys/fs/bpf") from None
    return path


def pin(fd, path):
    """Pin the object behind ``fd`` at ``path`` (inside a bpffs)."""
    cpath = sc.c_str(os.fsencode(path))
    attr = sc.ObjPinAttr(pathname=ctypes.addressof(cpath), bpf_fd=int(fd))
    ret, err = sc.bpf_errno(sc.OBJ_PIN, attr)
    if ret < 0:
        if err == _errno.EEXIST:
            raise PinError(f"cannot pin at {path}: something is already pinned there", err,
                           hint="unpin it (rm the file) or reuse it")
        if err in (_errno.EPERM, _errno.EACCES):
            sc.raise_errno(err, f"pinning at {path}")
        raise PinError(f"cannot pin at {path}: {os.strerror(err)}", err,
                       hint="the directory must exist on a mounted bpffs (/sys/fs/bpf)")


def get_pinned(path, flags=0):
    """Open the object pinned at ``path``; return its :class:`FD`."""
    cpath = sc.c_str(os.fsencode(path))
    attr = sc.ObjPinAttr(pathname=ctypes.addressof(cpath), file_flags=flags)
    ret, err = sc.bpf_errno(sc.OBJ_GET, attr)
    if ret < 0:
        if err in (_errno.EPERM, _errno.EACCES):
            sc.raise_errno(err, f"opening pinned object {path}")
        raise PinError(f"cannot open pinned object {path}: {os.strerror(err)}", err,
                       hint="check the path is a pinned BPF object in a bpffs")
    return FD(ret)


def check_pinned_map(info, spec, path=""):
    """Raise PinError unless a pinned map's ``MapInfo`` matches the ``MapSpec``."""
    wanted = (spec.type, spec.key_size, spec.value_size, spec.max_entries, spec.flags)
    found = (info.type, info.key_size, info.value_size, info.max_entries, info.flags)
    names = ("type", "key_size", "value_size", "max_entries", "flags")
    diffs = [f"{n} {f} != {w}" for n, f, w in zip(names, found, wanted) if f != w]
    if diffs:
        raise PinError(f"pinned map {path or spec.name!r} does not match map "
                       f"{spec.name!r}: {', '.join(diffs)}",
                       hint="remove the stale pin so it is recreated")
