"""``syscalls`` against REAL runc containers, as a user would run it.

A static ``getppid`` loop (compiled here with gcc into the lab's busybox
rootfs) makes a known number of calls inside one container while another
container and the host do other work (the host even runs the same loop):
the count reported for the first container must be at least that number and
not include the host's, the other container must show almost none.  The
containers of the first tests are running before the tool starts (found by
the /proc seed, so the cgroup directory inode equals the kernel's kernfs
id); the terminal test starts its container afterwards (found through exec
events).  Also: ``--all`` shows the host, the Prometheus endpoint is scraped
with urllib, a stopped container is marked stopped, the live view is read
from a real tmux pane, and the kernel objects are gone after close.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import pytest

from runtimes import Lab, have, wait_for

pytestmark = [pytest.mark.root, pytest.mark.containers]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOOP_C = r"""
#include <stdlib.h>
#include <unistd.h>
#include <sys/syscall.h>
int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 100000;
    for (long i = 0; i < n; i++) syscall(SYS_getppid);
    return 0;
}
"""
CALLS = 100000


def compile_loop(dest):
    src = os.path.join(tempfile.mkdtemp(prefix="pybpf-loop-"), "loop.c")
    try:
        with open(src, "w") as f:
            f.write(LOOP_C)
        subprocess.run(["gcc", "-O2", "-static", "-o", dest, src], check=True,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    finally:
        shutil.rmtree(os.path.dirname(src), ignore_errors=True)


@pytest.fixture(scope="module")
def lab():
    if os.geteuid() != 0:
        pytest.skip("needs root to start containers")
    for tool in ("runc", "gcc"):
        if not have(tool):
            pytest.skip(f"{tool} is not installed")
    with Lab() as the_lab:
        compile_loop(os.path.join(the_lab.build_rootfs(), "bin", "getppid_loop"))
        yield the_lab


@pytest.fixture
def started(lab):
    mine = []
    yield mine
    for s in mine:
        lab.stop(s)


class Tool:
    """``python -m pybpfload syscalls ...`` in the background; JSON lines collected."""

    def __init__(self, *args):
        self.proc = subprocess.Popen([sys.executable, "-m", "pybpfload", "syscalls", *args],
                                     cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     start_new_session=True)
        self.lines = []
        self.stderr = b""
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(json.loads(line))

    def latest(self, pred):
        for rec in reversed(self.lines):
            if pred(rec):
                return rec
        return None

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.stderr = self.proc.communicate(timeout=20)[1]
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.stderr = self.proc.communicate()[1]
        self._t.join(5)
        return self.proc.returncode


def _of(cid):
    return lambda rec: rec["container_id"] == cid


def _getppid(rec):
    return (rec or {}).get("syscalls", {}).get("getppid", {}).get("total", 0) if rec else 0


def _until_seen(lab, tool, conts, timeout=30):
    """Poke each container with an exec until the tool reports it (it is watched)."""
    def seen():
        for s in conts:
            if tool.latest(_of(s.id)) is None:
                lab.exec(s, ["true"])
        return all(tool.latest(_of(s.id)) for s in conts) or tool.proc.poll() is not None
    assert wait_for(seen, timeout, 0.3) and tool.proc.poll() is None, tool.stop() or tool.stderr


def test_counts_attributed_to_the_right_container_and_host(lab, started):
    a = lab.start_runc()
    started.append(a)
    b = lab.start_runc()
    started.append(b)
    tool = Tool("--json", "--all", "--interval", "0.5")
    host_loop = None
    try:
        _until_seen(lab, tool, [a, b])
        before = {"a": _getppid(tool.latest(_of(a.id))), "b": _getppid(tool.latest(_of(b.id)))}
        host_loop = subprocess.Popen([os.path.join(lab.rootfs, "bin", "getppid_loop"),
                                      str(CALLS)])
        r = lab.exec(a, ["/bin/getppid_loop", str(CALLS)], timeout=60)
        assert r.returncode == 0, r.stderr
        for _ in range(5):
            lab.exec(b, ["ls", "-R", "/etc", "/bin"])
        assert host_loop.wait(60) == 0
        host_loop = None
        got = lambda: _getppid(tool.latest(_of(a.id))) - before["a"] >= CALLS  # noqa: E731
        assert wait_for(got, 10, 0.2), tool.latest(_of(a.id))
        time.sleep(1.2)
        rec_a, rec_b = tool.latest(_of(a.id)), tool.latest(_of(b.id))
        host = tool.latest(lambda rec: rec["container_name"] == "host")
    finally:
        if host_loop is not None:
            host_loop.kill()
            host_loop.wait()
        assert tool.stop() == 0, tool.stderr
    a_calls = _getppid(rec_a) - before["a"]
    # the container's own calls, and not the host's 100000 on top
    assert CALLS <= a_calls < CALLS + 5000, rec_a
    assert rec_a["runtime"] == "runc" and rec_a["container_name"]
    assert _getppid(rec_b) - before["b"] < 1000, rec_b
    assert rec_b["syscalls"].get("getdents64", {}).get("total", 0) > 0, rec_b
    # --all: the host is counted in slot 0, and got its own loop
    assert host is not None and _getppid(host) >= CALLS, host
    assert b"syscalls; top:" in tool.stderr and b"overflow" in tool.stderr


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_prometheus_no_host_and_stopped_container(lab, started):
    a = lab.start_runc()
    started.append(a)
    b = lab.start_runc()
    started.append(b)
    port = _free_port()
    tool = Tool("--json", "--interval", "0.5", "--prometheus", str(port))
    try:
        _until_seen(lab, tool, [a, b])
        assert lab.exec(a, ["/bin/getppid_loop", "20000"]).returncode == 0
        assert wait_for(lambda: _getppid(tool.latest(_of(a.id))) >= 20000, 10, 0.2)
        time.sleep(0.6)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            assert resp.headers["Content-Type"].startswith("text/plain")
            body = resp.read().decode()
        lab.stop(b)
        started.remove(b)
        stopped = wait_for(lambda: (tool.latest(_of(b.id)) or {}).get("stopped"), 10, 0.2)
    finally:
        assert tool.stop() == 0, tool.stderr
    series = {}
    for line in body.splitlines():
        if line.startswith("pybpfload_syscalls_total{"):
            labels, value = line.rsplit(" ", 1)
            series[labels] = int(value)
    mine = [v for k, v in series.items()
            if f'container_id="{a.id}"' in k and 'syscall="getppid"' in k]
    assert mine and mine[0] >= 20000, body
    assert 'runtime="runc"' in body
    # host processes are skipped in the kernel without --all
    assert not any('container_name="host"' in k for k in series), body
    assert not any(rec["container_name"] == "host" for rec in tool.lines)
    for health in ("pybpfload_syscalls_intervals_total", "pybpfload_syscalls_containers_watched",
                   "pybpfload_syscalls_overflow_total",
                   "pybpfload_syscalls_exec_events_lost_total"):
        assert f"\n{health} " in body, health
    assert stopped, tool.latest(_of(b.id))


def _tmux(*args):
    return subprocess.run(["tmux", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=20)


def test_live_view_in_tmux(lab, started):
    if not have("tmux"):
        pytest.skip("tmux is not installed")
    session = f"pbt-syscalls-{os.getpid()}"
    sock = ["-L", session]
    cmd = (f"cd {REPO} && exec {sys.executable} -m pybpfload syscalls --interval 1 "
           f"--exclude-noise --top 8")
    assert _tmux(*sock, "new-session", "-d", "-s", session, "-x", "160", "-y", "50",
                 cmd).returncode == 0
    screens = []

    def screen():
        s = _tmux(*sock, "capture-pane", "-p", "-t", session).stdout.decode()
        screens.append(s)
        return s
    try:
        assert wait_for(lambda: "containers watched:" in screen(), 30, 0.3), screens[-1:]
        c = lab.start_runc(cmd=("sh", "-c", "while true; do /bin/getppid_loop 20000; "
                                "sleep 0.4; done"))
        started.append(c)
        short = c.id[:12]

        def row(s):
            for line in s.splitlines():
                parts = line.split()
                if parts and parts[0] == "getppid":
                    return parts
            return None
        totals = []
        new_seen = False
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (new_seen and len(set(totals)) >= 3):
            s = screen()
            r = row(s)
            if r and short in s:
                totals.append(int(r[1]))
                new_seen = new_seen or "*NEW" in r
            time.sleep(0.3)
    finally:
        _tmux(*sock, "kill-server")
    last = screens[-1]
    assert short in last and "runc" in last, last
    assert new_seen, screens[-3:]
    assert len(set(totals)) >= 3 and totals == sorted(totals), totals
    assert "\x1b" not in last
    # --exclude-noise: the shell's wait4/rt_sigprocmask are not shown
    assert "rt_sigprocmask" not in last and "wait4" not in last


def test_monitor_leaves_nothing_in_the_kernel():
    import argparse

    from pybpfload.kernel import ids
    from pybpfload.kernel.maps import map_info
    from pybpfload.kernel.programs import prog_info
    from pybpfload.tools import syscalls

    parser = argparse.ArgumentParser()
    syscalls.add_arguments(parser)
    mon = syscalls.Monitor(parser.parse_args(["--interval", "0.2"]))
    try:
        mon.open()
        objs = (mon.counter_obj, mon.classify_obj)
        progs = {prog_info(p.program.fd)[0].id for o in objs for p in o.programs.values()}
        maps = {map_info(m.fd).id for o in objs for m in o.maps.values()}
        links = set(ids.link_ids())
        mon.poll_events(0.2)
        mon.tick()
        assert progs and maps and progs <= set(ids.prog_ids())
    finally:
        mon.close()
    assert wait_for(lambda: not (progs & set(ids.prog_ids())), 5)
    # maps are freed by a kernel worker after the last reference goes
    assert wait_for(lambda: not (maps & set(ids.map_ids())), 10), maps & set(ids.map_ids())
    assert links  # the raw_tp and tracepoint links existed while it ran
