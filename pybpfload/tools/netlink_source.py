"""The road without BPF: ``classify --source netlink``.

The kernel's process-events connector (``CONFIG_PROC_EVENTS``, a netlink
multicast group) announces every fork, exec and exit with nothing but pids
and a timestamp.  Everything else is read from ``/proc/<pid>`` when the exec
event arrives (:func:`pybpfload.tools.procfs.read_process`): cgroup paths,
namespaces, command name, arguments, parent.  The records are classified by
the same code as the BPF road (:class:`pybpfload.tools.process_view.Resolver`
through :class:`pybpfload.tools.classify.Classifier`) and carry the same
fields, plus ``"source": "netlink"``.

What this road cannot do, by construction:

* a process that exits (or execs again) before ``/proc`` is read is seen
  late or not at all: a vanished one is reported with ``"type": "unknown"``
  (pid, the parent pid from its fork event when seen, everything else
  null), never guessed from its parent;
* the facts are those of the moment ``/proc`` is read, not of the exec;
* fields only the BPF program knows (``gid``, ``cgroup_id``) are null;
* the connector needs CAP_NET_ADMIN and works only from the initial
  network (and user/PID) namespace.

pyroute2 is imported only here, and only when this road is taken (its
import costs a few hundred milliseconds).
"""

import datetime
import errno
import os
import select
import signal
import struct
import sys
from collections import OrderedDict

from ..errors import KernelError
from . import output, process_view
from .procfs import PROC, ProcessGone, read_process, walk

#: what every run of this road prints at start (stderr)
NOTE = ("pybpfload: note: source netlink (process-events connector + /proc): processes that "
        "exit before /proc is read are reported with type \"unknown\", and facts are read "
        "when the event arrives, not at exec time")

#: socket receive buffer asked for (bursts of forks overrun the default)
RCVBUF = 8 << 20

UNKNOWN = "unknown"


class ConnectorError(KernelError):
    """The process-events connector cannot be used."""

    hint = ("needs CAP_NET_ADMIN, the initial network namespace (hostNetwork in a pod) "
            "and a kernel with CONFIG_PROC_EVENTS")


class ProcEvents:
    """A listening process-events connector socket.

    :meth:`poll` returns ``(kind, pid, parent_pid, timestamp_ns)`` tuples,
    ``kind`` one of ``"exec"``, ``"exit"``, ``"fork"`` (pids are thread-group
    ids; thread creation and thread exits are dropped).  :attr:`lost` counts
    receive-buffer overruns (each loses an unknown number of events).
    """

    def __init__(self):
        try:
            from pyroute2.netlink.connector import cn_proc
        except ImportError:
            raise ConnectorError("pyroute2 is not installed",
                                 hint="pip install pyroute2") from None
        self._cn = cn_proc
        self.lost = 0
        self.sock = None
        self._fd = None
        try:
            self.sock = cn_proc.ProcEventSocket()
            self._raise_rcvbuf()
            self.sock.bind()
            self.sock.control(listen=True)
            self._fd = self.sock.fileno()
            os.set_blocking(self._fd, False)
            self._marshal = cn_proc.ProcEventMarshal()
        except OSError as exc:
            self.close()
            why = os.strerror(exc.errno) if exc.errno else str(exc)
            raise ConnectorError(f"cannot listen to the process-events connector: {why}",
                                 exc.errno or 0) from None

    def _raise_rcvbuf(self):
        import socket
        try:
            raw = socket.socket(fileno=os.dup(self.sock.fileno()))
        except OSError:
            return
        try:
            for opt in (getattr(socket, "SO_RCVBUFFORCE", 33), socket.SO_RCVBUF):
                try:
                    raw.setsockopt(socket.SOL_SOCKET, opt, RCVBUF)
                    break
                except OSError:
                    continue
        finally:
            raw.close()

    def fileno(self):
        return self.sock.fileno()

    def poll(self, timeout_ms):
        """Events available within ``timeout_ms`` (possibly none).

        Datagrams are read from the socket's descriptor directly and decoded
        with pyroute2's connector marshal: pyroute2's own ``get()`` runs an
        asyncio loop that queues messages out of ``select()``'s sight.
        """
        ready, _, _ = select.select([self._fd], [], [], timeout_ms / 1000)
        if not ready:
            return []
        cn = self._cn
        events = []
        for _ in range(4096):               # drain, but come back to the caller
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self.lost += 1
                    continue
                raise
            for m in self._marshal.parse(data):
                what = m.get("what")
                if what == cn.PROC_EVENT_EXEC:
                    events.append(("exec", m["process_tgid"], None, m["timestamp_ns"]))
                elif what == cn.PROC_EVENT_EXIT:
                    if m["process_pid"] == m["process_tgid"]:
                        events.append(("exit", m["process_tgid"], m["parent_tgid"],
                                       m["timestamp_ns"]))
                elif what == cn.PROC_EVENT_FORK:
                    if m["child_pid"] == m["child_tgid"]:
                        events.append(("fork", m["child_tgid"], m["parent_tgid"],
                                       m["timestamp_ns"]))
        return events

    def close(self):
        """Unsubscribe (older kernels count listeners only through this
        message) and close.  pyroute2's ``control(listen=False)`` would wait
        for a reply that the descriptor reads above may already have taken."""
        if self.sock is None:
            return
        if self._fd is not None:
            try:
                os.write(self._fd, _control_message(self._cn.PROC_CN_MCAST_IGNORE))
            except OSError:
                pass
        self.sock.close()
        self.sock = None
        self._fd = None


