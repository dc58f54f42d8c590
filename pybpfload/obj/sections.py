"""SEC() names: what program type, expected attach type and attach point a
section name stands for.

A program's ELF section name is the string given to ``SEC()`` in its C source,
e.g. ``tp/sched/sched_process_exec``.  The text before the first ``/`` picks
the kind of program; the rest (if any) names what to attach to.  A ``.s``
suffix on the prefix (``fentry.s/...``) asks for a sleepable program.

The numbers are the kernel's UAPI (``enum bpf_prog_type`` and ``enum
bpf_attach_type`` in ``include/uapi/linux/bpf.h``).
"""

from collections import namedtuple

from ..errors import UnknownSectionError

__all__ = ["SectionKind", "classify", "PROG_TYPES", "ATTACH_TYPES", "prog_type_name",
           "attach_type_name"]

# enum bpf_prog_type
PROG_TYPES = {
    "socket_filter": 1, "kprobe": 2, "sched_cls": 3, "sched_act": 4, "tracepoint": 5,
    "xdp": 6, "perf_event": 7, "cgroup_skb": 8, "cgroup_sock": 9, "lwt_in": 10,
    "lwt_out": 11, "lwt_xmit": 12, "sock_ops": 13, "sk_skb": 14, "cgroup_device": 15,
    "sk_msg": 16, "raw_tracepoint": 17, "cgroup_sock_addr": 18, "lwt_seg6local": 19,
    "lirc_mode2": 20, "sk_reuseport": 21, "flow_dissector": 22, "cgroup_sysctl": 23,
    "raw_tracepoint_writable": 24, "cgroup_sockopt": 25, "tracing": 26,
    "struct_ops": 27, "ext": 28, "lsm": 29, "sk_lookup": 30, "syscall": 31,
    "netfilter": 32,
}
_PROG_TYPE_NAMES = {v: k for k, v in PROG_TYPES.items()}

# enum bpf_attach_type (those a SEC() name can imply)
ATTACH_TYPES = {
    "cgroup_inet_ingress": 0, "cgroup_inet_egress": 1, "cgroup_inet_sock_create": 2,
    "cgroup_sock_ops": 3, "cgroup_device": 6, "trace_raw_tp": 23, "trace_fentry": 24,
    "trace_fexit": 25, "modify_return": 26, "lsm_mac": 27, "trace_iter": 28,
    "xdp": 37, "perf_event": 41, "trace_kprobe_multi": 42,
}
_ATTACH_TYPE_NAMES = {v: k for k, v in ATTACH_TYPES.items()}

#: What a section name means.  ``attach_kind`` is a word the attach layer
#: dispatches on; ``attach_to`` is the text after the prefix ('' when none).
SectionKind = namedtuple("SectionKind",
                         "prog_type expected_attach_type attach_kind attach_to sleepable")

