"""Which container, if any, a process belongs to, from its cgroup paths.

:func:`identify` turns the cgroup paths of one process (the lines of
``/proc/<pid>/cgroup``, plain paths, or the tail of a path reported by a BPF
program, whose top may be cut off) into an :class:`Identity`: the container
runtime, the container id, the Kubernetes pod UID and, for the runtime's own
helper processes (conmon, the LXC monitor, the nspawn supervisor), the
helper's role.

It is a pure function of the paths.  Layouts that do not name their runtime
(containerd's native ``/<namespace>/<id>``, bare runc or crun ``/<id>``, docker
with a custom ``--cgroup-parent``) are confirmed through an injectable
``lookup(name, parent) -> runtime or None`` that looks at the runtimes' state
on disk (:class:`pybpfload.tools.runtime_state.RuntimeState` is one); without
a lookup they are not reported as containers.

:func:`classify_process` then combines an identity with the process's PID
namespace level and command name into the ``type`` the tools print.
"""

import re
from dataclasses import dataclass
from typing import Callable, Optional

#: runtime names reported in :attr:`Identity.runtime`
RUNTIMES = ("docker", "containerd", "cri-o", "podman", "lxc", "systemd-nspawn", "runc", "crun")

_ID = r"([0-9a-f]{8,128})"
_SCOPE = r"(?:\.scope)?"

#: segments that name their container by themselves: (regex, runtime, helper role)
_SELF_NAMING = [
    (re.compile(r"docker-" + _ID + _SCOPE + r"\Z"), "docker", None),
    (re.compile(r"cri-containerd-" + _ID + _SCOPE + r"\Z"), "containerd", None),
    (re.compile(r"crio-conmon-" + _ID + _SCOPE + r"\Z"), "cri-o", "conmon"),
    (re.compile(r"crio-" + _ID + _SCOPE + r"\Z"), "cri-o", None),
    (re.compile(r"libpod-conmon-" + _ID + _SCOPE + r"\Z"), "podman", "conmon"),
    (re.compile(r"libpod-payload-" + _ID + _SCOPE + r"\Z"), "podman", None),
    (re.compile(r"libpod-" + _ID + _SCOPE + r"\Z"), "podman", None),
]

#: the prefix of a systemd-driver cgroupsPath "<slice>:<prefix>:<name>" -> runtime
_COLON_PREFIXES = {
    "cri-containerd": "containerd", "crio": "cri-o", "docker": "docker",
    "libpod": "podman", "cri-o": "cri-o",
}

_HEX_ID = re.compile(_ID + r"\Z")
_UUIDISH = r"([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}|[0-9a-f]{32})"
# cgroupfs pod directory: pod<uid>
_POD_DIR = re.compile(r"pod" + _UUIDISH + r"\Z")
# systemd pod slice: kubepods[-<qos>]-pod<uid with _>.slice
_POD_SLICE = re.compile(r"kubepods(?:-[a-z]+)?-pod" + _UUIDISH + r"\.slice\Z")
_KUBEPODS = re.compile(r"kubepods(?:[-.].*)?\Z")
_MACHINE = re.compile(r"machine-(.+)\.scope\Z")
_SYSTEMD_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})")
_PROC_LINE = re.compile(r"(\d+):([^:/]*):(/.*)?\Z", re.S)

#: systemd-nspawn's own process lives in this sub-cgroup of the machine scope
_NSPAWN_SUPERVISOR = "supervisor"

#: process command names (as in /proc/<pid>/comm, at most 15 bytes) of runtime helpers
_HELPER_COMMS = {
    "conmon": "conmon",
    "runc:[0:PARENT]": "runc-init",
    "runc:[1:CHILD]": "runc-init",
    "runc:[2:INIT]": "runc-init",
    "runc": "runc",
    "crun": "crun",
    "lxc-start": "lxc-monitor",
    "systemd-nspawn": "nspawn-supervisor",
    "docker-proxy": "docker-proxy",
    "containerd-shim": "containerd-shim",   # every shim's comm is cut to this
}

Lookup = Callable[[str, Optional[str]], Optional[str]]