def _control_message(action):
    """A netlink message to the connector's proc channel: listen or ignore
    (nlmsghdr, cn_msg, the u32 action)."""
    cn_msg = struct.pack("=IIIIHH", 1, 1, 0, 0, 4, 0)       # CN_IDX_PROC, CN_VAL_PROC
    body = cn_msg + struct.pack("=I", action)
    return struct.pack("=IHHII", 16 + len(body), 3, 0, 0, 0) + body   # NLMSG_DONE


def _wall_time(timestamp_ns, clock_offset):
    wall = timestamp_ns / 1e9 + clock_offset
    return (datetime.datetime.fromtimestamp(wall, datetime.timezone.utc)
            .isoformat(timespec="microseconds").replace("+00:00", "Z"))


def _readlink(path):
    try:
        return os.readlink(path)
    except OSError:
        return None


def _ns_inode(path):
    target = _readlink(path)
    if not target or "[" not in target:
        return None
    try:
        return int(target[target.find("[") + 1:target.rfind("]")])
    except ValueError:
        return None


class ProcRecords:
    """Exec events -> classify records, from ``/proc``.

    Wraps a :class:`pybpfload.tools.classify.Classifier` (its resolver, pid
    cache and clock) so that both roads classify with the same code.  Keeps
    the parent of recently forked pids (bounded) for vanished processes.
    """

    def __init__(self, classifier, proc=PROC, max_parents=65536):
        self.classifier = classifier
        self.proc = proc
        self.max_parents = max_parents
        self.parents = OrderedDict()

    def forked(self, pid, parent):
        self.parents[pid] = parent
        self.parents.move_to_end(pid)
        if len(self.parents) > self.max_parents:
            self.parents.popitem(last=False)

    def exited(self, pid):
        self.classifier.exited(pid)
        self.parents.pop(pid, None)

    def record(self, pid, timestamp_ns):
        """The record of an exec of ``pid`` (type "unknown" when it is gone)."""
        when = _wall_time(timestamp_ns, self.classifier.clock_offset)
        try:
            info = read_process(pid, self.proc)
        except (ProcessGone, OSError):
            return self._unknown(pid, when)
        base = f"{self.proc}/{pid}"
        resolver = self.classifier.resolver
        ident = resolver.identity(tuple(info.cgroup), info.cgroup)
        comm = output.text(info.comm)
        fields = resolver.fields(ident, info.pidns_level, comm)
        self.classifier._remember(pid, fields["type"], fields["container_id"])
        v2 = next((p for h, c, p in info.cgroup if h == 0 and c == ""), None)
        v1 = next((p for h, c, p in info.cgroup
                   if h != 0 and self.classifier.v1_controller
                   and self.classifier.v1_controller in c.split(",")), None)
        rec = {
            "time": when,
            "pid": pid, "tid": pid, "ppid": info.ppid, "nspid": info.innermost_pid,
            "uid": info.uid, "gid": None, "comm": comm,
            "filename": output.text(_readlink(base + "/exe")) or None,
            "args": [output.text(a) for a in info.args],
            "args_truncated": False,
        }
        rec.update(fields)
        rec.update({
            "cgroup": ident.cgroup or (v1 if v2 in (None, "/") and v1 else v2),
            "cgroup_id": None,
            "cgroup_v1": v1,
            "pidns": info.pidns, "pidns_level": info.pidns_level,
            "mntns": info.mntns, "cgroupns": _ns_inode(base + "/ns/cgroup"),
            "source": "netlink",
        })
        return rec

    def _unknown(self, pid, when):
        return {
            "time": when, "pid": pid, "tid": pid, "ppid": self.parents.get(pid),
            "nspid": None, "uid": None, "gid": None, "comm": None, "filename": None,
            "args": [], "args_truncated": False,
            "type": UNKNOWN, "own_pidns": None, "helper": None, "runtime": None,
            "container_id": None, "container_name": None, "image": None,
            "pod_uid": None, "pod_name": None, "pod_namespace": None,
            "cgroup": None, "cgroup_id": None, "cgroup_v1": None,
            "pidns": None, "pidns_level": None, "mntns": None, "cgroupns": None,
            "source": "netlink",
        }


