"""``python -m pybpfload inspect``: the report of an object, its JSON form, one
error line for a broken file, and no kernel-layer imports."""

import json
import subprocess
import sys

import pytest

from conftest import OBJECTS, ROOT


def run(*args):
    return subprocess.run([sys.executable, "-m", "pybpfload", "inspect", *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


def inspect_json(name):
    r = run(OBJECTS / f"{name}.bpf.o", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_programs_with_linked_instruction_counts():
    info = inspect_json("subprogs")
    progs = {p["name"]: p for p in info["programs"]}
    a = progs["entry_a"]
    assert a["type"] == "tracepoint" and a["attach_to"] == "syscalls/sys_enter_getpid"
    assert a["subprograms"] == ["loop_cb", "middle", "leaf"]
    from pybpfload.obj import elf, link
    obj = elf.read_object_file(OBJECTS / "subprogs.bpf.o")
    assert a["instructions"] == sum(i.size for i in link.link_program(obj, "entry_a"))
    assert a["instructions"] > sum(i.size for i in obj.programs["entry_a"].instructions)
    assert progs["entry_c"]["subprograms"] == ["local_in_section"]
    assert a["maps"] == ["subprogs.bss"]


def test_maps_json():
    info = inspect_json("maps")
    maps = {m["name"]: m for m in info["maps"]}
    c = maps["counts"]
    assert (c["type"], c["key_size"], c["value_size"], c["max_entries"]) == (
        "hash", 8, 24, 1024)
    assert (c["key_type"], c["value_type"], c["flags"]) == (
        "struct key_t", "struct val_t", ["no_prealloc"])
    assert maps["pinned_lru"]["pinning"] == "by_name"
    assert maps["perf_events"]["entries_note"] == "one per CPU"
    assert maps["outer"]["inner"]["type"] == "array"
    assert maps["outer"]["contents"] == [[0, "inner_a"], [2, "inner_b"]]


def test_variables_json():
    info = inspect_json("globals")
    v = {x["name"]: x for x in info["variables"]}
    assert (v["threshold"]["section"], v["threshold"]["offset"], v["threshold"]["size"]) == (
        ".rodata", 4, 2)
    assert v["threshold"]["type"] == "const volatile __s16"
    assert v["big_bss"]["type"] == "__u64[4]"
    assert v["target_pid"]["const"] and not v["counter"]["const"]


def test_core_relocations_listed():
    info = inspect_json("subprogs")
    core = info["core_relocations"]
    if not core:
        pytest.skip(".BTF.ext support not available")
    # the bpf_core_field_exists() in middle(), seen in every program that links middle
    assert sorted({c["program"] for c in core}) == ["entry_a", "entry_b"]
    assert all(c["kind"] == "field_exists" for c in core)
    assert all("probe_ctx" in c["description"] for c in core)


def test_text_report():
    r = run(OBJECTS / "maps.bpf.o")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for word in ("programs (1)", "use_maps", "tracepoint sched/sched_process_exec",
                 "maps (10)", "ringbuf", "one per CPU", "by_name",
                 "outer initial slots: [0]=inner_a, [2]=inner_b", "global variables (0)",
                 "CO-RE relocations"):
        assert word in out, word


@pytest.mark.parametrize("content", [b"", b"not an elf at all", b"\x7fELF" + b"\0" * 60])
def test_broken_file_is_one_error_line(tmp_path, content):
    path = tmp_path / "broken.o"
    path.write_bytes(content)
    r = run(path)
    assert r.returncode == 1
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pybpfload: error: "), r.stderr


def test_truncated_object_is_one_error_line(tmp_path):
    data = (OBJECTS / "maps.bpf.o").read_bytes()
    path = tmp_path / "cut.o"
    path.write_bytes(data[:len(data) // 2])
    r = run(path)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_inspect_imports_no_kernel_layer():
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "pybpfload", "inspect",
                        str(OBJECTS / "maps.bpf.o")], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    imported = [line.split("|")[-1].strip() for line in r.stderr.splitlines()
                if line.startswith("import time:")]
    assert "pybpfload.obj.elf" in imported  # the check sees our imports at all
    assert not [m for m in imported if m.startswith(("pyroute2", "pybpfload.kernel",
                                                     "ctypes"))]
