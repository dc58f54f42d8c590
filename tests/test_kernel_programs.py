"""Program loading, verifier errors, BTF loading, attaching and detaching,
against the real kernel (programs are hand-assembled: see test_kernel_asm)."""

import os
import struct
import time

import pytest

from pybpfload.errors import AttachError, BTFError, VerifierError
from pybpfload.kernel import features, ids, programs
from pybpfload.kernel.attach import (attach_kprobe, attach_raw_tracepoint,
                                     attach_tracepoint, attach_tracing)
from pybpfload.kernel.btf_load import load_btf
from pybpfload.kernel.maps import Map
from pybpfload.kernel.programs import load_program
from pybpfload.obj.spec import MapSpec

from test_kernel_asm import (PROG_RAW_TRACEPOINT, PROG_TRACEPOINT, PROG_TRACING,
                             bad_prog, counter_prog)

pytestmark = pytest.mark.root

TP = "syscalls/sys_enter_getppid"


@pytest.fixture
def counter():
    m = Map.create(MapSpec("counter", 2, 4, 8, 1))
    yield m
    m.close()


def count(m):
    return struct.unpack("<Q", m.lookup(0))[0]


def fire(n=10):
    for _ in range(n):
        os.getppid()


def test_load_info_tag_xlated(counter):
    with load_program(PROG_TRACEPOINT, counter_prog(counter.fileno()),
                      name="pybpf test/prog-name") as p:
        info = p.info()
        assert info.name == b"pybpf_test_prog"
        assert info.type == PROG_TRACEPOINT
        assert len(p.tag) == 16 and int(p.tag, 16)
        assert p.id in ids.prog_ids()
        assert len(p.xlated()) == info.xlated_prog_len > 0
        assert counter.info.id in [info.map_ids] or info.nr_map_ids == 1


def test_verifier_error_carries_reason_and_log():
    with pytest.raises(VerifierError) as exc:
        load_program(PROG_TRACEPOINT, bad_prog(), name="bad")
    err = exc.value
    assert "R2 !read_ok" in str(err).splitlines()[0]
    assert "processed" in err.log and "R2 !read_ok" in err.log
    assert len(str(err).splitlines()) <= programs.LOG_TAIL_LINES + 1


def test_verifier_log_grows_until_it_fits(monkeypatch, counter):
    # a long program whose log does not fit in 64 bytes: the retry must grow it
    monkeypatch.setattr(programs, "LOG_START", 64)
    code = counter_prog(counter.fileno())[:-16] + bad_prog()   # valid prefix, then bad tail
    with pytest.raises(VerifierError) as exc:
        load_program(PROG_TRACEPOINT, code, name="long")
    assert len(exc.value.log) > 64
    assert "R2 !read_ok" in exc.value.log


def test_bad_instruction_bytes_are_a_bpf_error():
    from pybpfload.errors import KernelError
    with pytest.raises(KernelError, match="multiple of 8"):
        load_program(PROG_TRACEPOINT, b"\x00" * 12)


def test_tracepoint_attach_detach_both_paths(counter):
    with load_program(PROG_TRACEPOINT, counter_prog(counter.fileno()), name="tp") as p:
        for use_link in (True, False):
            if use_link and not features.has_perf_link():
                continue
            start = count(counter)
            link = attach_tracepoint(p, TP, use_link=use_link)
            fire(10)
            assert count(counter) == start + 10
            link.close()
            assert link.closed
            fire(10)
            assert count(counter) == start + 10       # detached: no longer runs


def test_one_tracepoint_event_fires_on_every_cpu(counter):
    cpus = sorted(os.sched_getaffinity(0))
    with load_program(PROG_TRACEPOINT, counter_prog(counter.fileno()), name="tp") as p, \
            attach_tracepoint(p, TP):
        try:
            for i, cpu in enumerate(cpus):
                os.sched_setaffinity(0, {cpu})
                fire(5)
                assert count(counter) == 5 * (i + 1), f"not run on CPU {cpu}"
        finally:
            os.sched_setaffinity(0, cpus)


