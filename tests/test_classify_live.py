"""``python -m pybpfload classify`` against REAL containers, run as a user would.

One ``classify --json`` subprocess watches the whole module (started once,
after it wrote its ``--ready-file``, i.e. after attach); every test starts
something — a runc/podman/docker/containerd container, an exec into one, an
``unshare -p``, runc placed in other runtimes' cgroup layouts, a plain host
command — whose command line carries a unique marker argument, and checks the
exec event of that command: ``type``, ``runtime``, full ``container_id``,
``container_name``, pod fields, ``own_pidns``, ``nspid`` and the ``pidns`` /
``mntns`` inodes against ``/proc/<pid>/ns/*`` of the started process.

A second group runs several classify processes at once (table output and
each filter), stops them with SIGINT, SIGTERM and ``--duration``, and checks
the exit code, the one-line summary on stderr, and that no BPF program, map
or link they held is left in the kernel afterwards.
"""

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from pybpfload.kernel import ids

from runtimes import Lab, alive, have, wait_for

pytestmark = [pytest.mark.root, pytest.mark.containers]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UID = "7c1d2e3f-4a5b-4c6d-8e9f-0a1b2c3d4e5f"
SUMMARY = "pybpfload classify: "


def _need(binary):
    if not have(binary):
        pytest.skip(f"{binary} is not installed")


def _marker():
    return "pbmark-" + secrets.token_hex(6)


