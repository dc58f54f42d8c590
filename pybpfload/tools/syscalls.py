"""``python -m pybpfload syscalls``: live per-container system-call counts.

Two BPF objects work together.  ``syscalls.bpf.o`` counts every system
call, in the kernel, into a per-CPU array indexed ``slot * MAX_SYSCALLS +
nr`` where the slot comes from its ``watched`` hash (cgroup id -> slot);
processes of cgroups not in ``watched`` cost one hash lookup and are not
counted (unless ``--all``: then they count into slot 0, "host").
``classify.bpf.o`` reports every exec, so a container started after the
tool is noticed on its first exec; a walk of /proc at start finds the
running ones.  Both go through classify's identification
(:class:`process_view.Resolver`), so a container is recognised here exactly
as ``classify`` and ``ps`` recognise it.

Each interval the counts of the slots in use are read with one batch
lookup per slot (per-CPU values summed), turned into names
(:mod:`.syscall_table`, 32-bit compat calls as ``i386:NAME``) and fed into
:class:`.syscall_stats.SyscallStats`, which the terminal view, the JSON
lines and the Prometheus endpoint read.  A container whose cgroup directory
is gone is marked stopped, its slot is freed (zeroed before reuse) and it
stays on screen for a while.
"""

import ctypes
import datetime
import errno as _errno
import os
import signal
import sys
import time

from ..errors import BPFError, ConfigError
from . import output, process_view, syscall_table
from ..resources import prebuilt_object
from .classify import Classifier, Stop, _path, choose_v1_subsys, self_awareness
from .procfs import walk
from .syscall_stats import SyscallStats

CGROUP_FS = "/sys/fs/cgroup"
EVENT_EXEC = 1
HOST_KEY = "host"

#: syscalls an interactive shell (and a terminal) makes all the time
NOISE = frozenset({
    "read", "write", "readv", "writev", "pread64", "pwrite64", "ioctl",
    "rt_sigprocmask", "rt_sigaction", "rt_sigreturn", "poll", "ppoll", "pselect6", "select",
    "epoll_wait", "epoll_pwait", "epoll_pwait2", "futex", "nanosleep", "clock_nanosleep",
    "clock_gettime", "gettimeofday", "sched_yield", "wait4", "restart_syscall",
})


def add_arguments(parser):
    parser.add_argument("--interval", type=float, default=2.0, metavar="SECONDS",
                        help="seconds between reports (default: %(default)s)")
    parser.add_argument("--top", type=int, default=10, metavar="N",
                        help="syscalls shown per container (default: %(default)s)")
    parser.add_argument("--container", metavar="ID-or-name",
                        help="only this container (an id prefix or its name)")
    parser.add_argument("--all", action="store_true",
                        help="also count processes outside containers, shown as 'host'")
    parser.add_argument("--exclude", default="", metavar="a,b,c",
                        help="syscall names not to show")
    parser.add_argument("--exclude-noise", action="store_true",
                        help="hide what interactive shells call all the time: "
                             + ", ".join(sorted(NOISE)))
    parser.add_argument("--duration", type=float, metavar="SECONDS",
                        help="stop after this many seconds")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object per container per interval")
    parser.add_argument("--prometheus", metavar="[ADDR:]PORT",
                        help="serve the counts on http://ADDR:PORT/metrics (ADDR: 127.0.0.1)")
    parser.add_argument("--keep", type=float, default=30.0, metavar="SECONDS",
                        help="how long idle or stopped containers stay shown (default: %(default)s)")
    parser.add_argument("--state-root", action="append", default=[], metavar="RUNTIME=DIR",
                        help="a runtime's state root, e.g. docker=/data/docker (repeatable)")


# -- where a cgroup id comes from ------------------------------------------------

