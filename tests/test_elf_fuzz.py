"""Malformed objects: random, truncated and corrupted ELF bytes make the reader
raise a ParseError subclass (or read something), never another exception; and
whatever it reads links or raises a BPFError."""

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pybpfload.errors import BPFError, ParseError
from pybpfload.obj import elf, link

from conftest import OBJECTS

SEEDS = {name: (OBJECTS / f"{name}.bpf.o").read_bytes()
         for name in ("globals", "subprogs", "maps", "legacy")}
FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def check(data):
    try:
        obj = elf.read_object(data, "fuzz")
    except ParseError as exc:
        msg = str(exc)
        assert msg and "\n" not in msg
        return None
    for name in obj.programs:
        try:
            link.link_program(obj, name)
        except BPFError:
            pass
    return obj


@FUZZ
@given(st.binary(max_size=512))
def test_random_bytes(data):
    check(data)


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes_after_a_valid_header(tail):
    header = SEEDS["globals"][:64]
    check(header + tail)


@FUZZ
@given(st.sampled_from(sorted(SEEDS)), st.integers(min_value=0, max_value=1 << 16))
def test_truncated(name, cut):
    data = SEEDS[name]
    check(data[:cut % len(data)])


@FUZZ
@given(st.sampled_from(sorted(SEEDS)),
       st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), min_size=1,
                max_size=8))
def test_corrupted_bytes(name, edits):
    data = bytearray(SEEDS[name])
    for pos, value in edits:
        data[pos % len(data)] = value
    check(bytes(data))


def _section_header_offsets(data):
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shnum, = struct.unpack_from("<H", data, 0x3C)
    return [shoff + i * 64 for i in range(shnum)]


@FUZZ
@given(st.sampled_from(sorted(SEEDS)), st.data())
def test_corrupted_section_headers(name, draw):
    """Header fields (offsets, sizes, links, info) set to hostile values."""
    data = bytearray(SEEDS[name])
    headers = _section_header_offsets(data)
    h = draw.draw(st.sampled_from(headers))
    field, fmt = draw.draw(st.sampled_from([(0x00, "<I"), (0x04, "<I"), (0x08, "<Q"),
                                            (0x18, "<Q"), (0x20, "<Q"), (0x28, "<I"),
                                            (0x2C, "<I"), (0x38, "<Q")]))
    limit = (1 << (8 * struct.calcsize(fmt))) - 1
    value = draw.draw(st.one_of(st.integers(0, 64), st.integers(0, limit),
                                st.just(limit)))
    struct.pack_into(fmt, data, h + field, value)
    check(bytes(data))


@FUZZ
@given(st.sampled_from(sorted(SEEDS)), st.data())
def test_corrupted_symbols_and_relocations(name, draw):
    """Bytes inside .symtab and .rel* sections (what the reader unpacks itself)."""
    data = bytearray(SEEDS[name])
    ranges = []
    for h in _section_header_offsets(data):
        stype, = struct.unpack_from("<I", data, h + 4)
        off, size = struct.unpack_from("<QQ", data, h + 0x18)
        if stype in (2, 9) and size:
            ranges.append((off, size))
    off, size = draw.draw(st.sampled_from(ranges))
    for _ in range(draw.draw(st.integers(1, 6))):
        pos = off + draw.draw(st.integers(0, size - 1))
        data[pos] = draw.draw(st.integers(0, 255))
    check(bytes(data))


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_every_prefix_of_the_header_area(name):
    data = SEEDS[name]
    for cut in range(0, 80):
        check(data[:cut])
