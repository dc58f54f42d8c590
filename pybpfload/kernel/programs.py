"""Loading programs into the kernel (BPF_PROG_LOAD) and inspecting them.

:func:`load_program` first loads without a verifier log (fast); if that
fails it loads again with a log buffer, growing it until the whole log fits
(the kernel answers ENOSPC while it does not), and raises
:class:`~pybpfload.errors.VerifierError` whose message ends with the last
lines of the log and whose ``.log`` holds all of it.
"""

import ctypes
import errno as _errno

from ..errors import KernelError, VerifierError
from ..obj.insn import encode
from . import syscall as sc
from .fd import FD, OwnsFD
from .maps import sanitize_name

__all__ = ["load_program", "Program", "ProgInfo", "prog_info",
           "BPF_F_SLEEPABLE", "PROG_TYPES"]

# enum bpf_prog_type (subset)
PROG_TYPES = {"socket_filter": 1, "kprobe": 2, "sched_cls": 3, "sched_act": 4,
              "tracepoint": 5, "xdp": 6, "perf_event": 7, "cgroup_skb": 8,
              "raw_tracepoint": 17, "tracing": 26, "lsm": 29, "syscall": 31}
BPF_PROG_TYPE_KPROBE = 2
BPF_PROG_TYPE_TRACEPOINT = 5
BPF_PROG_TYPE_RAW_TRACEPOINT = 17
BPF_PROG_TYPE_TRACING = 26

BPF_F_SLEEPABLE = 1 << 4

#: first log buffer size on retry; doubles on ENOSPC up to the kernel's maximum
LOG_START = 1 << 16
LOG_MAX = (1 << 30) - 1
LOG_TAIL_LINES = 20


class ProgInfo(ctypes.Structure):
    """``struct bpf_prog_info`` (the fields up to attach_btf_id)."""
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("tag", ctypes.c_uint8 * 8),
                ("jited_prog_len", ctypes.c_uint32), ("xlated_prog_len", ctypes.c_uint32),
                ("jited_prog_insns", ctypes.c_uint64), ("xlated_prog_insns", ctypes.c_uint64),
                ("load_time", ctypes.c_uint64), ("created_by_uid", ctypes.c_uint32),
                ("nr_map_ids", ctypes.c_uint32), ("map_ids", ctypes.c_uint64),
                ("name", ctypes.c_char * 16), ("ifindex", ctypes.c_uint32),
                ("gpl_compatible", ctypes.c_uint32), ("netns_dev", ctypes.c_uint64),
                ("netns_ino", ctypes.c_uint64), ("nr_jited_ksyms", ctypes.c_uint32),
                ("nr_jited_func_lens", ctypes.c_uint32), ("jited_ksyms", ctypes.c_uint64),
                ("jited_func_lens", ctypes.c_uint64), ("btf_id", ctypes.c_uint32),
                ("func_info_rec_size", ctypes.c_uint32), ("func_info", ctypes.c_uint64),
                ("nr_func_info", ctypes.c_uint32), ("nr_line_info", ctypes.c_uint32),
                ("line_info", ctypes.c_uint64), ("jited_line_info", ctypes.c_uint64),
                ("nr_jited_line_info", ctypes.c_uint32), ("line_info_rec_size", ctypes.c_uint32),
                ("jited_line_info_rec_size", ctypes.c_uint32), ("nr_prog_tags", ctypes.c_uint32),
                ("prog_tags", ctypes.c_uint64), ("run_time_ns", ctypes.c_uint64),
                ("run_cnt", ctypes.c_uint64), ("recursion_misses", ctypes.c_uint64),
                ("verified_insns", ctypes.c_uint32), ("attach_btf_obj_id", ctypes.c_uint32),
                ("attach_btf_id", ctypes.c_uint32)]


def prog_info(fd, xlated=False):
    """``(ProgInfo, xlated instruction bytes or None)`` of a program fd."""
    info = ProgInfo()
    attr = sc.InfoByFdAttr(bpf_fd=int(fd), info_len=ctypes.sizeof(info),
                           info=ctypes.addressof(info))
    sc.bpf(sc.OBJ_GET_INFO_BY_FD, attr, "reading program info")
    if not xlated:
        return info, None
    size = info.xlated_prog_len
    buf = ctypes.create_string_buffer(max(size, 1))
    info2 = ProgInfo(xlated_prog_len=size, xlated_prog_insns=ctypes.addressof(buf))
    attr = sc.InfoByFdAttr(bpf_fd=int(fd), info_len=ctypes.sizeof(info2),
                           info=ctypes.addressof(info2))
    sc.bpf(sc.OBJ_GET_INFO_BY_FD, attr, "reading translated instructions",
           hint="reading xlated code needs CAP_SYS_ADMIN / root")
    return info, buf.raw[:size]


