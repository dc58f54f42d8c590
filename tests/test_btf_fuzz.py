"""Hypothesis: truncated, corrupted and random bytes given to the BTF and
.BTF.ext parsers and to the raw fixups raise BTFError and nothing else."""

import struct

from hypothesis import given, settings, HealthCheck
from hypothesis import strategies as st

from pybpfload.errors import BTFError
from pybpfload.obj import btf as B
from pybpfload.obj import btf_ext as X
from test_btf import KINDS_OBJ, elf_section, signed_enums_blob

RAW = elf_section(KINDS_OBJ, ".BTF")
EXT = elf_section(KINDS_OBJ, ".BTF.ext")
SEEDS = [RAW, signed_enums_blob()]
SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def exercise(blob):
    """Parse and touch every type, name lookup and fixup; BTFError is fine."""
    try:
        btf = B.BTF.parse(blob)
    except BTFError:
        return
    for tid in btf.ids():
        for call in (btf.get, btf.name_of, btf.kind_of, btf.size_of, btf.skip_mods_and_typedefs):
            try:
                call(tid)
            except BTFError:
                pass
        try:
            btf.find_essential(btf.name_of(tid))
        except BTFError:
            pass
    for call in (lambda: B.fixup_datasecs(blob, {".bss": 8}, {"buffer": 4}),
                 lambda: B.sanitize(blob, {"datasec", "enum64", "float", "func", "decl_tag",
                                           "type_tag"})):
        try:
            call()
        except BTFError:
            pass


def corrupt(seed, edits):
    blob = bytearray(seed)
    for pos, value in edits:
        blob[pos % len(blob)] = value
    return bytes(blob)


@SETTINGS
@given(st.binary(max_size=300))
def test_random_bytes(blob):
    exercise(blob)


@SETTINGS
@given(st.sampled_from(SEEDS), st.data())
def test_truncated(seed, data):
    exercise(seed[:data.draw(st.integers(0, len(seed)))])


@SETTINGS
@given(st.sampled_from(SEEDS),
       st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), min_size=1, max_size=8))
def test_corrupted(seed, edits):
    exercise(corrupt(seed, edits))


@SETTINGS
@given(st.sampled_from(SEEDS), st.integers(0, 400), st.integers(0, (1 << 32) - 1))
def test_corrupted_words_in_types(seed, word, value):
    """Aimed at the type section: any u32 of a record replaced by any value."""
    blob = bytearray(seed)
    pos = 24 + 4 * (word % ((len(seed) - 24) // 4))
    struct.pack_into("<I", blob, pos, value)
    exercise(bytes(blob))


def exercise_ext(blob):
    btf = B.BTF.parse(RAW)
    try:
        ext = X.parse_btf_ext(blob, btf)
    except BTFError:
        return
    for relos in ext.core_relos.values():
        for r in relos:
            try:
                r.accessors
            except BTFError:
                pass


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=8),
       st.integers(0, len(EXT)))
def test_btf_ext_corrupted_and_truncated(edits, cut):
    exercise_ext(corrupt(EXT, edits)[:cut] if edits else EXT[:cut])


@SETTINGS
@given(st.binary(max_size=200))
def test_btf_ext_random(blob):
    exercise_ext(b"\x9f\xeb\x01\x00" + blob)
