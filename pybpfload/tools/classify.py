"""``python -m pybpfload classify``: every exec on the host, live, as container or host.

The BPF program (``bpf/classify.bpf.c``) captures at exec time, in the
kernel, everything needed to decide: the PID namespace the task really runs
in (its level: 0 is the host's initial one), its mount namespace, and its
cgroup paths (v2 and one v1 hierarchy) as kernfs names.  So a process that
is gone before user space looks is still classified.  User space turns the
cgroup paths into a container identity (:mod:`.containers`) — a PID
namespace alone proves nothing (``unshare -p`` is not a container, a
``--pid=host`` container is one) — and names the container from the
runtime's state on disk.
"""

import os
import signal
import sys
import time

from ..errors import BPFError
from . import output, process_view
from .containers import helper_role

# Imported where used, after the programs are attached: datetime, .procfs;
# ..resources (importlib.resources + pathlib: ~20 ms) only when the object
# is not a plain file next to the package (a zipapp).

#: event types sent by classify.bpf.c (bpf/events.h)
EVENT_EXEC, EVENT_EXIT, EVENT_FORK = 1, 2, 3
INIT_PID_NS_INO = 0xEFFFFFFC
INIT_CGROUP_NS_INO = 0xEFFFFFFB
#: v1 controllers to read the cgroup path from, best first (memory last: some
#: hosts keep their own processes' memory cgroups apart from the others)
V1_PREFERENCE = ("cpu", "pids", "devices", "freezer", "cpuacct", "blkio", "cpuset", "memory")


def add_arguments(parser):
    process_view.add_filter_arguments(parser)
    parser.add_argument("--duration", type=float, metavar="SECONDS",
                        help="stop after this many seconds")
    parser.add_argument("--object", metavar="FILE",
                        help="the BPF object to load (default: the prebuilt classify.bpf.o)")
    parser.add_argument("--pages", type=int, default=64,
                        help="perf ring pages per CPU, a power of two (default: %(default)s)")
    parser.add_argument("--btf", metavar="FILE",
                        help="the kernel's BTF (default: /sys/kernel/btf/vmlinux, or "
                             "$PYBPFLOAD_KERNEL_BTF)")
    parser.add_argument("--no-seed", action="store_true",
                        help="do not walk /proc at start to learn the running processes")
    parser.add_argument("--source", choices=("auto", "bpf", "netlink"), default="auto",
                        help="where exec events come from: bpf, netlink (the kernel's "
                             "process-events connector + /proc, no BPF; may miss short-lived "
                             "processes), or auto: bpf, falling back to netlink when BPF "
                             "cannot be used (default: %(default)s)")
    parser.add_argument("--ready-file", metavar="PATH",
                        help="once attached (every exec from then on is reported), write "
                             "this process's pid to PATH: for scripts and tests to wait on")


def choose_v1_subsys(kernel_btf, proc_cgroups="/proc/cgroups"):
    """(index into task->cgroups->subsys[], controller name) of a mounted v1
    controller, or (-1, None) on a host with cgroup v2 only."""
    mounted = set()
    try:
        with open(proc_cgroups) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 4 and not line.startswith("#") and parts[1] != "0" \
                        and parts[3] == "1":
                    mounted.add(parts[0])
    except OSError:
        return -1, None
    from ..obj import btf as btfmod
    ids = kernel_btf.find("cgroup_subsys_id", btfmod.KIND_ENUM)
    if not ids:
        return -1, None
    values = {v.name: v.value for v in kernel_btf[ids[0]].values}
    for ctrl in V1_PREFERENCE:
        if ctrl in mounted and f"{ctrl}_cgrp_id" in values:
            return values[f"{ctrl}_cgrp_id"], ctrl
    return -1, None


def self_awareness():
    """Warnings when this process cannot see the whole host."""
    notes = []
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("NSpid:") and len(line.split()) > 2:
                    notes.append("pybpfload runs inside a PID namespace (not the host's): "
                                 "pids are shown as the host sees them, but the /proc view "
                                 "and names may be partial; run with the host PID namespace")
    except OSError:
        pass
    try:
        ino = os.stat("/proc/self/ns/cgroup").st_ino
        if ino != INIT_CGROUP_NS_INO:
            notes.append("pybpfload runs inside a cgroup namespace: cgroup paths are cut at "
                         "its root, so containers may not be recognised; run with the "
                         "host cgroup namespace")
    except OSError:
        pass
    return notes


def _path(names, depth, truncated):
    parts = [output.text(n) for n in names[:depth]]
    path = "/" + "/".join(reversed(parts))
    return ("..." + path) if truncated else path


