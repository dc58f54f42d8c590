"""Iterate the ids of loaded programs, maps, links and BTF objects.

Tests compare these before and after to prove nothing leaked.
"""

import errno as _errno

from . import syscall as sc

__all__ = ["prog_ids", "map_ids", "link_ids", "btf_ids"]


def _ids(cmd, what):
    attr = sc.GetIdAttr()
    start = 0
    while True:
        attr.start_id, attr.next_id = start, 0
        ret, err = sc.bpf_errno(cmd, attr)
        if ret < 0:
            if err == _errno.ENOENT:
                return
            sc.raise_errno(err, f"listing {what} ids")
        start = attr.next_id
        yield start


def prog_ids():
    return list(_ids(sc.PROG_GET_NEXT_ID, "program"))


def map_ids():
    return list(_ids(sc.MAP_GET_NEXT_ID, "map"))


def link_ids():
    return list(_ids(sc.LINK_GET_NEXT_ID, "link"))


def btf_ids():
    return list(_ids(sc.BTF_GET_NEXT_ID, "BTF"))
