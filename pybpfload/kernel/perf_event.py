"""perf_event_open(2) through ctypes: tracepoint events and BPF_OUTPUT events.

``struct perf_event_attr`` is laid out as in ``include/uapi/linux/perf_event.h``;
unset fields are zero.  The ioctls used with BPF are ENABLE, DISABLE and SET_BPF.
"""

import ctypes
import fcntl
import os

from ..errors import NotSupportedError
from . import syscall as sc
from .fd import FD

__all__ = ["PerfEventAttr", "perf_event_open", "open_tracepoint_event", "open_bpf_output_event",
           "enable", "disable", "set_bpf"]

PERF_TYPE_SOFTWARE = 1
PERF_TYPE_TRACEPOINT = 2
PERF_COUNT_SW_BPF_OUTPUT = 10
PERF_SAMPLE_RAW = 1 << 10
PERF_FLAG_FD_CLOEXEC = 1 << 3

# attr.flags bits
FLAG_DISABLED = 1 << 0
FLAG_WATERMARK = 1 << 14

PERF_EVENT_IOC_ENABLE = 0x2400
PERF_EVENT_IOC_DISABLE = 0x2401
PERF_EVENT_IOC_SET_BPF = 0x40042408

_NR_PERF_EVENT_OPEN = {"x86_64": 298, "aarch64": 241, "arm64": 241, "riscv64": 241,
                       "ppc64le": 319, "s390x": 331, "i686": 336, "i386": 336,
                       "armv7l": 364}


class PerfEventAttr(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("size", ctypes.c_uint32),
                ("config", ctypes.c_uint64), ("sample_period", ctypes.c_uint64),
                ("sample_type", ctypes.c_uint64), ("read_format", ctypes.c_uint64),
                ("flags", ctypes.c_uint64), ("wakeup_events", ctypes.c_uint32),
                ("bp_type", ctypes.c_uint32), ("config1", ctypes.c_uint64),
                ("config2", ctypes.c_uint64), ("branch_sample_type", ctypes.c_uint64),
                ("sample_regs_user", ctypes.c_uint64), ("sample_stack_user", ctypes.c_uint32),
                ("clockid", ctypes.c_int32), ("sample_regs_intr", ctypes.c_uint64),
                ("aux_watermark", ctypes.c_uint32), ("sample_max_stack", ctypes.c_uint16),
                ("_reserved_2", ctypes.c_uint16)]   # PERF_ATTR_SIZE_VER5 = 112 bytes


def perf_event_open(attr, pid=-1, cpu=0, group_fd=-1, flags=PERF_FLAG_FD_CLOEXEC, what=None):
    """Open a perf event; return its :class:`FD`."""
    nr = _NR_PERF_EVENT_OPEN.get(os.uname().machine)
    if nr is None:
        raise NotSupportedError(f"unknown perf_event_open syscall number on "
                                f"{os.uname().machine!r}")
    attr.size = ctypes.sizeof(attr)
    ret = sc.libc.syscall(nr, ctypes.byref(attr), ctypes.c_int(pid), ctypes.c_int(cpu),
                          ctypes.c_int(group_fd), ctypes.c_ulong(flags))
    if ret < 0:
        err = ctypes.get_errno()
        sc.raise_errno(err, what or "perf_event_open")
    return FD(ret)


def open_tracepoint_event(tp_id, cpu=0, pid=-1):
    """A (disabled) perf event on tracepoint ``tp_id``."""
    attr = PerfEventAttr(type=PERF_TYPE_TRACEPOINT, config=tp_id, sample_period=1,
                         sample_type=PERF_SAMPLE_RAW, wakeup_events=1, flags=FLAG_DISABLED)
    return perf_event_open(attr, pid, cpu, what=f"opening a perf event on tracepoint id {tp_id}")


def open_bpf_output_event(cpu, wakeup_events=1, watermark=0):
    """A software BPF_OUTPUT event on ``cpu`` whose ring receives bpf_perf_event_output
    samples; wakes up after ``wakeup_events`` samples, or ``watermark`` bytes if given."""
    attr = PerfEventAttr(type=PERF_TYPE_SOFTWARE, config=PERF_COUNT_SW_BPF_OUTPUT,
                         sample_period=1, sample_type=PERF_SAMPLE_RAW)
    if watermark:
        attr.flags |= FLAG_WATERMARK
        attr.wakeup_events = watermark
    else:
        attr.wakeup_events = max(1, wakeup_events)
    return perf_event_open(attr, -1, cpu, what=f"opening a BPF output perf event on CPU {cpu}")


def _ioctl(fd, req, arg=0, what=""):
    try:
        fcntl.ioctl(int(fd), req, arg)
    except OSError as exc:
        sc.raise_errno(exc.errno, what)


def enable(fd):
    _ioctl(fd, PERF_EVENT_IOC_ENABLE, 0, "enabling a perf event")


def disable(fd):
    _ioctl(fd, PERF_EVENT_IOC_DISABLE, 0, "disabling a perf event")


def set_bpf(fd, prog_fd):
    _ioctl(fd, PERF_EVENT_IOC_SET_BPF, int(prog_fd), "attaching a program to a perf event")