def v1_mount(ctrl, cgroup_fs=CGROUP_FS):
    """The directory where the v1 hierarchy of ``ctrl`` is mounted."""
    direct = os.path.join(cgroup_fs, ctrl)
    if os.path.isdir(direct):
        return direct
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                pre, _, post = line.partition(" - ")
                fields, sup = pre.split(), post.split()
                if len(sup) >= 3 and sup[0] == "cgroup" and ctrl in sup[2].split(","):
                    return fields[4]
    except OSError:
        pass
    return direct


def v2_mount(cgroup_fs=CGROUP_FS):
    """The directory of the cgroup v2 hierarchy (hybrid: ``unified``)."""
    unified = os.path.join(cgroup_fs, "unified")
    return unified if os.path.isdir(unified) else cgroup_fs


def cgroup_dir(base, path):
    """``base`` + a cgroup path; None for paths that could escape ``base``."""
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") for p in parts) or path.startswith("..."):
        return None
    return os.path.join(base, *parts) if parts else base


def cgroup_id_of(directory):
    """The kernfs id of a cgroup: the inode number of its directory (None if gone)."""
    try:
        return os.stat(directory).st_ino
    except OSError:
        return None


# -- the counter maps ------------------------------------------------------------

#: syscalls.bpf.o's programs: the fast one (tp_btf, direct task loads, a
#: per-CPU cache; needs bpf_get_current_task_btf) and the fallback (raw_tp)
FAST_PROGRAM, FALLBACK_PROGRAM = "count_syscalls", "count_syscalls_raw"


def counter_program():
    """The program of syscalls.bpf.o to load and attach on this kernel (only one)."""
    from ..kernel import features
    try:
        fast = features.has_get_current_task_btf()
    except OSError:
        fast = False
    return FAST_PROGRAM if fast else FALLBACK_PROGRAM


def _int_variable(obj, name):
    value = obj.get_variable(name)
    return value if isinstance(value, int) else int.from_bytes(bytes(value), "little")


