"""tracefs: find it, mount it when missing, read tracepoint ids."""

import os

from ..errors import AttachError, KernelError
from .bpffs import fs_magic, libc_mount

__all__ = ["TRACEFS_MAGIC", "find_tracefs", "ensure_tracefs", "tracepoint_id",
           "has_kprobes"]

TRACEFS_MAGIC = 0x74726163
DEBUGFS_MAGIC = 0x64626720
TRACEFS_PATHS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")

_cached = None


def find_tracefs():
    """The path of a mounted tracefs, or None."""
    for path in TRACEFS_PATHS:
        if fs_magic(path) == TRACEFS_MAGIC:
            return path
    return None


def ensure_tracefs():
    """Return the tracefs path, mounting it at /sys/kernel/tracing if missing."""
    global _cached
    if _cached and fs_magic(_cached) == TRACEFS_MAGIC:
        return _cached
    path = find_tracefs()
    if path is None:
        path = TRACEFS_PATHS[0]
        try:
            libc_mount("nodev", path, "tracefs")
        except KernelError as exc:
            raise AttachError(f"tracefs is not mounted and mounting it at {path} failed: "
                              f"{exc}", exc.errno,
                              hint="mount -t tracefs nodev /sys/kernel/tracing") from None
    _cached = path
    return path


def _check_part(part, what):
    if not part or "/" in part or part in (".", "..") or "\0" in part:
        raise AttachError(f"invalid tracepoint {what} {part!r}",
                          hint="use category/name, e.g. syscalls/sys_enter_execve")


def tracepoint_id(category, name):
    """The perf id of tracepoint ``category/name`` (from ``events/<cat>/<name>/id``)."""
    _check_part(category, "category")
    _check_part(name, "name")
    root = ensure_tracefs()
    path = os.path.join(root, "events", category, name, "id")
    try:
        with open(path, "rb") as f:
            return int(f.read().strip())
    except FileNotFoundError:
        raise AttachError(f"tracepoint {category}/{name} does not exist on this kernel",
                          hint=f"list them in {root}/available_events") from None
    except (OSError, ValueError) as exc:
        raise AttachError(f"cannot read the id of tracepoint {category}/{name}: {exc}") from None


def has_kprobes():
    """Whether the kernel can create kprobes (a perf 'kprobe' PMU or kprobe_events)."""
    if os.path.exists("/sys/bus/event_source/devices/kprobe/type"):
        return True
    path = find_tracefs()
    return bool(path) and os.path.exists(os.path.join(path, "kprobe_events"))
