"""``python -m pybpfload btf dump [FILE] --format c|raw``: show BTF.

FILE is raw BTF (default: the running kernel's, ``/sys/kernel/btf/vmlinux``;
a kernel module's ``/sys/kernel/btf/<module>`` is split BTF on top of
vmlinux) or a BPF ELF object (its ``.BTF`` section).

``--format c`` writes a C header of every type (a ``vmlinux.h``, see
:mod:`pybpfload.obj.btf_c`); ``--format raw`` prints one line per type (and
one per member, enumerator, parameter or variable) in the layout of
``bpftool btf dump file FILE format raw``.  ``--output FILE`` writes there
instead of stdout; ``--time`` reports on stderr how long reading and writing
took.
"""

import os
import sys
import time

from ..errors import BPFError, BTFError
from ..obj import btf as B
from . import output

KERNEL_BTF_DIR = "/sys/kernel/btf"


class BTFFileError(BPFError):
    """A BTF file given on the command line cannot be read."""


def add_arguments(parser):
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    dump = sub.add_parser("dump", help="dump every type of a BTF file")
    dump.add_argument("file", nargs="?", default=B.KERNEL_BTF_PATH, metavar="FILE",
                      help="raw BTF or a BPF object (default: %(default)s)")
    dump.add_argument("--format", choices=("c", "raw"), default="raw",
                      help="c: a C header (vmlinux.h); raw: one line per type like "
                           "bpftool (default: %(default)s)")
    dump.add_argument("--base", metavar="FILE",
                      help="base BTF of a split BTF file (default: vmlinux for "
                           f"{KERNEL_BTF_DIR}/<module>)")
    dump.add_argument("--output", "-o", metavar="FILE", help="write here instead of stdout")
    dump.add_argument("--time", action="store_true", help="print timings on stderr")


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise BTFFileError(f"cannot read {path}: {exc.strerror or exc}",
                           hint="give a raw BTF file or a BPF object") from None


def load(path, base_path=None):
    """The BTF of ``path`` (raw BTF or a BPF ELF object)."""
    if os.path.abspath(path) == B.KERNEL_BTF_PATH and base_path is None:
        try:
            return B.BTF.load_kernel(path)
        except OSError as exc:
            raise BTFFileError(f"cannot read {path}: {exc.strerror or exc}",
                               hint="this kernel may lack CONFIG_DEBUG_INFO_BTF") from None
    data = _read(path)
    if data[:4] == b"\x7fELF":
        from ..obj.elf import read_object
        spec = read_object(data, name="obj")
        if spec.btf is None:
            raise BTFError(f"{path} has no .BTF section", hint="build it with clang -g")
        return spec.btf
    base = None
    if base_path is None and os.path.dirname(os.path.abspath(path)) == KERNEL_BTF_DIR:
        base_path = B.KERNEL_BTF_PATH
    if base_path is not None:
        base = load(base_path)
    return B.BTF.parse(data, base=base)


# -- raw format ---------------------------------------------------------------

_INT_ENCODINGS = {0: "(none)", B.INT_SIGNED: "SIGNED", B.INT_CHAR: "CHAR", B.INT_BOOL: "BOOL"}
_FUNC_LINKAGE = {0: "static", 1: "global", 2: "extern"}
_VAR_LINKAGE = {0: "static", 1: "global", 2: "extern"}


def _q(name):
    return "'" + (output.safe(name) if name else "(anon)") + "'"


def raw_lines(btf):
    """Yield the lines of bpftool's raw format, type by type."""
    first = btf.first_id if btf.base is not None else 1
    for tid in range(first, btf.count):
        t = btf[tid]
        k = t.kind
        head = f"[{tid}] {B.KIND_NAMES.get(k, '?').upper()} {_q(t.name)}"
        if k == B.KIND_INT:
            enc = _INT_ENCODINGS.get(t.encoding, "?")
            yield f"{head} size={t.size} bits_offset={t.bit_offset} nr_bits={t.bits} encoding={enc}"
        elif k in (B.KIND_PTR, B.KIND_CONST, B.KIND_VOLATILE, B.KIND_RESTRICT, B.KIND_TYPEDEF,
                   B.KIND_TYPE_TAG):
            yield f"{head} type_id={t.type}"
        elif k == B.KIND_ARRAY:
            yield f"{head} type_id={t.type} index_type_id={t.index_type} nr_elems={t.nelems}"
        elif k in (B.KIND_STRUCT, B.KIND_UNION):
            yield f"{head} size={t.size} vlen={len(t.members)}"
            for m in t.members:
                bits = f" bitfield_size={m.bitfield_size}" if m.bitfield_size else ""
                yield f"\t{_q(m.name)} type_id={m.type} bits_offset={m.bit_offset}{bits}"
        elif k in (B.KIND_ENUM, B.KIND_ENUM64):
            enc = "SIGNED" if t.signed else "UNSIGNED"
            yield f"{head} encoding={enc} size={t.size} vlen={len(t.values)}"
            for v in t.values:
                value = v.value
                if k == B.KIND_ENUM64:
                    value = f"{value}LL" if t.signed else f"{value}ULL"
                yield f"\t{_q(v.name)} val={value}"
        elif k == B.KIND_FWD:
            yield f"{head} fwd_kind={'union' if t.is_union else 'struct'}"
        elif k == B.KIND_FUNC:
            yield f"{head} type_id={t.type} linkage={_FUNC_LINKAGE.get(t.linkage, '?')}"
        elif k == B.KIND_FUNC_PROTO:
            yield f"{head} ret_type_id={t.return_type} vlen={len(t.params)}"
            for p in t.params:
                yield f"\t{_q(p.name)} type_id={p.type}"
        elif k == B.KIND_VAR:
            yield f"{head} type_id={t.type}, linkage={_VAR_LINKAGE.get(t.linkage, '?')}"
        elif k == B.KIND_DATASEC:
            yield f"{head} size={t.size} vlen={len(t.vars)}"
            for v in t.vars:
                yield f"\ttype_id={v.type} offset={v.offset} size={v.size} " \
                      f"({B.KIND_NAMES.get(btf.kind_of(v.type), '?').upper()} " \
                      f"{_q(btf.name_of(v.type))})"
        elif k == B.KIND_FLOAT:
            yield f"{head} size={t.size}"
        elif k == B.KIND_DECL_TAG:
            yield f"{head} type_id={t.type} component_idx={t.component_idx}"
        else:
            yield head


def write_raw(btf, out):
    chunk = []
    for line in raw_lines(btf):
        chunk.append(line)
        if len(chunk) >= 4096:
            out.write("\n".join(chunk) + "\n")
            chunk.clear()
    if chunk:
        out.write("\n".join(chunk) + "\n")


# -- the command --------------------------------------------------------------

def run(args):
    started = time.perf_counter()
    btf = load(args.file, args.base)
    loaded = time.perf_counter()
    if args.format == "c":
        from ..obj.btf_c import write_header as write
    else:
        write = write_raw
    if args.output:
        tmp = f"{args.output}.tmp{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644)
        try:
            with os.fdopen(fd, "w") as out:
                write(btf, out)
            os.replace(tmp, args.output)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    else:
        write(btf, sys.stdout)
        sys.stdout.flush()
    if args.time:
        done = time.perf_counter()
        print(f"pybpfload: {btf.count - 1} types: read {loaded - started:.2f}s, "
              f"{args.format} written {done - loaded:.2f}s", file=sys.stderr)
    return 0