class Counter:
    """``syscalls.bpf.o`` in the kernel: slots handed out, counts read back."""

    def __init__(self, obj):
        from ..kernel import syscall as sc
        self.sc = sc
        self.watched = obj.map("watched")
        self.counts = obj.map("counts")
        self.overflow_map = obj.map("overflow")
        # written after every change of `watched`: (generation + 1, empty?);
        # the program's per-CPU cache of its last (cgroup -> slot) answer is
        # only used under the same generation, and "empty" skips everything
        self.state_map = obj.map("watch_state") if "watch_state" in obj.spec.maps else None
        self.generation = 0
        self.columns = _int_variable(obj, "max_syscalls")
        self.compat_base = _int_variable(obj, "compat_base")
        self.max_slots = _int_variable(obj, "max_slots")
        self.ncpus = self.counts.ncpus
        self.free = list(range(self.max_slots - 1, 0, -1))   # pop() gives 1 first
        self.slots = {}               # cgroup id -> slot
        self.dirty = set()            # freed slots that may hold old counts
        self._names = [self._name(c) for c in range(self.columns)]
        n = self.columns
        self._keys = (ctypes.c_uint32 * n)(*range(n))
        self._values = ctypes.create_string_buffer(8 * self.ncpus * n)
        self._prev = ctypes.c_uint32(0)
        self._out = ctypes.c_uint32(0)
        self.batch = True
        self._changed()               # nothing watched yet

    def _name(self, column):
        if column < self.compat_base:
            return syscall_table.syscall_name(column)
        compat = syscall_table.COMPAT_ARCH.get(syscall_table.host_arch(), "compat")
        return f"{compat}:{syscall_table.syscall_name(column - self.compat_base, compat=True)}"

    def watch(self, cgid):
        """Give ``cgid`` a slot (its old one if it has one); None when full."""
        if cgid in self.slots:
            return self.slots[cgid]
        if not self.free:
            return None
        slot = self.free.pop()
        if slot in self.dirty:
            self._zero(slot)
            self.dirty.discard(slot)
        self.watched.update(cgid, slot)
        self.slots[cgid] = slot
        self._changed()
        return slot

    def _changed(self):
        if self.state_map is not None:
            self.generation = (self.generation + 1) & 0xFFFFFFFF
            self.state_map.update(0, self.generation.to_bytes(4, "little")
                                  + (0 if self.slots else 1).to_bytes(4, "little"))

    def unwatch(self, cgid):
        slot = self.slots.pop(cgid, None)
        if slot is None:
            return
        self.watched.delete(cgid)
        self._changed()
        self.dirty.add(slot)
        self.free.insert(0, slot)     # reused last: its counts stay readable a while

    def _zero(self, slot):
        base = slot * self.columns
        if self.batch:
            keys = (ctypes.c_uint32 * self.columns)(*range(base, base + self.columns))
            values = ctypes.create_string_buffer(8 * self.ncpus * self.columns)
            attr = self.sc.MapBatchAttr(map_fd=self.counts.fileno(), keys=ctypes.addressof(keys),
                                        values=ctypes.addressof(values), count=self.columns)
            ret, err = self.sc.bpf_errno(self.sc.MAP_UPDATE_BATCH, attr)
            if ret == 0:
                return
            self.batch = False
        for i in range(base, base + self.columns):
            self.counts.update(i, 0)

    def read_slot(self, slot):
        """{syscall name: count} of one slot, per-CPU values summed, zeros left out."""
        n, ncpus = self.columns, self.ncpus
        base = slot * n
        raw = None
        if self.batch:
            self._prev.value = base - 1 if base else 0
            attr = self.sc.MapBatchAttr(
                in_batch=ctypes.addressof(self._prev) if base else 0,
                out_batch=ctypes.addressof(self._out), keys=ctypes.addressof(self._keys),
                values=ctypes.addressof(self._values), count=n,
                map_fd=self.counts.fileno())
            ret, err = self.sc.bpf_errno(self.sc.MAP_LOOKUP_BATCH, attr)
            if (ret == 0 or err == _errno.ENOENT) and attr.count == n and self._keys[0] == base:
                raw = memoryview(self._values).cast("B")[:8 * ncpus * n].cast("Q")
            elif ret < 0 and err not in (_errno.ENOENT,):
                self.batch = False
        out = {}
        names = self._names
        if raw is not None:
            for col in range(n):
                i = col * ncpus
                total = sum(raw[i:i + ncpus]) if ncpus > 1 else raw[i]
                if total:
                    out[names[col]] = total
            return out
        for col in range(n):
            vals = self.counts.lookup(base + col)
            total = sum(int.from_bytes(v, "little") for v in vals) if vals else 0
            if total:
                out[names[col]] = total
        return out

    def overflow(self):
        vals = self.overflow_map.lookup(0) or []
        return sum(int.from_bytes(v, "little") for v in vals)


# -- which containers there are --------------------------------------------------

class Watched:
    """One container cgroup being counted."""

    __slots__ = ("cgid", "key", "container_id", "name", "runtime", "directory", "stopped")

    def __init__(self, cgid, key, container_id, name, runtime, directory):
        self.cgid, self.key = cgid, key
        self.container_id, self.name, self.runtime = container_id, name, runtime
        self.directory = directory
        self.stopped = False


