"""tracefs and bpffs mounting, exercised in a private mount namespace (a child
process that unshares CLONE_NEWNS), so the host's mounts are never changed."""

import os
import subprocess
import sys
import textwrap

import pytest

from pybpfload.kernel import bpffs, tracefs

pytestmark = pytest.mark.root

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs in the child: private mount namespace, everything unmounted that the
# code under test should mount again.
PRELUDE = textwrap.dedent("""
    import ctypes, os, sys
    libc = ctypes.CDLL(None, use_errno=True)
    CLONE_NEWNS, MS_REC, MS_PRIVATE, MNT_DETACH = 0x20000, 0x4000, 1 << 18, 2
    if libc.unshare(CLONE_NEWNS) != 0:
        sys.exit("unshare failed: %d" % ctypes.get_errno())
    if libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        sys.exit("making / private failed")
    def umount_all(path, magic):
        from pybpfload.kernel.bpffs import fs_magic
        while fs_magic(path) == magic:
            if libc.umount2(path.encode(), MNT_DETACH) != 0:
                sys.exit("umount %s failed" % path)
""")


def run_child(body):
    code = PRELUDE + textwrap.dedent(body)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return proc.stdout


def test_tracefs_is_mounted_when_missing():
    host_before = tracefs.find_tracefs()
    out = run_child("""
        from pybpfload.kernel import tracefs
        for p in tracefs.TRACEFS_PATHS:
            umount_all(p, tracefs.TRACEFS_MAGIC)
        assert tracefs.find_tracefs() is None
        path = tracefs.ensure_tracefs()
        assert path == "/sys/kernel/tracing" and tracefs.find_tracefs() == path
        print(tracefs.tracepoint_id("syscalls", "sys_enter_getppid"))
    """)
    assert int(out) > 0
    assert tracefs.find_tracefs() == host_before       # host untouched


def test_bpffs_is_mounted_when_missing_and_pins_work():
    host_before = bpffs.find_bpffs()
    out = run_child("""
        from pybpfload.kernel import bpffs
        from pybpfload.kernel.maps import Map
        from pybpfload.obj.spec import MapSpec
        umount_all("/sys/fs/bpf", bpffs.BPF_FS_MAGIC)
        assert bpffs.find_bpffs() is None
        path = bpffs.ensure_bpffs()
        assert path == "/sys/fs/bpf" and bpffs.is_bpffs(path)
        with Map.create(MapSpec("m", 2, 4, 4, 1)) as m:
            bpffs.pin(m.fd, "/sys/fs/bpf/nsmap")
        with Map.from_pin("/sys/fs/bpf/nsmap") as again:
            print(again.info.name)
    """)
    assert out.strip() == "m"
    assert bpffs.find_bpffs() == host_before
    assert not os.path.exists("/sys/fs/bpf/nsmap")      # the pin lived in the child's bpffs


def test_missing_tracepoint_names_the_fix():
    from pybpfload.errors import AttachError
    with pytest.raises(AttachError, match="available_events"):
        tracefs.tracepoint_id("nosuchcat", "nosuchevent")
    with pytest.raises(AttachError, match="invalid tracepoint"):
        tracefs.tracepoint_id("..", "x")
