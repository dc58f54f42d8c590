"""The shipped objects are the committed ones, and every BPF source has one.

That the committed objects are what their sources build (``make`` in a
temporary copy gives identical bytes) is tested in test_bpf_sources.py
(prebuilt/) and test_elf.py (tests/objects/); here: what the package ships
(``pybpfload/prebuilt`` in a checkout, found through
``pybpfload.resources``) is exactly that set of objects, byte for byte.
"""
import os

from conftest import PREBUILT, ROOT

from pybpfload import resources


def test_every_bpf_source_has_a_shipped_object():
    sources = {p.name[:-len(".c")] + ".o" for p in (ROOT / "bpf").glob("*.bpf.c")}
    assert sources and set(resources.prebuilt_names()) == sources


def test_package_prebuilt_is_the_top_level_directory():
    link = ROOT / "pybpfload" / "prebuilt"
    assert link.is_symlink() and os.readlink(link) == "../prebuilt"


def test_resources_give_the_committed_bytes():
    for name in resources.prebuilt_names():
        assert resources.prebuilt_bytes(name) == (PREBUILT / name).read_bytes()


def test_unknown_object_is_one_line_error():
    import pytest
    from pybpfload.errors import BPFError

    for bad in ("nope.bpf.o", "../setup.py", ""):
        with pytest.raises(BPFError) as info:
            resources.prebuilt_object(bad)
        assert "\n" not in str(info.value)
