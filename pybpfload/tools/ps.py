"""``python -m pybpfload ps``: running processes classified as container or host.

No BPF: walks ``/proc``, identifies each process's container from its cgroup
paths (:mod:`.containers`), names it from the runtime's state on disk
(:mod:`.runtime_state`) and prints a table (12-character ids) or one JSON
object per line (full ids).  Everything a process chose (name, arguments,
container names) is printed escaped.
"""

import sys

from . import output
from .containers import classify_process, identify
from .procfs import PROC, walk
from .runtime_state import RuntimeState

COLUMNS = [("PID", 7), ("PPID", 7), ("NSPID", 6), ("COMM", 16), ("TYPE", 9), ("RUNTIME", 14),
           ("CONTAINER", 12), ("NAME", 20), ("ARGS", None)]


def add_arguments(parser):
    parser.add_argument("--json", action="store_true", help="one JSON object per process and line")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--containers", action="store_true", help="only processes in containers")
    which.add_argument("--host", action="store_true", help="only host processes")
    parser.add_argument("--container", metavar="ID-or-name",
                        help="only this container (an id prefix or its name)")
    parser.add_argument("--runtime", metavar="R", help="only this runtime (docker, podman, runc...)")
    parser.add_argument("--kernel-threads", action="store_true", help="include kernel threads")
    parser.add_argument("--proc", default=PROC, help="procfs mount point (default: %(default)s)")
    parser.add_argument("--state-root", action="append", default=[], metavar="RUNTIME=DIR",
                        help="a runtime's state root, e.g. docker=/data/docker (repeatable)")


def _roots(pairs):
    roots = {}
    for pair in pairs or ():
        rt, sep, path = pair.partition("=")
        if sep and rt and path:
            roots[rt] = path
    return roots


def records(proc=PROC, state=None, kernel_threads=False):
    """Yield one dict per process, with the JSON field names of ``ps --json``."""
    state = state if state is not None else RuntimeState()
    identities = {}
    for p in walk(proc, kernel_threads=kernel_threads):
        key = tuple(p.cgroup)
        ident = identities.get(key)
        if ident is None:
            ident = identify(p.cgroup, state)
            identities[key] = ident
        cls = classify_process(ident, p.pidns_level, p.comm)
        info = state.info(ident.runtime, ident.container_id, ident.namespace) if ident.container_id else None
        v2 = [path for hid, ctrl, path in p.cgroup if hid == 0 and ctrl == ""]
        yield {
            "pid": p.pid,
            "ppid": p.ppid,
            "nspid": p.innermost_pid,
            "uid": p.uid,
            "comm": output.text(p.comm),
            "args": [output.text(a) for a in p.args],
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
            "cgroup": ident.cgroup or (v2[0] if v2 else (p.cgroup[0][2] if p.cgroup else None)),
            "pidns": p.pidns,
            "mntns": p.mntns,
        }


def _wanted(rec, args):
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


def run(args):
    state = RuntimeState(_roots(getattr(args, "state_root", None)))
    out = sys.stdout
    table = None
    if not args.json:
        table = output.Table(COLUMNS, out)
        table.header()
    for rec in records(getattr(args, "proc", PROC), state, getattr(args, "kernel_threads", False)):
        if not _wanted(rec, args):
            continue
        if args.json:
            out.write(output.json_line(rec) + "\n")
        else:
            rtype = rec["type"] + ("*" if rec["helper"] else "")
            table.row([rec["pid"], rec["ppid"] if rec["ppid"] is not None else "-",
                       rec["nspid"] if rec["nspid"] is not None else "-", rec["comm"], rtype, rec["runtime"] or "-",
                       output.short_id(rec["container_id"]) or "-",
                       rec["container_name"] or "-", " ".join(rec["args"]) or f"[{rec['comm']}]"])
    out.flush()
    return 0
