"""Fuzz targets: one function per parser, taking arbitrary bytes.

Each target feeds the bytes to one parser and lets through only what that
parser documents: :class:`pybpfload.errors.ParseError` (and subclasses) for
the binary parsers, nothing at all for the cgroup path parser and the runtime
state readers.  Any other exception escaping a target is a bug.  The same
targets run under atheris (``tests/fuzz/run.py``, ``bench/fuzz.py``) and, for
the committed regression corpus and the seeds, in the normal suite
(``tests/test_fuzz_regressions.py``, which needs no atheris).

``seeds(name)`` gives the starting inputs of a target, built from the
committed objects under ``tests/objects`` and ``prebuilt/``.
"""

import json
import os
import pathlib
import shutil
import struct
import tempfile

from pybpfload.errors import ParseError

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
CORPUS = ROOT / "tests" / "fuzz" / "corpus"
SEED_OBJECTS = sorted((ROOT / "tests" / "objects").glob("*.bpf.o")) + \
    sorted((ROOT / "prebuilt").glob("*.bpf.o")) + [ROOT / "tests" / "data" / "btf" / "kinds.bpf.o"]


def _sections(path):
    """{section name: bytes} of an ELF object (pyelftools, seeds only)."""
    from elftools.elf.elffile import ELFFile
    with open(path, "rb") as f:
        elf = ELFFile(f)
        return {s.name: s.data() for s in elf.iter_sections() if s.name in (".BTF", ".BTF.ext")}


_SECTION_CACHE = {}


def _object_sections():
    if not _SECTION_CACHE:
        for p in SEED_OBJECTS:
            _SECTION_CACHE[p.name] = _sections(p)
    return _SECTION_CACHE


def _btfs():
    """Parsed .BTF of every seed object that has both .BTF and .BTF.ext, in a fixed order."""
    from pybpfload.obj.btf import BTF
    out = []
    for name, secs in sorted(_object_sections().items()):
        if ".BTF" in secs:
            out.append((name, BTF.parse(secs[".BTF"]), secs.get(".BTF.ext")))
    return out


_BTFS = []


def btfs():
    if not _BTFS:
        _BTFS.extend(_btfs())
    return _BTFS


# -- the targets ---------------------------------------------------------------

def fuzz_elf(data):
    from pybpfload.obj import elf
    try:
        obj = elf.read_object(data, "fuzz")
    except ParseError as exc:
        _one_line(exc)
        return
    assert isinstance(obj.programs, dict)


def fuzz_btf(data):
    from pybpfload.obj.btf import BTF
    try:
        btf = BTF.parse(data)
    except ParseError as exc:
        _one_line(exc)
        return
    names = set()
    for tid in btf.ids():
        try:
            t = btf[tid]
            names.add(t.name)
            repr(t)
            btf.kind_of(tid)
            btf.kind_flag_of(tid)
            btf.skip_mods_and_typedefs(tid)
            btf.size_of(tid)
        except ParseError as exc:
            _one_line(exc)
        if len(names) > 64:
            break
    for name in list(names)[:16]:
        if isinstance(name, str):
            try:
                btf.find(name)
                btf.find_essential(name)
            except ParseError as exc:
                _one_line(exc)


def fuzz_btf_ext(data):
    """First byte chooses the seed object whose BTF resolves the strings."""
    from pybpfload.obj.btf_ext import parse_btf_ext
    table = btfs()
    if not data:
        return
    _, btf, _ = table[data[0] % len(table)]
    try:
        parse_btf_ext(data[1:], btf)
    except ParseError as exc:
        _one_line(exc)


_RING = struct.Struct("<BQH")    # log2 size, tail, head - tail


def fuzz_perf(data):
    """Header: ring size 2**(3 + b % 10), tail (u64), head - tail (u16); then the ring bytes."""
    from pybpfload.kernel.perf_buffer import decode_perf_records
    if len(data) < _RING.size:
        return
    shift, tail, delta = _RING.unpack_from(data)
    size = 1 << (3 + shift % 10)
    ring = (data[_RING.size:] + bytes(size))[:size]
    out = []
    try:
        lost = decode_perf_records(bytearray(ring), tail, tail + delta, out)
    except ParseError as exc:
        _one_line(exc)
        return
    assert isinstance(lost, int) and lost >= 0
    assert sum(len(r) for r in out) <= delta, "decoded more payload than the ring held"


def fuzz_ringbuf(data):
    """Header as :func:`fuzz_perf`; an odd size byte decodes a doubly mapped ring."""
    from pybpfload.kernel.ringbuf import decode_ringbuf_records
    if len(data) < _RING.size:
        return
    shift, cons, delta = _RING.unpack_from(data)
    size = 1 << (3 + (shift >> 1) % 10)
    ring = (data[_RING.size:] + bytes(size))[:size]
    if shift & 1:
        ring = ring + ring
    out = []
    try:
        new_cons, discarded = decode_ringbuf_records(bytearray(ring), size, cons, cons + delta, out)
    except ParseError as exc:
        _one_line(exc)
        return
    assert cons <= new_cons <= cons + delta, "consumer moved outside [cons, prod]"
    assert discarded >= 0
    assert sum(len(r) for r in out) <= delta, "decoded more payload than the ring held"


