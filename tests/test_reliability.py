"""Reliability: nothing left behind, bounded memory, accuracy under load.

* Nothing left behind: ``classify`` and ``syscalls`` run as subprocesses and
  are ended by ``--duration``, SIGINT, SIGTERM and SIGKILL.  While they run,
  the BPF programs, maps and links they hold and the perf events they opened
  are read from their ``/proc/<pid>/fd`` (``fdinfo`` gives the kernel ids);
  after they end none of those ids exists any more (``pybpfload.kernel.ids``),
  nothing new is pinned under /sys/fs/bpf, the bpffs/tracefs mounts are as
  before.  Ids are attributed by the fds of the process, so programs other
  tests load at the same time do not matter.
* Bounded memory: the pid cache of ``Classifier``, the ``Resolver`` cache and
  ``RuntimeState`` stay within their bounds under synthetic churn (events of
  many distinct pids in many distinct container cgroups) and the Python heap
  stops growing; a real classify under an exec storm in 200 distinct cgroups
  keeps its VmRSS flat.
* Accuracy under load: host and several runc containers exec a marker command
  a fixed number of times at once; every reported marker carries the right
  classification and container id, and reported + lost covers executed.
"""

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc

import pytest

from conftest import ROOT

CGROUP_FS = "/sys/fs/cgroup"
SUMMARY = re.compile(r"pybpfload classify: (\d+) execs .* (\d+) lost")


# -- what a process holds, read from /proc -------------------------------------------

def held_by(pid):
    """{"prog", "map", "link"}: kernel ids of the BPF objects ``pid`` has fds of;
    "perf": how many perf event fds it has."""
    out = {"prog": set(), "map": set(), "link": set(), "perf": 0}
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
            if target == "anon_inode:[perf_event]":
                out["perf"] += 1
                continue
            if not target.startswith("anon_inode:bpf-"):
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                info = f.read()
        except OSError:
            continue
        for kind in ("prog", "map", "link"):
            m = re.search(rf"^{kind}_id:\s*(\d+)", info, re.M)
            if m and target.startswith(f"anon_inode:bpf-{kind}" if kind != "prog" else
                                       "anon_inode:bpf-prog"):
                out[kind].add(int(m.group(1)))
    return out


def live_ids():
    from pybpfload.kernel import ids
    return {"prog": set(ids.prog_ids()), "map": set(ids.map_ids()), "link": set(ids.link_ids())}


def pinned():
    found = set()
    for dirpath, dirnames, filenames in os.walk("/sys/fs/bpf"):
        for n in dirnames + filenames:
            found.add(os.path.join(dirpath, n))
    return found


def mounts():
    """(mount point, fs type) of every bpf, tracefs and debugfs mount."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fstype = right.split()[0]
            if fstype in ("bpf", "tracefs", "debugfs"):
                out.append((left.split()[4], fstype))
    return sorted(out)


def start_tool(argv, ready_file=None, stdout=subprocess.DEVNULL):
    proc = subprocess.Popen([sys.executable, "-m", "pybpfload", *argv], cwd=ROOT,
                            stdout=stdout, stderr=subprocess.PIPE)
    return proc


def wait_attached(proc, ready_file=None, timeout=60):
    """Wait until the tool is attached: its ready file, or (tools without one)
    perf events / links it holds whose set stops changing."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"tool exited early: rc={proc.returncode}: "
                                 f"{proc.stderr.read().decode(errors='replace')[-2000:]}")
        if ready_file:
            if os.path.exists(ready_file) and os.path.getsize(ready_file):
                return held_by(proc.pid)
        else:
            now = held_by(proc.pid)
            if (now["perf"] or now["link"]) and now == last:
                return now
            last = now
        time.sleep(0.2)
    raise AssertionError("tool did not attach in time")


def _tool_argv(tool, mode):
    argv = [tool]
    if tool == "syscalls":
        argv += ["--json", "--interval", "0.5"]
    else:
        argv += ["--json"]
    if mode == "duration":
        argv += ["--duration", "4" if tool == "classify" else "6"]
    return argv


def _gone(held, timeout=10):
    """The ids of ``held`` still alive after waiting up to ``timeout`` (the
    kernel frees programs and maps after an RCU grace period)."""
    deadline = time.monotonic() + timeout
    while True:
        live = live_ids()
        left = {k: held[k] & live[k] for k in ("prog", "map", "link")}
        if not any(left.values()) or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


# -- 1. nothing left behind ------------------------------------------------------------

