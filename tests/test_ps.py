"""/proc reading and the ps command: real processes, a fake /proc with hostile
content, vanished processes, escaping, JSON fields and filters."""

import io
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from pybpfload.cli import main
from pybpfload.tools import procfs, ps
from pybpfload.tools.procfs import ProcessGone, parse_cgroup, parse_status, read_process, walk
from pybpfload.tools.runtime_state import RuntimeState

H64 = "3f2a" * 16
FIELDS = {"pid", "ppid", "nspid", "uid", "comm", "args", "type", "own_pidns", "runtime", "container_id",
          "container_name", "pod_uid", "pod_name", "pod_namespace", "cgroup", "pidns", "mntns"}


def _fake_proc(root, pid, comm=b"sh", cmdline=b"sh\0-c\0x\0", cgroup=b"0::/\n", nspid=None,
               ppid=1, uid=0, pidns=4026531836, mntns=4026531840, status_extra=b""):
    d = root / str(pid)
    (d / "ns").mkdir(parents=True)
    nspid = nspid or [pid]
    (d / "status").write_bytes(
        b"Name:\t%s\nPPid:\t%d\nUid:\t%d\t%d\t%d\t%d\nNSpid:\t%s\n" % (
            comm, ppid, uid, uid, uid, uid, b"\t".join(b"%d" % n for n in nspid)) + status_extra)
    (d / "comm").write_bytes(comm + b"\n")
    (d / "cmdline").write_bytes(cmdline)
    (d / "cgroup").write_bytes(cgroup)
    if pidns:
        os.symlink(f"pid:[{pidns}]", d / "ns" / "pid")
    if mntns:
        os.symlink(f"mnt:[{mntns}]", d / "ns" / "mnt")
    return d


def test_read_self():
    p = read_process(os.getpid())
    assert p.pid == os.getpid() and p.ppid == os.getppid() and p.uid == os.getuid()
    assert p.comm == open("/proc/self/comm", "rb").read().rstrip(b"\n")
    assert p.args[0].endswith(b"python3") or b"python" in p.args[0] or p.args
    assert p.pidns == os.stat("/proc/self/ns/pid").st_ino
    assert p.mntns == os.stat("/proc/self/ns/mnt").st_ino
    assert p.nspid[0] == os.getpid() and p.pidns_level == len(p.nspid) - 1
    assert any(h == 0 for h, _, _ in p.cgroup)


def test_vanished_process_raises_process_gone():
    child = subprocess.Popen(["true"])
    child.wait()
    with pytest.raises(ProcessGone):
        read_process(child.pid)
    with pytest.raises(ProcessGone):
        read_process(2 ** 22 + 7)


def test_walk_finds_a_child_and_skips_kernel_threads():
    child = subprocess.Popen(["sleep", "30"])
    try:
        seen = {p.pid: p for p in walk()}
        assert child.pid in seen and seen[child.pid].args == [b"sleep", b"30"]
        assert 2 not in seen                       # kthreadd
        assert 2 in {p.pid for p in walk(kernel_threads=True)}
    finally:
        child.kill()
        child.wait()


def test_fake_proc_hostile_content(tmp_path):
    evil = b"\x1b[2J\x1b]0;owned\x07\xff\xfe"
    _fake_proc(tmp_path, 10, comm=evil, cmdline=evil + b"\0arg\nnewline\0",
               cgroup=b"0::/docker/" + H64.encode() + b"\n", nspid=[10, 1])
    _fake_proc(tmp_path, 11, cgroup=b"garbage\n\xff:x\n1:cpu\n0::/\n", status_extra=b"Uid:\n",
               pidns=None, mntns=None)
    (tmp_path / "12").mkdir()                     # a process that vanished mid-walk
    (tmp_path / "self").mkdir()
    procs = {p.pid: p for p in walk(str(tmp_path))}
    assert set(procs) == {10, 11}
    assert procs[10].comm == evil and procs[10].args == [evil, b"arg\nnewline"]
    assert procs[10].pidns_level == 1 and procs[10].innermost_pid == 1
    assert procs[11].pidns is None and procs[11].cgroup == [(0, "", "/")]
    with pytest.raises(ProcessGone):
        read_process(12, str(tmp_path))

    out = io.StringIO()
    sys_stdout, sys.stdout = sys.stdout, out
    try:
        class A:
            json = False; containers = False; host = False; container = None; runtime = None
            kernel_threads = False; proc = str(tmp_path); state_root = []
        assert ps.run(A) == 0
        A.json = True
        assert ps.run(A) == 0
    finally:
        sys.stdout = sys_stdout
    text = out.getvalue()
    assert "\x1b" not in text and "\x07" not in text
    table, *jsonl = [l for l in text.split("\n") if l]
    rows = [l for l in text.split("\n") if l.startswith("10 ")]
    assert rows and "\\x1b[2J" in rows[0] and "docker" in rows[0] and H64[:12] in rows[0]
    recs = [json.loads(l) for l in text.split("\n") if l.startswith("{")]
    assert len(recs) == 2 and set(recs[0]) >= FIELDS
    r10 = [r for r in recs if r["pid"] == 10][0]
    assert (r10["type"], r10["runtime"], r10["container_id"], r10["own_pidns"], r10["nspid"]) == \
        ("container", "docker", H64, True, 1)
    assert r10["args"][1] == "arg\nnewline" and r10["container_name"] is None
    r11 = [r for r in recs if r["pid"] == 11][0]
    assert r11["pidns"] is None and r11["type"] == "host" and r11["container_id"] is None


def test_parsers_tolerate_garbage():
    assert parse_cgroup(b"\xff\n::\nx:y:z\n3:a:/b:c\n") == [(3, "a", "/b:c")]
    assert parse_status(b"PPid:\tzz\nNSpid:\t5\tq\nUid:") == (None, None, (5,), False)
    assert parse_status(b"") == (None, None, (), False)


def test_ps_cli_json_lists_this_process_as_host(capsys):
    assert main(["ps", "--json"]) == 0
    recs = {r["pid"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    me = recs[os.getpid()]
    assert set(me) >= FIELDS
    assert me["type"] == "host" and me["container_id"] is None and me["own_pidns"] is False


def test_ps_cli_filters_and_escaping(tmp_path, capsys):
    # a real process whose name is an escape sequence
    prog = tmp_path / "\x1b[31mred\x07"
    shutil.copy("/bin/sleep", prog)
    child = subprocess.Popen([str(prog), "30"])
    try:
        time.sleep(0.1)
        assert main(["ps", "--host"]) == 0
        out = capsys.readouterr().out
        assert "\x1b" not in out and "\x07" not in out and "\\x1b[31mred" in out
        assert main(["ps", "--containers", "--runtime", "nonexistent"]) == 0
        assert capsys.readouterr().out.splitlines()[1:] == []
    finally:
        child.kill()
        child.wait()


def test_ps_usage_error():
    with pytest.raises(SystemExit) as exc:
        main(["ps", "--host", "--containers"])
    assert exc.value.code == 2