def _args(raw, length):
    data = bytes(raw[:length]) if length else b""
    return [a for a in data.split(b"\0") if a] if data else []


def announce_ready(path):
    """Write our pid to ``path`` (created or truncated; a symlink there is
    refused rather than followed, since we run as root)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o644)
        try:
            os.write(fd, f"{os.getpid()}\n".encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise BPFError(f"cannot write the ready file {path}: {exc.strerror}",
                       hint="give a path in a writable directory that is not a symlink")


def poll_timeouts(duration, step_ms=500):
    """Poll timeouts (ms) until ``duration`` seconds have passed; forever without one."""
    deadline = None if duration is None else time.monotonic() + duration
    while True:
        if deadline is None:
            yield step_ms
            continue
        left = deadline - time.monotonic()
        if left <= 0:
            return
        yield max(1, min(step_ms, int(left * 1000)))


class Stop(Exception):
    """SIGTERM or the end of --duration."""


class Classifier:
    """Turns decoded events into records; keeps a bounded pid cache."""

    def __init__(self, resolver, v1_controller=None, max_pids=65536):
        self.resolver = resolver
        self.v1_controller = v1_controller or ""
        self.max_pids = max_pids
        self.pids = {}           # pid -> (type, container_id)
        self.clock_offset = time.time() - time.monotonic()

    def seed(self, procs):
        for p in procs:
            ident = self.resolver.identity(None, p.cgroup)
            self._remember(p.pid, "container" if ident.is_container else "host",
                           ident.container_id)

    def _remember(self, pid, kind, cid):
        if len(self.pids) >= self.max_pids and pid not in self.pids:
            self.pids.pop(next(iter(self.pids)))
        self.pids[pid] = (kind, cid)

    def exited(self, pid):
        self.pids.pop(pid, None)

    def record(self, ev):
        import datetime as _datetime      # not needed before the first event
        v2 = _path(ev["cgroup_v2_path"], ev["cgroup_v2_depth"], ev["cgroup_v2_truncated"])
        cg_input = [(0, "", v2)]
        v1 = None
        if ev["v1_cgroup_id"]:
            v1 = _path(ev["cgroup_v1_path"], ev["cgroup_v1_depth"], ev["cgroup_v1_truncated"])
            cg_input.append((1, self.v1_controller, v1))
        ident = self.resolver.identity((ev["cgroup_id"], ev["v1_cgroup_id"]), cg_input)
        comm = output.text(ev["comm"])
        argv = _args(ev["args"], ev["args_len"])
        fields = self.resolver.fields(ident, ev["pid_ns_level"], comm)
        if fields["helper"] is None and argv:
            # runc re-executes itself as /proc/self/exe (comm "exe"): its argv names it
            fields["helper"] = helper_role(os.path.basename(output.text(argv[0])))
        self._remember(ev["pid"], fields["type"], fields["container_id"])
        wall = ev["time_ns"] / 1e9 + self.clock_offset
        rec = {
            "time": _datetime.datetime.fromtimestamp(wall, _datetime.timezone.utc)
            .isoformat(timespec="microseconds").replace("+00:00", "Z"),
            "pid": ev["pid"], "tid": ev["tid"], "ppid": ev["ppid"], "nspid": ev["ns_pid"],
            "uid": ev["uid"], "gid": ev["gid"], "comm": comm,
            "filename": output.text(ev["filename"]),
            "args": [output.text(a) for a in argv],
            "args_truncated": bool(ev["args_truncated"]),
        }
        rec.update(fields)
        rec.update({
            "cgroup": ident.cgroup or (v1 if v2 == "/" and v1 else v2),
            "cgroup_id": ev["cgroup_id"],
            "cgroup_v1": v1,
            "pidns": ev["pid_ns_inum"], "pidns_level": ev["pid_ns_level"],
            "mntns": ev["mnt_ns_inum"], "cgroupns": ev["cgroup_ns_inum"],
        })
        return rec


def run(args):
    """--source: the BPF road, or the connector road (:mod:`.netlink_source`)."""
    source = getattr(args, "source", "auto")
    if source == "netlink":
        from . import netlink_source
        return netlink_source.run(args)
    try:
        prepared = prepare_bpf(args)
    except BPFError as exc:
        reason = bpf_unusable(exc)
        if source == "bpf" or reason is None:
            raise
        print(f"pybpfload: BPF cannot be used ({reason}): falling back to the "
              f"process-events connector (--source netlink)", file=sys.stderr)
        from . import netlink_source
        return netlink_source.run(args)
    return run_bpf(args, prepared)


def _prebuilt(name):
    """The shipped object ``name``: the file in the package's prebuilt/ when
    there is one (an install, a source tree), else what ``resources`` finds."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "prebuilt", name)
    if os.path.isfile(path):
        return path
    from ..resources import prebuilt_object
    return prebuilt_object(name)


