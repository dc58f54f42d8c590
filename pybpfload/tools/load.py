"""``python -m pybpfload load OBJ.o --pin DIR``: load an object and pin it in bpffs.

Like ``bpftool prog loadall OBJ DIR pinmaps DIR/maps``: every program is loaded
and pinned as ``DIR/<program name>`` (bpftool's convention, so
``bpftool prog show pinned DIR/<name>`` finds it), every map is pinned as
``<maps dir>/<map name>`` (``DIR/maps`` unless ``--pinmaps DIR2``; maps
declared with ``LIBBPF_PIN_BY_NAME`` stay where the object says,
``/sys/fs/bpf/<name>``).  With ``--attach`` every program is attached too
and its link pinned as ``DIR/links/<program name>``: the programs stay
attached after this command exits, until the pins are removed
(``rm -r DIR``).

``DIR`` must not exist yet, or be empty, and be on a mounted bpffs; on any
failure everything this command pinned and created is removed again.
"""

import os
import sys

from ..errors import BPFError, PinError

__all__ = ["add_arguments", "run", "parse_assignment"]


def add_arguments(parser):
    parser.add_argument("object", help="a BPF ELF object (.bpf.o)")
    parser.add_argument("--pin", required=True, metavar="DIR",
                        help="bpffs directory to pin the programs in (created; must be empty)")
    parser.add_argument("--pinmaps", metavar="DIR2",
                        help="bpffs directory to pin the maps in (default: DIR/maps)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="set a global (.rodata/.data) variable before loading; "
                             "integers in any Python base (0x..), else the text as bytes; "
                             "repeatable")
    parser.add_argument("--attach", action="store_true",
                        help="attach every program and pin its link under DIR/links, "
                             "so it stays attached after exit")


def parse_assignment(text):
    """``NAME=VALUE`` -> (name, int or bytes)."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise BPFError(f"--set {text!r} is not NAME=VALUE", hint="e.g. --set target_pid=42")
    try:
        return name, int(value, 0)
    except ValueError:
        return name, value.encode()


class _Pins:
    """Directories this command created, removed again on failure."""

    def __init__(self):
        self.created = []

    def prepare(self, path, what):
        from ..kernel.bpffs import is_bpffs
        path = os.path.abspath(path)
        if os.path.lexists(path):
            if not os.path.isdir(path) or os.path.islink(path):
                raise PinError(f"{what} {path} exists and is not a directory",
                               hint="choose a new directory on the bpffs")
            if os.listdir(path):
                raise PinError(f"{what} {path} exists and is not empty",
                               hint="remove what is pinned there (rm -r) or choose a new directory")
            if not is_bpffs(path):
                raise PinError(f"{what} {path} is not on a bpffs",
                               hint="mount one: mount -t bpf bpf /sys/fs/bpf, and pin under it")
            return path
        parent = os.path.dirname(path)
        if not os.path.isdir(parent) or not is_bpffs(parent):
            raise PinError(f"{what} {path}: {parent} is not a directory on a bpffs",
                           hint="mount one: mount -t bpf bpf /sys/fs/bpf, and pin under it")
        os.mkdir(path, 0o700)
        self.created.append(path)
        return path

    def undo(self):
        import shutil
        for path in reversed(self.created):
            shutil.rmtree(path, ignore_errors=True)
        self.created = []


def run(args):
    from ..kernel.bpf_object import BPFObject
    from ..kernel.memlock import ensure_memlock
    from . import output

    assignments = [parse_assignment(a) for a in args.set]
    if not os.path.isfile(args.object):
        raise BPFError(f"no object file {args.object}", hint="give the path of a .bpf.o")
    obj = BPFObject(args.object)
    pins = _Pins()
    try:
        for name, value in assignments:
            obj.set_variable(name, value)
        clash = set(obj.spec.programs) & {"maps", "links"}
        if clash and (args.pinmaps is None or args.attach):
            raise PinError(f"program {sorted(clash)[0]!r} would clash with the maps/links "
                           f"directory in {args.pin}",
                           hint="pin the maps elsewhere with --pinmaps, and do not --attach")
        ensure_memlock()
        prog_dir = pins.prepare(args.pin, "pin directory")
        map_dir = pins.prepare(args.pinmaps or os.path.join(prog_dir, "maps"), "map pin directory")
        obj.load()
        link_dir = None
        if args.attach:
            obj.attach()
            link_dir = pins.prepare(os.path.join(prog_dir, "links"), "link pin directory")
        paths = obj.pin(prog_dir, map_dir, link_dir)
    except BaseException:
        obj.close()
        pins.undo()
        raise
    obj.close(keep_links=True)
    for path in paths:
        sys.stdout.write(output.safe(path) + "\n")
    print(f"pybpfload load: pinned {len(paths)} objects under {output.safe(prog_dir)}"
          + (" (attached)" if args.attach else ""), file=sys.stderr)
    return 0
