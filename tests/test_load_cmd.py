"""``python -m pybpfload load``: pins bpftool can read, links that keep
programs attached after the command exits, and clear refusals."""

import json
import os
import shutil
import subprocess
import sys
import uuid

import pytest

from conftest import OBJECTS, PREBUILT, ROOT

pytestmark = pytest.mark.root


def pybpfload(*args):
    return subprocess.run([sys.executable, "-m", "pybpfload", *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)


def bpftool_json(*args):
    out = subprocess.run(["bpftool", "-j", *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.fixture
def pin_dir():
    path = f"/sys/fs/bpf/pybpfload-load-{uuid.uuid4().hex[:10]}"
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_load_pins_programs_and_maps_bpftool_sees(pin_dir):
    res = pybpfload("load", OBJECTS / "tracing.bpf.o", "--pin", pin_dir,
                    "--set", "target_tgid=0x1234")
    assert res.returncode == 0, res.stderr
    assert sorted(os.listdir(pin_dir)) == ["maps", "on_kprobe", "on_raw_tp", "on_tp",
                                           "on_tp_btf"]
    assert sorted(os.listdir(pin_dir + "/maps")) == ["hits", "percpu_calls", "tracing_rodata"]
    prog = bpftool_json("prog", "show", "pinned", pin_dir + "/on_tp")
    assert prog["name"] == "on_tp" and prog["type"] == "tracepoint"
    ro = bpftool_json("map", "dump", "pinned", pin_dir + "/maps/tracing_rodata")
    # the map was created with its BTF: bpftool formats the .rodata variables
    assert ro[0]["formatted"]["value"][".rodata"] == [{"target_tgid": 0x1234},
                                                      {"getppid_nr": 110}]
    assert not os.path.exists(pin_dir + "/links")      # not attached


def test_attach_stays_attached_after_exit(pin_dir):
    """The links outlive the command: the tracepoint program still counts
    this process's getppid() calls, until the pins are removed."""
    res = pybpfload("load", OBJECTS / "tracing.bpf.o", "--pin", pin_dir, "--pinmaps",
                    pin_dir + "-maps", "--set", f"target_tgid={os.getpid()}", "--attach")
    try:
        # the kprobe cannot attach here: the whole command fails and cleans up
        assert res.returncode == 1 and "kprobe" in res.stderr
        assert not os.path.exists(pin_dir) and not os.path.exists(pin_dir + "-maps")
        res = pybpfload("load", OBJECTS / "ringbuf_emit.bpf.o", "--pin", pin_dir, "--pinmaps",
                        pin_dir + "-maps", "--set", f"target_tgid={os.getpid()}", "--attach")
        assert res.returncode == 0, res.stderr
        assert os.listdir(pin_dir + "/links") == ["emit"]
        link = bpftool_json("link", "show", "pinned", pin_dir + "/links/emit")
        prog = bpftool_json("prog", "show", "pinned", pin_dir + "/emit")
        assert link["prog_id"] == prog["id"]
        for _ in range(4):
            os.getppid()
        from pybpfload.kernel.maps import Map
        with Map.from_pin(pin_dir + "-maps/calls") as calls:
            (key, value), = calls.items()
            assert int.from_bytes(value[:8], "little") == 4
        shutil.rmtree(pin_dir)
        # unpinned: the link is gone, so the program is detached and freed
        ids = [l["prog_id"] for l in bpftool_json("link", "show")]
        assert prog["id"] not in ids
    finally:
        shutil.rmtree(pin_dir + "-maps", ignore_errors=True)


def test_refuses_non_empty_dir_and_non_bpffs(pin_dir, tmp_path):
    os.mkdir(pin_dir)
    assert pybpfload("load", PREBUILT / "floor.bpf.o", "--pin", pin_dir).returncode == 0
    res = pybpfload("load", PREBUILT / "floor.bpf.o", "--pin", pin_dir)
    assert res.returncode == 1
    assert res.stderr.count("\n") == 1 and "exists and is not empty" in res.stderr
    res = pybpfload("load", PREBUILT / "floor.bpf.o", "--pin", tmp_path / "pins")
    assert res.returncode == 1 and res.stderr.count("\n") == 1
    assert "not a directory on a bpffs" in res.stderr and "mount -t bpf" in res.stderr
    assert not (tmp_path / "pins").exists()
    res = pybpfload("load", PREBUILT / "floor.bpf.o", "--pin", tmp_path)
    assert res.returncode == 1 and "is not on a bpffs" in res.stderr


def test_bad_set_is_one_line(pin_dir):
    res = pybpfload("load", OBJECTS / "tracing.bpf.o", "--pin", pin_dir, "--set", "nosuch=1")
    assert res.returncode == 1 and res.stderr.count("\n") == 1, res.stderr
    assert "Traceback" not in res.stderr and not os.path.exists(pin_dir)
    res = pybpfload("load", OBJECTS / "tracing.bpf.o", "--pin", pin_dir, "--set", "oops")
    assert res.returncode == 1 and "NAME=VALUE" in res.stderr
