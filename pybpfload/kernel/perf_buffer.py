"""PerfBuffer: read ``bpf_perf_event_output`` samples from per-CPU perf rings.

For each online CPU one software BPF_OUTPUT perf event is opened, its ring
(1 metadata page + 2^n data pages) is mmap'd, and its fd is stored in the
PERF_EVENT_ARRAY map at index cpu.  Wake-ups come through epoll.

A drain reads ``data_head`` first and only then the records (the kernel
writes the data before publishing the head), walks the records between
``data_tail`` and ``data_head`` (PERF_RECORD_SAMPLE -> the raw payload,
PERF_RECORD_LOST -> added to ``.lost``), copies a record that wraps the end of
the ring, and publishes ``data_tail`` once.

Events come back as memoryviews into the ring, valid until the next
``poll``/``drain`` call (that is when their space is handed back to the
kernel); copy with ``bytes(view)`` to keep one.  The kernel pads a sample so
that its u32 size + data is 8-byte aligned, so a view may be up to 4 bytes
longer than what the program emitted (64 bytes -> 68).  :func:`decode_perf_records`
is the pure decoder and works over any buffer.
"""

import mmap
import select
import struct

from ..errors import KernelError, ParseError
from .event_reader import EpollReader
from . import perf_event as pe
from .features import online_cpus

__all__ = ["PerfBuffer", "decode_perf_records", "PERF_RECORD_SAMPLE", "PERF_RECORD_LOST"]

PERF_RECORD_LOST = 2
PERF_RECORD_SAMPLE = 9
PAGE_SIZE = mmap.PAGESIZE
DATA_HEAD_OFFSET = 1024
DATA_TAIL_OFFSET = 1032

_HDR = struct.Struct("<IHHI")     # type, misc, size, (SAMPLE) raw size
_U64 = struct.Struct("<Q")
_LOST = struct.Struct("<QQ")      # id, lost


def decode_perf_records(data, tail, head, out):
    """Decode the perf records in ``data`` (the ring's data area, a power-of-2
    sized buffer) between byte counters ``tail`` and ``head``.

    Sample payloads are appended to ``out`` (memoryviews into ``data``, or
    bytes for a record that wraps).  Returns the number of lost events
    reported by PERF_RECORD_LOST records.  Raises ParseError on a malformed
    record (size not a multiple of 8, payload overrunning its record).
    """
    if not isinstance(data, memoryview):
        data = memoryview(data)
    size = len(data)
    if size == 0 or size & (size - 1):
        raise ParseError(f"perf ring data area of {size} bytes is not a power of two")
    if head - tail > size or head < tail:
        raise ParseError(f"perf ring positions tail={tail} head={head} are inconsistent "
                         f"with a {size}-byte ring")
    mask = size - 1
    unpack = _HDR.unpack_from
    append = out.append
    lost = 0
    while tail < head:
        off = tail & mask
        if off + 16 <= size:
            rtype, _misc, rsize, rawlen = unpack(data, off)
            if off + rsize <= size and rsize >= 8 and not rsize & 7 and tail + rsize <= head:
                if rtype == PERF_RECORD_SAMPLE:
                    if rawlen > rsize - 12:
                        raise ParseError(f"perf sample of {rawlen} bytes overruns its "
                                         f"{rsize}-byte record")
                    append(data[off + 12:off + 12 + rawlen])
                elif rtype == PERF_RECORD_LOST and rsize >= 24:
                    lost += _LOST.unpack_from(data, off + 8)[1]
                tail += rsize
                continue
        # slow path: a record wrapping the end of the ring, or a malformed one
        if head - tail < 8:
            raise ParseError(f"truncated perf record header at ring offset {off}")
        rsize = struct.unpack_from("<H", _take(data, off, 8), 6)[0]
        if rsize < 8 or rsize & 7 or tail + rsize > head:
            raise ParseError(f"malformed perf record of {rsize} bytes at ring offset {off}")
        rec = _take(data, off, rsize)
        rtype = struct.unpack_from("<I", rec)[0]
        if rtype == PERF_RECORD_SAMPLE:
            rawlen = struct.unpack_from("<I", rec, 8)[0] if rsize >= 12 else 0
            if rsize < 12 or rawlen > rsize - 12:
                raise ParseError(f"perf sample of {rawlen} bytes overruns its "
                                 f"{rsize}-byte record")
            append(rec[12:12 + rawlen])
        elif rtype == PERF_RECORD_LOST and rsize >= 24:
            lost += _LOST.unpack_from(rec, 8)[1]
        tail += rsize
    return lost