class ContainerWatcher:
    """Containers by the cgroup id the counter keys on.

    Seeded from /proc (:meth:`seed`), then told about every exec
    (:meth:`on_exec`, classify's events decoded); identification is
    classify's own (:class:`.classify.Classifier` over a shared
    :class:`process_view.Resolver`).  ``on_new(w)`` is called for each
    container cgroup seen for the first time.
    """

    def __init__(self, resolver, v1_subsys, v1_ctrl, on_new, cgroup_fs=CGROUP_FS):
        self.classifier = Classifier(resolver, v1_ctrl)
        self.resolver = resolver
        self.v1 = v1_subsys >= 0
        self.v1_ctrl = v1_ctrl
        self.base = v1_mount(v1_ctrl, cgroup_fs) if self.v1 else v2_mount(cgroup_fs)
        self.on_new = on_new
        self.by_cgid = {}

    def _cgroup_path(self, cgroup_lines):
        for hid, ctrls, path in cgroup_lines:
            if self.v1 and self.v1_ctrl in ctrls.split(","):
                return path
            if not self.v1 and hid == 0:
                return path
        return None

    def seed(self, procs):
        for p in procs:
            ident = self.resolver.identity(None, p.cgroup)
            if not ident.is_container:
                continue
            path = self._cgroup_path(p.cgroup)
            directory = cgroup_dir(self.base, path) if path is not None else None
            cgid = cgroup_id_of(directory) if directory else None
            if cgid is None or cgid in self.by_cgid:
                continue
            fields = self.resolver.fields(ident, p.pidns_level, output.text(p.comm))
            self._add(cgid, fields, directory)

    def on_exec(self, ev):
        cgid = ev["v1_cgroup_id"] if self.v1 else ev["cgroup_id"]
        if not cgid or cgid in self.by_cgid:
            return None
        rec = self.classifier.record(ev)
        if rec["type"] != "container" and not rec["container_id"]:
            return None
        if self.v1:
            path = _path(ev["cgroup_v1_path"], ev["cgroup_v1_depth"], ev["cgroup_v1_truncated"])
        else:
            path = _path(ev["cgroup_v2_path"], ev["cgroup_v2_depth"], ev["cgroup_v2_truncated"])
        directory = cgroup_dir(self.base, path)
        if directory is not None and cgroup_id_of(directory) != cgid:
            directory = None          # truncated or odd names: no liveness check by path
        return self._add(cgid, rec, directory)

    def _add(self, cgid, fields, directory):
        cid = fields["container_id"] or ""
        w = Watched(cgid, cid or f"cgroup:{cgid}", cid, fields.get("container_name") or "",
                    fields.get("runtime") or "", directory)
        self.by_cgid[cgid] = w
        self.on_new(w)
        return w

    def check_stopped(self):
        """Containers whose cgroup directory disappeared (or was replaced) since last time."""
        gone = []
        for w in self.by_cgid.values():
            if w.stopped or w.directory is None:
                continue
            if cgroup_id_of(w.directory) != w.cgid:
                w.stopped = True
                gone.append(w)
        for w in gone:
            del self.by_cgid[w.cgid]
        return gone


# -- the command -----------------------------------------------------------------

