"""RingBuffer: read ``bpf_ringbuf_output``/``reserve``+``submit`` records.

The RINGBUF map is mmap'd as the kernel lays it out: the consumer page
read-write (``consumer_pos`` at offset 0), then the producer page and the data
area read-only; the kernel maps the data area twice in a row, so a record
that wraps the end is contiguous in our view.  Each record has an 8-byte
header: u32 length with the BUSY (1<<31) and DISCARD (1<<30) bits, u32 page
offset; records are 8-byte aligned.  A drain stops at the first BUSY record
and writes ``consumer_pos`` once.  Discarded records are counted in
``.discarded``; ``.dropped`` is read from an optional counter map the BPF
program increments when an output fails (the kernel keeps no such count).

Events come back as memoryviews into the ring, valid until the next
``poll``/``drain``; :func:`decode_ringbuf_records` is the pure decoder.
"""

import mmap
import select
import struct

from ..errors import KernelError, ParseError
from .event_reader import EpollReader

__all__ = ["RingBuffer", "decode_ringbuf_records", "BUSY_BIT", "DISCARD_BIT"]

BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30
LEN_MASK = DISCARD_BIT - 1
HDR_SIZE = 8
PAGE_SIZE = mmap.PAGESIZE
BPF_MAP_TYPE_RINGBUF = 27

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


def decode_ringbuf_records(data, ring_size, cons, prod, out):
    """Decode ring buffer records in ``data`` between positions ``cons`` and ``prod``.

    ``ring_size`` is the power-of-2 ring size; ``data`` is either the doubly
    mapped area (``2 * ring_size`` bytes) or a plain ``ring_size`` buffer
    (wrapping records are then copied).  Payloads are appended to ``out``.
    Returns ``(new_cons, discarded)``; decoding stops at a BUSY record.
    """
    if not isinstance(data, memoryview):
        data = memoryview(data)
    if ring_size <= 0 or ring_size & (ring_size - 1) or len(data) < ring_size:
        raise ParseError(f"ring buffer of {len(data)} bytes does not hold a power-of-two "
                         f"ring of {ring_size} bytes")
    if prod < cons or prod - cons > ring_size:
        raise ParseError(f"ring buffer positions consumer={cons} producer={prod} are "
                         f"inconsistent with a {ring_size}-byte ring")
    limit = len(data)
    mask = ring_size - 1
    unpack = _U32.unpack_from
    append = out.append
    discarded = 0
    if limit >= 2 * ring_size:
        # doubly mapped (the kernel's layout): every record is contiguous
        while cons < prod:
            off = cons & mask
            hdr = unpack(data, off)[0]
            if hdr & 0xC0000000:
                if hdr & BUSY_BIT:
                    break
                discarded += 1
                length = hdr & LEN_MASK
            else:
                length = hdr
                append(data[off + 8:off + 8 + length])
            cons += (length + 15) & ~7
            if cons > prod:
                raise ParseError(f"ring buffer record of {length} bytes overruns the "
                                 f"producer position")
        return cons, discarded
    while cons < prod:
        off = cons & mask
        if off + HDR_SIZE <= limit:
            hdr = unpack(data, off)[0]
        else:
            hdr = unpack(_take(data, ring_size, off, 4))[0]
        if hdr & BUSY_BIT:
            break
        length = hdr & LEN_MASK
        total = (length + HDR_SIZE + 7) & ~7
        if cons + total > prod:
            raise ParseError(f"ring buffer record of {length} bytes overruns the "
                             f"producer position")
        if not hdr & DISCARD_BIT:
            start = off + HDR_SIZE
            if start + length <= limit:
                append(data[start:start + length])
            else:
                append(_take(data, ring_size, start & mask, length))
        else:
            discarded += 1
        cons += total
    return cons, discarded


def _take(data, ring_size, off, n):
    if off + n <= ring_size:
        return bytes(data[off:off + n])
    first = bytes(data[off:ring_size])
    return first + bytes(data[:n - len(first)])


class RingBuffer(EpollReader):
    """Reader of one RINGBUF map.  ``counter_map``: an array map whose u64 value
    at key 0 (summed over CPUs for per-CPU arrays) counts failed outputs."""

    def __init__(self, ring_map, counter_map=None):
        if ring_map.type != BPF_MAP_TYPE_RINGBUF:
            raise KernelError(f"map {ring_map.name!r} is not a RINGBUF map",
                              hint="declare it as BPF_MAP_TYPE_RINGBUF")
        self.map = ring_map
        self.counter_map = counter_map
        self.size = ring_map.max_entries
        self.discarded = 0
        self._pending = None
        fd = ring_map.fileno()
        self._cons_mm = self._prod_mm = None
        self._epoll = select.epoll()
        try:
            self._cons_mm = mmap.mmap(fd, PAGE_SIZE, mmap.MAP_SHARED,
                                      mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
            self._prod_mm = mmap.mmap(fd, PAGE_SIZE + 2 * self.size, mmap.MAP_SHARED,
                                      mmap.PROT_READ, offset=PAGE_SIZE)
            self._epoll.register(fd, select.EPOLLIN)
        except OSError as exc:
            self.close()
            raise KernelError(f"cannot map ring buffer {ring_map.name!r}: {exc}",
                              exc.errno) from None
        self._cons = memoryview(self._cons_mm)
        prod = memoryview(self._prod_mm)
        self._prod = prod[:8]
        self._data = prod[PAGE_SIZE:]

    @property
    def dropped(self):
        """Failed outputs counted by the program in ``counter_map`` (0 without one)."""
        if self.counter_map is None:
            return 0
        value = self.counter_map.lookup(0)
        if value is None:
            return 0
        if isinstance(value, list):
            return sum(_U64.unpack_from(v)[0] for v in value)
        return _U64.unpack_from(value)[0]

    def release(self):
        """Hand the space of the events returned last back to the kernel."""
        if self._pending is not None:
            _U64.pack_into(self._cons, 0, self._pending)
            self._pending = None

    def drain(self, out=None):
        """Collect every available record (no waiting) into ``out``; return it."""
        self.release()
        if out is None:
            out = []
        prod = _U64.unpack_from(self._prod)[0]      # producer position first, then data
        cons = _U64.unpack_from(self._cons)[0]
        if prod != cons:
            new, discarded = decode_ringbuf_records(self._data, self.size, cons, prod, out)
            self.discarded += discarded
            if new != cons:
                self._pending = new
        return out

    def close(self):
        for name in ("_cons", "_prod", "_data"):
            view = getattr(self, name, None)
            if view is not None:
                view.release()
        for mm in (self._cons_mm, self._prod_mm):
            if mm is not None:
                try:
                    mm.close()
                except BufferError:
                    pass
        self._cons_mm = self._prod_mm = None
        self._epoll.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
