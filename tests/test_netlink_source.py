"""The road without BPF: ``classify --source netlink`` and ``--source auto``'s fallback.

Root tests run ``python -m pybpfload classify`` as a user would, against the
kernel's real process-events connector and a real runc container: a marked
host command and a marked process in (and exec'd into) the container must
come out classified right, with ``"source": "netlink"``.  ``--source auto``
is made unable to use BPF in two real ways (no kernel BTF; root without
CAP_BPF/CAP_PERFMON but with CAP_NET_ADMIN) and must say why on ONE stderr
line, fall back, and still report execs; ``--source bpf`` must fail instead.

Non-root tests check the record builder on live and vanished processes
and that both roads produce records with the same fields.
"""

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile

import pytest

from pybpfload.tools import process_view
from pybpfload.tools.classify import Classifier
from pybpfload.tools.netlink_source import NOTE, UNKNOWN, ProcRecords

from runtimes import Lab, have, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FALLBACK = "pybpfload: BPF cannot be used ("


def _marker():
    return "pbnl-" + secrets.token_hex(6)


def _marked_sh(marker, seconds="0.5"):
    """A shell that lives ``seconds`` with ``marker`` in its argv."""
    return ["sh", "-c", f"sleep {seconds}; true", "sh", marker]


class Watcher:
    """``python -m pybpfload classify --json --ready-file ...`` in a subprocess."""

    def __init__(self, extra_args, prefix=(), env=None):
        self.dir = tempfile.mkdtemp(prefix="classify-nl-")
        self.ready = os.path.join(self.dir, "ready")
        self.out_path = os.path.join(self.dir, "out")
        self.err_path = os.path.join(self.dir, "err")
        argv = list(prefix) + [sys.executable, "-m", "pybpfload", "classify", "--json",
                               "--ready-file", self.ready] + list(extra_args)
        extra_env = env
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env.update(extra_env or {})
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=err, cwd=ROOT, env=env)

    def wait_ready(self, timeout=30):
        wait_for(lambda: os.path.exists(self.ready) or self.proc.poll() is not None,
                 timeout, 0.01)
        assert os.path.exists(self.ready), f"classify did not start: {self.stderr()}"
        return self

    def stderr(self):
        with open(self.err_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def records(self):
        with open(self.out_path, "rb") as f:
            data = f.read()
        data = data[:data.rfind(b"\n") + 1]
        return [json.loads(line) for line in data.splitlines()]   # every line valid JSON

    def find(self, marker, argv0="sh", timeout=15):
        found = []

        def look():
            found[:] = [r for r in self.records()
                        if marker in r["args"] and r["args"][:1] == [argv0]]
            return bool(found)
        wait_for(look, timeout, 0.05)
        assert found, f"no exec record with {marker}; stderr: {self.stderr()}"
        return found

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def close(self):
        self.stop()
        for name in ("ready", "out", "err"):
            try:
                os.unlink(os.path.join(self.dir, name))
            except OSError:
                pass
        os.rmdir(self.dir)


def _ns(pid, kind):
    link = os.readlink(f"/proc/{pid}/ns/{kind}")
    return int(link[link.index("[") + 1:-1])


def _run_marked_host_command():
    marker = _marker()
    proc = subprocess.Popen(_marked_sh(marker), stdin=subprocess.DEVNULL)
    return marker, proc


def _assert_host_record(rec, proc):
    assert rec["source"] == "netlink"
    assert rec["pid"] == proc.pid and rec["ppid"] == os.getpid()
    assert rec["type"] == "host" and rec["runtime"] is None and rec["container_id"] is None
    assert rec["pidns_level"] == 0


# -- root: the real connector ------------------------------------------------

@pytest.fixture(scope="module")
def lab():
    if os.geteuid() != 0:
        pytest.skip("needs root to start containers")
    with Lab() as the_lab:
        yield the_lab


@pytest.fixture
def watcher():
    made = []

    def start(extra_args, prefix=(), env=None):
        w = Watcher(extra_args, prefix, env)
        made.append(w)
        return w
    yield start
    for w in made:
        w.close()


@pytest.mark.root
@pytest.mark.containers
def test_netlink_sees_host_and_runc_container_execs(lab, watcher):
    if not have("runc"):
        pytest.skip("runc is not installed")
    w = watcher(["--source", "netlink"]).wait_ready()
    assert NOTE in w.stderr()

    marker, proc = _run_marked_host_command()
    rec = w.find(marker)[0]
    proc.wait(10)
    _assert_host_record(rec, proc)
    assert rec["pidns"] == _ns("self", "pid") and rec["mntns"] == _ns("self", "mnt")

    init_marker = _marker()
    s = lab.start_runc(cmd=_marked_sh(init_marker, "600"))
    try:
        init = w.find(init_marker)[0]
        assert init["pid"] == s.pid and init["source"] == "netlink"
        assert init["pidns_level"] == 1 and init["nspid"] == 1
        assert init["pidns"] == _ns(s.pid, "pid") and init["mntns"] == _ns(s.pid, "mnt")
        # an exec into the running container: its state is on disk by now
        exec_marker = _marker()
        out = lab.exec(s, _marked_sh(exec_marker, "0.5"))
        assert out.returncode == 0, out.stderr
        rec = w.find(exec_marker)[0]
        assert rec["type"] == "container" and rec["runtime"] == "runc"
        assert rec["container_id"] == s.id and rec["own_pidns"] is True
        assert rec["pidns"] == init["pidns"]
        # the container's init, exec'd before runc wrote its state file:
        # classified the same (runc's container directory already exists)
        assert init["type"] == "container", init
        assert init["container_id"] == s.id and init["runtime"] == "runc"
    finally:
        lab.stop(s)
    assert w.stop() == 0
    summary = [line for line in w.stderr().splitlines() if line.startswith("pybpfload classify:")]
    assert len(summary) == 1 and "(source netlink)" in summary[0]


def _fallback_lines(err):
    return [line for line in err.splitlines() if line.startswith(FALLBACK)]


@pytest.mark.root
def test_auto_falls_back_without_kernel_btf(watcher):
    w = watcher([], env={"PYBPFLOAD_KERNEL_BTF": "/nonexistent"}).wait_ready()
    lines = _fallback_lines(w.stderr())
    assert len(lines) == 1, w.stderr()
    assert "no kernel BTF" in lines[0] and "/nonexistent" in lines[0]
    assert "falling back to the process-events connector" in lines[0]
    assert "Traceback" not in w.stderr()
    marker, proc = _run_marked_host_command()
    rec = w.find(marker)[0]
    proc.wait(10)
    _assert_host_record(rec, proc)


@pytest.mark.root
def test_source_bpf_fails_instead_of_falling_back():
    env = dict(os.environ, PYBPFLOAD_KERNEL_BTF="/nonexistent",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-m", "pybpfload", "classify", "--source", "bpf",
                          "--duration", "5"], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=60)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pybpfload: error: ")
    assert "/nonexistent" in lines[0] and not _fallback_lines(out.stderr)


