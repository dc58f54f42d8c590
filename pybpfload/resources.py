"""Finding the prebuilt BPF objects wherever pybpfload lives.

The objects are package data under ``pybpfload/prebuilt/``: in a source
tree that directory is a symlink to the top-level ``prebuilt/`` (which
``make`` rebuilds), an installed wheel carries real copies, and in the
zipapp they are members of the zip.  ``importlib.resources`` covers all
three; a zip member is read from the zip, never through a file path.

``prebuilt_object(name)`` returns a ``Traversable`` (a ``pathlib.Path`` on
disk, a ``zipfile.Path`` inside a zip) that ``BPFObject`` accepts as is;
``prebuilt_bytes(name)`` returns the object's bytes.
"""

import os
import pathlib
from importlib import resources as _resources

from .errors import BPFError

PACKAGE = "pybpfload"
SUBDIR = "prebuilt"


class MissingObjectError(BPFError):
    """A prebuilt object is not where the package keeps it."""


def _source_tree_dir():
    """The top-level prebuilt/ of a source checkout (symlink-less checkouts)."""
    return pathlib.Path(__file__).resolve().parent.parent / SUBDIR


def prebuilt_object(name):
    """The prebuilt object ``name`` (e.g. ``"classify.bpf.o"``) as a Traversable."""
    if not name or "/" in name or name.startswith("."):
        raise MissingObjectError(f"bad prebuilt object name {name!r}",
                                 hint="give a file name such as classify.bpf.o")
    try:
        candidate = _resources.files(PACKAGE).joinpath(SUBDIR).joinpath(name)
        if candidate.is_file():
            return candidate
    except (OSError, TypeError, ModuleNotFoundError):
        pass
    fallback = _source_tree_dir() / name
    if fallback.is_file():
        return fallback
    raise MissingObjectError(f"the prebuilt BPF object {name} is missing",
                             hint="reinstall pybpfload, or run 'make' in its source tree")


def prebuilt_bytes(name):
    """The bytes of the prebuilt object ``name``."""
    return prebuilt_object(name).read_bytes()


def prebuilt_names():
    """Names of every shipped prebuilt object, sorted."""
    try:
        root = _resources.files(PACKAGE).joinpath(SUBDIR)
        names = [entry.name for entry in root.iterdir() if entry.name.endswith(".bpf.o")]
    except (OSError, TypeError, ModuleNotFoundError):
        names = []
    if not names and _source_tree_dir().is_dir():
        names = [n for n in os.listdir(_source_tree_dir()) if n.endswith(".bpf.o")]
    return sorted(names)
