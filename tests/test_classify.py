"""``Classifier.record`` on synthetic ``exec_event`` bytes (no kernel needed).

The bytes are laid out from the prebuilt object's own BTF (member offsets and
sizes of ``struct exec_event``), decoded with the same :class:`Layout` the
command uses, and turned into records: cgroup paths (leaf first, as the BPF
program sends them) become container identities, hostile command names,
arguments and cgroup names (escape sequences, invalid UTF-8, newlines) give
valid JSON lines and escaped table rows.
"""

import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pybpfload.obj.elf import read_object_file
from pybpfload.obj.layout import Layout
from pybpfload.tools import classify, output, process_view
from pybpfload.tools.runtime_state import RuntimeState

from conftest import PREBUILT

H64 = "3f" * 32
UID = "0e8a2c1b-5f3d-4a6e-9b7c-1d2e3f4a5b6c"


@pytest.fixture(scope="module")
def btf():
    return read_object_file(str(PREBUILT / "classify.bpf.o")).btf


@pytest.fixture(scope="module")
def layout(btf):
    return Layout.of_struct(btf, "exec_event", raw=("args",))


class EventBuilder:
    """Writes members of ``struct exec_event`` at their BTF offsets."""

    def __init__(self, btf):
        (tid,) = btf.find("exec_event", 4)           # BTF_KIND_STRUCT
        self.btf = btf
        self.struct = btf[tid]
        self.size = btf.size_of(tid)
        self.members = {m.name: m for m in self.struct.members}

    def build(self, **values):
        buf = bytearray(self.size)
        values.setdefault("type", classify.EVENT_EXEC)
        for name, value in values.items():
            m = self.members[name]
            off = m.bit_offset // 8
            size = self.btf.size_of(m.type)
            if isinstance(value, int):
                buf[off:off + size] = value.to_bytes(size, "little")
            elif isinstance(value, (bytes, bytearray)):
                assert len(value) <= size, name
                buf[off:off + len(value)] = value
            else:                                      # a list of names: char [depth][len]
                each = size // 8
                for i, part in enumerate(value):
                    buf[off + i * each:off + i * each + len(part)] = part[:each - 1]
        return bytes(buf)

    def exec_event(self, v2=(), v1=None, comm=b"sh", args=(b"sh",), level=0, **kw):
        """v2/v1: cgroup path segments root first (reversed here, leaf first)."""
        packed = b"\0".join(args) + b"\0" if args else b""
        ev = dict(pid=4242, tid=4242, ppid=1, ns_pid=1 if level else 4242, pid_ns_level=level,
                  pid_ns_inum=4026532000 if level else classify.INIT_PID_NS_INO,
                  mnt_ns_inum=4026532001, cgroup_ns_inum=classify.INIT_CGROUP_NS_INO,
                  uid=0, gid=0, time_ns=10**9, cgroup_id=77, comm=comm[:15],
                  filename=b"/bin/" + comm[:200], filename_len=5 + len(comm[:200]),
                  args=packed[:256], args_len=min(len(packed), 256),
                  args_truncated=int(len(packed) > 256),
                  cgroup_v2_path=[s.encode() if isinstance(s, str) else s for s in reversed(v2)],
                  cgroup_v2_depth=len(v2))
        if v1 is not None:
            ev.update(v1_cgroup_id=88, cgroup_v1_depth=len(v1),
                      cgroup_v1_path=[s.encode() for s in reversed(v1)])
        ev.update(kw)
        return self.build(**ev)


@pytest.fixture(scope="module")
def builder(btf):
    return EventBuilder(btf)


@pytest.fixture
def classifier(tmp_path):
    # empty state roots: nothing is found on disk, every answer comes from the paths
    state = RuntimeState({rt: str(tmp_path / rt) for rt in
                          ("docker", "podman", "containerd", "cri-o", "runc", "crun")})
    return classify.Classifier(process_view.Resolver(state), "cpu")