def test_raw_tracepoint_attach_detach(counter):
    with load_program(PROG_RAW_TRACEPOINT, counter_prog(counter.fileno()), name="raw") as p:
        link = attach_raw_tracepoint(p, "sys_enter")
        fire(10)
        assert count(counter) >= 10     # every syscall of ours, map lookups included
        link.close()                    # its own close(2) still counts: read after it
        after = count(counter)
        fire(10)
        assert count(counter) == after


@pytest.mark.skipif(not features.has_tp_btf(), reason="no tp_btf")
def test_tp_btf_attach_detach(counter):
    tid = features.vmlinux_type_id("btf_trace_sys_enter", 8)
    with load_program(PROG_TRACING, counter_prog(counter.fileno()), name="tpbtf",
                      expected_attach_type=23, attach_btf_id=tid) as p:
        link = attach_tracing(p)
        fire(10)
        assert count(counter) >= 10
        link.close()                # its own close(2) still counts: read after it
        after = count(counter)
        fire(10)
        assert count(counter) == after


@pytest.mark.skipif(__import__("pybpfload.kernel.tracefs", fromlist=["x"]).has_kprobes(),
                    reason="this kernel has kprobes")
def test_missing_tracepoint_and_kprobe_are_attach_errors(counter):
    with load_program(PROG_TRACEPOINT, counter_prog(counter.fileno()), name="tp") as p:
        with pytest.raises(AttachError, match="does not exist.*available_events"):
            attach_tracepoint(p, "syscalls/sys_enter_no_such_call")
        with pytest.raises(AttachError, match="category/name"):
            attach_tracepoint(p, "no-slash")
        with pytest.raises(AttachError, match="load it as a raw_tracepoint program"):
            attach_raw_tracepoint(p, "sys_enter")
        with pytest.raises(AttachError, match="no kprobe support"):
            attach_kprobe(p, "do_sys_openat2")
    with load_program(PROG_RAW_TRACEPOINT, counter_prog(counter.fileno()), name="raw") as r:
        with pytest.raises(AttachError, match="raw tracepoint nope_xyz does not exist"):
            attach_raw_tracepoint(r, "nope_xyz")


def test_btf_load_and_rejection():
    from pybpfload.kernel.features import _KIND_PROBES, _STRS, _btf_blob
    with load_btf(_btf_blob(_KIND_PROBES["func"], _STRS)) as fd:
        assert fd.fileno() >= 0
    broken = bytearray(_btf_blob(_KIND_PROBES["func"], _STRS))
    broken[24 + 12 + 4 + 7] = 0x7F            # int's kind -> an unknown kind
    with pytest.raises(BTFError, match="kernel rejected the BTF") as exc:
        load_btf(bytes(broken))
    assert exc.value.log


def test_closing_everything_leaves_no_ids_or_fds():
    fds_before = len(os.listdir("/proc/self/fd"))
    before = (set(ids.prog_ids()), set(ids.map_ids()), set(ids.link_ids()))
    m = Map.create(MapSpec("leak", 2, 4, 8, 1))
    p = load_program(PROG_TRACEPOINT, counter_prog(m.fileno()), name="leak")
    r = load_program(PROG_RAW_TRACEPOINT, counter_prog(m.fileno()), name="leak_raw")
    links = [attach_tracepoint(p, TP), attach_raw_tracepoint(r, "sys_enter")]
    fire(3)
    assert count(m) >= 6
    now = (set(ids.prog_ids()), set(ids.map_ids()), set(ids.link_ids()))
    assert all(n - b for n, b in zip(now, before))
    for obj in links + [p, r, m]:
        obj.close()
    assert len(os.listdir("/proc/self/fd")) == fds_before
    for _ in range(200):     # ids are released after an RCU grace period
        now = (set(ids.prog_ids()), set(ids.map_ids()), set(ids.link_ids()))
        if not any(n - b for n, b in zip(now, before)):
            break
        time.sleep(0.02)
    assert not any(n - b for n, b in zip(now, before))
