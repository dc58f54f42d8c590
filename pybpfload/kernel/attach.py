"""Attaching programs: tracepoints, raw tracepoints, tp_btf/fentry tracing.

Every attachment is a :class:`Link`; ``close()`` detaches (the kernel drops
the attachment when the last fd referring to it is closed).

A classic tracepoint is a perf event opened with pid=-1 on CPU 0: for
tracepoint events the kernel hangs the program on the tracepoint itself, so
it runs on every CPU (tests verify this by firing the tracepoint on each CPU).
"""

import ctypes

from ..errors import AttachError, KernelError, NotSupportedError
from . import features
from . import perf_event as pe
from . import syscall as sc
from .fd import FD, Closeable
from .tracefs import has_kprobes, tracepoint_id

__all__ = ["Link", "attach_tracepoint", "attach_raw_tracepoint", "attach_tracing",
           "attach_kprobe"]

BPF_PERF_EVENT = 41
BPF_TRACE_RAW_TP = 23
BPF_TRACE_FENTRY, BPF_TRACE_FEXIT, BPF_MODIFY_RETURN = 24, 25, 26
BPF_LSM_MAC = 27


class Link(Closeable):
    """An attachment.  Holds the bpf link fd and/or the perf event fd."""

    def __init__(self, kind, target, link_fd=None, perf_fd=None):
        self.kind = kind
        self.target = target
        self.link_fd = link_fd
        self.perf_fd = perf_fd

    @property
    def closed(self):
        return all(f is None or f.closed for f in (self.link_fd, self.perf_fd))

    def fileno(self):
        return (self.link_fd or self.perf_fd).fileno()

    def close(self):
        """Detach: close the link, then disable and close the perf event."""
        if self.link_fd is not None:
            self.link_fd.close()
        if self.perf_fd is not None and not self.perf_fd.closed:
            try:
                pe.disable(self.perf_fd)
            except KernelError:
                pass
            self.perf_fd.close()


    def __repr__(self):
        return f"Link({self.kind}, {self.target!r}, closed={self.closed})"


def _link_create(prog_fd, target_fd, attach_type, target_btf_id=0, what=""):
    attr = sc.LinkCreateAttr(prog_fd=int(prog_fd), target_fd=target_fd,
                             attach_type=attach_type)
    attr.union_u64_0 = target_btf_id   # target_btf_id (u32) sits in the low half
    return FD(sc.bpf(sc.LINK_CREATE, attr, what))


def _split(target):
    if not isinstance(target, str) or target.count("/") != 1:
        raise AttachError(f"tracepoint {target!r} is not 'category/name'",
                          hint="e.g. syscalls/sys_enter_execve")
    return target.split("/")


def attach_tracepoint(prog, target, use_link=None):
    """Attach a tracepoint program to ``category/name``; return a :class:`Link`.

    With ``use_link`` None the kernel's perf links are used when it has them,
    else ``PERF_EVENT_IOC_SET_BPF`` + ``ENABLE``.
    """
    category, name = _split(target)
    tp = tracepoint_id(category, name)
    perf = pe.open_tracepoint_event(tp)
    try:
        if use_link is None:
            use_link = features.has_perf_link()
        what = f"attaching to tracepoint {target}"
        if use_link:
            link = _link_create(prog.fileno(), perf.fileno(), BPF_PERF_EVENT, what=what)
            return Link("tracepoint", target, link, perf)
        try:
            pe.set_bpf(perf, prog.fileno())
        except KernelError as exc:
            raise AttachError(f"{what}: {exc}", exc.errno,
                              hint="the program must be a tracepoint program") from None
        pe.enable(perf)
        return Link("tracepoint", target, None, perf)
    except BaseException:
        perf.close()
        raise


def attach_raw_tracepoint(prog, name):
    """Attach a raw tracepoint program to tracepoint ``name`` (e.g. ``sys_enter``)."""
    if not name or "\0" in name or "/" in name:
        raise AttachError(f"invalid raw tracepoint name {name!r}",
                          hint="give the bare tracepoint name, e.g. sys_enter")
    cname = sc.c_str(name)
    attr = sc.RawTracepointAttr(name=ctypes.addressof(cname), prog_fd=prog.fileno())
    ret, err = sc.bpf_errno(sc.RAW_TRACEPOINT_OPEN, attr)
    if ret < 0:
        if err == 2:  # ENOENT
            raise AttachError(f"raw tracepoint {name} does not exist on this kernel", err,
                              hint="list them in <tracefs>/available_events")
        if err == 22:  # EINVAL
            raise AttachError(f"cannot attach program {getattr(prog, 'name', '')!r} to raw "
                              f"tracepoint {name}: the kernel refused it", err,
                              hint="load it as a raw_tracepoint program")
        sc.raise_errno(err, f"attaching to raw tracepoint {name}")
    return Link("raw_tracepoint", name, FD(ret))


def attach_tracing(prog):
    """Attach a tracing program (tp_btf, fentry, fexit, fmod_ret, lsm) to the target
    its load named via attach_btf_id."""
    eat = getattr(prog, "expected_attach_type", 0)
    if eat in (BPF_TRACE_RAW_TP, BPF_TRACE_FENTRY, BPF_TRACE_FEXIT, BPF_MODIFY_RETURN,
               BPF_LSM_MAC):
        attr = sc.RawTracepointAttr(name=0, prog_fd=prog.fileno())
        ret, err = sc.bpf_errno(sc.RAW_TRACEPOINT_OPEN, attr)
        if ret >= 0:
            return Link("tracing", getattr(prog, "name", ""), FD(ret))
        try:
            return Link("tracing", getattr(prog, "name", ""),
                        _link_create(prog.fileno(), 0, eat, what="attaching a tracing program"))
        except KernelError as exc:
            raise AttachError(f"attaching tracing program {getattr(prog, 'name', '')!r}: "
                              f"{exc}", exc.errno) from None
    raise AttachError(f"program {getattr(prog, 'name', '')!r} is not a tracing program "
                      f"(expected attach type {eat})",
                      hint="load it with prog type tracing and an expected attach type")


def attach_kprobe(prog, function, retprobe=False):
    """Kprobes: a clear AttachError where the kernel has none (as here)."""
    if not has_kprobes():
        raise AttachError(f"cannot attach {'kretprobe' if retprobe else 'kprobe'} to "
                          f"{function}: this kernel has no kprobe support (CONFIG_KPROBES)",
                          hint="use a tracepoint, raw tracepoint or tp_btf program instead")
    raise NotSupportedError("kprobe attachment is not implemented by pybpfload",
                            hint="use a tracepoint, raw tracepoint or tp_btf program")
