"""Reading ``/proc`` for one process, and walking every process.

:func:`read_process` gathers what the tools need about one pid (command
name, arguments, parent, uid, cgroup lines, PID namespace inode and NSpid
chain, mount namespace inode) into a :class:`ProcInfo`; :func:`walk` yields
one for every live process.  Processes vanish at any moment: a process gone
while being read raises :class:`ProcessGone` from :func:`read_process` and is
skipped by :func:`walk`.  Names and arguments are kept as the raw bytes the
process chose; escaping happens only when printing
(:mod:`pybpfload.tools.output`).
"""

import errno
import os
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from ..errors import BPFError

PROC = "/proc"

#: cap on what is read from one /proc file (cmdline can be huge)
MAX_READ = 1 << 20

_GONE_ERRNOS = (errno.ENOENT, errno.ESRCH, errno.ENOTDIR)


class ProcessGone(BPFError, LookupError):
    """The process exited (or never existed) while it was being read."""


@dataclass
class ProcInfo:
    """One process as /proc showed it.

    ``comm`` and ``args`` are raw bytes; ``cgroup`` is a list of
    ``(hierarchy_id, controllers, path)``; ``nspid`` the pid as seen in each
    PID namespace from the initial one down (``pidns_level`` = len - 1);
    ``pidns``/``mntns`` are namespace inode numbers (None when unreadable).
    """

    pid: int
    comm: bytes = b""
    args: List[bytes] = field(default_factory=list)
    ppid: Optional[int] = None
    uid: Optional[int] = None
    cgroup: List[Tuple[int, str, str]] = field(default_factory=list)
    nspid: Tuple[int, ...] = ()
    pidns: Optional[int] = None
    mntns: Optional[int] = None
    kernel_thread: bool = False

    @property
    def pidns_level(self):
        return max(len(self.nspid) - 1, 0)

    @property
    def innermost_pid(self):
        return self.nspid[-1] if self.nspid else self.pid


def _read(path, limit=MAX_READ):
    """The bytes of a /proc file; ProcessGone when the process is gone."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in _GONE_ERRNOS:
            raise ProcessGone(f"process gone: {path}") from None
        raise
    try:
        chunks = []
        total = 0
        while total < limit:
            chunk = os.read(fd, min(65536, limit - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        return b"".join(chunks)
    except OSError as exc:
        if exc.errno in _GONE_ERRNOS:
            raise ProcessGone(f"process gone: {path}") from None
        raise
    finally:
        os.close(fd)


def _ns_inode(path):
    """The inode number from a namespace link like ``pid:[4026531836]``."""
    try:
        target = os.readlink(path)
    except OSError:
        return None
    lb, rb = target.find("["), target.rfind("]")
    if lb < 0 or rb <= lb:
        return None
    try:
        return int(target[lb + 1:rb])
    except ValueError:
        return None


def parse_cgroup(data):
    """``/proc/<pid>/cgroup`` bytes -> [(hierarchy_id, controllers, path)]."""
    out = []
    text = data.decode("utf-8", "surrogateescape") if isinstance(data, (bytes, bytearray)) else str(data)
    for line in text.split("\n"):
        if not line:
            continue
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        try:
            hid = int(parts[0])
        except ValueError:
            continue
        out.append((hid, parts[1], parts[2]))
    return out


def parse_status(data):
    """The fields of ``/proc/<pid>/status`` we use: ppid, uid, nspid, kthread."""
    ppid = uid = None
    nspid = ()
    kthread = False
    for line in data.split(b"\n"):
        key, _, value = line.partition(b":")
        if key == b"PPid":
            ppid = _int(value)
        elif key == b"Uid":
            fields = value.split()
            uid = _int(fields[0]) if fields else None
        elif key == b"NSpid":
            nums = [_int(v) for v in value.split()]
            nspid = tuple(n for n in nums if n is not None)
        elif key == b"Kthread":
            kthread = value.strip() == b"1"
    return ppid, uid, nspid, kthread


def _int(value):
    try:
        return int(value.strip())
    except ValueError:
        return None


def read_process(pid, proc=PROC):
    """A :class:`ProcInfo` for ``pid``; :class:`ProcessGone` if it exits."""
    base = f"{proc}/{int(pid)}"
    try:
        status = _read(base + "/status", 1 << 16)
    except OSError as exc:
        raise ProcessGone(f"cannot read process {pid}: {exc.strerror}") from None
    ppid, uid, nspid, kthread = parse_status(status)
    info = ProcInfo(pid=int(pid), ppid=ppid, uid=uid, nspid=nspid)
    try:
        info.comm = _read(base + "/comm", 256).rstrip(b"\n")
        cmdline = _read(base + "/cmdline")
        info.cgroup = parse_cgroup(_read(base + "/cgroup", 1 << 16))
    except ProcessGone:
        raise
    except OSError:
        cmdline = b""
    if cmdline:
        if cmdline.endswith(b"\0"):
            cmdline = cmdline[:-1]
        info.args = cmdline.split(b"\0")
    info.kernel_thread = kthread or (not cmdline and ppid == 2) or int(pid) == 2
    info.pidns = _ns_inode(base + "/ns/pid")
    info.mntns = _ns_inode(base + "/ns/mnt")
    if not os.path.isdir(base):
        raise ProcessGone(f"process {pid} exited while being read")
    return info


def pids(proc=PROC):
    """The numeric entries of /proc, sorted."""
    try:
        names = os.listdir(proc)
    except OSError:
        return []
    return sorted(int(n) for n in names if n.isdigit())


def walk(proc=PROC, kernel_threads=False):
    """Yield a :class:`ProcInfo` for every live process (vanished ones skipped)."""
    for pid in pids(proc):
        try:
            info = read_process(pid, proc)
        except ProcessGone:
            continue
        except OSError:
            continue
        if info.kernel_thread and not kernel_threads:
            continue
        yield info