@pytest.mark.root
def test_auto_falls_back_without_cap_bpf(watcher):
    if not have("setpriv"):
        pytest.skip("setpriv is not installed")
    # root, but only CAP_NET_ADMIN (bounding and inheritable sets): no CAP_BPF,
    # CAP_PERFMON nor CAP_SYS_ADMIN, so loading the program is refused
    prefix = ["setpriv", "--bounding-set=-all,+net_admin", "--inh-caps=-all,+net_admin", "--"]
    w = watcher([], prefix=prefix).wait_ready()
    with open(f"/proc/{w.proc.pid}/status") as f:
        eff = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    assert eff == 1 << 12, hex(eff)       # CAP_NET_ADMIN only
    lines = _fallback_lines(w.stderr())
    assert len(lines) == 1, w.stderr()
    assert "no privilege" in lines[0]
    marker, proc = _run_marked_host_command()
    rec = w.find(marker)[0]
    proc.wait(10)
    _assert_host_record(rec, proc)


# -- no root needed: the record builder ----------------------------------------

def _records():
    return ProcRecords(Classifier(process_view.Resolver(), "cpu"))


def test_record_of_a_live_process_has_the_bpf_roads_fields():
    marker = _marker()
    proc = subprocess.Popen(_marked_sh(marker, "5"), stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: marker.encode() in open(f"/proc/{proc.pid}/cmdline", "rb").read(), 5)
        rec = _records().record(proc.pid, 0)
    finally:
        proc.kill()
        proc.wait()
    assert rec["args"] == _marked_sh(marker, "5") and rec["comm"] == "sh"
    assert rec["ppid"] == os.getpid() and rec["source"] == "netlink"
    assert rec["type"] == "host" and rec["pidns"] == _ns("self", "pid")
    bpf_event = {
        "cgroup_v2_path": [b""], "cgroup_v2_depth": 0, "cgroup_v2_truncated": 0,
        "v1_cgroup_id": 0, "cgroup_id": 1, "pid_ns_level": 0, "comm": b"sh", "pid": 1,
        "tid": 1, "ppid": 0, "ns_pid": 1, "uid": 0, "gid": 0, "filename": b"/bin/sh",
        "args": b"", "args_len": 0, "args_truncated": 0, "time_ns": 0,
        "pid_ns_inum": 1, "mnt_ns_inum": 1, "cgroup_ns_inum": 1,
    }
    bpf_rec = Classifier(process_view.Resolver(), "cpu").record(bpf_event)
    assert set(rec) == set(bpf_rec) | {"source"}
    process_view.table_values(rec)


def test_vanished_process_is_unknown_with_its_forked_parent():
    proc = subprocess.Popen(["true"])
    proc.wait()
    records = _records()
    records.forked(proc.pid, 4242)
    rec = records.record(proc.pid, 0)
    assert rec["type"] == UNKNOWN and rec["ppid"] == 4242 and rec["comm"] is None
    assert rec["source"] == "netlink"
    assert set(rec) == set(_records().record(os.getpid(), 0))
    args = type("Args", (), dict(containers=True, host=False, runtime=None, container=None))
    assert not process_view.wanted(rec, args)      # --containers never shows unknowns
    records.exited(proc.pid)
    assert records.record(proc.pid, 0)["ppid"] is None