@pytest.mark.root
@pytest.mark.parametrize("mode", ["duration", "sigint", "sigterm", "sigkill"])
@pytest.mark.parametrize("tool", ["classify", "syscalls"])
def test_nothing_left_behind(tool, mode, tmp_path):
    if not os.path.exists(ROOT / "pybpfload" / "tools" / f"{tool}.py"):
        pytest.skip(f"pybpfload/tools/{tool}.py does not exist yet")
    pins_before, mounts_before = pinned(), mounts()
    ready = str(tmp_path / "ready") if tool == "classify" else None
    argv = _tool_argv(tool, mode) + (["--ready-file", ready] if ready else [])
    proc = start_tool(argv)
    try:
        held = wait_attached(proc, ready)
        # the fds show really loaded and attached things: the check below can fail
        assert held["prog"] and held["map"], held
        assert held["perf"] + len(held["link"]) >= 1, held
        assert held["prog"] <= live_ids()["prog"]
        if mode == "sigint":
            proc.send_signal(signal.SIGINT)
        elif mode == "sigterm":
            proc.send_signal(signal.SIGTERM)
        elif mode == "sigkill":
            proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    err = err.decode(errors="replace")
    if mode == "sigkill":
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == 0, err[-2000:]
        assert "Traceback" not in err, err[-2000:]
        if tool == "classify":
            assert SUMMARY.search(err), err[-2000:]
    left = _gone(held)
    assert not any(left.values()), f"{tool} ended by {mode} left behind {left}"
    assert pinned() == pins_before, f"pins changed: {pinned() ^ pins_before}"
    assert mounts() == mounts_before


# -- 2. bounded caches under synthetic churn -----------------------------------------

def _event(pid, cgroup_names):
    """A decoded exec event as classify's Layout gives it (the fields record() reads)."""
    names = list(reversed(cgroup_names)) + [b""] * (8 - len(cgroup_names))
    return {"cgroup_v2_path": names, "cgroup_v2_depth": len(cgroup_names),
            "cgroup_v2_truncated": 0, "v1_cgroup_id": 0, "cgroup_v1_path": [b""] * 8,
            "cgroup_v1_depth": 0, "cgroup_v1_truncated": 0, "cgroup_id": 100000 + pid,
            "comm": b"true", "pid_ns_level": 1, "pid": pid, "tid": pid, "ppid": 1,
            "ns_pid": 1, "uid": 0, "gid": 0, "time_ns": 10 ** 9, "filename": b"/bin/true",
            "args": b"/bin/true\0x\0", "args_len": 12, "args_truncated": 0,
            "pid_ns_inum": 1, "mnt_ns_inum": 2, "cgroup_ns_inum": 3}


def _churn(classifier, start, count):
    for i in range(start, start + count):
        cid = f"{i:064x}"
        rec = classifier.record(_event(i, [b"system.slice", f"docker-{cid}.scope".encode()]))
        assert rec["container_id"] == cid and rec["type"] == "container"
        if i % 3 == 0:
            classifier.exited(i - 7)


def test_caches_bounded_under_churn(tmp_path):
    from pybpfload.tools.classify import Classifier
    from pybpfload.tools.process_view import Resolver
    from pybpfload.tools.runtime_state import RuntimeState
    roots = {rt: str(tmp_path / rt) for rt in ("docker", "podman", "containerd", "cri-o",
                                               "runc", "crun")}
    os.makedirs(os.path.join(roots["docker"], "containers", f"{5:064x}"))
    with open(os.path.join(roots["docker"], "containers", f"{5:064x}", "config.v2.json"), "w") as f:
        json.dump({"Name": "/five", "Config": {"Image": "busybox"}}, f)
    state = RuntimeState(roots, cache_size=64, negative_ttl=0.0)
    resolver = Resolver(state, max_entries=128)
    classifier = Classifier(resolver, max_pids=256)
    rec = classifier.record(_event(5, [b"system.slice", f"docker-{5:064x}.scope".encode()]))
    assert rec["container_name"] == "five"      # the caches answer correctly, not just small
    _churn(classifier, 1000, 3000)
    assert 200 <= len(classifier.pids) <= 256
    assert len(resolver._cache) == 128
    assert len(state._cache) == 64
    # still correct after its entry was evicted everywhere
    rec = classifier.record(_event(5, [b"system.slice", f"docker-{5:064x}.scope".encode()]))
    assert rec["container_name"] == "five"
    # the defaults are bounds too
    assert 0 < Classifier(Resolver()).max_pids <= 1 << 20
    assert 0 < Resolver().max_entries <= 1 << 20
    assert 0 < RuntimeState().cache_size <= 1 << 20


