import subprocess
import sys

from conftest import ROOT


def run(*args):
    return subprocess.run([sys.executable, "-m", "pybpfload", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_no_command_prints_usage_and_fails():
    r = run()
    assert r.returncode == 2
    assert "COMMAND" in r.stderr


def test_help_lists_every_command():
    r = run("--help")
    assert r.returncode == 0
    for name in ("inspect", "load", "classify", "ps", "syscalls"):
        assert name in r.stdout


def test_unknown_command_is_a_usage_error():
    r = run("frobnicate")
    assert r.returncode == 2
    assert "invalid choice" in r.stderr
    assert "Traceback" not in r.stderr
