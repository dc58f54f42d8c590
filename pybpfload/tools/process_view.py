"""What ``ps`` and ``classify`` both show of a process: one record, one row.

A record is a dict with the JSON field names documented in README.  The
container part of it is computed once per container (:class:`Resolver`),
the filters (``--containers``, ``--host``, ``--container``, ``--runtime``)
and the table columns are the same for both commands.
"""

from collections import OrderedDict

from . import output
from .containers import classify_process, identify
from .runtime_state import RuntimeState

COLUMNS = [("PID", 7), ("PPID", 7), ("NSPID", 6), ("COMM", 16), ("TYPE", 10), ("RUNTIME", 14),
           ("CONTAINER", 12), ("NAME", 20), ("ARGS", None)]


def add_filter_arguments(parser):
    parser.add_argument("--json", action="store_true",
                        help="one JSON object per line (full ids, every field)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--containers", action="store_true", help="only processes in containers")
    which.add_argument("--host", action="store_true", help="only host processes")
    parser.add_argument("--container", metavar="ID-or-name",
                        help="only this container (an id prefix or its name)")
    parser.add_argument("--runtime", metavar="R",
                        help="only this runtime (docker, containerd, cri-o, podman, lxc, "
                             "systemd-nspawn, runc, crun)")
    parser.add_argument("--state-root", action="append", default=[], metavar="RUNTIME=DIR",
                        help="a runtime's state root, e.g. docker=/data/docker (repeatable)")


def state_from_args(args):
    roots = {}
    for pair in getattr(args, "state_root", None) or ():
        rt, sep, path = pair.partition("=")
        if sep and rt and path:
            roots[rt] = path
    return RuntimeState(roots)


def wanted(rec, args):
    """Does ``rec`` pass the command line's filters?"""
    if args.containers and rec["type"] != "container":
        return False
    if args.host and rec["type"] != "host":
        return False
    if args.runtime and rec["runtime"] != args.runtime:
        return False
    if args.container:
        want = args.container
        cid = rec["container_id"] or ""
        if not (cid and cid.startswith(want)) and rec["container_name"] != want:
            return False
    return True


def table_values(rec):
    """The row values for :data:`COLUMNS`."""
    rtype = rec["type"] + ("*" if rec.get("helper") else "")
    args = rec.get("args") or []
    comm = rec["comm"] if rec["comm"] is not None else "?"
    return [rec["pid"], _dash(rec["ppid"]), _dash(rec["nspid"]), comm, rtype,
            rec["runtime"] or "-", output.short_id(rec["container_id"]) or "-",
            rec["container_name"] or "-",
            " ".join(output.text(a) for a in args) or f"[{output.text(comm)}]"]


class EventPrinter:
    """Prints live records (``classify``) as a table with a TIME column or as
    JSON lines, after the command line's filters, and counts them."""

    def __init__(self, args, out, kinds=("container", "host")):
        self.args = args
        self.out = out
        self.counts = dict.fromkeys(("events", "shown") + tuple(kinds), 0)
        self.table = None
        if not args.json:
            self.table = output.Table([("TIME", 8)] + COLUMNS, out)
            self.table.header()
            out.flush()

    def emit(self, rec):
        counts = self.counts
        counts["events"] += 1
        counts[rec["type"]] = counts.get(rec["type"], 0) + 1
        if not wanted(rec, self.args):
            return
        counts["shown"] += 1
        if self.table is None:
            self.out.write(output.json_line(rec) + "\n")
        else:
            self.table.row([rec["time"][11:19]] + table_values(rec))


def _dash(v):
    return "-" if v is None else v


class Resolver:
    """cgroup paths -> the container fields of a record, cached per cgroup.

    Container answers are kept (bounded, least recently used dropped);
    host answers are not, since a runtime's state may appear a moment later
    for a layout that needs it.
    """

    def __init__(self, state=None, max_entries=4096):
        self.state = state if state is not None else RuntimeState()
        self.max_entries = max_entries
        self._cache = OrderedDict()

    def identity(self, key, cgroup_input):
        ident = self._cache.get(key) if key is not None else None
        if ident is not None:
            self._cache.move_to_end(key)
            return ident
        ident = identify(cgroup_input, self.state)
        if key is not None and ident.runtime:
            self._cache[key] = ident
            if len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)
        return ident

    def forget(self, key):
        self._cache.pop(key, None)

    def fields(self, ident, pidns_level, comm):
        """The classification and container fields of a record."""
        cls = classify_process(ident, pidns_level, comm)
        info = (self.state.info(ident.runtime, ident.container_id, ident.namespace)
                if ident.container_id else None)
        return {
            "type": cls.type,
            "own_pidns": cls.own_pidns,
            "helper": cls.helper,
            "runtime": ident.runtime,
            "container_id": ident.container_id,
            "container_name": (info.name if info else "") or None,
            "image": (info.image if info else "") or None,
            "pod_uid": ident.pod_uid or ((info.pod_uid if info else "") or None),
            "pod_name": (info.pod_name if info else "") or None,
            "pod_namespace": (info.pod_namespace if info else "") or None,
        }
