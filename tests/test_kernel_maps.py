"""Maps against the real kernel: CRUD, iteration, batch ops, per-CPU values,
freeze, info, pins, ids.  Every test closes what it creates."""

import os
import struct

import pytest

from pybpfload.errors import KernelError, PinError
from pybpfload.kernel import bpffs, ids
from pybpfload.kernel.features import possible_cpus
from pybpfload.kernel.maps import Map
from pybpfload.kernel.syscall import BPF_EXIST, BPF_NOEXIST
from pybpfload.obj.spec import MAP_TYPES, MapSpec

pytestmark = pytest.mark.root


def spec(kind, key=4, value=8, entries=16, name="t", **kw):
    return MapSpec(name, MAP_TYPES[kind], key, value, entries, **kw)


def u64(v):
    return struct.pack("<Q", v)


def test_hash_crud_and_iteration():
    with Map.create(spec("hash")) as m:
        assert m.lookup(1) is None
        m.update(1, u64(10))
        m.update(2, u64(20), BPF_NOEXIST)
        assert m.lookup(1) == u64(10)
        with pytest.raises(KernelError, match="BPF_NOEXIST"):
            m.update(1, u64(11), BPF_NOEXIST)
        with pytest.raises(KernelError, match="BPF_EXIST"):
            m.update(3, u64(30), BPF_EXIST)
        m.update(1, u64(11), BPF_EXIST)
        assert dict(m.items()) == {struct.pack("<I", 1): u64(11), struct.pack("<I", 2): u64(20)}
        assert sorted(m.keys()) == [struct.pack("<I", 1), struct.pack("<I", 2)]
        assert m.delete(1) is True
        assert m.delete(1) is False
        assert m.lookup_and_delete(2) == u64(20)
        assert list(m.keys()) == []


def test_wrong_sizes_raise_kernel_error():
    with Map.create(spec("array")) as m:
        with pytest.raises(KernelError, match="key of 3 bytes"):
            m.lookup(b"abc")
        with pytest.raises(KernelError, match="value of 2 bytes"):
            m.update(0, b"ab")
        with pytest.raises(KernelError, match="beyond max_entries"):
            m.update(99, u64(1))


def test_invalid_spec_gives_one_line_error():
    with pytest.raises(KernelError) as exc:
        Map.create(spec("array", key=8))      # arrays need 4-byte keys
    assert "\n" not in str(exc.value) and "creating map" in str(exc.value)


def test_array_batch_lookup_matches_items():
    with Map.create(spec("array", entries=100)) as m:
        for i in range(100):
            m.update(i, u64(i * 3))
        got = m.lookup_batch(batch_size=7)
        assert len(got) == 100
        assert dict(got) == dict(m.items())
        assert got[42] == (struct.pack("<I", 42), u64(126))


def test_hash_lookup_and_delete_batch_empties_map():
    with Map.create(spec("hash", entries=1000)) as m:
        for i in range(500):
            m.update(i, u64(i))
        got = m.lookup_and_delete_batch(batch_size=16)
        assert sorted(struct.unpack("<I", k)[0] for k, _ in got) == list(range(500))
        assert all(struct.unpack("<Q", v)[0] == struct.unpack("<I", k)[0] for k, v in got)
        assert list(m.keys()) == []


def test_batch_fallback_when_kernel_refuses(monkeypatch):
    from pybpfload.kernel import syscall as sc
    with Map.create(spec("hash")) as m:
        m.update(5, u64(50))
        real = sc.bpf_errno

        def no_batch(cmd, attr):
            if cmd in (sc.MAP_LOOKUP_BATCH, sc.MAP_LOOKUP_AND_DELETE_BATCH):
                return -1, 22   # EINVAL, as kernels without batch ops answer
            return real(cmd, attr)
        monkeypatch.setattr(sc, "bpf_errno", no_batch)
        assert m.lookup_batch() == [(struct.pack("<I", 5), u64(50))]
        assert m.lookup_and_delete_batch() == [(struct.pack("<I", 5), u64(50))]
        assert m.lookup(5) is None


