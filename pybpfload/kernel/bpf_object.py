"""An object made real in the kernel: the library API most users want.

::

    from pybpfload import BPFObject

    with BPFObject("prebuilt/classify.bpf.o") as obj:
        obj.set_variable("v1_subsys_id", 1)     # .rodata, before load
        obj.load()
        obj.attach()                            # every program, by its SEC() name
        with obj.perf_buffer("events") as events:
            for raw in events.poll(1000):
                ...

Maps read back decoded through the object's BTF with :meth:`BPFObject.typed_map`
(structs as dicts or named tuples, per-CPU values as lists); ``pin()`` pins
programs, maps and links in bpffs so they outlive the process (the ``load``
command).

``load()`` walks the kernel-free layer's output into the kernel: the
object's BTF (fixed up and sanitized for what this kernel accepts), its maps
(global data initialised, ``.rodata`` frozen, pinned maps reused), then each
program linked with its subprograms, CO-RE-relocated against the running
kernel's BTF, and loaded with its func_info/line_info.  Everything it opens
is closed by ``close()`` (or leaving the ``with`` block), in reverse order.
"""

import dataclasses
import os
import re

from ..errors import BPFError, BTFError, KernelError, VerifierError
from ..obj import btf as btfmod
from ..obj import core, elf, link
from ..obj import maps as objmaps
from ..obj.spec import PIN_BY_NAME
from . import attach as attachmod
from . import features
from .btf_load import load_btf
from .fd import Closeable
from .maps import Map
from .programs import load_program

KERNEL_BTF_ENV = "PYBPFLOAD_KERNEL_BTF"
_POISON_LINE = re.compile(r"^(\d+): \(85\) call unknown#195896080", re.M)

_kernel_btf_cache = {}


def kernel_btf(path=None):
    """The running kernel's BTF (parsed once per process), or a clear error."""
    path = path or os.environ.get(KERNEL_BTF_ENV) or btfmod.KERNEL_BTF_PATH
    btf = _kernel_btf_cache.get(path)
    if btf is None:
        try:
            btf = btfmod.BTF.load_kernel(path)
        except FileNotFoundError:
            raise BTFError(f"no kernel BTF at {path}",
                           hint="this kernel lacks CONFIG_DEBUG_INFO_BTF; point "
                                f"{KERNEL_BTF_ENV} at a BTF file for it") from None
        except PermissionError:
            raise BTFError(f"cannot read the kernel BTF at {path}: permission denied",
                           hint="run as root") from None
        except OSError as exc:
            raise BTFError(f"cannot read the kernel BTF at {path}: {exc.strerror}") from None
        _kernel_btf_cache[path] = btf
    return btf


def pin_name(name):
    """A bpffs file name for an object name: bpffs refuses dots, so they become
    underscores (``classify.rodata`` -> ``classify_rodata``, as libbpf does)."""
    return name.replace(".", "_").replace("/", "_")


class LoadedProgram:
    """A program in the kernel, with what is needed to attach and explain it."""

    def __init__(self, spec, program, core_results):
        self.spec = spec
        self.program = program
        self.core_results = core_results
        self.link = None

    @property
    def name(self):
        return self.spec.name

    def fileno(self):
        return self.program.fileno()

    def attach(self):
        """Attach where the program's SEC() name says; returns the link."""
        if self.link is not None:
            return self.link
        kind, target = self.spec.attach_kind, self.spec.attach_to
        if kind == "tracepoint":
            self.link = attachmod.attach_tracepoint(self.program, target)
        elif kind == "raw_tracepoint":
            self.link = attachmod.attach_raw_tracepoint(self.program, target)
        elif kind in ("tp_btf", "fentry", "fexit", "fmod_ret", "lsm"):
            self.link = attachmod.attach_tracing(self.program)
        elif kind in ("kprobe", "kretprobe"):
            self.link = attachmod.attach_kprobe(self.program, target, kind == "kretprobe")
        else:
            raise attachmod.AttachError(
                f"program {self.name!r} (section {self.spec.section!r}) has no automatic "
                f"attach point", hint="attach it yourself with its fd")
        return self.link

    def detach(self):
        if self.link is not None:
            self.link.close()
            self.link = None

    def release_link(self):
        """Close our fds of the link without detaching it: for a link pinned in
        bpffs, which keeps the program attached after this process exits."""
        link, self.link = self.link, None
        if link is not None:
            for fd in (link.perf_fd, link.link_fd):
                if fd is not None:
                    fd.close()

    def close(self):
        self.detach()
        self.program.close()