def v1_controller(proc_cgroups="/proc/cgroups"):
    """The v1 controller whose path is reported as ``cgroup_v1`` (the BPF
    road's preference order), or None on a v2-only host."""
    from .classify import V1_PREFERENCE
    mounted = set()
    try:
        with open(proc_cgroups) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 4 and not line.startswith("#") and parts[1] != "0" \
                        and parts[3] == "1":
                    mounted.add(parts[0])
    except OSError:
        return None
    return next((c for c in V1_PREFERENCE if c in mounted), None)


def run(args):
    """``classify`` on the connector: same records, filters, table, summary."""
    from .classify import Classifier, Stop, announce_ready, poll_timeouts, self_awareness

    print(NOTE, file=sys.stderr)
    for note in self_awareness():
        print(f"pybpfload: note: {note}", file=sys.stderr)
    resolver = process_view.Resolver(process_view.state_from_args(args))
    classifier = Classifier(resolver, v1_controller())
    records = ProcRecords(classifier)
    printer = None
    events = None

    def on_term(signum, frame):
        raise Stop()
    old_term = signal.signal(signal.SIGTERM, on_term)
    try:
        events = ProcEvents()
        if getattr(args, "ready_file", None):
            announce_ready(args.ready_file)
        if not args.no_seed:
            classifier.seed(walk())
        printer = process_view.EventPrinter(args, sys.stdout, ("container", "host", UNKNOWN))
        lost_reported = 0
        for timeout in poll_timeouts(args.duration):
            for kind, pid, parent, ts in events.poll(timeout):
                if kind == "fork":
                    records.forked(pid, parent)
                    continue
                if kind == "exit":
                    records.exited(pid)
                    continue
                printer.emit(records.record(pid, ts))
            sys.stdout.flush()
            if events.lost > lost_reported:
                print(f"pybpfload: warning: the connector's socket overflowed "
                      f"{events.lost - lost_reported} time(s): events lost", file=sys.stderr)
                lost_reported = events.lost
    except (KeyboardInterrupt, Stop):
        pass
    finally:
        signal.signal(signal.SIGTERM, old_term)
        lost = events.lost if events is not None else 0
        if events is not None:
            events.close()
        c = printer.counts if printer is not None else dict.fromkeys(
            ("events", "container", "host", UNKNOWN, "shown"), 0)
        print(f"pybpfload classify: {c['events']} execs ({c['container']} in "
              f"containers, {c['host']} on the host, {c[UNKNOWN]} unknown: gone "
              f"before /proc was read), {c['shown']} shown, {lost} overruns "
              f"(source netlink)", file=sys.stderr)
    return 0
