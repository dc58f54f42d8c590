"""What a user can get wrong, through the command line: each gives ONE line
on stderr (no traceback), exit code 1, and leaves nothing behind;
``--debug`` adds the traceback."""

import os
import shutil
import subprocess
import sys
import uuid

import pytest

from conftest import OBJECTS, PREBUILT, ROOT

pytestmark = pytest.mark.root


def cli(*args, env=None, user=None, python=sys.executable):
    cmd = [python, "-m", "pybpfload", *map(str, args)]
    if user:
        cmd = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"] + cmd
    return subprocess.run(cmd, capture_output=True, text=True, cwd="/",
                          env=dict(os.environ, PYTHONPATH=str(ROOT), **(env or {})),
                          timeout=120)


def one_line_error(res, *needles):
    assert res.returncode == 1, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pybpfload: error: "), res.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def pin_dir():
    path = f"/sys/fs/bpf/pybpfload-faults-{uuid.uuid4().hex[:10]}"
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def broken_objects(tmp_path):
    good = (PREBUILT / "classify.bpf.o").read_bytes()
    truncated = tmp_path / "truncated.bpf.o"
    truncated.write_bytes(good[:200])
    garbage = tmp_path / "garbage.bpf.o"
    garbage.write_bytes(bytes(range(256)) * 8)
    return truncated, garbage


def test_verifier_rejection_names_the_reason(pin_dir):
    res = cli("load", OBJECTS / "verifier_reject.bpf.o", "--pin", pin_dir)
    one_line_error(res, "verifier rejected program 'unchecked_lookup'",
                   "invalid mem access 'map_value_or_null'")
    assert not os.path.exists(pin_dir)
    res = cli("--debug", "load", OBJECTS / "verifier_reject.bpf.o", "--pin", pin_dir)
    assert res.returncode == 1 and "Traceback" in res.stderr
    assert "7: (79) r0 = *(u64 *)(r0 +0)" in res.stderr      # the verifier log


@pytest.mark.parametrize("command", ["inspect", "load"])
def test_truncated_and_garbage_elf(command, broken_objects, pin_dir):
    extra = ["--pin", pin_dir] if command == "load" else []
    truncated, garbage = broken_objects
    one_line_error(cli(command, truncated, *extra), "ELF")
    one_line_error(cli(command, garbage, *extra), "not an ELF file")
    assert not os.path.exists(pin_dir)


@pytest.fixture
def nobody_python(tmp_path):
    """An interpreter and the runtime deps that user nobody can read (root's
    own Python may live under /root)."""
    import construct
    import elftools
    deps = tmp_path / "deps"
    for mod in (elftools, construct):
        src = os.path.dirname(mod.__file__)
        shutil.copytree(src, deps / os.path.basename(src))
    for p in [tmp_path, *tmp_path.parents]:
        if str(p) == "/":
            break
        os.chmod(p, os.stat(p).st_mode | 0o005)
    subprocess.run(["chmod", "-R", "a+rX", str(deps)], check=True)
    python = shutil.which("python3", path="/usr/bin:/usr/local/bin:/bin")
    if python is None:
        pytest.skip("no system python3 for user nobody")
    return python, deps


def test_not_root(nobody_python, pin_dir):
    python, deps = nobody_python
    env = {"PYTHONPATH": f"{ROOT}:{deps}"}
    for args in (["load", PREBUILT / "floor.bpf.o", "--pin", pin_dir],
                 ["classify", "--source", "bpf", "--duration", "1"]):
        cmd = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", python,
               "-m", "pybpfload", *map(str, args)]
        res = subprocess.run(cmd, capture_output=True, text=True, cwd="/", timeout=120,
                             env=dict(os.environ, **env))
        line = one_line_error(res)
        assert "run as root" in line and "CAP_BPF" in line, line
    assert not os.path.exists(pin_dir)


def test_kernel_btf_missing(pin_dir):
    env = {"PYBPFLOAD_KERNEL_BTF": "/nonexistent"}
    # classify's object needs CO-RE against the kernel BTF
    one_line_error(cli("load", PREBUILT / "classify.bpf.o", "--pin", pin_dir, env=env),
                   "/nonexistent")
    assert not os.path.exists(pin_dir)
    one_line_error(cli("classify", "--source", "bpf", "--btf", "/nonexistent",
                       "--duration", "1"), "/nonexistent", "BTF")
    one_line_error(cli("classify", "--source", "bpf", "--duration", "1", env=env),
                   "/nonexistent")


def test_missing_tracepoint(pin_dir):
    one_line_error(cli("load", OBJECTS / "missing_tp.bpf.o", "--pin", pin_dir, "--attach"),
                   "tracepoint nosuch/event does not exist")
    assert not os.path.exists(pin_dir)
    res = cli("--debug", "load", OBJECTS / "missing_tp.bpf.o", "--pin", pin_dir, "--attach")
    assert res.returncode == 1 and "Traceback" in res.stderr
