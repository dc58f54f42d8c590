"""Container names (and images) from the runtimes' state on disk.

No runtime CLI is ever run: :class:`RuntimeState` reads the files each
runtime keeps, under roots that can be changed (tests, hosts started with
another ``--root``/``--data-root``):

* docker: ``<docker>/containers/<id>/config.v2.json`` (``Name``, ``Config.Image``)
* podman: ``<podman>/<driver>-containers/containers.json`` (``id``, ``names``, ``image``)
* containerd: ``<containerd>/io.containerd.runtime.v2.task/<ns>/<id>/config.json``
  (OCI spec; Kubernetes ``io.kubernetes.cri.*`` annotations)
* CRI-O: ``<crio>/<driver>-containers/<id>/userdata/config.json``
  (``io.kubernetes.pod.*``/``io.kubernetes.container.name`` annotations)
* runc: ``<runc>/<id>/state.json``; crun: ``<crun>/<id>/status``

Every file is opened one path component at a time from its root with
``O_NOFOLLOW``, so no symlink is ever followed below a root; files must be
regular and under a size limit.  Missing, malformed, oversized or symlinked
files give an empty :class:`ContainerInfo`; nothing here raises.  Answers are
cached in a bounded LRU; answers saying "nothing there" expire after
``negative_ttl`` seconds so containers started later are found.
"""

import json
import os
import stat
import time
from collections import OrderedDict
from dataclasses import dataclass

#: default state roots, by runtime
DEFAULT_ROOTS = {
    "docker": "/var/lib/docker",
    "podman": "/var/lib/containers/storage",
    "containerd": "/run/containerd",
    "cri-o": "/run/containers/storage",
    "runc": "/run/runc",
    "crun": "/run/crun",
}

MAX_FILE = 4 << 20          # one container's state file
MAX_PODMAN_DB = 64 << 20    # podman's containers.json lists every container
MAX_NAME = 255

#: containers/storage keeps its container list under "<driver>-containers"
STORAGE_DRIVER_DIRS = ("overlay-containers", "vfs-containers", "btrfs-containers",
                       "zfs-containers", "devmapper-containers", "aufs-containers")


@dataclass(frozen=True)
class ContainerInfo:
    """What the runtime's state says about a container (empty strings: unknown)."""

    name: str = ""
    image: str = ""
    pod_name: str = ""
    pod_namespace: str = ""
    pod_uid: str = ""
    found: bool = False


EMPTY = ContainerInfo()


def _valid_name(name):
    return (isinstance(name, str) and 0 < len(name) <= MAX_NAME and "/" not in name
            and "\0" not in name and name not in (".", ".."))


def read_state_file(root, parts, limit=MAX_FILE):
    """The bytes of ``root/parts[0]/.../parts[-1]``, or None.

    Each component below ``root`` is opened with O_NOFOLLOW (directories with
    O_DIRECTORY), so a symlink anywhere below the root makes the read fail;
    the file must be regular and at most ``limit`` bytes.
    """
    if not all(_valid_name(p) for p in parts):
        return None
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
    fds = []
    try:
        dirfd = os.open(root, os.O_RDONLY | os.O_CLOEXEC | os.O_DIRECTORY)
        fds.append(dirfd)
        for name in parts[:-1]:
            dirfd = os.open(name, flags | os.O_DIRECTORY, dir_fd=dirfd)
            fds.append(dirfd)
        fd = os.open(parts[-1], flags | os.O_NONBLOCK, dir_fd=dirfd)
        fds.append(fd)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            return None
        data = b""
        while len(data) <= limit:
            chunk = os.read(fd, limit + 1 - len(data))
            if not chunk:
                break
            data += chunk
        return data if len(data) <= limit else None
    except (OSError, ValueError, TypeError):
        return None
    finally:
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass


def _stat_state(root, parts):
    """True when ``root/parts...`` exists as a directory reached without symlinks."""
    if not all(_valid_name(p) for p in parts):
        return False
    fds = []
    try:
        dirfd = os.open(root, os.O_RDONLY | os.O_CLOEXEC | os.O_DIRECTORY)
        fds.append(dirfd)
        for name in parts:
            dirfd = os.open(name, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_DIRECTORY,
                            dir_fd=dirfd)
            fds.append(dirfd)
        return True
    except (OSError, ValueError, TypeError):
        return False
    finally:
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass


def _json(data):
    if not data:
        return None
    try:
        value = json.loads(data.decode("utf-8", "strict"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return value


def _str(value):
    return value if isinstance(value, str) else ""


def _get(obj, *keys):
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


class RuntimeState:
    """Names from the runtimes' state; also the ``lookup`` for
    :func:`pybpfload.tools.containers.identify`.

    ``roots`` overrides entries of :data:`DEFAULT_ROOTS`; ``containerd_namespaces``
    are tried for a containerd id whose namespace is not known.
    """

    def __init__(self, roots=None, cache_size=1024, negative_ttl=2.0, clock=time.monotonic,
                 containerd_namespaces=("k8s.io", "moby", "default")):
        self.roots = dict(DEFAULT_ROOTS)
        if roots:
            self.roots.update(roots)
        self.cache_size = max(int(cache_size), 1)
        self.negative_ttl = negative_ttl
        self.clock = clock
        self.containerd_namespaces = tuple(containerd_namespaces)
        self._cache = OrderedDict()
        self._podman_db = (None, {})

    # -- cache -----------------------------------------------------------
    def _cached(self, key, compute):
        hit = self._cache.get(key)
        now = self.clock()
        if hit is not None:
            value, expires = hit
            if expires is None or now < expires:
                self._cache.move_to_end(key)
                return value
        try:
            value = compute()
        except Exception:   # state files are hostile input: never let them out
            value = None
        positive = bool(value) and value is not EMPTY
        self._cache[key] = (value, None if positive else now + self.negative_ttl)
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return value

    def clear(self):
        self._cache.clear()
        self._podman_db = (None, {})

    # -- lookup for identify() --------------------------------------------
    def __call__(self, name, parent=None):
        """The runtime whose state holds a container ``name`` (under
        containerd namespace ``parent``), or None."""
        return self._cached(("runtime", name, parent), lambda: self._runtime_of(name, parent))

    def _runtime_of(self, name, parent):
        if not _valid_name(name):
            return None
        if parent is not None and _valid_name(parent) and self._containerd_task(parent, name):
            return "containerd"
        # The container's directory is made first thing on create, before its
        # cgroup and its first process exist; state.json/status are written
        # later, so waiting for them would misreport a container's first execs.
        if _stat_state(self.roots["runc"], [name]):
            return "runc"
        if _stat_state(self.roots["crun"], [name]):
            return "crun"
        if _stat_state(self.roots["docker"], ["containers", name]):
            return "docker"
        return None

    def _containerd_task(self, namespace, cid):
        return _stat_state(self.roots["containerd"], ["io.containerd.runtime.v2.task", namespace, cid])

    # -- names --------------------------------------------------------------
    def info(self, runtime, container_id, namespace=None):
        """A :class:`ContainerInfo` for a container; :data:`EMPTY` when unknown."""
        if not runtime or not _valid_name(container_id or ""):
            return EMPTY
        key = ("info", runtime, container_id, namespace)
        return self._cached(key, lambda: self._info(runtime, container_id, namespace)) or EMPTY

    def _info(self, runtime, cid, namespace):
        if runtime == "docker":
            return self._docker(cid)
        if runtime == "podman":
            return self._podman(cid)
        if runtime == "containerd":
            return self._containerd(cid, namespace)
        if runtime == "cri-o":
            return self._crio(cid)
        if runtime in ("runc", "crun"):
            # a bare runc/crun container is named by its id; its directory is
            # there from create on (its state file only later)
            return ContainerInfo(name=cid, found=True) if _stat_state(self.roots[runtime], [cid]) \
                else EMPTY
        if runtime in ("lxc", "systemd-nspawn"):
            return ContainerInfo(name=cid, found=True)
        return EMPTY

    def _docker(self, cid):
        doc = _json(read_state_file(self.roots["docker"], ["containers", cid, "config.v2.json"]))
        if not isinstance(doc, dict):
            return EMPTY
        name = _str(doc.get("Name"))
        if name.startswith("/"):
            name = name[1:]
        labels = _get(doc, "Config", "Labels")
        k8s = _k8s_from(labels if isinstance(labels, dict) else {})
        return ContainerInfo(name=k8s.get("container") or name, image=_str(_get(doc, "Config", "Image")),
                             pod_name=k8s.get("pod", ""), pod_namespace=k8s.get("ns", ""),
                             pod_uid=k8s.get("uid", ""), found=True)

    def _podman(self, cid):
        root = self.roots["podman"]
        for driver_dir in STORAGE_DRIVER_DIRS:
            data = read_state_file(root, [driver_dir, "containers.json"], MAX_PODMAN_DB)
            if data is not None:
                break
        else:
            return EMPTY
        key = hash(data)
        cached_key, table = self._podman_db
        if cached_key != key:
            table = {}
            doc = _json(data)
            if isinstance(doc, list):
                for entry in doc:
                    if isinstance(entry, dict) and isinstance(entry.get("id"), str):
                        names = entry.get("names")
                        name = names[0] if isinstance(names, list) and names and isinstance(names[0], str) else ""
                        table[entry["id"]] = (name, _podman_image(entry))
            self._podman_db = (key, table)
        if cid not in table:
            return EMPTY
        name, image = table[cid]
        return ContainerInfo(name=name, image=image, found=True)

    def _containerd(self, cid, namespace):
        namespaces = [namespace] if namespace else []
        namespaces += [ns for ns in self.containerd_namespaces if ns != namespace]
        for ns in namespaces:
            if not _valid_name(ns or ""):
                continue
            doc = _json(read_state_file(self.roots["containerd"],
                                        ["io.containerd.runtime.v2.task", ns, cid, "config.json"]))
            if not isinstance(doc, dict):
                continue
            ann = doc.get("annotations")
            ann = ann if isinstance(ann, dict) else {}
            k8s = _k8s_from(ann)
            if k8s:
                return ContainerInfo(name=k8s.get("container", ""), image=_str(ann.get("io.kubernetes.cri.image-name")),
                                     pod_name=k8s.get("pod", ""), pod_namespace=k8s.get("ns", ""),
                                     pod_uid=k8s.get("uid", ""), found=True)
            return ContainerInfo(name=cid, found=True)
        return EMPTY

    def _crio(self, cid):
        for driver_dir in STORAGE_DRIVER_DIRS:
            doc = _json(read_state_file(self.roots["cri-o"], [driver_dir, cid, "userdata", "config.json"]))
            if isinstance(doc, dict):
                break
        else:
            return EMPTY
        ann = doc.get("annotations")
        ann = ann if isinstance(ann, dict) else {}
        k8s = _k8s_from(ann)
        return ContainerInfo(name=k8s.get("container") or _str(ann.get("io.kubernetes.cri-o.Name")),
                             image=_str(ann.get("io.kubernetes.cri-o.ImageName")),
                             pod_name=k8s.get("pod", ""), pod_namespace=k8s.get("ns", ""),
                             pod_uid=k8s.get("uid", ""), found=True)


def _podman_image(entry):
    """The image name podman keeps in the entry's metadata (a JSON string), else the image id."""
    meta = entry.get("metadata")
    if isinstance(meta, str) and len(meta) < 65536:
        doc = _json(meta.encode("utf-8", "replace"))
        name = _get(doc, "image-name") if isinstance(doc, dict) else None
        if isinstance(name, str) and name:
            return name
    return _str(entry.get("image"))


def _k8s_from(ann):
    """Kubernetes pod/container names from containerd, CRI-O or docker labels."""
    out = {}
    for key, field_ in (("io.kubernetes.cri.sandbox-name", "pod"),
                        ("io.kubernetes.cri.sandbox-namespace", "ns"),
                        ("io.kubernetes.cri.sandbox-uid", "uid"),
                        ("io.kubernetes.cri.container-name", "container"),
                        ("io.kubernetes.pod.name", "pod"),
                        ("io.kubernetes.pod.namespace", "ns"),
                        ("io.kubernetes.pod.uid", "uid"),
                        ("io.kubernetes.container.name", "container")):
        value = ann.get(key)
        if isinstance(value, str) and value and field_ not in out:
            out[field_] = value
    return out