def _record(classifier, layout, raw):
    return classifier.record(layout.decode(raw))


def test_layout_matches_the_builder(builder, layout):
    assert layout.size == builder.size == len(builder.build())
    ev = layout.decode(builder.exec_event(v2=["docker", H64], args=(b"a", b"b c")))
    assert ev["cgroup_v2_depth"] == 2 and bytes(ev["args"][:ev["args_len"]]) == b"a\0b c\0"


def test_host_process(builder, layout, classifier):
    rec = _record(classifier, layout, builder.exec_event(comm=b"ls", args=(b"ls", b"-l")))
    assert (rec["type"], rec["runtime"], rec["container_id"], rec["own_pidns"]) == \
        ("host", None, None, False)
    assert rec["args"] == ["ls", "-l"] and rec["cgroup"] == "/" and rec["cgroup_v1"] is None
    assert rec["pidns"] == classify.INIT_PID_NS_INO and rec["pidns_level"] == 0


@pytest.mark.parametrize("v2,runtime,cid,pod", [
    (["system.slice", f"docker-{H64}.scope"], "docker", H64, None),
    (["docker", H64], "docker", H64, None),
    (["kubepods.slice", "kubepods-burstable.slice",
      f"kubepods-burstable-pod{UID.replace('-', '_')}.slice", f"cri-containerd-{H64}.scope"],
     "containerd", H64, UID),
    (["kubepods", "besteffort", f"pod{UID}", f"crio-{H64}"], "cri-o", H64, UID),
    (["machine.slice", f"libpod-{H64}.scope", "container"], "podman", H64, None),
    (["lxc.payload.web"], "lxc", "web", None),
    (["machine.slice", "machine-box.scope", "payload"], "systemd-nspawn", "box", None),
])
def test_container_layouts(builder, layout, classifier, v2, runtime, cid, pod):
    rec = _record(classifier, layout, builder.exec_event(v2=v2, level=1))
    assert (rec["type"], rec["runtime"], rec["container_id"], rec["pod_uid"]) == \
        ("container", runtime, cid, pod)
    assert rec["own_pidns"] is True and rec["nspid"] == 1
    assert rec["cgroup"] == "/" + "/".join(v2)


def test_v1_path_used_when_v2_is_the_root(builder, layout, classifier):
    """Hybrid hosts: runtimes that only place processes in v1 controllers."""
    rec = _record(classifier, layout, builder.exec_event(v1=["docker", H64]))
    assert (rec["type"], rec["runtime"], rec["container_id"]) == ("container", "docker", H64)
    assert rec["cgroup_v1"] == f"/docker/{H64}" and rec["cgroup"] == f"/docker/{H64}"


def test_truncated_path_keeps_the_leaf(builder, layout, classifier):
    rec = _record(classifier, layout, builder.exec_event(
        v2=["a", "b", "c", "d", "e", "f", "system.slice", f"docker-{H64}.scope"],
        cgroup_v2_truncated=1))
    assert rec["cgroup"].startswith("...") and rec["container_id"] == H64


def test_helpers_by_comm_and_by_argv0(builder, layout, classifier):
    shim = _record(classifier, layout, builder.exec_event(
        comm=b"containerd-shim", args=(b"/usr/bin/containerd-shim-runc-v2", b"-id", b"x")))
    assert (shim["type"], shim["helper"]) == ("host", "containerd-shim")
    # runc's own re-exec through /proc/self/exe: comm is "exe", argv[0] is "runc"
    init = _record(classifier, layout, builder.exec_event(comm=b"exe", args=(b"runc", b"init")))
    assert init["helper"] == "runc"
    plain = _record(classifier, layout, builder.exec_event(comm=b"exe", args=(b"exe",)))
    assert plain["helper"] is None


def test_args_cut_and_empty(builder, layout, classifier):
    rec = _record(classifier, layout, builder.exec_event(args=(b"x" * 300,)))
    assert rec["args_truncated"] is True and rec["args"] == ["x" * 256]
    rec = _record(classifier, layout, builder.exec_event(args=()))
    assert rec["args"] == [] and process_view.table_values(rec)[-1] == "[sh]"


