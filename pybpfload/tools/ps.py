"""``python -m pybpfload ps``: running processes classified as container or host.

No BPF: walks ``/proc``, identifies each process's container from its cgroup
paths (:mod:`.containers`), names it from the runtime's state on disk
(:mod:`.runtime_state`) and prints a table (12-character ids) or one JSON
object per line (full ids).  Everything a process chose (name, arguments,
container names) is printed escaped.
"""

import sys

from . import output, process_view
from .procfs import PROC, walk


def add_arguments(parser):
    process_view.add_filter_arguments(parser)
    parser.add_argument("--kernel-threads", action="store_true", help="include kernel threads")
    parser.add_argument("--proc", default=PROC, help="procfs mount point (default: %(default)s)")


def records(proc=PROC, state=None, kernel_threads=False):
    """Yield one dict per process, with the JSON field names of ``ps --json``."""
    resolver = process_view.Resolver(state)
    for p in walk(proc, kernel_threads=kernel_threads):
        ident = resolver.identity(tuple(p.cgroup), p.cgroup)
        v2 = [path for hid, ctrl, path in p.cgroup if hid == 0 and ctrl == ""]
        rec = {
            "pid": p.pid,
            "ppid": p.ppid,
            "nspid": p.innermost_pid,
            "uid": p.uid,
            "comm": output.text(p.comm),
            "args": [output.text(a) for a in p.args],
        }
        rec.update(resolver.fields(ident, p.pidns_level, p.comm))
        rec.update({
            "cgroup": ident.cgroup or (v2[0] if v2 else (p.cgroup[0][2] if p.cgroup else None)),
            "pidns": p.pidns,
            "mntns": p.mntns,
        })
        yield rec


def run(args):
    state = process_view.state_from_args(args)
    out = sys.stdout
    table = None
    if not args.json:
        table = output.Table(process_view.COLUMNS, out)
        table.header()
    for rec in records(getattr(args, "proc", PROC), state, getattr(args, "kernel_threads", False)):
        if not process_view.wanted(rec, args):
            continue
        if args.json:
            out.write(output.json_line(rec) + "\n")
        else:
            table.row(process_view.table_values(rec))
    out.flush()
    return 0