def _now_iso():
    return (datetime.datetime.now(datetime.timezone.utc)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"))


def _matches(c, want):
    if not want:
        return True
    return bool((c.container_id and c.container_id.startswith(want)) or c.name == want)


class Monitor:
    """The whole tool minus argument parsing: kernel objects, model, outputs."""

    def __init__(self, args, out=sys.stdout, err=sys.stderr):
        self.args = args
        self.out, self.err = out, err
        self.exclude = {s.strip() for s in (args.exclude or "").split(",") if s.strip()}
        if args.exclude_noise:
            self.exclude |= NOISE
        self.stats = SyscallStats(idle_keep=args.keep)
        self.health = {"intervals": 0, "overflow": 0, "lost": 0, "full": 0, "execs": 0}
        self.counter_obj = self.classify_obj = self.counter = self.watcher = None
        self.reader = None
        self.metrics_text = ""
        self.by_key = {}              # stats key -> [Watched]

    # setup / teardown
    def open(self):
        from ..kernel.bpf_object import BPFObject, kernel_btf
        from ..obj.layout import Layout
        subsys, ctrl = choose_v1_subsys(kernel_btf())
        self.classify_obj = BPFObject(prebuilt_object("classify.bpf.o"))
        self.classify_obj.set_variable("v1_subsys_id", subsys)
        self.counter_obj = self._load_counter(subsys, counter_program())
        self.classify_obj.load()
        self.exec_layout = Layout.of_struct(self.classify_obj.spec.btf, "exec_event",
                                            raw=("args",))
        self.counter = Counter(self.counter_obj)
        resolver = process_view.Resolver(process_view.state_from_args(self.args))
        self.watcher = ContainerWatcher(resolver, subsys, ctrl, self._new_container)
        self.reader = self.classify_obj.perf_buffer("events", 64)
        # exec events first, then the /proc walk: a container starting in
        # between is seen by one of the two
        self.classify_obj.attach()
        self.watcher.seed(walk())
        self.counter_obj.attach()
        return self

    def _load_counter(self, subsys, program):
        from ..kernel.bpf_object import BPFObject
        obj = BPFObject(prebuilt_object("syscalls.bpf.o"))
        obj.set_variable("v1_subsys_id", subsys)
        obj.set_variable("count_all", bool(self.args.all))
        try:
            return obj.load([program])
        except BPFError:
            if program == FALLBACK_PROGRAM:   # (load closed obj)
                raise
            # e.g. 5.11: bpf_get_current_task_btf but no atomic fetch yet
            return self._load_counter(subsys, FALLBACK_PROGRAM)

    def close(self):
        for obj in (self.counter_obj, self.classify_obj):
            if obj is not None:
                obj.close()

    def _new_container(self, w):
        if self.counter.watch(w.cgid) is None:
            self.health["full"] += 1
            return
        self.stats.container(w.key, container_id=w.container_id, name=w.name,
                             runtime=w.runtime)
        self.by_key.setdefault(w.key, []).append(w)

    # one interval
    def poll_events(self, timeout_s):
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for raw in self.reader.poll(max(1, int(left * 1000))):
                if int.from_bytes(raw[:4], "little") == EVENT_EXEC \
                        and len(raw) >= self.exec_layout.size:
                    self.health["execs"] += 1
                    self.watcher.on_exec(self.exec_layout.decode(raw))
        self.health["lost"] = self.reader.lost

    def tick(self):
        """Read the kernel's counts into the model."""
        totals = {}
        for key, ws in self.by_key.items():
            merged = {}
            for w in ws:
                slot = self.counter.slots.get(w.cgid)
                if slot is None:
                    continue
                for name, n in self.counter.read_slot(slot).items():
                    merged[name] = merged.get(name, 0) + n
            if merged or any(w.cgid in self.counter.slots for w in ws):
                totals[key] = merged
        if self.args.all:
            self.stats.container(HOST_KEY, name="host", runtime="host")
            totals[HOST_KEY] = self.counter.read_slot(0)
        self.stats.update(totals)
        for w in self.watcher.check_stopped():
            self.counter.unwatch(w.cgid)
            ws = self.by_key.get(w.key, [])
            if all(x.stopped for x in ws):
                self.stats.mark_stopped(w.key)
        for key in self.stats.expire():
            self.by_key.pop(key, None)
        self.health["intervals"] += 1
        self.health["overflow"] = self.counter.overflow()
        self.metrics_text = self.render_metrics()

    def shown(self):
        return [c for c in self.stats.visible() if _matches(c, self.args.container)]

    def json_lines(self):
        now = _now_iso()
        lines = []
        for c in self.shown():
            rows = c.top(None, self.exclude)
            lines.append(output.json_line({
                "time": now, "container_id": c.container_id or None,
                "container_name": c.name or None, "runtime": c.runtime or None,
                "stopped": c.stopped, "total": c.total, "delta": c.interval_total,
                "syscalls": {r.name: {"total": r.total, "delta": r.delta} for r in rows},
            }))
        return lines

    def render_metrics(self):
        from .prometheus import sample
        lines = ["# HELP pybpfload_syscalls_total System calls made, per container and syscall.\n",
                 "# TYPE pybpfload_syscalls_total counter\n"]
        for c in list(self.stats.containers.values()):
            for r in sorted(c.rows.values(), key=lambda r: r.name):
                lines.append(sample("pybpfload_syscalls_total", {
                    "container_id": c.container_id, "container_name": c.name,
                    "runtime": c.runtime, "syscall": r.name}, r.total))
        h = self.health
        for name, help_, kind, value in (
                ("pybpfload_syscalls_intervals_total", "Intervals read.", "counter",
                 h["intervals"]),
                ("pybpfload_syscalls_containers_watched", "Container cgroups counted now.",
                 "gauge", len(self.counter.slots) if self.counter else 0),
                ("pybpfload_syscalls_overflow_total", "System calls not countable per syscall.",
                 "counter", h["overflow"]),
                ("pybpfload_syscalls_exec_events_lost_total", "Exec events lost.", "counter",
                 h["lost"]),
                ("pybpfload_syscalls_slots_full_total", "Containers not counted: no free slot.",
                 "counter", h["full"])):
            lines.append(f"# HELP {name} {help_}\n# TYPE {name} {kind}\n")
            lines.append(sample(name, {}, value))
        return "".join(lines)

    def summary(self):
        lines = []
        for c in sorted(self.stats.containers.values(), key=lambda c: -c.total):
            if not _matches(c, self.args.container) or not c.rows:
                continue
            who = c.name or output.short_id(c.container_id) or "?"
            top = ", ".join(f"{r.name} {r.total}" for r in
                            sorted(c.top(None, self.exclude), key=lambda r: -r.total)[:5])
            lines.append(f"pybpfload syscalls: {output.safe(who)} "
                         f"({output.short_id(c.container_id) or '-'}, "
                         f"{output.safe(c.runtime or '-')}): {c.total} syscalls; top: {top}")
        h = self.health
        lines.append(f"pybpfload syscalls: {h['intervals']} intervals, "
                     f"{len(self.stats.containers)} containers, {h['lost']} exec events lost, "
                     f"{h['overflow']} syscalls not countable (overflow)"
                     + (f", {h['full']} containers not counted (no free slot)" if h["full"]
                        else ""))
        return lines


def run(args):
    from . import syscalls_view
    if args.interval <= 0:
        raise ConfigError("--interval must be more than 0 seconds", hint="e.g. --interval 2")
    if args.top <= 0:
        raise ConfigError("--top must be at least 1")
    listen = None
    if args.prometheus:
        from .prometheus import parse_listen
        try:
            listen = parse_listen(args.prometheus)
        except ValueError as exc:
            raise ConfigError(f"--prometheus: {exc}") from None
    for note in self_awareness():
        print(f"pybpfload: note: {note}", file=sys.stderr)

    def on_term(signum, frame):
        raise Stop()
    old_term = signal.signal(signal.SIGTERM, on_term)
    mon = Monitor(args)
    exporter = None
    out = sys.stdout
    live = not args.json and out.isatty()
    view = syscalls_view.View(out, live, args.top, mon.exclude)
    try:
        mon.open()
        if listen is not None:
            from .prometheus import Exporter
            try:
                exporter = Exporter(listen[0], listen[1], lambda: mon.metrics_text).start()
            except OSError as exc:
                raise ConfigError(f"cannot listen on {listen[0]}:{listen[1]}: {exc.strerror}",
                                  hint="choose another --prometheus port") from None
            mon.metrics_text = mon.render_metrics()
        deadline = None if args.duration is None else time.monotonic() + args.duration
        view.start()
        while True:
            wait = args.interval
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - time.monotonic()))
            mon.poll_events(wait)
            mon.tick()
            if args.json:
                for line in mon.json_lines():
                    out.write(line + "\n")
            else:
                view.show(mon.shown(), mon.health, len(mon.counter.slots))
            out.flush()
            if deadline is not None and time.monotonic() >= deadline:
                break
    except (KeyboardInterrupt, Stop):
        pass
    finally:
        signal.signal(signal.SIGTERM, old_term)
        view.stop()
        if exporter is not None:
            exporter.close()
        mon.close()
        if mon.counter is not None:
            for line in mon.summary():
                print(line, file=sys.stderr)
    return 0


__all__ = ["add_arguments", "run", "Monitor", "ContainerWatcher", "Counter", "NOISE",
           "BPFError"]