@dataclass(frozen=True)
class Identity:
    """What a process's cgroups say about it.

    ``runtime`` is one of :data:`RUNTIMES` (or None); ``container_id`` the
    runtime's full id (for LXC and systemd-nspawn: the container's name);
    ``pod_uid`` the Kubernetes pod UID with dashes; ``helper`` the role of a
    runtime helper process (``conmon``, ``lxc-monitor``, ``nspawn-supervisor``)
    or None; ``namespace`` the containerd namespace where known; ``cgroup``
    the path the identity was read from.
    """

    runtime: Optional[str] = None
    container_id: Optional[str] = None
    pod_uid: Optional[str] = None
    helper: Optional[str] = None
    namespace: Optional[str] = None
    cgroup: Optional[str] = None

    @property
    def is_container(self):
        """True for a process inside a container (helpers are not)."""
        return self.helper is None and (self.container_id is not None or self.pod_uid is not None)

    @property
    def short_id(self):
        return (self.container_id or "")[:12]


HOST = Identity()


@dataclass(frozen=True)
class Classification:
    """``type`` is ``container`` or ``host``; ``own_pidns`` says whether the
    process is in a PID namespace other than the initial one; ``helper`` names
    a runtime helper role (conmon, containerd-shim, runc-init...) or is None."""

    type: str
    own_pidns: bool
    helper: Optional[str]
    identity: Identity


def _unescape_systemd(name):
    return _SYSTEMD_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), name)


def _pod_uid(raw):
    return raw.replace("_", "-")


def _segments(path):
    return [s for s in path.split("/") if s and s != "."]


def identify_path(path, lookup=None):
    """The :class:`Identity` one cgroup path gives (the deepest container wins)."""
    segs = _segments(path)
    current = HOST
    in_kubepods = False
    pod_uid = None
    prev = None
    for i, seg in enumerate(segs):
        found = _match_segment(seg, prev, in_kubepods, pod_uid, lookup)
        if found is not None:
            runtime, cid, helper, namespace, seg_pod = found
            if seg_pod is not None:
                pod_uid = seg_pod
                in_kubepods = True
            if runtime is None:
                current = Identity(pod_uid=pod_uid, cgroup=path)
            else:
                current = Identity(runtime, cid, pod_uid, helper, namespace, path)
        elif _KUBEPODS.match(seg):
            in_kubepods = True
        elif seg == _NSPAWN_SUPERVISOR and prev is not None and current.runtime == "systemd-nspawn" \
                and _MACHINE.match(prev):
            current = Identity("systemd-nspawn", current.container_id, None, "nspawn-supervisor",
                               None, path)
        prev = seg
    return current


def _match_segment(seg, prev, in_kubepods, pod_uid, lookup):
    """(runtime, id, helper, namespace, pod_uid) for a segment that names
    something, else None."""
    for regex, runtime, helper in _SELF_NAMING:
        m = regex.match(seg)
        if m:
            return runtime, m.group(1), helper, None, None
    if ":" in seg:
        parts = seg.split(":")
        if len(parts) == 3 and parts[1] in _COLON_PREFIXES and parts[2]:
            m = _POD_SLICE.match(parts[0])
            # the slice may carry the pod: report both
            return _COLON_PREFIXES[parts[1]], parts[2], None, None, _pod_uid(m.group(1)) if m else None
    m = _POD_SLICE.match(seg)
    if m:
        return None, None, None, None, _pod_uid(m.group(1))
    m = _POD_DIR.match(seg)
    if m:
        return None, None, None, None, _pod_uid(m.group(1))
    if seg.startswith("lxc.payload."):
        name = seg[len("lxc.payload."):]
        if name:
            return "lxc", name, None, None, None
    if seg.startswith("lxc.monitor."):
        name = seg[len("lxc.monitor."):]
        if name:
            return "lxc", name, "lxc-monitor", None, None
    if seg == "lxc.pivot":
        return "lxc", None, "lxc-monitor", None, None
    if prev in ("lxc", "lxc.payload"):
        return "lxc", seg, None, None, None
    if prev == "lxc.monitor":
        return "lxc", seg, "lxc-monitor", None, None
    m = _MACHINE.match(seg)
    if m:
        name = _unescape_systemd(m.group(1))
        if name and not name.startswith("qemu-"):
            return "systemd-nspawn", name, None, None, None
    if seg == "conmon" and prev == "libpod_parent":
        return "podman", None, "conmon", None, None
    hexid = _HEX_ID.match(seg)
    if hexid and prev == "docker":
        return "docker", seg, None, None, None
    if lookup is not None and _lookup_candidate(seg):
        runtime = _safe_lookup(lookup, seg, prev)
        if runtime in RUNTIMES:
            namespace = prev if runtime == "containerd" else None
            return runtime, seg, None, namespace, None
    if hexid and pod_uid is not None and prev is not None and prev.startswith(("pod", "kubepods")):
        # a cgroupfs pod's child named by the bare id: containerd's CRI names
        # them so (CRI-O uses crio-<id>, cri-dockerd is found by the lookup)
        return "containerd", seg, None, None, None
    return None


