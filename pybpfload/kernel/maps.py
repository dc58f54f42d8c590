"""BPF maps: create from a :class:`~pybpfload.obj.spec.MapSpec`, read and write.

Keys and values are bytes (an ``int`` key is accepted and packed little-endian
to ``key_size``).  Per-CPU maps take and return one value per possible CPU,
each padded to a multiple of 8 bytes as the kernel lays them out; lookups
return a list of ``value_size``-byte values, index = CPU number.
"""

import ctypes
import errno as _errno
import struct

from ..errors import KernelError, NotSupportedError
from ..obj.spec import MAP_TYPE_NAMES, PERCPU_MAP_TYPES, MapSpec
from . import syscall as sc
from .fd import FD, OwnsFD

__all__ = ["Map", "MapInfo", "map_info"]


class MapInfo:
    """``struct bpf_map_info`` as returned by OBJ_GET_INFO_BY_FD."""

    _STRUCT = struct.Struct("<6I16sIIQQIIIIQ")
    __slots__ = ("type", "id", "key_size", "value_size", "max_entries", "flags",
                 "name", "btf_id", "btf_key_type_id", "btf_value_type_id", "map_extra")

    def __init__(self, raw):
        (self.type, self.id, self.key_size, self.value_size, self.max_entries,
         self.flags, name, _ifindex, _vmlinux_vt, _dev, _ino, self.btf_id,
         self.btf_key_type_id, self.btf_value_type_id, _pad,
         self.map_extra) = self._STRUCT.unpack_from(raw)
        self.name = name.split(b"\0", 1)[0].decode("ascii", "replace")

    @property
    def type_name(self):
        return MAP_TYPE_NAMES.get(self.type, str(self.type))

    def __repr__(self):
        return (f"MapInfo(id={self.id}, name={self.name!r}, type={self.type_name}, "
                f"key_size={self.key_size}, value_size={self.value_size}, "
                f"max_entries={self.max_entries}, flags={self.flags:#x})")


def map_info(fd):
    """Query ``struct bpf_map_info`` of a map fd."""
    buf = ctypes.create_string_buffer(MapInfo._STRUCT.size)
    attr = sc.InfoByFdAttr(bpf_fd=int(fd), info_len=len(buf), info=ctypes.addressof(buf))
    sc.bpf(sc.OBJ_GET_INFO_BY_FD, attr, "reading map info")
    return MapInfo(buf.raw)


def sanitize_name(name):
    """An object name the kernel accepts: ≤15 chars of [A-Za-z0-9_.]."""
    out = "".join(c if (c.isascii() and (c.isalnum() or c in "_.")) else "_" for c in str(name))
    return out[:15].encode("ascii")