def test_percpu_values_are_lists_per_cpu():
    ncpu = len(possible_cpus())
    with Map.create(spec("percpu_array", value=4, entries=2)) as m:
        assert m.stride == 8    # value size rounded up to 8
        vals = [struct.pack("<I", 100 + c) for c in range(ncpu)]
        m.update(1, vals)
        assert m.lookup(1) == vals
        assert m.lookup(0) == [b"\0" * 4] * ncpu
        batch = dict(m.lookup_batch())
        assert batch[struct.pack("<I", 1)] == vals
        with pytest.raises(KernelError, match="per-CPU values"):
            m.update(0, vals[:1] * (ncpu + 1))
    with Map.create(spec("percpu_hash", value=12)) as m:
        m.update(7, b"x" * 12)       # one value replicated to every CPU
        assert m.lookup(7) == [b"x" * 12] * ncpu


def test_freeze_blocks_user_writes():
    with Map.create(spec("array", data=bytearray(8), section=".rodata",
                         entries=1, freeze=True)) as m:
        assert m.frozen
        with pytest.raises(KernelError, match="frozen"):
            m.update(0, u64(1))
        assert m.lookup(0) == u64(0)


def test_info_and_open_by_id():
    with Map.create(spec("hash", name="a-very-long-map-name!")) as m:
        info = m.info
        assert info.name == "a_very_long_map"      # sanitized, 15 chars
        assert (info.type, info.key_size, info.value_size, info.max_entries) == (1, 4, 8, 16)
        assert info.id in ids.map_ids()
        m.update(3, u64(33))
        with Map.from_id(info.id) as again:
            assert again.lookup(3) == u64(33)


def test_pin_open_and_verify(tmp_path):
    root = bpffs.ensure_bpffs()
    path = os.path.join(root, f"pybpfload_test_{os.getpid()}")
    s = spec("hash")
    m = Map.create(s)
    try:
        bpffs.pin(m.fd, path)
        with pytest.raises(PinError, match="already pinned"):
            bpffs.pin(m.fd, path)
        m.update(9, u64(99))
        with Map.from_pin(path) as pinned:
            assert pinned.lookup(9) == u64(99)
            bpffs.check_pinned_map(pinned.info, s, path)
            bad = spec("hash", entries=32)
            with pytest.raises(PinError, match="max_entries 16 != 32"):
                bpffs.check_pinned_map(pinned.info, bad, path)
    finally:
        m.close()
        if os.path.exists(path):
            os.unlink(path)
    with pytest.raises(PinError, match="cannot open pinned"):
        bpffs.get_pinned(path)


def test_closing_maps_leaves_no_ids_or_fds():
    before_ids, before_fds = set(ids.map_ids()), len(os.listdir("/proc/self/fd"))
    maps = [Map.create(spec(k)) for k in ("hash", "array", "percpu_hash", "lru_hash")]
    assert len(set(ids.map_ids()) - before_ids) == 4
    for m in maps:
        m.close()
    assert len(os.listdir("/proc/self/fd")) == before_fds
    # map ids are freed asynchronously (RCU): wait a little
    import time
    for _ in range(100):
        if not set(ids.map_ids()) - before_ids:
            break
        time.sleep(0.02)
    assert not set(ids.map_ids()) - before_ids


def test_memlock_probe_matches_the_kernel():
    """Probe by creating a map under RLIMIT_MEMLOCK 0: this kernel (memcg
    accounting) does not charge memlock, so nothing is raised."""
    import resource
    from pybpfload.kernel import features
    from pybpfload.kernel.memlock import ensure_memlock
    before = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    charged = features.memlock_charged()
    assert resource.getrlimit(resource.RLIMIT_MEMLOCK) == before     # probe restored it
    assert ensure_memlock() is charged
    if not charged:
        assert resource.getrlimit(resource.RLIMIT_MEMLOCK) == before