class BPFObject(Closeable):
    """Open an object (path or bytes); set variables; load; attach; read events."""

    def __init__(self, source, *, name=None, kernel_btf_path=None, pin_root="/sys/fs/bpf"):
        if isinstance(source, (bytes, bytearray, memoryview)):
            self.path = None
            self.spec = elf.read_object(bytes(source), name or "obj")
        elif not isinstance(source, (str, os.PathLike)) and hasattr(source, "read_bytes"):
            # a Traversable, e.g. a prebuilt object inside a zipapp (resources.py)
            self.path = None
            self.spec = elf.read_object(source.read_bytes(), name or elf.object_name(source.name))
        else:
            self.path = os.fspath(source)
            self.spec = elf.read_object_file(self.path)
        self.kernel_btf_path = kernel_btf_path
        self.pin_root = pin_root
        self.maps = {}
        self.programs = {}
        self._btf_fd = None
        self._readers = []
        self._inner_maps = []
        self.loaded = False

    # -- before load ---------------------------------------------------------
    def set_variable(self, name, value):
        """Set a global variable's initial value (``const volatile`` config)."""
        if self.loaded:
            raise BPFError(f"cannot set {name!r}: the object is already loaded",
                           hint="set variables before load()")
        objmaps.set_variable(self.spec, name, value)

    def get_variable(self, name):
        return objmaps.get_variable(self.spec, name)

    # -- load ----------------------------------------------------------------
    def load(self, programs=None):
        """Create the maps and load the programs (all, or those named)."""
        if self.loaded:
            return self
        from .memlock import ensure_memlock
        ensure_memlock()
        try:
            self._load_btf()
            self._create_maps()
            names = list(self.spec.programs) if programs is None else list(programs)
            cache = core.CoreCache()
            for pname in names:
                self.programs[pname] = self._load_program(pname, cache)
        except BaseException:
            self.close()
            raise
        self.loaded = True
        return self

    def _needs_kernel_btf(self):
        return any(p.attach_kind in ("tp_btf", "fentry", "fexit", "fmod_ret", "lsm")
                   or any(i.core is not None for i in p.instructions)
                   for p in self.spec.programs.values()) or any(
            i.core is not None for f in self.spec.functions.values() for i in f)

    def _load_btf(self):
        spec = self.spec
        if spec.btf is None:
            return
        raw = btfmod.fixup_datasecs(bytes(spec.btf.data), spec.section_sizes,
                                    spec.symbol_offsets)
        bad = features.unsupported_btf_kinds()
        if bad:
            raw = btfmod.sanitize(raw, bad)
        try:
            self._btf_fd = load_btf(raw)
        except KernelError:
            # Programs and maps still load without BTF (no func_info, no
            # BTF-typed maps); only what needs it fails later, with its reason.
            self._btf_fd = None

    def _create_maps(self):
        spec = self.spec
        for name, m in spec.maps.items():
            ms = m
            if m.type == 4 and not m.max_entries:   # perf event array: one slot per CPU
                ms = dataclasses.replace(m, max_entries=len(features.possible_cpus()))
            pin_path = None
            if m.pinning == PIN_BY_NAME:
                pin_path = os.path.join(self.pin_root, m.name)
                if os.path.exists(pin_path):
                    self.maps[name] = self._reuse_pinned(pin_path, ms)
                    continue
            inner_fd = None
            if m.inner is not None:
                inner = Map.create(m.inner)
                self._inner_maps.append(inner)
                inner_fd = inner.fileno()
            btf_fd = self._btf_fd if (m.key_type_id or m.value_type_id) else None
            try:
                made = Map.create(ms, btf_fd=btf_fd, inner_map_fd=inner_fd)
            except KernelError:
                if btf_fd is None:
                    raise
                made = Map.create(ms, inner_map_fd=inner_fd)   # retry without BTF types
            self.maps[name] = made
            if pin_path is not None:
                from .bpffs import ensure_bpffs, pin
                ensure_bpffs(self.pin_root)
                pin(made.fd, pin_path)
        for name, m in spec.maps.items():
            for key, target in m.contents:
                self.maps[name].update(int(key).to_bytes(4, "little"),
                                       self.maps[target].fileno().to_bytes(4, "little"))

    def _reuse_pinned(self, path, ms):
        from .bpffs import check_pinned_map
        existing = Map.from_pin(path)
        try:
            check_pinned_map(existing.info, ms, path)
        except BaseException:
            existing.close()
            raise
        existing.name = ms.name
        return existing

    def _load_program(self, pname, cache):
        spec = self.spec
        p = spec.programs[pname]
        insns = link.link_program(spec, pname)
        results = []
        if any(i.core is not None for i in insns):
            results = core.relocate_core(insns, spec.btf, kernel_btf(self.kernel_btf_path),
                                         pname, cache)
        insns = link.resolve_map_references(insns, {n: m.fileno() for n, m in self.maps.items()})
        kw = {}
        if self._btf_fd is not None and spec.btf_ext is not None:
            fi, fs = link.func_info_records(insns)
            li, ls = link.line_info_records(insns)
            kw = dict(prog_btf_fd=self._btf_fd, func_info=fi, func_info_rec_size=fs,
                      line_info=li, line_info_rec_size=ls)
        attach_btf_id = self._attach_btf_id(p)
        try:
            prog = load_program(p.type, insns, p.license or spec.license,
                                expected_attach_type=p.expected_attach_type,
                                attach_btf_id=attach_btf_id, name=pname,
                                kernel_version=p.kernel_version, sleepable=p.sleepable, **kw)
        except VerifierError as exc:
            m = None
            for m in _POISON_LINE.finditer(exc.log or ""):
                pass
            why = core.poison_message(results, int(m.group(1))) if m else None
            if why:
                raise VerifierError(f"the verifier rejected program {pname!r}: {why}",
                                    exc.errno, exc.log,
                                    hint="guard the access with bpf_core_field_exists()"
                                    ) from None
            # one line (the verifier's reason); the whole log stays in .log
            first = str(exc).split("\n", 1)[0]
            raise VerifierError(first, exc.errno, exc.log,
                                hint="the full verifier log is in VerifierError.log; "
                                     "the command line prints it with --debug") from exc
        return LoadedProgram(p, prog, results)

    def _attach_btf_id(self, p):
        if p.attach_kind == "tp_btf":
            name, kind = "btf_trace_" + p.attach_to, btfmod.KIND_TYPEDEF
        elif p.attach_kind in ("fentry", "fexit", "fmod_ret", "lsm"):
            name = ("bpf_lsm_" + p.attach_to) if p.attach_kind == "lsm" else p.attach_to
            kind = btfmod.KIND_FUNC
        else:
            return 0
        ids = kernel_btf(self.kernel_btf_path).find(name, kind)
        if not ids:
            raise attachmod.AttachError(
                f"program {p.name!r}: the kernel has no {p.attach_kind} target "
                f"{p.attach_to!r} (no {name} in its BTF)",
                hint="check the name against /sys/kernel/tracing/available_events")
        return ids[0]

    # -- attach and read -------------------------------------------------------
    def attach(self, name=None):
        """Attach one program, or every program; returns the links."""
        self._need_loaded()
        targets = [self.program(name)] if name else list(self.programs.values())
        fresh = []
        try:
            links = []
            for p in targets:
                if p.link is None:
                    fresh.append(p)
                links.append(p.attach())
            return links
        except BaseException:
            for p in fresh:    # all or nothing: detach what this call attached
                p.detach()
            raise

    def detach(self, name=None):
        """Detach one program, or every program (they stay loaded)."""
        for p in ([self.program(name)] if name else list(self.programs.values())):
            p.detach()

    def program(self, name):
        self._need_loaded()
        try:
            return self.programs[name]
        except KeyError:
            raise BPFError(f"no program {name!r} loaded (have: "
                           f"{', '.join(sorted(self.programs)) or 'none'})") from None

    def map(self, name):
        self._need_loaded()
        m = self.maps.get(name)
        if m is None:
            for spec_name, spec in self.spec.maps.items():
                if spec.section == name or spec.name == name:
                    return self.maps[spec_name]
            raise BPFError(f"no map {name!r} in the object (have: "
                           f"{', '.join(sorted(self.maps)) or 'none'})")
        return m

    def typed_map(self, name, tuples=False):
        """The map ``name`` with keys and values decoded through the object's BTF
        (see :class:`TypedMap`); ``tuples`` gives named tuples instead of dicts."""
        m = self.map(name)
        spec = self.spec.maps.get(name) or next(
            s for s in self.spec.maps.values() if s.name == m.name or s.section == name)
        return TypedMap(m, self.spec.btf, spec.key_type_id, spec.value_type_id,
                        tuples=tuples, symbol_offsets=self.spec.symbol_offsets)

    @property
    def btf(self):
        """The object's own BTF (``obj.btf.BTF``), e.g. for ``Layout.of_struct``."""
        return self.spec.btf

    def pin(self, prog_dir, map_dir=None, link_dir=None):
        """Pin every program as ``prog_dir/<name>``, every map as
        ``map_dir/<name>`` (see :func:`pin_name`) and every attached program's link as
        ``link_dir/<program name>`` (dirs must be on a bpffs and exist).
        Returns the paths pinned; on failure, unpins those again."""
        from .bpffs import pin
        self._need_loaded()
        todo = [(os.path.join(prog_dir, pin_name(n)), p.program.fd)
                for n, p in self.programs.items()]
        if map_dir is not None:
            todo += [(os.path.join(map_dir, pin_name(n)), m.fd) for n, m in self.maps.items()
                     if self.spec.maps[n].pinning != PIN_BY_NAME]
        if link_dir is not None:
            for n, p in self.programs.items():
                if p.link is not None:
                    if p.link.link_fd is None:
                        raise attachmod.AttachError(
                            f"program {n!r} is attached without a bpf link, which cannot "
                            "be pinned", hint="this kernel lacks perf links (5.15+)")
                    todo.append((os.path.join(link_dir, pin_name(n)), p.link.link_fd))
        done = []
        try:
            for path, fd in todo:
                pin(fd, path)
                done.append(path)
        except BaseException:
            for path in done:
                try:
                    os.unlink(path)
                except OSError:
                    pass
            raise
        return done

    def perf_buffer(self, map_name, page_count=64, **kw):
        from .perf_buffer import PerfBuffer
        reader = PerfBuffer(self.map(map_name), page_count, **kw)
        self._readers.append(reader)
        return reader

    def ring_buffer(self, map_name, **kw):
        from .ringbuf import RingBuffer
        reader = RingBuffer(self.map(map_name), **kw)
        self._readers.append(reader)
        return reader

    def _need_loaded(self):
        if not self.loaded:
            raise BPFError("the object is not loaded yet", hint="call load() first")

    # -- teardown ----------------------------------------------------------------
    def close(self, keep_links=False):
        """Close everything; ``keep_links`` leaves attached programs attached
        through their pinned links (see :meth:`pin`)."""
        for r in reversed(self._readers):
            r.close()
        self._readers = []
        for p in self.programs.values():
            if keep_links:
                p.release_link()
            p.close()
        self.programs = {}
        for m in list(self.maps.values()) + self._inner_maps:
            m.close()
        self.maps = {}
        self._inner_maps = []
        if self._btf_fd is not None:
            self._btf_fd.close()
            self._btf_fd = None
        self.loaded = False