def _take(data, off, n):
    """``n`` bytes of the ring ``data`` from ``off``, wrapping around its end."""
    size = len(data)
    if off + n <= size:
        return bytes(data[off:off + n])
    first = bytes(data[off:])
    return first + bytes(data[:n - len(first)])


class _CpuRing:
    __slots__ = ("cpu", "fd", "mm", "meta", "data", "pending_tail")

    def __init__(self, cpu, fd, mm, data_size):
        self.cpu = cpu
        self.fd = fd
        self.mm = mm
        view = memoryview(mm)
        self.meta = view[:PAGE_SIZE]
        self.data = view[PAGE_SIZE:PAGE_SIZE + data_size]
        self.pending_tail = None

    def close(self):
        self.meta.release()
        self.data.release()
        try:
            self.mm.close()
        except BufferError:   # a caller still holds an event view; the GC unmaps later
            pass
        self.fd.close()


class PerfBuffer(EpollReader):
    """Per-CPU perf rings behind a PERF_EVENT_ARRAY map.

    ``page_count`` data pages per CPU (a power of two).  Wake-up after
    ``wakeup_events`` samples, or after ``watermark`` bytes when given.
    """

    def __init__(self, perf_map, page_count=64, wakeup_events=1, watermark=0, cpus=None):
        if page_count <= 0 or page_count & (page_count - 1):
            raise KernelError(f"perf buffer page_count {page_count} is not a power of two",
                              hint="use 1, 2, 4, 8, ...")
        if perf_map.type != 4:
            raise KernelError(f"map {perf_map.name!r} is not a PERF_EVENT_ARRAY",
                              hint="declare it as BPF_MAP_TYPE_PERF_EVENT_ARRAY")
        self.map = perf_map
        self.lost = 0
        self.data_size = page_count * PAGE_SIZE
        self._rings = []
        self._epoll = select.epoll()
        try:
            for cpu in (online_cpus() if cpus is None else cpus):
                if cpu >= perf_map.max_entries:
                    continue
                fd = pe.open_bpf_output_event(cpu, wakeup_events, watermark)
                try:
                    mm = mmap.mmap(fd.fileno(), PAGE_SIZE + self.data_size, mmap.MAP_SHARED,
                                   mmap.PROT_READ | mmap.PROT_WRITE)
                except OSError as exc:
                    fd.close()
                    raise KernelError(f"cannot mmap the perf ring of CPU {cpu}: {exc}",
                                      exc.errno, hint="use fewer pages") from None
                ring = _CpuRing(cpu, fd, mm, self.data_size)
                self._rings.append(ring)
                perf_map.update(cpu, fd.fileno().to_bytes(4, "little"))
                pe.enable(fd)
                self._epoll.register(fd.fileno(), select.EPOLLIN)
        except BaseException:
            self.close()
            raise

    def release(self):
        """Hand the space of the events returned last back to the kernel."""
        for ring in self._rings:
            if ring.pending_tail is not None:
                _U64.pack_into(ring.meta, DATA_TAIL_OFFSET, ring.pending_tail)
                ring.pending_tail = None

    def drain(self, out=None):
        """Collect every available event (no waiting) into ``out``; return it."""
        self.release()
        if out is None:
            out = []
        for ring in self._rings:
            meta = ring.meta
            head = _U64.unpack_from(meta, DATA_HEAD_OFFSET)[0]   # head first, then data
            tail = _U64.unpack_from(meta, DATA_TAIL_OFFSET)[0]
            if head == tail:
                continue
            try:
                self.lost += decode_perf_records(ring.data, tail, head, out)
            except ParseError:
                ring.pending_tail = head   # skip the corrupt span, keep reading
                raise
            ring.pending_tail = head
        return out

    def close(self):
        for ring in self._rings:
            try:
                self.map.delete(ring.cpu)
            except KernelError:
                pass
            ring.close()
        self._rings = []
        self._epoll.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