class Watcher:
    """One ``python -m pybpfload classify`` subprocess; stdout to a file."""

    def __init__(self, workdir, extra_args, json_out=True):
        self.dir = tempfile.mkdtemp(prefix="classify-", dir=workdir)
        self.ready = os.path.join(self.dir, "ready")
        self.out_path = os.path.join(self.dir, "out")
        self.err_path = os.path.join(self.dir, "err")
        argv = [sys.executable, "-m", "pybpfload", "classify", "--ready-file", self.ready]
        if json_out:
            argv.append("--json")
        argv += list(extra_args)
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         cwd=ROOT, env=env)
        self.records = []
        self._offset = 0
        self.bpf_ids = None

    def wait_ready(self, timeout=30):
        wait_for(lambda: os.path.exists(self.ready) or self.proc.poll() is not None, timeout, 0.01)
        if not os.path.exists(self.ready):
            self.stop()
            raise AssertionError(f"classify did not attach: {self.stderr()}")
        self.bpf_ids = held_bpf_ids(self.proc.pid)
        return self

    def stdout(self):
        with open(self.out_path, "rb") as f:
            return f.read().decode("utf-8")

    def stderr(self):
        with open(self.err_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def _read_new(self):
        with open(self.out_path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self._offset += end
        for line in data[:end].splitlines():
            self.records.append(json.loads(line))     # every line must be valid JSON

    def find(self, marker, count=1, timeout=15, argv0=None):
        """The exec records whose argv holds ``marker`` (waits for ``count``);
        with ``argv0``, only those whose argv[0] is that (not the runtime's
        CLI that was given the marker to pass on)."""
        found = []

        def look():
            self._read_new()
            found[:] = [r for r in self.records if marker in r["args"]
                        and (argv0 is None or r["args"][0] == argv0)]
            return len(found) >= count
        wait_for(look, timeout, 0.05)
        return found

    def one(self, marker, argv0="sh", timeout=15):
        recs = self.find(marker, 1, timeout, argv0)
        assert len(recs) == 1, f"{marker}: {recs}\nstderr: {self.stderr()}"
        return recs[0]

    def stop(self, sig=signal.SIGINT, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def held_bpf_ids(pid):
    """{'prog_id': {...}, 'map_id': {...}, 'link_id': {...}} of the BPF fds ``pid`` holds."""
    held = {"prog_id": set(), "map_id": set(), "link_id": set()}
    fdinfo = f"/proc/{pid}/fdinfo"
    for fd in os.listdir(fdinfo):
        try:
            with open(os.path.join(fdinfo, fd)) as f:
                for line in f:
                    key, _, value = line.partition(":")
                    if key in held:
                        held[key].add(int(value))
        except OSError:
            pass
    return held


def assert_released(held):
    """None of the programs, maps, links once held remain in the kernel."""
    assert held["prog_id"] and held["map_id"], held

    def gone():
        return not (held["prog_id"] & set(ids.prog_ids()) or held["map_id"] & set(ids.map_ids())
                    or held["link_id"] & set(ids.link_ids()))
    assert wait_for(gone, 10, 0.05), (held, ids.prog_ids(), ids.map_ids(), ids.link_ids())


def parse_summary(stderr):
    lines = [l for l in stderr.splitlines() if l.startswith(SUMMARY)]
    assert len(lines) == 1, stderr
    # "pybpfload classify: N execs (C in containers, H on the host), S shown, L lost"
    words = lines[0][len(SUMMARY):].replace("(", " ").replace(")", " ").replace(",", " ").split()
    n, c, h, s, lost = (int(words[i]) for i in (0, 2, 5, 9, 11))
    assert (words[1], words[10], words[12]) == ("execs", "shown", "lost"), lines[0]
    return {"execs": n, "container": c, "host": h, "shown": s, "lost": lost}


def ns_inode(pid, ns):
    return os.stat(f"/proc/{pid}/ns/{ns}").st_ino


# -- fixtures -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lab():
    if os.geteuid() != 0:
        pytest.skip("needs root to start containers")
    with Lab() as the_lab:
        yield the_lab


def _state_args(lab):
    return ["--state-root", f"docker={lab.docker_root()}",
            "--state-root", f"podman={lab.podman_storage()}",
            "--state-root", f"containerd={lab.containerd_state()}"]


@pytest.fixture(scope="module")
def watcher(lab):
    w = Watcher(lab.dir, _state_args(lab))
    try:
        w.wait_ready()
        yield w
    finally:
        w.stop()


@pytest.fixture
def started(lab):
    mine = []
    yield mine
    for s in mine:
        lab.stop(s)


def _check_init(rec, s, runtime, cid, name, own_pidns):
    """The exec record of a started container's init, against the live process."""
    assert rec["pid"] == s.pid
    assert (rec["type"], rec["runtime"], rec["container_id"], rec["container_name"]) == \
        ("container", runtime, cid, name), rec
    assert rec["own_pidns"] is own_pidns and rec["helper"] is None, rec
    assert rec["nspid"] == (1 if own_pidns else s.pid), rec
    assert rec["pidns_level"] == (1 if own_pidns else 0)
    assert rec["pidns"] == ns_inode(s.pid, "pid")
    assert rec["mntns"] == ns_inode(s.pid, "mnt")
    assert rec["mntns"] != ns_inode(os.getpid(), "mnt")


def _init_cmd(marker):
    # the marker rides on the init's own exec; "exec" keeps the pid for sleep
    return ("sh", "-c", "exec sleep 600", marker)


# -- one classify, many containers ----------------------------------------------------

def test_host_command(watcher):
    m = _marker()
    proc = subprocess.run(["/bin/echo", m], stdout=subprocess.DEVNULL)
    assert proc.returncode == 0
    rec = watcher.one(m, "/bin/echo")
    assert (rec["type"], rec["runtime"], rec["container_id"], rec["own_pidns"]) == \
        ("host", None, None, False)
    assert rec["ppid"] == os.getpid() and rec["nspid"] == rec["pid"]
    assert rec["pidns"] == ns_inode(os.getpid(), "pid")
    assert rec["mntns"] == ns_inode(os.getpid(), "mnt")
    assert rec["filename"] == "/bin/echo" and rec["args"] == ["/bin/echo", m]
    assert rec["time"].endswith("Z")


def test_unshare_pidns_is_host(lab, watcher, started):
    m = _marker()
    s = lab.start_unshare(cmd=_init_cmd(m))
    started.append(s)
    rec = watcher.one(m)
    assert rec["pid"] == s.pid
    assert (rec["type"], rec["own_pidns"], rec["container_id"], rec["nspid"]) == \
        ("host", True, None, 1), rec
    assert rec["pidns"] == ns_inode(s.pid, "pid") != ns_inode(os.getpid(), "pid")
    assert rec["mntns"] == ns_inode(s.pid, "mnt")


@pytest.mark.parametrize("hostpid", [False, True], ids=["own-pidns", "host-pidns"])
def test_runc(lab, watcher, started, hostpid):
    _need("runc")
    m = _marker()
    s = lab.start_runc(hostpid=hostpid, cmd=_init_cmd(m))
    started.append(s)
    _check_init(watcher.one(m), s, "runc", s.id, s.id, not hostpid)
    # runc exec into the running container: same container, a new process
    m2 = _marker()
    assert lab.exec(s, ["echo", m2]).returncode == 0
    rec = watcher.one(m2, "echo")
    assert (rec["type"], rec["runtime"], rec["container_id"], rec["own_pidns"]) == \
        ("container", "runc", s.id, not hostpid), rec
    assert rec["pidns"] == ns_inode(s.pid, "pid") and rec["mntns"] == ns_inode(s.pid, "mnt")
    assert rec["pid"] != s.pid and (rec["nspid"] > 1 if not hostpid else rec["nspid"] == rec["pid"])


@pytest.mark.parametrize("hostpid", [False, True], ids=["own-pidns", "host-pidns"])
def test_podman(lab, watcher, started, hostpid):
    _need("podman")
    m = _marker()
    s = lab.start_podman(hostpid=hostpid, cmd=_init_cmd(m))
    started.append(s)
    rec = watcher.one(m)
    _check_init(rec, s, "podman", s.id, s.name, not hostpid)
    assert rec["image"].startswith("localhost/pbt-busybox")
    # its conmon was exec'd on the host (then forked away: the init's parent
    # is conmon's child), and is reported as a helper
    conmon = [r for r in watcher.records if r["comm"] == "conmon" and s.id in r["args"]]
    assert conmon and all(r["helper"] == "conmon" and r["type"] == "host" for r in conmon), \
        [r for r in watcher.records if r["comm"] == "conmon"]


@pytest.mark.parametrize("hostpid", [False, True], ids=["own-pidns", "host-pidns"])
def test_docker(lab, watcher, started, hostpid):
    _need("dockerd")
    m = _marker()
    s = lab.start_docker(hostpid=hostpid, cmd=_init_cmd(m))
    started.append(s)
    rec = watcher.one(m)
    _check_init(rec, s, "docker", s.id, s.name, not hostpid)
    assert rec["image"].startswith("pbt-busybox")
    # the shim that parents it was exec'd as a helper
    shims = [r for r in watcher.records if r["pid"] == rec["ppid"]]
    assert shims and all(r["helper"] == "containerd-shim" and r["type"] == "host"
                         for r in shims), shims
    # docker exec: same container
    m2 = _marker()
    assert lab.exec(s, ["echo", m2]).returncode == 0
    rec2 = watcher.one(m2, "echo")
    assert (rec2["type"], rec2["runtime"], rec2["container_id"], rec2["container_name"],
            rec2["own_pidns"]) == ("container", "docker", s.id, s.name, not hostpid), rec2
    assert rec2["pidns"] == rec["pidns"] and rec2["mntns"] == rec["mntns"]


def test_containerd_ctr(lab, watcher, started):
    _need("containerd")
    m = _marker()
    s = lab.start_ctr(cmd=_init_cmd(m))
    started.append(s)
    _check_init(watcher.one(m), s, "containerd", s.id, s.id, True)


def test_runc_init_is_a_helper(lab, watcher, started):
    """``runc init`` (runc re-executing itself, first as /proc/self/exe whose
    comm is "exe", then from a memfd) is reported as a helper."""
    _need("runc")
    m = _marker()
    s = lab.start_runc(cmd=_init_cmd(m))
    started.append(s)
    rec = watcher.one(m)
    run = watcher.find(s.id, argv0="runc")
    assert run and run[0]["helper"] == "runc" and run[0]["type"] == "host", run
    # the inits between our `runc run` and our container's first command
    # (others' containers may start meanwhile: every runc init is a helper)
    window = [r for r in watcher.records if run[0]["time"] <= r["time"] <= rec["time"]]
    inits = [r for r in window if r["args"][:2] == ["runc", "init"]]
    assert inits and all(r["helper"] in ("runc", "runc-init") for r in inits), \
        [(r["comm"], r["args"], r["type"], r["helper"]) for r in window]
    assert any(r["comm"] == "exe" for r in inits), inits


@pytest.mark.parametrize("runtime", ["runc", "docker"])
def test_short_lived_process_in_container(lab, watcher, started, runtime):
    """``true`` exits within a millisecond: still classified with its container."""
    _need("dockerd" if runtime == "docker" else "runc")
    s = getattr(lab, "start_" + runtime)(cmd=("sleep", "600"))
    started.append(s)
    m = _marker()
    assert lab.exec(s, ["true", m]).returncode == 0
    rec = watcher.one(m, "true")
    assert not alive(rec["pid"])
    assert (rec["type"], rec["runtime"], rec["container_id"]) == ("container", runtime, s.id), rec
    # a whole container that lives for one `true`
    m2 = _marker()
    short = lab.run_short(runtime, cmd=("true", m2))
    rec2 = watcher.one(m2, "true")
    assert (rec2["type"], rec2["runtime"], rec2["container_id"], rec2["nspid"]) == \
        ("container", runtime, short.id, 1), rec2


H64 = "5a" * 32
LAYOUTS = [
    # CRI-O under systemd-style kubepods slices
    ("cri-o", f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID.replace('-', '_')}"
              f".slice/crio-{H64}.scope", H64, UID),
    # Kubernetes with the cgroupfs driver (containerd CRI names the leaf by the bare id)
    ("containerd", f"/kubepods/burstable/pod{UID}/{H64}", H64, UID),
    # Kubernetes with the systemd driver
    ("containerd", f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
                   f"{UID.replace('-', '_')}.slice/cri-containerd-{H64}.scope", H64, UID),
    ("lxc", "/lxc.payload.web-1", "web-1", None),
    ("systemd-nspawn", "/machine.slice/machine-my\\x2dbox.scope", "my-box", None),
]


@pytest.mark.parametrize("runtime,cgroups_path,cid,pod", LAYOUTS,
                         ids=["crio", "k8s-cgroupfs", "k8s-systemd", "lxc", "nspawn"])
def test_imitated_layouts(lab, watcher, started, runtime, cgroups_path, cid, pod):
    """runc placed in another runtime's exact cgroup layout (cgroupsPath)."""
    _need("runc")
    m = _marker()
    s = lab.start_runc(cgroups_path=cgroups_path, cmd=_init_cmd(m))
    started.append(s)
    rec = watcher.one(m)
    assert (rec["type"], rec["runtime"], rec["container_id"], rec["pod_uid"]) == \
        ("container", runtime, cid, pod), rec
    assert rec["own_pidns"] is True and rec["nspid"] == 1 and rec["helper"] is None
    assert rec["pidns"] == ns_inode(s.pid, "pid") and rec["mntns"] == ns_inode(s.pid, "mnt")
    assert rec["cgroup"].endswith(cgroups_path.rsplit("/", 1)[1]), rec


def test_json_lines_are_complete(watcher):
    """Every record so far carries every documented field."""
    watcher._read_new()
    assert watcher.records
    need = {"time", "pid", "tid", "ppid", "nspid", "uid", "gid", "comm", "filename", "args",
            "args_truncated", "type", "own_pidns", "helper", "runtime", "container_id",
            "container_name", "image", "pod_uid", "pod_name", "pod_namespace", "cgroup",
            "cgroup_id", "cgroup_v1", "pidns", "pidns_level", "mntns", "cgroupns"}
    for r in watcher.records:
        assert need <= set(r), set(need) - set(r)
        assert r["type"] in ("container", "host")
        if r["type"] == "container":
            assert r["container_id"] or r["pod_uid"], r


# -- table output, filters, signals, summary, leaks -----------------------------------

def test_table_filters_signals_summary_and_no_leaks(lab, started):
    _need("runc")
    name = f"pbt-cls-{lab.tag}-{secrets.token_hex(3)}"
    state = _state_args(lab)
    watchers = {
        "table": Watcher(lab.dir, state, json_out=False),
        "containers": Watcher(lab.dir, state + ["--containers"]),
        "host": Watcher(lab.dir, state + ["--host", "--duration", "60"]),
        "name": Watcher(lab.dir, state + ["--container", name]),
        "runtime": Watcher(lab.dir, state + ["--runtime", "runc"], json_out=False),
        "other-runtime": Watcher(lab.dir, state + ["--runtime", "podman"]),
        "short": Watcher(lab.dir, state + ["--duration", "3"]),
    }
    try:
        for w in watchers.values():
            w.wait_ready()
        m_cont, m_host = _marker(), _marker()
        s = lab.start_runc(name=name, cmd=_init_cmd(m_cont))
        started.append(s)
        assert subprocess.run(["/bin/echo", m_host], stdout=subprocess.DEVNULL).returncode == 0
        # --json + --containers: only containers, ours among them
        cont = watchers["containers"]
        assert cont.one(m_cont)["container_id"] == s.id
        assert not cont.find(m_host, timeout=0.5)
        host = watchers["host"]
        assert host.one(m_host, "/bin/echo")["type"] == "host"
        assert not host.find(m_cont, timeout=0.2)
        named = watchers["name"]
        assert named.one(m_cont)["container_name"] == name
        assert all(r["container_id"] == s.id for r in named.records)
        # the table: 12-char ids, the row of our container, no row of the host command
        table = watchers["table"]
        assert wait_for(lambda: m_cont in table.stdout() and m_host in table.stdout(), 15)
        lines = table.stdout().splitlines()
        assert lines[0].split()[:3] == ["TIME", "PID", "PPID"]
        row = [l for l in lines if m_cont in l][0].split()
        assert row[1] == str(s.pid) and row[3] == "1" and row[5] == "container"
        assert row[6] == "runc" and row[7] == s.id[:12] != s.id and row[8] == name
        host_row = [l for l in lines if m_host in l][0].split()
        assert host_row[5:8] == ["host", "-", "-"]
        by_rt = watchers["runtime"]
        assert wait_for(lambda: m_cont in by_rt.stdout(), 15)
        assert m_host not in by_rt.stdout()
        assert not watchers["other-runtime"].find(m_cont, timeout=0.2)
        # stop: SIGINT, SIGTERM, --duration; each prints one summary line and exits 0
        stops = {"table": signal.SIGINT, "containers": signal.SIGTERM, "name": signal.SIGINT,
                 "runtime": signal.SIGTERM, "other-runtime": signal.SIGINT, "host": signal.SIGTERM}
        for key, sig in stops.items():
            assert watchers[key].stop(sig) == 0, (key, watchers[key].stderr())
        short = watchers["short"]
        assert short.proc.wait(30) == 0, short.stderr()
        for key, w in watchers.items():
            summary = parse_summary(w.stderr())
            assert summary["execs"] == summary["container"] + summary["host"], (key, summary)
            assert summary["lost"] == 0, (key, summary)
            if key != "table" and key != "runtime":
                w._read_new()
                assert summary["shown"] == len(w.records), (key, summary)
            assert_released(w.bpf_ids)
        assert parse_summary(watchers["containers"].stderr())["container"] >= 1
        assert parse_summary(watchers["host"].stderr())["host"] >= 1
    finally:
        for w in watchers.values():
            w.stop(signal.SIGKILL)
