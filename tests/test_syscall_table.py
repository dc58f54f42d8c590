"""The syscall name tables: known numbers per architecture, the lookup
fallbacks, and that bpf/gen_syscall_tables.py regenerates the committed
pybpfload/tools/syscall_table.py from the installed UAPI headers."""
import importlib.util
import os

import pytest

from conftest import ROOT
from pybpfload.tools import syscall_table
from pybpfload.tools.syscall_table import SYSCALL_TABLES, syscall_name, syscall_number


def _generator():
    spec = importlib.util.spec_from_file_location("gen_syscall_tables",
                                                  ROOT / "bpf" / "gen_syscall_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("arch,name,nr", [
    ("x86_64", "getppid", 110), ("x86_64", "execve", 59), ("x86_64", "openat", 257),
    ("x86_64", "read", 0), ("x86_64", "clone3", 435), ("x86_64", "newfstatat", 262),
    ("arm64", "getppid", 173), ("arm64", "execve", 221), ("arm64", "openat", 56),
    ("arm64", "io_setup", 0), ("arm64", "renameat", 38), ("arm64", "fstat", 80),
    ("arm64", "newfstatat", 79), ("arm64", "sync_file_range", 84), ("arm64", "clone3", 435),
    ("i386", "getppid", 64), ("i386", "execve", 11), ("i386", "openat", 295),
])
def test_known_numbers(arch, name, nr):
    assert syscall_name(nr, arch) == name
    assert syscall_number(name, arch) == nr


def test_arm64_lacks_the_legacy_calls():
    """The generic table has no open/fork/stat; x86_64 has them."""
    for name in ("open", "fork", "stat", "fcntl64", "mmap2", "sync_file_range2"):
        assert syscall_number(name, "arm64") is None
    assert syscall_number("open", "x86_64") == 2


def test_compat_and_machine_names():
    assert syscall_name(11, "x86_64", compat=True) == "execve"
    assert syscall_name(59, "x86_64", compat=True) != "execve"
    assert syscall_name(221, "aarch64") == "execve"
    # no table for arm64's 32-bit compat ABI: the number, not a wrong name
    assert syscall_name(11, "arm64", compat=True) == "syscall_11"


def test_unknown_numbers_and_arches_fall_back():
    assert syscall_name(999, "x86_64") == "syscall_999"
    assert syscall_name(-1, "x86_64") == "syscall_-1"
    assert syscall_name(1, "riscv64") == "syscall_1"
    assert syscall_number("no_such_call", "x86_64") is None


def test_default_arch_is_the_host():
    machine = os.uname().machine
    if machine not in ("x86_64", "aarch64"):
        pytest.skip(f"no table for {machine}")
    expected = {"x86_64": 110, "aarch64": 173}[machine]
    assert syscall_name(expected) == "getppid"


def test_tables_are_plain_int_to_str_dicts():
    for table in SYSCALL_TABLES.values():
        assert table and all(isinstance(k, int) and isinstance(v, str) and v for k, v in table.items())
        assert len(set(table.values())) == len(table)


def test_generator_reproduces_committed_file():
    gen = _generator()
    include = "/usr/include"
    needed = [gen.X86_64_HEADER, gen.I386_HEADER, gen.GENERIC_HEADER]
    missing = [h for h in needed if not os.path.exists(os.path.join(include, h))]
    if missing:
        pytest.skip(f"UAPI headers missing ({', '.join(missing)}): apt-get install linux-libc-dev")
    if gen.headers_version(include) != syscall_table.HEADERS_VERSION:
        pytest.skip(f"installed headers are {gen.headers_version(include)}, "
                    f"the table was generated from {syscall_table.HEADERS_VERSION}")
    committed = (ROOT / "pybpfload" / "tools" / "syscall_table.py").read_text()
    assert gen.generate(include) == committed


def test_generic_header_conditions():
    """The small preprocessor honours #if/#ifdef/#else/#undef and aliases."""
    gen = _generator()
    text = "\n".join([
        "#define __NR_a 1",
        "#ifdef WANT_B",
        "#define __NR_b 2",
        "#else",
        "#define __NR_notb 2",
        "#endif",
        "#if defined(WANT_C) || __BITS_PER_LONG != 32",
        "#define __NR3264_c 3",
        "#endif",
        "#if __BITS_PER_LONG == 64 && !defined(__SYSCALL_COMPAT)",
        "#define __NR_c __NR3264_c",
        "#else",
        "#define __NR_c64 __NR3264_c",
        "#endif",
        "#undef __NR_syscalls",
        "#define __NR_syscalls 4",
    ])
    assert gen.parse_generic(text, ("WANT_B",), 64) == {1: "a", 2: "b", 3: "c"}
    assert gen.parse_generic(text, (), 32) == {1: "a", 2: "notb"}
    assert gen.parse_generic(text, ("WANT_C",), 32) == {1: "a", 2: "notb", 3: "c64"}