class KernelBTFMissing(BPFError):
    """The running kernel's BTF cannot be read (CO-RE needs it)."""


def prepare_bpf(args):
    """(loaded classify object, v1 controller name); nothing attached yet."""
    from ..errors import BTFError
    from ..kernel.bpf_object import BPFObject, kernel_btf
    btf_path = getattr(args, "btf", None)   # --btf FILE
    try:
        kbtf = kernel_btf(btf_path)
    except BTFError as exc:
        raise KernelBTFMissing(str(exc)) from None
    obj = BPFObject(args.object or _prebuilt("classify.bpf.o"), kernel_btf_path=btf_path)
    try:
        subsys, ctrl = choose_v1_subsys(kbtf)
        obj.set_variable("v1_subsys_id", subsys)
        obj.load()
    except BaseException:
        obj.close()
        raise
    return obj, ctrl


def bpf_unusable(exc):
    """Why BPF cannot be used on this host (a one-line reason), or None when
    ``exc`` is a mistake to report rather than to fall back from."""
    from ..errors import KernelError, NoPrivilegeError, NotSupportedError, VerifierError
    first = str(exc).split("\n", 1)[0]
    if isinstance(exc, NoPrivilegeError):
        return f"no privilege: {first}"
    if isinstance(exc, KernelBTFMissing):
        return f"no kernel BTF: {first}"
    if isinstance(exc, VerifierError):
        return f"the verifier rejected the program: {first}"
    if isinstance(exc, NotSupportedError):
        return f"the kernel lacks a feature: {first}"
    if isinstance(exc, KernelError):
        return f"the kernel refused: {first}"
    return None


def run_bpf(args, prepared=None):
    from ..obj.layout import Layout

    for note in self_awareness():
        print(f"pybpfload: note: {note}", file=sys.stderr)
    state = process_view.state_from_args(args)
    # Events are decoded in batches, after the fact: a state file missing at
    # a container's first exec (runc init runs before state.json is written)
    # is there for the next one, so "not there" must not be cached.
    state.negative_ttl = 0.0
    resolver = process_view.Resolver(state)
    printer = None
    reader = None

    def on_term(signum, frame):
        raise Stop()
    old_term = signal.signal(signal.SIGTERM, on_term)
    obj, ctrl = prepared if prepared is not None else prepare_bpf(args)
    try:
        exec_layout = Layout.of_struct(obj.spec.btf, "exec_event", raw=("args",))
        exit_layout = Layout.of_struct(obj.spec.btf, "exit_event")
        classifier = Classifier(resolver, ctrl)
        reader = obj.perf_buffer("events", args.pages)
        obj.attach()
        if args.ready_file:
            announce_ready(args.ready_file)
        if not args.no_seed:
            from .procfs import walk
            classifier.seed(walk())
        printer = process_view.EventPrinter(args, sys.stdout)
        lost_reported = 0
        for timeout in poll_timeouts(args.duration):
            for raw in reader.poll(timeout):
                etype = int.from_bytes(raw[:4], "little")
                if etype == EVENT_EXEC and len(raw) >= exec_layout.size:
                    printer.emit(classifier.record(exec_layout.decode(raw)))
                elif etype == EVENT_EXIT and len(raw) >= exit_layout.size:
                    classifier.exited(exit_layout.decode(raw)["pid"])
            sys.stdout.flush()
            if reader.lost > lost_reported:
                print(f"pybpfload: warning: {reader.lost - lost_reported} events lost "
                      f"(the reader fell behind; try --pages {args.pages * 2})", file=sys.stderr)
                lost_reported = reader.lost
    except (KeyboardInterrupt, Stop):
        pass
    finally:
        signal.signal(signal.SIGTERM, old_term)
        lost = reader.lost if reader is not None else 0
        obj.close()
        c = printer.counts if printer is not None else dict.fromkeys(
            ("events", "container", "host", "shown"), 0)
        print(f"pybpfload classify: {c['events']} execs ({c['container']} in "
              f"containers, {c['host']} on the host), {c['shown']} shown, "
              f"{lost} lost", file=sys.stderr)
    return 0
