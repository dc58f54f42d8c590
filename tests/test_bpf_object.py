"""The library API end to end: ``pybpfload.open_object`` / ``BPFObject`` with
each tracing flavour, a ring buffer of BTF-decoded events, maps decoded
through BTF (structs, per-CPU values, global data), attach/detach, and
leak-freedom over many load/close cycles."""

import ctypes
import os
import platform
import subprocess
import sys
import time

import pytest

import pybpfload
from pybpfload.kernel import ids
from conftest import OBJECTS, PREBUILT, ROOT

GETPPID_NR = {"x86_64": 110, "aarch64": 173}.get(platform.machine(), 110)


def tracing_object():
    obj = pybpfload.open_object(OBJECTS / "tracing.bpf.o")
    obj.set_variable("target_tgid", os.getpid())
    obj.set_variable("getppid_nr", GETPPID_NR)
    return obj


def test_import_is_cheap_and_lazy():
    code = ("import sys, pybpfload; "
            "print(sorted(m for m in sys.modules if m.startswith(('pybpfload.', 'elftools', "
            "'ctypes'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    assert out.strip() == "[]"
    assert pybpfload.BPFObject.__name__ == "BPFObject"
    assert issubclass(pybpfload.VerifierError, pybpfload.BPFError)
    with pytest.raises(AttributeError):
        pybpfload.no_such_name


@pytest.mark.root
def test_each_tracing_flavour_counts_getppid():
    with tracing_object() as obj:
        obj.load()
        links = [obj.attach(n)[0] for n in ("on_tp", "on_raw_tp", "on_tp_btf")]
        assert [l.kind for l in links] == ["tracepoint", "raw_tracepoint", "tracing"]
        for _ in range(7):
            os.getppid()
        hits = dict(obj.typed_map("hits").items())
        tid = os.getpid()   # the main thread: tid == tgid
        assert hits[0] == {"calls": 7, "last_tid": tid, "flavour": 0}
        assert hits[1] == {"calls": 7, "last_tid": tid, "flavour": 1}
        assert hits[2] == {"calls": 7, "last_tid": tid, "flavour": 2}
        assert hits[3]["calls"] == 0            # the kprobe never attached
        per_cpu = obj.typed_map("percpu_calls")[0]
        assert isinstance(per_cpu, list) and len(per_cpu) == obj.map("percpu_calls").ncpus
        assert sum(per_cpu) == 21
        row = obj.typed_map("hits", tuples=True)[1]
        assert (row.calls, row.flavour) == (7, 1)
        # detach: no more counting
        obj.detach()
        os.getppid()
        assert obj.typed_map("hits")[0]["calls"] == 7


@pytest.mark.root
def test_kprobe_loads_but_cannot_attach_and_attach_all_rolls_back():
    before = set(ids.link_ids())
    with tracing_object() as obj:
        obj.load()
        assert obj.program("on_kprobe").program.type == 2
        with pytest.raises(pybpfload.AttachError, match="no kprobe support"):
            obj.attach("on_kprobe")
        with pytest.raises(pybpfload.AttachError):
            obj.attach()                         # all or nothing
        assert all(p.link is None for p in obj.programs.values())
        assert set(ids.link_ids()) == before


@pytest.mark.root
def test_readme_example_ring_buffer_and_typed_maps():
    layout_names = ("tgid", "tid", "cookie", "comm")
    with pybpfload.open_object(OBJECTS / "ringbuf_emit.bpf.o") as obj:
        obj.set_variable("target_tgid", os.getpid())
        obj.set_variable("cookie", 0xC0FFEE)
        obj.load()
        obj.attach()
        event = pybpfload.Layout.of_struct(obj.btf, "event")
        for _ in range(3):
            os.getppid()
        got = []
        with obj.ring_buffer("events") as events:
            while len(got) < 3:
                batch = events.poll(2000)
                assert batch, "no ring buffer events within 2 s"
                got += [event.decode(raw) for raw in batch]
        assert tuple(got[0]) == layout_names
        assert all(e["tgid"] == os.getpid() and e["cookie"] == 0xC0FFEE for e in got)
        with open("/proc/self/comm", "rb") as f:
            assert got[0]["comm"] == f.read().strip()[:15]
        calls = dict(((k["tgid"], k["tid"]), v) for k, v in obj.typed_map("calls").items())
        assert calls == {(os.getpid(), os.getpid()): {"calls": 3, "cookie_sum": 3 * 0xC0FFEE}}
        assert obj.typed_map(".rodata")[0] == {"target_tgid": os.getpid(), "cookie": 0xC0FFEE}


@pytest.mark.root
def test_global_data_and_untyped_maps_decode():
    with pybpfload.open_object(OBJECTS / "globals.bpf.o") as obj:
        obj.set_variable("threshold", -9)
        obj.load()
        ro = obj.typed_map(".rodata")[0]
        assert ro["threshold"] == -9 and ro["flags_cfg"] == 7 and ro["prefix"] == b"abc"
        assert obj.typed_map(".data")[0] == {"counter": 42}
    with pybpfload.open_object(OBJECTS / "maps.bpf.o", pin_root="/sys/fs/bpf") as obj:
        obj.load(programs=[])
        try:
            sized = obj.typed_map("sized")       # key_size/value_size only: ints
            obj.map("sized").update(2, 99)
            assert sized[2] == 99 and sized[0] == 0
            counts = obj.typed_map("counts")
            obj.map("counts").update((5).to_bytes(4, "little") + (6).to_bytes(4, "little"),
                                     (3).to_bytes(8, "little") + b"comm".ljust(16, b"\0"))
            assert list(counts.items()) == [({"pid": 5, "tid": 6},
                                             {"count": 3, "comm": b"comm"})]
        finally:
            if os.path.exists("/sys/fs/bpf/pinned_lru"):
                os.unlink("/sys/fs/bpf/pinned_lru")


@pytest.mark.root
def test_errors_are_bpferrors_with_one_line():
    with pytest.raises(pybpfload.BPFError, match="already loaded"):
        with tracing_object() as obj:
            obj.load()
            obj.set_variable("target_tgid", 1)
    with pytest.raises(pybpfload.BPFError, match="not loaded"):
        pybpfload.open_object(OBJECTS / "tracing.bpf.o").attach()
    with pybpfload.open_object(OBJECTS / "verifier_reject.bpf.o") as obj:
        with pytest.raises(pybpfload.VerifierError, match="map_value_or_null"):
            obj.load()


def _fds():
    return set(os.listdir("/proc/self/fd"))


def _kernel_ids():
    return (set(ids.prog_ids()), set(ids.map_ids()), set(ids.link_ids()), set(ids.btf_ids()))


def _info(get_fd_cmd, obj_id, size=256):
    """Raw OBJ_GET_INFO_BY_FD bytes of an object by id, or None if it is gone."""
    from pybpfload.kernel import syscall as sc
    ret, _ = sc.bpf_errno(get_fd_cmd, sc.GetIdAttr(start_id=obj_id))
    if ret < 0:
        return None
    try:
        buf = ctypes.create_string_buffer(size)
        attr = sc.InfoByFdAttr(bpf_fd=ret, info_len=size, info=ctypes.addressof(buf))
        return buf.raw if sc.bpf_errno(sc.OBJ_GET_INFO_BY_FD, attr)[0] >= 0 else None
    finally:
        os.close(ret)


def _ours(leftover, path):
    """The leftover ids that belong to objects of ``path``: programs and maps
    by name, links by their program's name, BTF by size (other engineers load
    objects on this machine meanwhile)."""
    from pybpfload.kernel import syscall as sc
    from pybpfload.kernel.maps import sanitize_name
    from pybpfload.obj import btf as btfmod, elf
    spec = elf.read_object_file(path)
    prog_names = {sanitize_name(n) for n in spec.programs}
    map_names = {sanitize_name(n) for n in spec.maps}
    btf_size = len(btfmod.fixup_datasecs(bytes(spec.btf.data), spec.section_sizes,
                                         spec.symbol_offsets)) if spec.btf else -1
    progs, maps, links, btfs = leftover

    def prog_name(pid):
        raw = _info(sc.PROG_GET_FD_BY_ID, pid)
        return raw and raw[64:80].split(b"\0")[0]    # bpf_prog_info.name
    mine_p = {i for i in progs if prog_name(i) in prog_names}
    mine_m = {i for i in maps
              if (_info(sc.MAP_GET_FD_BY_ID, i) or b"\0" * 40)[24:40].split(b"\0")[0]
              in map_names}
    mine_l = {i for i in links
              if prog_name(int.from_bytes((_info(sc.LINK_GET_FD_BY_ID, i) or bytes(12))[8:12],
                                          "little")) in prog_names}
    mine_b = {i for i in btfs
              if int.from_bytes((_info(sc.BTF_GET_FD_BY_ID, i) or bytes(12))[8:12],
                                "little") == btf_size}
    return mine_p, mine_m, mine_l, mine_b


def _settled_leftover(before, path, timeout=10.0):
    """Kernel objects freed late (RCU, deferred work) are waited for."""
    deadline = time.monotonic() + timeout
    while True:
        left = _ours([now - then for now, then in zip(_kernel_ids(), before)], path)
        if not any(left) or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


LEAK_OBJECTS = sorted(p.name for p in OBJECTS.glob("*.bpf.o")
                      if p.name not in ("verifier_reject.bpf.o", "core_reloc.bpf.o",
                                        "core_reloc.target.bpf.o",
                                        "core_kernel_unguarded.bpf.o")) + ["classify.bpf.o"]


@pytest.mark.root
@pytest.mark.parametrize("name", LEAK_OBJECTS)
def test_load_close_cycles_leak_nothing(name):
    """50 load/close cycles (attaching what can attach): no fd and no kernel
    object (prog, map, link, BTF) left behind.  Other engineers' objects come
    and go meanwhile, so only ids that appear during our cycles and stay count."""
    path = PREBUILT / name if name == "classify.bpf.o" else OBJECTS / name
    with pybpfload.open_object(path) as obj:   # warm caches (kernel BTF, probes)
        obj.load()
    fds, before = _fds(), _kernel_ids()
    for i in range(50):
        with pybpfload.open_object(path, pin_root="/sys/fs/bpf") as obj:
            obj.load()
            if i % 2:
                for p in obj.programs.values():
                    try:
                        p.attach()
                    except pybpfload.AttachError:
                        pass
                obj.detach()
                for p in obj.programs.values():
                    p.attach() if p.spec.attach_kind not in ("kprobe", "kretprobe") and \
                        p.spec.attach_to != "nosuch/event" else None
    if name == "maps.bpf.o" and os.path.exists("/sys/fs/bpf/pinned_lru"):
        os.unlink("/sys/fs/bpf/pinned_lru")   # pinned by name on purpose: outlives objects
    assert _fds() == fds
    progs, maps, links, btfs = _settled_leftover(before, path)
    assert (progs, maps, links, btfs) == (set(), set(), set(), set())
