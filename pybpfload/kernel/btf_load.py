"""Loading BTF into the kernel (BPF_BTF_LOAD), with the kernel's log on failure."""

import ctypes
import errno as _errno

from ..errors import BTFError
from . import syscall as sc
from .fd import FD

__all__ = ["load_btf", "btf_fd_by_id"]

LOG_START = 1 << 16
LOG_MAX = (1 << 30) - 1


def load_btf(data, log_on_failure=True):
    """Load raw BTF bytes; return the BTF object's :class:`FD`.

    A rejected blob raises :class:`~pybpfload.errors.BTFError` carrying the
    last line of the kernel's BTF log (``.log`` has all of it).
    """
    data = bytes(data)
    buf = ctypes.create_string_buffer(data, max(len(data), 1))
    attr = sc.BtfLoadAttr(btf=ctypes.addressof(buf), btf_size=len(data))
    ret, err = sc.bpf_errno(sc.BTF_LOAD, attr)
    if ret >= 0:
        return FD(ret)
    if err in (_errno.EPERM, _errno.E2BIG) or not log_on_failure:
        sc.raise_errno(err, "loading BTF")
    size = LOG_START
    while True:
        log = ctypes.create_string_buffer(size)
        attr.btf_log_buf, attr.btf_log_size, attr.btf_log_level = ctypes.addressof(log), size, 1
        ret, err = sc.bpf_errno(sc.BTF_LOAD, attr)
        if ret >= 0:
            return FD(ret)
        if err == _errno.ENOSPC and size < LOG_MAX:
            size = min(LOG_MAX, size * 4)
            continue
        break
    text = log.value.decode("utf-8", "replace")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    reason = lines[-1] if lines else f"errno {err}"
    exc = BTFError(f"the kernel rejected the BTF: {reason}",
                   hint="the kernel may not know a BTF kind used; sanitize the BTF")
    exc.log = text
    exc.errno = err
    raise exc


def btf_fd_by_id(btf_id):
    """Open a kernel BTF object (vmlinux, module, a program's) by id."""
    attr = sc.GetIdAttr(start_id=btf_id)
    return FD(sc.bpf(sc.BTF_GET_FD_BY_ID, attr, f"opening BTF id {btf_id}"))