class TypedMap:
    """A :class:`~pybpfload.kernel.maps.Map` read through BTF.

    Keys and values decode with :class:`~pybpfload.obj.layout.Layout`: structs
    become dicts (or named tuples with ``tuples=True``), integers ints,
    ``char[]`` bytes; a per-CPU map's value is a list with one entry per
    possible CPU; a global data map's value is a dict of its variables.  A
    side without a BTF type decodes as an int when it is 1, 2, 4 or 8 bytes,
    else as bytes.  Keys passed in (``lookup``, ``[]``, ``update``) are raw:
    bytes, or an int packed to the key size.
    """

    def __init__(self, kmap, btf, key_type_id=0, value_type_id=0, tuples=False,
                 symbol_offsets=None):
        self.map = kmap
        self.name = kmap.name
        self.decode_key = _decoder(btf, key_type_id, kmap.key_size, tuples, symbol_offsets)
        one = _decoder(btf, value_type_id, kmap.value_size, tuples, symbol_offsets)
        self._one_value = one
        self.decode_value = (lambda vs: [one(v) for v in vs]) if kmap.is_percpu else one

    def lookup(self, key):
        """The decoded value of raw ``key``, or None."""
        raw = self.map.lookup(key)
        return None if raw is None else self.decode_value(raw)

    get = lookup

    def __getitem__(self, key):
        value = self.lookup(key)
        if value is None:
            raise KeyError(key)
        return value

    def update(self, key, value, flags=0):
        """Write a raw value (bytes, int, or a list of them per CPU)."""
        self.map.update(key, value, flags)

    def keys(self):
        for raw in self.map.keys():
            yield self.decode_key(raw)

    def items(self):
        """(decoded key, decoded value) pairs."""
        for raw_key, raw_value in self.map.items():
            yield self.decode_key(raw_key), self.decode_value(raw_value)

    def values(self):
        for _, value in self.items():
            yield value

    def __iter__(self):
        return self.keys()

    def __repr__(self):
        return f"TypedMap({self.map!r})"


def _decoder(btf, type_id, size, tuples, symbol_offsets):
    """A function bytes -> value for ``type_id`` of ``btf`` (see TypedMap)."""
    from ..obj.layout import Layout
    if btf is not None and type_id:
        tid = btf.skip_mods_and_typedefs(type_id)
        t = btf[tid]
        if t.kind == btfmod.KIND_DATASEC:
            return _datasec_decoder(btf, t, symbol_offsets or {}, tuples)
        layout = Layout.of(btf, tid)
        return layout.decode_tuple if tuples else layout.decode
    if size in (1, 2, 4, 8):
        return lambda raw: int.from_bytes(raw, "little")
    return bytes


def _datasec_decoder(btf, sec, symbol_offsets, tuples):
    from ..obj.layout import Layout
    fields = []
    for v in sec.vars:
        var = btf[v.type]
        off = symbol_offsets.get(var.name, v.offset)
        layout = Layout.of(btf, var.type)
        fields.append((var.name, off, layout.decode_tuple if tuples else layout.decode))

    def decode(raw):
        return {name: fn(raw, off) for name, off, fn in fields if off < len(raw)}
    return decode
