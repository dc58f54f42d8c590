"""Perf rings and BPF ring buffers: real kernel events (including overruns,
where reported + lost must equal emitted) and the pure decoders over
synthetic in-memory rings (wrapping records, lost records, malformed input)."""

import os
import struct

import pytest
from hypothesis import given, settings, strategies as st

from pybpfload.errors import ParseError
from pybpfload.kernel.attach import attach_tracepoint
from pybpfload.kernel.maps import Map
from pybpfload.kernel.perf_buffer import PerfBuffer, decode_perf_records
from pybpfload.kernel.programs import load_program
from pybpfload.kernel.ringbuf import (BUSY_BIT, DISCARD_BIT, RingBuffer,
                                      decode_ringbuf_records)
from pybpfload.obj.spec import MapSpec

from test_kernel_asm import PROG_TRACEPOINT, output_prog

BURST = "syscalls/sys_enter_getppid"
SINGLE = "syscalls/sys_enter_getpgid"


# -- synthetic rings ------------------------------------------------------------

def perf_sample(payload):
    raw = 4 + len(payload)
    size = (8 + raw + 7) & ~7
    return struct.pack("<IHHI", 9, 0, size, len(payload)) + payload + b"\0" * (size - 8 - raw)


def perf_lost(n):
    return struct.pack("<IHHQQ", 2, 0, 24, 7, n)


def write_ring(size, start, records):
    ring = bytearray(size)
    pos = start
    for rec in records:
        for i, b in enumerate(rec):
            ring[(pos + i) % size] = b
        pos += len(rec)
    return ring, pos


def test_perf_decoder_handles_wrap_and_lost():
    payloads = [bytes([i]) * (20 + i) for i in range(10)]
    records = [perf_sample(p) for p in payloads[:5]] + [perf_lost(3)] + \
        [perf_sample(p) for p in payloads[5:]]
    for start in (0, 200, 250, 4096 - 8, 4096 * 5 + 100):
        ring, head = write_ring(256, start, records[:6])
        out = []
        lost = decode_perf_records(ring, start, head, out)
        assert [bytes(x) for x in out] == payloads[:5] and lost == 3


def test_perf_decoder_rejects_malformed():
    ring = bytearray(64)
    ring[:8] = struct.pack("<IHH", 9, 0, 0)        # zero-sized record
    with pytest.raises(ParseError):
        decode_perf_records(ring, 0, 8, [])
    ring[:12] = struct.pack("<IHHI", 9, 0, 16, 100)  # payload larger than record
    with pytest.raises(ParseError):
        decode_perf_records(ring, 0, 16, [])
    with pytest.raises(ParseError):
        decode_perf_records(bytearray(48), 0, 8, [])  # not a power of two


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=64, max_size=64), st.integers(0, 200), st.integers(0, 80))
def test_perf_decoder_raises_only_parse_error(data, tail, span):
    try:
        decode_perf_records(bytearray(data), tail, tail + span, [])
    except ParseError:
        pass


def rb_record(payload, flags=0):
    total = (8 + len(payload) + 7) & ~7
    return struct.pack("<II", len(payload) | flags, 0) + payload + b"\0" * (total - 8 - len(payload))


def test_ringbuf_decoder_wrap_discard_busy():
    recs = [rb_record(b"a" * 13), rb_record(b"b" * 40, DISCARD_BIT), rb_record(b"c" * 30),
            rb_record(b"d" * 8, BUSY_BIT), rb_record(b"e" * 8)]
    for start in (0, 96, 120, 200, 256 * 7 + 232):
        ring, prod = write_ring(256, start, recs)
        out = []
        cons, discarded = decode_ringbuf_records(ring, 256, start, prod, out)
        assert [bytes(x) for x in out] == [b"a" * 13, b"c" * 30]
        assert discarded == 1
        assert cons == start + len(recs[0]) + len(recs[1]) + len(recs[2])   # stops at BUSY


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=64, max_size=64), st.integers(0, 200), st.integers(0, 80))
def test_ringbuf_decoder_raises_only_parse_error(data, cons, span):
    try:
        decode_ringbuf_records(bytearray(data), 64, cons, cons + span, [])
    except ParseError:
        pass


# -- real kernel events -----------------------------------------------------------

@pytest.fixture
def on_cpu0():
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {0})
    yield
    os.sched_setaffinity(0, cpus)


def seqs(events):
    return [struct.unpack_from("<QQ", e) for e in events]


@pytest.mark.root
def test_perf_buffer_real_events(on_cpu0):
    with Map.create(MapSpec("events", 4, 4, 4, 64)) as pm, \
            load_program(PROG_TRACEPOINT, output_prog(pm.fileno(), 64, count=4), name="out") as p, \
            PerfBuffer(pm, page_count=8) as pb, attach_tracepoint(p, BURST):
        for _ in range(5):
            os.getppid()
        events = pb.poll(1000)
        # the kernel pads raw samples so that u32 size + data is 8-aligned: 64 -> 68
        assert len(events) == 20 and all(len(e) == 68 for e in events)
        assert seqs(events) == [(n, os.getpid()) for n in range(4)] * 5
        assert pb.lost == 0
        pb.release()
        assert pb.poll(0) == []


@pytest.mark.root
def test_perf_buffer_overrun_counts_lost(on_cpu0):
    with Map.create(MapSpec("events", 4, 4, 4, 64)) as pm, \
            load_program(PROG_TRACEPOINT, output_prog(pm.fileno(), 64, count=64), name="burst") as burst, \
            load_program(PROG_TRACEPOINT, output_prog(pm.fileno(), 64, count=1), name="one") as one, \
            PerfBuffer(pm, page_count=1) as pb, attach_tracepoint(burst, BURST), \
            attach_tracepoint(one, SINGLE):
        for _ in range(3):
            os.getppid()                     # 192 events into a 4 KiB ring
        got = pb.poll(1000, callback=lambda evs: None)
        os.getpgid(0)                        # ring empty: the LOST record, then 1 event
        got += pb.poll(1000, callback=lambda evs: None)
        assert pb.lost > 0 and got > 0
        assert got + pb.lost == 3 * 64 + 1


@pytest.mark.root
def test_ringbuf_real_events_and_overrun(on_cpu0):
    with Map.create(MapSpec("rb", 27, 0, 0, 4096)) as rm, \
            Map.create(MapSpec("drops", 2, 4, 8, 1)) as drops, \
            load_program(PROG_TRACEPOINT, output_prog(rm.fileno(), 64, count=16, ringbuf=True,
                                                      drop_counter_fd=drops.fileno()),
                         name="rb") as p, \
            RingBuffer(rm, counter_map=drops) as rb, attach_tracepoint(p, BURST):
        os.getppid()
        events = rb.poll(1000)
        assert seqs(events) == [(n, os.getpid()) for n in range(16)]
        assert rb.dropped == 0
        rb.release()
        for _ in range(10):                   # 160 x 72 bytes into a 4 KiB ring
            os.getppid()
        got = rb.poll(1000, callback=lambda evs: None)
        assert rb.dropped > 0
        assert got + rb.dropped == 160
        assert rb.poll(0) == []


@pytest.mark.root
def test_readers_leave_no_fds():
    before = len(os.listdir("/proc/self/fd"))
    with Map.create(MapSpec("events", 4, 4, 4, 64)) as pm:
        pb = PerfBuffer(pm, page_count=2)
        pb.close()
    with Map.create(MapSpec("rb", 27, 0, 0, 8192)) as rm:
        RingBuffer(rm).close()
    assert len(os.listdir("/proc/self/fd")) == before