def test_heap_stops_growing_under_churn(tmp_path):
    """Past the bounds, more distinct pids and cgroups do not grow the heap."""
    from pybpfload.tools.classify import Classifier
    from pybpfload.tools.process_view import Resolver
    from pybpfload.tools.runtime_state import RuntimeState
    state = RuntimeState({rt: str(tmp_path) for rt in ("docker", "podman", "containerd",
                                                         "cri-o", "runc", "crun")},
                         cache_size=200, negative_ttl=0.0)
    classifier = Classifier(Resolver(state, max_entries=300), max_pids=500)
    _churn(classifier, 0, 3000)                 # fill every cache past its bound
    tracemalloc.start()
    try:
        _churn(classifier, 3000, 1000)
        warm, _ = tracemalloc.get_traced_memory()
        _churn(classifier, 4000, 6000)
        end, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # 6000 more events; a leak of even 20 bytes an event would show as 120 kB
    assert end - warm < 100_000, f"heap grew by {end - warm} bytes over 6000 events"


# -- 3. RSS of a real classify under an exec storm in many cgroups -------------------

def _rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class CgroupFarm:
    """Cgroups ``pybpfload-test-<tag>/docker-<id>.scope`` in the v2 and the cpu
    hierarchy (so classify resolves each as a docker container); removed by
    :meth:`close`, also after a failure."""

    def __init__(self, count):
        self.tag = secrets.token_hex(3)
        self.tops = []
        self.leaves = []
        for h in ("unified", "cpu"):
            top = os.path.join(CGROUP_FS, h, f"pybpfload-test-{self.tag}")
            if os.path.isdir(os.path.join(CGROUP_FS, h)):
                os.mkdir(top)
                self.tops.append(top)
        for i in range(count):
            cid = f"{self.tag}{i:06x}".ljust(64, "0")
            leaf = []
            for top in self.tops:
                path = os.path.join(top, f"docker-{cid}.scope")
                os.mkdir(path)
                leaf.append(path)
            self.leaves.append((cid, leaf))

    def run_in(self, index, argv):
        """Run ``argv`` (waiting for it) with the process moved into leaf ``index`` first."""
        _, paths = self.leaves[index]

        def enter():
            for p in paths:
                with open(os.path.join(p, "cgroup.procs"), "w") as f:
                    f.write("0")
        return subprocess.run(argv, preexec_fn=enter, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL).returncode

    def close(self):
        for top in self.tops:
            for _ in range(50):
                try:
                    for d in os.listdir(top):
                        if os.path.isdir(os.path.join(top, d)):
                            os.rmdir(os.path.join(top, d))
                    os.rmdir(top)
                    break
                except OSError:
                    time.sleep(0.1)        # a last process still exiting


def exec_storm(farm, rounds, marker):
    """``rounds`` passes over every cgroup of ``farm``, one short process each."""
    n = 0
    for r in range(rounds):
        for i in range(len(farm.leaves)):
            farm.run_in(i, ["/bin/true", marker, str(n)])
            n += 1
    return n