class Map(OwnsFD):
    """A BPF map held open by this object (closes with it)."""

    def __init__(self, fd, info=None, name=None):
        self.fd = fd if isinstance(fd, FD) else FD(fd)
        self.info = info or map_info(self.fd)
        self.type = self.info.type
        self.key_size = self.info.key_size
        self.value_size = self.info.value_size
        self.max_entries = self.info.max_entries
        self.flags = self.info.flags
        self.name = name or self.info.name
        self.is_percpu = self.type in PERCPU_MAP_TYPES
        if self.is_percpu:
            from .features import possible_cpus
            self.ncpus = len(possible_cpus())
            self.stride = (self.value_size + 7) & ~7
            self._value_buf_size = self.stride * self.ncpus
        else:
            self.ncpus = 1
            self.stride = self.value_size
            self._value_buf_size = self.value_size
        self._key = ctypes.create_string_buffer(max(self.key_size, 1))
        self._next = ctypes.create_string_buffer(max(self.key_size, 1))
        self._value = ctypes.create_string_buffer(max(self._value_buf_size, 1))
        self._attr = sc.MapElemAttr()
        self.frozen = False

    # -- creation and opening -------------------------------------------------
    @classmethod
    def create(cls, spec, btf_fd=None, key_type_id=None, value_type_id=None,
               inner_map_fd=None, vmlinux_value_type_id=0):
        """Create a map from a :class:`MapSpec`; BTF ids default to the spec's."""
        if not isinstance(spec, MapSpec):
            raise KernelError(f"Map.create needs a MapSpec, got {type(spec).__name__}")
        attr = sc.MapCreateAttr(
            map_type=spec.type, key_size=spec.key_size, value_size=spec.value_size,
            max_entries=spec.max_entries, map_flags=spec.flags,
            numa_node=spec.numa_node, map_name=sanitize_name(spec.name))
        if inner_map_fd is not None:
            attr.inner_map_fd = int(inner_map_fd)
        if btf_fd is not None:
            kid = spec.key_type_id if key_type_id is None else key_type_id
            vid = spec.value_type_id if value_type_id is None else value_type_id
            if kid or vid or vmlinux_value_type_id:
                attr.btf_fd = int(btf_fd)
                attr.btf_key_type_id = kid
                attr.btf_value_type_id = vid
                attr.btf_vmlinux_value_type_id = vmlinux_value_type_id
        what = f"creating map {spec.name!r} ({spec.type_name})"
        fd = FD(sc.bpf(sc.MAP_CREATE, attr, what,
                       hint="check the map type, sizes and flags are valid for this kernel"))
        m = cls(fd, name=spec.name)
        if spec.data is not None:
            m.update(0, bytes(spec.data))
        if spec.freeze:
            m.freeze()
        return m

    @classmethod
    def from_pin(cls, path):
        """Open a map pinned in bpffs."""
        from .bpffs import get_pinned
        return cls(get_pinned(path))

    @classmethod
    def from_id(cls, map_id):
        """Open a loaded map by its id."""
        attr = sc.GetIdAttr(start_id=map_id)
        return cls(FD(sc.bpf(sc.MAP_GET_FD_BY_ID, attr, f"opening map id {map_id}")))

    def __repr__(self):
        return (f"Map({self.name!r}, type={MAP_TYPE_NAMES.get(self.type, self.type)}, "
                f"fd={self.fd!r})")

    # -- conversions -----------------------------------------------------------
    def _key_bytes(self, key):
        if isinstance(key, int):
            try:
                return key.to_bytes(self.key_size, "little", signed=key < 0)
            except OverflowError:
                raise KernelError(f"key {key} does not fit the {self.key_size}-byte key "
                                  f"of map {self.name!r}") from None
        key = bytes(key)
        if len(key) != self.key_size:
            raise KernelError(f"key of {len(key)} bytes for map {self.name!r} whose keys "
                              f"are {self.key_size} bytes")
        return key

    def _value_bytes(self, value):
        """Bytes for the kernel: per-CPU maps take a list (or one value for all)."""
        if self.is_percpu:
            values = value if isinstance(value, (list, tuple)) else [value] * self.ncpus
            if len(values) != self.ncpus:
                raise KernelError(f"{len(values)} per-CPU values for map {self.name!r} "
                                  f"on {self.ncpus} possible CPUs")
            out = bytearray(self._value_buf_size)
            for i, v in enumerate(values):
                v = self._one_value(v)
                out[i * self.stride:i * self.stride + self.value_size] = v
            return bytes(out)
        return self._one_value(value)

    def _one_value(self, value):
        if isinstance(value, int):
            return value.to_bytes(self.value_size, "little", signed=value < 0)
        value = bytes(value)
        if len(value) != self.value_size:
            raise KernelError(f"value of {len(value)} bytes for map {self.name!r} whose "
                              f"values are {self.value_size} bytes")
        return value

    def _split_value(self, raw):
        if self.is_percpu:
            s, n = self.stride, self.value_size
            return [bytes(raw[i * s:i * s + n]) for i in range(self.ncpus)]
        return bytes(raw[:self.value_size])

    # -- element operations ----------------------------------------------------
    def _elem(self, cmd, key, value_addr, flags, what):
        attr = self._attr
        attr.map_fd = self.fd.fileno()
        if key is None:
            attr.key = 0
        else:
            self._key.raw = key if len(key) == len(self._key) else key.ljust(len(self._key), b"\0")
            attr.key = ctypes.addressof(self._key)
        attr.value = value_addr
        attr.flags = flags
        return sc.bpf_errno(cmd, attr)

    def lookup(self, key, flags=0):
        """Value for ``key`` (a list per CPU for per-CPU maps), or None if absent."""
        k = self._key_bytes(key)
        ret, err = self._elem(sc.MAP_LOOKUP_ELEM, k, ctypes.addressof(self._value), flags, "")
        if ret < 0:
            if err == _errno.ENOENT:
                return None
            sc.raise_errno(err, f"looking up a key in map {self.name!r}")
        return self._split_value(self._value.raw)

    def update(self, key, value, flags=sc.BPF_ANY):
        """Set ``key`` to ``value`` (flags: BPF_ANY, BPF_NOEXIST, BPF_EXIST)."""
        k = self._key_bytes(key)
        v = ctypes.create_string_buffer(self._value_bytes(value), max(self._value_buf_size, 1))
        ret, err = self._elem(sc.MAP_UPDATE_ELEM, k, ctypes.addressof(v), flags, "")
        if ret < 0:
            hint = None
            if err == _errno.EEXIST:
                hint = "the key exists and BPF_NOEXIST was given"
            elif err == _errno.ENOENT:
                hint = "the key is absent and BPF_EXIST was given"
            elif err == _errno.E2BIG:
                hint = "the map is full or the key is beyond max_entries"
            elif err == _errno.EPERM and (self.frozen or self.flags & (1 << 3)):
                raise KernelError(f"updating map {self.name!r}: the map is frozen or "
                                  "read-only from user space", err,
                                  hint="write it before freezing, or from the program")
            sc.raise_errno(err, f"updating map {self.name!r}", hint)

    def delete(self, key):
        """Remove ``key``; return False if it was absent."""
        k = self._key_bytes(key)
        ret, err = self._elem(sc.MAP_DELETE_ELEM, k, 0, 0, "")
        if ret < 0:
            if err == _errno.ENOENT:
                return False
            sc.raise_errno(err, f"deleting from map {self.name!r}")
        return True

    def lookup_and_delete(self, key):
        """Pop ``key`` (hash maps; queues/stacks with key None); None if absent."""
        k = None if key is None else self._key_bytes(key)
        ret, err = self._elem(sc.MAP_LOOKUP_AND_DELETE_ELEM, k,
                              ctypes.addressof(self._value), 0, "")
        if ret < 0:
            if err == _errno.ENOENT:
                return None
            sc.raise_errno(err, f"lookup-and-delete in map {self.name!r}")
        return self._split_value(self._value.raw)

    def get_next_key(self, key=None):
        """The key after ``key`` (the first key when None), or None at the end."""
        attr = self._attr
        attr.map_fd = self.fd.fileno()
        if key is None:
            attr.key = 0
        else:
            self._key.raw = self._key_bytes(key)
            attr.key = ctypes.addressof(self._key)
        attr.value = ctypes.addressof(self._next)
        attr.flags = 0
        ret, err = sc.bpf_errno(sc.MAP_GET_NEXT_KEY, attr)
        if ret < 0:
            if err == _errno.ENOENT:
                return None
            sc.raise_errno(err, f"iterating map {self.name!r}")
        return self._next.raw[:self.key_size]

    def keys(self):
        """Iterate the keys (bytes).  Concurrent deletes may restart a hash walk."""
        key = self.get_next_key(None)
        while key is not None:
            yield key
            key = self.get_next_key(key)

    def items(self):
        """Iterate (key, value) pairs, skipping keys deleted meanwhile."""
        for key in self.keys():
            value = self.lookup(key)
            if value is not None:
                yield key, value

    def __iter__(self):
        return self.keys()

    def freeze(self):
        """Make the map read-only for user space (BPF_MAP_FREEZE)."""
        attr = sc.MapFreezeAttr(map_fd=self.fd.fileno())
        sc.bpf(sc.MAP_FREEZE, attr, f"freezing map {self.name!r}")
        self.frozen = True

    # -- batch operations --------------------------------------------------------
    def lookup_batch(self, batch_size=256):
        """All (key, value) pairs, with BPF_MAP_LOOKUP_BATCH where the kernel and map
        type support it, else by iteration."""
        return self._batch(sc.MAP_LOOKUP_BATCH, batch_size)

    def lookup_and_delete_batch(self, batch_size=256):
        """Pop all (key, value) pairs: the batch command where supported, else
        per-key lookup + delete (not atomic against concurrent updates)."""
        return self._batch(sc.MAP_LOOKUP_AND_DELETE_BATCH, batch_size)

    def _batch(self, cmd, batch_size):
        try:
            return self._batch_kernel(cmd, batch_size)
        except NotSupportedError:
            pass
        except KernelError as exc:
            if exc.errno != _errno.EINVAL:
                raise
        out = []
        if cmd == sc.MAP_LOOKUP_AND_DELETE_BATCH:
            for key in list(self.keys()):
                value = self.lookup(key)
                if value is not None and self.delete(key):
                    out.append((key, value))
        else:
            out = list(self.items())
        return out

    def _batch_kernel(self, cmd, batch_size):
        batch_size = max(1, min(batch_size, self.max_entries or 1))
        ks, vs = max(self.key_size, 1), max(self._value_buf_size, 1)
        keys = ctypes.create_string_buffer(ks * batch_size)
        values = ctypes.create_string_buffer(vs * batch_size)
        tokens = (ctypes.create_string_buffer(max(ks, 8)), ctypes.create_string_buffer(max(ks, 8)))
        attr = sc.MapBatchAttr(map_fd=self.fd.fileno(), keys=ctypes.addressof(keys),
                               values=ctypes.addressof(values))
        out = []
        first = True
        i = 0
        while True:
            attr.in_batch = 0 if first else ctypes.addressof(tokens[i])
            attr.out_batch = ctypes.addressof(tokens[i ^ 1])
            attr.count = batch_size
            ret, err = sc.bpf_errno(cmd, attr)
            if ret < 0 and err == _errno.ENOSPC and attr.count == 0:
                # a hash bucket holds more entries than fit: grow, redo this batch
                batch_size *= 2
                keys = ctypes.create_string_buffer(ks * batch_size)
                values = ctypes.create_string_buffer(vs * batch_size)
                attr.keys, attr.values = ctypes.addressof(keys), ctypes.addressof(values)
                continue
            if ret < 0 and err != _errno.ENOENT:
                sc.raise_errno(err, f"batch operation on map {self.name!r}")
            n = attr.count
            kraw, vraw = keys.raw, values.raw
            for j in range(n):
                out.append((kraw[j * ks:j * ks + self.key_size],
                            self._split_value(vraw[j * vs:(j + 1) * vs])))
            if ret < 0:   # ENOENT: that was the last batch
                return out
            first = False
            i ^= 1