# prefix -> (prog type, expected attach type, attach kind, needs a target after '/',
#            has a sleepable '.s' variant)
_P = PROG_TYPES
_A = ATTACH_TYPES
_RULES = {
    "tp": (_P["tracepoint"], 0, "tracepoint", True, False),
    "tracepoint": (_P["tracepoint"], 0, "tracepoint", True, False),
    "raw_tp": (_P["raw_tracepoint"], 0, "raw_tracepoint", True, False),
    "raw_tracepoint": (_P["raw_tracepoint"], 0, "raw_tracepoint", True, False),
    "raw_tp.w": (_P["raw_tracepoint_writable"], 0, "raw_tracepoint_writable", True, False),
    "raw_tracepoint.w": (_P["raw_tracepoint_writable"], 0, "raw_tracepoint_writable", True,
                         False),
    "tp_btf": (_P["tracing"], _A["trace_raw_tp"], "tp_btf", True, False),
    "kprobe": (_P["kprobe"], 0, "kprobe", True, False),
    "kretprobe": (_P["kprobe"], 0, "kretprobe", True, False),
    "ksyscall": (_P["kprobe"], 0, "ksyscall", True, False),
    "kretsyscall": (_P["kprobe"], 0, "kretsyscall", True, False),
    "kprobe.multi": (_P["kprobe"], _A["trace_kprobe_multi"], "kprobe_multi", True, False),
    "uprobe": (_P["kprobe"], 0, "uprobe", False, True),
    "uretprobe": (_P["kprobe"], 0, "uretprobe", False, True),
    "usdt": (_P["kprobe"], 0, "usdt", False, False),
    "socket": (_P["socket_filter"], 0, "socket", False, False),
    "xdp": (_P["xdp"], _A["xdp"], "xdp", False, False),
    "tc": (_P["sched_cls"], 0, "tc", False, False),
    "classifier": (_P["sched_cls"], 0, "tc", False, False),
    "action": (_P["sched_act"], 0, "tc_action", False, False),
    "perf_event": (_P["perf_event"], 0, "perf_event", False, False),
    "fentry": (_P["tracing"], _A["trace_fentry"], "fentry", True, True),
    "fexit": (_P["tracing"], _A["trace_fexit"], "fexit", True, True),
    "fmod_ret": (_P["tracing"], _A["modify_return"], "fmod_ret", True, True),
    "freplace": (_P["ext"], 0, "freplace", True, False),
    "lsm": (_P["lsm"], _A["lsm_mac"], "lsm", True, True),
    "iter": (_P["tracing"], _A["trace_iter"], "iter", True, True),
    "syscall": (_P["syscall"], 0, "syscall", False, False),
    "struct_ops": (_P["struct_ops"], 0, "struct_ops", False, True),
}

# cgroup_skb/ingress, cgroup_skb/egress: the suffix IS the attach type
_CGROUP_SKB = {
    "ingress": _A["cgroup_inet_ingress"],
    "egress": _A["cgroup_inet_egress"],
}


def classify(section):
    """Return the :class:`SectionKind` of a program section name.

    Raises ``UnknownSectionError`` naming the section when the name is not
    one pybpfload understands.
    """
    prefix, sep, rest = section.partition("/")
    if prefix == "cgroup_skb":
        if rest in _CGROUP_SKB:
            return SectionKind(_P["cgroup_skb"], _CGROUP_SKB[rest], "cgroup_skb", rest, False)
        raise UnknownSectionError(
            f"section {section!r}: cgroup_skb programs need SEC(\"cgroup_skb/ingress\") "
            "or SEC(\"cgroup_skb/egress\")")
    sleepable = False
    rule = _RULES.get(prefix)
    if rule is None and prefix.endswith(".s"):
        rule = _RULES.get(prefix[:-2])
        if rule is not None and not rule[4]:
            rule = None
        sleepable = rule is not None
    if rule is None:
        raise UnknownSectionError(
            f"section {section!r} is not a known program type",
            hint="use a SEC() name such as tp/CATEGORY/EVENT, raw_tp/EVENT, kprobe/FUNC, "
                 "xdp, socket, fentry/FUNC")
    prog_type, attach_type, kind, needs_target, _ = rule
    if needs_target and not rest:
        raise UnknownSectionError(
            f"section {section!r} names no attach point",
            hint=f"write SEC(\"{prefix}/TARGET\")")
    if kind == "tracepoint" and "/" not in rest:
        raise UnknownSectionError(
            f"section {section!r}: a tracepoint is CATEGORY/EVENT",
            hint=f"write SEC(\"{prefix}/CATEGORY/EVENT\"), e.g. tp/sched/sched_process_exec")
    return SectionKind(prog_type, attach_type, kind, rest, sleepable)


def prog_type_name(prog_type):
    """Lower-case name of an ``enum bpf_prog_type`` number (or the number)."""
    return _PROG_TYPE_NAMES.get(prog_type, str(prog_type))


def attach_type_name(attach_type):
    """Lower-case name of an ``enum bpf_attach_type`` number (or the number)."""
    return _ATTACH_TYPE_NAMES.get(attach_type, str(attach_type))