HOSTILE = [b"\x1b[2J\x1b]0;pwned\x07", b"a\nb\rc\td", b"\xff\xfe\xc3(", b"\xe2\x80\xae-evil",
           b"\\x41", b"\x9b31m"]


def _table_row(rec):
    buf = []

    class Out:
        def write(self, s):
            buf.append(s)
    output.Table([("TIME", 8)] + process_view.COLUMNS, Out()).row(
        [rec["time"][11:19]] + process_view.table_values(rec))
    return "".join(buf)


@pytest.mark.parametrize("evil", HOSTILE)
def test_hostile_strings(builder, layout, classifier, evil):
    raw = builder.exec_event(comm=evil[:15], args=(evil, b"ok", evil),
                             v2=["lxc.payload." + evil.decode("latin-1")[:40]])
    rec = _record(classifier, layout, raw)
    line = output.json_line(rec)
    assert "\n" not in line
    back = json.loads(line)
    assert back["args"][1] == "ok" and len(back["args"]) == 3
    row = _table_row(rec)
    assert row.count("\n") == 1 and row.endswith("\n")
    body = row[:-1]
    assert not any(c in body for c in "\x1b\r\n\t\x07\x9b\u202e"), repr(body)
    assert all(ord(c) >= 0x20 for c in body)


@settings(max_examples=150, deadline=None)
@given(comm=st.binary(max_size=15), args=st.lists(st.binary(min_size=1, max_size=60), max_size=6),
       segs=st.lists(st.binary(min_size=1, max_size=40), max_size=8),
       level=st.integers(0, 3))
def test_any_bytes_give_valid_json_and_one_safe_row(builder, layout, tmp_path_factory, comm, args,
                                                    segs, level):
    segs = [s.replace(b"\0", b"_").replace(b"/", b"_") for s in segs]
    args = [a.replace(b"\0", b"_") for a in args]
    state = RuntimeState({rt: str(tmp_path_factory.getbasetemp() / "none" / rt) for rt in
                          ("docker", "podman", "containerd", "cri-o", "runc", "crun")})
    c = classify.Classifier(process_view.Resolver(state))
    raw = builder.build(type=1, pid=9, tid=9, ns_pid=1, pid_ns_level=level, comm=comm,
                        args=(b"\0".join(args) + b"\0")[:256] if args else b"",
                        args_len=min(len(b"\0".join(args)) + 1, 256) if args else 0,
                        cgroup_v2_path=list(reversed(segs)), cgroup_v2_depth=len(segs))
    rec = c.record(layout.decode(raw))
    back = json.loads(output.json_line(rec))
    assert back["type"] in ("host", "container") and back["own_pidns"] is (level > 0)
    row = _table_row(rec)
    assert row.count("\n") == 1 and all(ord(ch) >= 0x20 for ch in row[:-1])


def test_pid_cache_is_bounded(builder, layout, tmp_path):
    c = classify.Classifier(process_view.Resolver(RuntimeState({"runc": str(tmp_path)})),
                            max_pids=3)
    for pid in range(10):
        c.record(layout.decode(builder.exec_event(pid=pid)))
    assert len(c.pids) == 3 and set(c.pids) == {7, 8, 9}
    c.exited(9)
    assert 9 not in c.pids


def test_time_is_wall_clock_utc(builder, layout, classifier):
    import time
    now_mono = time.monotonic()
    rec = _record(classifier, layout, builder.exec_event(time_ns=int(now_mono * 1e9)))
    stamp = rec["time"]
    assert stamp.endswith("Z") and stamp[:4] == time.strftime("%Y", time.gmtime())
    # the dispatch word the command reads before decoding
    assert struct.unpack("<I", builder.build()[:4])[0] == classify.EVENT_EXEC
