"""Events per second decoded by the perf-ring and ring-buffer readers.

Real kernel events: a hand-assembled tracepoint program emits 64 events of
64 bytes per getppid() call; we fire batches of calls, then time only the
drain (decode + hand-back) of what the kernel wrote.  Synthetic: the pure
decoders over an in-memory ring full of 64-byte events.

    sudo python3 bench/rings.py [--json]   (--json: one JSON object, no table)
"""

import json
import os
import struct
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

from pybpfload.kernel.attach import attach_tracepoint  # noqa: E402
from pybpfload.kernel.maps import Map  # noqa: E402
from pybpfload.kernel.perf_buffer import PerfBuffer, decode_perf_records  # noqa: E402
from pybpfload.kernel.programs import load_program  # noqa: E402
from pybpfload.kernel.ringbuf import RingBuffer, decode_ringbuf_records  # noqa: E402
from pybpfload.obj.spec import MapSpec  # noqa: E402

from test_kernel_asm import PROG_TRACEPOINT, output_prog  # noqa: E402

EVENT = 64
PER_CALL = 64
TP = "syscalls/sys_enter_getppid"


def synthetic_perf(n_records=16384):
    rec = struct.pack("<IHHI", 9, 0, 8 + 4 + EVENT + 4, EVENT + 4) + b"x" * (EVENT + 4)
    ring = rec * n_records
    size = 1 << (len(ring) - 1).bit_length()
    ring += b"\0" * (size - len(ring))
    buf = memoryview(bytearray(ring))
    best = 0.0
    for _ in range(5):
        out = []
        t = time.perf_counter()
        decode_perf_records(buf, 0, n_records * len(rec), out)
        best = max(best, n_records / (time.perf_counter() - t))
    return best


def synthetic_ringbuf(n_records=16384):
    rec = struct.pack("<II", EVENT, 0) + b"x" * EVENT
    ring = rec * n_records
    size = 1 << (len(ring) - 1).bit_length()
    ring += b"\0" * (size - len(ring))
    buf = memoryview(bytearray(ring + ring))      # the kernel maps the data area twice
    best = 0.0
    for _ in range(5):
        out = []
        t = time.perf_counter()
        decode_ringbuf_records(buf, size, 0, n_records * len(rec), out)
        best = max(best, n_records / (time.perf_counter() - t))
    return best


def kernel(reader_kind, calls_per_batch=150, batches=20):
    os.sched_setaffinity(0, {0})
    if reader_kind == "perf":
        m = Map.create(MapSpec("events", 4, 4, 4, 64))
        code = output_prog(m.fileno(), EVENT, count=PER_CALL)
    else:
        m = Map.create(MapSpec("rb", 27, 0, 0, 1 << 21))
        code = output_prog(m.fileno(), EVENT, count=PER_CALL, ringbuf=True)
    prog = load_program(PROG_TRACEPOINT, code, name="bench")
    reader = PerfBuffer(m, page_count=512) if reader_kind == "perf" else RingBuffer(m)
    link = attach_tracepoint(prog, TP)
    total = 0
    spent = 0.0
    t_all = time.perf_counter()
    try:
        for _ in range(batches):
            for _ in range(calls_per_batch):
                os.getppid()
            t = time.perf_counter()
            total += reader.poll(0, callback=len)
            spent += time.perf_counter() - t
        wall = time.perf_counter() - t_all
        lost = getattr(reader, "lost", 0)
    finally:
        link.close()
        reader.close()
        prog.close()
        m.close()
    emitted = batches * calls_per_batch * PER_CALL
    return total, lost, emitted, total / spent, total / wall


def main_json():
    """The same measurements as one JSON object (for bench/run_all.py)."""
    out = {"event_bytes": EVENT, "synthetic": {"perf": synthetic_perf(),
                                              "ringbuf": synthetic_ringbuf()}, "kernel": {}}
    if os.geteuid() == 0:
        for kind in ("perf", "ringbuf"):
            got, lost, emitted, rate, wall = kernel(kind)
            out["kernel"][kind] = {"read": got, "lost": lost, "emitted": emitted,
                                   "drain_events_per_s": rate, "with_producing_per_s": wall}
    print(json.dumps(out))


def main():
    if "--json" in sys.argv[1:]:
        return main_json()
    print(f"{'reader':<22}{'events/s':>14}  notes")
    print(f"{'perf (synthetic)':<22}{synthetic_perf():>14,.0f}  decode only, 64-byte payloads")
    print(f"{'ringbuf (synthetic)':<22}{synthetic_ringbuf():>14,.0f}  decode only, 64-byte payloads")
    if os.geteuid() != 0:
        print("(not root: kernel benchmarks skipped)")
        return
    for kind in ("perf", "ringbuf"):
        got, lost, emitted, rate, wall = kernel(kind)
        print(f"{kind + ' (kernel)':<22}{rate:>14,.0f}  drain only; {got}/{emitted} read, "
              f"{lost} lost; incl. producing: {wall:,.0f}/s")


if __name__ == "__main__":
    main()
