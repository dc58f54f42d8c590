"""Replay the fuzz seeds and the regression corpus through the parsers.

Every input under ``tests/fuzz/corpus/<target>/`` once made a parser raise
something other than its documented errors (or broke an invariant the fuzz
target checks); the targets in :mod:`fuzz.targets` must now accept them.  The
seeds (built from the committed objects) are replayed too, so a target that
breaks on well-formed input fails here rather than only under atheris.  No
atheris needed: the targets are plain functions of bytes.
"""

import pytest

from pybpfload.errors import ParseError
from fuzz import targets

CASES = [(name, path.name, data) for name in targets.TARGETS for path, data in targets.corpus(name)]


@pytest.fixture(scope="module", autouse=True)
def _state_tree():
    yield
    targets.cleanup()


def test_every_corpus_dir_is_a_target():
    if targets.CORPUS.is_dir():
        unknown = {p.name for p in targets.CORPUS.iterdir()} - set(targets.TARGETS)
        assert not unknown, f"corpus directories without a fuzz target: {unknown}"


@pytest.mark.parametrize("name,case,data", CASES, ids=[f"{n}/{c}" for n, c, _ in CASES])
def test_regression(name, case, data):
    targets.TARGETS[name](data)


@pytest.mark.parametrize("name", list(targets.TARGETS))
def test_seeds(name):
    seeds = targets.seeds(name)
    assert seeds, f"no seeds for {name}"
    for data in seeds:
        targets.TARGETS[name](data)


@pytest.mark.parametrize("name", list(targets.TARGETS))
def test_truncated_seeds(name):
    """Every prefix length of a seed at a few cut points: short input is the
    commonest malformation, and it exercises each parser's bounds checks."""
    for data in targets.seeds(name)[:4]:
        for cut in sorted({0, 1, 3, 7, len(data) // 3, len(data) // 2, len(data) - 1}):
            if 0 <= cut < len(data):
                targets.TARGETS[name](data[:cut])


def test_targets_reject_what_they_should():
    """The harness is not vacuous: a target lets a non-ParseError through,
    and a broken object does reach the parser's error path."""
    with pytest.raises(ParseError):
        from pybpfload.obj import elf
        elf.read_object(b"\x7fELF" + bytes(60), "x")
    crash = targets.corpus("layout")
    assert crash, "the layout regression input is missing"
    # the committed layout input really is corrupt BTF the decoder must refuse
    from pybpfload.obj.btf import BTF
    from pybpfload.obj.layout import Layout
    import struct
    data = crash[0][1]
    n = struct.unpack_from("<H", data, 1)[0]
    btf = BTF.parse(data[3:3 + n])
    refused = 0
    for tid in btf.ids():
        try:
            Layout.of(btf, tid)
        except ParseError:
            refused += 1
    assert refused, "no type of the corrupt BTF was refused"