class _Lookup:
    """A lookup confirming names that end in an even hex digit (a pure function)."""

    def __call__(self, name, parent=None):
        if name and name[-1] in "02468ace":
            return "containerd" if parent else "runc"
        return None


def fuzz_identify(data):
    """Bytes as /proc/<pid>/cgroup text, as lines, as tuples; must never raise."""
    from pybpfload.tools.containers import RUNTIMES, classify_process, identify
    lookup = _Lookup()
    text = data.decode("utf-8", "surrogateescape")
    lines = text.split("\n")
    for cg_input in (data, text, lines, [(0, "", ln) for ln in lines],
                     [(i, "cpu", ln) for i, ln in enumerate(lines)]):
        for lk in (None, lookup):
            ident = identify(cg_input, lk)
            cls = classify_process(ident, len(data) % 3, text[:16])
            assert cls.type in ("container", "host")
            if ident.is_container:
                assert ident.container_id or ident.pod_uid
            if ident.container_id:
                assert ident.runtime in RUNTIMES, ident


#: files of each runtime's state that fuzz_runtime_state writes the input into
STATE_FILES = {
    "docker": ("docker", ["containers", "{id}", "config.v2.json"]),
    "podman": ("podman", ["overlay-containers", "containers.json"]),
    "containerd": ("containerd", ["io.containerd.runtime.v2.task", "k8s.io", "{id}", "config.json"]),
    "cri-o": ("cri-o", ["overlay-containers", "{id}", "userdata", "config.json"]),
    "runc": ("runc", ["{id}", "state.json"]),
    "crun": ("crun", ["{id}", "status"]),
}
FUZZ_ID = "0123456789abcdef" * 4

_TREE = []


def _tree():
    if not _TREE:
        base = tempfile.mkdtemp(prefix="pybpf-fuzz-state-", dir=os.environ.get("PYBPF_FUZZ_TMP"))
        roots = {}
        for rt, (sub, parts) in STATE_FILES.items():
            roots[rt] = os.path.join(base, sub)
            os.makedirs(os.path.join(roots[rt], *[p.format(id=FUZZ_ID) for p in parts[:-1]]),
                        exist_ok=True)
        _TREE.extend([base, roots])
    return _TREE


def cleanup():
    """Remove the temp tree of :func:`fuzz_runtime_state` (call once at the end)."""
    if _TREE:
        shutil.rmtree(_TREE[0], ignore_errors=True)
        _TREE.clear()


def fuzz_runtime_state(data):
    """First byte picks the runtime; the rest is its state file.  Must never raise."""
    from pybpfload.tools.runtime_state import EMPTY, ContainerInfo, RuntimeState
    if not data:
        return
    runtimes = sorted(STATE_FILES)
    rt = runtimes[data[0] % len(runtimes)]
    _, roots = _tree()
    _, parts = STATE_FILES[rt]
    path = os.path.join(roots[rt], *[p.format(id=FUZZ_ID) for p in parts])
    with open(path, "wb") as f:
        f.write(data[1:])
    try:
        state = RuntimeState(roots)
        info = state.info(rt, FUZZ_ID, "k8s.io" if rt == "containerd" else None)
        assert isinstance(info, ContainerInfo)
        for field in ("name", "image", "pod_name", "pod_namespace", "pod_uid"):
            assert isinstance(getattr(info, field), str), field
        found = state(FUZZ_ID, "k8s.io")
        assert found is None or isinstance(found, str)
        if rt == "podman":    # podman's list names containers by the ids it holds
            doc = _loads(data[1:])
            if isinstance(doc, list):
                for entry in doc[:8]:
                    if isinstance(entry, dict) and isinstance(entry.get("id"), str):
                        assert isinstance(state.info("podman", entry["id"]), ContainerInfo)
        assert info is EMPTY or info.found
    finally:
        os.unlink(path)