def _lookup_candidate(seg):
    """Names worth asking the runtimes' state about (not systemd units)."""
    if seg.endswith((".slice", ".service", ".scope", ".mount", ".socket")):
        return False
    return len(seg) <= 1024 and seg not in ("..",)


def _safe_lookup(lookup, name, parent):
    try:
        return lookup(name, parent)
    except Exception:  # a lookup must not break classification
        return None


def _rank(identity):
    if identity.is_container:
        return 3 if identity.container_id is not None else 2
    if identity.helper is not None:
        return 1
    return 0


def cgroup_paths(cgroup_input):
    """Normalise what :func:`identify` accepts into [(controllers, path)].

    Accepts the text of ``/proc/<pid>/cgroup`` (str or bytes), one path, or an
    iterable of lines, paths, or ``(hierarchy, controllers, path)`` tuples.
    """
    if isinstance(cgroup_input, (bytes, bytearray, memoryview)):
        cgroup_input = bytes(cgroup_input).decode("utf-8", "surrogateescape")
    if isinstance(cgroup_input, str):
        items = cgroup_input.splitlines() if ("\n" in cgroup_input or _PROC_LINE.match(cgroup_input)) \
            else [cgroup_input]
    elif isinstance(cgroup_input, dict):
        items = [(None, k, v) for k, v in cgroup_input.items()]
    else:
        items = list(cgroup_input or ())
    out = []
    for item in items:
        if isinstance(item, (bytes, bytearray)):
            item = bytes(item).decode("utf-8", "surrogateescape")
        if isinstance(item, tuple):
            if len(item) >= 3:
                ctrl, path = item[1], item[2]
            elif len(item) == 2:
                ctrl, path = item
            else:
                continue
            if isinstance(path, bytes):
                path = path.decode("utf-8", "surrogateescape")
            out.append((str(ctrl or ""), str(path or "")))
            continue
        if not isinstance(item, str):
            continue
        m = _PROC_LINE.match(item)
        if m:
            out.append((m.group(2), m.group(3) or "/"))
        elif item:
            out.append(("", item))
    return out


def _order(ctrl_path):
    ctrl, _ = ctrl_path
    if ctrl == "":
        return 0          # the cgroup2 line (or a bare path)
    if ctrl == "name=systemd":
        return 1
    return 2


def identify(cgroup_input, lookup=None):
    """The :class:`Identity` of a process from all its cgroup paths.

    Each path is read on its own; the most specific answer wins (a container
    with an id over a pod over a helper over the host), the cgroup2 path
    first among equals.  ``lookup(name, parent) -> runtime or None`` confirms
    layouts that do not name their runtime.
    """
    best = HOST
    best_rank = 0
    seen = set()
    for ctrl, path in sorted(cgroup_paths(cgroup_input), key=_order):
        if path in seen:
            continue
        seen.add(path)
        ident = identify_path(path, lookup)
        r = _rank(ident)
        if r > best_rank:
            best, best_rank = ident, r
    return best


def helper_role(comm):
    """The helper role a process command name stands for, or None."""
    if comm is None:
        return None
    if isinstance(comm, (bytes, bytearray)):
        comm = bytes(comm).decode("utf-8", "replace")
    comm = comm.rstrip("\n")
    role = _HELPER_COMMS.get(comm)
    if role is None and comm.startswith("containerd-shim"):
        role = "containerd-shim"
    return role


def classify_process(identity, pidns_level, comm=None):
    """Decide a process's :class:`Classification`.

    ``type`` is ``container`` when the identity is a container's (whether or
    not it has its own PID namespace), else ``host``.  ``own_pidns`` is
    ``pidns_level > 0``: the host's baseline is the initial PID namespace,
    level 0.  Helpers are recognised by their cgroup (conmon, LXC monitor,
    nspawn supervisor) or their command name (containerd-shim, runc init...).
    """
    if identity is None:
        identity = HOST
    level = pidns_level if isinstance(pidns_level, int) else 0
    helper = identity.helper or helper_role(comm)
    kind = "container" if identity.is_container else "host"
    return Classification(kind, level > 0, helper, identity)
