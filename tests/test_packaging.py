"""Shipping: the wheel carries the prebuilt objects and runs classify from a
fresh venv; ``make pyz`` gives one file that runs with Debian's own
``/usr/bin/python3 -I -S`` (no site packages at all), reading the objects
from inside the zip.

Each classify run waits for its ``--ready-file`` (written once attached),
then execs a marker command and checks the marker shows up in the output.
"""
import os
import shutil
import subprocess
import sys
import time
import uuid
import zipfile

import pytest

from conftest import PREBUILT, ROOT

DEBIAN_PYTHON = "/usr/bin/python3"
OBJECT_NAMES = sorted(p.name for p in PREBUILT.glob("*.bpf.o"))


def _classify_sees_marker(cmd, cwd, tmp_path, env=None):
    """Run `cmd classify --duration ...`, exec a marker once attached; the output."""
    ready = tmp_path / f"ready-{uuid.uuid4().hex[:6]}"
    marker = f"pybtest-ship-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen([*cmd, "classify", "--duration", "8", "--ready-file", str(ready)],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), f"classify never attached: {proc.poll()} {proc.stderr.read() if proc.poll() is not None else ''}"
        subprocess.run(["/bin/true", marker], check=True)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert marker in out, f"marker exec not reported:\n{out[-2000:]}\n{err[-2000:]}"
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    build = tmp_path_factory.mktemp("src")
    # build from a copy so the checkout's build/ and egg-info stay untouched
    shutil.copytree(ROOT, build / "src", symlinks=True,
                    ignore=shutil.ignore_patterns(".git", "build", "dist", "*.egg-info",
                                                  ".hypothesis", ".pytest_cache", "__pycache__"))
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                          "--disable-pip-version-check", "-w", str(out), str(build / "src")],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.fail(f"pip wheel failed:\n{res.stderr[-3000:]}")
    (whl,) = out.glob("pybpfload-*.whl")
    return whl


def test_wheel_carries_the_prebuilt_objects(wheel):
    with zipfile.ZipFile(wheel) as z:
        for name in OBJECT_NAMES:
            assert z.read(f"pybpfload/prebuilt/{name}") == (PREBUILT / name).read_bytes()
        names = z.namelist()
    assert "pybpfload/resources.py" in names and "pybpfload/obj/btf_c.py" in names


@pytest.mark.root
@pytest.mark.slow
def test_classify_from_installed_wheel_in_fresh_venv(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    res = subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                          str(wheel)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    where = subprocess.run([str(py), "-c", "import pybpfload.resources as r; "
                            "print(r.prebuilt_object('classify.bpf.o'))"],
                           cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(venv))  # the installed copy, not the checkout's
    _classify_sees_marker([str(py), "-m", "pybpfload"], tmp_path, tmp_path)


@pytest.fixture(scope="module")
def pyz(tmp_path_factory):
    build = tmp_path_factory.mktemp("pyz")
    shutil.copytree(ROOT, build / "src", symlinks=True,
                    ignore=shutil.ignore_patterns(".git", "build", "dist", "*.egg-info",
                                                  ".hypothesis", ".pytest_cache", "__pycache__"))
    res = subprocess.run(["make", "-s", "pyz", f"PYTHON={sys.executable}"], cwd=build / "src",
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    return build / "src" / "dist" / "pybpfload.pyz"


def test_pyz_holds_package_dependencies_licences_and_objects(pyz):
    with zipfile.ZipFile(pyz) as z:
        names = set(z.namelist())
        for name in OBJECT_NAMES:
            assert z.read(f"pybpfload/prebuilt/{name}") == (PREBUILT / name).read_bytes()
    for package in ("pybpfload/cli.py", "elftools/__init__.py", "construct/__init__.py",
                    "pyroute2/__init__.py", "__main__.py"):
        assert package in names
    for dist in ("pyelftools", "construct", "pyroute2"):
        assert any(n.startswith(dist) and ".dist-info/" in n and "LICENSE" in n.upper()
                   for n in names), f"no licence file of {dist}"


needs_debian_python = pytest.mark.skipif(not os.path.exists(DEBIAN_PYTHON),
                                         reason="Debian's python3 is not installed")


@needs_debian_python
def test_pyz_inspect_with_isolated_debian_python(pyz, tmp_path):
    res = subprocess.run([DEBIAN_PYTHON, "-I", "-S", str(pyz), "inspect",
                          str(PREBUILT / "classify.bpf.o")],
                         cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "handle_exec" in res.stdout


@needs_debian_python
def test_pyz_reads_objects_from_the_zip_not_a_path(pyz, tmp_path):
    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "import pybpfload.resources as r; o = r.prebuilt_object('classify.bpf.o'); "
            "print(type(o).__name__, len(o.read_bytes()))")
    res = subprocess.run([DEBIAN_PYTHON, "-I", "-S", "-c", code, str(pyz)], cwd=tmp_path,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    kind, size = res.stdout.split()
    assert kind != "PosixPath" and int(size) == (PREBUILT / "classify.bpf.o").stat().st_size


@pytest.mark.root
@needs_debian_python
def test_pyz_ps_and_classify_with_isolated_debian_python(pyz, tmp_path):
    cmd = [DEBIAN_PYTHON, "-I", "-S", str(pyz)]
    ps = subprocess.run([*cmd, "ps"], cwd=tmp_path, capture_output=True, text=True)
    assert ps.returncode == 0, ps.stderr
    assert f"\n{os.getpid()} " in ps.stdout or f"\n{os.getpid()}\t" in ps.stdout \
        or any(line.split()[:1] == [str(os.getpid())] for line in ps.stdout.splitlines())
    _classify_sees_marker(cmd, tmp_path, tmp_path)