class Program(OwnsFD):
    """A loaded program held open by this object (closes with it)."""

    def __init__(self, fd, name="", prog_type=0, expected_attach_type=0,
                 attach_btf_id=0, attach_btf_obj_fd=None):
        self.fd = fd if isinstance(fd, FD) else FD(fd)
        self.name = name
        self.type = prog_type
        self.expected_attach_type = expected_attach_type
        self.attach_btf_id = attach_btf_id
        self.attach_btf_obj_fd = attach_btf_obj_fd

    @classmethod
    def from_id(cls, prog_id):
        attr = sc.GetIdAttr(start_id=prog_id)
        fd = FD(sc.bpf(sc.PROG_GET_FD_BY_ID, attr, f"opening program id {prog_id}"))
        info, _ = prog_info(fd)
        return cls(fd, info.name.decode("ascii", "replace"), info.type)

    @classmethod
    def from_pin(cls, path):
        from .bpffs import get_pinned
        fd = get_pinned(path)
        info, _ = prog_info(fd)
        return cls(fd, info.name.decode("ascii", "replace"), info.type)

    def info(self):
        return prog_info(self.fd)[0]

    @property
    def id(self):
        return self.info().id

    @property
    def tag(self):
        """The kernel's tag (hash of the instructions) as 16 hex digits."""
        return bytes(self.info().tag).hex()

    def xlated(self):
        """The instructions as the kernel rewrote them (bytes)."""
        return prog_info(self.fd, xlated=True)[1]

    def __repr__(self):
        return f"Program({self.name!r}, type={self.type}, fd={self.fd!r})"


def _as_bytes(insns):
    if isinstance(insns, (bytes, bytearray, memoryview)):
        data = bytes(insns)
    else:
        data = encode(list(insns))
    if not data or len(data) % 8:
        raise KernelError(f"program instructions are {len(data)} bytes, not a non-zero "
                          "multiple of 8", hint="pass encoded instructions or Instruction objects")
    return data


def log_tail(log, lines=LOG_TAIL_LINES):
    """The last ``lines`` non-empty lines of a verifier log."""
    kept = [ln for ln in log.splitlines() if ln.strip()]
    return "\n".join(kept[-lines:])


def load_program(prog_type, insns, license="GPL", *, expected_attach_type=0,
                 attach_btf_id=0, attach_btf_obj_fd=None, attach_prog_fd=None,
                 prog_btf_fd=None, func_info=b"", func_info_rec_size=0,
                 line_info=b"", line_info_rec_size=0, name="", kernel_version=0,
                 flags=0, sleepable=False, fd_array=None, log_level=1):
    """Load a program; return a :class:`Program` or raise ``VerifierError``.

    ``insns`` is instruction bytes or a list of ``Instruction``.  ``func_info``
    and ``line_info`` are the raw ``bpf_func_info``/``bpf_line_info`` records
    (count = len / rec size).  ``name`` is sanitized to 15 characters.
    """
    code = _as_bytes(insns)
    insn_buf = ctypes.create_string_buffer(code, len(code))
    lic = sc.c_str(license or "")
    attr = sc.ProgLoadAttr(
        prog_type=prog_type, insn_cnt=len(code) // 8, insns=ctypes.addressof(insn_buf),
        license=ctypes.addressof(lic), kern_version=kernel_version,
        prog_flags=flags | (BPF_F_SLEEPABLE if sleepable else 0),
        prog_name=sanitize_name(name), expected_attach_type=expected_attach_type,
        attach_btf_id=attach_btf_id)
    keep = [insn_buf, lic]
    if attach_btf_obj_fd is not None:
        attr.attach_btf_obj_fd = int(attach_btf_obj_fd)
    elif attach_prog_fd is not None:
        attr.attach_btf_obj_fd = int(attach_prog_fd)   # same union slot: attach_prog_fd
    if prog_btf_fd is not None:
        attr.prog_btf_fd = int(prog_btf_fd)
        for field, data, rec in (("func_info", func_info, func_info_rec_size),
                                 ("line_info", line_info, line_info_rec_size)):
            if data:
                if not rec or len(data) % rec:
                    raise KernelError(f"{field} of {len(data)} bytes is not a multiple of "
                                      f"its record size {rec}")
                buf = ctypes.create_string_buffer(bytes(data), len(data))
                keep.append(buf)
                setattr(attr, field, ctypes.addressof(buf))
                setattr(attr, field + "_rec_size", rec)
                setattr(attr, field + "_cnt", len(data) // rec)
    if fd_array:
        arr = (ctypes.c_int32 * len(fd_array))(*[int(f) for f in fd_array])
        keep.append(arr)
        attr.fd_array = ctypes.addressof(arr)

    ret, err = sc.bpf_errno(sc.PROG_LOAD, attr)
    if ret >= 0:
        return Program(FD(ret), name, prog_type, expected_attach_type,
                       attach_btf_id, attach_btf_obj_fd)

    # Failed: load again with a log, growing the buffer until the log fits.
    size = LOG_START
    while True:
        log = ctypes.create_string_buffer(size)
        attr.log_level, attr.log_size, attr.log_buf = log_level, size, ctypes.addressof(log)
        attr.log_true_size = 0
        ret, err = sc.bpf_errno(sc.PROG_LOAD, attr)
        if ret >= 0:   # succeeded with a log (a flaky first attempt): keep it
            return Program(FD(ret), name, prog_type, expected_attach_type,
                           attach_btf_id, attach_btf_obj_fd)
        if err == _errno.ENOSPC and size < LOG_MAX:
            want = attr.log_true_size
            size = min(LOG_MAX, want + 1 if want >= size else size * 4)
            continue
        break
    text = log.value.decode("utf-8", "replace")
    label = f"program {name!r}" if name else "program"
    if text.strip():
        tail = log_tail(text)
        reason = tail.splitlines()[-1] if tail else ""
        for line in reversed(tail.splitlines()):
            if not line.startswith(("processed ", "verification time")):
                reason = line
                break
        raise VerifierError(f"the verifier rejected {label}: {reason}\n{tail}", err, text)
    sc.raise_errno(err, f"loading {label}")