def _loads(b):
    try:
        return json.loads(b.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


def fuzz_layout(data):
    """Byte 0 even: a seed BTF, type id from bytes 1-2, the rest decoded.
    Byte 0 odd: a u16 length, then that much BTF (fuzzed), then the value."""
    from pybpfload.obj.btf import BTF
    from pybpfload.obj.layout import Layout
    if len(data) < 3:
        return
    if data[0] & 1:
        n = struct.unpack_from("<H", data, 1)[0]
        try:
            btf = BTF.parse(data[3:3 + n])
        except ParseError as exc:
            _one_line(exc)
            return
        value = data[3 + n:]
        ids = list(btf.ids())[:32]
    else:
        table = btfs()
        _, btf, _ = table[(data[0] >> 1) % len(table)]
        ids = [1 + struct.unpack_from("<H", data, 1)[0] % max(len(btf) - 1, 1)]
        value = data[3:]
    for tid in ids:
        try:
            layout = Layout.of(btf, tid)
            v = layout.decode(value)
            layout.decode_tuple(value)
            if layout.size <= len(value):
                layout.decode(value + b"\0" * 8, 8 if len(value) >= layout.size + 8 else 0)
        except ParseError as exc:
            _one_line(exc)
            continue
        del v


def _one_line(exc):
    msg = str(exc)
    assert msg and "\n" not in msg, f"error message is not one line: {msg!r}"


TARGETS = {
    "elf": fuzz_elf,
    "btf": fuzz_btf,
    "btf_ext": fuzz_btf_ext,
    "perf": fuzz_perf,
    "ringbuf": fuzz_ringbuf,
    "identify": fuzz_identify,
    "runtime_state": fuzz_runtime_state,
    "layout": fuzz_layout,
}


# -- seeds -------------------------------------------------------------------------

def _perf_seed():
    rec = struct.pack("<IHHI", 9, 0, 24, 8) + b"payload!" + bytes(4)
    lost = struct.pack("<IHHQQ", 2, 0, 24, 7, 3)
    ring = (rec + lost).ljust(64, b"\0")
    return [_RING.pack(3, 0, len(rec + lost)) + ring,
            _RING.pack(3, 48, 48) + ring]          # wraps the end


def _ringbuf_seed():
    rec = struct.pack("<II", 5, 0) + b"hello\0\0\0"
    disc = struct.pack("<II", (1 << 30) | 3, 0) + b"abc\0\0\0\0\0"
    ring = (rec + disc).ljust(64, b"\0")
    return [_RING.pack(6, 0, 32) + ring, _RING.pack(7, 0, 32) + ring,
            _RING.pack(6, 48, 32) + ring]


def _identify_seeds():
    cid = "4f" * 32
    return [s.encode() for s in (
        f"0::/docker/{cid}\n",
        f"12:cpu,cpuacct:/kubepods/besteffort/pod0123abcd-0000-1111-2222-333344445555/{cid}\n"
        "0::/\n",
        f"0::/system.slice/docker-{cid}.scope\n",
        f"0::/machine.slice/libpod-conmon-{cid}.scope\n",
        "0::/k8s.io/" + cid + "\n", "0::/lxc.payload.web\n", "0::/machine.slice/machine-a\\x2db.scope\n",
        f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0123abcd_0000_1111_"
        f"2222_333344445555.slice/cri-containerd-{cid}.scope\n", "...docker/" + cid,
        "0::/user.slice\n1:name=systemd:/init.scope\n")]


def _state_seeds():
    cid = FUZZ_ID
    runtimes = sorted(STATE_FILES)
    docs = {
        "docker": {"Name": "/web", "Config": {"Image": "busybox", "Labels": {
            "io.kubernetes.pod.name": "p", "io.kubernetes.container.name": "c"}}},
        "podman": [{"id": cid, "names": ["web"], "image": "abc",
                    "metadata": json.dumps({"image-name": "busybox:latest"})}],
        "containerd": {"annotations": {"io.kubernetes.cri.container-name": "c",
                                       "io.kubernetes.cri.image-name": "busybox"}},
        "cri-o": {"annotations": {"io.kubernetes.container.name": "c",
                                  "io.kubernetes.cri-o.ImageName": "busybox"}},
        "runc": {"id": cid, "init_process_pid": 1},
        "crun": {"id": cid, "pid": 1},
    }
    return [bytes([runtimes.index(rt)]) + json.dumps(doc).encode() for rt, doc in docs.items()]


def seeds(name):
    """Starting inputs of target ``name``."""
    objs = _object_sections()
    if name == "elf":
        return [p.read_bytes() for p in SEED_OBJECTS]
    if name == "btf":
        return [s[".BTF"] for s in objs.values() if ".BTF" in s]
    if name == "btf_ext":
        return [bytes([i]) + ext for i, (_, _, ext) in enumerate(btfs()) if ext]
    if name == "perf":
        return _perf_seed()
    if name == "ringbuf":
        return _ringbuf_seed()
    if name == "identify":
        return _identify_seeds()
    if name == "runtime_state":
        return _state_seeds()
    if name == "layout":
        out = []
        for i, (_, btf, _) in enumerate(btfs()):
            for tid in list(btf.ids())[:40:4]:
                out.append(bytes([2 * i]) + struct.pack("<H", tid - 1) + bytes(range(64)))
            raw = btf.data if isinstance(btf.data, bytes) else bytes(btf.data)
            if len(raw) < 0x10000:
                out.append(bytes([1]) + struct.pack("<H", len(raw)) + raw + bytes(range(64)))
        return out
    raise KeyError(name)


def corpus(name):
    """The committed regression inputs of target ``name`` (path, bytes)."""
    d = CORPUS / name
    if not d.is_dir():
        return []
    return [(p, p.read_bytes()) for p in sorted(d.iterdir()) if p.is_file()]