@pytest.mark.root
@pytest.mark.slow
def test_classify_rss_flat_under_cgroup_churn(tmp_path):
    ready = str(tmp_path / "ready")
    out = open(tmp_path / "out.json", "wb")
    farm = CgroupFarm(200)
    proc = start_tool(["classify", "--json", "--pages", "256", "--ready-file", ready], stdout=out)
    try:
        wait_attached(proc, ready)
        marker = f"pbt-rss-{farm.tag}"
        exec_storm(farm, 3, marker)                     # warm-up: 600 execs in 200 cgroups
        time.sleep(1)
        warm = _rss_kb(proc.pid)
        executed = exec_storm(farm, 6, marker)          # 1200 more
        time.sleep(1)
        end = _rss_kb(proc.pid)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        out.close()
        farm.close()
    err = err.decode(errors="replace")
    assert proc.returncode == 0, err[-2000:]
    seen = 0
    with open(tmp_path / "out.json") as f:
        for line in f:
            rec = json.loads(line)
            if marker in rec["args"]:
                seen += 1
                assert rec["type"] == "container" and rec["runtime"] == "docker", rec
                assert rec["container_id"].startswith(farm.tag), rec
    assert seen >= executed, "the storm was not seen: the RSS numbers would mean nothing"
    print(f"classify VmRSS: {warm} kB after warm-up, {end} kB after {executed} more execs "
          f"in {len(farm.leaves)} cgroups")
    assert end - warm < max(4096, warm // 10), f"VmRSS grew from {warm} to {end} kB"


# -- 4. accuracy under load: host and runc containers exec at once -------------------

#: each container runs this loop: a fixed number ($1) of real execs (a path with a
#: slash, so busybox sh execs instead of running the applet in-process) with a marker
LOOP = 'i=0; while [ "$i" -lt "$1" ]; do /bin/busybox true "$2" "$i"; i=$((i+1)); done'


@pytest.mark.root
@pytest.mark.containers
@pytest.mark.slow
def test_accuracy_under_load(tmp_path):
    from runtimes import Lab, alive, have, wait_for
    if not have("runc"):
        pytest.skip("runc is not installed")
    per_container, host_execs, containers = 800, 800, 4
    ready = str(tmp_path / "ready")
    out = open(tmp_path / "out.json", "wb")
    proc = start_tool(["classify", "--json", "--pages", "256", "--ready-file", ready], stdout=out)
    lab = Lab()
    try:
        wait_attached(proc, ready)
        lab.build_rootfs()
        tag = secrets.token_hex(3)
        host_marker = f"pbt-acc-{tag}-host"
        started = []
        host = threading.Thread(target=lambda: [subprocess.run(
            ["/bin/true", host_marker, str(i)]) for i in range(host_execs)])
        host.start()
        for c in range(containers):
            marker = f"pbt-acc-{tag}-c{c}"
            s = lab.start_runc(cmd=("/bin/sh", "-c", LOOP, "sh", str(per_container), marker))
            started.append((s, marker))
        host.join()
        for s, _ in started:
            assert wait_for(lambda: not alive(s.pid), 120), f"{s.id} did not finish its loop"
        time.sleep(1)           # the last events reach the ring
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        err = err.decode(errors="replace")
        executed = {host_marker: host_execs}
        ids = {host_marker: None}
        for s, marker in started:
            executed[marker] = per_container
            ids[marker] = s.id
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        out.close()
        lab.close()
    assert proc.returncode == 0, err[-2000:]
    lost = int(SUMMARY.search(err).group(2))
    reported = dict.fromkeys(executed, 0)
    with open(tmp_path / "out.json") as f:
        for line in f:
            rec = json.loads(line)
            marker = next((a for a in rec["args"][1:3] if a in executed), None)
            if marker is None:
                continue
            reported[marker] += 1
            if ids[marker] is None:
                assert rec["type"] == "host" and rec["container_id"] is None, rec
            else:
                assert rec["type"] == "container", rec
                assert rec["runtime"] == "runc" and rec["container_id"] == ids[marker], rec
                assert rec["container_name"] == ids[marker] and rec["own_pidns"], rec
    print(f"executed {executed}, reported {reported}, lost {lost}")
    for marker, n in executed.items():
        assert reported[marker] <= n, f"{marker}: {reported[marker]} reported of {n} executed"
    missing = sum(executed.values()) - sum(reported.values())
    assert missing <= lost, f"{missing} execs neither reported nor counted as lost ({lost} lost)"


#: cgroups the soak creates: its storm's parents and its runc containers
SOAK_PREFIXES = ("pybpfload-test-", "pbt-")


@pytest.mark.root
@pytest.mark.slow
def test_short_soak():
    """bench/soak.py for 20 s: exec storm plus container churn; classify
    survives, every storm exec is reported or counted lost, RSS stays flat
    (the script's own exit status), and it cleans up after itself."""
    before = {h: set(os.listdir(os.path.join(CGROUP_FS, h))) for h in ("unified", "cpu")
              if os.path.isdir(os.path.join(CGROUP_FS, h))}
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "soak.py"), "--seconds", "20",
                          "--interval", "5"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         timeout=300)
    text = res.stdout.decode(errors="replace")
    print(text)
    assert res.returncode == 0, text[-3000:]
    m = re.search(r"storm: (\d+) execs, (\d+) reported, (\d+) lost", text)
    assert m and int(m.group(1)) > 100, text[-3000:]
    after = {h: set(os.listdir(os.path.join(CGROUP_FS, h))) for h in before}
    left = {h: sorted(n for n in after[h] - before[h] if n.startswith(SOAK_PREFIXES))
            for h in before}
    assert not any(left.values()), f"soak left cgroups behind: {left}"
